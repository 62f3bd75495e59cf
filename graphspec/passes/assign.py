"""assign: the first write of a gradient stores it instead of adding, and G needs no zeroing there.

Backward kernels add each input's gradient into G (dx += ...), so the executor zeroes G before
every backward: for the LSTM at B=16/H=512, 18 MB a step, 2.2-2.5 ms right after a forward
(0.65 ms alone: the stores evict the forward's dirty lines and read every line they write). Most
of it is written by one equation first, which covers it whole: the gates' gradient, by the cell
of their step; dW, by the deferred GEMM; dh at every step, by the output layer's GEMM before the
recurrent products add theirs. That write can store, and the executor then leaves its range
alone (runtime/executor.py `_assigned`).

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
    every other gradient write that overlaps its range of G runs after it in backward (comes
    earlier in the plan; backward runs the plan last to first): the first write stores, the
    rest add onto it. The IR, the equations and their order are unchanged."""
    plan = ctx.plan
    writes = sorted((v.offset, v.offset + v.rows * v.cols, i, k) for i, e in enumerate(plan.eqns)
                    for k, (v, need) in enumerate(zip(e.ins, e.need or ())) if need and v.rows * v.cols)
    follows = set()                 # writes that another overlapping write runs before
    for n, (a, z, i, k) in enumerate(writes):
        for b, _, j, m in writes[n + 1:]:
            if b >= z:              # sorted by start: no later write starts inside [a, z)
                break
            if j >= i:
                follows.add((i, k))
            if i >= j:
                follows.add((j, m))
    marked = 0
    for i, e in enumerate(plan.eqns):
        assign = tuple(bool(need) and (i, k) not in follows and not plan.buffers[e.ins[k].buf].sparse
                       and writes_whole(e, k) for k, need in enumerate(e.need or ()))
        e.assign = assign if any(assign) else ()
        marked += sum(assign)
    return {"stored gradient writes": marked}
