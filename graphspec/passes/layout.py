"""Layout: every value gets a buffer at a fixed offset of F (floats) or I (token ids)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import Loc, SpecError
from ..graph import Graph, Node
from ..ops import REGISTRY, MatTy
from ..plan import Buffer, Plan, View
from .analysis import batched

MAX_BYTES = 8 << 30        # params + activations + gradients; beyond this a spec is a mistake
DEFAULT_TABLES = {"tree": lambda V: (V, 1 + 2 * 40), "unigram": lambda V: (100_000, 1)}


@dataclass
class Layout:
    plan: Plan
    pre: dict                   # node -> slots before t=0 (reads at t-k)
    post: dict                  # node -> slots after t=T-1 (reads at t+k)
    rows: dict                  # node -> has a row per batch row
    shapes: dict = field(default_factory=dict)  # node -> buffer shape
    alias: dict = field(default_factory=dict)   # node -> the node whose buffer it writes in place
    buf: dict = field(default_factory=dict)     # node -> Buffer
    foff: int = 0
    ioff: int = 0

    def scratch(self, name: str, dtype: str, rows: int, cols: int) -> View:
        if dtype == "f":
            off, self.foff = self.foff, self.foff + rows * cols
        else:
            off, self.ioff = self.ioff, self.ioff + rows * cols
        self.plan.buffers[name] = Buffer(name, "scratch", dtype, (rows, cols), off)
        return View(dtype, off, rows, cols, name)


def has_buffer(n: Node) -> bool:
    """A fused node writes its members' buffers and has none of its own."""
    return n.op != "fused"


def run(g: Graph, ctx) -> dict:
    """Contract: ctx.layout holds a Plan with a Buffer for every node that has one: learnable
    params first (one contiguous block), fixed params, float constants, then inputs and values;
    tables and token ids in I. A value on an axis is time-major [pre + T + post, rows, cols].
    Refuses (SpecError) dims left unbound and plans over the memory limit. The IR is unchanged."""
    pre = {n: 0 for n in g.nodes}
    post = {n: 0 for n in g.nodes}
    for n in g.nodes.values():
        for a in n.args:
            if a.mode == "step" and a.delay > 0:
                pre[a.node] = max(pre[a.node], a.delay)
            elif a.mode == "step" and a.delay < 0:
                post[a.node] = max(post[a.node], -a.delay)
    lay = Layout(Plan(g.name, ctx.batch, dict(ctx.lengths)), pre, post, batched(g))
    need = _check_memory(g, ctx, lay)       # also fills lay.shapes
    if ctx.fuse:
        _in_place(g, lay)
    _allocate(g, lay)
    ctx.layout = lay
    shared = sum(math.prod(lay.shapes[n]) for n in lay.alias) * ctx.dtype_bytes * 2
    return {"memory bytes": need, "in-place values": len(lay.alias), "bytes shared in place": shared}


def _in_place(g: Graph, lay: Layout):
    """y = affine(W, x, a) (any op with `onto`) accumulates onto a copy of a; when a is read by nothing else (and is
    no output), y can take a's buffer and the GEMM accumulate onto a itself: an LSTM's gates
    z(t) = (b + W x(t)) + R h(t-1) then live in the buffer of the hoisted b + W x. G has F's
    layout, so a's gradient is y's, with no copy (the emitter drops the add of dy into da)."""
    from .analysis import kept
    users = g.consumers()
    outs = kept(g)
    taken = set()
    for n in g.nodes.values():
        sig = REGISTRY.get(n.op)
        if sig is None or sig.onto < 0 or n.init is not None:
            continue
        a = n.args[sig.onto]
        src = g.nodes[a.node]
        if (a.mode == "step" and a.delay == 0 and not src.is_leaf and src.op not in ("member", "fused")
                and users[src.name] == [n.name] and src.name not in outs and src.name not in taken
                and src.init is None and lay.shapes.get(src.name) == lay.shapes.get(n.name)
                and lay.pre[src.name] == lay.pre[n.name] == 0 and lay.post[src.name] == lay.post[n.name] == 0
                and src.ty.dtype == "f"):
            lay.alias[n.name] = src.name
            taken.add(src.name)


def shape(g: Graph, ctx, lay: Layout, n: Node) -> tuple:
    """Buffer shape: (slots, rows per slot, cols) for axis values, (rows, cols) otherwise."""
    ty = n.ty
    if n.op == "param":
        s = n.attrs["shape"]
        return (1, 1) if not s else (1, s[0]) if len(s) == 1 else (s[0], s[1])
    if n.op == "const":
        return (1, 1)
    if n.op == "input" and n.attrs.get("kind") == "table":
        V = next((v for k, v in g.dims.items() if k == "V" and isinstance(v, int)), 1000)
        return tuple(ctx.tables.get(n.attrs["field"], DEFAULT_TABLES[n.attrs["field"]](V)))
    if n.op in REGISTRY and REGISTRY[n.op].loss:
        return (1, 1)
    if isinstance(ty, MatTy):                   # a matrix value: packed weights
        return (ty.seq_rows, ty.feat)
    cols = ty.feat
    if n.op == "input" and n.attrs.get("kind") == "tokens" and n.attrs.get("width"):
        cols = n.attrs["width"]
    seq = ctx.lengths[ty.seq] if ty.seq else 1
    rows = seq * (ctx.batch if lay.rows[n.name] else 1)
    if n.axis is not None:
        return (lay.pre[n.name] + ctx.lengths[n.axis] + lay.post[n.name], rows, cols)
    return (rows, cols)


def _where(g: Graph) -> Loc:
    return g.source.where(("dims",)) if getattr(g, "source", None) else Loc("<spec>", 1, 1)


def _check_memory(g: Graph, ctx, lay: Layout) -> int:
    total = 0
    for n in g.nodes.values():
        if not has_buffer(n):
            continue
        dims = n.attrs["shape"] if n.op == "param" else [] if n.ty is None else [n.ty.feat]
        if any(not isinstance(s, int) for s in dims):
            raise SpecError.at(_where(g), f"dim of '{n.name}' is not bound; give its size or bind it from data")
        lay.shapes[n.name] = shape(g, ctx, lay, n)
        total += math.prod(lay.shapes[n.name])
    need = total * ctx.dtype_bytes * 2
    if need > MAX_BYTES:
        _blame_delay(g, ctx, lay, need)
        sizes = ", ".join(f"{k}={v}" for k, v in g.dims.items())
        lengths = f" and lengths {', '.join(f'{k}={v}' for k, v in ctx.lengths.items())}" if ctx.lengths else ""
        raise SpecError.at(_where(g), f"these dims ({sizes}) with batch {ctx.batch}{lengths} need "
                                      f"{need / 2**30:.1f} GiB for values and gradients; the limit is "
                                      f"{MAX_BYTES / 2**30:.0f} GiB: use smaller dims or a shorter length")
    return need


def _blame_delay(g: Graph, ctx, lay: Layout, need: int):
    """Over the limit only because of the slots a far delay keeps (h[t-100000000])? Say so there."""
    slots = {n: lay.pre[n] + lay.post[n] for n in lay.shapes if len(lay.shapes[n]) == 3}
    extra = sum(slots[n] * lay.shapes[n][1] * lay.shapes[n][2] for n in slots) * ctx.dtype_bytes * 2
    if not slots or need - extra > MAX_BYTES:
        return
    name = max(slots, key=slots.get)
    delay = lay.pre[name] if lay.pre[name] >= lay.post[name] else -lay.post[name]
    loc = g.delay_at.get((name, delay)) or g.nodes[name].loc or _where(g)
    read = f"{name.split('#')[0]}[t{'-' if delay > 0 else '+'}{abs(delay)}]"
    raise SpecError.at(loc, f"a delay of {abs(delay)} steps ({read}) needs {need / 2**30:.1f} GiB for values and "
                            f"gradients; the limit is {MAX_BYTES / 2**30:.0f} GiB: read fewer steps back")


def _allocate(g: Graph, lay: Layout):
    plan = lay.plan
    nodes = [n for n in g.nodes.values() if has_buffer(n)]
    first = [n for learn in (True, False) for n in nodes
             if n.op == "param" and bool(n.attrs.get("learn", True)) == learn]
    first += [n for n in nodes if n.op == "const" and n.ty.dtype == "f"]
    fvalues = [n for n in nodes if n.op not in ("param", "const") and n.ty.dtype == "f"]
    tables = [n for n in nodes if n.op == "input" and n.attrs.get("kind") == "table"]
    ivalues = [n for n in nodes if n.op not in ("param", "const") and n.ty.dtype == "i" and n not in tables]
    off = 0
    for n in first:
        off = _place(g, lay, n, "f", off)
        if n.op == "param" and n.attrs.get("learn", True):
            plan.nlearn = off
    plan.value_start = off
    for n in fvalues:
        off = _place(g, lay, n, "f", off)
    lay.foff = off
    ioff = 0
    for n in tables:
        ioff = _place(g, lay, n, "i", ioff)
    plan.ivalue_start = ioff
    for n in ivalues:
        ioff = _place(g, lay, n, "i", ioff)
    lay.ioff = ioff


def _place(g: Graph, lay: Layout, n: Node, dtype: str, off: int) -> int:
    kind = {"param": "param", "const": "const", "input": "input"}.get(n.op, "value")
    shared = lay.alias.get(n.name)
    b = Buffer(n.name, kind, dtype, lay.shapes[n.name], lay.buf[shared].offset if shared else off,
               learn=n.op == "param" and bool(n.attrs.get("learn", True)),
               init=n.attrs.get("init") if n.op == "param" else n.attrs.get("value"),
               pre=lay.pre.get(n.name, 0), post=lay.post.get(n.name, 0), node=n.name)
    if n.op == "input":
        b.fields = {"kind": n.attrs.get("kind"), "field": n.attrs.get("field"), "axis": n.axis}
    lay.plan.buffers[n.name] = b
    lay.buf[n.name] = b
    return off if shared else off + b.size
