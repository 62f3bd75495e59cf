import contextlib
import io
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# numba's on-disk cache inside the clone, also for CLI subprocesses
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
sys.path.insert(0, ROOT)


def run_cli(*args, cwd=ROOT, timeout=600):
    """Run `graphspec ARGS` as a user would: a subprocess, output captured."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def main(*argv):
    """(exit code, stdout, stderr) of `graphspec ARGV` run in this process (argparse's exits
    included): fast, for cases about messages; run_cli for time, memory and signals."""
    import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def spec_text(name: str, *subs) -> str:
    with open(os.path.join(ROOT, "specs", name)) as f:
        text = f.read()
    for a, b in subs:
        assert a in text, a
        text = text.replace(a, b)
    return text


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Small versions of four specs (written to a temp dir) and a short trained run of each:
    elman (a char LM: generate), lstm (the adding task: no decoding), ff (feedforward: no axis),
    att (encoder-decoder with attention: predict, and every kind of run file)."""
    d = tmp_path_factory.mktemp("tiny")
    specs = {
        "elman": spec_text("elman.yaml", ("data: {task: charlm, length: 64}", "data: {task: charlm, length: 16}"),
                           ("D: 32, H: 128", "D: 4, H: 8"), ("batch: 32, steps: 1500", "batch: 4, steps: 6, eval_every: 3")),
        "lstm": spec_text("lstm.yaml", ("length: 50", "length: 8"), ("H: 64", "H: 4"),
                          ("batch: 64, steps: 2000", "batch: 4, steps: 4, eval_every: 2")),
        "ff": spec_text("feedforward.yaml", ("H: 64", "H: 8"), ("batch: 64, steps: 1500", "batch: 4, steps: 4, eval_every: 2")),
        "att": spec_text("seq2seq_attention.yaml", ("D: 32, H: 64, H2: 128", "D: 4, H: 4, H2: 8"),
                         ("batch: 64, steps: 1000", "batch: 4, steps: 4, eval_every: 2")),
    }
    out = {"dir": d}
    for name, text in specs.items():
        path = d / f"{name}.yaml"
        path.write_text(text)
        out[name] = str(path)
        code, _, err = main("train", path, "--out", d / f"run_{name}", "--quiet")
        assert code == 0, err
        out[f"run_{name}"] = d / f"run_{name}"
    return out


