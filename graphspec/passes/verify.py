"""The IR verifier: what every pass must leave true (in the spirit of JAX's check_jaxpr)."""
from __future__ import annotations

from ..graph import Graph, operand_ty
from ..ops import ANY, REGISTRY, ShapeError
from .analysis import loops


class IRError(AssertionError):
    """A pass left the IR broken: a bug of the compiler, not of the spec."""


def verify(g: Graph, after: str = "") -> None:
    """Check the IR: every read names a node that exists and, if it is read at the same step,
    comes earlier in g.nodes (IR order is evaluation order); each node's op is a registry op,
    a leaf, a fused node or a member of one; operands have the dtypes the op takes, and the
    shape rule gives the node's type again; a read at t-k or t+k is of a node on the reader's
    own axis; the recurrences are loops over one axis running one way; a fused node's members
    read it and nothing else, and its kernel refers only to its own inputs."""
    where = f" (after pass {after})" if after else ""
    seen = set()

    def fail(msg):
        raise IRError(f"{msg}{where}")

    for n in g.nodes.values():
        for a in n.args + ([n.init] if n.init is not None else []):
            if a.node not in g.nodes:
                fail(f"{n.name} reads {a.node}, which does not exist")
            same_step = a.mode == "step" and a.delay == 0
            if (same_step or a is n.init) and a.node not in seen and not g.nodes[a.node].is_leaf:
                fail(f"{n.name} reads {a.node} before it is defined")
            if a.mode == "step" and a.delay != 0:
                src = g.nodes[a.node]
                if src.axis is None or src.axis != n.axis:
                    fail(f"{n.name} reads {a} across axes ({src.axis} from {n.axis})")
        seen.add(n.name)
        if n.is_leaf:
            continue
        if n.op == "member":
            if len(n.args) != 1 or g.nodes[n.args[0].node].op != "fused":
                fail(f"member {n.name} must read exactly its fused node")
            continue
        if n.op == "fused":
            _check_fused(g, n, fail)
            continue
        sig = REGISTRY.get(n.op)
        if sig is None:
            fail(f"{n.name}: unknown op {n.op}")
        if not sig.variadic and len(n.args) != len(sig.args):
            fail(f"{n.name}: {n.op} takes {len(sig.args)} operands, has {len(n.args)}")
        ts = [operand_ty(g, a) for a in n.args]
        want = sig.inputs[0] * len(ts) if sig.variadic else sig.inputs
        for a, t, d in zip(n.args, ts, want):
            if t is None or t.dtype != d:
                fail(f"{n.name}: operand {a} has type {t}, {n.op} takes '{d}'")
        try:
            ty = sig.shape(ts, dict(n.attrs))
        except ShapeError as e:
            fail(f"{n.name}: {e}")
        if n.ty is None or (ty != n.ty and ANY not in (ty.feat, n.ty.feat)):
            fail(f"{n.name}: type {n.ty}, but {n.op} of its operands gives {ty}")
    found, _ = loops(g)
    for loop in found:
        if {g.nodes[x].axis for x in loop.nodes} != {loop.axis}:
            fail(f"loop {loop.nodes} spans more than axis {loop.axis}")


def _check_fused(g, n, fail):
    grp = n.attrs.get("group")
    if grp is None or len(grp.ins) != len(n.args):
        fail(f"{n.name}: its kernel has {len(grp.ins) if grp else 0} inputs, the node {len(n.args)}")
    for i, (op, args) in enumerate(grp.eqns):
        sig = REGISTRY.get(op)
        if sig is None or sig.ew is None:
            fail(f"{n.name}: equation {i} uses {op}, which has no elementwise maths")
        if len(args) != len(sig.args):
            fail(f"{n.name}: equation {i}: {op} takes {len(sig.args)} operands, has {len(args)}")
        for x in args:
            if isinstance(x, str) and not ((x[0] == "i" and int(x[1:].split("@")[0]) < len(grp.ins))
                                           or (x[0] == "e" and int(x[1:]) < i)):
                fail(f"{n.name}: equation {i} reads {x}, which is not defined before it")
    members = n.attrs.get("members", [])
    if len(members) != len(grp.outs) or not members:
        fail(f"{n.name}: {len(grp.outs)} kernel outputs for members {members}")
    for m in members:
        if m not in g.nodes or g.nodes[m].op != "member" or g.nodes[m].args[0].node != n.name:
            fail(f"{n.name}: member {m} is not a member node of it")


def verify_plan(plan) -> None:
    """Check the emitted plan: every region an equation reads forward was written before it --
    by an earlier equation, by set_batch (inputs, the zeroed initial slots, token fills) -- or is
    a param, constant or table; every equation writes inside its own buffers."""
    import bisect
    done = {"f": [], "i": []}

    def mark(dt, a, z):
        iv = done[dt]
        iv.append((a, z))
        iv.sort()
        merged = []
        for x, y in iv:
            if merged and x <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(y, merged[-1][1]))
            else:
                merged.append((x, y))
        done[dt] = merged

    def covered(dt, a, z):
        iv = done[dt]
        k = bisect.bisect_right(iv, (a, float("inf"))) - 1
        return k >= 0 and iv[k][0] <= a and iv[k][1] >= z

    mark("f", 0, plan.value_start)
    mark("i", 0, plan.ivalue_start)
    for b in plan.buffers.values():
        if b.kind == "input":
            mark(b.dtype, b.offset, b.offset + b.size)
        elif len(b.shape) == 3 and (b.pre or b.post):
            slot = b.shape[1] * b.shape[2]
            mark(b.dtype, b.offset, b.offset + b.pre * slot)
            mark(b.dtype, b.offset + (b.shape[0] - b.post) * slot, b.offset + b.size)
    for off, size, _ in plan.fills:
        mark("i", off, off + size)
    ends = {b.name: (b.offset, b.offset + b.size) for b in plan.buffers.values()}
    for i, e in enumerate(plan.eqns):
        if e.nofwd:
            continue
        for v in e.ins:
            if not covered(v.dtype, v.offset, v.offset + v.rows * v.cols):
                raise IRError(f"plan equation {i} ({e}) reads {v} before anything wrote it")
        for v in list(e.outs) + ([e.scratch] if e.scratch is not None else []):
            a, z = ends[v.buf]
            if not a <= v.offset and v.offset + v.rows * v.cols <= z:
                raise IRError(f"plan equation {i} ({e}) writes {v} outside its buffer")
            mark(v.dtype, v.offset, v.offset + v.rows * v.cols)
