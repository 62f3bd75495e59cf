"""Recurrent products over weights packed once per pass."""
from __future__ import annotations

from ..graph import Graph, Node, Operand
from ..ops import REGISTRY
from .analysis import loops, order

PACKED = {"matmul": "matmul_packed", "affine": "affine_packed"}


def run(g: Graph, ctx) -> dict:
    """A matmul or affine inside a loop multiplies a few rows by the same weight W at every
    step: it reads W through `W#packed = pack(W)` instead, computed once per forward before the
    loops (the runtime's micro-kernel reads W in the layout it wants, with no repacking per
    step, and one row takes a GEMV-like path). Its weight gradient stays one GEMM over all steps.
    With ctx.pack_rows set, only for at most that many rows per step (the batch): beyond it the
    BLAS GEMM is faster on that GEMM path (runtime/cpu.py PACK_ROWS).
    Contract: every packed op computes what its unpacked op computed; W's pack is static (no
    axis) and reads only W."""
    if not ctx.fuse or (ctx.pack_rows is not None and ctx.batch > ctx.pack_rows):
        return {"packed weights": 0}
    _, loop_of = loops(g)
    made = {}
    for n in list(g.nodes.values()):
        if n.op not in PACKED or n.name not in loop_of:
            continue
        w, x = n.args[0], n.args[1]
        src = g.nodes[w.node]
        if src.op != "param" or w.mode != "step" or x.mode != "step" or g.nodes[x.node].axis != n.axis:
            continue
        if w.node not in made:
            p = g.add(Node(f"{w.node}#packed", "pack", [Operand(w.node)], loc=src.loc))
            p.ty = REGISTRY["pack"].shape([src.ty], {})
            made[w.node] = p.name
        n.op = PACKED[n.op]
        n.args = [n.args[0], Operand(made[w.node])] + n.args[1:]
    order(g)
    return {"packed weights": len(made)}
