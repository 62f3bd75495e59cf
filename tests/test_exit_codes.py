"""The exit-code contract (README "Exit codes, limits and run directories"), verb by verb:
0 done, 2 bad input with one line on stderr, 130 interrupted, 70 a bug of ours in one line;
gradcheck 1 when a gradient fails. Never a traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, main

import cli
from runtime import commands

VERBS = ["validate", "compile", "render", "schema", "train", "eval", "predict", "generate", "neighbors", "export",
         "gradcheck", "viz", "plot", "tasks", "sweep"]


def invocations(tiny, tmp):
    """verb -> (a fine invocation, a bad one)."""
    elman, att, lstm = (tiny[f"run_{k}"] / "last.npz" for k in ("elman", "att", "lstm"))
    return {
        "validate": (["validate", tiny["elman"]], ["validate", tmp / "nope.yaml"]),
        "compile": (["compile", tiny["elman"], "--len", "5"], ["compile", tiny["elman"], "--len", "zz=5"]),
        "render": (["render", tiny["elman"]], ["render", tmp / "nope.yaml"]),
        "schema": (["schema"], ["schema", "extra"]),
        "train": (["train", tiny["ff"], "--out", tmp / "run", "--quiet", "--steps", "2"],
                  ["train", tiny["ff"], "--out", tmp / "run", "--quiet", "--steps", "2"]),     # now it holds a run
        "eval": (["eval", elman, "--batches", "1"], ["eval", tmp / "nope.npz"]),
        "predict": (["predict", att, "1 May 2001", "--max-len", "3"], ["predict", lstm, "1 2"]),
        "generate": (["generate", elman, "--length", "3"], ["generate", att]),
        "neighbors": (["neighbors", elman, "e", "-k", "2"], ["neighbors", elman, "zzz-not-a-char"]),
        "export": (["export", elman, "--format", "word2vec", "-o", tmp / "v.txt"], ["export", elman, "-o", tmp / "m.txt"]),
        "gradcheck": (["gradcheck", "specs/feedforward.yaml"], ["gradcheck", tmp / "nope.yaml"]),
        "viz": (["viz", tiny["elman"], "-o", tmp / "g.svg"], ["viz", tiny["elman"], "-o", tmp / "g.gif"]),
        "plot": (["plot", tiny["run_elman"], "-o", tmp / "pics"], ["plot", tmp / "empty"]),
        "tasks": (["tasks", "parity"], ["tasks", "parityy"]),
        "sweep": (["sweep", tiny["ff"], "--set", "train.steps=1,2", "--out", tmp / "sweep", "--quiet"],
                  ["sweep", tiny["ff"], "--set", "train.stesp=1,2", "--out", tmp / "sweep"]),
    }


def test_every_verb_is_covered():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd")
    assert sorted(sub.choices) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_zero_when_done_two_with_one_line_for_bad_input(verb, tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    good, bad = invocations(tiny, tmp_path)[verb]
    code, out, err = main(*good)
    assert code == 0, err
    code, out, err = main(*bad)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err


def _raising(exc):
    def fn(args):
        raise exc
    return fn


@pytest.mark.parametrize("verb", VERBS)
def test_an_interrupt_is_130_and_a_bug_of_ours_is_70_in_one_line(verb, tiny, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    good, _ = invocations(tiny, tmp_path)[verb]
    module = cli if hasattr(cli, f"cmd_{verb}") else commands
    monkeypatch.setattr(module, f"cmd_{verb}", _raising(KeyboardInterrupt()))
    assert main(*good) == (130, "", "interrupted\n")
    monkeypatch.setattr(module, f"cmd_{verb}", _raising(RuntimeError("boom\nsecond line")))
    assert main(*good) == (70, "", "graphspec: internal error: RuntimeError: boom second line (rerun with "
                                   "GRAPHSPEC_DEBUG=1 for the traceback, and please report it)\n")
    monkeypatch.setattr(module, f"cmd_{verb}", _raising(OSError(28, "No space left on device", "/some/file")))
    assert main(*good) == (2, "", "graphspec: /some/file: No space left on device\n")


def test_a_real_ctrl_c_outside_training_is_130(tiny):
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "generate", str(tiny["run_elman"] / "last.npz"),
                          "--length", "100000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert (p.returncode, err) == (130, "interrupted\n")


def test_gradcheck_exits_1_when_a_gradient_fails():
    code, out, err = main("gradcheck", "specs/feedforward.yaml", "--tol", "1e-300")
    assert code == 1 and "FAIL" in out
