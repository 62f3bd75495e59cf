"""Which GEMM micro-kernel this machine runs, decided once per process (before any kernel compiles).

- "avx512": 16-float vectors (AVX-512F with FMA), the packed kernel at full width;
- "avx2":   8-float vectors (AVX2 + FMA);
- "blas":   no usable SIMD (or numba told to compile for another CPU): packed weights are plain
            copies and the product goes to BLAS.

The features come from LLVM's view of the host (what numba compiles for), so the kernel never
emits instructions the code generator cannot use. GRAPHSPEC_GEMM=avx512|avx2|blas forces a path
(benchmarks, tests); asking for one the CPU lacks is an error. runtime/jit.py puts the path in the
numba cache key: code compiled for one path is never loaded by a process running another (the
packed layouts differ: a cached pack for one path beside a fresh product for another would be
wrong, not just slow).
"""
import os

import llvmlite.binding as ll
import numba

from graphspec.errors import UserError

PATHS = ("avx512", "avx2", "blas")


def _supported() -> tuple:
    if numba.config.CPU_NAME not in (None, "host"):
        return ("blas",)    # a portable build (NUMBA_CPU_NAME=generic...) cannot assume AVX2
    features = ll.get_host_cpu_features()
    has = {name for name, on in features.items() if on}
    paths = []
    if {"avx512f", "fma"} <= has:
        paths.append("avx512")
    if {"avx2", "fma"} <= has:
        paths.append("avx2")
    return tuple(paths) + ("blas",)


def gemm_path() -> str:
    supported = _supported()
    wanted = os.environ.get("GRAPHSPEC_GEMM", "").strip().lower()
    if not wanted or wanted == "auto":
        return supported[0]
    if wanted not in PATHS:
        raise UserError(f"GRAPHSPEC_GEMM={wanted!r}: expected one of auto, {', '.join(PATHS)}")
    if wanted not in supported:
        raise UserError(f"GRAPHSPEC_GEMM={wanted}: this CPU supports only {', '.join(supported)}")
    return wanted


GEMM_PATH = gemm_path()
AUTO_PATH = _supported()[0]     # what this CPU gets unless told otherwise
# The most rows per step a recurrent product reads its weight packed for (graphspec/passes/pack.py).
# bench/gemm.py on an AMD EPYC with AVX2 (2 cores): the packed kernel runs at ~30 GFLOP/s at any
# row count, 3-15x OpenBLAS below 8 rows (one row: 4.5 against 58 us for [1x128]x[128x512]) but
# behind it from 32 rows (138 against 83 us on 2 threads, 112 on 1); so BLAS from 17 rows there.
# AVX-512 (16-wide panels) stayed ahead of BLAS at 32 rows when measured: no bound.
PACK_ROWS = {"avx2": 16}.get(GEMM_PATH)
