"""viz and plot: DOT structure checked by count (by hand, and against unroll() collapsed
independently of draw.py), images non-empty, with Graphviz, without it, and when it fails."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections import defaultdict

import networkx as nx
import numpy as np
import pytest

import graphspec
from graphspec import draw
from graphspec.unroll import unroll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def load(spec):
    g0 = graphspec.load(spec)
    return graphspec.load(spec, bind={k: 20 for k, v in g0.dims.items() if isinstance(v, str)})


# ---------------------------------------------------------------- reading DOT, as a user of it would
NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*\[(.*)\];\s*$')
EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*->\s*"((?:[^"\\]|\\.)*)"\s*\[(.*)\];\s*$')


def dot_parse(text):
    """(node ids, [(u, v, attribute text)]) of the visible nodes and edges of a DOT text."""
    nodes, edges = [], []
    for line in text.splitlines():
        e = EDGE.match(line)
        if e:
            if "style=invis" not in e.group(3):
                edges.append((e.group(1), e.group(2), e.group(3)))
            continue
        n = NODE.match(line)
        if n and not line.strip().startswith(("graph ", "node ", "edge ")):
            nodes.append(n.group(1))
    assert len(set(nodes)) == len(nodes), "a node defined twice"
    assert {u for u, _, _ in edges} | {v for _, v, _ in edges} <= set(nodes), "an edge to an undefined node"
    assert text.count("{") == text.count("}")
    return nodes, edges


def dot_counts(text):
    nodes, edges = dot_parse(text)
    return len(nodes), len(edges)


# ---------------------------------------------------------------- the collapse, written again from the rules
def collapsed(g, lengths, blocks=True):
    """(nodes, edges) of unroll(g, lengths) once each value is folded to the user's level, derived
    here from the rules rather than from draw.py: constants and padding masks are not drawn; `a#k`
    is part of node `a` when `a` is a node on the same axis and everything reading `a#k` belongs
    to `a`; with blocks, a block prefix whose members have exactly one reader outside the block
    (or one loss) folds into that member; self-edges after folding go, parallel edges merge."""
    dag = unroll(g, lengths)
    drop = set(g.masks.values()) | {n for n, x in g.nodes.items() if x.op == "const"}
    reads = lambda n: n.args + ([n.init] if n.init is not None else [])      # noqa: E731
    readers = defaultdict(set)
    for n in g.nodes.values():
        for a in reads(n):
            readers[a.node].add(n.name)
    rep = {}
    for name, n in g.nodes.items():
        o = name.split("#")[0]
        private = all(r.split("#")[0] == o for r in readers[name])
        rep[name] = o if "#" in name and o in g.nodes and g.nodes[o].axis == n.axis and private else name
    if blocks:
        outputs = {op.node for k, op in g.outputs.items() if op.node == f"out.{k}"}
        computed = lambda r: g.nodes[r].op not in ("param", "input", "const") and r not in outputs  # noqa: E731
        names = {r for r in rep.values() if r not in drop}
        prefixes = {".".join(r.split(".")[:k]) for r in names if computed(r) for k in range(1, r.count(".") + 1)}
        for p in sorted(prefixes, key=lambda p: -p.count(".")):
            members = {r for r in set(rep.values()) if r not in drop and computed(r) and r.startswith(p + ".")}
            out = {r for r in members if r in g.losses}
            for n in g.nodes.values():
                if rep[n.name] not in members and n.name not in drop:
                    out |= {rep[a.node] for a in reads(n) if rep[a.node] in members}
            if len(out) == 1:
                (o,) = out
                rep = {k: (o if v in members and g.nodes[v].axis == g.nodes[o].axis else v) for k, v in rep.items()}
            elif out:
                rep = into_first_export(g, rep, members, out)

    def drawn(i):
        d = dag.nodes[i]
        if d["name"] in drop:
            return None
        r = rep[d["name"]]
        ax = g.nodes[r].axis
        return r if ax is None else f"{r}[{'t' if ax == 't' else ax}={d['t']}]"

    nodes = {drawn(i) for i in dag.nodes} - {None}
    edges = {(drawn(u), drawn(v)) for u, v in dag.edges if drawn(u) and drawn(v) and drawn(u) != drawn(v)}
    return nodes, edges


def into_first_export(g, rep, members, out):
    """Several exported members (an lstm's h and s both read from outside): every other member
    goes to the first-defined exported member on its axis that it reaches by same-step reads inside
    the block, unless that makes a cycle within a step."""
    step = {(rep[a.node], rep[n.name]) for n in g.nodes.values() for a in n.args
            if rep[n.name] in members and rep[a.node] in members and a.mode == "step" and a.delay == 0
            and rep[a.node] != rep[n.name]}
    names = list(g.nodes)
    to = {}
    for m in members - out:
        reach, frontier = set(), {m}
        while frontier:
            frontier = {b for a, b in step if a in frontier} - reach
            reach |= frontier
        cands = sorted((e for e in reach & out if g.nodes[e].axis == g.nodes[m].axis), key=names.index)
        if cands:
            to[m] = cands[0]
    merged = {(to.get(a, a), to.get(b, b)) for a, b in step if to.get(a, a) != to.get(b, b)}
    H = nx.DiGraph(list(merged))
    return {k: to.get(v, v) for k, v in rep.items()} if nx.is_directed_acyclic_graph(H) else rep


# ---------------------------------------------------------------- counts
def test_unrolled_dot_of_a_tiny_elman_rnn_has_the_counts_derived_by_hand():
    g = graphspec.load("tiny.yaml", TINY)
    text = draw.unrolled_dot(g, {"t": 3})
    # Nodes: the 6 params E, U, W, b, V_o, c once each (shared by the 3 steps), plus per step the
    # inputs x, y and the nodes a, h, o, loss (a's intermediates W@h[t-1], E[x], U@E[x] and the
    # sums fold into a; o's V_o@h into o; the padding mask is not drawn): 6 + 3 * 6 = 24.
    # Edges per step: a <- b, W, U, E, x (5); h <- a (1); o <- c, V_o, h (3); loss <- o, y (2): 11,
    # so 33 over 3 steps; plus the recurrence h[t-1] -> a[t] for t = 1, 2: 2.  Total 35.
    assert dot_counts(text) == (24, 35)
    assert '"h[t=1]" -> "a[t=2]"' in text and '"h[t=0]" -> "a[t=1]"' in text
    assert '"h[t=2]" -> "a' not in text                       # no step 3 to feed
    nodes, edges = dot_parse(text)
    assert nodes.count("W") == 1 and sum(1 for u, _, _ in edges if u == "W") == 3   # one W, to each step's a
    # with the masks: + mask.t per step (3 nodes) and mask.t -> loss (3 edges)
    assert dot_counts(draw.unrolled_dot(g, {"t": 3}, masks=True)) == (27, 38)
    # without the params: 24 - 6 nodes; 35 - 3 * 6 param edges (a <- b, W, U, E; o <- c, V_o)
    assert dot_counts(draw.unrolled_dot(g, {"t": 3}, params=False)) == (18, 17)
    # folded: x, y, a, h, o, loss + 6 params = 12 nodes; edges b, W, U, E, x -> a (5); h -> a,
    # labelled t-1 (1); a -> h (1); c, V_o, h -> o (3); o, y -> loss (2): 12
    assert dot_counts(draw.folded_dot(g)) == (12, 12)


@pytest.mark.parametrize("spec,n", [("specs/elman.yaml", 4), ("specs/seq2seq_attention.yaml", 5),
                                    ("specs/seq2seq.yaml", 3)])
def test_unrolled_dot_counts_match_the_unrolled_graph_collapsed(spec, n):
    g = load(spec)
    lengths = {a: n for a in g.axes}
    for blocks in (True, False):
        text = draw.unrolled_dot(g, lengths, blocks=blocks)
        nodes, edges = collapsed(g, lengths, blocks)
        assert dot_counts(text) == (len(nodes), len(edges)), (spec, blocks)
        got_nodes, got_edges = dot_parse(text)
        assert set(got_nodes) == nodes and {(u, v) for u, v, _ in got_edges} == edges
    if spec.endswith("/seq2seq.yaml"):       # the encoder lstm exports h and s: two nodes per step
        nodes, _ = dot_parse(draw.unrolled_dot(g, lengths))
        assert {"enc.h[src=1]", "enc.s[src=1]"} <= set(nodes) and not [x for x in nodes if x.startswith("enc.z")]
    if spec.endswith("elman.yaml"):
        # 6 params + 4 steps x (x, y, a, h, o, loss, out.next); 4 x (5 + 1 + 3 + 2 + 1) + 3 = 51 edges
        assert dot_counts(draw.unrolled_dot(g, lengths)) == (34, 51)


def test_unrolled_seq2seq_attention_reads_all_encoder_steps_at_every_decoder_step():
    g = load("specs/seq2seq_attention.yaml")
    text = draw.unrolled_dot(g, {"src": 5, "tgt": 5})
    nodes, edges = dot_parse(text)
    pairs = {(u, v) for u, v, _ in edges}
    for t in range(5):
        assert sorted(u for u, v in pairs if v == f"ctx.c[tgt={t}]" and u.startswith("enc[")) == \
            [f"enc[src={s}]" for s in range(5)]
    assert ("enc[src=4]", "dec.h[tgt=0]") in pairs                              # h0 = last(enc)
    # forward and backward encoder recurrences, the decoder's, and teacher forcing y[t-1] -> E_y[y]
    assert ("enc.fwd.h[src=1]", "enc.fwd.h[src=2]") in pairs and ("enc.bwd.h[src=2]", "enc.bwd.h[src=1]") in pairs
    assert ("dec.h[tgt=1]", "dec.h[tgt=2]") in pairs and ("y[tgt=1]", "dec#1[tgt=2]") in pairs
    # each shared param is one node (a distinct shape) with an edge to each step using it
    assert nodes.count("enc.fwd.R") == 1 and sum(1 for u, _ in pairs if u == "enc.fwd.R") == 5
    assert re.search(r'"enc.fwd.R" \[.*shape=box3d', text)
    assert re.search(r'"enc\[src=2\]" -> "ctx.c\[tgt=3\]" \[label="f\[128\]"', text)     # shapes on edges


def test_folded_dot_draws_delays_as_labelled_loops_and_cross_axis_reads():
    text = draw.folded_dot(graphspec.load("specs/skip_connections.yaml"))
    assert re.search(r'"h" -> "h" \[label="t-1"', text)
    assert re.search(r'"h" -> "h" \[label="t-4"', text)
    assert re.search(r'"h" -> "p" \[label="last", xlabel="f\[64\]"', text)
    bi = draw.folded_dot(load("specs/birnn.yaml"))
    assert 'label="t+1"' in bi and 'label="t-1"' in bi
    s2s = draw.folded_dot(load("specs/seq2seq_attention.yaml"))
    assert re.search(r'"enc" -> "ctx.c" \[label="all"', s2s)
    assert re.search(r'"enc" -> "dec.h" \[label="init=last"', s2s)
    # clusters: per axis, per block instance nested inside
    i, j = s2s.index('subgraph "cluster_axis:src"'), s2s.index('subgraph "cluster_enc.fwd"')
    assert i < j < s2s.index('"enc.fwd.h" [')
    # the user's level: intermediates folded, the embedding both directions share kept (enc#1)
    nodes, _ = dot_parse(s2s)
    assert {"enc.fwd.h", "enc#1", "o#1", "dec.h"} <= set(nodes)
    assert not any(n.startswith(("enc.fwd.h#", "dec.h#")) or n.startswith("mask.") for n in nodes)


def test_dot_reads_back_into_the_same_graph():
    g = load("specs/seq2seq_attention.yaml")
    for G in (draw.folded_graph(g), draw.unrolled_graph(g, {"src": 3, "tgt": 3})):
        H = draw.graph_from_dot(draw.to_dot(G))
        assert set(H.nodes) == set(G.nodes) and H.number_of_edges() == G.number_of_edges()
        for n in G:
            assert [H.nodes[n][k] for k in ("kind", "axis", "t", "label")] == \
                [G.nodes[n][k] for k in ("kind", "axis", "t", "label")]


# ---------------------------------------------------------------- rendering
def test_render_without_graphviz_draws_with_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda exe: None)
    g = graphspec.load("tiny.yaml", TINY)
    for name, what in (("u.png", draw.unrolled_graph(g, {"t": 3})), ("u.svg", draw.unrolled_dot(g, {"t": 3})),
                       ("f.png", draw.folded_dot(g)), ("f.svg", g)):
        out = tmp_path / name
        assert draw.render(what, str(out)) == str(out)
        assert out.stat().st_size > 3000
    assert (tmp_path / "u.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "u.svg").read_bytes()[:2000]
    draw.render(draw.folded_dot(g), str(tmp_path / "f.dot"))
    assert (tmp_path / "f.dot").read_text() == draw.folded_dot(g)
    for name, magic in (("f.jpg", b"\xff\xd8\xff"), ("f.JPEG", b"\xff\xd8\xff"), ("f.pdf", b"%PDF")):
        draw.render(g, str(tmp_path / name))          # what matplotlib writes besides png and svg
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    with pytest.raises(ValueError, match=r"f.bmp: use .svg, .pdf, .png, .jpg or .dot$"):
        draw.render(g, str(tmp_path / "f.bmp"))


def test_render_uses_graphviz_when_present_and_falls_back_when_it_fails(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsrc = sys.stdin.read()\n"
                    "out = sys.argv[sys.argv.index('-o') + 1]\nopen(out, 'w').write(sys.argv[1] + '\\n' + src)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(shutil, "which", lambda exe: str(fake) if exe == "dot" else None)
    g = graphspec.load("tiny.yaml", TINY)
    draw.render(draw.unrolled_dot(g, {"t": 2}), str(tmp_path / "a.svg"))
    got = (tmp_path / "a.svg").read_text()
    assert got.startswith("-Tsvg\n") and got[6:] == draw.unrolled_dot(g, {"t": 2})
    fake.write_text("#!/bin/sh\nexit 3\n")                # a broken Graphviz: matplotlib draws it
    draw.render(draw.unrolled_dot(g, {"t": 2}), str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_viz_counts_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda exe: None)
    c = draw.viz("specs/skip_connections.yaml", str(tmp_path / "s.png"), unroll=4)
    # nodes: 6 params, x and h per step (8), y, p, loss: 17. edges: U, W, W_s, b -> h at each step
    # (16), x -> h (4), h[t-1] -> h (3), h[t-4] -> h (none within 4 steps), last(h) -> p,
    # V_o, c -> p (3), p, y -> loss (2): 28
    assert c == {"nodes": 17, "edges": 28}
    assert (tmp_path / "s.png").stat().st_size > 5000
    c = draw.viz("specs/skip_connections.yaml", str(tmp_path / "s.dot"), unroll=6)
    text = (tmp_path / "s.dot").read_text()
    assert dot_counts(text) == (c["nodes"], c["edges"])
    assert '"h[t=1]" -> "h[t=5]"' in text                                       # the t-4 edge
    c = draw.viz("specs/skip_connections.yaml", str(tmp_path / "f.svg"))
    assert c == {"nodes": 11, "edges": 12} and (tmp_path / "f.svg").stat().st_size > 5000
    draw.viz("specs/elman.yaml", str(tmp_path / "e.dot"), unroll=2, bind={"V": 7})
    assert 'label="V_o\\n7x128"' in (tmp_path / "e.dot").read_text()


def test_viz_cli_writes_images(cli, tmp_path):
    for name, extra in (("folded.svg", []), ("g.dot", ["--unroll", "3"])):
        r = cli("viz", "specs/seq2seq_attention.yaml", "-o", tmp_path / name, *extra)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / name).stat().st_size > 1000


# ---------------------------------------------------------------- run plots
def make_run(run):
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, 41):
            rec = {"step": s, "loss": 3.0 / s, "grad_norm": 1.0 + s % 3, "lr": 0.01, "time": 0.01 * s}
            if s % 5 == 0:
                rec["grad_norm_t"] = list(np.exp(-np.arange(6.0))[::-1])
            f.write(json.dumps(rec) + "\n")
            if s % 10 == 0:
                f.write(json.dumps({"split": "valid", "step": s, "loss": 3.2 / s, "acc": s / 40, "ppl": 30 / s}) + "\n")
        f.write("not json\n")
    norms = np.exp(-np.arange(6.0))[None, ::-1] * np.linspace(1, 2, 10)[:, None]
    norms[0, :2] = np.nan
    np.save(run / "gradnorm.npy", np.column_stack([np.arange(1, 11) * 4, norms]))
    np.savez(run / "attention.npz", weights=np.eye(4)[:, ::-1], src=np.array(list("ab d")), tgt=np.array(list("dcba")))
    rng = np.random.default_rng(0)
    np.savez(run / "last.npz", **{"param/W": np.eye(8) * 0.9, "param/R": rng.normal(size=(32, 8)),
                                  "param/h.W": rng.normal(size=(32, 8)), "param/E": rng.normal(size=(5, 8))})


def test_plot_run_writes_every_picture(tmp_path):
    from runtime import plots
    run = tmp_path / "run"
    make_run(run)
    out = plots.plot_run(str(run), str(tmp_path / "pics"))
    assert [os.path.basename(p) for p in out] == ["curves.png", "gradnorm.png", "attention.png", "eigen.png"]
    for p in out:
        assert os.path.getsize(p) > 5000 and open(p, "rb").read(4) == b"\x89PNG"
    # W (square) and the 4 blocks of R; not h.W (stacked input weights) nor E
    mats = plots.recurrent_matrices(plots.read_params(str(run / "last.npz")))
    assert sorted(mats) == ["R[0]", "R[1]", "R[2]", "R[3]", "W"] and all(m.shape == (8, 8) for m in mats.values())
    # without gradnorm.npy the heatmap comes from grad_norm_t in metrics.jsonl
    os.remove(run / "gradnorm.npy")
    steps, norms = plots.read_gradnorm(str(run))
    assert list(steps) == [5, 10, 15, 20, 25, 30, 35, 40] and norms.shape == (8, 6)
    assert len(plots.plot_run(str(run))) == 4


def test_plot_run_of_an_empty_directory_writes_nothing(tmp_path):
    from runtime import plots
    assert plots.plot_run(str(tmp_path)) == []


def test_pictures_import_no_numba():
    code = ("import sys; import graphspec.draw, runtime.plots; "
            "assert 'numba' not in sys.modules, 'numba imported'; "
            "assert not [m for m in sys.modules if m.startswith('runtime.') and m not in "
            "('runtime.plots', 'runtime.rundir', 'runtime.checkpoint')]")      # the checked run-file readers
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_plot_cli(cli, tmp_path):
    run = tmp_path / "run"
    make_run(run)
    r = cli("plot", run)
    assert r.returncode == 0, r.stderr
    assert sorted(os.path.basename(p) for p in r.stdout.split() if p.endswith(".png")) == \
        ["attention.png", "curves.png", "eigen.png", "gradnorm.png"]


@pytest.mark.parametrize("spec, param, k, width, gates", [
    ("specs/lstm.yaml", "h.R", 4, 64, ["i", "f", "g", "o"]),
    ("specs/gru.yaml", "h.R", 2, 128, ["r", "u"]),                      # c_r, c_u: their prefix dropped
    ("specs/gru.yaml", "h.W", 3, 128, ["r", "u", "n"]),               # W [3H, D]: the gates of a = b + W @ x
])
def test_stacked_gate_matrices_are_named_by_the_gates_they_feed(spec, param, k, width, gates):
    from runtime import plots
    g = graphspec.load(spec, bind={"V": 50})
    assert plots.gate_names(g, param, k, width) == gates
    assert plots.gate_names(g, param, k + 1, width) is None


def test_eigen_panels_of_a_trained_lstm_name_its_gates(tmp_path):
    """last.npz carries its spec's text: the panels say 'h.R gate f', not h.R[1]."""
    from runtime import plots
    from runtime.checkpoint import save
    spec = os.path.join(ROOT, "specs", "lstm.yaml")
    meta = {"spec": spec, "spec_hash": "0" * 16, "spec_text": open(spec).read(), "bind": {}, "seed": 0,
            "task": "adding", "data": None, "cfg": {}, "vocab": {}}
    rng = np.random.default_rng(0)
    save(str(tmp_path / "last.npz"), {"h.R": rng.normal(size=(256, 64)).astype(np.float32)}, {}, meta, 1)
    params, got = plots.read_params(str(tmp_path / "last.npz"), with_meta=True)
    mats = plots.recurrent_matrices(params, plots._spec_graph(got))
    assert list(mats) == ["h.R gate i", "h.R gate f", "h.R gate g", "h.R gate o"]
    assert np.array_equal(mats["h.R gate g"], params["h.R"][128:192])
    assert plots.plot_eigen(str(tmp_path), str(tmp_path / "eigen.png"))


def test_curves_leave_out_what_never_moves():
    from runtime import plots
    train = [{"step": s, "loss": 3.0 / s, "grad_norm": 1.0 + s % 3, "lr": 0.003} for s in range(1, 11)]
    valid = [{"split": "valid", "step": s, "loss": 3.0 / s, "ppl": 9.0 / s, "acc": s / 10, "seq_acc": 0.0}
             for s in (5, 10)]
    assert plots.curve_panels(train, valid) == (["loss", "ppl", "acc", "grad_norm"], {"seq_acc": 0.0, "lr": 0.003})
    train[5]["lr"] = 0.002                          # a schedule moves it: drawn
    assert plots.curve_panels(train, valid[:1]) == (["loss", "ppl", "acc", "seq_acc", "grad_norm", "lr"], {})


def test_gradient_heatmap_stops_where_the_padding_starts():
    from runtime import plots
    norms = np.zeros((3, 56))
    norms[:, :50] = 1.0
    norms[0, :49] = np.nan                      # one row reached only t=49: the steps up to it stay
    assert plots.unpadded(norms).shape == (3, 50)
    assert plots.unpadded(np.full((2, 4), np.nan)).shape == (2, 4)


def test_viz_and_compile_show_data_dims_at_the_same_placeholder(tmp_path):
    from conftest import main
    code, out, _ = main("compile", "specs/elman.yaml")
    assert code == 0 and "  dims from data, shown at a placeholder: V=64\n" in out
    assert "    V_o                            64x128\n" in out
    draw.viz("specs/elman.yaml", str(tmp_path / "e.dot"))
    assert 'label="V_o\\n64x128"' in (tmp_path / "e.dot").read_text()


def test_a_wide_unrolled_strip_is_said(tmp_path):
    from conftest import main
    code, out, err = main("viz", "specs/elman.yaml", "--unroll", "17", "-o", tmp_path / "u.dot")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'u.dot'} (")
    assert err.splitlines() == ["graphspec: note: --unroll 17 draws all 17 steps side by side, a strip too wide "
                                "to read; every step repeats one pattern: --unroll 8 shows it"]
    code, out, err = main("viz", "specs/elman.yaml", "--unroll", "16", "-o", tmp_path / "u.dot")
    assert (code, err) == (0, "")


@pytest.mark.parametrize("spec", ["specs/lstm.yaml", "specs/gru.yaml", "specs/elman.yaml",
                                  "specs/seq2seq_attention.yaml", "specs/bilstm_concat.yaml"])
def test_folded_edge_labels_sit_on_no_node(spec, tmp_path):
    """Each edge label goes to a spot along (or beside) its edge that no node box covers: on
    gru's folded graph the middle of h.h -> h.c put 't-1 f[128]' on h.a_n."""
    g = graphspec.load(spec, bind={k: 20 for k in ("V", "V_src", "V_tgt")})
    G = draw.folded_graph(g)
    draw._draw(G, str(tmp_path / "f.png"))
    spots = G.graph["label_spots"]
    assert spots.labels
    hits = [(r, n) for r in spots.labels for n in spots.nodes if draw._overlap(r, n) > 0]
    assert hits == []
