"""Typed step graph -> flat plan: the pass pipeline of graphspec/passes/ for given lengths and
batch size. `graphspec compile SPEC` prints what each pass did (plan.stats)."""
from __future__ import annotations

from typing import Optional

from .graph import Graph
from .passes import Ctx, run
from .passes.layout import MAX_BYTES  # noqa: F401  (the memory limit, for graphspec.limits)
from .plan import Plan


def compile_graph(g: Graph, lengths: Optional[dict] = None, batch: int = 1, training: bool = True,
                  tables: Optional[dict] = None, dtype_bytes: int = 4, fuse: bool = True,
                  check: bool = False, pack_rows: Optional[int] = None) -> Plan:
    """Compile a typed step graph (graphspec.load) for concrete lengths and batch size.
    fuse=False keeps every node as written (the reference the fused forms are tested against);
    check=True verifies the IR after every pass (the tests do); pack_rows: the most rows per step
    a product reads its weight packed for (None: any; the runtime sets it from its GEMM path)."""
    ctx = make_ctx(g, lengths, batch, training, tables, dtype_bytes, fuse)
    ctx.pack_rows = pack_rows
    run(g, ctx, check=check)
    return ctx.plan


def make_ctx(g: Graph, lengths: Optional[dict] = None, batch: int = 1, training: bool = True,
             tables: Optional[dict] = None, dtype_bytes: int = 4, fuse: bool = True) -> Ctx:
    from .limits import check_plan_size
    lengths = lengths or {}
    check_plan_size(g, lengths, batch, dtype_bytes)          # before any pass: refuse absurd sizes cheaply
    default = g.train.get("len") if isinstance(g.train.get("len"), dict) else {}
    T = {a: int(lengths.get(a, default.get(a, 10))) for a in g.axes}
    return Ctx(T, int(batch), training, dict(tables or {}), dtype_bytes, fuse)


def memory_estimate(plan: Plan, dtype_bytes: int = 4) -> int:
    """Bytes of values, inputs and scratch, and their gradients (the activation memory)."""
    return (plan.fsize - plan.value_start) * dtype_bytes * 2 + (plan.isize - plan.ivalue_start) * 8
