"""assign: a gradient written by one equation alone is stored, not added, and needs no zeroing.

Backward kernels add each input's gradient into G (dx += ...), so the executor zeroes G before
every backward: for the LSTM at B=16/H=512, 18 MB a step, 2.2-2.5 ms right after a forward
(0.65 ms alone: the stores evict the forward's dirty lines and read every line they write). Most
of it is written once: the gates' gradient, by the cell of their step only; dW, by the deferred
GEMM only. Such a write can store, and the executor then leaves its range alone
(runtime/executor.py `_assigned`).

A registry op says which operands' gradients its backward can store (OpSig.stores: a GEMM's dW
and dX, tanh's and sigmoid's dx, any generated elementwise kernel's operand of the output's
shape); a fused group writes input k whole when it reads every column block of it, a row per
output row (Fused.covers).
"""
from __future__ import annotations

from ..graph import Graph
from ..ops import REGISTRY


def writes_whole(e, k: int) -> bool:
    """Does equation e's backward write every element of input k's gradient (when it writes it)?"""
    v = e.ins[k]
    if e.op == "fused":
        return v.rows == e.out.rows and e.group.covers(k, v.cols, e.out.cols)
    sig = REGISTRY.get(e.op)
    if sig is None or not sig.stores(k):
        return False
    # an elementwise operand that broadcasts (fewer rows, one column) gets sums, not stores
    return sig.ew is None or (v.rows, v.cols) == (e.out.rows, e.out.cols)


def run(g: Graph, ctx) -> dict:
    """Contract: sets Eqn.assign on ctx.plan's equations: input k of e is marked only when e
    needs its gradient, writes all of it (writes_whole), its buffer is not a sparse param, and
    no other equation's gradient write overlaps its range of G. The IR, the equations and their
    order are unchanged."""
    plan = ctx.plan
    writes = []                     # (start, end, equation, input) of every gradient write
    for i, e in enumerate(plan.eqns):
        for k, (v, need) in enumerate(zip(e.ins, e.need or ())):
            if need and v.rows * v.cols:
                writes.append((v.offset, v.offset + v.rows * v.cols, i, k))
    shared, end, holder = set(), -1, None
    for a, z, i, k in sorted(writes):
        # a write starting before the furthest end so far overlaps the write that reaches it
        if a < end:
            shared |= {(i, k), holder}
        if z > end:
            end, holder = z, (i, k)
    marked = 0
    for i, e in enumerate(plan.eqns):
        assign = tuple(bool(need) and (i, k) not in shared and not plan.buffers[e.ins[k].buf].sparse
                       and writes_whole(e, k) for k, need in enumerate(e.need or ()))
        e.assign = assign if any(assign) else ()
        marked += sum(assign)
    return {"stored gradient writes": marked}
