"""Generic elementwise fusion: any cell written as equations runs as one kernel per step."""
from __future__ import annotations

import itertools

import networkx as nx

from ..graph import Graph, Node, Operand
from ..ops import REGISTRY
from ..plan import Fused
from .analysis import batched, kept, loops, order, placement, shown


def _elementwise(n: Node) -> bool:
    sig = REGISTRY.get(n.op)
    return (sig is not None and sig.ew is not None and n.ty is not None and n.ty.dtype == "f"
            and n.ty.seq is None and isinstance(n.ty.feat, int))


def run(g: Graph, ctx) -> dict:
    """Connected elementwise nodes (registry ops with `ew` maths) that run in the same loop step
    (or are hoisted together over the same rows) and have the same width become one `fused`
    node whose kernel runtime/ generates from the registry's maths, forward and backward. A
    `take` of another value (a gate of z) is read in place, at its column offset. Nodes read
    outside the group (or at another step, or by outputs and losses) stay as `member` nodes
    that the fused node writes; the others become registers of the kernel and lose their
    buffers.
    Contract: every member computes what it computed before; no cycle of same-step reads is
    created (a group never has a path out of it and back in); a group has two or more
    elementwise nodes."""
    if not ctx.fuse:
        return {"fused groups": 0, "fused nodes": 0}
    _, loop_of = loops(g)
    where = placement(g, loop_of, batched(g))
    dag = nx.DiGraph()
    for n in g.nodes.values():
        dag.add_node(n.name)
        for a in n.args:
            if a.mode == "step" and a.delay == 0:
                dag.add_edge(a.node, n.name)
    group = {}                          # node -> group id
    members: dict = {}                  # group id -> set of nodes
    ids = itertools.count()
    for n in g.nodes.values():
        if not _elementwise(n):
            continue
        candidates = {group[a.node] for a in n.args if a.mode == "step" and a.delay == 0 and a.node in group
                      and where(a.node) == where(n.name) and g.nodes[a.node].ty.feat == n.ty.feat}
        merged = {n.name}.union(*(members[c] for c in candidates)) if candidates else {n.name}
        if candidates and not _convex(dag, merged):
            # join the first group that stays convex, else start a new one
            merged = {n.name}
            for c in sorted(candidates):
                if _convex(dag, members[c] | {n.name}):
                    merged = members[c] | {n.name}
                    candidates = {c}
                    break
            else:
                candidates = set()
        gid = min(candidates) if candidates else next(ids)
        for c in candidates:
            members.pop(c)
        members[gid] = merged
        for x in merged:
            group[x] = gid
    count = fused = 0
    for gid, ms in sorted(members.items()):
        if len(ms) < 2:
            continue
        _rewrite(g, [x for x in g.nodes if x in ms])
        count += 1
        fused += len(ms)
    order(g)
    return {"fused groups": count, "fused nodes": fused}


def _convex(dag: nx.DiGraph, s: set) -> bool:
    """No path leaves s and comes back: contracting s into one node keeps the step acyclic."""
    out = set()
    for x in s:
        out |= nx.descendants(dag, x)
    out -= s
    return not any(s & nx.descendants(dag, y) for y in out)


def _rewrite(g: Graph, ms: list):
    inside = set(ms)
    W = g.nodes[ms[0]].ty.feat
    users = g.consumers()
    outside_reads = {x: False for x in ms}
    for n in g.nodes.values():
        for a in n.args:
            if a.node in inside and (n.name not in inside or a.mode != "step" or a.delay != 0):
                outside_reads[a.node] = True
        if n.init is not None and n.init.node in inside:
            outside_reads[n.init.node] = True
    for x in kept(g) | {op.node for op in g.outputs.values()}:
        if x in inside:
            outside_reads[x] = True
    outs = [x for x in ms if outside_reads[x]]
    ins, specs, masks, eqns, index = [], [], set(), [], {}

    def use(op: Operand, scalar: bool, mask: bool) -> int:
        """One input per operand read, however many of its column blocks the group reads."""
        if op not in index:
            index[op] = len(ins)
            ins.append(op)
            specs.append(("s",) if scalar else ("v",))
            if mask:
                masks.add(index[op])
        return index[op]

    absorbed = set()
    for x in ms:
        n = g.nodes[x]
        sig = REGISTRY[n.op]
        args = []
        for a, arg in zip(n.args, sig.args):
            src = g.nodes[a.node]
            if a.node in inside and a.mode == "step" and a.delay == 0:
                args.append(f"e{ms.index(a.node)}")
            elif src.op == "const" and src.ty.dtype == "f":
                args.append(float(src.attrs["value"]))
            elif (src.op == "take" and a.mode == "step" and src.args[0].mode == "step" and src.ty.feat == W
                  and (a.delay == 0 or g.nodes[src.args[0].node].axis is not None)):
                inner = src.args[0]
                col = int(src.attrs["col"])
                k = use(Operand(inner.node, inner.delay + a.delay), False, False)
                args.append(f"i{k}@{col // W}" + (f"+{col % W}" if col % W else ""))
                absorbed.add(src.name)
            else:
                scalar = src.ty.feat == 1 and W != 1
                args.append(f"i{use(a, scalar, arg.kind == 'mask')}")
        eqns.append((n.op, tuple(args)))
    name = f"{shown(ms[-1])}#fused"
    k = 2
    while name in g.nodes:
        name, k = f"{shown(ms[-1])}#fused{k}", k + 1
    first = g.nodes[outs[0]]
    g.add(Node(name, "fused", list(ins), {"group": Fused(tuple(specs), tuple(eqns), tuple(ms.index(o) for o in outs)),
                                          "members": outs, "masks": frozenset(masks)},
               loc=g.nodes[ms[-1]].loc, axis=first.axis, ty=first.ty))
    for i, o in enumerate(outs):
        node = g.nodes[o]
        node.op, node.args, node.attrs = "member", [Operand(name)], {"index": i}
    for x in ms:
        if x not in outs:
            del g.nodes[x]
    users = g.consumers()
    for t in absorbed:
        if t in g.nodes and not users[t] and t not in kept(g):
            del g.nodes[t]
