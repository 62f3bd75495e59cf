"""The per-step recurrent GEMMs of an RNN (issues #12 and #17): BLAS (runtime/kernels/blas.py,
scipy's OpenBLAS) against the packed kernel (runtime/kernels/packed.py), each called from a
jitted loop as the interpreter calls it, on 1 and 2 threads, and with --contended beside a busy
process (a Python busy loop: one core's worth of someone else's work).

    python bench/gemm.py [--contended] [--wheel] [--smoke] [--json out.json]

Shapes: an LSTM with hidden size H has W [4H, H]; per step the forward product is
Y[M, 4H] += X[M, H] @ W.T ("fwd", K = H, N = 4H) and the backward one dX[M, H] += dY[M, 4H] @ W
("bwd"), for M (batch rows) in 1, 4, 32, 64 and H in 32, 128, 512. Systems run interleaved,
round by round (the order reversed every other round), on a shared machine: medians and
minimums per call are printed. --wheel also runs a subprocess whose BLAS is the scipy-openblas32
wheel (pip install scipy-openblas32): its columns are "wheel" and "packed'", the packed kernel
measured again in that process as the common peer (compare wheel/packed' with blas/packed).
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))

import numpy as np  # noqa: E402

ROWS = (1, 4, 32, 64)
HIDDEN = (32, 128, 512)


def _openblas(wheel: bool):
    """The OpenBLAS library object runtime/kernels/blas.py calls (scipy's bundled copy), or the
    wheel's, whose sgemm is then registered in its place before anything jitted links to it."""
    if wheel:
        import llvmlite.binding as ll
        import scipy_openblas32
        import runtime.kernels.blas  # noqa: F401  (registers scipy's sgemm first: override it)
        lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"))
        ll.add_symbol("graphspec_sgemm", ctypes.cast(lib.scipy_sgemm_, ctypes.c_void_p).value)
        return lib
    import scipy
    found = glob.glob(os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs", "libscipy_openblas*.so"))
    return ctypes.CDLL(found[0]) if found else None


def _describe(lib) -> str:
    if lib is None:
        return "unknown BLAS"
    lib.scipy_openblas_get_config.restype = ctypes.c_char_p
    return lib.scipy_openblas_get_config().decode()


def _loops():
    import numba
    from runtime.kernels.blas import gemm
    from runtime.kernels.packed import gemm_packed

    @numba.njit(nogil=True)
    def blas_fwd(X, W, Y, n):
        for _ in range(n):
            gemm(False, True, 1.0, X, W, 1.0, Y)

    @numba.njit(nogil=True)
    def blas_bwd(G, W, D, n):
        for _ in range(n):
            gemm(False, False, 1.0, G, W, 1.0, D)

    @numba.njit(nogil=True)
    def packed(A, P, C, n):
        for _ in range(n):
            gemm_packed(A, P, C, True)
    return {"fwd": blas_fwd, "bwd": blas_bwd}, packed


def _busy():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(rows, hidden, threads, rounds, target_s, contended, wheel, systems=("blas", "packed")):
    from runtime.kernels import packed, team
    lib = _openblas(wheel)
    blas_loops, packed_loop = _loops()
    rng = np.random.default_rng(0)
    results, packing = [], []
    for H in hidden:
        K, N = H, 4 * H
        W = rng.standard_normal((N, K)).astype(np.float32)
        Pf, Pb = np.empty(packed.packed_shape(N, K), np.float32), np.empty(packed.packed_shape(K, N), np.float32)
        t = {"pack_wt": [], "pack_w": [], "pack_both": []}      # pack_both: what a forward runs
        for _ in range(max(3, rounds)):
            for name, fn, P in (("pack_wt", packed.pack_wt, (Pf,)), ("pack_w", packed.pack_w, (Pb,)),
                                ("pack_both", packed.pack_both, (Pf, Pb))):
                t0 = time.perf_counter()
                fn(W, *P)
                t[name].append(time.perf_counter() - t0)
        packing.append({"K": K, "N": N, **{f"{k}_us": 1e6 * statistics.median(v) for k, v in t.items()}})
        for M in rows:
            for d in ("fwd", "bwd"):
                A = rng.standard_normal((M, K if d == "fwd" else N)).astype(np.float32)
                C = np.zeros((M, N if d == "fwd" else K), np.float32)
                P = Pf if d == "fwd" else Pb
                runs = []
                for system in systems:
                    for nt in threads:
                        call = (blas_loops[d], (A, W, C)) if system == "blas" else (packed_loop, (A, P, C))
                        runs.append((system, nt, call))
                flops = 2 * M * K * N
                n = max(1, int(target_s * 40e9 / flops))
                times = {(s, nt): [] for s, nt, _ in runs}
                busy = _busy() if contended else None
                try:
                    for r in range(rounds):
                        for s, nt, (fn, args) in (runs if r % 2 == 0 else runs[::-1]):
                            _threads(s, nt, lib)
                            fn(*args, 2 + n // 2)     # warm: caches, BLAS threads, the team's choice
                            before = team.stats()
                            t0 = time.perf_counter()
                            fn(*args, n)
                            times[(s, nt)].append(((time.perf_counter() - t0) / n,
                                                   (team.stats()["helped"] - before["helped"]) / n))
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                for (s, nt), v in times.items():
                    med = statistics.median(x[0] for x in v)
                    name = s if not wheel else "wheel" if s == "blas" else "packed'"
                    results.append({"dir": d, "M": M, "K": K, "N": N, "system": name,
                                    "threads": nt, "contended": contended, "us_median": 1e6 * med,
                                    "us_min": 1e6 * min(x[0] for x in v), "gflops": flops / med / 1e9,
                                    "worker_chunks_per_call": statistics.median(x[1] for x in v)})
    _threads("packed", 1, lib)
    return {"blas": _describe(lib), "rows": results, "packing": packing}


def _threads(system, n, lib):
    from runtime.kernels import packed
    if system == "blas":
        packed.set_threads(1)
        if lib is not None:
            lib.scipy_openblas_set_num_threads(n)
    else:
        if lib is not None:
            lib.scipy_openblas_set_num_threads(1)
        packed.set_threads(n)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def table(rows) -> str:
    """One line per product, a column per system: median us/call (min) and GFLOP/s."""
    cols = sorted({(r["system"], r["threads"], r["contended"]) for r in rows}, key=lambda c: (c[2], c[0], c[1]))
    head = ["product"] + [f"{s} {t}t{' busy' if c else ''}" for s, t, c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["dir"], r["K"], r["M"]) for r in rows}, key=lambda k: (k[1], k[0] != "fwd", k[2]))
    for d, K, M in keys:
        by = {(r["system"], r["threads"], r["contended"]): r for r in rows if (r["dir"], r["K"], r["M"]) == (d, K, M)}
        N = next(iter(by.values()))["N"]
        shape = f"fwd [{M}x{K}]x[{K}x{N}]" if d == "fwd" else f"bwd [{M}x{N}]x[{N}x{K}]"
        cells = [f"{by[c]['us_median']:.1f} ({by[c]['us_min']:.1f}) us {by[c]['gflops']:.0f} GF" if c in by else ""
                 for c in cols]
        lines.append("| " + " | ".join([shape] + cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contended", action="store_true", help="also measure beside a busy process")
    ap.add_argument("--wheel", action="store_true", help="also measure the scipy-openblas32 wheel as the BLAS")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the script runs")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--_wheel-child", dest="wheel_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    rows, hidden, rounds, target = (ROWS, HIDDEN, a.rounds, 0.02) if not a.smoke else ((1, 4), (32,), 1, 0.001)
    if a.wheel_child:
        out = []
        for contended in ([False, True] if a.contended else [False]):
            out.append(measure(rows, hidden, (1, 2), rounds, target, contended, True))
        print(json.dumps(out))
        return
    from runtime.kernels import packed
    res = [measure(rows, hidden, (1, 2), rounds, target, False, False)]
    if a.contended:
        res.append(measure(rows, hidden, (1, 2), rounds, target, True, False))
    if a.wheel:
        cmd = [sys.executable, os.path.abspath(__file__), "--_wheel-child", "--rounds", str(a.rounds)]
        cmd += ["--contended"] * a.contended + ["--smoke"] * a.smoke
        res += json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    blas = dict.fromkeys(r["blas"] for r in res)
    print(f"GEMM path: {packed.GEMM_PATH}; {os.cpu_count()} CPUs ({_cpu_name()}); BLAS: {' / '.join(blas)}")
    print("\nus per call, median (minimum) over interleaved rounds, and GFLOP/s at the median\n")
    print(table([row for r in res for row in r["rows"]]))
    print("\npacking one weight W [4H, H] (median us): " + "; ".join(
        f"H={p['K']}: pack_wt {p['pack_wt_us']:.1f}, pack_w {p['pack_w_us']:.1f}, both in one pass "
        f"{p['pack_both_us']:.1f}" for p in res[0]["packing"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"path": packed.GEMM_PATH, "cpus": os.cpu_count(), "runs": res}, f, indent=1)


if __name__ == "__main__":
    main()
