"""Dead-node elimination."""
from __future__ import annotations

from ..graph import Graph
from .analysis import deps


def run(g: Graph, ctx) -> dict:
    """Contract: afterwards every node reaches a loss or an output (through operands or initial
    values); nothing else changes."""
    roots = list(g.losses) + [op.node for op in g.outputs.values()]
    keep, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n in keep:
            continue
        keep.add(n)
        todo += deps(g.nodes[n])
    dead = [n for n in g.nodes if n not in keep]
    removed = sum(not g.nodes[n].is_leaf for n in dead)
    for n in dead:
        del g.nodes[n]
    return {"after dead-node elimination": sum(not n.is_leaf for n in g.nodes.values()),
            "dead nodes removed": removed}
