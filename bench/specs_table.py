"""Train every spec in specs/ on its built-in task with its own defaults and tabulate the metric
it promised against what it reached, with the wall time (the README's table).

    python bench/specs_table.py [--only NAME ...] [--json bench/specs_results.json] [--smoke]

`--smoke` trains only feedforward.yaml for 20 steps, into a temporary directory.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(spec: str, out_root: str, steps=None) -> dict:
    import graphspec
    g = graphspec.load(spec)
    target = (g.train or {}).get("target") or {}
    out = os.path.join(out_root, g.name)
    t0 = time.perf_counter()
    extra = ["--steps", str(steps)] if steps else []
    r = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "train", spec, "--out", out, "--quiet", *extra],
                       capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"spec": os.path.relpath(spec, ROOT), "error": r.stderr.strip()[-300:], "seconds": wall}
    res = json.loads(r.stdout.strip().splitlines()[-1])
    row = {"spec": os.path.relpath(spec, ROOT), "task": (g.data or {}).get("task"), "seconds": wall,
           "steps": res.get("step"), "target": target, "reached": {}}
    for k, want in target.items():
        got = res.get(k)
        lower = k in ("ppl", "mse", "loss")
        row["reached"][k] = got
        row["ok"] = row.get("ok", True) and got is not None and (got <= want if lower else got >= want)
    return row


def table(rows) -> str:
    lines = ["| spec | task | promised | reached | steps | time (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['spec']} | | | error | | {r['seconds']:.0f} |")
            continue
        prom = ", ".join(f"{k} {'<=' if k in ('ppl', 'mse') else '>='} {v}" for k, v in r["target"].items())
        got = ", ".join(f"{k} {v:.4g}" for k, v in r["reached"].items() if v is not None)
        mark = "" if r.get("ok") else " (not reached)"
        lines.append(f"| {os.path.basename(r['spec'])} | {r['task']} | {prom} | {got}{mark} | {r['steps']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "specs_results.json"))
    ap.add_argument("--runs", default=os.path.join(ROOT, "runs"))
    ap.add_argument("--smoke", action="store_true", help="feedforward for 20 steps: checks the script runs")
    a = ap.parse_args()
    specs = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
    if a.smoke:
        import tempfile
        a.only, a.runs = ["feedforward"], tempfile.mkdtemp(prefix="specs-table-")
    if a.only:
        specs = [s for s in specs if os.path.splitext(os.path.basename(s))[0] in a.only]
    rows = []
    for s in specs:
        rows.append(run(s, a.runs, 20 if a.smoke else None))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)
    print(table(rows))
