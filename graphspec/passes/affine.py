"""Fusing a matmul into the add that reads it."""
from __future__ import annotations

from ..graph import Graph
from ..ops import MatTy
from .analysis import batched, kept, loops


def run(g: Graph, ctx) -> dict:
    """add(a, matmul(W, x)) -> affine(W, x, a) where the matmul has no other reader and both
    make the same rows in the same loop (or are both hoisted): y = W x + a is one GEMM
    accumulating onto a copy of a, with no temporary and no add entry. Fusing a hoisted U x
    into a per-step add would undo the hoisting, so the placement must match. a must have y's
    columns (its rows may repeat: a bias row, or one row per sequence).
    Contract: every affine computes what its add computed; the matmul node is gone."""
    if not ctx.fuse:
        return {"fused affine": 0}
    _, loop_of = loops(g)
    rows = batched(g)
    users = g.consumers()
    outs = kept(g)
    count = 0
    for n in list(g.nodes.values()):
        if n.op != "add" or n.ty is None or n.ty.dtype != "f":
            continue
        for k in (1, 0):
            q, p = n.args[k], n.args[1 - k]
            m, other = g.nodes[q.node], g.nodes[p.node]
            if (m.op == "matmul" and q.mode == "step" and q.delay == 0 and len(users[m.name]) == 1
                    and m.name not in outs and m.init is None
                    and loop_of.get(m.name) == loop_of.get(n.name)
                    and m.axis == n.axis and m.ty == n.ty and rows[m.name] == rows[n.name]
                    and other.ty is not None and not isinstance(other.ty, MatTy)
                    and other.ty.feat == n.ty.feat and other.ty.seq == n.ty.seq):
                n.op, n.args = "affine", [m.args[0], m.args[1], p]
                del g.nodes[m.name]
                count += 1
                break
    return {"fused affine": count}
