"""Every numba option in one place.

- njit: nopython mode, no silent object-mode fallbacks;
- cache: compiled code goes to disk (NUMBA_CACHE_DIR, inside the clone in tests and CI; else
  ~/.cache/graphspec), so a second process starts in a second instead of a minute. Numba keys
  a cached function on its own file only: editing a helper in another file (vecmath.py) would
  silently load the callers' old machine code. So the cache lives in a subdirectory named by a
  hash of every kernel source, their calling convention and code generator, this file and the
  GEMM path runtime/cpu.py chose (avx512/avx2/blas: kernels bake it in): an edit anywhere there,
  or a cache built on a CPU with other features, starts a fresh cache;
- error_model='numpy': no zero-division check in every division, which stops LLVM from
  vectorising elementwise loops (measured 4.2 ns against 0.76 ns per element);
- fastmath: only 'contract', which lets LLVM fuse a multiply and an add into one FMA (one
  rounding instead of two; never a change to NaN/Inf handling, signed zeros or the order of
  operations). The polynomial maths of vecmath.py is mostly multiply-adds: the generated LSTM
  cell ran 2.20 -> 1.50 ns per element forward, 3.16 -> 2.32 backward (B=32/H=128, Xeon).
  The rest of fastmath stays off: gradient checks in float64 need IEEE semantics. The one
  exception is `jit_sum`, for small reduction helpers only: 'reassoc' lets LLVM split a sum over
  vector lanes (a sequential float sum cannot vectorise: 64 dependent adds, ~100 ns for one
  64-wide dot). It changes rounding at the last bit, never NaN/Inf handling. `jit_ieee`
  turns contraction off too, for kernels checked step by step against an outside reference
  that rounds every product (word2vec.py says why);
- vector width: on an AVX-512 host LLVM may use 512-bit vectors (`_prefer_512_bit`).
"""
import functools
import hashlib
import os

import llvmlite.binding as ll
import numba
import numpy as np
from numba.extending import overload

from .cpu import GEMM_PATH, _supported


def _prefer_512_bit() -> None:
    """On AVX-512 hosts, let LLVM vectorise loops at 512 bits. Its tuning for these CPUs prefers
    256-bit vectors (old Xeons lowered their clock on 512-bit code); measured here (Xeon, AVX-512,
    with FMA contraction) the generated LSTM cell runs 1.50 -> 1.25 ns per element forward and
    2.32 -> 1.99 backward at B=32/H=128. Numba keys its cache on the feature string, so code
    compiled either way is never mixed. The setting is process-wide (numba.config), made before
    any kernel compiles; a NUMBA_CPU_FEATURES or NUMBA_CPU_NAME the user set is left alone."""
    if numba.config.CPU_FEATURES is None and numba.config.CPU_NAME in (None, "host") and "avx512" in _supported():
        numba.config.CPU_FEATURES = ll.get_host_cpu_features().flatten() + ",-prefer-256-bit"


_prefer_512_bit()


def _sources_stamp() -> str:
    """A hash of every source compiled code is made from (the kernels, their calling convention,
    the code generator, this file): part of the cache directory's name."""
    here = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.join(here, f) for f in ("jit.py", "abi.py", "codegen.py", "cpu.py", "interp.py")] + sorted(
        os.path.join(here, "kernels", f) for f in os.listdir(os.path.join(here, "kernels")) if f.endswith(".py"))
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(fh.read())
    h.update(GEMM_PATH.encode())
    return h.hexdigest()[:12]


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "graphspec", "numba")


if not os.path.basename(numba.config.CACHE_DIR or "").startswith("kernels-"):
    numba.config.CACHE_DIR = os.path.join(numba.config.CACHE_DIR or _default_cache(), f"kernels-{_sources_stamp()}")

OPTIONS = dict(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})

jit = functools.partial(numba.njit, **OPTIONS)
SUM_OPTIONS = dict(OPTIONS, fastmath={"reassoc", "contract"})
jit_sum = functools.partial(numba.njit, **SUM_OPTIONS)
jit_ieee = functools.partial(numba.njit, **dict(OPTIONS, fastmath=False))


def const(a, value):
    """`value` typed like a's elements (numba promotes float32 * 1.0 to float64 otherwise)."""
    return value


@overload(const, jit_options=dict(OPTIONS))
def _const(a, value):
    kind = np.float32 if getattr(a, "dtype", a) == numba.float32 else np.float64

    def impl(a, value):
        return kind(value)
    return impl
