"""The compiler: a pipeline of passes over one IR, the typed step graph (graphspec/graph.py).

Each pass is a function `(graph, ctx) -> stats` that rewrites the graph in place and states its
contract in its docstring; `PIPELINE` is their order. After any pass the IR can be checked
(`verify`, in the spirit of JAX's check_jaxpr: tests run it after every pass) and printed
(`print_ir`; `graphspec compile SPEC --after PASS`). The last four passes lower the IR to the
plan (graphspec/plan.py), the contract with runtime/.

    order        IR order = evaluation order of same-step reads
    cross_axis   last(x) -> lastof (each sequence's own last step)
    dce          drop what reaches no loss and no output
    reassociate  (b + W h[t-1]) + U x -> (b + U x) + W h[t-1]: the part free of the recurrence is hoisted
    carry        a backward loop over a padded axis keeps its initial state through the padding
    affine       a matmul read only by an add -> affine (one GEMM accumulating onto the addend)
    fold         W E[x] + b -> T[x], T = E W^T + b, where the table has fewer rows than the lookups
    pack         a product inside a loop reads its weight packed once per pass, not per step
    fuse         connected elementwise nodes of one loop step (or hoisted together) -> one fused kernel
    layout       slots before/after each axis, the memory check, buffers at fixed offsets
    emit         loops unrolled into per-step equations, the rest hoisted; deferred weight gradients
    assign       the first write of a gradient, if whole, stores instead of adding (G not zeroed there)
    inplace      a fused cell's sigmoid/tanh of a gate overwrites the gate's input; backward reads it
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

from ..graph import Graph
from . import affine, assign, carry, cross_axis, dce, emit, fold, fuse, inplace, layout, pack, reassociate
from .analysis import order as _order
from .printer import print_ir
from .verify import verify, verify_plan


@dataclass
class Ctx:
    """What a compilation is for, and what the lowering passes leave for the next."""
    lengths: dict                   # axis -> T
    batch: int
    training: bool = True
    tables: dict = field(default_factory=dict)       # table name -> shape
    dtype_bytes: int = 4
    fuse: bool = True               # False: every node as written (the reference fusions are tested against)
    pack_rows: Optional[int] = None  # most rows per step a product packs its weight for (None: any)
    stats: dict = field(default_factory=dict)
    layout: Optional[object] = None                   # set by the layout pass
    plan: Optional[object] = None                     # set by the emit pass


def order(g: Graph, ctx: Ctx) -> dict:
    """Contract: afterwards every same-step read (delay 0) and every initial value refers to a
    node earlier in g.nodes. Changes no node."""
    _order(g)
    return {}


PIPELINE = [
    ("order", order),
    ("cross_axis", cross_axis.run),
    ("dce", dce.run),
    ("reassociate", reassociate.run),
    ("carry", carry.run),
    ("affine", affine.run),
    ("fold", fold.run),
    ("pack", pack.run),
    ("fuse", fuse.run),
    ("layout", layout.run),
    ("emit", emit.run),
    ("assign", assign.run),
    ("inplace", inplace.run),
]
PASSES = [name for name, _ in PIPELINE]
# passes that rewrite the IR (the last four lower it and leave it as it is)
REWRITES = PASSES[:-4]


def run(g: Graph, ctx: Ctx, until: Optional[str] = None, check: bool = False) -> Graph:
    """Run the pipeline on a copy of g (the step graph stays as the front end built it), up to and
    including `until`; `check` verifies the IR after every pass. Returns the rewritten graph."""
    g = copy.deepcopy(g)
    ctx.stats.setdefault("step nodes", sum(not n.is_leaf for n in g.nodes.values()))
    for name, fn in PIPELINE:
        stats = fn(g, ctx) or {}
        ctx.stats.update(stats)
        if check and name in REWRITES:
            verify(g, after=name)
        if check and name in ("emit", "assign", "inplace"):
            verify_plan(ctx.plan)
        if name == until:
            break
    return g


__all__ = ["Ctx", "PIPELINE", "PASSES", "run", "verify", "print_ir"]
