"""graphspec sweep (runtime/sweep.py): the grid, its run directories and table, and a sweep killed
midway and run again ending with the results of one never interrupted."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, main
from graphspec import UserError
from runtime.sweep import grid, point_name

TINY = ["--set", "data.length=6", "--set", "train.steps=12", "--set", "train.eval_every=4",
        "--set", "train.batch=4"]


def test_the_grid_is_the_product_of_the_lists_times_the_seeds():
    keys, points = grid(["dims.H=4,8", "train.lr=0.1,0.01"], seeds=2)
    assert keys == ["dims.H", "train.lr", "train.seed"]
    assert [[ov.value for ov in p] for p in points] == [
        [4, 0.1, 0], [4, 0.1, 1], [4, 0.01, 0], [4, 0.01, 1], [8, 0.1, 0], [8, 0.1, 1], [8, 0.01, 0], [8, 0.01, 1]]
    assert point_name(points[1]) == "H=4_lr=0.1_seed=1"
    _, [p] = grid(["train.len={t: 5}"], None)
    assert point_name(p).startswith("len=--t--5--")            # made safe, a hash keeps it unique
    with pytest.raises(UserError, match=r"^--seeds K sets train.seed=0..K-1: give either --seeds or --set "
                                        r"train.seed=..., not both$"):
        grid(["train.seed=1,2"], 3)
    with pytest.raises(UserError, match=r"^--set dims.H is given twice; list its values once: KEY=V1,V2$"):
        grid(["dims.H=1,2", "dims.H=3,4"], None)


def test_a_bad_value_anywhere_in_the_grid_stops_it_before_any_training(tmp_path):
    code, out, err = main("sweep", "specs/lstm.yaml", "--set", "dims.H=4,0", "--out", tmp_path / "s")
    assert (code, out, err) == (2, "", "--set dims.H=0: dim 'H' must be a positive integer or 'data', got 0\n")
    assert not os.path.exists(tmp_path / "s" / "runs" / "H=4")


def _sweep(out, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "sweep", "specs/lstm.yaml",
                             "--set", "dims.H=2,3", "--out", str(out), "--quiet", *TINY], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_a_killed_sweep_run_again_gives_the_same_results(tmp_path):
    whole = _sweep(tmp_path / "whole")
    assert whole.wait(timeout=900) == 0, whole.stderr.read()
    killed = _sweep(tmp_path / "killed")
    second = tmp_path / "killed" / "runs" / "H=3" / "last.npz"      # the first point is done by then
    while killed.poll() is None and not second.exists():
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)                              # the sweep and its training
    killed.wait()
    again = _sweep(tmp_path / "killed")
    assert again.wait(timeout=900) == 0, again.stderr.read()
    with open(tmp_path / "whole" / "results.csv") as a, open(tmp_path / "killed" / "results.csv") as b:
        ra, rb = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert ra == rb and [r["run"] for r in ra] == ["H=2", "H=3"] and all(r["done"] == "True" for r in ra)
    for name in ("H=2", "H=3"):
        for f in ("metrics.jsonl", "last.npz"):
            assert (tmp_path / "whole" / "runs" / name / f).read_bytes() == \
                   (tmp_path / "killed" / "runs" / name / f).read_bytes(), (name, f)
    assert (tmp_path / "whole" / "sweep.png").exists()
    # and once more: everything is done, nothing trains
    code, out, err = main("sweep", "specs/lstm.yaml", "--set", "dims.H=2,3", "--out", tmp_path / "whole", *TINY)
    assert code == 0 and err == "[1/2] H=2: done already\n[2/2] H=3: done already\n"


def test_a_run_of_other_values_is_not_taken_for_a_point_of_the_grid(tmp_path):
    code, out, err = main("sweep", "specs/lstm.yaml", "--set", "dims.H=2,3", "--out", tmp_path / "s", "--quiet", *TINY)
    assert code == 0, err
    tiny = [a if a != "train.steps=12" else "train.steps=8" for a in TINY]       # the same names, other values
    code, out, err = main("sweep", "specs/lstm.yaml", "--set", "dims.H=2,3", "--out", tmp_path / "s", *tiny)
    assert (code, out) == (2, "")
    assert err.startswith(f"graphspec: {tmp_path}/s/runs/H=2 holds a run of another version of specs/lstm.yaml "
                          f"or of other values (hash ")
