"""viz and plot: DOT structure checked by count, images non-empty, with and without Graphviz."""
import json
import re
import shutil

import numpy as np

import graphspec
from graphspec import draw

TINY = """
name: tiny
dims: {V: 5, D: 3, H: 4}
inputs:
  x: {tokens: V, axis: t}
  y: {tokens: V, axis: t, target: true}
params:
  E: {shape: [V, D]}
  U: {shape: [H, D]}
  W: {shape: [H, H]}
  b: {shape: [H]}
  V_o: {shape: [V, H]}
  c: {shape: [V]}
nodes:
  a: b + W @ h[t-1] + U @ E[x]
  h: tanh(a)
  o: c + V_o @ h
loss: cross_entropy(o, y)
"""


def dot_counts(text):
    nodes = len(re.findall(r'^\s+"[^"]+" \[label=', text, re.M))
    edges = len(re.findall(r'^\s+"[^"]+" -> "[^"]+"', text, re.M))
    return nodes, edges


def test_unrolled_dot_of_a_tiny_elman_rnn_has_the_counts_derived_by_hand():
    g = graphspec.load("tiny.yaml", TINY)
    text = draw.unrolled_dot(g, {"t": 3})
    # nodes: 6 params (drawn once) + per step x, y, mask.t, a, h, o, loss (7) x 3 steps = 27
    # edges per step: a <- b, W, U, E, x (5; the intermediates of a fold into a), h <- a,
    # o <- c, V_o, h (3), loss <- o, y, mask.t (3) = 12; plus h[t-1] -> a[t] for t = 1, 2: 38
    assert dot_counts(text) == (27, 38)
    assert '"h[t=1]" -> "a[t=2]"' in text


def test_unrolled_dot_counts_match_the_unrolled_graph():
    for spec, n in (("specs/elman.yaml", 4), ("specs/seq2seq_attention.yaml", 5)):
        g0 = graphspec.load(spec)
        g = graphspec.load(spec, bind={k: 20 for k, v in g0.dims.items() if isinstance(v, str)})
        G = draw.unrolled_graph(g, {a: n for a in g.axes})
        assert dot_counts(draw.unrolled_dot(g, {a: n for a in g.axes})) == (G.number_of_nodes(), G.number_of_edges())
    # the attention context at each decoder step reads all 5 encoder steps
    assert sum(1 for u in G.predecessors("ctx.c[tgt=2]") if u.startswith("enc[src=")) == 5


def test_folded_dot_draws_delays_as_labelled_loops():
    g = graphspec.load("specs/skip_connections.yaml")
    text = draw.folded_dot(g)
    assert re.search(r'"h" -> "h" \[label="t-1"', text)
    assert re.search(r'"h" -> "h" \[label="t-4"', text)
    bi = draw.folded_dot(graphspec.load("specs/birnn.yaml", bind={"V": 12}))
    assert 'label="t+1"' in bi and 'label="t-1"' in bi


def test_viz_cli_writes_images(cli, tmp_path, monkeypatch):
    for name, extra in (("folded.svg", []), ("unrolled.png", ["--unroll", "3"]), ("g.dot", [])):
        r = cli("viz", "specs/seq2seq_attention.yaml", "-o", tmp_path / name, *extra)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).stat().st_size > 1000
    monkeypatch.setattr(shutil, "which", lambda exe: None)      # no Graphviz: matplotlib draws it
    for name in ("m.png", "m.svg"):
        counts = draw.viz("specs/lstm.yaml", str(tmp_path / name), unroll_len=3)
        assert counts["nodes"] > 5 and (tmp_path / name).stat().st_size > 1000


def test_plot_writes_every_picture(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, 41):
            f.write(json.dumps({"step": s, "loss": 3.0 / s, "grad_norm": 1.0, "lr": 0.01, "time": 0.01}) + "\n")
            if s % 10 == 0:
                f.write(json.dumps({"split": "valid", "step": s, "loss": 3.2 / s, "acc": s / 40}) + "\n")
    np.save(run / "gradnorm.npy", np.column_stack([np.arange(1, 11), np.exp(-np.arange(10))[:, None] * np.ones((10, 6))]))
    np.savez(run / "attention.npz", weights=np.eye(4), src=np.array(list("abcd")), tgt=np.array(list("dcba")))
    np.savez(run / "last.npz", **{"param/W": np.eye(8) * 0.9, "param/R": np.random.default_rng(0).normal(size=(32, 8))})
    r = cli("plot", run)
    assert r.returncode == 0, r.stderr
    names = sorted(p.split("/")[-1] for p in r.stdout.split())
    assert [n for n in names if n.endswith(".png")] == ["attention.png", "curves.png", "eigen.png", "gradnorm.png"]
    for n in ("attention.png", "curves.png", "eigen.png", "gradnorm.png"):
        assert (run / n).stat().st_size > 5000
