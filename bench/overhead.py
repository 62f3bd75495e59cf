"""The executor's own overhead: a training step of the LSTM spec (B=32, T=64, H=128) against a
plan of the same length whose entries do no work (every entry a zero-row copy, dispatched
forward and backward through the same interpreter loop).

    python bench/overhead.py [--cell lstm] [--B 32] [--T 64] [--H 128] [--smoke]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))


def measure(cell="lstm", B=32, T=64, H=128, repeat=9):
    from graphspec.plan import Eqn, Plan, View
    from runtime import interp
    from runtime.executor import Executor
    from bench.throughput import Graphspec
    g = Graphspec(cell, B, T, H)
    for _ in range(3):
        g.step()
    real = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        g.step()
        real.append(time.perf_counter() - t0)
    ex = g.m.current
    # the same number of entries, each a copy of zero rows: views are built, kernels loop over nothing
    empty = Plan("empty", 1, {}, fsize=1)
    empty.eqns = [Eqn("copy", View("f", 0, 0, 1), [View("f", 0, 0, 1)], {}, (True,)) for _ in ex.plan.eqns]
    idle_ex = Executor(empty, ex.dtype)
    idle = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        interp.forward(idle_ex.fwd, idle_ex.offsets, idle_ex.records, idle_ex.attrs, ex.F, ex.G, ex.I)
        interp.backward(idle_ex.bwd, idle_ex.offsets, idle_ex.records, idle_ex.attrs, ex.F, ex.G, ex.I)
        idle.append(time.perf_counter() - t0)
    step, over = statistics.median(real), statistics.median(idle)
    return {"entries": len(empty.eqns), "step_ms": step * 1e3, "empty_plan_ms": over * 1e3, "overhead": over / step}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    a = ap.parse_args()
    if a.smoke:
        a.B, a.T, a.H = 1, 4, 8
    r = measure(a.cell, a.B, a.T, a.H, repeat=1 if a.smoke else 9)
    print(f"{a.cell} B={a.B} T={a.T} H={a.H}: {r['entries']} plan entries; training step {r['step_ms']:.2f} ms; "
          f"same-length plan doing no work {r['empty_plan_ms']:.3f} ms = {100 * r['overhead']:.2f}% of the step")
