"""Kill a training at chosen and at random moments, resume it, and compare its run directory with
an uninterrupted run's, byte for byte (metrics.jsonl, last.npz, best.npz, gradnorm.npy,
attention.npz).

    python tests/crashes.py --kills 20        # the full check (a few minutes on 2 cores)

Kills come two ways: GRAPHSPEC_CRASH_AT=POINT:N (runtime/rundir.py) SIGKILLs the run the Nth time
it reaches a write point (mid-line in metrics.jsonl; a temp file written but not renamed; renamed
but the directory not fsynced; for every file), and a SIGKILL sent from outside after a random
delay lands wherever the run is. tests/test_crashes.py runs a few of each in the suite.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FILES = ("metrics.jsonl", "last.npz", "best.npz", "gradnorm.npy", "attention.npz", "run.json", "config.yaml")
# every kind of write a training makes, and how often it happens in TINY's 40 steps
POINTS = {"metrics.jsonl:torn": 45, "last.npz:written": 6, "last.npz:renamed": 6, "best.npz:written": 3,
          "best.npz:renamed": 3, "gradnorm.npy:written": 6, "gradnorm.npy:renamed": 6,
          "attention.npz:written": 1, "attention.npz:renamed": 1}


def tiny_spec(dir: str) -> str:
    """The encoder-decoder with attention at tiny sizes: it writes every kind of run file
    (gradient norms over time, attention weights) in a few seconds."""
    with open(os.path.join(ROOT, "specs", "seq2seq_attention.yaml")) as f:
        text = f.read()
    text = (text.replace("D: 32, H: 64, H2: 128", "D: 4, H: 4, H2: 8")
                .replace("batch: 64, steps: 1000", "batch: 4, steps: 40, eval_every: 8")
                .replace("name: seq2seq_attention", "name: tiny_att"))
    path = os.path.join(dir, "tiny_att.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def _started(out: str, pid: int) -> bool:
    try:
        with open(os.path.join(out, "run.lock")) as f:
            return f.read().strip() == str(pid)
    except OSError:
        return False


def train(spec: str, out: str, *flags, env=None, kill_after=None):
    """Run `graphspec train`; with kill_after, SIGKILL it that many seconds after it took the run
    directory's lock (if still running). Returns the exit code (-9 when killed)."""
    env = dict(os.environ, **(env or {}))
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", spec, "--out", out, "--quiet",
                          *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        while p.poll() is None and not _started(out, p.pid):
            time.sleep(0.005)
        deadline = time.time() + kill_after
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    out_, err = p.communicate(timeout=600)
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"train exited {p.returncode}: {err}")
    return p.returncode


def resume_flags(out: str) -> tuple:
    """What a user would type after a kill: --resume once a checkpoint exists, else start again."""
    if os.path.exists(os.path.join(out, "last.npz")):
        return ("--resume",)
    return ("--overwrite",) if any(os.path.exists(os.path.join(out, f)) for f in RUN_FILES) else ()


def differences(a: str, b: str) -> list:
    out = []
    for name in RUN_FILES:
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if os.path.exists(pa) != os.path.exists(pb):
            out.append(f"{name}: in only one of the two")
        elif os.path.exists(pa):
            with open(pa, "rb") as fa, open(pb, "rb") as fb:
                if fa.read() != fb.read():
                    out.append(f"{name}: differs")
    leftovers = sorted(n for n in os.listdir(b) if n not in RUN_FILES + ("run.lock",))
    if leftovers:
        out.append(f"left behind: {', '.join(leftovers)}")
    return out


def killed_run(spec: str, out: str, kills: list, log=print) -> list:
    """Train into out, killing it with each item of kills in turn (('point', 'NAME:N') or
    ('random', seconds)) until one fails to land (the run finished first); then let it finish.
    Returns the kills that landed."""
    landed = []
    for how, what in kills:
        flags = resume_flags(out)
        if how == "point":
            rc = train(spec, out, *flags, env={"GRAPHSPEC_CRASH_AT": what})
        else:
            rc = train(spec, out, *flags, kill_after=what)
        log(f"  {how} {what}: {'killed' if rc == -signal.SIGKILL else 'finished first'} ({' '.join(flags) or 'fresh'})")
        if rc == 0:
            return landed
        landed.append((how, what))
    assert train(spec, out, *resume_flags(out)) == 0
    return landed


def training_time(spec: str, out: str) -> float:
    """Train uninterrupted into out; seconds from its taking the lock to its end."""
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", spec, "--out", out, "--quiet"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and not _started(out, p.pid):
        time.sleep(0.005)
    t0 = time.time()
    assert p.wait(timeout=600) == 0, p.stderr.read()
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills that land, in all")
    ap.add_argument("--per-run", type=int, default=4, help="kills before a run may finish")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default="/tmp/graphspec-crashes")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    spec = tiny_spec(args.dir)
    ref = os.path.join(args.dir, "reference")
    full = training_time(spec, ref)
    print(f"uninterrupted run: {full:.1f} s from taking its run directory to the end")
    todo = list(POINTS)                   # every write point lands once; random moments fill the rest
    rng.shuffle(todo)
    landed, runs, failed = [], 0, 0
    while len(landed) < args.kills:
        runs += 1
        out = os.path.join(args.dir, f"run{runs}")
        kills = []
        for _ in range(min(args.per_run, args.kills - len(landed))):
            if todo and rng.random() < 0.6:
                p = todo.pop()
                kills.append(("point", f"{p}:{rng.randint(1, max(1, POINTS[p] // 3))}"))
            else:
                kills.append(("random", round(rng.uniform(0, full), 2)))
        print(f"run {runs}:")
        got = killed_run(spec, out, kills)
        todo += [k[1].rsplit(":", 1)[0] for k in kills if k[0] == "point" and k not in got]
        landed += got
        diff = differences(ref, out)
        failed += bool(diff)
        print(f"  -> {'byte-identical' if not diff else '; '.join(diff)}")
    points = sorted({k[1].rsplit(":", 1)[0] for k in landed if k[0] == "point"})
    print(f"{len(landed)} kills landed ({len(points)} of the {len(POINTS)} write points, "
          f"{sum(k[0] == 'random' for k in landed)} at random moments) in {runs} runs; {runs - failed} of {runs} "
          f"runs ended byte-identical to the uninterrupted one")
    if todo:
        print(f"write points not reached: {', '.join(sorted(set(todo)))}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
