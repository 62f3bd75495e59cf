"""The step graph: every node written once per time step, edges carrying delays.

This is the folded (cyclic) view of a model. `lang.py` builds it from a spec; `infer()` fills in
each node's axis and row type; `unroll.py` and `compile.py` take it from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import Loc, Problems, SpecError, did_you_mean
from .ops import ANY, REGISTRY, MatTy, ShapeError, Ty


@dataclass(frozen=True)
class Operand:
    """A read of node `node`: at step t - delay of its axis ('step'), or its final value
    ('last'), its first ('first'), or every step at once ('all', for attention)."""
    node: str
    delay: int = 0
    mode: str = "step"

    def __str__(self) -> str:
        if self.mode != "step":
            return f"{self.mode}({self.node})"
        if self.delay == 0:
            return self.node
        return f"{self.node}[t{'-' if self.delay > 0 else '+'}{abs(self.delay)}]"


# Node kinds that are not registry ops.
LEAVES = ("input", "param", "const")


@dataclass
class Node:
    name: str
    op: str                        # a registry op, or one of LEAVES
    args: list = field(default_factory=list)      # Operands
    attrs: dict = field(default_factory=dict)
    loc: Optional[Loc] = None
    init: Optional[Operand] = None  # value of delayed reads before the first step (None: zeros)
    axis: Optional[str] = None
    ty: Optional[Ty] = None
    declared_axis: Optional[str] = None

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAVES


@dataclass
class Call:
    """A block instance as the spec wrote it: errors inside the standard library's block files
    are reported here, at the call, in the words of the call."""
    loc: Loc
    block: str
    node: str                       # the node the user named ('dec', 'ctx')
    args: dict                      # argument name -> (Operand it is bound to, loc, text)
    library: bool                   # a block of graphspec/blocks (not the user's own file)


@dataclass
class Graph:
    name: str
    nodes: dict = field(default_factory=dict)       # name -> Node, in definition order
    losses: list = field(default_factory=list)      # node names
    outputs: dict = field(default_factory=dict)     # output name -> Operand
    masks: dict = field(default_factory=dict)       # axis -> mask node name
    axes: list = field(default_factory=list)
    dims: dict = field(default_factory=dict)
    user_nodes: list = field(default_factory=list)  # names the user wrote (for drawing)
    data: dict = field(default_factory=dict)        # the spec's data section
    train: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)     # user name -> Operand it stands for
    instances: dict = field(default_factory=dict)   # block instance prefix 'enc.fwd.' -> block file
    calls: dict = field(default_factory=dict)       # instance prefix -> Call: where the spec made it
    delay_at: dict = field(default_factory=dict)    # (node, delay) -> where the spec first reads it so

    def add(self, node: Node) -> Node:
        self.nodes[node.name] = node
        return node

    def params(self):
        return [n for n in self.nodes.values() if n.op == "param"]

    def consumers(self):
        out = {n: [] for n in self.nodes}
        for n in self.nodes.values():
            for a in n.args:
                out[a.node].append(n.name)
            if n.init is not None:
                out[n.init.node].append(n.name)
        return out


def call_of(g: Graph, name: str) -> Optional[Call]:
    """The outermost library block call a node belongs to (None: the user wrote the node)."""
    hits = [c for p, c in g.calls.items() if name.startswith(p) and c.library]
    return min(hits, key=lambda c: len(c.node)) if hits else None


def describe(g: Graph, name: str) -> str:
    """How a message names a node: the user's name for it (an alias such as `k: 3`), or for a
    part of an equation its op and operands (argmax(o))."""
    for user, op in g.aliases.items():
        if op.node == name and op.mode == "step" and op.delay == 0 and "." not in user:
            return user
    n = g.nodes.get(name)
    if "#" in name and n is not None and not n.is_leaf:
        return f"{n.op}({', '.join(_shown(describe(g, a.node)) if a.mode == 'step' and not a.delay else str(a) for a in n.args)})"
    return _shown(name)


# ---------------------------------------------------------------- inference
def operand_ty(g: Graph, a: Operand) -> Optional[Ty]:
    n = g.nodes[a.node]
    if n.ty is None:
        return None
    if a.mode == "all":
        return Ty(n.ty.feat, n.axis, n.ty.dtype)
    return n.ty


def _axis_of(g: Graph, a: Operand) -> Optional[str]:
    return g.nodes[a.node].axis if a.mode == "step" else None


def infer(g: Graph) -> None:
    """Fill in axes, then types, reporting every problem found (SpecError)."""
    probs = Problems()
    _infer_axes(g, probs)
    probs.raise_if_any()
    _infer_types(g, probs)
    probs.raise_if_any()


def _infer_axes(g: Graph, probs: Problems):
    changed = True
    while changed:
        changed = False
        for n in g.nodes.values():
            if n.is_leaf:
                continue
            axes = {_axis_of(g, a) for a in n.args} - {None}
            if n.declared_axis:
                axes.add(n.declared_axis)
            if len(axes) == 1 and n.axis is None:
                n.axis = axes.pop()
                changed = True
    mixed = {}
    for n in g.nodes.values():
        if not n.is_leaf:
            axes = sorted({_axis_of(g, a) for a in n.args} - {None} | ({n.declared_axis} - {None}))
            if len(axes) > 1:
                mixed[n.name] = axes
    # a mix is reported where it starts, not again in every node that reads its result
    users = g.consumers()
    downstream, todo = set(), [u for m in mixed for u in users[m]]
    while todo:
        x = todo.pop()
        if x not in downstream:
            downstream.add(x)
            todo += users[x]
    reported = set()
    for n in g.nodes.values():
        if n.is_leaf:
            continue
        if n.name in mixed and not any(a.node in mixed or a.node in downstream for a in n.args):
            call = call_of(g, n.name)
            loc, who = (call.loc, call.node) if call else (n.loc, _shown(n.name))
            if (loc, who) not in reported:
                reported.add((loc, who))
                probs.add(loc, f"node '{who}' mixes steps of axes {' and '.join(mixed[n.name])}; "
                               f"read across axes with last(x) or all(x)")
        for a in n.args:
            if a.mode == "step" and a.delay != 0 and g.nodes[a.node].axis is None:
                target = g.nodes[a.node]
                what = "an input" if target.op == "input" else "a param" if target.op == "param" else "a static node"
                shown = describe(g, a.node)
                probs.add(n.loc, f"{shown}[t{'-' if a.delay > 0 else '+'}{abs(a.delay)}]: '{shown}' is {what} "
                                 f"with no time axis; only nodes that vary over t can be read at t-k")
            if a.mode in ("last", "first", "all") and g.nodes[a.node].axis is None:
                probs.add(n.loc, f"{a.mode}({_shown(a.node)}): '{_shown(a.node)}' has no time axis to read across")


def _shown(name: str) -> str:
    """Intermediate nodes are named node#k; errors name the node the user wrote."""
    return name.split("#")[0]


def shape_rule(op: str):
    return REGISTRY[op].shape


def _prepare(g: Graph, n: Node, ts) -> bool:
    """Fill in what lowering left open once operand types are known: the padding masks the
    registry says an op reads (appended), and attributes derived from operand sizes (the op's
    `prepare`: split widths, CBOW window widths). False if it must wait."""
    sig = REGISTRY[n.op]
    appended = [a for a in sig.args if a.kind == "mask" and a.of]
    if appended and len(n.args) < len(sig.args):
        names = [a.name for a in sig.args]
        for a in appended:
            src = n.args[names.index(a.of)]
            if a.span:
                seq = ts[names.index(a.of)].seq
                if seq is None:
                    return False
                if seq not in g.masks:
                    raise ShapeError(f"{n.op}: axis {seq} has no mask")
                n.args.append(Operand(g.masks[seq], 0, "all"))
            else:
                axis = g.nodes[src.node].axis if src.mode == "step" else None
                n.args.append(Operand(g.masks[axis]) if axis in g.masks else _ones(g))
    return sig.prepare(ts, n.attrs) if sig.prepare else True


def _ones(g: Graph) -> Operand:
    if "const:1" not in g.nodes:
        g.add(Node("const:1", "const", ty=Ty(1), attrs={"value": 1.0}))
    return Operand("const:1")


def _param_shape(g: Graph, n: Node):
    shape = []
    for s in n.attrs["shape"]:
        if isinstance(s, tuple):            # ('in', operand) inside a block
            t = operand_ty(g, s[1])
            if t is None or t.feat == ANY:
                return None
            s = t.feat
        shape.append(s)
    n.attrs["shape"] = shape
    return Ty(1) if not shape else Ty(shape[0]) if len(shape) == 1 else MatTy(shape[1], seq_rows=shape[0])


def _infer_types(g: Graph, probs: Problems):
    pending = [n for n in g.nodes.values() if n.ty is None]
    for _ in range(len(pending) + 2):
        progress = False
        for n in pending:
            if n.ty is not None and ANY not in (n.ty.feat,):
                continue
            if n.op == "param":
                n.ty = _param_shape(g, n)
                progress |= n.ty is not None
                continue
            ts = [operand_ty(g, a) or Ty(ANY) for a in n.args]
            try:
                if not _prepare(g, n, ts):
                    continue
                ts = [operand_ty(g, a) or Ty(ANY) for a in n.args]
                ty = shape_rule(n.op)(ts, n.attrs)
            except ShapeError:
                continue     # may succeed once more sizes are known; the final pass reports it
            except (TypeError, AttributeError, ValueError):
                continue
            if ty is not None and ty != n.ty:
                n.ty = ty
                progress = True
        if not progress:
            break
    for n in g.nodes.values():
        if n.is_leaf:
            continue
        ts = [operand_ty(g, a) for a in n.args]
        if any(t is None or t.feat == ANY for t in ts):
            continue        # reported below for the node that could not be inferred
        # the kind of value first: token ids where reals are needed is the likelier mistake
        sig = REGISTRY[n.op]
        want_types = sig.inputs[0] * len(ts) if sig.variadic else sig.inputs
        wrong = False
        for a, t, want in zip(n.args, ts, want_types):
            if t.dtype != want:
                kind = "token ids" if t.dtype == "i" else "real values"
                need = "token ids" if want == "i" else "real values"
                src = g.nodes[a.node]
                hint = " (look up an embedding first: E[x])" if src.op == "input" and t.dtype == "i" else ""
                call = call_of(g, n.name)
                arg = next((k for k, (op, _, _) in call.args.items() if op.node == a.node), None) if call else None
                if call is not None and arg is not None:      # a library block given the wrong kind of value
                    probs.add(call.args[arg][1], f"{call.block}: argument '{arg}' holds {kind} but {need} are needed here{hint}")
                else:
                    probs.add(n.loc, f"{n.op}: operand '{describe(g, a.node)}' holds {kind} but {need} are needed here{hint}")
                wrong = True
        if wrong:
            n.ty = n.ty or Ty(ANY)
            continue
        try:
            if not _prepare(g, n, ts):
                raise ShapeError(f"{n.op}: cannot infer its operands' sizes")
            ts = [operand_ty(g, a) for a in n.args]
            n.ty = shape_rule(n.op)(ts, n.attrs)
        except ShapeError as e:
            msg = str(e)
            if msg.startswith("split:"):        # one message per split (not per part), naming what is split
                msg = msg.replace(" does not divide", f" of '{_shown(n.args[0].node)}' does not divide")
            else:
                msg += f" (in node '{_shown(n.name)}')"
            probs.add(n.loc, msg)
            n.ty = n.ty or Ty(ANY)
            continue
        if n.op == "cross_entropy":
            y = g.nodes[n.args[1].node]
            classes = y.attrs.get("size") if y.op == "input" else None
            if isinstance(classes, int) and isinstance(ts[0].feat, int) and ts[0].feat != classes:
                vocab = y.attrs.get("vocab")
                probs.add(n.loc, f"cross_entropy: logits {ts[0]} do not match the {classes} classes of "
                                 f"'{_shown(y.name)}'" + (f" ({vocab}={classes})" if isinstance(vocab, str) else ""))
    for n in g.nodes.values():
        at = getattr(n, "init_at", None)
        init = g.nodes[n.init.node].ty if n.init is not None else None
        if at and init is not None and n.ty is not None and ANY not in (init.feat, n.ty.feat) \
                and init.feat != n.ty.feat and init.feat != 1:
            loc, text, shown, call = at
            if call is not None:
                block, arg, node = call
                probs.add(loc, f"{block}: {arg} {text} is {init} but the state {shown} is {n.ty} (in node '{node}')")
            else:
                probs.add(loc, f"init of '{shown}': {text} is {init} but {shown} is {n.ty}")
    if not probs.items:
        for n in g.nodes.values():
            if n.ty is None or n.ty.feat == ANY:
                probs.add(n.loc, f"cannot infer the size of node '{_shown(n.name)}'")


def check_cycles(g: Graph) -> None:
    """A cycle whose every edge has delay 0 can never be computed: name it."""
    import networkx as nx
    dg = nx.DiGraph()
    for n in g.nodes.values():
        for a in n.args:
            if a.mode == "step" and a.delay == 0:
                dg.add_edge(a.node, n.name)
    probs = Problems()
    seen = set()
    for comp in nx.strongly_connected_components(dg):
        if len(comp) == 1 and not dg.has_edge(next(iter(comp)), next(iter(comp))):
            continue
        order = {name: i for i, name in enumerate(g.nodes)}
        start = min(comp, key=order.get)             # deterministic: from the node defined first
        cyc = nx.find_cycle(dg.subgraph(comp), source=start)
        names = [_shown(u) for u, _ in cyc]
        # collapse runs through intermediates of one node (a#1 -> a)
        path = [x for i, x in enumerate(names) if i == 0 or x != names[i - 1]]
        if len(path) > 1 and path[0] == path[-1]:
            path.pop()
        key = frozenset(path)
        if key in seen:
            continue
        seen.add(key)
        first = min((g.nodes[u] for u, _ in cyc), key=lambda n: (n.loc.line, n.loc.col) if n.loc else (0, 0))
        probs.add(first.loc, f"cycle with no delay: {' -> '.join(path + [path[0]])}; "
                             f"one of these reads must be from an earlier step, e.g. {path[-1]}[t-1]")
    probs.raise_if_any()
