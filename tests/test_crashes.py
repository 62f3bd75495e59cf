"""Nothing lost: kills during every kind of write, then --resume, end byte-identical to a run never
interrupted; two trainings never share a run directory; a fresh run never wipes an earlier one; a
full disk leaves the last checkpoint intact. tests/crashes.py is the same check with 20 kills.
"""
from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import ROOT, main

import crashes


def test_kills_during_each_kind_of_write_then_resume_end_byte_identical(tmp_path):
    spec = crashes.tiny_spec(str(tmp_path))
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    assert crashes.train(spec, ref) == 0                 # also compiles: the runs below start warm
    full = crashes.training_time(spec, str(tmp_path / "warm"))
    # the random kill lands a fraction of the way through a warm run, whatever the machine's speed
    # (a fixed 0.6 s missed a warm run that resumed at step 8 and finished first)
    kills = [("point", "metrics.jsonl:torn:9"), ("point", "last.npz:renamed:2"), ("point", "gradnorm.npy:written:2"),
             ("point", "best.npz:written:1"), ("random", round(0.3 * full, 3)), ("point", "attention.npz:renamed:1")]
    landed = crashes.killed_run(spec, cut, kills, log=lambda *a: None)
    assert len(landed) >= 5
    assert crashes.differences(ref, cut) == []


def test_a_torn_metrics_line_is_cut_on_resume(tmp_path):
    """The log may end mid-line (a kill during a buffered write) and hold rows past the checkpoint:
    resume cuts both, with one truncate, and appends from there."""
    spec = crashes.tiny_spec(str(tmp_path))
    out = str(tmp_path / "run")
    assert crashes.train(spec, out, env={"GRAPHSPEC_CRASH_AT": "metrics.jsonl:torn:13"}) == -signal.SIGKILL
    text = open(os.path.join(out, "metrics.jsonl")).read()
    assert not text.endswith("\n")                       # torn mid-line
    with np.load(os.path.join(out, "last.npz")) as z:
        step = __import__("json").loads(str(z["meta"]))["step"]
    assert step == 8 and '"step": 9' in text             # and rows past the checkpoint
    from runtime.rundir import cut_metrics
    inode = os.stat(os.path.join(out, "metrics.jsonl")).st_ino
    cut_metrics(os.path.join(out, "metrics.jsonl"), step)
    assert os.stat(os.path.join(out, "metrics.jsonl")).st_ino == inode        # cut in place, never rewritten
    rows = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
    assert text.startswith("\n".join(rows) + "\n")
    assert [__import__("json").loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8, 8]


def _hold_lock(run):
    """Take run/run.lock as a training would (another process holding it)."""
    os.makedirs(run, exist_ok=True)
    f = open(os.path.join(run, "run.lock"), "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.seek(0)
    f.truncate()
    f.write("4242\n")
    f.flush()
    return f


def test_a_run_directory_in_use_is_refused(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run_ff"], run)
    before = {n: (run / n).read_bytes() for n in os.listdir(run) if n != "run.lock"}
    lock = _hold_lock(run)
    msg = f"graphspec: {run} is in use by another training (pid 4242); wait for it to finish or train into another --out"
    for flags in ([], ["--resume"], ["--overwrite"]):
        code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", *flags)
        assert (code, err.strip()) == (2, msg)
    assert {n: (run / n).read_bytes() for n in os.listdir(run) if n != "run.lock"} == before
    lock.close()                       # the other training ended: the directory is free again
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--resume", "--steps", "6")
    assert code == 0, err


def test_two_real_trainings_on_one_out(tiny, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", tiny["ff"], "--out", str(run),
                              "--quiet", "--steps", "1000000"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.02)
        code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--seed", "8", "--overwrite")
        assert (code, err.strip()) == (2, f"graphspec: {run} is in use by another training (pid {first.pid}); "
                                          f"wait for it to finish or train into another --out")
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "interrupted at step" in err
    code, out, err = main("eval", run / "last.npz")       # the first run's checkpoint, whole
    assert code == 0, err


def test_a_fresh_run_never_wipes_an_earlier_runs_files(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run_ff"], run)
    os.unlink(run / "last.npz")                           # best.npz and metrics.jsonl, no last.npz
    before = {n: (run / n).read_bytes() for n in os.listdir(run)}
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet")
    assert (code, err.strip()) == (2, f"graphspec: {run} holds an earlier run (best.npz, metrics.jsonl, run.json); continue it "
                                      f"with --resume, train into another --out, or pass --overwrite to start again")
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--resume")
    assert (code, err.strip()) == (2, f"graphspec: --resume: {run / 'last.npz'} does not exist; run without --resume "
                                      f"to start")
    assert {n: (run / n).read_bytes() for n in os.listdir(run)} == before
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--overwrite")
    assert code == 0, err
    for name in ("metrics.jsonl", "best.npz", "last.npz"):
        assert (run / name).read_bytes() == (tiny["run_ff"] / name).read_bytes()


def test_a_bad_setup_never_touches_the_earlier_run(tiny, tmp_path):
    """--overwrite removes the earlier files only once everything else is known to be fine."""
    run = tmp_path / "run"
    shutil.copytree(tiny["run_ff"], run)
    before = {n: (run / n).read_bytes() for n in os.listdir(run)}
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--overwrite", "--batch", "100000000")
    assert code == 2 and "need" in err
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--overwrite", "--data", "/dev/zero")
    assert code == 2
    assert {n: (run / n).read_bytes() for n in os.listdir(run)} == before


def test_leftover_temp_files_of_a_killed_run_are_removed(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run_ff"], run)
    (run / ".tmp-999-last.npz").write_bytes(b"half a checkpoint")
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--resume", "--steps", "6")
    assert code == 0, err
    assert sorted(os.listdir(run)) == ["best.npz", "config.yaml", "last.npz", "metrics.jsonl", "run.json", "run.lock"]


def test_a_full_disk_leaves_the_last_checkpoint_intact(tiny, tmp_path):
    """Writes fail past a file-size limit (as on a full disk): one line, exit 2, last.npz as it
    was; resumed with room again, the run ends as one never stopped."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    shutil.copytree(tiny["run_ff"], run)
    last = (run / "last.npz").read_bytes()
    limit = len(last) // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "train", tiny["ff"], "--out", str(run), "--quiet",
                        "--resume", "--steps", "8"], cwd=ROOT, capture_output=True, text=True, preexec_fn=small_files)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.strip() in [f"graphspec: cannot write {run / name}: File too large; {run / 'last.npz'} holds "
                                f"step 4, intact (continue with --resume)" for name in ("best.npz", "last.npz")]
    assert (run / "last.npz").read_bytes() == last
    assert [n for n in os.listdir(run) if n.startswith(".tmp")] == []
    code, out, err = main("train", tiny["ff"], "--out", run, "--quiet", "--resume", "--steps", "8")
    assert code == 0, err
    code, out, err = main("train", tiny["ff"], "--out", ref, "--quiet", "--steps", "8")
    assert code == 0, err
    for name in ("metrics.jsonl", "best.npz", "last.npz"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_model_save_is_atomic_and_deterministic(tiny, tmp_path):
    from runtime.model import Model
    m = Model(tiny["ff"], seed=3)
    m.save(str(tmp_path / "p.npz"))
    first = (tmp_path / "p.npz").read_bytes()
    m.save(str(tmp_path / "p.npz"))
    assert (tmp_path / "p.npz").read_bytes() == first and os.listdir(tmp_path) == ["p.npz"]
    m2 = Model(tiny["ff"], seed=4)
    m2.load(str(tmp_path / "p.npz"))
    assert all(np.array_equal(a, m2.get_params()[k]) for k, a in m.get_params().items())
