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
    from graphspec.ops import OPCODES
    from runtime import _tape
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
    empty = ex.tape.copy()
    empty[:, 0] = OPCODES["copy"]
    empty[:, 1] = 1            # need input 0: the backward entry is dispatched too
    empty[:, 2:] = 0           # zero rows: views are built, kernels loop over nothing
    idle = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _tape.forward(empty, ex.attrs, ex.F, ex.I)
        _tape.backward(empty, ex.attrs, ex.F, ex.I, ex.G)
        idle.append(time.perf_counter() - t0)
    step, over = statistics.median(real), statistics.median(idle)
    return {"entries": len(empty), "step_ms": step * 1e3, "empty_plan_ms": over * 1e3, "overhead": over / step}


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
