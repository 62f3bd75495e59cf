"""Training through the Python API and the CLI: losses go down, runs resume bit-identically,
bad checkpoints and bad data files give one clear line."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.model import Model
from runtime.optim import Optimizer, Support, clip_by_global_norm, clip_factor
from runtime.tasks import get_task
from runtime.train import bind_dims, make_tables
import graphspec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_losses(spec, task, steps, B=16, lr=0.01, bind_extra=None, optimizer="adam"):
    g = graphspec.load(spec)
    bind = dict(bind_dims(g, task), **(bind_extra or {}))
    model = Model(spec, bind=bind, tables=make_tables(graphspec.load(spec, bind=bind), task))
    opt = Optimizer({"optimizer": optimizer, "lr": lr}, model.nlearn)
    losses = []
    for step in range(steps):
        losses.append(model.forward(task.batch("train", B, step, 0), seed=step))
        model.backward()
        g = model.current.G[:model.nlearn]
        clip_by_global_norm(g, 5.0)
        opt.step(model.current.F[:model.nlearn], g, lr)
    return losses


@pytest.mark.parametrize("spec, task, steps, factor", [
    ("elman", get_task("charlm", length=32), 40, 0.75),
    ("lstm", get_task("adding", length=20), 60, 0.6),
    ("gru", get_task("charlm", length=32), 40, 0.75),
    ("seq2seq_attention", get_task("dates"), 40, 0.6),
    ("w2v_skipgram_ns", get_task("words", mode="skipgram"), 150, 0.9),
    # the words task streams the text in order (as word2vec.c reads it): the last batches hold
    # words the first ones had not trained yet, so CBOW with a tree gains less than it did on
    # random windows (0.93 of its first loss; at random 0.9)
    ("w2v_cbow_hs", get_task("words", mode="cbow"), 150, 0.95),
])
def test_training_lowers_the_loss(spec, task, steps, factor):
    w2v = spec.startswith("w2v")
    losses = train_losses(os.path.join(ROOT, "specs", f"{spec}.yaml"), task, steps, B=256 if w2v else 16,
                          lr=0.02 if w2v else 0.01,
                          bind_extra={"H": 32} if spec != "seq2seq_attention" else None)
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < factor * first, (first, last)


@pytest.mark.parametrize("kind", ["sgd", "sparse sgd", "momentum", "adam"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_the_clip_inside_the_update_equals_clipping_g_first(kind, max_norm):
    """clip_factor + step(scale=factor) (what training runs: g is read once less) gives the params
    that clip_by_global_norm then step give, bit for bit, in float32, clipped or not."""
    rng = np.random.default_rng(5)
    p0, g = rng.normal(0, 1, 600).astype(np.float32), rng.normal(0, 1, 600).astype(np.float32)
    support = Support([(0, 300)], [(300, 100, 3, np.array([1, 4, 50]))]) if kind == "sparse sgd" else None
    if support is not None:
        g[300:].reshape(100, 3)[np.setdiff1d(np.arange(100), [1, 4, 50])] = 0
    cfg = {"optimizer": kind.split()[-1], "lr": 0.1, "weight_decay": 0.01 if kind != "sparse sgd" else 0.0}
    clipped, folded = (Optimizer(cfg, 600) for _ in range(2))
    p1, p2, g1 = p0.copy(), p0.copy(), g.copy()
    for _ in range(3):
        norm1 = clip_by_global_norm(g1, max_norm, support)
        clipped.step(p1, g1, 0.1, support)
        norm2, factor = clip_factor(g, max_norm, support)
        folded.step(p2, g, 0.1, support, scale=factor)
        g1[...] = g
        assert norm1 == norm2 and (factor < 1) == (max_norm < norm2)
    assert np.array_equal(p1, p2) and not np.array_equal(p1, p0)


@pytest.mark.parametrize("spec, mode", [("w2v_skipgram_ns", "skipgram"), ("w2v_cbow_hs", "cbow")])
def test_sparse_sgd_on_lookup_tables_equals_dense_sgd(spec, mode):
    """Word vectors get row-sparse gradients: backward zeroes and marks only the rows it writes,
    SGD updates only those. Same params as the dense loops after several steps (float64), and
    after every backward G equals what a fresh executor computes (no stale rows)."""
    spec = os.path.join(ROOT, "specs", f"{spec}.yaml")
    task = get_task("words", mode=mode)
    bind = bind_dims(graphspec.load(spec), task)
    tables = make_tables(graphspec.load(spec, bind=bind), task)
    sparse, dense, fresh = (Model(spec, bind=bind, tables=tables, dtype=np.float64, seed=1) for _ in range(3))
    opts = [Optimizer({"optimizer": "sgd"}, sparse.nlearn) for _ in range(2)]
    start = sparse.params[:sparse.nlearn].copy()
    for step in range(4):
        b = task.batch("train", 64, step, 0)
        for m, opt, use in ((sparse, opts[0], True), (dense, opts[1], False)):
            m.forward(b, seed=step)
            m.backward()
            ex = m.current
            support = ex.grad_support() if use else None
            assert clip_by_global_norm(ex.G[:m.nlearn], 0, support) == pytest.approx(
                np.linalg.norm(ex.G[:m.nlearn]), rel=1e-12)
            if use:
                fresh.set_params(m.get_params())
                fresh.forward(b, seed=step)
                fresh.current.G[:] = 0
                fresh.current._sparse_setup()
                fresh.backward()
                np.testing.assert_array_equal(ex.G, fresh.current.G)
            opt.step(ex.F[:m.nlearn], ex.G[:m.nlearn], 0.5, support)
    assert all(b.sparse for b in sparse.current.plan.params())
    touched = sum(len(r) for r in sparse.current.rows)
    assert 0 < touched < sum(b.shape[0] for b in sparse.current.plan.params())
    np.testing.assert_allclose(sparse.current.F[:sparse.nlearn], dense.current.F[:dense.nlearn], rtol=1e-12, atol=1e-15)
    assert np.abs(sparse.current.F[:sparse.nlearn] - start).max() > 1e-5       # it did learn


@pytest.mark.parametrize("spec, mode", [("w2v_skipgram_hs", "skipgram"), ("w2v_cbow_hs", "cbow"),
                                        ("w2v_skipgram_ns", "skipgram"), ("w2v_cbow_ns", "cbow")])
def test_fused_per_example_sgd_equals_the_plan_one_example_at_a_time(spec, mode):
    """per_example: true runs word2vec fused; through the plan it is forward, backward and an SGD
    step per example. Same losses and params (float64). The unigram table holds one word, so
    negative sampling draws the same noise words on both paths (and repeats them in one example)."""
    from runtime.online import Online
    path = os.path.join(ROOT, "specs", f"{spec}.yaml")
    task = get_task("words", mode=mode)
    bind = bind_dims(graphspec.load(path), task)
    tables = make_tables(graphspec.load(path, bind=bind), task)
    if "unigram" in tables:
        tables["unigram"] = np.full_like(tables["unigram"], 7)
    fused, plain = (Model(path, bind=bind, tables=tables, dtype=np.float64, seed=1) for _ in range(2))
    plain.set_params(fused.get_params())
    steppers = [Online(m, Optimizer({"optimizer": "sgd"}, m.nlearn)) for m in (fused, plain)]
    for step in range(3):
        batch = task.batch("train", 16, step, 0)
        lf = steppers[0].step(batch, 0.3, step, fused=True)
        lp = steppers[1].step(batch, 0.3, step, fused=False)
        assert lf == pytest.approx(lp, rel=1e-12)
    pf, pp = fused.get_params(), plain.get_params()
    for k in pf:
        np.testing.assert_allclose(pf[k], pp[k], rtol=1e-10, atol=1e-14, err_msg=k)
    assert np.abs(pf["E"]).max() > 0 and np.abs(pf[next(k for k in pf if k != "E")]).max() > 0


def test_per_example_on_a_sequence_spec_takes_the_general_path():
    """Ids on a time axis are not the word2vec form: the fused kernels must not be picked."""
    from runtime.online import Online, _word2vec_form
    text = """
name: seq_w2v
dims: {V: 9, D: 4}
inputs:
  x: {tokens: V, axis: t}
  y: {tokens: V, axis: t, target: true}
params:
  E: {shape: [V, D]}
nodes:
  v: E[x]
loss: negsample_head(v, y, V, k=2)
train: {optimizer: sgd, per_example: true}
"""
    rng = np.random.default_rng(0)
    m = Model("seq_w2v.yaml", text=text, dtype=np.float64, tables={"unigram": rng.integers(0, 9, (50, 1))})
    batch = {"x": rng.integers(0, 9, (3, 4)), "y": rng.integers(0, 9, (3, 4)), "x_mask": np.ones((3, 4))}
    loss = Online(m, Optimizer({"optimizer": "sgd"}, m.nlearn)).step(batch, 0.1, 0)
    assert np.isfinite(loss) and _word2vec_form(m.executor({"t": 3}, 4).plan) is None


def test_a_words_split_too_short_for_its_window_is_named():
    from runtime.tasks import Words
    w = Words(text=" ".join(["alpha", "beta", "gamma"] * 60), window=5, min_count=1, sample=0)
    with pytest.raises(ValueError, match="task words: the valid split has 9 words; a window of 5 needs at least 12"):
        w.batch("valid", 4, 0, 0)


def test_same_seed_same_losses():
    spec = os.path.join(ROOT, "specs", "bilstm_sum.yaml")
    task = get_task("neighbours")
    a = train_losses(spec, task, 5)
    b = train_losses(spec, task, 5)
    assert a == b


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if '"grad_norm"' in l]


def test_interrupt_and_resume_replays_the_same_losses(tmp_path, cli):
    spec = "specs/seq_to_one.yaml"
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = cli("train", spec, "--steps", "400", "--out", full, "--quiet")
    assert r.returncode == 0, r.stderr
    # a real Ctrl-C in the middle of the run
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "train", spec, "--steps", "400",
                          "--out", str(cut), "--quiet"], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = cut / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 30:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert p.returncode == 130 and "interrupted at step" in err and "Traceback" not in err
    ck = np.load(cut / "last.npz")
    stopped = json.loads(str(ck["meta"]))["step"]
    assert 0 < stopped < 400
    r = cli("train", spec, "--steps", "400", "--out", cut, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = _losses(full), _losses(cut)
    assert [x["step"] for x in b] == list(range(1, 401))
    assert [x["loss"] for x in a] == [x["loss"] for x in b]


def test_stop_after_writes_a_checkpoint_and_resume_matches(tmp_path, cli):
    spec = "specs/feedforward.yaml"
    r = cli("train", spec, "--steps", "30", "--out", tmp_path / "a", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("train", spec, "--steps", "30", "--out", tmp_path / "b", "--quiet", "--stop-after", "12")
    assert r.returncode == 130 and "interrupted at step 12" in r.stderr
    r = cli("train", spec, "--steps", "30", "--out", tmp_path / "b", "--quiet", "--resume")
    assert r.returncode == 0, r.stderr
    assert [x["loss"] for x in _losses(tmp_path / "a")] == [x["loss"] for x in _losses(tmp_path / "b")]


def test_bad_checkpoints_give_one_clear_line(tmp_path, cli):
    run = tmp_path / "run"
    r = cli("train", "specs/feedforward.yaml", "--steps", "3", "--out", run, "--quiet")
    assert r.returncode == 0, r.stderr
    good = (run / "last.npz").read_bytes()
    (run / "last.npz").write_bytes(good[: len(good) // 2])
    r = cli("eval", run / "last.npz")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"graphspec: {run / 'last.npz'}: not a readable checkpoint")
    assert len(r.stderr.strip().splitlines()) == 1
    (run / "last.npz").write_bytes(b"garbage")
    r = cli("train", "specs/feedforward.yaml", "--steps", "3", "--out", run, "--resume", "--quiet")
    assert r.returncode == 2 and "not a readable checkpoint" in r.stderr
    # a checkpoint of another spec is refused
    (run / "last.npz").write_bytes(good)
    r = cli("train", "specs/seq_to_one.yaml", "--steps", "3", "--out", run, "--resume", "--quiet")
    assert r.returncode == 2
    assert "was written for a different spec" in r.stderr


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"abc\tdef\nno tab here\n", ":2: no tab; each line must be source<TAB>target"),
    (b"abc\tdef\n\xff\xfe bad\tx\n", ":2: not UTF-8 (byte 0xff at offset 8); save the file as UTF-8"),
])
def test_bad_data_files(tmp_path, cli, content, message):
    path = tmp_path / "data.tsv"
    if content is not None:
        path.write_bytes(content)
    r = cli("train", "specs/seq2seq.yaml", "--data", path, "--steps", "2", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"graphspec: {path}{'' if message.startswith(':') else ': '}{message}"


def test_user_pairs_train_and_predict(tmp_path, cli):
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(300):
        s = "".join(rng.choice(list("abcdef"), rng.integers(2, 6)))
        lines.append(f"{s}\t{s[::-1]}")
    data = tmp_path / "rev.tsv"
    data.write_text("\n".join(lines) + "\n")
    r = cli("train", "specs/seq2seq.yaml", "--data", data, "--steps", "30", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("predict", tmp_path / "run" / "last.npz", "abc", "--beam", "3")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1          # the best of the beam
    r = cli("predict", tmp_path / "run" / "last.npz", "abc", "--nbest", "3")
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.strip().splitlines()] == ["1", "1", "1"]


def test_generate_and_neighbors_from_checkpoints(tmp_path, cli):
    r = cli("train", "specs/elman.yaml", "--steps", "20", "--out", tmp_path / "lm", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("generate", tmp_path / "lm" / "last.npz", "--prompt", "Return the", "--length", "30")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Return the") and len(r.stdout.rstrip("\n")) >= len("Return the") + 20
    r = cli("train", "specs/w2v_skipgram_ns.yaml", "--steps", "20", "--out", tmp_path / "w2v", "--quiet")
    assert r.returncode == 0, r.stderr
    r = cli("neighbors", tmp_path / "w2v" / "last.npz", "the", "-k", "5")
    assert r.returncode == 0, r.stderr
    rows = [l.split("\t") for l in r.stdout.splitlines()]
    assert len(rows) == 5 and all(-1 <= float(s) <= 1 for _, s, _ in rows) and "the" not in [r[0] for r in rows]
    r = cli("neighbors", tmp_path / "w2v" / "last.npz", "--analogy", "list", "lists", "string", "-k", "3")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    r = cli("neighbors", tmp_path / "w2v" / "last.npz", "zzzzunknown")
    assert r.returncode == 2 and r.stderr.strip() == "graphspec: 'zzzzunknown' is not in the vocabulary"


def test_a_diverging_run_stops_naming_the_node(tmp_path, cli):
    r = cli("train", "specs/elman.yaml", "--steps", "50", "--lr", "1e38", "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("graphspec: the loss became NaN/Inf at step ")
    assert f"is the first non-finite value; last good checkpoint: {tmp_path / 'run' / 'last.npz'} (step 0)" in r.stderr


def test_a_fresh_run_never_overwrites_an_earlier_one(tmp_path, cli):
    run = tmp_path / "run"
    assert cli("train", "specs/feedforward.yaml", "--steps", "3", "--out", run, "--quiet").returncode == 0
    r = cli("train", "specs/feedforward.yaml", "--steps", "3", "--out", run, "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"graphspec: {run} holds an earlier run (last.npz, best.npz, metrics.jsonl, run.json); "
                                f"continue it with --resume, train into another --out, or pass --overwrite to "
                                f"start again")
    assert cli("train", "specs/feedforward.yaml", "--steps", "3", "--out", run, "--quiet", "--overwrite").returncode == 0


def test_scheduled_sampling_probability_rises_linearly():
    from runtime.train import _schedule_sampling, round_lengths
    text = open(os.path.join(ROOT, "specs", "seq2seq.yaml")).read().replace(
        "teacher_forced(y, o, free='argmax')", "teacher_forced(y, o, sampling=0.5, schedule='linear')")
    task = get_task("reverse")
    m = Model(os.path.join(ROOT, "specs", "seq2seq.yaml"), text=text, bind={"V": len(task.vocab), "H": 8})
    b = round_lengths(task.batch("train", 4, 0, 0), m)
    for step, want in ((0, 0.0), (50, 0.25), (100, 0.5)):
        _schedule_sampling(m, b, step, 101)
        probs = {m.current.attrs[i, 0] for i, e in enumerate(m.current.plan.eqns) if e.op == "mix"}
        assert probs == {want}


def test_a_batch_without_a_field_an_input_reads_is_refused_by_name():
    m = Model(os.path.join(ROOT, "bench", "specs", "lstm.yaml"), bind={"H": 8})
    x = np.zeros((5, 2), np.int64)
    assert m.forward({"x": x, "y": x, "x_mask": np.ones((5, 2))}) > 0
    with pytest.raises(KeyError, match=r"the batch has no field 'x_mask' for input 'mask\.t' \(it has: x, y\)"):
        m.forward({"x": x, "y": x})


@pytest.mark.parametrize("kind, wd", [("sgd", 0.0), ("sgd", 0.01), ("momentum", 0.01), ("adam", 0.0), ("adam", 0.01)])
def test_every_optimizer_steps_as_torch_optim_does(kind, wd):
    """The updates against torch.optim's (an outside reference): sgd and momentum as SGD (weight
    decay added to the gradient, momentum without dampening), adam as AdamW (decoupled decay,
    bias correction); five steps of a clipped gradient (scale), float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    p0 = rng.normal(0, 1, 50)
    grads = [rng.normal(0, 1, 50) for _ in range(5)]
    scales = [1.0, 0.5, 1.0, 0.25, 1.0]
    ours = Optimizer({"optimizer": kind, "weight_decay": wd, "momentum": 0.9}, 50, np.float64)
    p = p0.copy()
    tp = torch.tensor(p0, requires_grad=True)
    ref = (torch.optim.AdamW([tp], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd) if kind == "adam" else
           torch.optim.SGD([tp], lr=0.01, momentum=0.9 if kind == "momentum" else 0.0, weight_decay=wd))
    for g, s in zip(grads, scales):
        ours.step(p, g, 0.01, scale=s)
        tp.grad = torch.tensor(g * s)
        ref.step()
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(p, p0)
