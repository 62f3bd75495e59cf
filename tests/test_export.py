"""Interop: models out as ONNX (ONNX Runtime must compute what graphspec computes), word vectors
out in word2vec's formats (gensim must load them and find the same neighbours), vectors in as a
param's initial rows. The ONNX half skips where the onnx extra is not installed."""
import json
import os

import numpy as np
import pytest

import graphspec
from runtime.model import Model
from runtime.train import bind_dims, dim_vocabs, make_task
from runtime.export import word2vec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def model_for(spec, text=None, seed=1, bind_extra=None):
    g = graphspec.load(spec, text)
    task = make_task(g)
    return Model(spec, bind=dict(bind_dims(g, task), **(bind_extra or {})), text=text, seed=seed), task


def checkpoint(path):
    """(meta, params) of a checkpoint."""
    from runtime.checkpoint import open_checkpoint
    ck = open_checkpoint(str(path))
    try:
        return ck.meta, ck.params()
    finally:
        ck.close()


def export(model, task, path):
    from runtime.export.check import export_onnx
    lines = []
    res = export_onnx(model, task, str(path), log=lines.append)
    return res, lines


def node_attrs(path, op):
    import onnx
    m = onnx.load(str(path))
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in m.graph.node if n.op_type == op]


# ---------------------------------------------------------------- ONNX
@pytest.mark.parametrize("spec, op, attrs", [
    ("elman", "Scan", {}),                                  # hand-written recurrence: a Scan body
    ("lstm", "LSTM", {"direction": b"forward"}),
    ("gru", "GRU", {"linear_before_reset": 0}),             # reset before the recurrent matmul
    ("bilstm_concat", "LSTM", {"direction": b"bidirectional"}),
    ("seq2seq_attention", "Loop", {}),                      # greedy decoding, attention inside
])
def test_onnx_runtime_computes_what_graphspec_computes(ort, tmp_path, spec, op, attrs):
    """Random params, a validation batch (padded for every spec but the char LM): every output
    of the model within 1e-5 of graphspec's forward (free running for the decoder)."""
    model, task = model_for(os.path.join(ROOT, "specs", f"{spec}.yaml"), bind_extra={"H": 24} if spec != "seq2seq_attention" else None)
    res, _ = export(model, task, tmp_path / "m.onnx")
    assert op in res["ops"]
    found = node_attrs(tmp_path / "m.onnx", op)
    assert any(all(a.get(k) == v for k, v in attrs.items()) for a in found), found
    assert res["max_diff"] < 1e-5           # and every token the same, else export_onnx raises
    import onnx
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)


def test_bidirectional_gru_with_padding_is_one_op_over_each_length(ort, tmp_path):
    """dates' encoder: gru(reset before) forward and backward over one input become one GRU with
    direction=bidirectional and sequence_lens; the batch's sources have different lengths."""
    model, task = model_for(os.path.join(ROOT, "specs", "seq2seq_attention.yaml"))
    res, _ = export(model, task, tmp_path / "m.onnx")
    (gru,) = node_attrs(tmp_path / "m.onnx", "GRU")
    assert gru["direction"] == b"bidirectional" and gru["linear_before_reset"] == 0
    assert len(set(task.batch("valid", 8, 0, 0)["x_mask"].sum(0))) > 1


RESET_AFTER = """
name: after
data: {task: neighbours}
dims: {V_src: data, V_tgt: data, D: 8, H: 12}
inputs:
  x: {tokens: V_src, axis: t}
  y: {tokens: V_tgt, axis: t, target: true}
params:
  E: {shape: [V_src, D], init: normal(0.5)}
  h0: {shape: [H], init: normal(0.5)}
  s0: {shape: [H], init: normal(0.5)}
nodes:
  a: gru(E[x], H, reset='after', h0=h0)
  b: bidirectional(rnn(a, H), combine='sum')
  c: lstm(b, H, h0=h0, s0=s0)
  o: softmax_out(c + last(c) + last(c.s) + first(b.bwd.h), V_tgt)
loss: cross_entropy(o, y)
"""


def test_reset_after_gru_rnn_and_lstm_with_initial_states(ort, tmp_path):
    """gru_after is GRU with linear_before_reset=1; learned h0/s0 become initial_h/initial_c;
    last(c) and last(c.s) are the LSTM's Y_h and Y_c."""
    path = tmp_path / "after.yaml"
    path.write_text(RESET_AFTER)
    model, task = model_for(str(path))
    res, _ = export(model, task, tmp_path / "m.onnx")
    assert {"GRU", "RNN", "LSTM"} <= set(res["ops"]) and "Scan" not in res["ops"]
    (gru,) = node_attrs(tmp_path / "m.onnx", "GRU")
    assert gru["linear_before_reset"] == 1
    assert node_attrs(tmp_path / "m.onnx", "RNN")[0]["direction"] == b"bidirectional"
    assert res["max_diff"] < 1e-5


CUSTOM = """
name: custom
data: {task: dates}
dims: {V_src: data, V_tgt: data, D: 8, H: 16}
inputs:
  x: {tokens: V_src, axis: src}
  z: {tokens: V_tgt, axis: tgt, from: y}
  y: {tokens: V_tgt, axis: tgt, target: true}
params:
  E: {shape: [V_src, D], init: normal(0.3)}
  E2: {shape: [V_tgt, 2*H], init: normal(0.3)}
  h0: {shape: [H], init: normal(0.5)}
  al: {shape: [H], init: constant(0.3)}
  W2: {shape: [H, H], init: orthogonal}
nodes:
  h: bidirectional(deep_transition(E[x], H, h0=h0), combine='concat')
  k: leaky(E[x], sigmoid(al), H)
  g: {eq: "tanh(slice(h, 0, 16) * k[t+1] + mean(k) - sum(h[t-1]) + W2 @ g[t-2] + 0.5 * g[t-1])", init: h0}
  ctx: attention(E2[z], all(h), score='dot')
  o: softmax_out(select(sum(ctx), ctx, 0.5 * ctx) + 0.5 * concat(last(k), first(g)), V_tgt)
loss: cross_entropy(o, y)
outputs:
  att: ctx.w
  lp: log_softmax(o)
  gl: last(g)
"""


def test_any_other_recurrence_is_a_scan_body(ort, tmp_path, monkeypatch):
    """A custom cell forward and backward (h[t+1]: a reverse Scan that carries its state through
    each source's padding), a leaky unit, g reading g[t-1] and g[t-2] (two carried states), reads
    of k[t+1] and h[t-1] outside any recurrence, attention over all steps at once (weights
    [tgt, src, B, 1]), last() and first(): all within 1e-5 of graphspec, and without the padding
    carry the reverse scan is caught."""
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    model, task = model_for(str(path))
    res, lines = export(model, task, tmp_path / "m.onnx")
    assert "Scan" in res["ops"] and res["max_diff"] < 1e-5
    assert any(ln.split()[:2] == ["att", "11x23x8x1"] for ln in lines), lines
    scans = node_attrs(tmp_path / "m.onnx", "Scan")
    assert any(a.get("scan_input_directions") for a in scans)          # the backward half
    from runtime.export import onnx as ox
    from runtime.export.check import ExportMismatch
    monkeypatch.setattr(ox.Exporter, "step_body", _without_carry(ox.Exporter.step_body))
    with pytest.raises(ExportMismatch, match="ONNX Runtime differs from graphspec"):
        export(model, task, tmp_path / "m2.onnx")
    assert not (tmp_path / "m2.onnx").exists()


def _without_carry(step_body):
    def patched(self, L, *a, **k):
        masks, self.g.masks = self.g.masks, {} if L.direction < 0 else self.g.masks
        try:
            return step_body(self, L, *a, **k)
        finally:
            self.g.masks = masks
    return patched


def test_a_wrong_gate_order_is_caught(ort, tmp_path, monkeypatch):
    """The LSTM mapping matters: torch's gate order i,f,g,o handed to ONNX unchanged (it wants
    i,o,f,c) makes ONNX Runtime disagree, and nothing is written."""
    from runtime.export import onnx as ox
    from runtime.export.check import ExportMismatch
    real = ox._onnx_weights

    def unordered(kind, p, prefix):
        if kind != "lstm":
            return real(kind, p, prefix)
        b = p[prefix + "b"].reshape(-1)
        return p[prefix + "W"], p[prefix + "R"], np.concatenate([b, np.zeros_like(b)])
    monkeypatch.setattr(ox, "_onnx_weights", unordered)
    model, task = model_for(os.path.join(ROOT, "specs", "lstm.yaml"), bind_extra={"H": 16})
    with pytest.raises(ExportMismatch):
        export(model, task, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_greedy_loop_stops_when_every_row_has_emitted_eos(ort, tmp_path):
    """With <eos> made certain, the Loop runs one step whatever max_len allows."""
    model, task = model_for(os.path.join(ROOT, "specs", "seq2seq_attention.yaml"))
    c = model.param("o.c")
    c[0, 3] = 100.0
    export(model, task, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    b = task.batch("valid", 4, 0, 0)
    pred, logits = sess.run(["pred", "o"], {"x": b["x"], "x_mask": b["x_mask"].astype(np.float32),
                                             "max_len": np.array(30, np.int64)})
    assert pred.shape == (1, 4) and (pred == 3).all() and logits.shape == (1, 4, len(task.tgt_vocab))


def test_encoder_and_step_models_decode_as_graphspec_beam_search(ort, tmp_path):
    """Beam search in the caller over model.encoder.onnx and model.step.onnx (runtime/export/beam.py)
    returns graphspec's own beam search's hypotheses and scores (runtime/decode.py)."""
    from runtime.decode import beam_search as graphspec_beam
    from runtime.export.beam import beam_search
    model, task = model_for(os.path.join(ROOT, "specs", "seq2seq_attention.yaml"), seed=3)
    res, _ = export(model, task, tmp_path / "m.onnx")
    assert sorted(os.path.basename(f) for f in res["files"]) == ["m.encoder.onnx", "m.onnx", "m.step.onnx"]
    enc = ort.InferenceSession(str(tmp_path / "m.encoder.onnx"), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(tmp_path / "m.step.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in step.get_inputs()} >= {"dec.h[t-1]", "dec.s[t-1]", "prev.pred[t-1]"}
    sv, tv = task.src_vocab, task.tgt_vocab
    for text in ("3 March 1998", "12/04/2001"):
        ids = np.array(sv.encode(list(text)), np.int64)[:, None]
        want = graphspec_beam(model, sv, tv, text, beam=3, max_len=12)
        got = beam_search(enc, step, {"x": ids, "x_mask": np.ones(ids.shape, np.float32)}, "o", beam=3, max_len=12)
        assert ["".join(tv.decode(s)) for s, _ in got] == [t for t, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


def test_every_spec_exports(ort, tmp_path):
    """Every spec in specs/ (random params, small dims): written, checked, within 1e-4."""
    for spec in sorted(f for f in os.listdir(os.path.join(ROOT, "specs")) if f.endswith(".yaml")):
        path = os.path.join(ROOT, "specs", spec)
        dims = graphspec.load(path).dims
        small = {k: 16 for k in ("H", "H2") if k in dims and spec != "seq2seq_attention.yaml"}
        model, task = model_for(path, bind_extra=small)
        res, _ = export(model, task, tmp_path / (spec[:-5] + ".onnx"))
        assert res["max_diff"] < 1e-4, spec


def test_cli_export_and_its_errors(ort, tmp_path, cli):
    run = tmp_path / "run"
    r = cli("train", "specs/seq_to_one.yaml", "--steps", "5", "--out", run, "--quiet")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "m.onnx"
    r = cli("export", run / "last.npz", "-o", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{run / 'last.npz'} -> {out}: ONNX Runtime against graphspec on a validation batch"
    assert lines[1].split()[:3] == ["o", "8x2", "max"] and f"wrote {out}" in lines
    assert lines[-1] == "ops: Add, Cast, Gather, Identity, MatMul, RNN, ReduceSum, Squeeze, Unsqueeze"
    import onnx
    onnx.checker.check_model(str(out), full_check=True)
    r = cli("export", run / "last.npz", "-o", tmp_path / "m.txt")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"graphspec: export: -o {tmp_path / 'm.txt'}: an ONNX model's file name ends in .onnx "
        f"(for word vectors: --format word2vec)")
    r = cli("export", run / "last.npz", "-o", out, "--binary")
    assert r.returncode == 2 and r.stderr.strip() == \
        "graphspec: export: --binary is for --format word2vec; an ONNX export writes the whole model"


def test_a_part_onnx_cannot_express_is_one_line_naming_the_node(ort, tmp_path):
    spec = tmp_path / "sampled.yaml"
    text = open(os.path.join(ROOT, "specs", "output_recurrence.yaml")).read().replace(
        "teacher_forced(y, o, free='argmax')", "teacher_forced(y, o, free='sample')")
    spec.write_text(text)
    model, task = model_for(str(spec))
    lineno, line = next((i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.lstrip().startswith("prev:"))
    with pytest.raises(graphspec.UserError) as e:
        export(model, task, tmp_path / "m.onnx")
    assert str(e.value) == (f"{spec}:{lineno}:{line.index('teacher_forced') + 1}: cannot export node 'prev' to ONNX: "
                            f"ONNX export has no translation of 'sample' (it draws random numbers)")


# ---------------------------------------------------------------- word2vec
W2V_E = 'E: {shape: [V, D], init: "uniform(-0.0078125, 0.0078125)"}'       # the word2vec specs' E line
@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
    from conftest import run_cli
    out = tmp_path_factory.mktemp("w2v")
    r = run_cli("train", "specs/w2v_skipgram_ns.yaml", "--out", out / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("binary", [False, True])
def test_word_vectors_load_in_gensim_with_graphspecs_neighbours(w2v_run, cli, binary):
    ckpt = w2v_run / "run" / "last.npz"
    path = w2v_run / ("v.bin" if binary else "v.txt")
    r = cli("export", ckpt, "--format", "word2vec", "-o", path, *(["--binary"] if binary else []))
    assert r.returncode == 0, r.stderr
    meta, params = checkpoint(ckpt)
    itos = meta["vocab"]["vocab"]
    E = params["E"]
    assert r.stdout.strip() == f"wrote {path}: {len(itos)} words x 64 from E (word2vec {'binary' if binary else 'text'} format)"
    words, vecs = word2vec.read(str(path))                   # our own reader
    assert words == itos and np.array_equal(vecs, E[4:])     # the reserved rows are no words
    r = cli("neighbors", ckpt, "list", "-k", "10")
    ours = [(w, float(s)) for w, s, _ in (ln.split("\t") for ln in r.stdout.splitlines())]
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == itos and np.array_equal(kv.vectors, E[4:])
    theirs = kv.most_similar("list", topn=10)
    assert [w for w, _ in theirs] == [w for w, _ in ours]
    assert np.allclose([s for _, s in theirs], [s for _, s in ours], atol=1e-3)   # neighbors prints 3 decimals


def test_a_model_starts_from_those_vectors(w2v_run, cli):
    """init: {file: ...} matches rows by word, the rest from `rest`; learn: false keeps them."""
    vectors = w2v_run / "v.txt"
    if not vectors.exists():
        assert cli("export", w2v_run / "run" / "last.npz", "--format", "word2vec", "-o", vectors).returncode == 0
    words, vecs = word2vec.read(str(vectors))
    spec = w2v_run / "pre.yaml"
    text = open(os.path.join(ROOT, "specs", "w2v_cbow_ns.yaml")).read()
    assert W2V_E in text and "per_example: word2vec" in text
    text = text.replace("per_example: word2vec", "per_example: true")     # word2vec's rule updates E: frozen here
    spec.write_text(text.replace(W2V_E, f'E: {{shape: [V, D], init: {{file: {vectors.name}, rest: "normal(0.1)"}}, learn: false}}'))
    r = cli("train", spec, "--steps", "20", "--out", w2v_run / "pre", "--quiet")
    assert r.returncode == 0, r.stderr
    V = len(words) + 4
    assert f"E: {len(words)} of {V} rows from {vectors} (the other 4: normal(0.1))" in r.stderr.splitlines()
    meta, params = checkpoint(w2v_run / "pre" / "last.npz")
    itos = ["<pad>", "<unk>", "<bos>", "<eos>"] + meta["vocab"]["vocab"]
    E = params["E"]
    row = {w: i for i, w in enumerate(itos)}
    assert np.array_equal(E[[row[w] for w in words]], vecs)
    assert 0.05 < E[:4].std() < 0.2                          # normal(0.1) for the reserved rows


def test_matched_rows_through_the_api(tmp_path):
    """apply_pretrained on a Model: rows of the words the file has (some of them), the others
    as `rest` drew them (the same as a model without the file, same seed)."""
    spec = os.path.join(ROOT, "specs", "seq2seq.yaml")
    g = graphspec.load(spec)
    task = make_task(g)
    vocab = task.vocab
    some = vocab.itos[5:12]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(some) + 1, 32)).astype(np.float32)
    word2vec.write(str(tmp_path / "v.bin"), some + ["notaword"], vecs, binary=True)
    text = open(spec).read().replace("E_x: {shape: [V, D], init: normal(0.1)}",
                                     "E_x: {shape: [V, D], init: {file: v.bin, rest: normal(0.1)}}")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    bind = bind_dims(g, task)
    plain, model = Model(spec, bind=bind, seed=4), Model(str(path), bind=bind, seed=4)
    logged = []
    got = word2vec.apply_pretrained(model, dim_vocabs(graphspec.load(str(path)), task), log=logged.append)
    assert got == {"E_x": len(some)}
    assert logged == [f"E_x: {len(some)} of {len(vocab)} rows from {tmp_path / 'v.bin'} (the other "
                      f"{len(vocab) - len(some)}: normal(0.1))"]
    E, E0 = model.param("E_x"), plain.param("E_x")
    assert np.array_equal(E[5:12], vecs[:-1])
    rest = np.ones(len(vocab), bool)
    rest[5:12] = False
    assert np.array_equal(E[rest], E0[rest])


@pytest.mark.parametrize("binary", [False, True])
def test_write_then_read_is_exact(tmp_path, binary):
    words = ["the", "naïve", "日本", "a<b", "x_y"]
    vecs = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32) * 1e3
    skipped = word2vec.write(str(tmp_path / "v"), words + ["two words", "<unk>"], np.vstack([vecs, vecs[:2]]), binary)
    assert skipped == ["two words"]
    got_words, got = word2vec.read(str(tmp_path / "v"))
    assert got_words == words and np.array_equal(got, vecs)


@pytest.mark.parametrize("content, message", [
    (b"hello\n", "{p}:1: not a word2vec file: the first line must be 'COUNT DIM', got 'hello'"),
    (b"2 3\na 1 2 3\nb 1 2\n", "{p}:3: a word and 3 numbers expected, got 3 fields"),
    (b"2 3\na 1 2 3\n", "{p}: the header says 2 words, the file has 1"),
    (b"1 3\na 1 x 3\n", "{p}: the file ends inside record 1 of 1 (truncated?)"),
    (b"2 3\na 1 2 3\na 4 5 6\n", "{p}: word 'a' appears twice (record 2)"),
    (b"1 2\nw " + np.float32([1, 2]).tobytes()[:5], "{p}: the file ends inside record 1 of 1 (truncated?)"),
])
def test_bad_vector_files_give_one_line(tmp_path, content, message):
    p = tmp_path / "v.txt"
    p.write_bytes(content)
    with pytest.raises(graphspec.UserError) as e:
        word2vec.read(str(p))
    assert str(e.value) == message.format(p=p)


def test_file_init_errors_name_the_spot(tmp_path, cli):
    base = open(os.path.join(ROOT, "specs", "w2v_skipgram_ns.yaml")).read()
    old = W2V_E
    line = base.splitlines().index(next(ln for ln in base.splitlines() if old in ln)) + 1
    col = base.splitlines()[line - 1].index("init:") + 7
    cases = [
        ("E: {shape: [V, D], init: {file: nothere.txt}}", f"vectors file 'nothere.txt' not found (looked for {tmp_path / 'nothere.txt'})", col + 7),
        ("E: {shape: [D, D], init: {file: nothere.txt}}", "init from a file matches rows to the task's vocabulary by word: the param's rows must be a vocabulary dim declared 'data' (V, V_src, V_tgt), got shape ['D', 'D']", col),
        ("E: {shape: [V, D], init: {fiel: v.txt}}", "unknown key 'fiel' in params/E/init; did you mean 'file'? (allowed: file, rest)", col + 1),
    ]
    for new, msg, c in cases:
        spec = tmp_path / "s.yaml"
        spec.write_text(base.replace(old, new))
        r = cli("validate", spec)
        assert r.returncode == 2 and r.stderr.strip() == f"{spec}:{line}:{c}: {msg}", r.stderr
