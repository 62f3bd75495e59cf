"""Data-parallel throughput: `graphspec train` on N ranks against 1, the LSTM at B=64/H=256 on the
adding problem (T=50), each rank one thread (GRAPHSPEC_THREADS=1, OPENBLAS_NUM_THREADS=1).

A step's time is the difference of two runs' wall times (S1 and S2 steps) over S2 - S1 steps,
so start-up, compiling and the final validation cancel. Runs alternate 1 and N ranks, `--repeat`
times, and the ratio of medians is reported with the load average (the machine may be shared).

    python bench/mpi_scaling.py [--procs 2] [--repeat 3] [--steps 10 60]     (the mpi extra)
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wall(procs: int, steps: int, out: str, args) -> tuple:
    env = dict(os.environ, GRAPHSPEC_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "train", "specs/lstm.yaml", "--out", out, "--overwrite",
           "--quiet", "--procs", str(procs), "--set", f"dims.H={args.H}", "--set", f"train.batch={args.B}",
           "--set", f"train.steps={steps}", "--set", "train.eval_every=100000"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr)
    m = re.search(r"all-reduce ([0-9.]+) ms per step", p.stderr)
    return dt, float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, nargs=2, default=(10, 60))
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the script runs")
    args = ap.parse_args()
    if args.smoke:
        args.B, args.H, args.steps, args.repeat = 4, 4, (2, 4), 1
    s1, s2 = args.steps
    per = {1: [], args.procs: []}
    ar = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        wall(1, 2, os.path.join(tmp, "warm"), args)         # compile once (numba's cache)
        wall(args.procs, 2, os.path.join(tmp, "warm"), args)
        for _ in range(args.repeat):
            for n in (1, args.procs):
                a, _ = wall(n, s1, os.path.join(tmp, "r"), args)
                b, ms = wall(n, s2, os.path.join(tmp, "r"), args)
                per[n].append((b - a) / (s2 - s1))
                if ms is not None:
                    ar.append(ms)
                loads.append(os.getloadavg()[0])
    t1, tn = statistics.median(per[1]), statistics.median(per[args.procs])
    print(f"LSTM B={args.B} H={args.H} T=50, 1 thread a rank; step time from runs of {s1} and {s2} steps, "
          f"median of {args.repeat}")
    print(f"  1 rank : {1e3 * t1:7.1f} ms/step  ({', '.join(f'{1e3 * x:.1f}' for x in per[1])})")
    print(f"  {args.procs} ranks: {1e3 * tn:7.1f} ms/step  ({', '.join(f'{1e3 * x:.1f}' for x in per[args.procs])})")
    print(f"  speed-up {t1 / tn:.2f}x; all-reduce {statistics.median(ar):.2f} ms/step (median over runs)")
    print(f"  load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
