"""inplace: a fused cell's gate activations overwrite their pre-activations, and backward reads
them there instead of computing them again.

A fused kernel's backward recomputes its equations before it differentiates them (docs/plan.md):
for the LSTM cell three sigmoids and two tanh, most of its work. The derivative of sigmoid, tanh
and exp needs only their result y (y (1 - y), 1 - y^2, y), and the gates' pre-activation z, the
product's output, is read by no one after the cell. So the forward writes y over the block of z
it came from, and the backward reads it there: no more memory, and the LSTM cell's backward
evaluates one tanh instead of five transcendental functions (the GRU's: none instead of three).
"""
from __future__ import annotations

import ast
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import replace
from functools import lru_cache

from ..graph import Graph
from ..ops import REGISTRY


@lru_cache(maxsize=None)
def _names(expr: str) -> frozenset:
    return frozenset(t.id for t in ast.walk(ast.parse(expr, mode="eval")) if isinstance(t, ast.Name))


def from_result(op: str) -> bool:
    """Is op unary, with a derivative in terms of its result and dy alone (not its operand)?"""
    sig = REGISTRY.get(op)
    if sig is None or sig.ew is None or len(sig.args) != 1:
        return False
    x = sig.args[0].name
    return x in sig.ew.grads and x not in _names(sig.ew.grads[x])


def needed(group, saves: dict) -> frozenset:
    """What the backward of a fused group reads of the forward's values, given `saves` (equation
    -> the block holding its result): 'e3' for equation 3's result, (input, block, column) for
    a block of an input. The derivatives name operands and results; a result not saved is
    recomputed from its operands."""
    return _needed(group, frozenset(saves.items()))


@lru_cache(maxsize=4096)
def _needed(group, saves: frozenset) -> frozenset:
    """needed(), once per group and saves: a loop's T steps share their group."""
    saves = dict(saves)

    def key(x):
        return x if x[0] == "e" else group.block(x)
    need = set()
    for i, (op, args) in enumerate(group.eqns):
        sig = REGISTRY[op]
        names = {a.name: x for a, x in zip(sig.args, args) if not isinstance(x, float)}
        for a in sig.args:
            if a.name in sig.ew.grads and a.name in names:
                for n in _names(sig.ew.grads[a.name]):
                    if n == "y":
                        need.add(f"e{i}")
                    elif n in names:
                        need.add(key(names[n]))
    for i in range(len(group.eqns) - 1, -1, -1):
        if f"e{i}" in need and i not in saves:
            need |= {key(x) for x in group.eqns[i][1] if not isinstance(x, float)}
    return frozenset(need)


def _cone(group, n: int) -> list:
    """The input blocks equation n's result is computed from, nearest first."""
    out, todo, seen = [], [n], set()
    while todo:
        for x in group.eqns[todo.pop(0)][1]:
            if isinstance(x, float) or x in seen:
                continue
            seen.add(x)
            if x[0] == "e":
                todo.append(int(x[1:]))
            else:
                out.append(group.block(x))
    return out


def _span(v) -> tuple:
    return v.offset, v.offset + v.rows * v.cols


def _overlap(v, w) -> bool:
    (a, z), (x, y) = _span(v), _span(w)
    return a < y and x < z


class _Users:
    """Who reads and writes each region of F: (equation, input k or -1 for an output, view).
    `around(v)` finds those overlapping view v without a scan of its buffer's every step (a
    loop of T steps reads T slots of one buffer: a scan per equation made compiling the LSTM
    at T=1000 take 3.7 s instead of 0.5)."""

    def __init__(self, plan):
        by = defaultdict(list)
        for i, e in enumerate(plan.eqns):
            by_k = [(i, k, v) for k, v in enumerate(e.ins)] + [(i, -1, v) for v in e.outs]
            for u in by_k:
                by[u[2].buf].append(u)
        self.at, self.long = {}, {}
        for buf, us in by.items():
            us.sort(key=lambda u: u[2].offset)
            self.at[buf] = ([u[2].offset for u in us], us)
            us = sorted(us, key=lambda u: u[2].rows * u[2].cols)
            self.long[buf] = ([u[2].rows * u[2].cols for u in us], us)

    def around(self, v) -> list:
        a, z = _span(v)
        n = z - a
        starts, us = self.at[v.buf]
        near = us[bisect_left(starts, a - n + 1):bisect_left(starts, z)]     # those no longer than v
        sizes, by_size = self.long[v.buf]
        longer = by_size[bisect_right(sizes, n):]
        return [u for u in near if u[2].rows * u[2].cols <= n and _overlap(u[2], v)] + \
            [u for u in longer if _overlap(u[2], v)]


def run(g: Graph, ctx) -> dict:
    """Contract: sets Fused.saves on fused equations of ctx.plan. Equation n's result is saved over
    a block of input k when n is a unary op whose derivative needs only its result (sigmoid,
    tanh, exp) and the backward still reads it (`needed`); the block is one of n's operands or
    their operands', a whole W-wide block of a value read a row per output row, that no
    equation of the group after n reads, whose columns no other input reads, and that the
    backward no longer needs given the saves; and the plan reads the input's values nowhere
    after the group (but other columns, by fused groups), and before it only where the backward
    never reads them again (_reads_again: the output of a product, a lookup or a fused group, a
    GEMM's addend, an add's operands); it is no output of the plan. The IR, the equations,
    their order and what each computes are unchanged."""
    plan = ctx.plan
    users = _Users(plan)
    shown = {buf for buf, _ in plan.outputs.values()}
    saved = 0
    for i, e in enumerate(plan.eqns):
        if e.op == "fused":
            saves = _plan_saves(plan, users, shown, i, e)
            if saves:
                e.group = replace(e.group, saves=tuple(sorted(saves.items())))
                saved += len(saves)
    return {"activations saved in place": saved}


def _plan_saves(plan, users, shown, i, e) -> dict:
    grp, W = e.group, e.out.cols
    last = defaultdict(int)             # block -> the last equation of the group reading it
    for n, (_, args) in enumerate(grp.eqns):
        for x in args:
            if isinstance(x, str) and x[0] == "i":
                last[grp.block(x)] = n
    written = [max((j for j, m, w in users.around(v) if m < 0 and j < i), default=-1) for v in e.ins]
    saves = {}
    for n, (op, _) in enumerate(grp.eqns):
        if not from_result(op) or f"e{n}" not in needed(grp, saves):
            continue
        # the block of the input written last first: the step's product output is in cache,
        # a hoisted value (the GRU's W x(t) + b) was written before the loop (GRU B=16/H=512: a
        # forward 5% slower when its gates went there)
        for k, b, c in sorted(_cone(grp, n), key=lambda blk: -written[blk[0]]):
            v = e.ins[k]
            if c or grp.ins[k][0] != "v" or v.rows != e.out.rows or last[k, b, c] > n or (k, b, c) in saves.values():
                continue
            # other inputs that are the same view must read other columns
            lo, hi = b * W, b * W + W
            if any(e.ins[k2] == v and (k2, b2) != (k, b) and b2 * W + c2 < hi and b2 * W + c2 + W > lo
                   for k2, b2, c2 in last):
                continue
            trial = {**saves, n: (k, b, c)}
            if (k, b, c) not in needed(grp, trial) and _alone(plan, users, shown, i, e, k, lo, hi):
                saves = trial
                break
    return {n: f"i{k}@{b}" if b else f"i{k}" for n, (k, b, _) in saves.items()}


def _alone(plan, users, shown, i, e, k, lo, hi) -> bool:
    """Is fused equation i the last to read columns [lo, hi) of input k's values (in its other
    inputs only as the same view; later fused equations may read its other columns), the
    equations before it never needing them again?"""
    v = e.ins[k]
    if plan.buffers[v.buf].kind != "value" or v.buf in shown or any(o.buf == v.buf for o in e.outs):
        return False
    for j, m, w in users.around(v):
        if j == i and m >= 0 and w == v and e.group.ins[m][0] == "v":
            continue
        other = plan.eqns[j]
        if j > i and m >= 0 and w == v and other.op == "fused" and _columns(other, m).isdisjoint(range(lo, hi)):
            continue
        if j > i or _reads_again(other.op, m):
            return False
    return True


def _reads_again(op: str, m: int) -> bool:
    """Does op's backward read the values of its operand m (m < 0: of its output)? A fused
    group's reads its inputs (it recomputes), an elementwise op's what its derivatives name,
    another op's unless OpSig.out_unread says."""
    if op == "fused":
        return m >= 0
    sig = REGISTRY[op]
    if sig.ew is not None:
        return ("y" if m < 0 else sig.args[m].name) in set().union(*map(_names, sig.ew.grads.values()))
    return not sig.out_unread or (m >= 0 and m != sig.onto)


def _columns(e, m) -> set:
    """The columns of input m that fused equation e reads (every column, if it reads a number a row)."""
    if e.group.ins[m][0] != "v":
        return set(range(e.ins[m].cols))
    W = e.out.cols
    return {b * W + c + j for k, b, c in e.group.blocks() if k == m for j in range(W)}
