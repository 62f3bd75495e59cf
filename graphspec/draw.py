"""Pictures of a model: the folded step graph (delay edges as loops labelled t-1, t-k) and the
unrolled graph (time left to right, layers top to bottom, each shared param drawn once).

DOT text always; SVG/PNG through the system Graphviz when it is installed, otherwise through a
small layered layout drawn with matplotlib (a pip-only dependency). Compiler intermediates that
belong to one equation fold into the node the user wrote, so the picture shows the spec.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

import networkx as nx

from .graph import Graph
from .unroll import owner, unroll

COLORS = {"param": "#fde2b3", "input": "#cde8f6", "node": "#ffffff", "loss": "#f6cdcd", "output": "#d8f0d2"}


# ---------------------------------------------------------------- folding intermediates
def fold_map(g: Graph, blocks: bool = False) -> dict:
    """node -> the node shown for it. An intermediate `a#3` folds into `a` when everything that
    reads it is `a` or another intermediate of `a` (it is private to a's equation). With
    blocks=True a block instance (`enc.fwd.*`) folds into its one output node, when it has one."""
    users = {}
    for n in g.nodes.values():
        for a in n.args:
            users.setdefault(a.node, set()).add(n.name)
    shown = {}
    for name in g.nodes:
        o = owner(name)
        if o != name and o in g.nodes and all(owner(u) == o for u in users.get(name, ())):
            shown[name] = o
        else:
            shown[name] = name
    if blocks:
        prefixes = sorted({n.rsplit(".", 1)[0] for n in g.nodes if "." in owner(n) and g.nodes[n].op != "param"
                           and not n.startswith(("mask.", "table.", "out."))}, key=lambda p: -p.count("."))
        for p in prefixes:
            members = [n for n in g.nodes if n.startswith(p + ".") and g.nodes[n].op not in ("param", "const")]
            inside = set(members)
            exported = {shown[n] for n in members if any(u not in inside for u in users.get(n, ()))}
            if len(exported) == 1:
                (out,) = exported
                for n in members:
                    shown[n] = out
                for n, v in list(shown.items()):
                    if v in inside:
                        shown[n] = out
    return shown


def _kind(g: Graph, name: str) -> str:
    n = g.nodes[name]
    if n.op in ("param", "input"):
        return n.op
    if name in g.losses:
        return "loss"
    if name in {op.node for op in g.outputs.values()}:
        return "output"
    return "node"


def _label(g: Graph, name: str) -> str:
    n = g.nodes[name]
    if n.op == "param":
        return f"{name}\\n{'x'.join(map(str, n.attrs['shape']))}"
    if "#" in name:
        return f"{n.op}"
    return f"{name}\\n{n.ty}" if n.ty is not None else name


def folded_graph(g: Graph) -> nx.MultiDiGraph:
    shown = fold_map(g)
    fg = nx.MultiDiGraph()
    for name, n in g.nodes.items():
        if n.op == "const" or shown[name] != name:
            continue
        fg.add_node(name, kind=_kind(g, name), label=_label(g, name), axis=n.axis)
    seen = set()
    for name, n in g.nodes.items():
        dst = shown[name]
        if dst not in fg:
            continue
        for a in n.args:
            src = shown.get(a.node)
            if src not in fg or (src == dst and a.delay == 0 and a.mode == "step"):
                continue
            label = ("" if not a.delay else f"t{-a.delay:+d}") if a.mode == "step" else a.mode
            key = (src, dst, label)
            if key in seen:
                continue
            seen.add(key)
            fg.add_edge(src, dst, label=label, delay=a.delay if a.mode == "step" else 0, mode=a.mode)
        if n.init is not None and shown.get(n.init.node) in fg:
            fg.add_edge(shown[n.init.node], dst, label="init", delay=0, mode="init")
    return fg


def unrolled_graph(g: Graph, lengths: dict, params: bool = True, blocks: bool = True) -> nx.DiGraph:
    """The unrolled DAG with intermediates (and, with blocks=True, block internals) folded per step."""
    dag = unroll(g, lengths)
    shown = fold_map(g, blocks)
    ug = nx.DiGraph()

    def target(i):
        d = dag.nodes[i]
        name = shown.get(d["name"], d["name"])
        if name == d["name"]:
            return i
        t = d.get("t")
        ax = g.nodes[name].axis
        return f"{name}[{'t' if ax == 't' else ax}={t}]" if t is not None else name

    for i, d in dag.nodes(data=True):
        if d["kind"] == "const" or (d["kind"] == "param" and not params):
            continue
        j = target(i)
        name = shown.get(d["name"], d["name"])
        if j not in ug:
            ug.add_node(j, kind=_kind(g, name), name=name, axis=g.nodes[name].axis, t=d.get("t"),
                        label=_label(g, name).split("\\n")[0] + (f"\\nt={d['t']}" if d.get("t") is not None else ""))
    for u, v, e in dag.edges(data=True):
        if u not in dag or dag.nodes[u]["kind"] == "const":
            continue
        if dag.nodes[u]["kind"] == "param" and not params:
            continue
        a, b = target(u), target(v)
        if a != b and a in ug and b in ug:
            ug.add_edge(a, b, shape=dag.nodes[u].get("shape", ""))
    return ug


# ---------------------------------------------------------------- DOT
def _dot_id(x: str) -> str:
    return '"' + x.replace('"', r"\"") + '"'


def to_dot(G, name: str = "model", rankdir: str = "TB", time_ranks: bool = False) -> str:
    lines = [f"digraph {_dot_id(name)} {{", f"  rankdir={rankdir};", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8];']
    for n, d in G.nodes(data=True):
        shape = {"param": "box", "input": "ellipse", "loss": "doubleoctagon", "output": "octagon"}.get(d["kind"], "ellipse")
        style = ', style="filled,dashed"' if d["kind"] == "param" else ', style=filled'
        lines.append(f'  {_dot_id(n)} [label="{d["label"]}", shape={shape}{style}, fillcolor="{COLORS[d["kind"]]}"];')
    if time_ranks:
        by_t = {}
        for n, d in G.nodes(data=True):
            if d.get("t") is not None:
                by_t.setdefault((d["axis"], d["t"]), []).append(n)
        for (ax, t), ns in sorted(by_t.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            lines.append(f"  subgraph {_dot_id(f'cluster_{ax}_{t}')} {{ label=\"{ax}={t}\"; color=\"#dddddd\"; "
                         + " ".join(_dot_id(x) for x in ns) + " }")
    edges = G.edges(data=True)
    for u, v, d in edges:
        attrs = []
        if d.get("label"):
            attrs.append(f'label="{d["label"]}"')
        if d.get("delay"):
            attrs.append('color="#c0392b", style=bold, constraint=false')
        elif d.get("mode") in ("last", "all", "first", "init"):
            attrs.append('color="#2e86c1", style=dashed')
        if d.get("shape"):
            attrs.append(f'label="{d["shape"]}"')
        lines.append(f"  {_dot_id(u)} -> {_dot_id(v)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def folded_dot(g: Graph) -> str:
    return to_dot(folded_graph(g), g.name)


def unrolled_dot(g: Graph, lengths: dict, params: bool = True, blocks: bool = True) -> str:
    return to_dot(unrolled_graph(g, lengths, params, blocks), g.name, rankdir="LR", time_ranks=True)


# ---------------------------------------------------------------- rendering
def _positions(G, unrolled: bool) -> dict:
    """A layered layout: unrolled graphs put time on x (source steps left of target steps) and
    depth within the step on y; folded graphs put topological depth on y."""
    if unrolled:     # depth within a step: every step drawn as the same column
        same = lambda u, v: (G.nodes[u].get("axis"), G.nodes[u].get("t")) == (G.nodes[v].get("axis"), G.nodes[v].get("t"))  # noqa: E731
        plain = nx.DiGraph((u, v) for u, v in G.edges() if same(u, v) and G.nodes[u]["kind"] != "param")
    else:
        plain = nx.DiGraph((u, v) for u, v, d in G.edges(data=True) if not d.get("delay"))
    plain.add_nodes_from(G.nodes)
    depth = {}
    for layer, ns in enumerate(nx.topological_generations(plain)):
        for n in ns:
            depth[n] = layer
    pos = {}
    if unrolled:
        axes = []
        for _, d in G.nodes(data=True):
            if d.get("axis") and d["axis"] not in axes:
                axes.append(d["axis"])
        offset, off = {}, 0
        for a in axes:
            offset[a] = off
            off += 1 + max((d["t"] for _, d in G.nodes(data=True) if d.get("axis") == a and d.get("t") is not None), default=0)
        slots = {}
        for n, d in G.nodes(data=True):
            if d.get("t") is not None:
                x = offset[d["axis"]] + d["t"]
            elif d["kind"] == "param":
                x = -1.5
            else:
                x = off
            key = (round(x, 1), depth[n])
            k = slots.get(key, 0)
            slots[key] = k + 1
            pos[n] = (x * 2.2 + 0.35 * k, -depth[n] - 0.3 * k)
        params = [n for n, d in G.nodes(data=True) if d["kind"] == "param"]
        for i, n in enumerate(sorted(params)):
            pos[n] = (-3.5, -i * 0.9)
        return pos
    layers = {}
    for n in G.nodes:
        layers.setdefault(depth[n], []).append(n)
    for dep, ns in layers.items():
        for i, n in enumerate(sorted(ns)):
            pos[n] = (i - (len(ns) - 1) / 2, -dep)
    return pos


def _draw_matplotlib(G, path: str, unrolled: bool, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    pos = _positions(G, unrolled)
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    w = min(60, max(6, (max(xs) - min(xs)) * 0.9 + 3))
    h = min(60, max(4, (max(ys) - min(ys)) * 0.8 + 2))
    fig, ax = plt.subplots(figsize=(w, h))
    for u, v, d in G.edges(data=True):
        delayed = bool(d.get("delay"))
        cross = d.get("mode") in ("last", "all", "first", "init")
        rad = 0.35 if delayed else 0.0
        if u == v:
            rad = 1.2
        arrow = FancyArrowPatch(pos[u], pos[v], arrowstyle="-|>", mutation_scale=9, shrinkA=14, shrinkB=14,
                                connectionstyle=f"arc3,rad={rad}", lw=1.4 if delayed else 0.6,
                                color="#c0392b" if delayed else "#2e86c1" if cross else "#777777",
                                linestyle="--" if cross else "-", alpha=0.8)
        ax.add_patch(arrow)
        if d.get("label"):
            mx, my = (pos[u][0] + pos[v][0]) / 2, (pos[u][1] + pos[v][1]) / 2
            if delayed:      # beside the loop, not under a node
                mx += 0.35 if u != v else 0.0
                my += 0.0 if u != v else 0.45
            ax.text(mx, my, d["label"], fontsize=7, color="#c0392b" if delayed else "#2e86c1", ha="center")
    for n, d in G.nodes(data=True):
        x, y = pos[n]
        box = "round,pad=0.3" if d["kind"] != "param" else "square,pad=0.3"
        ax.text(x, y, d["label"].replace("\\n", "\n"), ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle=box, fc=COLORS[d["kind"]], ec="#444444", lw=0.6,
                          ls="--" if d["kind"] == "param" else "-"))
    ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
    ax.set_ylim(min(ys) - 1, max(ys) + 1)
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(G, path: str, unrolled: bool = False, title: str = ""):
    """Write G (a folded or unrolled graph) to .dot, .svg or .png."""
    ext = os.path.splitext(path)[1].lower()
    dot = to_dot(G, title or "model", rankdir="LR" if unrolled else "TB", time_ranks=unrolled)
    if ext == ".dot":
        with open(path, "w") as f:
            f.write(dot)
        return
    if ext not in (".svg", ".png"):
        raise ValueError(f"cannot write {path}: use .svg, .png or .dot")
    exe = shutil.which("dot")
    if exe:
        subprocess.run([exe, f"-T{ext[1:]}", "-o", path], input=dot, text=True, check=True)
        return
    _draw_matplotlib(G, path, unrolled, title)


def viz(spec_path: str, out_path: str, unroll_len: Optional[int] = None, bind: Optional[dict] = None,
        params: bool = True, **kw) -> dict:
    """Draw a spec: folded, or unrolled with every axis at length unroll_len."""
    from .spec import load
    unroll_len = kw.get("unroll", unroll_len)
    g0 = load(spec_path)
    bind = dict(bind or {})
    for k, v in g0.dims.items():
        if isinstance(v, str):
            bind.setdefault(k, 20)
    g = load(spec_path, bind=bind) if bind else g0
    if unroll_len:
        G = unrolled_graph(g, {a: unroll_len for a in g.axes}, params)
        render(G, out_path, unrolled=True, title=f"{g.name}, unrolled over {unroll_len} steps")
    else:
        G = folded_graph(g)
        render(G, out_path, unrolled=False, title=f"{g.name} (folded: red edges read earlier steps)")
    return {"nodes": G.number_of_nodes(), "edges": G.number_of_edges()}
