"""Unroll a step graph for concrete lengths: one node per value and step, an acyclic DAG.

Node ids are stable and readable: `h[t=3]`, `enc.fwd.h[src=2]` (the axis name when it is not t),
a param or static node by its name; intermediates keep the compiler's names (`a#2[t=3]`, a part
of the equation of `a`). Each shared param is one node with an edge to every step that uses it:
the picture of parameter sharing across time.
"""
from __future__ import annotations

from typing import Optional

import networkx as nx

from .errors import SpecError
from .graph import Graph


def owner(name: str) -> str:
    """The node the user wrote that an intermediate belongs to."""
    return name.split("#")[0]


def step_id(name: str, axis: Optional[str], t: Optional[int]) -> str:
    if axis is None or t is None:
        return name
    return f"{name}[{'t' if axis == 't' else axis}={t}]"


def unroll(g: Graph, lengths: dict, consts: bool = False) -> nx.DiGraph:
    """The unrolled DAG. Node attributes: kind (param|input|node), name, axis, t, shape."""
    T = {a: int(lengths.get(a, 5)) for a in g.axes}
    dag = nx.DiGraph()

    def nid(name, t):
        n = g.nodes[name]
        return step_id(name, n.axis, t if n.axis else None)

    def add(name, t):
        n = g.nodes[name]
        i = nid(name, t)
        if i not in dag:
            kind = "param" if n.op == "param" else "input" if n.op == "input" else \
                "const" if n.op == "const" else "node"
            dag.add_node(i, kind=kind, name=name, owner=owner(name), op=n.op, axis=n.axis, t=t if n.axis else None,
                         shape=str(n.ty) if n.ty else "")
        return i

    def sources(a, t, reader):
        """Unrolled ids read by operand a at step t of reader's axis."""
        src = g.nodes[a.node]
        if src.op == "const" and not consts:
            return []
        if src.axis is None:
            return [(a.node, None)]
        Ts = T[src.axis]
        if a.mode == "all":
            return [(a.node, s) for s in range(Ts)]
        if a.mode == "last":
            return [(a.node, Ts - 1)]
        if a.mode == "first":
            return [(a.node, 0)]
        s = t - a.delay
        if 0 <= s < Ts:
            return [(a.node, s)]
        init = g.nodes[a.node].init
        return sources(init, None, reader) if init is not None else []

    for n in g.nodes.values():
        steps = range(T[n.axis]) if n.axis else [None]
        for t in steps:
            if n.op == "const" and not consts:
                continue
            me = add(n.name, t)
            for a in n.args:
                for src, s in sources(a, t, n):
                    u = add(src, s)
                    if u != me:
                        dag.add_edge(u, me, delay=a.delay if a.mode == "step" else None, mode=a.mode)
    if not nx.is_directed_acyclic_graph(dag):
        cyc = nx.find_cycle(dag)
        raise SpecError.at(g.nodes[next(iter(g.nodes))].loc,
                           "the unrolled graph has a cycle: " + " -> ".join(u for u, _ in cyc))
    return dag


def topological_order(dag: nx.DiGraph) -> list:
    """Deterministic: among ready nodes, earlier steps first, then by id."""
    return list(nx.lexicographical_topological_sort(
        dag, key=lambda i: (dag.nodes[i].get("t") if dag.nodes[i].get("t") is not None else -1, i)))
