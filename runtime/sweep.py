"""`graphspec sweep SPEC --set KEY=V1,V2 ... [--seeds K] [--procs N]`: a grid of trainings.

Every point of the grid (the product of the --set lists, times K seeds set as train.seed=0..K-1)
is one ordinary run directory, OUT/runs/NAME, trained by `graphspec train SPEC --set ...` in a
process of its own. Under an MPI launcher (mpiexec -n N graphspec sweep ...) rank r trains the
points r, r+N, ...; without one, --procs N keeps N trainings going at once. Each training gets
its share of the cores as threads.

Resumable: a point whose last.npz holds its last step is done and skipped; one with a last.npz
short of it continues with --resume (bit-identical to an uninterrupted run: runtime/train.py);
one without starts again. So a sweep killed at any point (the whole process group: a Ctrl-C
does that) and run again with the same command ends with the same results.

At the end OUT holds results.csv and results.jsonl (a row per point: its values, seed, the
last validation's metrics, and the step) and sweep.png (the metric against each swept value,
every seed a dot, the mean over the rest a line).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Optional

from graphspec.errors import Interrupted, UserError
from graphspec.overrides import Override, load as load_with, parse_sweep

from .distributed import LAUNCHER_VARS, world
from .rundir import write_atomic

MAX_POINTS = 10_000


def grid(sets: list, seeds: Optional[int]) -> tuple:
    """([axis key], [[Override, ...] per point]): the product of the --set lists, seeds last."""
    axes = [parse_sweep(s) for s in sets]
    keys = [a[0].key for a in axes]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise UserError(f"--set {sorted(dup)[0]} is given twice; list its values once: KEY=V1,V2")
    if seeds:
        if "train.seed" in keys:
            raise UserError("--seeds K sets train.seed=0..K-1: give either --seeds or --set train.seed=..., not both")
        axes.append([Override(("train", "seed"), s, f"train.seed={s}") for s in range(seeds)])
        keys.append("train.seed")
    points = [list(p) for p in itertools.product(*axes)]
    if len(points) > MAX_POINTS:
        raise UserError(f"the grid has {len(points):,} points; at most {MAX_POINTS:,}")
    return keys, points


def point_name(point: list) -> str:
    """A directory name from the values: dims.H=64,train.lr=0.001 -> H=64_lr=0.001."""
    short = [ov.path[-1] for ov in point]
    keys = [ov.key if short.count(ov.path[-1]) > 1 else ov.path[-1] for ov in point]
    raw = "_".join(f"{k}={_show(ov.value)}" for k, ov in zip(keys, point)) or "base"
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "-", raw)[:150]
    if safe != raw:
        import hashlib
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:6]
    return safe


def _show(v) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)


def _state(run_dir: str, spec: Optional[str] = None, sets: Optional[list] = None) -> tuple:
    """('done' | 'partial' | 'new', meta of last.npz or None). With the point's spec and --set
    texts: a run of another version of the spec or of other values is refused, not counted."""
    from .checkpoint import open_checkpoint
    last = os.path.join(run_dir, "last.npz")
    if not os.path.exists(last):
        return "new", None
    ck = open_checkpoint(last)
    ck.close()
    meta = ck.meta
    if spec is not None:
        from .train import spec_hash
        if meta["spec_hash"] != spec_hash(spec, sets):
            raise UserError(f"{run_dir} holds a run of another version of {spec} or of other values (hash "
                            f"{meta['spec_hash']}, this point's is {spec_hash(spec, sets)}); move it away to "
                            f"train this point again")
    return ("done" if meta["step"] >= int(meta["cfg"]["steps"]) else "partial"), meta


def _child_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_"))}
    for var in ("GRAPHSPEC_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, str(threads))
    return env


def _command(spec: str, run_dir: str, point: list, fixed: list, state: str) -> list:
    import cli
    cmd = [sys.executable, os.path.abspath(cli.__file__), "train", spec, "--out", run_dir, "--quiet"]
    for ov in fixed + point:
        cmd += ["--set", ov.text]
    if state == "partial":
        cmd.append("--resume")
    elif state == "new" and os.path.isdir(run_dir):
        cmd.append("--overwrite")        # a run killed before its first checkpoint: start it again
    return cmd


def run_sweep(specs, sets: list, out: str, seeds: Optional[int] = None, procs: int = 1,
              metric: Optional[str] = None, log=print) -> dict:
    """Several specs are one more axis of the grid (the first): a run directory is SPECNAME_VALUES."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    axis_sets = [s for s in sets if len(parse_sweep(s)) > 1]
    fixed = [parse_sweep(s)[0] for s in sets if len(parse_sweep(s)) == 1]
    keys, grid_points = grid(axis_sets, seeds)
    points, point_specs, names = [], [], []
    for spec in specs:
        g, _ = load_with(spec, [ov.text for ov in fixed])
        for p in grid_points:                # every point's spec checked before anything trains
            load_with(spec, [ov.text for ov in fixed + p])
            points.append(p)
            point_specs.append(spec)
            names.append((g.name + "_" if len(specs) > 1 else "") + point_name(p))
    if len(points) > MAX_POINTS:
        raise UserError(f"the grid has {len(points):,} points; at most {MAX_POINTS:,}")
    metric = metric or next(iter((g.train or {}).get("target") or {}), "loss")
    w = world()
    mine = [i for i in range(len(points)) if i % w.size == w.rank]
    if len(set(names)) != len(names):
        raise UserError("two grid points would share a run directory name; give distinct values")
    runs = os.path.join(out, "runs")
    os.makedirs(runs, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = max(1, procs if w.size == 1 else 1)
    env = _child_env(max(1, cores // (local * w.size)))
    todo = []
    for i in mine:
        state, _ = _state(os.path.join(runs, names[i]), point_specs[i], [ov.text for ov in fixed + points[i]])
        if state == "done":
            log(f"[{i + 1}/{len(points)}] {names[i]}: done already")
        else:
            todo.append((i, state))
    running, failed = {}, []
    try:
        while todo or running:
            while todo and len(running) < local:
                i, state = todo.pop(0)
                log(f"[{i + 1}/{len(points)}] {names[i]}: {'continuing' if state == 'partial' else 'training'}")
                cmd = _command(point_specs[i], os.path.join(runs, names[i]), points[i], fixed, state)
                running[i] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              text=True)
            time.sleep(0.05)
            for i, p in list(running.items()):
                if p.poll() is None:
                    continue
                err = p.stderr.read()
                del running[i]
                if p.returncode == 130:
                    raise KeyboardInterrupt
                if p.returncode != 0:
                    msg = (err.strip().splitlines() or ["(no message)"])[-1]
                    failed.append(f"{names[i]}: {msg}")
                    log(f"[{i + 1}/{len(points)}] {names[i]}: FAILED (exit {p.returncode}): {msg}")
                else:
                    log(f"[{i + 1}/{len(points)}] {names[i]}: finished")
    except KeyboardInterrupt:
        for p in running.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in running.values():
            p.wait()
        raise Interrupted(f"interrupted; the same command continues the sweep in {out}") from None
    w.barrier()
    if not w.root:
        return {}
    rows = collect(runs, names, points, keys)
    if len(specs) > 1:
        for r, spec in zip(rows, point_specs):
            r["spec"] = spec
    write_results(out, rows)
    written = plot_sweep(out, rows, [k for k in keys if not (seeds and k == "train.seed")], metric)
    if failed:
        raise UserError(f"{len(failed)} of {len(points)} runs failed (first: {failed[0]}); the rest are in "
                        f"{out}/results.csv")
    return {"runs": len(points), "results": os.path.join(out, "results.csv"), "plot": written, "metric": metric}


def collect(runs: str, names: list, points: list, keys: list) -> list:
    rows = []
    for name, point in zip(names, points):
        state, meta = _state(os.path.join(runs, name))
        row = {"run": name}
        row.update({ov.key: ov.value for ov in point})
        row["step"] = meta["step"] if meta else 0
        row["done"] = state == "done"
        row.update((meta or {}).get("metrics") or {})
        row.pop("split", None)
        rows.append(row)
    return rows


def write_results(out: str, rows: list):
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: _show(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    write_atomic(os.path.join(out, "results.csv"), lambda f: f.write(buf.getvalue().encode()))
    text = "".join(json.dumps(r) + "\n" for r in rows)
    write_atomic(os.path.join(out, "results.jsonl"), lambda f: f.write(text.encode()))


def plot_sweep(out: str, rows: list, keys: list, metric: str) -> Optional[str]:
    """One panel per swept key: the metric of every run against that key's value (numbers on a
    log axis when they span a decade, else in their order), the mean over the rest a line."""
    keys = [k for k in keys if len({_show(r[k]) for r in rows}) > 1]
    have = [r for r in rows if isinstance(r.get(metric), (int, float))]
    series = sorted({r.get("spec", "") for r in have})
    colors = dict(zip(series, [f"C{i % 10}" for i in range(len(series))]))
    if not keys or not have:
        return None
    from .plots import _plt, _save
    plt = _plt()
    fig, axs = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, k in zip(axs[0], keys):
        values = sorted({_show(r[k]) for r in have}, key=lambda s: _sort_key(s))
        numeric = all(_num(v) is not None for v in values)
        xs = [_num(v) for v in values] if numeric else list(range(len(values)))
        pos = dict(zip(values, xs))
        for sp in series:
            mine = [r for r in have if r.get("spec", "") == sp]
            for r in mine:
                ax.plot(pos[_show(r[k])], r[metric], "o", color=colors[sp], alpha=0.45, ms=4)
            means = [(x, sum(r[metric] for r in mine if _show(r[k]) == v) / n)
                     for v, x in zip(values, xs) if (n := sum(_show(r[k]) == v for r in mine))]
            label = os.path.splitext(os.path.basename(sp))[0] if sp else "mean"
            ax.plot([m[0] for m in means], [m[1] for m in means], "-", color=colors[sp], lw=1.5, label=label)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, values, rotation=20, fontsize=8)
        ax.set_xlabel(k)
        ax.set_ylabel(metric)
        if metric in ("loss", "mse", "ppl") and min(r[metric] for r in have) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axs[0][0].legend(fontsize=8)
    fig.suptitle(f"{metric} at the last validation, {len(have)} runs", fontsize=10)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "sweep.png"))


def _num(s: str):
    try:
        return float(s)
    except ValueError:
        return None


def _sort_key(s: str):
    n = _num(s)
    return (0, n, "") if n is not None else (1, 0.0, s)
