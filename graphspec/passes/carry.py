"""Padding carry for loops that run backward in time."""
from __future__ import annotations

from ..graph import Graph, Node, Operand
from .analysis import loops, order


def run(g: Graph, ctx) -> dict:
    """A backward loop (reads at t+k) over a padded axis starts at t=T-1, which is padding for the
    shorter sequences: each state s it carries becomes `select(mask, s#raw, s[t+1])`, so a
    sequence keeps its initial state until its own last real step.
    Contract: for every state of such a loop, s#raw holds what s held before; s is the select."""
    found, _ = loops(g)
    count = 0
    for loop in found:
        if loop.direction > 0 or loop.axis not in g.masks:
            continue
        members = set(loop.nodes)
        states = [x for x in loop.nodes
                  if any(a.node == x and a.mode == "step" and a.delay != 0 for m in members for a in g.nodes[m].args)]
        for s in states:
            node = g.nodes[s]
            raw = g.add(Node(s + "#raw", node.op, node.args, node.attrs, node.loc, None, node.axis, node.ty))
            node.op, node.attrs = "select", {}
            node.args = [Operand(g.masks[node.axis]), Operand(raw.name), Operand(s, -1)]
            count += 1
    order(g)
    return {"padding carries": count}
