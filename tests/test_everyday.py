"""The conveniences of everyday use (issue 15): progress and the start-up header, predict and
generate over many inputs, eval over a whole split, early stopping and schedules, the task list,
what a run directory records, --version, word-level vocabularies."""
import io
import json
import math
import os
import time

import numpy as np
import pytest

from conftest import ROOT, main, spec_text


# ---------------------------------------------------------------- 1. first run and progress
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _wait_for(buf, text, timeout=20.0):
    deadline = time.time() + timeout
    while text not in buf.getvalue():
        assert time.time() < deadline, buf.getvalue()
        time.sleep(0.01)


def test_progress_says_it_compiles_and_counts_the_rate_from_the_first_step(monkeypatch):
    from runtime.train import Progress
    monkeypatch.setattr(Progress, "NOTICE_AFTER", 0.3)
    monkeypatch.setattr(Progress, "TICK", 60.0)
    clock, buf = Clock(), io.StringIO()
    p = Progress(40, 0, stream=buf, clock=clock)
    clock.now = 12.4                     # the ticker reads the clock 0.3 s later
    _wait_for(buf, "compiling")
    clock.now = 30.0                     # the first step ends after 30 s of compiling
    p.update(0, 2.5, 100.0)
    for step in range(1, 40):            # then 2 steps a second
        clock.now += 0.5
        p.update(step, 2.5, 100.0)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "compiling kernels for the first step: 12s (numba; later runs load them from its cache)"
    assert lines[1] == "step 1/40  loss 2.5000  first step 30.0s (kernels compiled; rate and ETA count from here)"
    assert lines[2] == "step 2/40  loss 2.5000  2.0 steps/s  100 tokens/s  ETA 19s"
    assert lines[-1] == "step 40/40  loss 2.5000  2.0 steps/s  100 tokens/s  ETA 0s"
    assert len(lines) == 2 + 20


def test_a_quick_first_step_says_nothing_of_compiling():
    from runtime.train import Progress
    clock, buf = Clock(), io.StringIO()
    p = Progress(4, 0, stream=buf, clock=clock)
    for step in range(4):
        clock.now += 0.25
        p.update(step, 1.0, 10.0)
    p.close()
    assert buf.getvalue().splitlines() == [
        "step 1/4  loss 1.0000",
        "step 2/4  loss 1.0000  4.0 steps/s  10 tokens/s  ETA 0s",
        "step 3/4  loss 1.0000  4.0 steps/s  10 tokens/s  ETA 0s",
        "step 4/4  loss 1.0000  4.0 steps/s  10 tokens/s  ETA 0s"]


def test_a_run_starts_with_a_header(tiny, tmp_path):
    from runtime.tasks import stdlib_corpus
    out = tmp_path / "run"
    code, _, err = main("train", tiny["elman"], "--out", out)
    assert code == 0, err
    meta = json.loads(str(np.load(out / "last.npz")["meta"]))
    V = 4 + len(meta["vocab"]["vocab"])
    D, H = 4, 8                          # E VxD, U HxD, W HxH, b H, V_o VxH, c V
    n = V * D + H * D + H * H + H + V * H + V
    total = len(stdlib_corpus())
    a, b = int(total * 0.9), int(total * 0.95)
    assert err.splitlines()[:4] == [
        f"elman: {n:,} learnable params in 6 tensors",
        f"  data      task charlm: train {a:,} / valid {b - a:,} / test {total - b:,} characters",
        "  training  6 steps of batch 4, adam lr 0.003 (constant), validation every 3 steps",
        f"  run dir   {out}"]


# ---------------------------------------------------------------- 4. predict and generate over many inputs
def test_predict_a_file_of_inputs_to_a_file_matches_one_at_a_time(tiny, tmp_path):
    ck = tiny["run_att"] / "last.npz"
    inputs = ["3 March 1998", "", "June 5, 2001", "12.01.1960"]
    (tmp_path / "in.txt").write_text("\n".join(inputs) + "\n")
    code, out, err = main("predict", ck, "--input", tmp_path / "in.txt", "-o", tmp_path / "out.txt")
    assert code == 0 and out == "", err
    one = []
    for text in ("3 March 1998", "June 5, 2001", "12.01.1960"):
        code, out, err = main("predict", ck, text)
        assert code == 0, err
        one.append(out.rstrip("\n"))
    assert (tmp_path / "out.txt").read_text().splitlines() == one      # the empty line is skipped
    code, out, _ = main("predict", ck, "3 March 1998", "June 5, 2001", "12.01.1960")
    assert out.splitlines() == one


def test_predict_nbest_from_beam_search(tiny):
    from runtime.commands import restore
    from runtime.decode import beam_search
    ck = tiny["run_att"] / "last.npz"
    code, out, err = main("predict", ck, "3 March 1998", "1 May 2000", "--nbest", "3")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    model, task, _ = restore(str(ck))
    want = []
    for n, text in enumerate(("3 March 1998", "1 May 2000"), 1):
        want += [[str(n), h, f"{s:.4f}"] for h, s in beam_search(model, task.src_vocab, task.tgt_vocab, text, beam=3)]
    assert rows == want and len(rows) == 6
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    code, _, err = main("predict", ck, "3 March 1998", "--nbest", "3", "--beam", "2")
    assert code == 2 and err.strip() == "graphspec: predict: --nbest 3 needs a beam at least as wide (--beam 2)"


def test_predict_reads_stdin(tiny, monkeypatch):
    import sys
    ck = tiny["run_att"] / "last.npz"
    _, want, _ = main("predict", ck, "1 May 2000", "2 May 2000")

    class Stdin:
        buffer = io.BytesIO(b"1 May 2000\n2 May 2000\n")
    monkeypatch.setattr(sys, "stdin", Stdin)
    code, out, err = main("predict", ck, "--input", "-")
    assert code == 0, err
    assert out == want and len(out.splitlines()) == 2


@pytest.mark.parametrize("args, message", [
    ((), "graphspec: predict: give the TEXT to decode, or --input FILE ('-' reads stdin)"),
    (("x", "--input", "IN"), "graphspec: predict: give inputs as arguments or with --input, not both"),
    (("--input", "EMPTY"), "graphspec: EMPTY: the file is empty"),
    (("x", "-o", "DIR"), "graphspec: -o DIR: is a directory"),
])
def test_predict_input_errors(tiny, tmp_path, args, message):
    (tmp_path / "IN").write_text("abc\n")
    (tmp_path / "EMPTY").write_text("\n  \n")
    sub = {"IN": str(tmp_path / "IN"), "EMPTY": str(tmp_path / "EMPTY"), "DIR": str(tmp_path)}
    args = [sub.get(a, a) for a in args]
    for k, v in sub.items():
        message = message.replace(k, v) if k in ("EMPTY", "DIR") else message
    code, out, err = main("predict", tiny["run_att"] / "last.npz", *args)
    assert code == 2 and err.strip() == message and out == ""


def test_generate_one_sample_per_prompt_as_json_lines(tiny, tmp_path):
    ck = tiny["run_elman"] / "last.npz"
    (tmp_path / "prompts.txt").write_text("The \nReturn a\n")
    code, out, err = main("generate", ck, "--input", tmp_path / "prompts.txt", "--length", "12", "--seed", "5",
                          "-o", tmp_path / "samples.jsonl")
    assert code == 0 and out == "", err
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    singles = []
    for seed, prompt in ((5, "The "), (6, "Return a")):
        _, o, _ = main("generate", ck, "--prompt", prompt, "--length", "12", "--seed", seed)
        singles.append(o[:-1])           # print's newline
    assert rows == [{"prompt": "The ", "text": singles[0]}, {"prompt": "Return a", "text": singles[1]}]
    assert all(len(r["text"]) == len(r["prompt"]) + 12 for r in rows)


# ---------------------------------------------------------------- 3. eval over a whole split; a real test split
def test_split_three_is_a_fixed_shuffle_90_5_5():
    from runtime.data import split_three
    ex = list(range(100))
    s = split_three(ex)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [90, 5, 5]
    assert sorted(s["train"] + s["valid"] + s["test"]) == ex
    assert s == split_three(ex) and s["test"] != [95, 96, 97, 98, 99]
    assert [len(v) for v in split_three(list(range(3))).values()] == [1, 1, 1]
    with pytest.raises(ValueError, match=r"^2 examples; need at least 3 \(one each for training, validation and test\)$"):
        split_three([1, 2])


def test_eval_of_a_text_model_covers_windows_in_order(tiny):
    """The first 3 batches of the valid split are its first 12 back-to-back windows; their
    perplexity equals the one computed window by window."""
    from runtime.commands import restore
    from runtime.train import round_lengths
    ck = tiny["run_elman"] / "last.npz"
    code, out, err = main("eval", ck, "--batches", "3")
    assert code == 0, err
    res = json.loads(out)
    assert res["examples"] == 12 and res["split"] == "valid" and res["whole_split"] is False
    model, task, _ = restore(str(ck))
    lo, _ = task.bounds["valid"]
    nll = 0.0
    for w in range(12):
        idx = lo + 16 * w + np.arange(16)[:, None]
        one = np.ones((16, 1), np.float32)
        nll += model.forward(round_lengths({"x": task.ids[idx], "y": task.ids[idx + 1], "x_mask": one,
                                            "y_mask": one}, model), mode="eval")
    assert math.isclose(res["ppl"], math.exp(nll / (12 * 16)), rel_tol=1e-5)
    assert math.isclose(res["loss"], nll / 12, rel_tol=1e-5)
    code, out2, _ = main("eval", ck, "--batches", "3")
    assert out2 == out                   # deterministic


def test_a_pairs_file_has_a_test_split_and_eval_covers_it_whole(tiny, tmp_path):
    rng = np.random.default_rng(1)
    words = ["".join(rng.choice(list("abcdef"), rng.integers(2, 6))) for _ in range(60)]
    data = tmp_path / "rev.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words))
    spec = tmp_path / "s2s.yaml"
    spec.write_text(spec_text("seq2seq.yaml", ("steps: 3000", "steps: 2, eval_every: 2")))
    code, _, err = main("train", spec, "--data", data, "--out", tmp_path / "run", "--quiet", "--batch", "4")
    assert code == 0, err
    results = {}
    for split in ("valid", "test"):
        code, out, err = main("eval", tmp_path / "run" / "last.npz", "--split", split)
        assert code == 0, err
        results[split] = json.loads(out)
        assert results[split]["examples"] == 3 and results[split]["whole_split"] is True
    assert results["valid"]["loss"] != results["test"]["loss"]
    code, out, _ = main("eval", tmp_path / "run" / "last.npz", "--split", "test")
    assert json.loads(out) == results["test"]
    from runtime.userdata import Pairs
    t = Pairs(str(data))
    assert [len(t.splits[k]) for k in ("train", "valid", "test")] == [54, 3, 3]
    assert sorted(t.splits["train"] + t.splits["valid"] + t.splits["test"]) == sorted(
        (list(w), list(w[::-1])) for w in words)


# ---------------------------------------------------------------- 6. early stopping, schedules, top-k checkpoints
@pytest.mark.parametrize("cfg, total, want", [
    ({"lr": 0.1, "schedule": "cosine", "warmup": 10}, 110,
     {0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 60: 0.05, 109: 0.05 * (1 + math.cos(math.pi * 99 / 100))}),
    ({"lr": 0.1, "schedule": "cosine"}, 100, {0: 0.1, 25: 0.05 * (1 + math.cos(math.pi / 4)), 50: 0.05}),
    ({"lr": 0.2, "warmup": 4}, 10, {0: 0.05, 1: 0.1, 3: 0.2, 9: 0.2}),
    ({"lr": 0.2, "schedule": "step", "decay": 0.5, "decay_every": 3, "warmup": 2}, 10, {1: 0.2, 2: 0.2, 4: 0.2, 5: 0.1}),
])
def test_warmup_and_cosine_schedules(cfg, total, want):
    from runtime.optim import learning_rate
    got = {s: learning_rate(cfg, s, total) for s in want}
    assert got == pytest.approx(want, rel=1e-12)


def test_patience_and_keep_best_decide_from_the_validation_losses(tmp_path):
    from runtime.train import Watch
    w = Watch({"patience": 2, "keep_best": 2}, str(tmp_path))
    saved, best, reasons = [], math.inf, []
    for i, loss in enumerate([3.0, 2.0, 2.5, 1.9, 2.2, 2.0, 1.0], 1):
        improved = loss < best
        best = min(best, loss)

        def save(path):
            saved.append(os.path.basename(path))
            open(path, "w").close()
        reasons.append(w.validated(10 * i, False, {"loss": loss}, improved, best, save))
    assert reasons[:5] == [None, None, None, None, None]
    assert reasons[5] == "no lower validation loss in 2 validations (the lowest, 1.9, at step 40)"
    assert saved == ["best-step10.npz", "best-step20.npz", "best-step30.npz", "best-step40.npz", "best-step70.npz"]
    assert sorted(os.listdir(tmp_path)) == ["best-step40.npz", "best-step70.npz"]
    assert w.top == [(1.0, 70), (1.9, 40)]


def _ff_spec(tmp_path, train):
    spec = tmp_path / "ff.yaml"
    spec.write_text(spec_text("feedforward.yaml", ("H: 64", "H: 8"),
                              ("train: {optimizer: adam, lr: 0.01, batch: 64, steps: 1500, target: {acc: 0.99}}", train)))
    return spec


def test_stop_at_target_stops_at_the_first_validation_that_reaches_it(tmp_path):
    spec = _ff_spec(tmp_path, "train: {batch: 8, steps: 50, eval_every: 5, target: {loss: 100.0}}")
    code, out, err = main("train", spec, "--out", tmp_path / "run", "--stop-at-target")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    assert rows[-1]["step"] == 5 and len(valid) == 1
    why = f"target loss <= 100.0 ({valid[0]['loss']:.4g}) reached"
    assert f"stopping early at step 5: {why}" in err.splitlines()
    assert "  training  50 steps of batch 8, adam lr 0.003 (constant), validation every 5 steps; " \
           "stops early at the target loss 100.0" in err.splitlines()
    assert json.loads(out.splitlines()[0])["stopped"] == why
    meta = json.loads(str(np.load(tmp_path / "run" / "last.npz")["meta"]))
    assert meta["step"] == 5 and meta["stopped"] == why and meta["best_step"] == 5
    code, _, err = main("train", spec, "--out", tmp_path / "run", "--resume", "--quiet")
    assert code == 0 and err.splitlines()[0] == f"{tmp_path / 'run'}: this run stopped early at step 5 ({why}); nothing to resume"
    # without the flag (or the spec's stop_at_target) the run goes on
    code, _, err = main("train", spec, "--out", tmp_path / "run2", "--quiet")
    assert code == 0 and json.loads((tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 50


@pytest.mark.parametrize("train, message", [
    ("train: {steps: 5, stop_at_target: true}", "graphspec: train.stop_at_target: the spec has no train.target to stop at"),
    ("train: {steps: 5, warmup: 5}", "graphspec: train.warmup 5: not fewer than the run's 5 steps"),
])
def test_stopping_options_that_do_not_fit(tmp_path, train, message):
    code, _, err = main("train", _ff_spec(tmp_path, train), "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.strip() == message


def test_keep_best_and_patience_resume_as_an_uninterrupted_run(tmp_path):
    spec = _ff_spec(tmp_path, "train: {batch: 8, steps: 36, eval_every: 3, keep_best: 2, schedule: cosine, warmup: 4}")
    code, _, err = main("train", spec, "--out", tmp_path / "a", "--quiet")
    assert code == 0, err
    code, _, err = main("train", spec, "--out", tmp_path / "b", "--quiet", "--stop-after", "16")
    assert code == 130, err
    code, _, err = main("train", spec, "--out", tmp_path / "b", "--quiet", "--resume")
    assert code == 0, err
    files = lambda d: sorted(n for n in os.listdir(d) if n != "run.lock")  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b")
    for n in files(tmp_path / "a"):
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    valid = sorted((r["loss"], r["step"]) for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines())
                   if r.get("split") == "valid")
    assert [n for n in files(tmp_path / "a") if n.startswith("best-")] == sorted(
        f"best-step{s}.npz" for _, s in valid[:2])
    code, _, err = main("train", spec, "--out", tmp_path / "a", "--quiet")
    assert code == 2 and "best-step" in err        # an earlier run's kept checkpoints count as its files


# ---------------------------------------------------------------- 5. graphspec tasks
def test_tasks_lists_every_builtin_task_with_what_it_draws():
    from runtime.tasks import TASKS
    code, out, err = main("tasks")
    assert code == 0, err
    heads = [line.split(":")[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert heads == list(TASKS)
    blocks = out.split("\n\n")
    assert all([line.split()[0] for line in b.splitlines()[1:6]] == ["draws", "vocabulary", "params", "metric", "example"]
               for b in blocks)


def test_tasks_dates_in_full():
    from runtime.tasks import rng_for, get_task
    src, tgt = get_task("dates").example(rng_for(0, "train", 0))
    code, out, _ = main("tasks", "dates")
    assert code == 0
    assert out.splitlines() == [
        "dates: human-readable dates in 12 formats -> ISO 8601 (the classic attention task)",
        "  draws      a day from 1950-01-01 to 2049-12-31, written in one of 12 formats; the target is YYYY-MM-DD",
        "  vocabulary source 56 symbols: ' ,-./0123456789ABCDEFGJLMNOPRSTUVWYabcdefghijlmnoprstuvy'; "
        "target 11 symbols: '0123456789-'",
        "  params     first_year=1950, last_year=2049",
        "  metric     free_seq_acc: dates entirely right, decoding from the model's own predictions",
        f"  example    {src!r} -> {tgt!r}",
        "  specs      seq2seq_attention"]


def test_task_examples_hold_their_rule():
    import re
    out = {n: main("tasks", n)[1] for n in ("reverse", "adding", "parity")}
    ex = lambda n: next(l for l in out[n].splitlines() if l.startswith("  example")).split(None, 1)[1]  # noqa: E731
    a, b = re.fullmatch(r"'(\w+)' -> '(\w+)'", ex("reverse")).groups()
    assert b == a[::-1] and set(a) <= set("abcdefghijkl") and 3 <= len(a) <= 10
    i, xi, j, xj, y = re.fullmatch(r"marked x\[(\d+)\] = ([\d.]+), x\[(\d+)\] = ([\d.]+) -> ([\d.]+)", ex("adding")).groups()
    assert int(i) < 25 <= int(j) < 50 and abs(float(xi) + float(xj) - float(y)) <= 0.0015
    bits, parity = re.fullmatch(r"'([01]+)' -> ([01])", ex("parity")).groups()
    assert bits.count("1") % 2 == int(parity)
    code, _, err = main("tasks", "datez")
    assert code == 2 and err.strip() == ("graphspec: unknown task 'datez'; did you mean 'dates'? (tasks: adding, "
                                         "addition, bits, charlm, copy, copy_memory, dates, neighbours, parity, "
                                         "reverse, sort, words)")


# ---------------------------------------------------------------- 2. what a run directory records
def test_a_run_records_its_environment_and_the_step_of_best(tmp_path):
    import platform
    import subprocess
    import numba
    spec = _ff_spec(tmp_path, "train: {batch: 8, steps: 12, eval_every: 3, lr: 0.3}")
    code, out, err = main("train", spec, "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    env = rec["environment"]
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        version = next(l.split('"')[1] for l in f if l.startswith("version"))
    assert env["graphspec"] == version and env["python"] == platform.python_version()
    assert env["packages"]["numpy"] == np.__version__ and env["packages"]["numba"] == numba.__version__
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["git"]["graphspec"]["commit"] == head.stdout.strip()
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r.get("split") == "valid"]
    lowest = min(valid, key=lambda r: r["loss"])
    assert [r["step"] for r in valid if r.get("best")] == [r["step"] for i, r in enumerate(valid)
                                                          if r["loss"] < min([x["loss"] for x in valid[:i]], default=math.inf)]
    best_meta = json.loads(str(np.load(tmp_path / "run" / "best.npz")["meta"]))
    assert best_meta["step"] == lowest["step"] == json.loads(out)["best_step"]
    code, out, _ = main("eval", tmp_path / "run" / "best.npz")
    assert json.loads(out)["checkpoint_step"] == lowest["step"]


def test_a_resumption_in_another_environment_is_added_to_the_record(tmp_path):
    from runtime.rundir import record_environment
    a, b = {"python": "3.11.7", "packages": {"numpy": "1"}}, {"python": "3.12.1", "packages": {"numpy": "2"}}
    record_environment(str(tmp_path), a)
    first = (tmp_path / "run.json").read_bytes()
    record_environment(str(tmp_path), a)
    assert (tmp_path / "run.json").read_bytes() == first
    record_environment(str(tmp_path), b)
    record_environment(str(tmp_path), b)
    assert json.loads((tmp_path / "run.json").read_text()) == {"environment": a, "resumed_in": [b]}


# ---------------------------------------------------------------- 8. --version, help, file modes
def test_version():
    import platform
    import numba
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        version = next(l.split('"')[1] for l in f if l.startswith("version"))
    code, out, _ = main("--version")
    assert code == 0
    assert out == f"graphspec {version} (Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__})\n"


def test_every_option_of_every_verb_has_help():
    import argparse
    import cli
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 14
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in sub.choices.items() for a in sp._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_checkpoints_have_the_file_mode_of_the_rest_of_the_run(tmp_path, umask):
    spec = _ff_spec(tmp_path, "train: {batch: 8, steps: 4, eval_every: 2}")
    old = os.umask(umask)
    try:
        code, _, err = main("train", spec, "--out", tmp_path / "run", "--quiet")
    finally:
        os.umask(old)
    assert code == 0, err
    modes = {n: os.stat(tmp_path / "run" / n).st_mode & 0o777 for n in os.listdir(tmp_path / "run")}
    assert set(modes) >= {"last.npz", "best.npz", "metrics.jsonl", "run.json", "run.lock"}
    assert set(modes.values()) == {0o666 & ~umask}


def test_links_in_the_docs_resolve_and_concepts_name_every_spec():
    import glob
    import re
    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    broken = []
    for page in pages:
        with open(page, encoding="utf-8") as f:
            for target in re.findall(r"\]\(([^)#\s]+)", f.read()):
                if "://" not in target and not os.path.exists(os.path.join(os.path.dirname(page), target)):
                    broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert broken == []
    with open(os.path.join(ROOT, "docs", "concepts.md"), encoding="utf-8") as f:
        text = f.read()
    specs = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
    assert [s for s in specs if f"`{s}`" not in text] == []
    assert [int(n) for n in re.findall(r"^## (\d+)\.", text, re.M)] == list(range(1, 12))


# ---------------------------------------------------------------- 7. word-level vocabularies
WORDS = "the a cat dog sat ran on under mat log big small red".split()


def _word_pairs(path, n=200):
    rng = np.random.default_rng(3)
    lines = []
    for _ in range(n):
        s = [WORDS[int(i)] for i in rng.zipf(1.6, rng.integers(2, 6)) % len(WORDS)]
        lines.append(f"{' '.join(s)}\t{' '.join(s[::-1])}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_word_pairs_with_min_count_and_max_vocab(tmp_path):
    from collections import Counter
    from runtime.data import split_three
    lines = _word_pairs(tmp_path / "pairs.tsv")
    spec = tmp_path / "s2s.yaml"
    spec.write_text(spec_text("seq2seq.yaml", ("steps: 3000", "steps: 2, eval_every: 2")))
    code, _, err = main("train", spec, "--data", tmp_path / "pairs.tsv", "--tokens", "words", "--min-count", "2",
                        "--max-vocab", "6", "--out", tmp_path / "run", "--quiet", "--batch", "4")
    assert code == 0, err
    train = split_three([l.split("\t")[0].split() for l in lines])["train"]
    counts = Counter(w for s in train for w in s)
    want = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))[:6]
    meta = json.loads(str(np.load(tmp_path / "run" / "last.npz")["meta"]))
    assert meta["vocab"]["src_vocab"] == want
    assert meta["data_options"] == {"tokens": "words", "min_count": 2, "max_vocab": 6}
    code, out, err = main("predict", tmp_path / "run" / "last.npz", "the cat sat", "--max-len", "5")
    assert code == 0, err
    assert set(out.split()) <= set(meta["vocab"]["tgt_vocab"]) | {"<unk>"} and "  " not in out


def test_a_word_language_model_from_a_text_file(tmp_path, tiny):
    from collections import Counter
    from runtime.data import text_words
    rng = np.random.default_rng(4)
    text = "".join(" ".join(WORDS[int(i) % len(WORDS)] for i in rng.zipf(1.5, rng.integers(3, 9))) + "\n"
                   for _ in range(400))
    (tmp_path / "text.txt").write_text(text)
    code, _, err = main("train", tiny["elman"], "--data", tmp_path / "text.txt", "--tokens", "words",
                        "--max-vocab", "8", "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    words = text_words(text)
    counts = Counter(words[:int(len(words) * 0.9)])
    want = sorted(counts, key=lambda w: (-counts[w], w))[:8]
    meta = json.loads(str(np.load(tmp_path / "run" / "last.npz")["meta"]))
    assert meta["vocab"]["vocab"] == want
    from runtime.data import RESERVED
    prompt = " ".join([w for w in want if w != "\n"][:2])
    code, out, err = main("generate", tmp_path / "run" / "last.npz", "--prompt", prompt, "--length", "6")
    assert code == 0, err
    more = out[len(prompt):]
    more = more[:-1]                         # print's newline
    assert out.startswith(prompt) and more[0] in " \n" and len(more.split()) + more.count("\n") == 6
    assert set(more.split()) <= set(want) | set(RESERVED)
    code, out, err = main("eval", tmp_path / "run" / "last.npz", "--split", "test")
    assert code == 0 and json.loads(out)["whole_split"] is True


@pytest.mark.parametrize("args, message", [
    (("--tokens", "words"), "graphspec: --tokens: the vocabulary options apply to a --data file; a built-in task "
                            "has its own vocabulary (graphspec tasks)"),
    (("--data", "TEXT", "--max-vocab", "5"), "graphspec: --max-vocab: a character model keeps every character seen "
                                             "--min-count times; use --tokens words for a word vocabulary"),
])
def test_vocabulary_options_that_do_not_apply(tmp_path, tiny, args, message):
    (tmp_path / "text.txt").write_text("some words here\n" * 200)
    args = [str(tmp_path / "text.txt") if a == "TEXT" else a for a in args]
    code, _, err = main("train", tiny["elman"], *args, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and err.strip() == message


def test_the_new_train_keys_are_validated_at_their_place(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: ff\ndata: {task: bits, n: 8}\ninputs:\n  x: {real: 8}\n  y: {label: 2, target: true}\n"
                    "params:\n  W: {shape: [2, 8]}\nnodes:\n  o: W @ x\nloss: cross_entropy(o, y)\n"
                    "train: {schedule: cosin, patience: 0, keep_best: 101, stop_at_target: yes please, warmup: -1}\n")
    code, _, err = main("validate", spec)
    assert code == 2
    assert err.splitlines() == [
        f"{spec}:11:19: train/schedule: 'cosin' is not one of constant, linear, cosine, step, exponential; "
        f"did you mean 'cosine'?",
        f"{spec}:11:36: train/patience: 0 is less than the minimum of 1",
        f"{spec}:11:50: train/keep_best: 101 is greater than the maximum of 100",
        f"{spec}:11:71: train/stop_at_target: 'yes please' is not of type 'boolean'",
        f"{spec}:11:91: train/warmup: -1 is less than the minimum of 0"]
