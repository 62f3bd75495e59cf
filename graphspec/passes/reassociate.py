"""Regrouping sums so that what does not depend on the recurrence is hoisted."""
from __future__ import annotations

from ..graph import Graph, Node, Operand
from .analysis import kept, loops, order


def run(g: Graph, ctx) -> dict:
    """`b + W h(t-1) + U x(t)` parses as `(b + W h(t-1)) + U x(t)`: inside a loop, a sum of
    several terms is regrouped as `(b + U x(t)) + W h(t-1)`, the part free of the recurrence a
    new node `ROOT#h1` (hoisted: one op over all steps) and one add left per step.
    Contract: only adds inside loops change; the value of every node the user named is the same
    (a sum of the same terms); intermediates of the regrouped sum are replaced."""
    _, loop_of = loops(g)
    users = g.consumers()
    outs = kept(g)
    count = 0
    for root in [n for n in g.nodes.values() if n.op == "add" and n.name in loop_of]:
        if root.name not in g.nodes:
            continue
        lid = loop_of[root.name]
        leaves, inner = [], []

        def walk(op: Operand):
            n = g.nodes[op.node]
            if (op.mode == "step" and op.delay == 0 and n.op == "add" and len(users.get(n.name, [])) == 1
                    and n.name not in outs and n.init is None and "#" in n.name):
                inner.append(n.name)
                for a in n.args:
                    walk(a)
            else:
                leaves.append(op)
        for a in root.args:
            walk(a)
        looped = [a for a in leaves if loop_of.get(a.node) == lid]
        free = [a for a in leaves if loop_of.get(a.node) != lid]
        if len(free) < 2 or not looped:
            continue
        if any(g.nodes[a.node].ty is None or g.nodes[a.node].ty.seq for a in leaves):
            continue
        for name in inner:
            del g.nodes[name]
        acc = free[0]
        for i, a in enumerate(free[1:], 1):
            name = f"{root.name}#h{i}"
            g.add(Node(name, "add", [acc, a], loc=root.loc, axis=root.axis, ty=root.ty))
            acc = Operand(name)
        rest = looped
        while len(rest) > 1:
            name = f"{root.name}#r{len(rest)}"
            g.add(Node(name, "add", [acc, rest[0]], loc=root.loc, axis=root.axis, ty=root.ty))
            acc, rest = Operand(name), rest[1:]
        root.args = [acc, rest[0]]
        count += 1
    order(g)
    return {"regrouped sums": count}
