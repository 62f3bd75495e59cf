"""Hostile and careless input, class by class (issue #16): every flag checked before any work,
non-regular and oversized files, deep nesting, paths that escape or files that leak, damaged run
files, decoding from the wrong kind of checkpoint, absurd sizes; each one clear line and exit 2
(or 0 where the input is fine), within bounded time and memory. Kills during writes and
concurrent runs are in test_crashes.py; the exit-code contract of every verb in test_exit_codes.py.

Most cases call cli.main in this process (fast); the ones that are about time and memory run the
CLI as a subprocess and measure its peak resident memory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, main, spec_text

GiB = 1 << 30


def one_line(argv, expected, code=2):
    """The command exits `code` with exactly `expected` as its one stderr line."""
    got, out, err = main(*argv)
    assert (got, err.splitlines()) == (code, [expected]), err
    return out


# Runs cli.py and, at exit, writes the process's own peak resident memory (VmHWM: this process
# image's, from exec on; rusage's maxrss would count the pages of the forked test runner).
_PEAK = """
import atexit, runpy, sys
peak_file = sys.argv[1]
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    with open(peak_file, "w") as f:
        f.write(str(kb * 1024))
atexit.register(_peak)
path = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(path, run_name="__main__")
"""


def measured(*argv, timeout=120):
    """(exit code, stdout, stderr, seconds, peak resident bytes) of `graphspec ARGV` as a process."""
    import tempfile
    t0 = time.time()
    fd, peak_file = tempfile.mkstemp(suffix=".peak")
    os.close(fd)
    p = subprocess.Popen([sys.executable, "-c", _PEAK, peak_file, os.path.join(ROOT, "cli.py"), *map(str, argv)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"graphspec {' '.join(map(str, argv))} ran past {timeout} s")
    with open(peak_file) as f:
        peak = int(f.read() or 0)
    assert peak > 0, f"graphspec {' '.join(map(str, argv))} did not report its peak memory"
    os.unlink(peak_file)
    return p.returncode, out, err, time.time() - t0, peak


# ================================================================ flags
# every flag of every verb: the bad value named, the rule it breaks, exit 2, before any work
FLAG_CASES = [
    # compile: the values a spec's train section and dims would hold
    (["compile", "specs/elman.yaml", "--len", "abc"], "graphspec compile: argument --len: 'abc' is not an integer"),
    (["compile", "specs/elman.yaml", "--len", "0"], "graphspec compile: argument --len: 0 is not at least 1 (as a length in train.len)"),
    (["compile", "specs/elman.yaml", "--len", "t=-5"], "graphspec compile: argument --len: -5 is not at least 1 (as a length in train.len)"),
    (["compile", "specs/elman.yaml", "--len", "1.5"], "graphspec compile: argument --len: '1.5' is not an integer"),
    (["compile", "specs/elman.yaml", "--len", "t="], "graphspec compile: argument --len: '' is not an integer"),
    (["compile", "specs/elman.yaml", "--len", "=5"], "graphspec compile: argument --len: '=5': give T or AXIS=T, with AXIS an axis name like t or src"),
    (["compile", "specs/elman.yaml", "--len", "a-b=3"], "graphspec compile: argument --len: 'a-b=3': give T or AXIS=T, with AXIS an axis name like t or src"),
    (["compile", "specs/elman.yaml", "--bind", "V=abc"], "graphspec compile: argument --bind: 'abc' is not an integer"),
    (["compile", "specs/elman.yaml", "--bind", "V=0"], "graphspec compile: argument --bind: 0 is not at least 1 (as a dim's size in a spec)"),
    (["compile", "specs/elman.yaml", "--bind", "V=-2"], "graphspec compile: argument --bind: -2 is not at least 1 (as a dim's size in a spec)"),
    (["compile", "specs/elman.yaml", "--bind", "=3"], "graphspec compile: argument --bind: '=3': give DIM=N, e.g. V=60"),
    (["compile", "specs/elman.yaml", "--bind", "V"], "graphspec compile: argument --bind: 'V': give DIM=N, e.g. V=60"),
    (["compile", "specs/elman.yaml", "--batch", "-3"], "graphspec compile: argument --batch: -3 is not at least 1 (as train.batch in a spec)"),
    (["compile", "specs/elman.yaml", "--batch", "0"], "graphspec compile: argument --batch: 0 is not at least 1 (as train.batch in a spec)"),
    (["compile", "specs/elman.yaml", "--batch", "1e3"], "graphspec compile: argument --batch: '1e3' is not an integer"),
    # train
    (["train", "specs/elman.yaml", "--epochs", "nan"], "graphspec train: argument --epochs: nan is not a finite number"),
    (["train", "specs/elman.yaml", "--epochs", "inf"], "graphspec train: argument --epochs: inf is not a finite number"),
    (["train", "specs/elman.yaml", "--epochs", "-1"], "graphspec train: argument --epochs: -1 is not greater than 0"),
    (["train", "specs/elman.yaml", "--epochs", "0"], "graphspec train: argument --epochs: 0 is not greater than 0"),
    (["train", "specs/elman.yaml", "--steps", "-1"], "graphspec train: argument --steps: -1 is not at least 1 (as train.steps in a spec)"),
    (["train", "specs/elman.yaml", "--steps", "0"], "graphspec train: argument --steps: 0 is not at least 1 (as train.steps in a spec)"),
    (["train", "specs/elman.yaml", "--steps", "ten"], "graphspec train: argument --steps: 'ten' is not an integer"),
    (["train", "specs/elman.yaml", "--batch", "-3"], "graphspec train: argument --batch: -3 is not at least 1 (as train.batch in a spec)"),
    (["train", "specs/elman.yaml", "--batch", "0"], "graphspec train: argument --batch: 0 is not at least 1 (as train.batch in a spec)"),
    (["train", "specs/elman.yaml", "--lr", "-1"], "graphspec train: argument --lr: -1 is not greater than 0 (as train.lr in a spec)"),
    (["train", "specs/elman.yaml", "--lr", "0"], "graphspec train: argument --lr: 0 is not greater than 0 (as train.lr in a spec)"),
    (["train", "specs/elman.yaml", "--lr", "nan"], "graphspec train: argument --lr: nan is not a finite number"),
    (["train", "specs/elman.yaml", "--lr", "inf"], "graphspec train: argument --lr: inf is not a finite number"),
    (["train", "specs/elman.yaml", "--lr=-inf"], "graphspec train: argument --lr: -inf is not a finite number"),
    (["train", "specs/elman.yaml", "--seed", "-1"], "graphspec train: argument --seed: -1 is not at least 0 (as train.seed in a spec)"),
    (["train", "specs/elman.yaml", "--seed", "1.5"], "graphspec train: argument --seed: '1.5' is not an integer"),
    (["train", "specs/elman.yaml", "--stop-after", "-1"], "graphspec train: argument --stop-after: -1 is not at least 0"),
    # eval, decoding, checks, pictures: bounds of the loops the numbers drive
    (["eval", "x.npz", "--batches", "0"], "graphspec eval: argument --batches: 0 is not at least 1"),
    (["eval", "x.npz", "--batches", "1000000000"], "graphspec eval: argument --batches: 1000000000 is more than 100000, the most allowed"),
    (["eval", "x.npz", "--split", "train"], "graphspec eval: argument --split: invalid choice: 'train' (choose from 'valid', 'test')"),
    (["predict", "x.npz", "abc", "--beam", "0"], "graphspec predict: argument --beam: 0 is not at least 1"),
    (["predict", "x.npz", "abc", "--beam", "1000"], "graphspec predict: argument --beam: 1000 is more than 100, the most allowed"),
    (["predict", "x.npz", "abc", "--max-len", "0"], "graphspec predict: argument --max-len: 0 is not at least 1"),
    (["predict", "x.npz", "abc", "--max-len", "100000"], "graphspec predict: argument --max-len: 100000 is more than 1000, the most allowed"),
    (["generate", "x.npz", "--length", "-5"], "graphspec generate: argument --length: -5 is not at least 0"),
    (["generate", "x.npz", "--length", "1000000000"], "graphspec generate: argument --length: 1000000000 is more than 100000, the most allowed"),
    (["generate", "x.npz", "--temperature", "nan"], "graphspec generate: argument --temperature: nan is not a finite number"),
    (["generate", "x.npz", "--temperature", "-1"], "graphspec generate: argument --temperature: -1 is not at least 0"),
    (["generate", "x.npz", "--seed", "-1"], "graphspec generate: argument --seed: -1 is not at least 0 (as train.seed in a spec)"),
    (["neighbors", "x.npz", "w", "-k", "-3"], "graphspec neighbors: argument -k: -3 is not at least 1"),
    (["neighbors", "x.npz", "w", "-k", "0"], "graphspec neighbors: argument -k: 0 is not at least 1"),
    (["neighbors", "x.npz", "w", "-k", "1000000000"], "graphspec neighbors: argument -k: 1000000000 is more than 10000, the most allowed"),
    (["gradcheck", "specs/elman.yaml", "--tol", "nan"], "graphspec gradcheck: argument --tol: nan is not a finite number"),
    (["gradcheck", "specs/elman.yaml", "--tol", "0"], "graphspec gradcheck: argument --tol: 0 is not greater than 0"),
    (["viz", "specs/elman.yaml", "-o", "x.png", "--unroll", "-1"], "graphspec viz: argument --unroll: -1 is not at least 1"),
    (["viz", "specs/elman.yaml", "-o", "x.png", "--unroll", "0"], "graphspec viz: argument --unroll: 0 is not at least 1"),
    (["viz", "specs/elman.yaml", "-o", "x.png", "--unroll", "100000"], "graphspec viz: argument --unroll: 100000 is more than 200, the most allowed"),
    (["train"], "graphspec train: the following arguments are required: spec"),
]


@pytest.mark.parametrize("argv, expected", FLAG_CASES, ids=[" ".join(a[0:1] + a[2:]) for a, _ in FLAG_CASES])
def test_a_bad_flag_is_one_line_before_any_work(argv, expected):
    verb = argv[0]
    one_line(argv, f"{expected} (see graphspec {verb} --help)")


# checked once the spec is read (the names come from it), still before any work
AFTER_SPEC_CASES = [
    (["compile", "specs/elman.yaml", "--len", "zz=5"], "graphspec: --len zz=5: the spec has no axis 'zz' (axes: t)"),
    (["compile", "specs/seq2seq.yaml", "--len", "scr=5"], "graphspec: --len scr=5: the spec has no axis 'scr'; did you mean 'src'? (axes: src, tgt)"),
    (["compile", "specs/elman.yaml", "--bind", "Q=3"], "graphspec: --bind Q=3: the spec has no dim 'Q' (dims: V, D, H)"),
    (["compile", "specs/elman.yaml", "--bind", "HH=3"], "graphspec: --bind HH=3: the spec has no dim 'HH'; did you mean 'H'? (dims: V, D, H)"),
    (["neighbors", "x.npz"], "graphspec: neighbors: give a WORD or --analogy A B C"),
    (["neighbors", "x.npz", "w", "--analogy", "a", "b", "c"], "graphspec: neighbors: give a WORD or --analogy A B C, not both"),
]


@pytest.mark.parametrize("argv, expected", AFTER_SPEC_CASES, ids=[" ".join(a[2:]) for a, _ in AFTER_SPEC_CASES])
def test_a_flag_naming_what_the_spec_lacks(argv, expected):
    one_line(argv, expected)


@pytest.mark.parametrize("value, message", [
    ("seed: -1", "train/seed: -1 is less than the minimum of 0"),
    ("lr: -0.5", "train/lr: -0.5 is less than or equal to the minimum of 0"),
    ("lr: .nan", ".nan is not a finite number; every number in a spec is finite"),
    ("lr: .inf", ".inf is not a finite number; every number in a spec is finite"),
    ("clip: -.inf", "-.inf is not a finite number; every number in a spec is finite"),
    ("steps: 0", "train/steps: 0 is less than the minimum of 1"),
    ("batch: -4", "train/batch: -4 is less than the minimum of 1"),
])
def test_the_spec_values_flags_override_have_the_same_checks(tmp_path, value, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("feedforward.yaml", ("train: {optimizer: adam, lr: 0.01, batch: 64, steps: 1500, "
                                                   "target: {acc: 0.99}}", "train: {" + value + "}")))
    code, out, err = main("validate", spec)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.split(": ", 1)[1].strip() == message


def test_every_flag_that_overrides_a_spec_value_reads_its_bounds_from_the_schema():
    """--lr, --batch, --steps, --seed, --len: the schema's bounds, so the two cannot drift apart."""
    from graphspec.flags import _schema_rule
    rules = {k: _schema_rule(("train", k)) for k in ("lr", "batch", "steps", "seed")}
    assert rules == {"lr": {"type": "number", "exclusiveMinimum": 0}, "batch": {"type": "integer", "minimum": 1},
                     "steps": {"type": "integer", "minimum": 1}, "seed": {"type": "integer", "minimum": 0}}
    assert _schema_rule(("train", "len", "*")) == {"type": "integer", "minimum": 1}


def test_epochs_of_less_than_one_step(tiny):
    one_line(["train", tiny["ff"], "--epochs", "1e-9", "--out", tiny["dir"] / "epochs"],
             "graphspec: --epochs 1e-09: less than one step (an epoch is 1000 steps of batch 4)")
    assert not os.path.exists(tiny["dir"] / "epochs")


# ================================================================ files that are not files, sizes
@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_specs_and_block_files_must_be_regular_files(tmp_path, fifo):
    """A FIFO would hang the read, /dev/zero never ends: both refused from a stat, never opened."""
    for path, what in ((fifo, "a FIFO (named pipe)"), ("/dev/zero", "a character device"),
                       ("/dev/null", "a character device")):
        one_line(["validate", path], f"{path}:1:1: {what}, not a regular file")
        spec = tmp_path / "uses_block.yaml"
        spec.write_text(f"name: m\nblocks: [{path}]\nnodes:\n  h: x\n")
        one_line(["validate", spec], f"{path}:1:1: {what}, not a regular file")


def test_an_oversized_block_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:          # sparse: 2 MiB claimed, nothing written
        f.truncate(2 << 20)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: m\nblocks: [big.yaml]\nnodes:\n  h: x\n")
    one_line(["validate", spec], f"{big}:1:1: the file is {2 << 20} bytes, larger than 1048576; a spec should be a page of YAML")


def test_data_files_must_be_regular_files_of_bounded_size(tiny, tmp_path, fifo):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(40 << 20)
    cases = [(fifo, "a FIFO (named pipe), not a regular file"), ("/dev/zero", "a character device, not a regular file"),
             (tmp_path, "a directory, not a regular file"), (tmp_path / "nope.txt", "no such file"),
             (big, f"the data file is {40 << 20} bytes, larger than {32 << 20}")]
    for path, why in cases:
        one_line(["train", tiny["elman"], "--data", path, "--out", tmp_path / "run"], f"graphspec: {path}: {why}")
        one_line(["eval", tiny["run_elman"] / "last.npz", "--data", path], f"graphspec: {path}: {why}")
    assert not os.path.exists(tmp_path / "run")


def test_one_enormous_line_of_pairs_is_refused_before_it_is_split(tmp_path, tiny):
    data = tmp_path / "pairs.tsv"
    data.write_text("ab\tba\n" + "x" * 20_000 + "\ty\n" + "cd\tdc\n")
    one_line(["train", "specs/seq2seq.yaml", "--data", data, "--out", tmp_path / "run"],
             f"graphspec: {data}:2: a sequence of 20000 characters is longer than 10000, the most one example may have")


def test_checkpoints_and_run_files_must_be_regular_files(tiny, tmp_path, fifo):
    for path, what in ((fifo, "a FIFO (named pipe)"), ("/dev/zero", "a character device"), (tmp_path, "a directory")):
        for verb in (["eval", path], ["generate", path], ["predict", path, "x"], ["neighbors", path, "x"]):
            one_line(verb, f"graphspec: {path}: {what}, not a regular file" if path != tmp_path else
                     f"graphspec: {path} is a directory; give a checkpoint file: a run directory holds best.npz "
                     f"and last.npz, {path} holds neither")
    run = tmp_path / "run"
    shutil.copytree(tiny["run_elman"], run)
    os.unlink(run / "gradnorm.npy")
    os.mkfifo(run / "gradnorm.npy")
    one_line(["plot", run], f"graphspec: {run / 'gradnorm.npy'}: a FIFO (named pipe), not a regular file")
    one_line(["train", tiny["elman"], "--out", run, "--resume"],
             f"graphspec: {run / 'gradnorm.npy'}: not a regular file; a run directory holds only files graphspec wrote")


def test_unbounded_reads_stay_small(tmp_path, fifo):
    """The issue's /dev/zero and FIFO cases as processes: refused in well under a second of work
    and far from a gibibyte (14 GiB was seen; a FIFO hung)."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: m\nblocks: [/dev/zero]\nnodes:\n  h: x\n")
    for argv in (["validate", "/dev/zero"], ["validate", fifo], ["validate", spec],
                 ["train", "specs/elman.yaml", "--data", "/dev/zero", "--out", tmp_path / "r"]):
        code, out, err, secs, peak = measured(*argv, timeout=60)
        assert code == 2 and len(err.splitlines()) == 1 and peak < GiB, (argv, err, peak)


# ================================================================ nesting
NESTED = {
    "flow list in data": ("data: {task: bits, n: 8}", "data: " + "[" * 10000 + "]" * 10000),
    "flow mapping in data": ("data: {task: bits, n: 8}", "data: " + "{a: " * 5000 + "1" + "}" * 5000),
    "block mappings in decode": ("train:", "decode:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40))
                                 + "  " * 41 + "x: 1\ntrain:"),
    "lists in params": ("params:", "params:\n  Z: {shape: " + "[" * 100 + "]" * 100 + "}\n  Z2:"),
}


@pytest.mark.parametrize("where", list(NESTED))
def test_deep_nesting_anywhere_is_one_line(tmp_path, where):
    a, b = NESTED[where]
    spec = tmp_path / "deep.yaml"
    spec.write_text(spec_text("feedforward.yaml", (a, b)))
    code, out, err = main("validate", spec)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(str(spec)) and err.rstrip().endswith("nesting deeper than 32 levels; a spec is shallower than that")


def test_deep_nesting_in_a_block_file_and_in_an_equation(tmp_path):
    block = tmp_path / "b.yaml"
    block.write_text("block: b\nargs: [x]\nnodes:\n  h: " + "[" * 5000 + "]" * 5000 + "\nout: h\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: m\nblocks: [b.yaml]\nnodes:\n  h: x\n")
    one_line(["validate", spec], f"{block}:4:37: nesting deeper than 32 levels; a spec is shallower than that")
    spec.write_text(spec_text("feedforward.yaml", ("o: W5 @ h4 + b5", "o: " + "(" * 900 + "W5 @ h4 + b5" + ")" * 900)))
    code, _, err = main("validate", spec)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_deep_json_in_run_files(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run_elman"], run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[" * 100000 + "]" * 100000 + "\n")
    code, out, err = main("plot", run, "-o", tmp_path / "pics")      # plot skips what is not a record
    assert code == 0, err
    with open(run / "metrics.jsonl") as f:
        n = sum(1 for _ in f)
    one_line(["train", tiny["elman"], "--out", run, "--resume"],
             f"graphspec: {run / 'metrics.jsonl'}:{n}: not a JSON line; the log is damaged "
             f"(move the file away to resume without it)")


# ================================================================ paths that escape, content that leaks
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "..", "a/b", ".hidden", "-rf", "x" * 101])
def test_a_spec_name_cannot_leave_the_runs_directory(tmp_path, name):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("feedforward.yaml", ("name: feedforward", f"name: {json.dumps(name)}")))
    code, out, err = main("train", spec, "--steps", "1")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    if len(name) <= 100:
        assert err.split(": ", 1)[1].strip() == (f"name: {name!r} is not a plain name (letters, digits, _ . + -, not "
                                                  f"starting with . + or -): it names the run directory runs/NAME")
    assert not os.path.exists(os.path.join(ROOT, "runs", name)) and not os.path.exists(os.path.join(ROOT, "escaped"))


SECRET = "SECRET_TOKEN_4711"
NOT_OURS = ("neither a spec nor a block file (a spec has nodes, a block file has block, and most of either's "
            "top-level keys are theirs); its content is not shown")
LEAKY = {   # files that are not specs, each of which used to be quoted in an error
    "a secrets mapping": (f"{SECRET}: hunter2\napi_key: {SECRET}x\n", NOT_OURS),
    "a password-file line": (f"root:x:0:0:{SECRET}:/root:/bin/bash\ndaemon: {SECRET}\n", "YAML syntax: " + NOT_OURS),
    "an INI file": (f"[default]\naws_secret_access_key = {SECRET}\n", "YAML syntax: " + NOT_OURS),
    "a password file": (f"root:x:0:0:{SECRET}:/root:/bin/bash\nbin:x:1:1:{SECRET}:/bin:/usr/sbin/nologin\n",
                        "a block file is a YAML mapping with block, nodes and out"),
    "a YAML syntax error": (f"{SECRET}: [unclosed\nx: *{SECRET}\n", "YAML syntax: " + NOT_OURS),
    "an undefined alias": (f"a: 1\nb: *{SECRET}\n", "YAML syntax: " + NOT_OURS),
    "duplicate keys": (f"{SECRET}: 1\n{SECRET}: 2\n", NOT_OURS),
    "a tag": (f"{SECRET}: !!python/name:{SECRET} x\n", NOT_OURS),
    "a list of mappings": (f"- {SECRET}: 1\n  {SECRET}: 2\n", "a block file is a YAML mapping with block, nodes and out"),
}


@pytest.mark.parametrize("kind", list(LEAKY))
def test_errors_never_quote_a_file_that_is_not_a_spec(tmp_path, kind):
    text, message = LEAKY[kind]
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.yaml"
    secret.write_text(text)
    spec = tmp_path / "spec" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text("name: m\nblocks: [../outside/secret.yaml]\nnodes:\n  h: x\n")
    code, out, err = main("validate", spec)
    assert code == 2 and SECRET not in err + out and len(err.splitlines()) == 1
    assert err.split(": ", 1)[1].strip() == message
    code, out, err = main("validate", secret)          # given directly too
    assert code == 2 and SECRET not in err + out


def test_a_checkpoint_pointing_its_spec_at_a_secret_does_not_leak_it(tiny, tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"{SECRET}: hunter2\n")
    ck = tmp_path / "last.npz"
    rewrite_meta(tiny["run_ff"] / "last.npz", ck, spec=str(secret),
                 spec_hash=__import__("runtime.train", fromlist=["spec_hash"]).spec_hash(str(secret)))
    for verb in (["eval", ck], ["generate", ck]):
        code, out, err = main(*verb)
        assert code == 2 and SECRET not in err + out and err.strip() == f"{secret}:1:1: {NOT_OURS}"


# ================================================================ damaged run files
def rewrite_meta(src, dst, **changes):
    """Copy a checkpoint with meta entries changed (a value of None removes the entry; `meta=`
    replaces it whole)."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    if "meta" in changes:
        meta = changes.pop("meta")
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


def rewrite_arrays(src, dst, drop=(), **arrays):
    with np.load(src) as z:
        out = {k: z[k] for k in z.files if k not in drop}
    out.update({k.replace("__", "/"): v for k, v in arrays.items()})
    np.savez(dst, **out)


def damaged_checkpoints(good, d):
    """(file, expected message) for every kind of damage a checkpoint can have."""
    d.mkdir(exist_ok=True)
    with np.load(good) as z:
        W, V_o = z["param/W"], z["param/V_o"]
    hint = ("it may be truncated or corrupted — use the other checkpoint in the run directory (best.npz or last.npz) "
            "or start again without --resume")
    cases = []

    def case(name, message, make):
        """message: the damage, or for a checkpoint of another model ("param ...: ") the mismatch"""
        path = d / name
        make(path)
        mismatch = message is None or name.startswith(("param_missing", "param_extra", "param_shape"))
        cases.append((path, message if mismatch else f"not a readable checkpoint ({message}); {hint}"))

    raw = open(good, "rb").read()
    case("truncated.npz", None, lambda p: p.write_bytes(raw[:len(raw) // 2]))
    case("garbage.npz", "BadZipFile: File is not a zip file", lambda p: p.write_bytes(b"garbage" * 100))
    case("empty.npz", "BadZipFile: File is not a zip file", lambda p: p.write_bytes(b""))
    case("object_param.npz", "'param/W' holds Python objects; a checkpoint holds numbers only",
         lambda p: rewrite_arrays(good, p, param__W=np.array([{"a": 1}, None], dtype=object)))
    case("object_meta.npz", "'meta' holds Python objects; a checkpoint holds numbers only",
         lambda p: rewrite_arrays(good, p, meta=np.array([1, "x"], dtype=object)))
    case("no_meta.npz", "no meta", lambda p: rewrite_arrays(good, p, drop=("meta",)))
    case("meta_list.npz", "its meta is list, not a JSON object", lambda p: rewrite_meta(good, p, meta=[1, 2]))
    case("meta_not_json.npz", None, lambda p: rewrite_arrays(good, p, meta=np.array("{not json")))
    case("meta_step_string.npz", "meta 'step' is str, not an integer", lambda p: rewrite_meta(good, p, step="12"))
    case("meta_step_negative.npz", "a negative step or seed in its meta", lambda p: rewrite_meta(good, p, step=-3))
    case("meta_seed_float.npz", "meta 'seed' is float, not an integer", lambda p: rewrite_meta(good, p, seed=1.5))
    case("meta_bind_bad.npz", "meta 'bind' is not {dim: positive integer}", lambda p: rewrite_meta(good, p, bind={"V": "x"}))
    case("meta_no_spec.npz", "its meta has no 'spec'", lambda p: rewrite_meta(good, p, spec=None))
    case("meta_cfg_bad.npz", "meta 'cfg' is not a train section: -1 is less than the minimum of 1",
         lambda p: rewrite_meta(good, p, cfg={"batch": -1}))
    case("meta_version.npz", "version 99; this graphspec reads version 1", lambda p: rewrite_meta(good, p, version=99))
    case("param_missing.npz", "param 'V_o' is missing (the spec declares E, U, W, b, V_o, c; the checkpoint holds "
                              "E, U, W, b, c)", lambda p: rewrite_arrays(good, p, drop=("param/V_o",)))
    case("param_extra.npz", "param 'R' is not one of the spec's (E, U, W, b, V_o, c): a checkpoint of another model",
         lambda p: rewrite_arrays(good, p, param__R=W))
    case("param_shape.npz", f"param 'W' has shape {W.shape[0]}x{W.shape[0] + 1}; the spec declares {W.shape[0]}x{W.shape[1]}",
         lambda p: rewrite_arrays(good, p, param__W=np.zeros((W.shape[0], W.shape[0] + 1), np.float32)))
    case("param_int.npz", "param 'W' is int64, not floating point",
         lambda p: rewrite_arrays(good, p, param__W=np.zeros(W.shape, np.int64)))
    case("param_nan.npz", "param 'V_o' holds NaN or infinite values",
         lambda p: rewrite_arrays(good, p, param__V_o=np.full(V_o.shape, np.nan, np.float32)))
    return cases


def test_damaged_checkpoints_are_one_line_each_for_every_verb_that_reads_them(tiny, tmp_path):
    good = tiny["run_elman"] / "last.npz"
    cases = damaged_checkpoints(good, tmp_path / "ck")
    assert len(cases) >= 20
    for path, message in cases:
        for verb in (["eval", path], ["generate", path, "--length", "3"]):
            code, out, err = main(*verb)
            assert code == 2 and out == "" and len(err.splitlines()) == 1, (verb, err)
            assert err.startswith(f"graphspec: {path}: "), err
            if message is not None:
                assert err.strip() == f"graphspec: {path}: {message}", err


def test_resume_refuses_a_damaged_last_checkpoint_and_keeps_the_run(tiny, tmp_path):
    cases = damaged_checkpoints(tiny["run_elman"] / "last.npz", tmp_path / "ck")
    for path, message in cases[::3]:
        run = tmp_path / f"run_{path.stem}"
        shutil.copytree(tiny["run_elman"], run)
        shutil.copy(path, run / "last.npz")
        before = {n: (run / n).read_bytes() for n in os.listdir(run)}
        code, out, err = main("train", tiny["elman"], "--out", run, "--resume", "--quiet")
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"graphspec: {run / 'last.npz'}"), err
        assert {n: (run / n).read_bytes() for n in os.listdir(run)} == before      # nothing lost


def test_a_checkpoint_naming_an_absurd_batch_is_refused_before_a_batch_is_built(tiny, tmp_path):
    ck = tmp_path / "last.npz"
    with np.load(tiny["run_ff"] / "last.npz") as z:
        cfg = json.loads(str(z["meta"]))["cfg"]
    rewrite_meta(tiny["run_ff"] / "last.npz", ck, cfg=dict(cfg, batch=10 ** 12))
    code, out, err = main("eval", ck)
    assert code == 2 and len(err.splitlines()) == 1 and "with batch 1000000000000" in err and "GiB" in err


def test_optimizer_state_of_another_model_is_refused_on_resume(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run_elman"], run)
    rewrite_arrays(tiny["run_elman"] / "last.npz", run / "last.npz", opt_m=np.zeros(7, np.float32))
    with np.load(tiny["run_elman"] / "last.npz") as z:
        n = z["opt_m"].shape[0]
    one_line(["train", tiny["elman"], "--out", run, "--resume"],
             f"graphspec: {run / 'last.npz'}: optimizer state 'opt_m' is a 7 float32 array; this model and "
             f"optimizer need {n}")


def test_a_checkpoint_of_another_spec_under_this_spec_meta(tiny, tmp_path):
    """lstm params under elman meta: the spec's params are checked, not the meta's word."""
    ck = tmp_path / "mixed.npz"
    with np.load(tiny["run_lstm"] / "last.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    with np.load(tiny["run_elman"] / "last.npz") as z:
        arrays["meta"] = z["meta"]
    np.savez(ck, **arrays)
    code, out, err = main("eval", ck)
    assert code == 2 and err.startswith(f"graphspec: {ck}: param 'E' is missing (the spec declares E, U, W, b, V_o, c")


def test_damaged_gradient_norms_and_metrics(tiny, tmp_path):
    run = tmp_path / "run"
    cases = {
        "object array": lambda p: np.save(p, np.array([None, {"x": 1}], dtype=object), allow_pickle=True),
        "one dimension": lambda p: np.save(p, np.zeros(5)),
        "strings": lambda p: np.save(p, np.array([["a", "b"]])),
        "not npy": lambda p: p.write_bytes(b"not an npy file"),
        "truncated": lambda p: p.write_bytes((tiny["run_lstm"] / "gradnorm.npy").read_bytes()[:100]),
        "huge header": lambda p: open(p, "wb").write(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': '<f8', "
                                                     b"'fortran_order': False, 'shape': (100000000, 100), }  \n"),
    }
    for what, make in cases.items():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(tiny["run_lstm"], run)
        make(run / "gradnorm.npy")
        for argv in (["plot", run, "-o", tmp_path / "pics"], ["train", tiny["lstm"], "--out", run, "--resume"]):
            code, out, err = main(*argv)
            assert code == 2 and len(err.splitlines()) == 1, (what, err)
            assert err.startswith(f"graphspec: {run / 'gradnorm.npy'}: not a gradient-norm log ("), (what, err)
    bad_lines = (('[1, 2]\n', "not a record with an integer step"), ('{"step": "3"}\n', "not a record with an integer step"),
                 ('{"loss": 1}\n', "not a record with an integer step"), ('{"step": 1\n', "not a JSON line"),
                 ('"just a string"\n', "not a record with an integer step"), ('{"step": true}\n', "not a record with "
                                                                                   "an integer step"))
    for line, why in bad_lines:
        shutil.rmtree(run)
        shutil.copytree(tiny["run_lstm"], run)
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run / "metrics.jsonl").write_text(lines[0] + line + "".join(lines[1:]))
        one_line(["train", tiny["lstm"], "--out", run, "--resume"],
                 f"graphspec: {run / 'metrics.jsonl'}:2: {why}; the log is damaged (move the file away to resume without it)")
    with open(run / "metrics.jsonl", "a") as f:
        f.writelines(line for line, _ in bad_lines)
    code, out, err = main("plot", run, "-o", tmp_path / "pics")       # plot draws the rest
    assert code == 0 and out.split() == ["wrote", str(tmp_path / "pics" / "curves.png"), "wrote",
                                         str(tmp_path / "pics" / "gradnorm.png"), "wrote",
                                         str(tmp_path / "pics" / "eigen.png")], err


def test_a_damaged_attention_file(tiny, tmp_path):
    run = tmp_path / "run"
    for what, arrays in (("objects", {"weights": np.array([None], dtype=object)}),
                         ("1-D weights", {"weights": np.zeros(4)}), ("no weights", {"src": np.array(["a"])}),
                         ("a stray array", {"weights": np.zeros((2, 2)), "evil": np.zeros(1)})):
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(tiny["run_att"], run)
        np.savez(run / "attention.npz", **arrays)
        code, out, err = main("plot", run, "-o", tmp_path / "pics")
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith(
            f"graphspec: {run / 'attention.npz'}: not an attention file ("), (what, err)


def test_plot_on_nothing(tmp_path):
    one_line(["plot", tmp_path], f"graphspec: {tmp_path}: nothing to plot (no training has written last.npz, "
                                 f"metrics.jsonl, gradnorm.npy, attention.npz here)")
    (tmp_path / "f").write_text("x")
    one_line(["plot", tmp_path / "f"], f"graphspec: {tmp_path / 'f'}: not a run directory")
    one_line(["plot", tmp_path / "nope"], f"graphspec: {tmp_path / 'nope'}: not a run directory")


def test_out_and_output_paths(tiny, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    one_line(["train", tiny["ff"], "--out", f], f"graphspec: --out {f}: exists and is not a directory")
    one_line(["plot", tiny["run_ff"], "-o", f], f"graphspec: -o {f}: exists and is not a directory")
    one_line(["viz", tiny["ff"], "-o", f / "x.png"], f"graphspec: -o {f / 'x.png'}: cannot write there ({f} is not a "
                                                     f"writable directory)")
    one_line(["viz", tiny["ff"], "-o", tmp_path], f"graphspec: -o {tmp_path}: use a .svg, .pdf, .png, .jpg or .dot file name")
    one_line(["viz", tiny["ff"], "-o", tmp_path / "x.bmp"], f"graphspec: -o {tmp_path / 'x.bmp'}: use a .svg, .pdf, .png, .jpg or .dot file name")
    one_line(["viz", tiny["ff"], "-o", "/proc/x.png"], "graphspec: -o /proc/x.png: cannot write it: No such file or directory")
    assert f.read_text() == "x"


# ================================================================ the wrong kind of checkpoint
def test_decoding_from_the_wrong_kind_of_checkpoint_names_what_it_supports(tiny):
    lstm, att, elman, ff = (tiny[f"run_{k}"] / "last.npz" for k in ("lstm", "att", "elman", "ff"))
    lm = "a language model over tokens (tokens in, the next token out, on one axis)"
    s2s = "an encoder-decoder over tokens (a source and a target on two axes)"
    emb = "a model with an embedding table (E[x] or embed_mean) and a vocabulary"
    for ck, verb, needs, name, task, verbs in (
            (lstm, ["generate"], lm, "lstm", "adding", "eval"),
            (lstm, ["predict", "1 2"], s2s, "lstm", "adding", "eval"),
            (lstm, ["neighbors", "x"], emb, "lstm", "adding", "eval"),
            (ff, ["generate"], lm, "feedforward", "bits", "eval"),
            (att, ["generate"], lm, "seq2seq_attention", "dates", "eval, predict, neighbors"),
            (elman, ["predict", "abc"], s2s, "elman", "charlm", "eval, generate, neighbors")):
        one_line([verb[0], ck, *verb[1:]], f"graphspec: {ck}: {verb[0]} needs {needs}; this checkpoint "
                                           f"({name}, task {task}) supports: {verbs}")


def test_the_right_kind_still_decodes(tiny):
    code, out, err = main("generate", tiny["run_elman"] / "last.npz", "--length", "5", "--temperature", "0")
    assert code == 0 and len(out.rstrip("\n")) == 5, err
    code, out, err = main("predict", tiny["run_att"] / "last.npz", "3 March 1998", "--max-len", "3")
    assert code == 0 and out.strip(), err


# ================================================================ sizes: refused before allocating
def test_absurd_sizes_are_refused_quickly_and_small(tiny):
    """The issue's examples as processes: each one line, exit 2, peak memory far below 1 GiB
    (--batch 10000000 peaked at 5.3 GiB for 73 s, compile --len 1000000 ran past 90 s and 4 GiB)."""
    cases = [
        (["compile", "specs/lstm.yaml", "--len", "1000000", "--batch", "1"],
         "specs/lstm.yaml:18:3: lengths t=1000000 make a plan of about 17,000,003 entries (one per node and step), "
         "more than the 300,000 a plan may have: use shorter sequences"),
        (["compile", "specs/elman.yaml", "--batch", "100000000000"],
         "specs/elman.yaml:9:7: these dims (V=64, D=32, H=128) with batch 100000000000 and lengths t=10 need at least "
         "476837.2 GiB for values and gradients; the limit is 8 GiB: use smaller dims, a smaller batch or a shorter length"),
        (["train", "specs/feedforward.yaml", "--batch", "10000000", "--out", tiny["dir"] / "huge"],
         "specs/feedforward.yaml:10:7: these dims (N=8, H=64) with batch 10000000 need 43.9 GiB for "
         "values and gradients; the limit is 8 GiB: use smaller dims or a shorter length"),
        (["viz", "specs/seq2seq_attention.yaml", "-o", tiny["dir"] / "big.png", "--unroll", "150"],
         "graphspec: the picture would have 2,267 nodes and 27,897 edges, more than the 1,000 nodes and 3,000 edges "
         "one picture draws: unroll fewer steps"),
    ]
    for argv, message in cases:
        code, out, err, secs, peak = measured(*argv)
        assert (code, err.splitlines()) == (2, [message]), (argv, err)
        assert peak < GiB, (argv, peak)
    assert not os.path.exists(tiny["dir"] / "huge") and not os.path.exists(tiny["dir"] / "big.png")


@pytest.mark.parametrize("data, message", [
    ("{task: adding, length: 100000000}", "task adding: length must be an integer from 1 to 100000, got 100000000"),
    ("{task: adding, length: [1]}", "task adding: length must be an integer from 1 to 100000, got [1]"),
    ("{task: adding, length: 2.5}", "task adding: length must be an integer from 1 to 100000, got 2.5"),
    ("{task: adding, length: true}", "task adding: length must be an integer from 1 to 100000, got True"),
    ("{task: adding, lenght: 5}", "task adding: unknown parameter 'lenght'; did you mean 'length'? (parameters: length)"),
    ("{task: charlm, length: 100000}", "task charlm: the valid split has * characters, too few for windows of "
                                       "length 100000 (use a shorter length or more text)"),
    ("{task: words, window: 0}", "task words: window must be an integer from 1 to 1000, got 0"),
    ("{task: words, sample: -1}", "task words: sample must be a number from 0.0 to 1.0, got -1"),
    ("{task: words, mode: 3}", "task words: mode must be a string, got 3"),
    ("{task: dates, first_year: 0}", "task dates: first_year must be an integer from 1 to 9999, got 0"),
    ("{task: dates, first_year: 2000, last_year: 1990}", "task dates: first_year 2000 is more than last_year 1990"),
    ("{task: copy_memory, symbols: 40}", "task copy_memory: symbols must be an integer from 1 to 16, got 40"),
    ("{task: addition, max_digits: 30}", "task addition: max_digits must be an integer from 1 to 18, got 30"),
    ("{task: parity, min_len: 9, max_len: 3}", "task parity: min_len 9 is more than max_len 3"),
])
def test_task_parameters_are_checked_before_a_batch_is_built(tmp_path, data, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text("feedforward.yaml", ("data: {task: bits, n: 8}", f"data: {data}")))
    code, out, err = main("train", spec, "--out", tmp_path / "run", "--steps", "1")
    assert code == 2 and len(err.splitlines()) == 1
    assert re.fullmatch(re.escape(f"graphspec: {message}").replace(r"\*", r"\d+"), err.strip()), err
    assert not os.path.exists(tmp_path / "run")
