"""Compile time against sequence length: unroll (networkx DAG) and plan (compiler passes) for
the LSTM spec at T = 10, 100, 1000. Growth should be linear; T=1000 under 1 s.

    python bench/compile.py [--spec specs/lstm.yaml] [--batch 32] [--json OUT.json] [--smoke]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import graphspec  # noqa: E402
from graphspec.compile import compile_graph  # noqa: E402
from graphspec.unroll import unroll  # noqa: E402


def timed(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(spec: str, batch: int, lengths=(10, 100, 1000)):
    rows = []
    t0 = time.perf_counter()
    g = graphspec.load(spec)
    load = time.perf_counter() - t0
    for T in lengths:
        Ls = {a: T for a in g.axes}
        tu, dag = timed(lambda: unroll(g, Ls))
        tp, plan = timed(lambda: compile_graph(g, Ls, batch))
        tt, _ = timed(lambda: plan.encode())
        rows.append({"T": T, "load_s": load, "unroll_s": tu, "plan_s": tp, "tape_s": tt,
                     "dag_nodes": dag.number_of_nodes(), "plan_ops": len(plan.eqns)})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/lstm.yaml")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--smoke", action="store_true", help="T=10 and 20 only: checks the script runs")
    a = ap.parse_args()
    rows = measure(a.spec, a.batch, (10, 20) if a.smoke else (10, 100, 1000))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{a.spec}, batch {a.batch} (median of 3)")
    print(f"{'T':>6} {'unroll s':>10} {'plan s':>10} {'tape s':>10} {'plan+tape':>10} {'DAG nodes':>10} {'plan ops':>9}")
    for r in rows:
        print(f"{r['T']:>6} {r['unroll_s']:>10.4f} {r['plan_s']:>10.4f} {r['tape_s']:>10.4f} "
              f"{r['plan_s'] + r['tape_s']:>10.4f} {r['dag_nodes']:>10} {r['plan_ops']:>9}")
    first, last = rows[0], rows[-1]
    print(f"growth {first['T']} -> {last['T']} ({last['T'] // first['T']}x longer): "
          f"unroll x{last['unroll_s'] / first['unroll_s']:.0f}, plan x{last['plan_s'] / first['plan_s']:.0f}")


if __name__ == "__main__":
    main()
