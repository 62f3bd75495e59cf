"""Where a training step's time goes: every plan entry timed on its own (forward and backward),
the minimum of several repeats, summed by op and shapes. What bench/README.md's profiles quote.

    python bench/profile_plan.py [--cell lstm] [--B 32] [--T 64] [--H 128] [--top 12] [--smoke]

(Not `profile.py`: a script's folder comes first on sys.path, and the standard library's
`profile`, which torch imports through cProfile, would be this file.)

Each entry runs through the same interpreter as a whole step, so an entry's figure includes its
dispatch (~1 us); at B=1 that dominates and the split says little.
"""
import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))


def profile(cell="lstm", B=32, T=64, H=128, repeat=9):
    from runtime import interp
    from bench.throughput import Graphspec
    g = Graphspec(cell, B, T, H)
    for _ in range(3):
        g.step()
    ex = g.m.current
    eqns = ex.plan.eqns
    n = len(eqns)
    fwd, bwd = [1e9] * n, [1e9] * n
    for _ in range(repeat):
        for i in range(n):
            t0 = time.perf_counter()
            interp.forward(ex.fwd[i:i + 1], ex.offsets[i:i + 1], ex.records, ex.attrs[i:i + 1], ex.F, ex.G, ex.I)
            fwd[i] = min(fwd[i], time.perf_counter() - t0)
        for i in range(n - 1, -1, -1):
            t0 = time.perf_counter()
            interp.backward(ex.bwd[i:i + 1], ex.offsets[i:i + 1], ex.records, ex.attrs[i:i + 1], ex.F, ex.G, ex.I)
            bwd[i] = min(bwd[i], time.perf_counter() - t0)
    rows = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for i, e in enumerate(eqns):
        ins = " ".join(f"{v.rows}x{v.cols}" for v in e.ins)
        key = (e.op, f"{e.out.rows}x{e.out.cols}", ins, "(backward only: a deferred dW)" if e.nofwd else "")
        rows[key][0] += 1
        rows[key][1] += fwd[i]
        rows[key][2] += bwd[i]
    return n, sorted(rows.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    a = ap.parse_args()
    if a.smoke:
        a.B, a.T, a.H = 1, 4, 8
    n, rows = profile(a.cell, a.B, a.T, a.H, repeat=1 if a.smoke else 9)
    total = sum(f + b for _, (c, f, b) in rows)
    print(f"{a.cell} B={a.B} T={a.T} H={a.H}: {n} plan entries, {total * 1e3:.2f} ms summed (forward + backward)")
    print(f"{'op':14} {'out':>10} {'inputs':28} {'count':>5} {'fwd ms':>8} {'bwd ms':>8}")
    for (op, out, ins, tag), (c, f, b) in rows[:a.top]:
        print(f"{op:14} {out:>10} {ins:28} {c:5d} {f * 1e3:8.3f} {b * 1e3:8.3f}  {tag}")
