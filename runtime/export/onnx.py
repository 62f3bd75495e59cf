"""A graphspec model as ONNX graphs (opset 18): the inference part of the folded step graph.

Values are time-major, as in graphspec's batches: a value on axis t is a tensor [T, B, F] (or
[T, S, B, F] when it also spans a key axis S, the attention weights), a static one [B, F], one
derived from params only [F]; token ids carry no feature axis ([T, B]). Each value's leading
axes are its *layout*, a tuple of labels (axis names and 'B').

The step graph is walked once, in topological order of its recurrences and other nodes:
- a node outside every recurrence runs over all steps at once (one MatMul over [T, B, K]);
- a recurrence (a strongly connected component through delay edges) becomes
  * ONNX's RNN / LSTM / GRU when it is a stdlib rnn / lstm / gru / gru_after block (a forward
    and a backward instance over one input become one bidirectional op with sequence_lens);
  * a Scan otherwise, its body translated op by op: h[t-k] is k carried states, h[t+k] a
    reverse scan that carries its state through each sequence's padding as graphspec does;
  * a Loop when no input gives the axis its length (a decoder running free): greedy decoding,
    the argmax fed back, until every row has emitted <eos> or after `max_len` steps.
The graph exported is the free-running one (graphspec.load(mode='free')): losses, the word2vec
heads and teacher forcing are training-only and left out, dropout is the identity.

A decoder also exports, for beam search in the caller, an encoder model (source -> the
decoder's initial states and the values each step reads) and a one-step model (states and
those values -> the step's outputs and the next states): `docs/export.md`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphspec.errors import UserError
from graphspec.graph import Graph, Node, Operand

OPSET = 18
EOS = 3                  # the data layer's <eos> (runtime/data.py RESERVED)
LOSSES = ("cross_entropy", "mse", "hsoftmax", "negsample")
BLOCKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "graphspec", "blocks")
RNN_BLOCKS = ("rnn", "lstm", "gru", "gru_after")
FLOAT, INT = TensorProto.FLOAT, TensorProto.INT64
LOWEST = float(np.finfo(np.float32).min)


class ExportError(UserError):
    """A part of the model ONNX cannot express (or this exporter does not): one line."""


def shown(name: str) -> str:
    return name.split("#")[0]


def _cannot(g: Graph, n: Node, reason: str) -> ExportError:
    """The error naming the node as the spec wrote it (a teacher-forced guess by its user name)."""
    where = f"{n.loc}: " if n.loc is not None else ""
    name = next((user for user, op in g.aliases.items() if op.node == n.name and "#" not in user), shown(n.name))
    return ExportError(f"{where}cannot export node '{name}' to ONNX: {reason}")


# ---------------------------------------------------------------- analysis
@dataclass
class Recurrence:
    """A strongly connected component of the step graph through its delay edges."""
    members: list                   # in the order one step computes them
    axis: str
    direction: int                  # 1: reads t-k; -1: reads t+k (runs backward)
    states: dict = field(default_factory=dict)     # member -> k: carried as h[t-1] .. h[t-k]
    kind: str = "scan"              # scan | loop (free-running decoder) | one of RNN_BLOCKS
    prefix: str = ""                # the block instance, for RNN_BLOCKS
    x: Optional[Operand] = None     # the block's input
    partner: Optional["Recurrence"] = None       # the other direction of a bidirectional pair
    done: bool = False


def roots_of(g: Graph) -> dict:
    """What inference computes: the spec's outputs, and the prediction each loss reads (its first
    operand: the logits of cross_entropy, the prediction of mse, the vector of a word2vec head)."""
    roots = dict(g.outputs)
    users = {name for name in roots}
    for loss in g.losses:
        a = g.nodes[loss].args[0]
        name = _pretty(g, a)
        if any(op == a for op in roots.values()):
            continue
        base, i = name, 2
        while name in users:
            name, i = f"{base}_{i}", i + 1
        users.add(name)
        roots[name] = a
    return roots


def _pretty(g: Graph, a: Operand) -> str:
    for user, op in g.aliases.items():
        if op == a and "#" not in user:
            return user
    return shown(a.node) if a.delay == 0 and a.mode == "step" else str(a)


class Analysis:
    """The part of a step graph that inference needs, its recurrences and its layouts."""

    def __init__(self, g: Graph, roots: dict):
        self.g, self.roots = g, roots
        self.keep = self._reachable([op.node for op in roots.values()])
        self.index = {n: i for i, n in enumerate(g.nodes)}
        self.users = {n: [] for n in self.keep}
        for n in self.keep:
            node = g.nodes[n]
            for a in node.args + ([node.init] if node.init is not None else []):
                self.users[a.node].append(n)
        self.loops = self._recurrences()
        self.layout = self._layouts()
        self.axes_with_input = {g.nodes[n].axis for n in self.keep
                                if g.nodes[n].op == "input" and g.nodes[n].axis is not None}

    def _reachable(self, todo) -> set:
        keep = set()
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            keep.add(n)
            node = self.g.nodes[n]
            if node.op in LOSSES:
                raise _cannot(self.g, node, "a loss is training-only")
            todo += [a.node for a in node.args]
            if node.init is not None:
                todo.append(node.init.node)
        return keep

    def _recurrences(self) -> list:
        g = self.g
        dg = nx.DiGraph()
        for n in self.keep:
            node = g.nodes[n]
            if node.is_leaf or node.axis is None:
                continue
            dg.add_node(n)
            for a in node.args:
                src = g.nodes[a.node]
                if a.mode == "step" and not src.is_leaf and src.axis == node.axis:
                    dg.add_edge(a.node, n, delay=a.delay)
        out = []
        for comp in sorted(nx.strongly_connected_components(dg), key=lambda c: min(self.index[x] for x in c)):
            if len(comp) == 1 and not dg.has_edge(next(iter(comp)), next(iter(comp))):
                continue
            edges = list(dg.subgraph(comp).edges(data=True))
            delays = {d["delay"] for _, _, d in edges if d["delay"]}
            sub = nx.DiGraph()
            sub.add_nodes_from(comp)
            sub.add_edges_from((u, v) for u, v, d in edges if d["delay"] == 0)
            order = list(nx.lexicographical_topological_sort(sub, key=lambda x: self.index[x]))
            states = {}
            for u, _, d in edges:
                if d["delay"]:
                    states[u] = max(states.get(u, 0), abs(d["delay"]))
            out.append(Recurrence(order, g.nodes[order[0]].axis, -1 if any(d < 0 for d in delays) else 1,
                                  {m: states[m] for m in order if m in states}))
        return out

    def _layouts(self) -> dict:
        """Leading axes of every value: the union of its operands' (and its initial value's),
        its own axis and the batch for a value on an axis; tsum sums its key axis away."""
        g = self.g
        lay = {}
        for n in self.keep:
            node = g.nodes[n]
            if node.op == "input":
                lay[n] = (node.axis, "B") if node.axis else ("B",) if node.attrs.get("kind") != "table" else ()
            else:
                lay[n] = ()
        changed = True
        while changed:
            changed = False
            for n in self.keep:
                node = g.nodes[n]
                if node.is_leaf:
                    continue
                labels = set(lay[n])
                for a in node.args + ([node.init] if node.init is not None else []):
                    labels |= set(self.operand_layout(a, lay))
                if node.axis is not None:
                    labels |= {node.axis, "B"}
                if node.op == "tsum":
                    labels.discard(g.nodes[node.args[0].node].ty.seq)
                new = self.canonical(labels, node.axis)
                if new != lay[n]:
                    lay[n], changed = new, True
        return lay

    def operand_layout(self, a: Operand, lay=None) -> tuple:
        lay = lay if lay is not None else self.layout
        m = self.g.nodes[a.node]
        if a.mode in ("last", "first"):
            return tuple(x for x in lay[a.node] if x != m.axis)
        return lay[a.node]

    def canonical(self, labels, own=None) -> tuple:
        axes = self.g.axes

        def key(label):
            if label == "B":
                return (2, 0)
            return (0, 0) if label == own else (1, axes.index(label) if label in axes else 99)
        return tuple(sorted(labels, key=key))


# ---------------------------------------------------------------- ONNX graph building
class Names:
    def __init__(self):
        self.used = set()

    def fresh(self, hint: str) -> str:
        name, i = hint, 2
        while name in self.used:
            name, i = f"{hint}_{i}", i + 1
        self.used.add(name)
        return name


class Body:
    """The nodes of one ONNX graph: the main graph or a loop body."""

    def __init__(self, names: Names, loop: Optional[Recurrence] = None, standalone: bool = False):
        self.names, self.loop, self.standalone = names, loop, standalone
        self.nodes = []
        self.vals = {}          # node -> value name (in a body: this step's)
        self.states = {}        # (node, k) -> the input holding node[t-k]
        self.scanned = []       # (main value, body input, its type): per-step slices of values outside
        self.outer = {}         # standalone: main value read here -> its type (an input of the model)

    def op(self, kind: str, *ins, out: Optional[str] = None, hint: Optional[str] = None, n: int = 1, **attrs):
        outs = [out] if out else [self.names.fresh(hint or kind.lower()) for _ in range(n)]
        self.nodes.append(helper.make_node(kind, list(ins), outs, **attrs))
        return outs[0] if n == 1 else outs


def _value_info(name: str, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


# ---------------------------------------------------------------- the translator
class Exporter:
    """Translates an Analysis of a step graph, with param values, into ONNX graphs."""

    def __init__(self, g: Graph, params: dict, roots: Optional[dict] = None):
        self.g = g
        self.roots = roots if roots is not None else roots_of(g)
        self.an = Analysis(g, self.roots)
        self.params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        self.names = Names()
        # the model's own names: its outputs and inputs (by their batch fields), and max_len
        self.names.used |= set(self.roots) | {"max_len"} | {
            g.nodes[n].attrs["field"] for n in self.an.keep if g.nodes[n].op == "input"}
        self.inits: dict = {}           # initializer name -> TensorProto
        self._consts: dict = {}
        self.main = Body(self.names)
        self.vals = self.main.vals      # node -> main value name
        self.graph_inputs: dict = {}    # field -> value info
        self.decoder: Optional[Recurrence] = None
        self.decoder_inits: dict = {}   # (node, k) -> main value of its initial state
        self._cache: dict = {}
        for L in self.an.loops:
            self._classify(L)

    # ------------------------------------------------------------ constants and params
    def const(self, value, dtype=np.float32, hint="const") -> str:
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.names.fresh(hint)
            self.inits[name] = numpy_helper.from_array(arr, name)
            self._consts[key] = name
        return self._consts[key]

    def ints(self, *v) -> str:
        return self.const(list(v), np.int64, "axes")

    def param(self, name: str, transpose: bool = False) -> str:
        key = (name, transpose)
        if key not in self._cache:
            n = self.g.nodes[name]
            arr = self.params[name].reshape([s for s in n.attrs["shape"]] or [1])
            if transpose:
                arr = np.ascontiguousarray(arr.T)
            out = self.names.fresh(name + (".T" if transpose else ""))
            self.inits[out] = numpy_helper.from_array(arr.astype(np.float32), out)
            self._cache[key] = out
        return self._cache[key]

    # ------------------------------------------------------------ inputs and sizes
    def graph_input(self, n: Node) -> str:
        if n.name in self.vals:
            return self.vals[n.name]
        kind, field_ = n.attrs.get("kind"), n.attrs["field"]
        if kind == "table":
            raise _cannot(self.g, n, "the word2vec tables are training-only")
        lead = [n.axis, "batch"] if n.axis else ["batch"]
        if kind in ("tokens", "label"):
            width = n.attrs.get("width")
            shape, dtype = lead + ([width] if width else []), INT
        elif kind == "mask":
            shape, dtype = lead, FLOAT
        else:
            shape, dtype = lead + [n.ty.feat], FLOAT
        self.graph_inputs[field_] = _value_info(field_, dtype, shape)
        name = field_
        self.names.used.add(name)
        if kind == "mask":               # [T, B] -> [T, B, 1]: a float value with one feature
            name = self.main.op("Unsqueeze", field_, self.ints(-1), hint=field_ + ".3d")
        self.vals[n.name] = name
        return name

    def size(self, label: str) -> str:
        """[1] int64: the runtime size of a layout label."""
        key = ("size", label)
        if key not in self._cache:
            g = self.g
            for n in sorted(self.an.keep, key=self.an.index.get):
                node = g.nodes[n]
                if node.op != "input" or node.attrs.get("kind") == "table":
                    continue
                if label == "B" or node.axis == label:
                    dim = 0 if node.axis == label else (1 if node.axis else 0)
                    shape = self.main.op("Shape", self.graph_input(node), hint="shape")
                    self._cache[key] = self.main.op("Slice", shape, self.ints(dim), self.ints(dim + 1), hint=f"size.{label}")
                    break
            else:
                raise ExportError(f"cannot export: no input gives the size of {'the batch' if label == 'B' else 'axis ' + label}")
        return self._cache[key]

    def lengths(self, axis: str) -> str:
        """int64 [B]: each sequence's number of real steps on axis, from its mask."""
        key = ("len", axis)
        if key not in self._cache:
            mask = self.graph_input(self.g.nodes[self.g.masks[axis]])
            s = self.main.op("ReduceSum", mask, self.ints(0), keepdims=0, hint=f"len.{axis}")    # [B, 1]
            s = self.main.op("Squeeze", s, self.ints(1))
            self._cache[key] = self.main.op("Cast", s, to=INT, hint=f"len.{axis}")
        return self._cache[key]

    # ------------------------------------------------------------ layouts
    def align(self, body: Body, name: str, have: tuple, want: tuple, full: bool = False) -> str:
        """Insert size-1 axes so a value of layout `have` broadcasts against layout `want`
        (full: also the leading ones, so that both have the same rank)."""
        if have == want or not have:
            if not have and full and want:
                return body.op("Unsqueeze", name, self.ints(*range(len(want))))
            return name
        pos = [want.index(x) if x in want else -1 for x in have]
        if -1 in pos or pos != sorted(pos):
            raise ExportError(f"cannot export: a value with axes {have} meets one with axes {want}")
        start = 0 if full else pos[0]
        axes = [i - start for i in range(start, len(want)) if want[i] not in have]
        return body.op("Unsqueeze", name, self.ints(*axes)) if axes else name

    def ctx_layout(self, body: Body, a: Operand) -> tuple:
        lay = self.an.operand_layout(a)
        if body.loop is not None and a.mode == "step":
            lay = tuple(x for x in lay if x != body.loop.axis)
        return lay

    # ------------------------------------------------------------ reading operands
    def read(self, body: Body, a: Operand) -> str:
        """The value operand `a` reads, as a name in `body`."""
        m = self.g.nodes[a.node]
        L = body.loop
        if a.mode in ("last", "first"):
            return self.outer(body, self.edge(a.node, a.mode), m, self.an.operand_layout(a))
        if a.mode == "all":
            if L is not None and m.axis == L.axis:
                raise _cannot(self.g, m, f"all({shown(m.name)}) is read inside the recurrence over its own axis")
            return self.outer(body, self.value(a.node), m, self.an.layout[a.node])
        if L is None:
            return self.value(a.node) if a.delay == 0 else self.shifted(a.node, a.delay)
        if a.node in L.members:
            return body.vals[a.node] if a.delay == 0 else body.states[(a.node, abs(a.delay))]
        if m.axis == L.axis:
            main = self.value(a.node) if a.delay == 0 else self.shifted(a.node, a.delay)
            return self.scan_input(body, main, m)
        return self.outer(body, self.value(a.node), m, self.an.layout[a.node])

    def outer(self, body: Body, main: str, n: Node, lay: tuple) -> str:
        """A value of the main graph read inside a body: by name (ONNX subgraphs see their outer
        scope), or as an input of a standalone step model (initializers are copied)."""
        if body.standalone and main not in self.inits and main not in body.outer:
            body.outer[main] = self.info(main, n, lay)
        return main

    def scan_input(self, body: Body, main: str, m: Node) -> str:
        """A value outside the recurrence on its axis, read one step at a time."""
        if body.loop.kind == "loop":
            raise _cannot(self.g, m, f"the free-running decoder over axis {body.loop.axis} reads it at every step, "
                             f"but no input gives that axis its steps")
        for src, inner, _ in body.scanned:
            if src == main:
                return inner
        inner = self.names.fresh(main + "[t]")
        lay = tuple(x for x in self.an.layout[m.name] if x != body.loop.axis)
        body.scanned.append((main, inner, self.info(inner, m, lay)))
        return inner

    def info(self, name: str, n: Node, lay: tuple):
        """The type of a value of node n with leading axes lay (a mask has one feature)."""
        dims = ["batch" if x == "B" else x for x in lay]
        feat = [] if n.ty.dtype == "i" and n.ty.feat == 1 else [n.ty.feat]
        if n.op == "input" and n.attrs.get("width"):
            feat = [n.attrs["width"]]
        return _value_info(name, INT if n.ty.dtype == "i" else FLOAT, dims + feat)

    def value(self, name: str) -> str:
        """The main-graph value of a node: leaves on demand, the rest emitted in order."""
        if name in self.vals:
            return self.vals[name]
        n = self.g.nodes[name]
        if n.op == "input":
            return self.graph_input(n)
        if n.op == "param":
            self.vals[name] = self.param(name)
            return self.vals[name]
        if n.op == "const":
            v = n.attrs["value"]
            self.vals[name] = self.const(v, np.int64, "token") if n.ty.dtype == "i" else self.const([v], hint="c")
            return self.vals[name]
        raise AssertionError(f"{name} read before it was computed")

    def edge(self, name: str, mode: str) -> str:
        """first(h) or last(h): each sequence's first step, or its last real one (a recognised
        RNN's final state where it has one, else a gather at length - 1)."""
        key = (mode, name)
        if key in self._cache:
            return self._cache[key]
        n = self.g.nodes[name]
        lay = self.an.layout[name]
        x = self.value(name)
        if lay != (n.axis, "B"):
            raise _cannot(self.g, n, f"{mode}() of a value over {', '.join(lay)} (one vector per step and row is supported)")
        if mode == "first":
            out = self.main.op("Gather", x, self.const(0, np.int64, "zero"), axis=0, hint=f"first({shown(name)})")
        else:
            idx = self.main.op("Sub", self.lengths(n.axis), self.const(1, np.int64, "one"))
            idx = self.main.op("Max", idx, self.const(0, np.int64, "zero"))            # [B]
            rank = len(lay) + (1 if n.ty.dtype == "f" or n.ty.feat != 1 else 0)
            if rank > 2:
                idx = self.main.op("Unsqueeze", idx, self.ints(*range(1, rank - 1)))
            shape = self.main.op("Shape", x)
            tail = self.main.op("Slice", shape, self.ints(1), self.ints(rank))
            idx = self.main.op("Expand", self.main.op("Unsqueeze", idx, self.ints(0)),
                               self.main.op("Concat", self.ints(1), tail, axis=0))
            out = self.main.op("GatherElements", x, idx, axis=0)
            out = self.main.op("Squeeze", out, self.ints(0), hint=f"last({shown(name)})")
        self._cache[key] = out
        return out

    def shifted(self, name: str, delay: int) -> str:
        """A value on axis t read at t - delay from outside its recurrence: its initial value
        for the first |delay| steps (the last ones for t + k)."""
        key = ("shift", name, delay)
        if key in self._cache:
            return self._cache[key]
        n = self.g.nodes[name]
        x = self.value(name)
        k = abs(delay)
        lay = self.an.layout[name]
        init = self.initial(n, lay[1:], lead=k)
        T = self.main.op("Shape", x)
        T = self.main.op("Slice", T, self.ints(0), self.ints(1))
        if delay > 0:
            body = self.main.op("Slice", x, self.ints(0), self.ints(-k), self.ints(0))
            cat = self.main.op("Concat", init, body, axis=0)
            out = self.main.op("Slice", cat, self.ints(0), T, self.ints(0))
        else:
            body = self.main.op("Slice", x, self.ints(k), self.ints(2 ** 62), self.ints(0))
            cat = self.main.op("Concat", body, init, axis=0)
            out = self.main.op("Slice", cat, self.ints(0), T, self.ints(0))
        self._cache[key] = out
        return out

    def initial(self, n: Node, lay: tuple, lead: int = 0) -> str:
        """Node n's initial value (what n[t-k] reads before the first step), shaped [lead, *lay, F]."""
        feat = [] if n.ty.dtype == "i" and n.ty.feat == 1 else [n.ty.feat]
        dims = ([self.ints(lead)] if lead else []) + [self.size(x) for x in lay] + ([self.ints(*feat)] if feat else [])
        shape = self.main.op("Concat", *dims, axis=0) if dims else self.ints()
        if n.init is None:
            zero = np.zeros(1, np.int64 if n.ty.dtype == "i" else np.float32)
            return self.main.op("ConstantOfShape", shape, value=numpy_helper.from_array(zero), hint=f"{shown(n.name)}.init")
        v = self.read(self.main, n.init)
        v = self.align(self.main, v, self.an.operand_layout(n.init), ((None,) if lead else ()) + tuple(lay), full=True)
        return self.main.op("Expand", v, shape, hint=f"{shown(n.name)}.init")

    # ------------------------------------------------------------ the walk
    def build(self):
        """Emit every recurrence and node the roots need, in dependency order."""
        an, g = self.an, self.g
        absorbed = set()
        for L in an.loops:
            if L.kind in RNN_BLOCKS:
                absorbed |= {m for m in an.keep if m.startswith(L.prefix)} - {L.prefix + "h", L.prefix + "s"}
        dg = nx.DiGraph()
        unit = {m: ("loop", id(L)) for L in an.loops for m in L.members}
        loops = {id(L): L for L in an.loops}
        key = {}
        for n in an.keep:
            node = g.nodes[n]
            if node.is_leaf or n in absorbed and n not in unit:
                continue
            u = unit.get(n, ("node", n))
            dg.add_node(u)
            key[u] = min(key.get(u, 1e18), an.index[n])
            for a in node.args + ([node.init] if node.init is not None else []):
                src = a.node
                if src in absorbed and src not in unit:     # the block's own hoisted input part: x
                    continue
                if not g.nodes[src].is_leaf and unit.get(src, ("node", src)) != u:
                    dg.add_edge(unit.get(src, ("node", src)), u)
        for L in an.loops:        # a recognised block reads its input x, outside the block
            if L.kind in RNN_BLOCKS and not g.nodes[L.x.node].is_leaf:
                dg.add_edge(unit.get(L.x.node, ("node", L.x.node)), ("loop", id(L)))
        for u in nx.lexicographical_topological_sort(dg, key=lambda u: key[u]):
            if u[0] == "loop":
                self.recurrence(loops[u[1]])
            else:
                node = g.nodes[u[1]]
                self.vals[node.name] = self.node(self.main, node)
        return self

    def node(self, body: Body, n: Node) -> str:
        """One op of the step graph (over all steps in the main graph, one step in a body)."""
        want = self.an.layout[n.name]
        if body.loop is not None:
            want = tuple(x for x in want if x != body.loop.axis)
        lays = [self.ctx_layout(body, a) for a in n.args]
        have = self.an.canonical(set().union(*lays) if lays else set(), n.axis if body.loop is None else None)
        if n.op == "tsum":
            have = tuple(x for x in have if x != self.g.nodes[n.args[0].node].ty.seq)
        if have != want:
            raise _cannot(self.g, n, f"it varies over {', '.join(want)} but is computed from values over {', '.join(have) or 'nothing'}")
        fn = getattr(self, "op_" + n.op, None)
        if fn is None:
            raise _cannot(self.g, n, f"ONNX export has no translation of '{n.op}'"
                          + (" (it draws random numbers)" if n.op in ("sample", "mix") else ""))
        return fn(body, n, lays, have)

    def args(self, body, n, lays, out, full=False):
        return [self.align(body, self.read(body, a), lay, out, full) for a, lay in zip(n.args, lays)]

    # ------------------------------------------------------------ ops
    def op_matmul(self, body, n, lays, out):
        w, x = n.args
        return body.op("MatMul", self.read(body, x), self.param(w.node, True), hint=n.name)

    def _binary(kind):
        def f(self, body, n, lays, out):
            a, b = self.args(body, n, lays, out)
            return body.op(kind, a, b, hint=n.name)
        return f

    op_add, op_sub, op_mul = _binary("Add"), _binary("Sub"), _binary("Mul")
    op_tadd = _binary("Add")

    def _unary(kind, **attrs):
        def f(self, body, n, lays, out):
            return body.op(kind, self.read(body, n.args[0]), hint=n.name, **attrs)
        return f

    op_tanh, op_sigmoid = _unary("Tanh"), _unary("Sigmoid")
    op_softmax, op_log_softmax = _unary("Softmax", axis=-1), _unary("LogSoftmax", axis=-1)
    op_copy = op_dropout = _unary("Identity")           # dropout: training only
    op_argmax = _unary("ArgMax", axis=-1, keepdims=0)

    def op_rectify(self, body, n, lays, out):
        """max(0, z) + a min(0, z) is PRelu(z, a)."""
        z, a = self.args(body, n, lays, out)
        return body.op("PRelu", z, a, hint=n.name)

    def op_sum(self, body, n, lays, out):
        return body.op("ReduceSum", self.read(body, n.args[0]), self.ints(-1), keepdims=1, hint=n.name)

    def op_mean(self, body, n, lays, out):
        return body.op("ReduceMean", self.read(body, n.args[0]), self.ints(-1), keepdims=1, hint=n.name)

    def op_take(self, body, n, lays, out):
        c, w = n.attrs["col"], n.attrs["width"]
        return body.op("Slice", self.read(body, n.args[0]), self.ints(c), self.ints(c + w), self.ints(-1), hint=n.name)

    def op_select(self, body, n, lays, out):
        m, a, b = self.args(body, n, lays, out)
        return body.op("Where", body.op("Greater", m, self.const([0.5])), a, b, hint=n.name)

    def op_concat(self, body, n, lays, out):
        """Features joined; a part over fewer axes (a static value beside per-step ones) is
        repeated over the others first."""
        parts = self.args(body, n, lays, out, full=True)
        if any(lay != out for lay in lays):
            lead = [body.op("Slice", body.op("Shape", p), self.ints(0), self.ints(-1)) for p in parts]
            lead = body.op("Max", *lead)            # the shapes without features, size-1 axes broadcast
            parts = [p if lay == out else
                     body.op("Expand", p, body.op("Concat", lead, self.ints(self.g.nodes[a.node].ty.feat), axis=0))
                     for p, lay, a in zip(parts, lays, n.args)]
        return body.op("Concat", *parts, axis=-1, hint=n.name)

    def op_embed(self, body, n, lays, out):
        table, ids = n.args
        if self.g.nodes[ids.node].ty.feat != 1:
            raise _cannot(self.g, n, "E[x] of several ids per row (use embed_mean)")
        return body.op("Gather", self.param(table.node), self.read(body, ids), axis=0, hint=n.name)

    def op_embed_mean(self, body, n, lays, out):
        """The mean of the rows of the ids that are >= 0 and < V (none: zeros)."""
        table, ids = n.args
        E = self.param(table.node)
        x = self.read(body, ids)
        V = self.const(self.params[table.node].shape[0], np.int64, "V")
        ok = body.op("And", body.op("GreaterOrEqual", x, self.const(0, np.int64, "zero")), body.op("Less", x, V))
        rows = body.op("Gather", E, body.op("Where", ok, x, self.const(0, np.int64, "zero")), axis=0)   # [.., W, D]
        w = body.op("Unsqueeze", body.op("Cast", ok, to=FLOAT), self.ints(-1))
        total = body.op("ReduceSum", body.op("Mul", rows, w), self.ints(-2), keepdims=0)
        count = body.op("ReduceSum", w, self.ints(-2), keepdims=0)
        return body.op("Div", total, body.op("Max", count, self.const([1.0])), hint=n.name)

    def op_tdot(self, body, n, lays, out):
        k, q = self.args(body, n, lays, out)
        return body.op("ReduceSum", body.op("Mul", k, q), self.ints(-1), keepdims=1, hint=n.name)

    def op_tsoftmax(self, body, n, lays, out):
        """Softmax over the key axis, padding steps left out (weight 0)."""
        e, m = self.args(body, n, lays, out)
        axis = out.index(self.g.nodes[n.args[0].node].ty.seq)
        keep = body.op("Greater", m, self.const([0.5]))
        w = body.op("Softmax", body.op("Where", keep, e, self.const([LOWEST])), axis=axis)
        return body.op("Where", keep, w, self.const([0.0]), hint=n.name)

    def op_tsum(self, body, n, lays, out):
        w, v = n.args
        seq = self.g.nodes[w.node].ty.seq
        work = self.an.canonical(set(lays[0]) | set(lays[1]), n.axis if body.loop is None else None)
        wv, vv = (self.align(body, self.read(body, a), lay, work) for a, lay in zip(n.args, lays))
        return body.op("ReduceSum", body.op("Mul", wv, vv), self.ints(work.index(seq)), keepdims=0, hint=n.name)

    # ------------------------------------------------------------ recurrences
    def _classify(self, L: Recurrence):
        if L.axis not in self.an.axes_with_input:
            L.kind = "loop"
            return
        hit = self._stdlib_block(L)
        if hit is not None:
            L.kind, L.prefix, L.x = hit
        for other in self.an.loops:
            if (other is not L and other.kind == L.kind and L.kind in RNN_BLOCKS and other.x == L.x
                    and other.direction == -L.direction and other.partner is None and L.partner is None):
                L.partner, other.partner = other, L

    def _stdlib_block(self, L: Recurrence):
        """(block, instance prefix, input x) when L is exactly a stdlib rnn/lstm/gru/gru_after
        instance whose other nodes nobody outside reads (but its h, and an LSTM's last(s))."""
        g, an = self.g, self.an
        prefix = L.members[0].rsplit(".", 1)[0] + "."
        path = g.instances.get(prefix)
        kind = next((b for b in RNN_BLOCKS if path and _same_file(path, os.path.join(BLOCKS, b + ".yaml"))), None)
        if kind is None or not all(m.startswith(prefix) for m in L.members):
            return None
        inside = {m for m in an.keep if m.startswith(prefix)}
        outputs = {prefix + "h"} | ({prefix + "s"} if kind == "lstm" else set())
        for m in inside:
            for u in an.users[m]:
                if u in inside:
                    continue
                if m not in outputs:
                    return None
                reads = g.nodes[u].args + ([g.nodes[u].init] if g.nodes[u].init is not None else [])
                if m == prefix + "s" and not all(a.mode == "last" for a in reads if a.node == m):
                    return None          # ONNX's LSTM gives the final cell state only
        weight = prefix + ("U" if kind == "rnn" else "W")
        x = next((n.args[1] for n in map(g.nodes.get, inside) if n.op == "matmul" and n.args[0].node == weight), None)
        if x is None or x.mode != "step" or x.delay or x.node in inside or an.layout[x.node] != (L.axis, "B"):
            return None
        for s in outputs:
            init = g.nodes[s].init
            if init is not None and set(an.operand_layout(init)) - {"B"}:
                return None
        if kind == "lstm" and any(op.node == prefix + "s" for op in self.roots.values()):
            return None
        return kind, prefix, x

    def recurrence(self, L: Recurrence):
        if L.done:
            return
        if L.kind in RNN_BLOCKS:
            self.rnn_op(L)
        elif L.kind == "loop":
            self.decode_loop(L)
        else:
            self.scan(L)
        L.done = True

    def needed_outside(self, L: Recurrence) -> list:
        roots = {op.node for op in self.roots.values()}
        return [m for m in L.members if m in roots or any(u not in L.members for u in self.an.users[m])]

    def step_body(self, L: Recurrence, standalone: bool = False, friendly: bool = False) -> Body:
        """One step of a recurrence, op by op: inputs are the carried states, outputs the new
        states, then this step's values of the members read outside."""
        body = Body(self.names, L, standalone)
        for m, K in L.states.items():
            for k in range(1, K + 1):
                friendly_name = f"{shown(m)}[t{'-' if L.direction > 0 else '+'}{k}]"
                body.states[(m, k)] = friendly_name if friendly else self.names.fresh(f"{shown(m)}.state{k}")
        mask = None
        carry = L.direction < 0 and L.axis in self.g.masks
        if carry:
            mask = self.read(body, Operand(self.g.masks[L.axis]))
        for m in L.members:
            n = self.g.nodes[m]
            v = self.node(body, n)
            if carry and m in L.states:       # graphspec's padding carry: keep the state until the real end
                v = body.op("Where", body.op("Greater", mask, self.const([0.5])), v, body.states[(m, 1)], hint=shown(m))
            body.vals[m] = v
        return body

    def _state_info(self, L: Recurrence, m: str, name: str):
        return self.info(name, self.g.nodes[m], tuple(x for x in self.an.layout[m] if x != L.axis))

    def _body_outputs(self, L, body, names=None):
        """New states (node[t] becomes node[t-1], node[t-1] node[t-2], ...), then the stacked ones."""
        outs = []
        for m, K in L.states.items():
            chain = [body.vals[m]] + [body.states[(m, k)] for k in range(1, K)]
            for k, v in enumerate(chain):
                want = names(m, k) if names else None
                if want or v in [o.name for o in outs] or v in body.states.values():
                    w = want or self.names.fresh(v + "'")
                    v = body.op("Identity", v, out=w)
                outs.append(self._state_info(L, m, v))
        return outs

    def _state_inputs(self, L: Recurrence, body: Body) -> list:
        return [self._state_info(L, m, body.states[(m, k)]) for m, K in L.states.items() for k in range(1, K + 1)]

    def _stacked(self, L: Recurrence, body: Body, outs: list) -> list:
        """Append the outputs stacked over the steps: this step's value of every member read
        outside the recurrence. Returns those members."""
        stacked = self.needed_outside(L)
        for m in stacked:
            v = body.vals[m]
            if v in body.states.values() or any(o.name == v for o in outs):
                v = body.op("Identity", v)          # one name per graph output
            outs.append(self._state_info(L, m, v))
        return stacked

    def scan(self, L: Recurrence):
        """A recurrence over an axis an input gives: a Scan over its steps (reversed for t+k)."""
        body = self.step_body(L)
        inits = [self.initial_state(L, m) for m, K in L.states.items() for _ in range(K)]
        state_in = self._state_inputs(L, body)
        outs = self._body_outputs(L, body)
        stacked = self._stacked(L, body, outs)
        if not body.scanned:          # a Scan's length comes from a scanned input
            src = next(n for n in self.an.keep if self.g.nodes[n].op == "input" and self.g.nodes[n].axis == L.axis)
            self.scan_input(body, self.graph_input(self.g.nodes[src]), self.g.nodes[src])
        scan_in = [info for _, _, info in body.scanned]
        graph = helper.make_graph(body.nodes, f"scan_{shown(L.members[0])}", state_in + scan_in, outs)
        nstate = len(inits)
        results = self.main.op("Scan", *inits, *[main for main, _, _ in body.scanned], n=nstate + len(stacked),
                               body=graph, num_scan_inputs=len(body.scanned),
                               **({"scan_input_directions": [1] * len(body.scanned),
                                   "scan_output_directions": [1] * len(stacked)} if L.direction < 0 else {}))
        results = results if isinstance(results, list) else [results]
        for m, v in zip(stacked, results[nstate:]):
            self.vals[m] = v

    def initial_state(self, L: Recurrence, m: str) -> str:
        key = ("state0", m)
        if key not in self._cache:
            lay = tuple(x for x in self.an.layout[m] if x != L.axis)
            self._cache[key] = self.initial(self.g.nodes[m], lay)
        return self._cache[key]

    def decode_loop(self, L: Recurrence):
        """Greedy decoding: a Loop of at most max_len steps that stops once every row has
        produced <eos> (the token the argmax fed back is)."""
        if self.decoder is not None:
            raise _cannot(self.g, self.g.nodes[L.members[0]], "a second free-running recurrence (one decoder is supported)")
        self.decoder = L
        body = self.step_body(L)
        tok = next((m for m in L.members if m in L.states and self.g.nodes[m].op == "argmax"), None)
        it, cond = self.names.fresh("iter"), self.names.fresh("cond")
        inputs = [_value_info(it, INT, []), _value_info(cond, TensorProto.BOOL, [])]
        inputs += self._state_inputs(L, body)
        outs = self._body_outputs(L, body)
        inits = [self.initial_state(L, m) for m, K in L.states.items() for _ in range(K)]
        for m, K in L.states.items():
            for k in range(1, K + 1):
                self.decoder_inits[(m, k)] = inits[len(self.decoder_inits)]
        if tok is not None:
            done = self.names.fresh("done")
            inputs.append(_value_info(done, TensorProto.BOOL, ["batch"]))
            done2 = body.op("Or", done, body.op("Equal", body.vals[tok], self.const(EOS, np.int64, "eos")), hint="done")
            left = body.op("ReduceMax", body.op("Cast", body.op("Not", done2), to=TensorProto.INT32), keepdims=0)
            cond2 = body.op("Cast", left, to=TensorProto.BOOL, hint="cond")
            outs.append(_value_info(done2, TensorProto.BOOL, ["batch"]))
            zeros = self.main.op("ConstantOfShape", self.size("B"),
                                 value=numpy_helper.from_array(np.zeros(1, bool)), hint="done0")
            inits.append(zeros)
        else:
            cond2 = body.op("Identity", cond, hint="cond")
        outs.insert(0, _value_info(cond2, TensorProto.BOOL, []))
        stacked = self._stacked(L, body, outs)
        graph = helper.make_graph(body.nodes, f"decode_{shown(L.members[0])}", inputs, outs)
        if "max_len" not in self.graph_inputs:
            self.graph_inputs["max_len"] = _value_info("max_len", INT, [])
            self.names.used.add("max_len")
        true = self.const(True, np.bool_, "true")
        results = self.main.op("Loop", "max_len", true, *inits, n=len(inits) + len(stacked), body=graph)
        results = results if isinstance(results, list) else [results]
        for m, v in zip(stacked, results[len(inits):]):
            self.vals[m] = v

    def rnn_op(self, L: Recurrence):
        """A stdlib block (and its backward partner) as ONNX's own RNN, LSTM or GRU."""
        pair = [L] + ([L.partner] if L.partner is not None else [])
        pair.sort(key=lambda r: -r.direction)          # forward first, as ONNX stacks them
        kind = L.kind
        ws = [_onnx_weights(kind, self.params, r.prefix) for r in pair]
        H = ws[0][1].shape[1]
        W, R, B = (self.const(np.stack([w[i] for w in ws]), hint=f"{pair[0].prefix}{'WRB'[i]}") for i in range(3))
        X = self.value(L.x.node)
        seq = self.main.op("Cast", self.lengths(L.axis), to=TensorProto.INT32, hint=f"len.{L.axis}")
        inits = []
        names = ["h"] + (["s"] if kind == "lstm" else [])
        for s in names:
            if all(self.g.nodes[r.prefix + s].init is None for r in pair):
                inits.append("")
                continue
            parts = [self.initial(self.g.nodes[r.prefix + s], ("B",)) for r in pair]
            inits.append(self.main.op("Concat", *[self.main.op("Unsqueeze", p, self.ints(0)) for p in parts], axis=0))
        direction = "bidirectional" if len(pair) == 2 else "forward" if L.direction > 0 else "reverse"
        op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "gru_after": "GRU"}[kind]
        attrs = {"hidden_size": int(H), "direction": direction}
        if kind.startswith("gru"):
            attrs["linear_before_reset"] = int(kind == "gru_after")
        ins = [X, W, R, B, seq] + inits
        while ins and ins[-1] == "":
            ins.pop()
        outs = self.main.op(op, *ins, n=3 if kind == "lstm" else 2, hint=pair[0].prefix + op.lower(), **attrs)
        Y, Yh = outs[0], outs[1]
        for d, r in enumerate(pair):
            idx = self.const(d, np.int64, "dir")
            self.vals[r.prefix + "h"] = self.main.op("Gather", Y, idx, axis=1, hint=r.prefix + "h")
            if r.direction > 0:          # the final state is last(h)
                self._cache[("last", r.prefix + "h")] = self.main.op("Gather", Yh, idx, axis=0, hint=f"last({r.prefix}h)")
                if kind == "lstm":
                    self._cache[("last", r.prefix + "s")] = self.main.op("Gather", outs[2], idx, axis=0,
                                                                         hint=f"last({r.prefix}s)")
            r.done = True

    # ------------------------------------------------------------ models
    def model(self, graph: onnx.GraphProto, doc: str = "") -> onnx.ModelProto:
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="graphspec",
                              doc_string=doc)
        m.ir_version = 8
        return m

    def full(self) -> onnx.ModelProto:
        """The whole inference graph: inputs -> every root."""
        outs = []
        for name, op in self.roots.items():
            v = self.read(self.main, op)
            self.main.op("Identity", v, out=name)
            self.names.used.add(name)
            outs.append(self.root_info(name, op))
        inputs = sorted(self.graph_inputs.values(), key=lambda i: (i.name == "max_len", i.name))
        graph = helper.make_graph(self.main.nodes, self.g.name, inputs, outs, list(self.inits.values()))
        return self.model(graph)

    def root_info(self, name: str, op: Operand):
        return self.info(name, self.g.nodes[op.node], self.an.operand_layout(op))

    def decoder_models(self):
        """For beam search in the caller: (encoder, step). The encoder maps the source to the
        decoder's initial states (named like the step's state inputs, NODE[t-1]) and to the values
        every step reads; the step maps those and the states to this step's outputs (the roots
        inside the decoder, under their names) and the next states (NODE[t] feeds NODE[t-1])."""
        L = self.decoder
        body = self.step_body(L, standalone=True, friendly=True)

        def next_name(m, k):
            return f"{shown(m)}[t{'-' + str(k) if k else ''}]"
        outs = self._body_outputs(L, body, names=next_name)
        inside = {op.node: name for name, op in self.roots.items() if op.node in L.members and op.mode == "step"}
        for m, name in inside.items():
            body.op("Identity", body.vals[m], out=name)
            outs.append(self._state_info(L, m, name))
        state_in = self._state_inputs(L, body)
        outer_info = [body.outer[v] for v in sorted(body.outer)]
        used = _free_names(body.nodes)
        inits = [self.inits[x] for x in sorted(used) if x in self.inits]
        step = helper.make_graph(body.nodes, f"{self.g.name}_step", state_in + outer_info, outs, inits)
        # the encoder: the main graph cut down to what those inputs need
        enc_outs, extra = [], []
        for (m, k), v in self.decoder_inits.items():
            name = body.states[(m, k)]
            extra.append(helper.make_node("Identity", [v], [name]))
            enc_outs.append(self._state_info(L, m, name))
        enc_outs += outer_info
        nodes = _prune(self.main.nodes + extra, [o.name for o in enc_outs])
        used = _free_names(nodes)
        inputs = [i for k, i in sorted(self.graph_inputs.items()) if k in used]
        encoder = helper.make_graph(nodes, f"{self.g.name}_encoder", inputs, enc_outs,
                                    [self.inits[x] for x in sorted(used) if x in self.inits])
        return self.model(encoder), self.model(step)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _onnx_weights(kind: str, p: dict, prefix: str):
    """W, R, B of one direction, in ONNX's gate order: LSTM i,o,f,c from graphspec's i,f,g,o;
    GRU z,r,h from r,u,n; B = [W's bias; R's bias]."""
    def blocks(a, order, k):
        parts = np.split(np.asarray(a), k, axis=0)
        return np.concatenate([parts[i] for i in order], axis=0)
    get = lambda k: np.asarray(p[prefix + k], np.float32)  # noqa: E731
    if kind == "rnn":
        W, R, b = get("U"), get("W"), get("b").reshape(-1)
        return W, R, np.concatenate([b, np.zeros_like(b)])
    if kind == "lstm":
        order = [0, 3, 1, 2]
        b = blocks(get("b").reshape(-1), order, 4)
        return blocks(get("W"), order, 4), blocks(get("R"), order, 4), np.concatenate([b, np.zeros_like(b)])
    order = [1, 0, 2]
    W, b = blocks(get("W"), order, 3), blocks(get("b").reshape(-1), order, 3)
    if kind == "gru":
        R2, Rn = get("R"), get("R_n")
        H = Rn.shape[0]
        return W, np.concatenate([R2[H:], R2[:H], Rn]), np.concatenate([b, np.zeros_like(b)])
    return W, blocks(get("R"), order, 3), np.concatenate([b, blocks(get("b_R").reshape(-1), order, 3)])


def _free_names(nodes) -> set:
    """Names read by nodes (and their subgraphs) that none of them produce."""
    made, read = set(), set()
    for n in nodes:
        read |= set(n.input)
        made |= set(n.output)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                inner = set(x.name for x in a.g.input) | set(x.name for x in a.g.initializer)
                read |= _free_names(a.g.node) - inner
    return read - made - {""}


def _prune(nodes, outputs) -> list:
    need, keep = set(outputs), []
    for n in reversed(nodes):
        if any(o in need for o in n.output):
            keep.append(n)
            need |= set(n.input) | _free_names([n])
    return keep[::-1]


def ops_used(model: onnx.ModelProto) -> list:
    seen = set()

    def walk(nodes):
        for n in nodes:
            seen.add(n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g.node)
    walk(model.graph.node)
    return sorted(seen)
