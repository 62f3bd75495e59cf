"""Every example of issue #16, run as a user would (a process each), with its exit code, its
stderr line, its wall time and its peak resident memory:

    python tests/issue16_examples.py          # about two minutes; exits 1 if any example fails

An example passes when it exits as expected (2 for bad input, 0 where the input is fine) with
one stderr line, within 10 s and 1 GiB, and leaves the files it must not touch as they were.
The same cases, asserted on their exact messages, are in tests/test_hostile.py,
tests/test_crashes.py and tests/test_exit_codes.py; this script is the issue's checklist.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
SECRET = "SECRET_TOKEN_4711"


def run(*argv, preexec=None):
    """(exit code, stdout, stderr, seconds, peak bytes) of one graphspec process."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, argv)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
    out, err = p.communicate(timeout=300)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024    # its only child: see peak_of
    return p.returncode, out, err, time.time() - t0, peak


def peak_of(argv, preexec=None):
    """Run in a fresh child so RUSAGE_CHILDREN is this run's alone."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = run(*argv, preexec=preexec)
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def spec_file(d, name, src, *subs):
    with open(os.path.join(ROOT, "specs", src)) as f:
        text = f.read()
    for a, b in subs:
        assert a in text, a
        text = text.replace(a, b)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    d = tempfile.mkdtemp(prefix="issue16-")
    elman = spec_file(d, "elman.yaml", "elman.yaml", ("D: 32, H: 128", "D: 4, H: 8"),
                      ("batch: 32, steps: 1500", "batch: 4, steps: 6, eval_every: 3"))
    lstm = spec_file(d, "lstm.yaml", "lstm.yaml", ("H: 64", "H: 4"), ("batch: 64, steps: 2000", "batch: 4, steps: 4"))
    s2s = spec_file(d, "s2s.yaml", "seq2seq.yaml")
    s2s_text = open(s2s).read()
    for line in s2s_text.splitlines():
        if line.startswith("train:"):
            s2s_text = s2s_text.replace(line, "train: {batch: 4, steps: 4, eval_every: 2}")
    open(s2s, "w").write(s2s_text)
    for spec, out in ((elman, "run_elman"), (lstm, "run_lstm"), (s2s, "run_s2s")):
        code, _, err, _, _ = peak_of(["train", spec, "--out", os.path.join(d, out), "--quiet"])
        assert code == 0, err
    run_elman, run_lstm, run_s2s = (os.path.join(d, x) for x in ("run_elman", "run_lstm", "run_s2s"))
    os.mkfifo(os.path.join(d, "fifo"))
    os.makedirs(os.path.join(d, "outside"))
    with open(os.path.join(d, "outside", "secret.yaml"), "w") as f:
        f.write(f"{SECRET}: hunter2\n")
    os.makedirs(os.path.join(d, "specs"))
    specs = {}
    base = open(os.path.join(ROOT, "specs", "feedforward.yaml")).read()
    for name, (a, b) in {"escaped": ("name: feedforward", 'name: "../../escaped"'),
                         "absolute": ("name: feedforward", "name: /tmp/issue16-absolute"),
                         "secret": ("nodes:", "blocks: [../outside/secret.yaml]\nnodes:"),
                         "passwd": ("nodes:", "blocks: [/etc/passwd]\nnodes:"),
                         "devzero": ("nodes:", 'blocks: ["/dev/zero"]\nnodes:'),
                         "deep": ("data: {task: bits, n: 8}", "data: " + "[" * 10000 + "]" * 10000),
                         "seed": ("lr: 0.01,", "lr: 0.01, seed: -1,")}.items():
        specs[name] = os.path.join(d, "specs", f"{name}.yaml")
        with open(specs[name], "w") as f:
            f.write(base.replace(a, b))
    pairs = os.path.join(d, "pairs.tsv")
    with open(pairs, "w") as f:
        f.write("ab\tba\n" + "x" * 30_000_000 + "\ty\n")
    big_pairs = os.path.join(d, "big_pairs.tsv")
    with open(big_pairs, "w") as f:
        f.write("ab\tba\n" + "x" * 50_000_000 + "\ty\n")
    # damaged run files, each in its own copy of the elman run
    damaged = {}

    def copy(name):
        damaged[name] = os.path.join(d, f"damaged_{name}")
        shutil.copytree(run_elman, damaged[name])
        return damaged[name]
    np.save(os.path.join(copy("gradnorm"), "gradnorm.npy"), np.array([None, 1], dtype=object), allow_pickle=True)
    with open(os.path.join(copy("metrics"), "metrics.jsonl"), "a") as f:
        f.write("[1, 2, 3]\n")
    for name, change in (("meta", lambda m: dict(m, step="12")), ("vo", None), ("lstm_params", None)):
        p = os.path.join(copy(name), "last.npz")
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        if change:
            arrays["meta"] = np.array(json.dumps(change(json.loads(str(arrays["meta"])))))
        elif name == "vo":
            del arrays["param/V_o"]
        else:
            with np.load(os.path.join(run_lstm, "last.npz")) as z:
                arrays = dict({k: z[k] for k in z.files if k != "meta"}, meta=arrays["meta"])
        np.savez(p, **arrays)
    partial = copy("partial")
    os.unlink(os.path.join(partial, "last.npz"))
    file_out = os.path.join(d, "a_file")
    open(file_out, "w").write("x")
    os.makedirs(os.path.join(d, "empty"))
    ok, bad = 0, 2
    E = [   # (what the issue said, argv, expected exit code, files that must stay as they were)
        ("a second train on a run directory in use", None, 2, []),
        ("best.npz and metrics.jsonl but no last.npz: a fresh train", ["train", elman, "--out", partial], bad, [partial]),
        ("a checkpoint missing param/V_o", ["eval", os.path.join(damaged["vo"], "last.npz")], bad, []),
        ('name: "../../escaped"', ["train", specs["escaped"], "--steps", "1"], bad, []),
        ("an absolute name", ["train", specs["absolute"], "--steps", "1"], bad, []),
        ("blocks: [../outside/secret.yaml]", ["validate", specs["secret"]], bad, []),
        ("a block file that is the password file", ["validate", specs["passwd"]], bad, []),
        ("validate /dev/zero", ["validate", "/dev/zero"], bad, []),
        ('blocks: ["/dev/zero"]', ["validate", specs["devzero"]], bad, []),
        ("--data /dev/zero", ["train", elman, "--data", "/dev/zero", "--out", os.path.join(d, "r1")], bad, []),
        ("a FIFO as the spec", ["validate", os.path.join(d, "fifo")], bad, []),
        ("--batch 10000000", ["train", "specs/feedforward.yaml", "--batch", "10000000", "--out", os.path.join(d, "r2")], bad, []),
        ("--batch 100000000000 (train)", ["train", "specs/feedforward.yaml", "--batch", "100000000000", "--out",
                                          os.path.join(d, "r3")], bad, []),
        ("--batch 100000000000 (compile)", ["compile", "specs/elman.yaml", "--batch", "100000000000"], bad, []),
        ("one 50 MB line of pair data", ["train", "specs/seq2seq.yaml", "--data", big_pairs, "--out", os.path.join(d, "r4")], bad, []),
        ("one 30 MB line of pair data (under the file limit)", ["train", "specs/seq2seq.yaml", "--data", pairs, "--out",
                                                                os.path.join(d, "r4")], bad, []),
        ("compile --len 1000000", ["compile", "specs/elman.yaml", "--len", "1000000"], bad, []),
        ("compile --len 1000000 (LSTM, batch 1: within the memory limit)", ["compile", "specs/lstm.yaml", "--len",
                                                                             "1000000", "--batch", "1"], bad, []),
        ("viz --unroll 100000", ["viz", "specs/elman.yaml", "-o", os.path.join(d, "u.png"), "--unroll", "100000"], bad, []),
        ("nesting 10k deep in data:", ["validate", specs["deep"]], bad, []),
        ("--len abc", ["compile", "specs/elman.yaml", "--len", "abc"], bad, []),
        ("--bind V=abc", ["compile", "specs/elman.yaml", "--bind", "V=abc"], bad, []),
        ("--batch -3", ["compile", "specs/elman.yaml", "--batch", "-3"], bad, []),
        ("--epochs nan", ["train", elman, "--epochs", "nan"], bad, []),
        ("--seed -1", ["train", elman, "--seed", "-1"], bad, []),
        ("seed: -1 in a spec", ["validate", specs["seed"]], bad, []),
        ("--len 0", ["compile", "specs/elman.yaml", "--len", "0"], bad, []),
        ("--len t=-5", ["compile", "specs/elman.yaml", "--len", "t=-5"], bad, []),
        ("--batch 0", ["compile", "specs/elman.yaml", "--batch", "0"], bad, []),
        ("--len zz=5", ["compile", "specs/elman.yaml", "--len", "zz=5"], bad, []),
        ("--steps -1", ["train", elman, "--steps", "-1"], bad, []),
        ("--epochs -1", ["train", elman, "--epochs", "-1"], bad, []),
        ("--lr -1", ["train", elman, "--lr", "-1"], bad, []),
        ("--lr nan", ["train", elman, "--lr", "nan"], bad, []),
        ("--lr inf", ["train", elman, "--lr", "inf"], bad, []),
        ("generate --length -5", ["generate", os.path.join(run_elman, "last.npz"), "--length", "-5"], bad, []),
        ("predict --beam 0", ["predict", os.path.join(run_s2s, "last.npz"), "abc", "--beam", "0"], bad, []),
        ("neighbors -k -3", ["neighbors", os.path.join(run_elman, "last.npz"), "e", "-k", "-3"], bad, []),
        ("generate --temperature nan", ["generate", os.path.join(run_elman, "last.npz"), "--temperature", "nan"], bad, []),
        ("viz --unroll -1", ["viz", "specs/elman.yaml", "-o", os.path.join(d, "v.png"), "--unroll", "-1"], bad, []),
        ("an object-array gradnorm.npy (resume)", ["train", elman, "--out", damaged["gradnorm"], "--resume"], bad, [damaged["gradnorm"]]),
        ("an object-array gradnorm.npy (plot)", ["plot", damaged["gradnorm"], "-o", os.path.join(d, "pics")], bad, []),
        ("a non-object line in metrics.jsonl (resume)", ["train", elman, "--out", damaged["metrics"], "--resume"], bad, [damaged["metrics"]]),
        ("a non-object line in metrics.jsonl (plot: drawn without it)", ["plot", damaged["metrics"], "-o",
                                                                         os.path.join(d, "pics")], ok, []),
        ("a meta of the wrong type", ["eval", os.path.join(damaged["meta"], "last.npz")], bad, []),
        ("lstm params under elman meta", ["eval", os.path.join(damaged["lstm_params"], "last.npz")], bad, []),
        ("--data a directory", ["train", elman, "--data", d, "--out", os.path.join(d, "r5")], bad, []),
        ("--out an existing file", ["train", elman, "--out", file_out], bad, [file_out]),
        ("viz -o to a read-only place", ["viz", "specs/elman.yaml", "-o", "/proc/graph.png"], bad, []),
        ("a full disk while writing", None, 2, []),
        ("plot on an empty directory", ["plot", os.path.join(d, "empty")], bad, []),
        ("generate on the adding task's LSTM", ["generate", os.path.join(run_lstm, "last.npz")], bad, []),
        ("predict on the adding task's LSTM", ["predict", os.path.join(run_lstm, "last.npz"), "1 2"], bad, []),
        ("generate on a seq2seq checkpoint", ["generate", os.path.join(run_s2s, "last.npz")], bad, []),
    ]
    failures = 0
    print(f"{'example':58} {'exit':>4} {'s':>5} {'MiB':>5}  stderr")
    for what, argv, want, keep in E:
        before = {p: _snapshot(p) for p in keep}
        if what.startswith("a second train"):
            code, err, secs, peak = _concurrent(elman, os.path.join(d, "busy"))
        elif what.startswith("a full disk"):
            code, err, secs, peak = _full_disk(elman, run_elman, os.path.join(d, "full"))
        else:
            code, out, err, secs, peak = peak_of(argv)
        lines = err.strip().splitlines()
        good = (code == want and len(lines) == (1 if want else len(lines)) and secs < 10 and peak < (1 << 30)
                and SECRET not in err and "Traceback" not in err
                and all(_snapshot(p) == before[p] for p in keep))
        failures += not good
        print(f"{what[:58]:58} {code:>4} {secs:5.1f} {peak / 2**20:5.0f}  {'' if good else 'FAIL '}"
              f"{(lines or [''])[0][:150]}")
    print(f"{len(E) - failures} of {len(E)} examples as they should be")
    shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if failures else 0)


def _snapshot(path):
    if os.path.isdir(path):
        return {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path)) if n != "run.lock"}
    return open(path, "rb").read()


def _concurrent(spec, out):
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", spec, "--out", out, "--quiet",
                              "--steps", "1000000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not os.path.exists(os.path.join(out, "last.npz")):
        time.sleep(0.02)
    code, _, err, secs, peak = peak_of(["train", spec, "--out", out, "--quiet", "--seed", "8", "--overwrite"])
    first.send_signal(signal.SIGINT)
    first.communicate()
    return code, err, secs, peak


def _full_disk(spec, run_dir, out):
    shutil.copytree(run_dir, out)
    size = os.path.getsize(os.path.join(out, "last.npz"))

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
    before = open(os.path.join(out, "last.npz"), "rb").read()
    code, _, err, secs, peak = peak_of(["train", spec, "--out", out, "--quiet", "--resume", "--steps", "12"],
                                       preexec=small_files)
    assert open(os.path.join(out, "last.npz"), "rb").read() == before
    return code, err, secs, peak


if __name__ == "__main__":
    main()
