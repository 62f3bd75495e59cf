"""Pictures of a model: the folded step graph (delay edges as loops labelled t-1, t-4, t+1) and the
unrolled graph (time left to right, layers top to bottom, each shared param drawn once).

Both are drawn at the level the user wrote. Compiler intermediates fold into the node they belong
to: `a#3` is part of the equation of `a` when `a` is a node of the same axis and nothing but `a`'s
own equation reads it. An intermediate that something else reads (`enc#1`, the embedding both
directions of a bidirectional encoder share) or whose owner is no node (`o#1`, an inline
expression passed to a block: `o` is only the block's name) stays a node of its own, labelled by
its op and the node it was written in. The unrolled picture also folds each block instance
(`enc.fwd.*`, `dec.*`) into its one exported node, so a GRU step is one box, not eleven.

DOT text always; SVG/PNG through the system Graphviz (`dot`) when it is installed, otherwise
through a layered layout of our own drawn with matplotlib. Nothing here imports numba or runtime/.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections import defaultdict
from typing import Optional

import networkx as nx

from .graph import LEAVES, Graph, operand_ty
from .unroll import owner, step_id
from .unroll import unroll as _unroll

# kind -> (fill, border) of a node
NODE_COLORS = {"param": ("#fde2b3", "#b9770e"), "input": ("#d6eaf8", "#2e86c1"), "node": ("#ffffff", "#444444"),
               "inter": ("#f4f6f7", "#909497"), "loss": ("#f5b7b1", "#922b21"), "output": ("#d5f5e3", "#1e8449")}
DOT_SHAPES = {"param": "box3d", "input": "ellipse", "node": "box", "inter": "box", "loss": "doubleoctagon",
              "output": "octagon"}
EDGE_COLORS = {"step": "#566573", "static": "#566573", "param": "#d68910", "delay": "#c0392b", "cross": "#2874a6",
               "init": "#2874a6"}
TAGGED = ("delay", "cross", "init")            # edge kinds whose folded picture carries a tag (t-1, last, all, init)


# ---------------------------------------------------------------- folding to the user's level
def _readers(g: Graph) -> dict:
    return defaultdict(set, {name: set(users) for name, users in g.consumers().items()})


def _output_nodes(g: Graph) -> set:
    """Nodes the outputs section created (out.NAME), not those it merely names (ctx.w)."""
    return {op.node for name, op in g.outputs.items() if op.node == f"out.{name}"}


def fold_map(g: Graph, blocks: bool = False, masks: bool = False) -> dict:
    """name -> the name of the node drawn for it, or None when it is not drawn (constants, and the
    padding masks unless masks=True).

    An intermediate `a#k` folds into `a` when `a` is a node on the same axis and every reader of
    `a#k` is `a` or another intermediate of `a`. With blocks=True each block instance prefix
    (`enc.fwd`, then `enc`, deepest first) folds into its one exported node (read from outside the
    block, or a loss), together with the members on that node's axis; when it exports several (an
    lstm whose h and s are both read), each other member folds into the first exported node it
    feeds within the step."""
    readers = _readers(g)
    hidden = {n for n, x in g.nodes.items() if x.op == "const"}
    if not masks:
        hidden |= set(g.masks.values())
    shown = {}
    for name, n in g.nodes.items():
        o = owner(name)
        if name in hidden:
            shown[name] = None
        elif (o != name and o in g.nodes and n.op not in LEAVES and g.nodes[o].axis == n.axis
              and all(owner(r) == o for r in readers.get(name, ()))):
            shown[name] = o
        else:
            shown[name] = name
    if not blocks:
        return shown
    outputs = _output_nodes(g)
    reps = lambda: {s for s in shown.values() if s is not None}   # noqa: E731
    foldable = {s for s in reps() if g.nodes[s].op not in LEAVES and s not in outputs}
    prefixes = {".".join(owner(s).split(".")[:k]) for s in foldable for k in range(1, owner(s).count(".") + 1)}
    for p in sorted(prefixes, key=lambda p: (-p.count("."), p)):
        members = {s for s in reps() if s in foldable and s.startswith(p + ".")}
        exported = {s for s in members if s in g.losses}
        for name, n in g.nodes.items():
            me = shown[name]
            if me is None or me in members:
                continue
            for a in list(n.args) + ([n.init] if n.init is not None else []):
                if shown.get(a.node) in members:
                    exported.add(shown[a.node])
        if len(exported) == 1:
            (out,) = exported
            ax = g.nodes[out].axis
            for name, s in shown.items():
                if s in members and g.nodes[s].axis == ax:
                    shown[name] = out
        elif exported:
            shown = _fold_into_exports(g, shown, members, exported)
    return shown


def _fold_into_exports(g: Graph, shown: dict, members: set, exported: set) -> dict:
    """A block with several exported nodes (an lstm read as h and as s): each other member folds
    into the first-defined exported node on its axis that it feeds within the step, if the steps
    stay acyclic (else the block is left as it is)."""
    order = {n: i for i, n in enumerate(g.nodes)}
    feeds = defaultdict(set)            # member -> members reading it in the same step
    for name, n in g.nodes.items():
        me = shown[name]
        if me not in members:
            continue
        for a in n.args:
            src = shown.get(a.node)
            if src in members and src != me and a.mode == "step" and a.delay == 0:
                feeds[src].add(me)
    new = dict(shown)
    target = {}
    for m in members - exported:
        seen, todo = set(), [m]
        while todo:
            for r in feeds[todo.pop()]:
                if r not in seen:
                    seen.add(r)
                    todo.append(r)
        outs = [e for e in seen & exported if g.nodes[e].axis == g.nodes[m].axis]
        if outs:
            target[m] = min(outs, key=order.get)
    for name, s in shown.items():
        if s in target:
            new[name] = target[s]
    step = nx.DiGraph()
    for src, rs in feeds.items():
        for r in rs:
            a, b = target.get(src, src), target.get(r, r)
            if a != b:
                step.add_edge(a, b)
    return new if nx.is_directed_acyclic_graph(step) else shown


def _block_of(g: Graph, shown: dict, rep: str) -> Optional[str]:
    """The block instance a node stands for (enc.fwd for enc.fwd.h) when every computed node of
    that instance folds into it."""
    if "." not in rep or rep in _output_nodes(g):
        return None
    p = rep.rsplit(".", 1)[0]
    inside = [n for n, x in g.nodes.items() if n.startswith(p + ".") and x.op not in LEAVES]
    return p if inside and all(shown.get(n) in (rep, None) for n in inside) else None


def _kind(g: Graph, name: str) -> str:
    n = g.nodes[name]
    if n.op in ("param", "input"):
        return n.op
    if name in g.losses:
        return "loss"
    if name in _output_nodes(g) or name in {op.node for op in g.outputs.values()}:
        return "output"
    return "inter" if "#" in name else "node"


def _label(g: Graph, shown: dict, name: str, user_level: bool) -> str:
    n = g.nodes[name]
    if n.op == "param":
        return f"{name}\n{'x'.join(map(str, n.attrs.get('shape', [])))}"
    if "#" in name:
        return f"{n.op} ({owner(name)})"
    if user_level:
        alias = {op.node: k for k, op in g.aliases.items() if op.mode == "step" and op.delay == 0}
        if name in alias:
            return alias[name]
        block = _block_of(g, shown, name)
        if block:
            return block
    return name


def _cluster_paths(g: Graph, names: list) -> dict:
    """name -> tuple of cluster keys, outermost first: 'axis:src', then block prefixes 'enc', 'enc.fwd'.
    A node belongs to prefix p when its owner is p or starts with 'p.'; clusters of fewer than two
    nodes are dropped; a block sits inside the axis cluster of its (non-param) nodes."""
    prefixes = set()
    for s in names:
        parts = owner(s).split(".")
        prefixes |= {".".join(parts[:k]) for k in range(1, len(parts))}

    def chain(s):
        o = owner(s)
        return [p for p in sorted(prefixes, key=len) if o == p or o.startswith(p + ".")]

    size = defaultdict(int)
    for s in names:
        for p in chain(s):
            size[p] += 1
    keep = {p for p in prefixes if size[p] >= 2}
    axes = defaultdict(set)
    for s in names:
        if g.nodes[s].op != "param" and g.nodes[s].axis:
            for p in chain(s):
                axes[p].add(g.nodes[s].axis)
    out = {}
    for s in names:
        c = [p for p in chain(s) if p in keep]
        if c:
            ax = next(iter(axes[c[0]])) if len(axes[c[0]]) == 1 else None
        else:
            ax = g.nodes[s].axis if g.nodes[s].op != "param" else None
        out[s] = tuple(([f"axis:{ax}"] if ax else []) + c)
    return out


def _edge_kind(g: Graph, src: str, dst: str, a, role: str):
    """(kind, tag) of the folded edge for operand a of dst's equation."""
    if role == "init":                  # the value read before the first step (h0=last(enc))
        return "init", "init" if a.mode == "step" and not a.delay else f"init={a.mode if a.mode != 'step' else a}"
    if g.nodes[src].op == "param":
        return "param", ""
    if a.mode != "step":
        return "cross", a.mode
    if a.delay:
        return "delay", f"t{-a.delay:+d}"
    if g.nodes[src].axis != g.nodes[dst].axis:
        return "static", ""
    return "step", ""


def folded_graph(g: Graph, blocks: bool = False, masks: bool = False, params: bool = True) -> nx.MultiDiGraph:
    """The folded (cyclic) step graph at the user's level. Node attrs: kind, name, label, axis, t
    (None), type, cluster. Edge attrs: kind (step|static|param|delay|cross|init), tag (t-1, t+1, last,
    all, first, init or ''), shape (what the edge carries). Parallel edges differ by tag."""
    shown = fold_map(g, blocks, masks)
    fg = nx.MultiDiGraph(name=g.name, view="folded")
    names = [s for s, n in g.nodes.items() if shown[s] == s and (params or n.op != "param")]
    clusters = _cluster_paths(g, names)
    for s in names:
        n = g.nodes[s]
        fg.add_node(s, kind=_kind(g, s), name=s, label=_label(g, shown, s, blocks), axis=n.axis, t=None,
                    type=str(n.ty) if n.ty is not None else "", cluster=clusters[s])
    seen = set()
    for name, n in g.nodes.items():
        dst = shown[name]
        if dst not in fg:
            continue
        reads = [(a, "arg") for a in n.args] + ([(n.init, "init")] if n.init is not None else [])
        for a, role in reads:
            src = shown.get(a.node)
            if src not in fg:
                continue
            kind, tag = _edge_kind(g, a.node, name, a, role)
            if src == dst and kind not in TAGGED:
                continue                   # inside one equation
            if (src, dst, kind, tag) in seen:
                continue
            seen.add((src, dst, kind, tag))
            ty = operand_ty(g, a)
            fg.add_edge(src, dst, kind=kind, tag=tag, shape=str(ty) if ty is not None else "")
    return fg


def unrolled_graph(g: Graph, lengths: dict, params: bool = True, blocks: bool = True,
                   masks: bool = False) -> nx.DiGraph:
    """unroll(g, lengths) with every value folded per step as in fold_map (node `a#2[t=3]` becomes
    `a[t=3]`, and with blocks=True `dec.s[tgt=2]` becomes `dec.h[tgt=2]`). Each shared param stays
    one node with an edge to every step that uses it (params=False leaves them out).
    Node attrs: kind, name, label, axis, t, type. Edge attrs: kind (step: same step; delay: same
    axis, another step; cross: another axis, tag last|all|first|init; static: from a node with no
    axis; param), tag, delay (t_dst - t_src for delay edges), shape."""
    dag = _unroll(g, lengths)
    shown = fold_map(g, blocks, masks)
    ug = nx.DiGraph(name=g.name, view="unrolled", lengths={a: int(lengths.get(a, 5)) for a in g.axes})

    def target(i):
        d = dag.nodes[i]
        s = shown.get(d["name"])
        if s is None or (d["kind"] == "param" and not params):
            return None
        return i if s == d["name"] else step_id(s, g.nodes[s].axis, d["t"])

    for i, d in dag.nodes(data=True):
        j = target(i)
        if j is None or j in ug:
            continue
        s = shown[d["name"]]
        n = g.nodes[s]
        ug.add_node(j, kind=_kind(g, s), name=s, label=_label(g, shown, s, True), axis=n.axis,
                    t=d["t"] if n.axis else None, type=str(n.ty) if n.ty is not None else "", cluster=())
    for u, v, e in dag.edges(data=True):
        a, b = target(u), target(v)
        if a is None or b is None or a == b:
            continue
        A, B = ug.nodes[a], ug.nodes[b]
        shape = dag.nodes[u].get("shape", "")
        if A["kind"] == "param":
            kind, tag = "param", ""
        elif A["axis"] is None:
            kind, tag = "static", ""
        elif A["axis"] != B["axis"]:
            kind, tag = "cross", e.get("mode") if e.get("mode") in ("last", "all", "first") else "init"
        elif A["t"] != B["t"]:
            kind, tag = "delay", f"t{A['t'] - B['t']:+d}"
        else:
            kind, tag = "step", ""
        if ug.has_edge(a, b):
            old = ug.edges[a, b]
            if shape and shape not in old["shape"].split(" + "):
                old["shape"] = f"{old['shape']} + {shape}" if old["shape"] else shape
            continue
        ug.add_edge(a, b, kind=kind, tag=tag, shape=shape,
                    delay=(B["t"] - A["t"]) if kind == "delay" else 0)
    return ug


# ---------------------------------------------------------------- DOT
def _q(x) -> str:
    return '"' + str(x).replace("\\", "\\\\").replace('"', r"\"").replace("\n", r"\n") + '"'


def _node_stmt(n: str, d: dict, unrolled: bool, indent: str) -> str:
    kind = d["kind"]
    fill, border = NODE_COLORS[kind]
    label = d["label"]
    if unrolled and d.get("t") is not None:
        label += f"\n{d['axis']}={d['t']}"
    style = {"param": "filled,dashed", "inter": "filled,rounded,dashed", "node": "filled,rounded"}.get(kind, "filled")
    cls = [f"kind-{kind}"] + ([f"axis-{d['axis']}"] if d.get("axis") else []) + \
        ([f"step-{d['t']}"] if d.get("t") is not None else [])
    attrs = [f"label={_q(label)}", f"class={_q(' '.join(cls))}", f"group={_q(d['name'])}", f"tooltip={_q(d['type'])}",
             f"shape={DOT_SHAPES[kind]}", f"style={_q(style)}", f"fillcolor={_q(fill)}", f"color={_q(border)}"]
    if kind == "param":
        attrs.append("penwidth=1.5")
    return f"{indent}{_q(n)} [{', '.join(attrs)}];"


def _edge_stmt(u: str, v: str, d: dict, unrolled: bool) -> str:
    kind, tag, shape = d["kind"], d.get("tag", ""), d.get("shape", "")
    cls = f"kind-{kind}" + (f" tag-{tag}" if tag else "")
    attrs = []
    if unrolled:
        if kind != "param" and shape:
            attrs.append(f"label={_q(shape)}")
    elif tag:
        attrs.append(f"label={_q(tag)}")
        if shape:
            attrs.append(f"xlabel={_q(shape)}")
    elif shape and kind != "param":
        attrs.append(f"label={_q(shape)}")
    attrs += [f"class={_q(cls)}", f"tooltip={_q(shape)}", f"color={_q(EDGE_COLORS[kind])}",
              f"fontcolor={_q(EDGE_COLORS[kind])}"]
    if kind == "delay":
        attrs.append("penwidth=1.6")
        if not unrolled or d.get("delay", 0) < 0:
            attrs.append("constraint=false")       # back in time: must not order the ranks
    elif kind in ("cross", "init"):
        attrs.append('style="dashed"')
    elif kind == "param":
        attrs.append('style="dashed"')
        attrs.append("arrowsize=0.5")
    return f"  {_q(u)} -> {_q(v)} [{', '.join(attrs)}];"


def to_dot(G, title: Optional[str] = None) -> str:
    """DOT text of a graph from folded_graph (clusters per axis and block) or unrolled_graph
    (rankdir=LR, rank=same per step, an invisible spine of edges keeping the steps in order)."""
    unrolled = G.graph.get("view") == "unrolled"
    title = title or G.graph.get("title") or G.graph.get("name", "model")
    lines = [f"digraph {_q(G.graph.get('name', 'model'))} {{",
             f"  graph [rankdir={'LR' if unrolled else 'TB'}, newrank=true, forcelabels=true, "
             f"label={_q(title)}, labelloc=t, fontname=\"Helvetica\", fontsize=14, nodesep=0.25, ranksep=0.45, "
             f"comment={_q('graphspec ' + ('unrolled' if unrolled else 'folded'))}];",
             '  node [fontname="Helvetica", fontsize=10, margin="0.08,0.03"];',
             '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.7];']
    if unrolled:
        for n, d in G.nodes(data=True):
            lines.append(_node_stmt(n, d, True, "  "))
        steps = defaultdict(list)
        for n, d in G.nodes(data=True):
            if d.get("t") is not None:
                steps[(d["axis"], d["t"])].append(n)
        for (ax, t), ns in sorted(steps.items(), key=lambda kv: (_axis_rank(G, kv[0][0]), kv[0][1])):
            lines.append(f"  {{ rank=same; {' '.join(_q(x) + ';' for x in ns)} }}  // {ax}={t}")
    else:
        tree = {"nodes": [], "kids": {}}
        for n, d in G.nodes(data=True):
            node = tree
            for key in d.get("cluster", ()):
                node = node["kids"].setdefault(key, {"nodes": [], "kids": {}})
            node["nodes"].append(n)

        def emit(node, indent):
            for n in node["nodes"]:
                lines.append(_node_stmt(n, G.nodes[n], False, indent))
            for key, kid in node["kids"].items():
                label = f"axis {key[5:]}" if key.startswith("axis:") else key
                style = 'style="rounded,filled"; fillcolor="#f8f9f9"; color="#aab7b8"' if key.startswith("axis:") \
                    else 'style="rounded,dashed"; color="#7f8c8d"'
                lines.append(f"{indent}subgraph {_q('cluster_' + key)} {{ label={_q(label)}; {style}; fontsize=11;")
                emit(kid, indent + "  ")
                lines.append(f"{indent}}}")
        emit(tree, "  ")
    for u, v, d in G.edges(data=True):
        lines.append(_edge_stmt(u, v, d, unrolled))
    if unrolled:          # keep steps left to right even where no edge says so (backward RNNs)
        firsts = {}
        for n, d in G.nodes(data=True):
            if d.get("t") is not None:
                firsts.setdefault((d["axis"], d["t"]), n)
        chain = [firsts[k] for k in sorted(firsts, key=lambda k: (_axis_rank(G, k[0]), k[1]))]
        for a, b in zip(chain, chain[1:]):
            lines.append(f"  {_q(a)} -> {_q(b)} [style=invis, weight=10];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _axis_order(G) -> list:
    """Axes in the order to draw them: an axis read across (last/all/init) before its readers."""
    seen = []
    for _, d in G.nodes(data=True):
        if d.get("axis") and d["axis"] not in seen:
            seen.append(d["axis"])
    dep = nx.DiGraph()
    dep.add_nodes_from(seen)
    for u, v, d in G.edges(data=True):
        a, b = G.nodes[u].get("axis"), G.nodes[v].get("axis")
        if a and b and a != b:
            dep.add_edge(a, b)
    try:
        return list(nx.lexicographical_topological_sort(dep, key=seen.index))
    except nx.NetworkXUnfeasible:
        return seen


def _axis_rank(G, ax) -> int:
    order = _axis_order(G)
    return order.index(ax) if ax in order else len(order)


def folded_dot(g: Graph, blocks: bool = False, masks: bool = False, params: bool = True) -> str:
    """DOT of the folded step graph: user nodes, inputs and params, clustered per axis and block
    instance; delay edges are loops/back-edges labelled t-1, t-4, t+1; cross-axis reads are
    labelled last/all (init=last for an initial state); the shape each edge carries is its xlabel
    (its label when it has no tag)."""
    return to_dot(folded_graph(g, blocks, masks, params), f"{g.name} (folded: red edges read other steps)")


def unrolled_dot(g: Graph, lengths: dict, params: bool = True, blocks: bool = True, masks: bool = False) -> str:
    """DOT of the unrolled DAG: one rank per step, left to right; shared params once (box3d);
    each edge labelled with the shape it carries (params: in the tooltip, the node shows it)."""
    G = unrolled_graph(g, lengths, params, blocks, masks)
    steps = ", ".join(f"{a}={n}" for a, n in G.graph["lengths"].items())
    return to_dot(G, f"{g.name} unrolled ({steps})")


# ---------------------------------------------------------------- reading our own DOT back
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\]\s;]+)')
_ID = r'"((?:[^"\\]|\\.)*)"'
_NODE = re.compile(r'^\s*' + _ID + r'\s*\[(.*)\];\s*$')
_EDGE = re.compile(r'^\s*' + _ID + r'\s*->\s*' + _ID + r'\s*\[(.*)\];\s*$')
_SUB = re.compile(r'^\s*subgraph\s+' + _ID + r'\s*\{')


def _unq(s: str) -> str:
    if s.startswith('"') and s.endswith('"'):
        s = s[1:-1]
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


def _attrs(text: str) -> dict:
    return {k: _unq(v) for k, v in _ATTR.findall(text)}


def graph_from_dot(text: str):
    """The graph that to_dot wrote (folded or unrolled), read back from its DOT text: every node
    and visible edge with the attributes the renderer needs. Only DOT as to_dot writes it."""
    m = re.search(r'comment="graphspec (\w+)"', text)
    unrolled = bool(m and m.group(1) == "unrolled")
    name = re.match(r'\s*digraph\s+' + _ID, text)
    G = (nx.DiGraph if unrolled else nx.MultiDiGraph)(name=_unq('"' + name.group(1) + '"') if name else "model",
                                                      view="unrolled" if unrolled else "folded")
    title = re.search(r'graph \[.*?label=' + _ID, text)
    if title:
        G.graph["title"] = _unq('"' + title.group(1) + '"')
    stack = []
    for line in text.splitlines():
        s = _SUB.match(line)
        if s:
            key = _unq('"' + s.group(1) + '"')
            stack.append(key[len("cluster_"):] if key.startswith("cluster_") else key)
            continue
        if line.strip() == "}" and stack:
            stack.pop()
            continue
        e = _EDGE.match(line)
        if e:
            a = _attrs(e.group(3))
            if a.get("style") == "invis":
                continue
            cls = a.get("class", "").split()
            kind = next((c[5:] for c in cls if c.startswith("kind-")), "step")
            tag = next((c[4:] for c in cls if c.startswith("tag-")), "")
            d = dict(kind=kind, tag=tag, shape=a.get("tooltip", ""))
            if unrolled:
                d["delay"] = (-int(tag[1:]) if re.fullmatch(r"t[+-]\d+", tag) else 1) if kind == "delay" else 0
            G.add_edge(_unq('"' + e.group(1) + '"'), _unq('"' + e.group(2) + '"'), **d)
            continue
        n = _NODE.match(line)
        if n and not line.strip().startswith(("graph ", "node ", "edge ")):
            a = _attrs(n.group(2))
            cls = a.get("class", "").split()
            kind = next((c[5:] for c in cls if c.startswith("kind-")), "node")
            axis = next((c[5:] for c in cls if c.startswith("axis-")), None)
            t = next((int(c[5:]) for c in cls if c.startswith("step-")), None)
            label = a.get("label", "")
            if unrolled and t is not None:
                label = label.rsplit("\n", 1)[0]
            G.add_node(_unq('"' + n.group(1) + '"'), kind=kind, name=a.get("group", n.group(1)), label=label,
                       axis=axis, t=t, type=a.get("tooltip", ""), cluster=tuple(stack))
    if unrolled:
        lengths = {}
        for _, d in G.nodes(data=True):
            if d["t"] is not None:
                lengths[d["axis"]] = max(lengths.get(d["axis"], 0), d["t"] + 1)
        G.graph["lengths"] = lengths
    return G


# ---------------------------------------------------------------- layout (the matplotlib fallback)
FONT = 8.0          # points, node labels
ROW = 0.62          # inches between rows
PAD = 0.09          # inches around a label inside its box


def _text_size(s: str, size: float = FONT):
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath
    fp = FontProperties(family="DejaVu Sans", size=size)
    lines = s.split("\n")
    w = max((TextPath((0, 0), ln, prop=fp).get_extents().width for ln in lines if ln.strip()), default=size)
    return w / 72.0, len(lines) * size * 1.25 / 72.0


def _box_sizes(G) -> dict:
    out = {}
    for n, d in G.nodes(data=True):
        w, h = _text_size(d["label"])
        out[n] = (w + 2 * PAD + (0.1 if d["kind"] == "input" else 0), h + 2 * PAD * 0.8)
    return out


def _row_graph(G, kinds=("step", "static", "cross", "init")):
    """Names (or nodes) linked by the edges that order rows: everything but params and delays."""
    unrolled = G.graph.get("view") == "unrolled"
    H = nx.DiGraph()
    for n, d in G.nodes(data=True):
        if d["kind"] != "param":
            H.add_node(d["name"] if unrolled else n)
    for u, v, d in G.edges(data=True):
        if d["kind"] in kinds:
            a, b = (G.nodes[u]["name"], G.nodes[v]["name"]) if unrolled else (u, v)
            if a != b and a in H and b in H:
                H.add_edge(a, b)
    order = list(H.nodes)
    if not nx.is_directed_acyclic_graph(H):     # keep the edges that go forward in definition order
        H.remove_edges_from([(a, b) for a, b in list(H.edges) if order.index(a) >= order.index(b)])
    return H, order


def _layout_unrolled(G, boxes):
    """x: one column per step (axes left to right in dependency order, static nodes in a column
    before or after them); y: one row per node name within its axis, inputs on top, each name below
    everything it reads in its step (and below what it reads across axes); results nothing reads
    (a loss, an output) may share a row. Params: a row (or a few) on top, each above its users."""
    H, order = _row_graph(G)
    group = {}                    # name -> its columns: an axis, or 'pre'/'post' for static nodes
    axis_of = {d["name"]: d.get("axis") for _, d in G.nodes(data=True)}
    kind_of = {d["name"]: d["kind"] for _, d in G.nodes(data=True)}
    for s in nx.topological_sort(H):
        if axis_of[s]:
            group[s] = axis_of[s]
        else:
            late = any(axis_of[p] or group.get(p) == "post" for p in H.predecessors(s))
            group[s] = "post" if late else "pre"
    for s in reversed(list(nx.topological_sort(H))):       # a static source read only after the steps
        users = [group[v] for v in H.successors(s)]
        if not axis_of[s] and not any(axis_of[p] for p in H.predecessors(s)) and users and \
                all(u == "post" for u in users):
            group[s] = "post"
    rows, mates = {}, defaultdict(lambda: defaultdict(list))     # group -> row -> names side by side
    sink = {s: H.out_degree(s) == 0 for s in H.nodes}
    for s in nx.lexicographical_topological_sort(H, key=order.index):
        if kind_of[s] == "input":
            r = 0
        else:
            r = max([rows[p] + 1 for p in H.predecessors(s)] + [1])
            # one row per name, but results nothing else reads (a loss, an output) may share one
            while mates[group[s]][r] and not (sink[s] and all(sink[m] for m in mates[group[s]][r])):
                r += 1
        rows[s] = r
        mates[group[s]][r].append(s)
    for ms in (m for grp in mates.values() for m in grp.values()):
        # of names sharing a row, the one read from rows far above goes right, near its gutter lane
        ms.sort(key=lambda m: sum(1 for p in H.predecessors(m) if group[p] == group[m] and rows[m] - rows[p] > 1))
    # columns
    lengths = G.graph.get("lengths") or {}
    axes = _axis_order(G)
    cols = []
    if any(g == "pre" for g in group.values()):
        cols.append(("pre", None))
    for ax in axes:
        T = lengths.get(ax) or 1 + max(d["t"] for _, d in G.nodes(data=True) if d.get("axis") == ax)
        cols += [(ax, t) for t in range(T)]
    if any(g == "post" for g in group.values()):
        cols.append(("post", None))
    # per-column width: the widest row of that column (row mates side by side)
    at = {}                      # (column, name) -> node id
    for n, d in G.nodes(data=True):
        if d["kind"] != "param":
            at[((d["axis"] or group[d["name"]], d.get("t")), d["name"])] = n
    GAP = 0.14
    colw = {}
    for c in cols:
        ws = [sum(boxes[at[(c, m)]][0] for m in ms if (c, m) in at) + GAP * (len(ms) - 1)
              for ms in mates[c[0]].values()]
        colw[c] = max(ws + [0.5]) + 0.55
    xs, x = {}, 0.0
    prev = None
    for c in cols:
        if prev is not None and prev[0] != c[0]:
            x += 0.45               # a gap between axes
        xs[c] = x + colw[c] / 2
        x += colw[c]
        prev = c
    pos = {}
    for (c, name), n in at.items():
        ms = [m for m in mates[c[0]][rows[name]] if (c, m) in at]
        ws = [boxes[at[(c, m)]][0] for m in ms]
        k = ms.index(name)
        total = sum(ws) + GAP * (len(ws) - 1)
        left = xs[c] - total / 2 + sum(ws[:k]) + GAP * k
        pos[n] = (left + ws[k] / 2, -rows[name] * ROW)
    # params: rows on top, each above the mean of its users, spread so none overlap
    params = [n for n, d in G.nodes(data=True) if d["kind"] == "param"]
    right = x
    if params:
        want = {}
        for p in params:
            us = [pos[v][0] for v in G.successors(p) if v in pos]
            want[p] = sum(us) / len(us) if us else right / 2
        total = sum(boxes[p][0] + 0.15 for p in params)
        nrows = max(1, math.ceil(total / max(right, 1.0)))
        ordered = sorted(params, key=lambda p: want[p])
        top = 1.25 * ROW + 0.35
        for r in range(nrows):
            mine = ordered[r::nrows]
            xs_ = _spread([want[p] for p in mine], [boxes[p][0] + 0.15 for p in mine], 0.0, right)
            for p, px in zip(mine, xs_):
                pos[p] = (px, top + (nrows - 1 - r) * 0.55)
    col = {n: c for (c, _), n in at.items()}
    row = {n: rows[name] for (_, name), n in at.items()}
    return pos, {"cols": cols, "xs": xs, "colw": colw, "col": col, "row": row}


def _spread(want, widths, lo, hi):
    """Positions near `want` (sorted) with no overlap, inside [lo, hi] when they fit."""
    n = len(want)
    if n and sum(widths) > hi - lo:           # too many for the width: one block, centred
        x, xs = (lo + hi) / 2 - sum(widths) / 2, []
        for w in widths:
            xs.append(x + w / 2)
            x += w
        return xs
    xs = list(want)
    for i in range(n):
        left = lo + widths[i] / 2 if i == 0 else xs[i - 1] + (widths[i - 1] + widths[i]) / 2
        xs[i] = max(xs[i], left)
    if n and xs[-1] + widths[-1] / 2 > hi:
        xs[-1] = hi - widths[-1] / 2
        for i in range(n - 2, -1, -1):
            xs[i] = min(xs[i], xs[i + 1] - (widths[i] + widths[i + 1]) / 2)
    return xs


def _layout_folded(G, boxes):
    """Rows by depth (longest path over the edges of one step; inputs just above their first
    reader, params just above theirs, global params in a row on top); x: each cluster a band of
    its own, nested, nodes of one row side by side in their band."""
    H, order = _row_graph(G)
    depth = {}
    for n in nx.lexicographical_topological_sort(H, key=order.index):
        depth[n] = max([depth[p] + 1 for p in H.predecessors(n)] + [0])
    for n in H.nodes:
        if G.nodes[n]["kind"] == "input":
            ds = [depth[v] for v in H.successors(n)]
            depth[n] = max(0, min(ds) - 1) if ds else 0
    top = []
    for n, d in G.nodes(data=True):
        if d["kind"] == "param":
            ds = [depth[v] for v in G.successors(n) if v in depth]
            if d.get("cluster"):
                depth[n] = (min(ds) - 1) if ds else 0
            else:
                top.append(n)
    lo = min([depth[n] for n in depth] + [0])
    for n in depth:
        depth[n] -= lo
    tree = {"nodes": [], "kids": {}}
    for n, d in G.nodes(data=True):
        if n in top:
            continue
        node = tree
        for key in d.get("cluster", ()):
            node = node["kids"].setdefault(key, {"nodes": [], "kids": {}})
        node["nodes"].append(n)
    index = {n: i for i, n in enumerate(G.nodes)}
    pos, bands = {}, []
    slot = 0.25

    def first(node):
        return min([index[n] for n in node["nodes"]] + [first(k) for k in node["kids"].values()] + [10 ** 9])

    def place(node, x0, key, level):
        # direct nodes and child clusters in definition order; runs of direct nodes form one band
        items = [(first(kid), "kid", (k, kid)) for k, kid in node["kids"].items()]
        kid_starts = sorted(i for i, _, _ in items)
        runs = defaultdict(list)
        for n in node["nodes"]:
            # a static node that reads an axis goes after the axis clusters (its last/all reads)
            late = key is None and any(G.nodes[p].get("axis") for p in G.predecessors(n)
                                       if G.nodes[p]["kind"] != "param")
            runs[10 ** 9 if late else sum(1 for k in kid_starts if k < index[n])].append(n)
        for r, ns in runs.items():
            items.append((min(index[n] for n in ns) if r != 10 ** 9 else r, "nodes", ns))
        items.sort(key=lambda it: it[0])
        x = x0
        for _, what, it in items:
            if what == "nodes":
                byrow = defaultdict(list)
                for n in it:
                    byrow[depth[n]].append(n)
                w = max(sum(boxes[n][0] + slot for n in ns) for ns in byrow.values())
                for r, ns in sorted(byrow.items()):
                    # order within a row by where what they read sits (barycenter), else definition
                    def bary(n):
                        ps = [pos[p][0] for p in G.predecessors(n) if p in pos and p != n]
                        return (sum(ps) / len(ps) if ps else x + w / 2, index[n])
                    ns.sort(key=bary)
                    rw = sum(boxes[n][0] + slot for n in ns)
                    cx = x + (w - rw) / 2
                    for n in ns:
                        pos[n] = (cx + (boxes[n][0] + slot) / 2, -depth[n] * ROW)
                        cx += boxes[n][0] + slot
                x += w
            else:
                k, kid = it
                x = place(kid, x + 0.22, k, level + 1) + 0.22
            x += 0.2
        if key is not None:
            bands.append((key, level, x0, x))
        return x

    right = place(tree, 0.0, None, 0)
    if top:
        want = {}
        for p in top:
            us = [pos[v][0] for v in G.successors(p) if v in pos]
            want[p] = sum(us) / len(us) if us else right / 2
        ordered = sorted(top, key=lambda p: want[p])
        xs = _spread([want[p] for p in ordered], [boxes[p][0] + 0.2 for p in ordered], 0.0, max(right, 1.0))
        y = ROW * 1.6
        for p, px in zip(ordered, xs):
            pos[p] = (px, y)
    return pos, bands


# ---------------------------------------------------------------- drawing (matplotlib)
PARAM_PALETTE = ["#d68910", "#af601a", "#b7950b", "#ca6f1e", "#a04000", "#9a7d0a", "#dc7633", "#b9770e"]


def _port(pos, boxes, n, side):
    x, y = pos[n]
    w, h = boxes[n]
    return {"top": (x, y + h / 2), "bottom": (x, y - h / 2), "left": (x - w / 2, y), "right": (x + w / 2, y)}[side]


def _clip(pos, boxes, n, toward):
    """Where the segment from n's centre toward a point leaves n's box."""
    x, y = pos[n]
    w, h = boxes[n]
    dx, dy = toward[0] - x, toward[1] - y
    if dx == 0 and dy == 0:
        return x, y
    s = min(w / 2 / abs(dx) if dx else math.inf, h / 2 / abs(dy) if dy else math.inf)
    return x + dx * min(s, 1.0), y + dy * min(s, 1.0)


def _arc_mid(p, q, rad):
    """The middle of matplotlib's arc3 curve from p to q (a quadratic Bezier)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    return (p[0] + q[0]) / 2 + 0.5 * rad * dy, (p[1] + q[1]) / 2 - 0.5 * rad * dx


def _arc_at(p, q, rad, t):
    """The point at parameter t of matplotlib's arc3 curve from p to q (a quadratic Bezier)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    c = ((p[0] + q[0]) / 2 + rad * dy, (p[1] + q[1]) / 2 - rad * dx)
    a, b, e = (1 - t) ** 2, 2 * t * (1 - t), t * t
    return a * p[0] + b * c[0] + e * q[0], a * p[1] + b * c[1] + e * q[1]


def _overlap(r, o) -> float:
    return max(0.0, min(r[2], o[2]) - max(r[0], o[0])) * max(0.0, min(r[3], o[3]) - max(r[1], o[1]))


class _LabelSpots:
    """Where an edge's label goes: the point along its curve, nearest the middle, whose text box
    covers no node (and the least of the labels already placed); the middle itself when nothing
    is free. Sizes are in the drawing's units (inches before scaling)."""

    TRIES = (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.2, 0.8, 0.14, 0.86)

    def __init__(self, pos, boxes):
        self.nodes = [(x - boxes[n][0] / 2, y - boxes[n][1] / 2, x + boxes[n][0] / 2, y + boxes[n][1] / 2)
                      for n, (x, y) in pos.items()]
        self.placed = []          # what labels keep off: labels placed, delay loops
        self.labels = []

    def spot(self, p, q, rad, text, size, needed=True):
        """(x, y) for the label; None, placing nothing, when every spot covers a node and the
        label is not needed (a shape the nodes' own sizes already say)."""
        lines = text.split("\n")
        w = max(map(len, lines)) * 0.6 * size / 72 + 0.05
        h = len(lines) * 1.3 * size / 72 + 0.04
        best = None
        # on the curve first; then beside it (a short edge between close nodes has no room on it)
        tries = [(t, 0, 0) for t in self.TRIES] + [(t, m * sx, m * sy) for m in (1, 2, 3) for t in self.TRIES
                                                   for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        for t, sx, sy in tries:
            x, y = _arc_at(p, q, rad, t)
            x, y = x + sx * (w / 2 + 0.03), y + sy * (h / 2 + 0.03)
            r = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            cost = 10 * sum(_overlap(r, o) for o in self.nodes) + 5 * sum(_overlap(r, o) for o in self.placed)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, x, y, r)
            if cost == 0:
                break
        if not needed and any(_overlap(best[3], o) > 0 for o in self.nodes):
            return None
        self.placed.append(best[3])
        self.labels.append(best[3])
        return best[1], best[2]


def _draw(G, path: str, title: str = ""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, PathPatch, Rectangle
    from matplotlib.path import Path

    unrolled = G.graph.get("view") == "unrolled"
    boxes = _box_sizes(G)
    if unrolled:
        pos, info = _layout_unrolled(G, boxes)
    else:
        pos, bands = _layout_folded(G, boxes)
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    x0, x1 = min(xs) - 1.2, max(xs) + 1.2
    y0, y1 = min(ys) - (1.75 if unrolled else 0.9), max(ys) + 0.9
    ncol = max(1, min(9, int((x1 - x0) / 1.75)))     # legend columns that fit the width
    y0 -= 0.25 * math.ceil(9 / ncol)
    W, Hh = x1 - x0, y1 - y0
    scale = min(1.0, 60.0 / W, 60.0 / Hh)          # keep huge graphs within a sane canvas
    fig = plt.figure(figsize=(max(W * scale, 4.0), max(Hh * scale, 3.0)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(x0, x0 + max(W, 4.0 / scale))
    ax.set_ylim(y1 - max(Hh, 3.0 / scale), y1)
    ax.axis("off")
    fs = FONT * scale
    Z_BG, Z_EDGE, Z_NODE, Z_LABEL = 0, 2, 5, 6

    def arrow(p, q, color, lw=0.8, ls="-", rad=0.0, alpha=0.9, z=Z_EDGE, head=7):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=head * scale, lw=lw * scale, color=color,
                                     linestyle=ls, alpha=alpha, shrinkA=0, shrinkB=0, zorder=z,
                                     connectionstyle=f"arc3,rad={rad}"))

    def curve(pts, color, lw=0.8, ls="-", alpha=0.9, z=Z_EDGE, head=7):
        """Cubic Bezier through 4 control points, arrow at the end."""
        ax.add_patch(PathPatch(Path(pts, [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4]),
                               fc="none", ec=color, lw=lw * scale, ls=ls, alpha=alpha, zorder=z))
        q, p = pts[3], pts[2]
        d = math.hypot(q[0] - p[0], q[1] - p[1]) or 1.0
        tail = (q[0] - (q[0] - p[0]) / d * 0.06, q[1] - (q[1] - p[1]) / d * 0.06)
        arrow(tail, q, color, lw, "-", 0.0, alpha, z, head)

    def label(x, y, s, color="#555555", size=None, weight="normal"):
        ax.text(x, y, s, fontsize=(size or FONT - 1.5) * scale, color=color, ha="center", va="center",
                fontweight=weight, zorder=Z_LABEL,
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.75))

    # backgrounds: step columns (unrolled) or cluster bands (folded)
    if unrolled:
        ymin = min(ys) - 0.45
        for i, c in enumerate(info["cols"]):
            cx, w = info["xs"][c], info["colw"][c]
            if i % 2 == 0 or c[1] is None:
                ax.add_patch(Rectangle((cx - w / 2, ymin), w, ROW * 0.5 - ymin, fc="#f4f6f7", ec="none", zorder=Z_BG))
            txt = "static" if c[1] is None else f"{c[0]}={c[1]}"
            ax.text(cx, ymin - 0.15, txt, ha="center", va="top",
                    fontsize=(FONT + 1) * scale, color="#2c3e50", fontweight="bold")
        for axname in dict.fromkeys(c[0] for c in info["cols"] if c[1] is not None):
            cs = [c for c in info["cols"] if c[0] == axname]
            a, b = info["xs"][cs[0]] - info["colw"][cs[0]] / 2, info["xs"][cs[-1]] + info["colw"][cs[-1]] / 2
            ax.annotate("", (b, ymin - 0.55), (a, ymin - 0.55),
                        arrowprops=dict(arrowstyle="->", color="#7f8c8d", lw=1.0 * scale))
            ax.text((a + b) / 2, ymin - 0.68, f"axis {axname}: time steps", ha="center", va="top",
                    fontsize=FONT * scale, color="#7f8c8d")
        params = [n for n, d in G.nodes(data=True) if d["kind"] == "param"]
        if params:
            py = [pos[p][1] for p in params]
            ax.text(x0 + 0.1, (min(py) + max(py)) / 2, "shared\nparams", fontsize=FONT * scale, color="#b9770e",
                    va="center", ha="left", fontweight="bold")
    else:
        maxlevel = max([lv for _, lv, _, _ in bands] + [0])
        for key, level, a, b in sorted(bands, key=lambda t: t[1]):
            members = [n for n, d in G.nodes(data=True) if key in d.get("cluster", ())]
            if not members:
                continue
            pad = 0.12 * (maxlevel - level + 1)
            top = max(pos[n][1] + boxes[n][1] / 2 for n in members) + pad + 0.18
            bot = min(pos[n][1] - boxes[n][1] / 2 for n in members) - pad
            isaxis = key.startswith("axis:")
            ax.add_patch(FancyBboxPatch((a, bot), b - a, top - bot, boxstyle="round,pad=0.02,rounding_size=0.12",
                                        fc="#f4f6f7" if isaxis else "none", ec="#aab7b8" if isaxis else "#7f8c8d",
                                        ls="-" if isaxis else "--", lw=0.9 * scale, zorder=Z_BG + 0.1 * level))
            ax.text(a + 0.08, top - 0.04, f"axis {key[5:]}" if isaxis else key, ha="left", va="top",
                    fontsize=(FONT + (1 if isaxis else 0)) * scale, color="#2c3e50" if isaxis else "#566573",
                    fontweight="bold" if isaxis else "normal", zorder=Z_BG + 1)

    # edges
    pcolor = {p: PARAM_PALETTE[i % len(PARAM_PALETTE)]
              for i, p in enumerate(n for n, d in G.nodes(data=True) if d["kind"] == "param")}
    labelled = set()
    spots = _LabelSpots(pos, boxes)
    G.graph["label_spots"] = spots          # for tests: where the edge labels went
    seen_loops = defaultdict(int)
    for u, v, k, d in _edges(G):
        if u == v:                     # a delay loop and its labels (drawn below): labels keep off them
            i = seen_loops[u]
            seen_loops[u] += 1
            (ux, uy), (w, h) = pos[u], boxes[u]
            r, sgn = 0.3 + 0.12 * (i // 2), 1 if i % 2 == 0 else -1
            far = ux + sgn * (w / 2 + r * 0.75 + 0.4)
            spots.placed.append((min(ux, far), uy - h * 0.25 - r * 0.6, max(ux, far), uy + h * 0.25 + r * 0.6))
    occupied = defaultdict(set)            # unrolled: rows used in each column
    if unrolled:
        for n, c in info["col"].items():
            occupied[c].add(info["row"][n])
    lanes = defaultdict(list)
    loops = defaultdict(int)
    stacked = defaultdict(int)             # labels already placed at a reader (cross edges)
    for u, v, k, d in _edges(G):
        kind, tag = d["kind"], d.get("tag", "")
        color = EDGE_COLORS[kind]
        (ux, uy), (vx, vy) = pos[u], pos[v]
        shape = d.get("shape", "")
        if kind == "param":
            p = _port(pos, boxes, u, "bottom")
            q = _clip(pos, boxes, v, p)
            arrow(p, q, pcolor[u], lw=0.6, alpha=0.45, z=Z_EDGE - 0.5, head=5)
            continue
        if u == v:                      # folded: a delay loop beside the node
            i = loops[u]
            loops[u] += 1
            w, h = boxes[u]
            r = 0.3 + 0.12 * (i // 2)
            sgn = 1 if i % 2 == 0 else -1               # loops alternate right and left of the node
            p, q = (ux + sgn * w / 2, uy + h * 0.25), (ux + sgn * w / 2, uy - h * 0.25)
            curve([p, (p[0] + sgn * r, p[1] + r * 0.9), (q[0] + sgn * r, q[1] - r * 0.9), q], color, lw=1.3)
            tx = ux + sgn * (w / 2 + r * 0.75 + 0.12)
            label(tx, uy + 0.06, tag, color, FONT - 0.5, "bold")
            if shape:
                label(tx, uy - 0.1, shape, "#777777", FONT - 2.5)
            continue
        if unrolled and kind == "step" and info["col"][u] == info["col"][v]:
            c = info["col"][u]
            lo_, hi_ = sorted((info["row"][u], info["row"][v]))
            if not any(lo_ < r < hi_ for r in occupied[c]):
                p, q = _clip(pos, boxes, u, pos[v]), _clip(pos, boxes, v, pos[u])
                arrow(p, q, color)
                if shape:
                    label((p[0] + q[0]) / 2 + 0.02, (p[1] + q[1]) / 2, shape)
                continue
            # around the nodes in between: a lane in the column's right gutter
            lane = 0
            while any(not (hi_ < a or lo_ > b) for a, b in lanes[(c, lane)]):
                lane += 1
            lanes[(c, lane)].append((lo_, hi_))
            gx = info["xs"][c] + info["colw"][c] / 2 - 0.12 - 0.09 * lane
            p, q = _port(pos, boxes, u, "right"), _port(pos, boxes, v, "right")
            curve([p, (gx + 0.1, p[1]), (gx + 0.1, q[1]), q], color, lw=0.7, alpha=0.75)
            continue
        if unrolled and kind in ("cross", "init"):
            # through the channel half a row above the reader, entering from its left
            q = _port(pos, boxes, v, "left")
            p = _port(pos, boxes, u, "bottom" if uy > vy else "top")
            yc = vy + (ROW * 0.5 if uy > vy else -ROW * 0.5)
            dx = q[0] - p[0]
            curve([p, (p[0] + 0.25 * dx, yc), (q[0] - 0.3 * dx, yc), q], color, lw=0.7, ls="--", alpha=0.55)
            srcs = [s for s in G.predecessors(v) if G.nodes[s]["name"] == G.nodes[u]["name"]]
            if u == max(srcs, key=lambda s: pos[s][0]) and (G.nodes[u]["name"], G.nodes[v]["name"]) not in labelled:
                labelled.add((G.nodes[u]["name"], G.nodes[v]["name"]))      # once per pair of names
                k = stacked[v]
                stacked[v] += 1
                label(q[0] - 0.35, q[1] + 0.13 + 0.15 * k, f"{tag}({G.nodes[u]['label']}) {shape}", color, FONT - 1.5)
            continue
        if unrolled and kind == "delay":
            span = abs(ux - vx)
            one = min((w for w in info["colw"].values()), default=1.0) * 1.6
            forward = vx > ux
            p = _port(pos, boxes, u, "right" if forward else "left")
            q = _port(pos, boxes, v, "left" if forward else "right")
            if abs(uy - vy) > 1e-6 and span < one:          # a diagonal to the neighbouring step
                p, q = _clip(pos, boxes, u, pos[v]), _clip(pos, boxes, v, pos[u])
            # a step further than the next one: an arc over the row, a constant height above it
            rad = -0.12 if span < one else -2 * 0.36 * ROW / max(math.hypot(q[0] - p[0], q[1] - p[1]), 1e-6)
            arrow(p, q, color, lw=1.2, rad=rad)
            if shape and (G.nodes[u]["name"], G.nodes[v]["name"], tag) not in labelled:
                labelled.add((G.nodes[u]["name"], G.nodes[v]["name"], tag))
                mx, my = _arc_mid(p, q, rad)
                label(mx, my + (0.06 if forward else -0.06), f"{tag} {shape}" if span >= one else shape,
                      color, FONT - 2)
            continue
        # folded edges, and unrolled static edges
        p, q = _clip(pos, boxes, u, pos[v]), _clip(pos, boxes, v, pos[u])
        if kind == "delay":            # a back-edge: an arc that stands clear of a short straight path
            rad = min(1.2, max(0.45, 0.6 / max(math.hypot(q[0] - p[0], q[1] - p[1]), 1e-6)))
            arrow(p, q, color, lw=1.3, rad=rad)
            for text in dict.fromkeys((tag + (f"\n{shape}" if shape else ""), tag)):   # the shape if it fits
                at = spots.spot(p, q, rad, text, FONT - 1, needed=text == tag)
                if at:
                    label(*at, text, color, FONT - 1)
                    break
            continue
        dashed = kind in ("cross", "init")
        rad = 0.12 if abs(uy - vy) > ROW * 1.5 else 0.0
        arrow(p, q, color, lw=0.8, ls="--" if dashed else "-", rad=rad)
        text = (tag + " " if tag else "") + shape
        at = spots.spot(p, q, rad, text, FONT - 1.5, needed=bool(tag)) if text and not unrolled else None
        if at:
            label(*at, text, color if dashed else "#555555")
    # nodes
    for n, d in G.nodes(data=True):
        x, y = pos[n]
        w, h = boxes[n]
        fill, border = NODE_COLORS[d["kind"]]
        style = {"param": "square,pad=0", "input": f"round,pad=0,rounding_size={h / 2:.3f}"}.get(
            d["kind"], "round,pad=0,rounding_size=0.06")
        if d["kind"] == "param":        # a shadow: one copy shared by every step
            ax.add_patch(FancyBboxPatch((x - w / 2 + 0.035, y - h / 2 - 0.035), w, h, boxstyle=style, fc=border,
                                        ec="none", alpha=0.5, zorder=Z_NODE - 0.1))
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=style, fc=fill, ec=border,
                                    lw=(1.6 if d["kind"] == "loss" else 0.8) * scale,
                                    ls="--" if d["kind"] == "inter" else "-", zorder=Z_NODE))
        ax.text(x, y, d["label"], ha="center", va="center", fontsize=fs, zorder=Z_LABEL,
                fontstyle="italic" if d["kind"] == "inter" else "normal")
    # legend
    handles = [Line2D([], [], color=EDGE_COLORS["step"], lw=1, label="same step"),
               Line2D([], [], color=EDGE_COLORS["delay"], lw=1.5, label="delay (other step)"),
               Line2D([], [], color=EDGE_COLORS["cross"], lw=1, ls="--", label="across axes (last/all/init)"),
               Line2D([], [], color=EDGE_COLORS["param"], lw=1, label="param (one copy, shared)")]
    if not any(d["kind"] == "param" for _, d in G.nodes(data=True)):
        handles.pop()
    for kind, text in (("input", "input"), ("param", "param"), ("inter", "intermediate"), ("loss", "loss"),
                       ("output", "output")):
        if any(d["kind"] == kind for _, d in G.nodes(data=True)):
            handles.append(Rectangle((0, 0), 1, 1, fc=NODE_COLORS[kind][0], ec=NODE_COLORS[kind][1], label=text))
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 0.0), fontsize=FONT * scale, frameon=False,
               ncol=ncol, borderaxespad=0.3, handlelength=1.6)
    ax.text(x0 + 0.1, y1 - 0.1, title or G.graph.get("title") or G.graph.get("name", ""), ha="left", va="top",
            fontsize=(FONT + 4) * scale, fontweight="bold", color="#17202a")
    fig.savefig(path, dpi=110 if os.path.splitext(path)[1].lower() in RASTER else 72)
    plt.close(fig)


def _edges(G):
    """(u, v, key, data), param edges first (drawn underneath)."""
    if G.is_multigraph():
        es = list(G.edges(keys=True, data=True))
    else:
        es = [(u, v, 0, d) for u, v, d in G.edges(data=True)]
    return sorted(es, key=lambda e: e[3]["kind"] != "param")


# ---------------------------------------------------------------- entry points
WIDE_UNROLL = 16          # steps side by side beyond which an unrolled picture is a strip (~110 px a step)

# What a picture may be written as: Graphviz's text, or what both `dot -T` and matplotlib write.
RASTER = (".png", ".jpg", ".jpeg")
FORMATS = (".svg", ".pdf") + RASTER + (".dot", ".gv")
FORMAT_NAMES = ".svg, .pdf, .png, .jpg or .dot"


def render(dot_or_graph, path: str, title: Optional[str] = None) -> str:
    """Write a picture to path: .dot (the DOT text), .svg, .pdf, .png or .jpg (the system Graphviz `dot` when
    it is on PATH, else our own layered layout drawn with matplotlib; also when `dot` fails).
    dot_or_graph: DOT text from folded_dot/unrolled_dot/to_dot, a graph from folded_graph/
    unrolled_graph, or a graphspec Graph (drawn folded). Returns path."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot write {path}: use {FORMAT_NAMES}")
    if isinstance(dot_or_graph, Graph):
        dot_or_graph = folded_graph(dot_or_graph)
    if isinstance(dot_or_graph, str):
        text, G = dot_or_graph, None
    else:
        G = dot_or_graph
        text = to_dot(G, title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext in (".dot", ".gv"):
        with open(path, "w") as f:
            f.write(text)
        return path
    exe = shutil.which("dot")
    if exe:
        r = subprocess.run([exe, f"-T{ext[1:]}", "-o", path], input=text, text=True, capture_output=True)
        if r.returncode == 0 and os.path.exists(path) and os.path.getsize(path) > 0:
            return path
    if G is None:
        G = graph_from_dot(text)
    _draw(G, path, title or G.graph.get("title", ""))
    return path


def _check_writable(path: str):
    """Before drawing: the picture's place can take a file (an existing ancestor directory we may
    write into; not a directory itself)."""
    from .errors import UserError
    if os.path.isdir(path):
        raise UserError(f"-o {path}: is a directory; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d) or not os.access(d, os.W_OK | os.X_OK):
        raise UserError(f"-o {path}: cannot write there ({d} is not a writable directory)")
    if d == os.path.dirname(os.path.abspath(path)):      # a file can be made there? (a read-only mount, /proc)
        existed = os.path.exists(path)
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise UserError(f"-o {path}: cannot write it: {e.strerror or e}") from None
        if not existed:
            os.unlink(path)


def viz(spec_path: str, out_path: str, unroll: Optional[int] = None, bind: Optional[dict] = None, *,
        params: bool = True, blocks: Optional[bool] = None, masks: bool = False,
        unroll_len: Optional[int] = None) -> dict:
    """Draw a spec: the folded step graph when unroll is None, else the graph unrolled with every
    axis at length `unroll`. Sizes the data fixes (dims declared `data`) are bound to compile's
    placeholder (spec.PLACEHOLDER) unless `bind` says otherwise. params=False leaves the shared params out; blocks folds each block
    instance into its output node (default: yes unrolled, no folded); masks=True also draws the
    padding masks. Returns {"nodes": n, "edges": m} of the drawn graph."""
    from .errors import UserError
    from .limits import check_picture, check_unroll
    from .spec import load, placeholders
    n = unroll if unroll is not None else unroll_len
    if os.path.splitext(out_path)[1].lower() not in FORMATS:
        raise UserError(f"-o {out_path}: use a {FORMAT_NAMES} file name")
    if n:
        check_unroll(int(n))
    _check_writable(out_path)
    g0 = load(spec_path)
    free = placeholders(g0, bind)
    g = load(spec_path, bind=free) if free else g0
    if n:
        G = unrolled_graph(g, {a: int(n) for a in g.axes}, params=params,
                           blocks=True if blocks is None else blocks, masks=masks)
        title = f"{g.name} unrolled ({', '.join(f'{a}={n}' for a in g.axes) or 'no time axis'})"
    else:
        G = folded_graph(g, blocks=bool(blocks), masks=masks, params=params)
        title = f"{g.name} (folded: red edges read other steps)"
    check_picture(G.number_of_nodes(), G.number_of_edges(),
                  "unroll fewer steps" if n else "draw a smaller spec (or write .dot and lay it out elsewhere)")
    try:
        render(G, out_path, title)
    except OSError as e:
        raise UserError(f"-o {out_path}: cannot write it: {e.strerror or e}") from None
    out = {"nodes": G.number_of_nodes(), "edges": G.number_of_edges()}
    if n and int(n) > WIDE_UNROLL and g.axes:
        out["note"] = (f"--unroll {n} draws all {n} steps side by side, a strip too wide to read; "
                       f"every step repeats one pattern: --unroll {WIDE_UNROLL // 2} shows it")
    return out
