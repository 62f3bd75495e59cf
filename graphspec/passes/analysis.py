"""Facts the passes read off the IR, recomputed whenever a pass needs them (they are cheap: they
do not grow with the sequence length), so no pass has to keep another's bookkeeping current."""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..errors import Loc, SpecError
from ..graph import Graph, Node


def shown(name: str) -> str:
    """Intermediate nodes are named node#k; messages name the node the user wrote."""
    return name.split("#")[0]


def deps(n: Node) -> list:
    """Names a node reads: its operands and its initial value."""
    return [a.node for a in n.args] + ([n.init.node] if n.init is not None else [])


def consumers(g: Graph) -> dict:
    return g.consumers()


def kept(g: Graph) -> set:
    """Nodes the outside world reads: losses and outputs."""
    return {op.node for op in g.outputs.values()} | set(g.losses)


def order(g: Graph) -> None:
    """Put g.nodes in a topological order of its same-step reads (delay 0) and initial values,
    keeping the present order wherever it is free: IR order is then evaluation order inside a
    step, and 'every read is defined before it is used' is a property the verifier can check."""
    index = {n: i for i, n in enumerate(g.nodes)}
    dg = nx.DiGraph()
    dg.add_nodes_from(g.nodes)
    for n in g.nodes.values():
        for a in n.args:
            if a.mode != "step" or a.delay == 0:
                dg.add_edge(a.node, n.name)
        if n.init is not None:
            dg.add_edge(n.init.node, n.name)
    if not nx.is_directed_acyclic_graph(dg):
        return          # left to check_cycles / the verifier to name
    g.nodes = {x: g.nodes[x] for x in nx.lexicographical_topological_sort(dg, key=index.__getitem__)}


@dataclass
class Loop:
    """A recurrence: nodes that run step by step over `axis`, in IR order; direction -1 runs
    t = T-1 .. 0 (reads at t+k)."""
    nodes: list
    direction: int
    axis: str


def loops(g: Graph) -> tuple:
    """(loops, loop id of each node in one): the strongly connected components of the step graph
    with delay edges. Every other node with an axis is hoisted: one op over all steps."""
    index = {n: i for i, n in enumerate(g.nodes)}
    dg = nx.DiGraph()
    for n in g.nodes.values():
        if n.is_leaf or n.axis is None:
            continue
        dg.add_node(n.name)
        for a in n.args:
            src = g.nodes[a.node]
            if a.mode == "step" and not src.is_leaf and src.axis == n.axis:
                dg.add_edge(a.node, n.name, delay=a.delay)
    found, loop_of = [], {}
    for comp in sorted(nx.strongly_connected_components(dg), key=lambda c: min(index[x] for x in c)):
        if len(comp) == 1:
            (x,) = comp
            if not dg.has_edge(x, x):
                continue
        delays = {d["delay"] for u, v, d in dg.subgraph(comp).edges(data=True) if d["delay"]}
        if any(d > 0 for d in delays) and any(d < 0 for d in delays):
            reads = {d: u for u, v, d in sorted(dg.subgraph(comp).edges(data="delay"), key=lambda e: index[e[0]])
                     if d}
            back, fwd = min(d for d in reads if d < 0), min(d for d in reads if d > 0)
            first = min(comp, key=index.__getitem__)
            loc = g.delay_at.get((reads[back], back)) or g.nodes[first].loc or Loc("<spec>", 1, 1)
            ax = g.nodes[first].axis
            raise SpecError.at(loc, f"{shown(reads[fwd])}[{ax}-{fwd}] and {shown(reads[back])}[{ax}+{-back}] in one "
                                    f"recurrence ({', '.join(sorted({shown(c) for c in comp}))}): a loop runs one "
                                    f"way, reading earlier steps or later ones; compute the other direction in "
                                    f"nodes of its own (as bidirectional(...) does)")
        members = sorted(comp, key=index.__getitem__)
        lid = len(found)
        found.append(Loop(members, -1 if any(d < 0 for d in delays) else 1, g.nodes[members[0]].axis))
        for x in members:
            loop_of[x] = lid
    return found, loop_of


def fixpoint(g: Graph, rule) -> dict:
    """A monotone boolean property over a graph with cycles (through delays): iterate to rest."""
    val = {n: False for n in g.nodes}
    changed = True
    while changed:
        changed = False
        for n in g.nodes.values():
            v = bool(rule(n, val.__getitem__))
            if v != val[n.name]:
                val[n.name], changed = v, True
    return val


def batched(g: Graph) -> dict:
    """Does a node have a row per batch row (else one row, derived from params only)?"""
    return fixpoint(g, lambda n, get: (
        n.attrs.get("kind") != "table" if n.op == "input" else False if n.is_leaf
        else n.axis is not None or any(get(a.node) for a in n.args)))


def requires_grad(g: Graph) -> dict:
    """Does a node depend on a learnable param through ops that pass gradients?"""
    from ..ops import REGISTRY
    return fixpoint(g, lambda n, get: (
        bool(n.attrs.get("learn", True)) if n.op == "param" else False if n.is_leaf
        else n.ty.dtype == "f" and (n.op in ("fused", "member") or REGISTRY[n.op].grad)
        and any(get(a.node) for a in n.args)))


def placement(g: Graph, loop_of: dict, rows: dict):
    """Where a node runs, for fusion: the same key means the same rows in the same emission
    (one loop's step, or hoisted over one axis with the same batching)."""
    def key(name):
        n = g.nodes[name]
        if name in loop_of:
            return ("loop", loop_of[name])
        return ("hoisted", n.axis, rows[name], n.ty.seq if n.ty is not None else None)
    return key


def writer(g: Graph, name: str) -> str:
    """The node whose equation computes `name`: a member's fused node, else itself."""
    n = g.nodes[name]
    return n.args[0].node if n.op == "member" else name


def schedule(g: Graph, found: list, loop_of: dict) -> list:
    """The emission order: super-nodes ('loop', id) or ('node', name), each after everything it
    reads at the same step or takes its initial value from, ties broken by IR order."""
    index = {n: i for i, n in enumerate(g.nodes)}
    sup = {n.name: ("loop", loop_of[n.name]) if n.name in loop_of else ("node", n.name)
           for n in g.nodes.values() if not n.is_leaf and n.op != "member"}
    cg = nx.DiGraph()
    key = {}
    for name, s in sup.items():
        cg.add_node(s)
        key[s] = min(key.get(s, 1e18), index[name])
    for n in g.nodes.values():
        if n.is_leaf:
            continue
        s = sup[writer(g, n.name)]          # a member's initial value is its writer's input
        for d in deps(n):
            d = writer(g, d)
            if d in sup and sup[d] != s:
                cg.add_edge(sup[d], s)
    return list(nx.lexicographical_topological_sort(cg, key=lambda s: key[s]))
