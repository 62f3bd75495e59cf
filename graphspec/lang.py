"""Spec -> step graph: resolve names, expand blocks and sugar, lower equations to primitives.

One canonical form (docs/spec.md). Equations are lowered to registry primitives; every
intermediate gets a stable name `node#k`, every block instance a prefix `node.` (params and nodes
namespaced), so unrolled ids read like `enc.fwd.h[t=2]`.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from . import expr as E
from .errors import Loc, Problems, SpecError, did_you_mean
from .graph import ANY, Call, Graph, Node, Operand
from .loader import Located, load_file
from .ops import REGISTRY, MatTy, OpSig, Sugar, Ty, callable_ops

ZEROS = Operand("<zeros>")   # a block argument left at its default: an all-zero initial state
BOS = 2   # the data layer's vocabulary puts <pad>=0, <unk>=1, <bos>=2, <eos>=3 first
STDLIB = os.path.join(os.path.dirname(__file__), "blocks")

INITS = {"zeros": 0, "ones": 0, "constant": 1, "uniform": 2, "normal": 1, "xavier": 0,
         "glorot": 0, "orthogonal": 0, "identity": 1}

# Language constructs: what lowering itself handles. Every other function is a registry op or
# sugar for one (graphspec/ops.py), lowered from its entry by _lower_call.
CONSTRUCTS = {"last": "last(h)", "first": "first(h)", "all": "all(h)", "split": "i, f, g, o: split(z, 4)",
              "teacher_forced": "teacher_forced(y, o, free='argmax', sampling=0, schedule='constant')",
              "bidirectional": "bidirectional(block(...), combine='concat')", "stack": "stack(block(...), layers=2)"}
CONSTRUCT_KWARGS = {"teacher_forced": ("free", "sampling", "schedule"), "bidirectional": ("combine",),
                    "stack": ("layers",)}
FUNCTIONS = sorted(set(callable_ops()) | set(CONSTRUCTS))

# The metrics training reports, by the loss that yields them (train.target names one of them):
# free_* when a decoder reads its targets through teacher_forced, neighbours from the word-vector task.
METRICS_OF = {"cross_entropy": ("loss", "ppl", "acc", "seq_acc"), "mse": ("loss", "mse"),
              "hsoftmax": ("loss", "neighbours"), "negsample": ("loss", "neighbours")}
FREE_METRICS = ("free_acc", "free_seq_acc")
METRICS = tuple(dict.fromkeys(m for ms in METRICS_OF.values() for m in ms)) + FREE_METRICS


@dataclass
class Block:
    name: str
    doc: Located
    args: list            # [(name, default Expr or None)]
    dims: dict            # name -> int default or None (required)
    params: dict
    nodes: dict
    out: Any
    option: dict = field(default_factory=dict)   # {reset: after}: picked by gru(..., reset='after')

    @property
    def arity(self):
        return len(self.args) + len(self.dims)


@dataclass
class Scope:
    prefix: str                      # '' or 'enc.'
    names: dict                      # local name -> Operand / ('param', name) / ('dim', value)
    direction: int = 1               # -1 inside the backward half of bidirectional()
    counters: dict = field(default_factory=dict)
    parent: Optional["Scope"] = None


class Builder:
    def __init__(self, doc: Located, mode: str = "train", bind: Optional[dict] = None):
        self.doc, self.mode = doc, mode
        self.bind = bind or {}
        self.probs = Problems()
        self.g = Graph(name=str((doc.data or {}).get("name", "model")))
        self.blocks: dict[str, Block] = {}
        self.aliases: dict[str, Operand] = {}
        self.consts: dict = {}
        self.tables: dict = {}

    # ------------------------------------------------------------ entry
    def build(self) -> Graph:
        d = self.doc.data
        g = self.g
        g.data = dict(d.get("data") or {})
        g.train = dict(d.get("train") or {})
        if g.train.get("per_example"):
            if g.train.get("optimizer", "adam") != "sgd":
                self.probs.add(self.doc.where(("train", "optimizer" if "optimizer" in g.train else "per_example")),
                               f"per_example updates are plain SGD's (word2vec's online updates); "
                               f"use optimizer: sgd, not {g.train.get('optimizer', 'adam')}")
            for key in ("clip", "weight_decay"):
                if g.train.get(key):
                    self.probs.add(self.doc.where(("train", key)), f"per_example updates take no {key}: "
                                   f"each example's SGD step is lr times its own gradient; remove {key}")
        self._load_blocks()
        self.probs.raise_if_any()
        self.dims = self._dims(d.get("dims") or {})
        g.dims = self.dims
        top = Scope("", {})
        for k, v in self.dims.items():
            top.names[k] = ("dim", v)
        self._inputs(d.get("inputs") or {}, top)
        self._params(d.get("params") or {}, top, ("params",), self.doc)
        self._nodes(d.get("nodes") or {}, top, ("nodes",), self.doc)
        losses = d.get("loss")
        if losses is not None:
            for i, (path, text) in enumerate(_listed(losses, ("loss",))):
                op = self._lower_expr(text, top, self.doc.where(path), f"loss{i if i else ''}")
                if op is None:
                    continue
                terms = self._loss_terms(op.node)
                if terms is None:
                    ops = ", ".join(sorted(n for n, sig in REGISTRY.items() if sig.loss and sig.syntax))
                    self.probs.add(self.doc.where(path), f"'{text}' is not a loss: write a loss op ({ops}), a sum "
                                   "of them, or a list of them (loss: [mse(h, y), mse(o, y)])")
                    continue
                g.losses += [t for t in terms if t not in g.losses]
        if losses is None and any(n.op == "param" and n.attrs["learn"] for n in g.nodes.values()):
            # without one, training would run its steps on a loss of 0 and change nothing
            self.probs.add(self.doc.key_loc(("nodes",)), "the spec has learnable params but no loss: add one, "
                           "e.g. loss: cross_entropy(o, y) (tokens or labels) or loss: mse(o, y) (real values)")
        for name, text in (d.get("outputs") or {}).items():
            op = self._lower_expr(text, top, self.doc.where(("outputs", name)), f"out.{name}")
            if op is not None:
                g.outputs[name] = op
        self._check_target()
        self.probs.raise_if_any()
        self._resolve_aliases()
        if g.train.get("per_example") == "word2vec" and not _word2vec_form(g):
            raise SpecError.at(self.doc.where(("train", "per_example")),
                               "per_example: word2vec is word2vec's update rule, for the word2vec form only: "
                               "v = E[ids] or embed_mean(E, ids) over inputs without an axis, loss "
                               "negsample_head(v, y, V) or hsoftmax_head(v, y, V); use per_example: true")
        return g

    def _check_target(self):
        """A target the run never reports would be ignored silently: name only the spec's metrics."""
        ops = [self.g.nodes[n].op for n in self.g.losses if n in self.g.nodes]
        if not ops:
            return              # no loss: reported by itself
        have = [m for op in ops for m in METRICS_OF.get(op, ())]
        if "acc" in have and any(n.op == "input" and n.attrs.get("target") and n.init is not None
                                 for n in self.g.nodes.values()):
            have += FREE_METRICS
        have = list(dict.fromkeys(have))
        for k in (self.g.train.get("target") or {}):
            if k in METRICS and k not in have:
                self.probs.add(self.doc.key_loc(("train", "target", k)),
                               f"target {k}: this spec's loss ({', '.join(ops)}) reports "
                               f"{', '.join(have)}{did_you_mean(k, have)}")

    # ------------------------------------------------------------ sections
    def _dims(self, dims: dict) -> dict:
        out = {}
        for k, v in dims.items():
            if k in self.bind:
                out[k] = self.bind[k]
            elif v == "data":
                out[k] = k          # symbolic until data binds it
            elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
                out[k] = v
            else:
                self.probs.add(self.doc.where(("dims", k)), f"dim '{k}' must be a positive integer or 'data', got {v!r}")
        for k, v in self.bind.items():
            out.setdefault(k, v)
        return out

    def _inputs(self, inputs: dict, scope: Scope):
        for name, spec in inputs.items():
            loc = self.doc.key_loc(("inputs", name))
            kind = next((k for k in ("tokens", "real", "label") if k in spec), None)
            axis = spec.get("axis")
            size = self._size(spec.get(kind), scope, self.doc.where(("inputs", name, kind))) if kind else 1
            width = spec.get("width", 1)
            ty = Ty(width, None, "i") if kind in ("tokens", "label") else Ty(size)
            node = self.g.add(Node(name, "input", loc=loc, axis=axis, ty=ty,
                                   attrs={"kind": kind, "vocab": spec.get(kind) if kind != "real" else None,
                                          "target": bool(spec.get("target", False)),
                                          "field": spec.get("from", name), "size": size,
                                          "width": spec.get("width")}))
            scope.names[name] = Operand(name)
            if axis and axis not in self.g.axes:
                self.g.axes.append(axis)
                mask = self.g.add(Node(f"mask.{axis}", "input", loc=loc, axis=axis, ty=Ty(1),
                                       attrs={"kind": "mask", "field": f"{node.attrs['field']}_mask", "target": False}))
                self.g.masks[axis] = mask.name

    def _size(self, v, scope: Scope, loc: Loc, args_scope: Optional[Scope] = None):
        """Evaluate a size: an int, a dim name, arithmetic of them, or in(x) inside a block."""
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if not isinstance(v, str):
            self.probs.add(loc, f"expected a size (an integer or a dim name), got {v!r}")
            return ANY
        try:
            # `in` is a Python keyword; in(x) (the size of block argument x) is spelled for ast
            tree = ast.parse(re.sub(r"\bin\s*\(", "in_(", v), mode="eval").body
        except SyntaxError:
            self.probs.add(loc, f"cannot parse size '{v}'")
            return ANY

        def ev(t):
            if isinstance(t, ast.Constant) and isinstance(t.value, int):
                return t.value
            if isinstance(t, ast.Name):
                hit = _lookup(scope, t.id)
                if isinstance(hit, tuple) and hit[0] == "dim":
                    return hit[1]
                known = [k for k, x in _all_names(scope).items() if isinstance(x, tuple) and x[0] == "dim"]
                raise SpecError.at(loc, f"unknown dim '{t.id}'{did_you_mean(t.id, known)}")
            if isinstance(t, ast.BinOp) and type(t.op) in (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv):
                a, b = ev(t.left), ev(t.right)
                if isinstance(a, int) and isinstance(b, int):
                    return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b,
                            ast.FloorDiv: a // max(b, 1)}[type(t.op)]
                return f"{a}{'+-*/'[[ast.Add, ast.Sub, ast.Mult, ast.FloorDiv].index(type(t.op))]}{b}"
            if isinstance(t, ast.Call) and isinstance(t.func, ast.Name) and t.func.id == "in_" and len(t.args) == 1 \
                    and isinstance(t.args[0], ast.Name):
                hit = _lookup(scope, t.args[0].id)
                if isinstance(hit, Operand):
                    return ("in", hit)
                raise SpecError.at(loc, f"in({t.args[0].id}): '{t.args[0].id}' is not an argument of this block")
            raise SpecError.at(loc, f"cannot evaluate size '{v}'; use integers, dim names, + - * // and in(arg)")
        try:
            return ev(tree)
        except SpecError as e:
            self.probs.extend(e)
            return ANY

    def _params(self, params: dict, scope: Scope, path: tuple, doc: Located):
        for name, spec in params.items():
            loc = doc.key_loc(path + (name,))
            full = scope.prefix + name
            taken = _lookup_local(scope, name)
            if taken is not None:
                what = "a dim" if isinstance(taken, tuple) else "an input" if full in self.g.nodes and \
                    self.g.nodes[full].op == "input" else "a block argument"
                self.probs.add(loc, f"duplicate name '{name}': already defined as {what}")
            shape = [self._size(s, scope, doc.where(path + (name, "shape", i)))
                     for i, s in enumerate(spec.get("shape", []))]
            default = "zeros" if len(shape) < 2 else "xavier"
            raw = spec.get("init", default)
            if isinstance(raw, dict):
                init = self._file_init(raw, spec, default, scope, doc, path + (name, "init"))
            else:
                init = self._init(raw, scope, doc.where(path + (name, "init")))
            node = self.g.add(Node(full, "param", loc=loc, attrs={
                "shape": shape, "init": init, "learn": bool(spec.get("learn", True))}))
            node.ty = self._param_ty(shape)
            scope.names[name] = Operand(full)

    @staticmethod
    def _param_ty(shape):
        if any(isinstance(s, tuple) for s in shape):
            return None                        # waits for in(x); see _finish_params
        if len(shape) == 0:
            return Ty(1)
        if len(shape) == 1:
            return Ty(shape[0])
        return MatTy(shape[1], seq_rows=shape[0])

    def _init(self, text, scope: Scope, loc: Loc):
        e = E.parse(text, loc) if isinstance(text, str) else E.Num(float(text), loc)
        if isinstance(e, E.Num):
            return ("constant", [e.value])
        name = e.id if isinstance(e, E.Name) else e.fn if isinstance(e, E.Call) else str(text)
        if name not in INITS:
            self.probs.add(loc, f"unknown initializer '{name}'{did_you_mean(str(name), INITS)} "
                                f"(known: {', '.join(sorted(INITS))})")
            return ("zeros", [])
        args = e.args if isinstance(e, E.Call) else []
        if len(args) != INITS[name]:
            self.probs.add(loc, f"initializer {name} takes {INITS[name]} argument(s), got {len(args)}")
            return (name, [0.0] * INITS[name])
        return (name, [self._number(a, scope) for a in args])

    def _file_init(self, raw: dict, spec: dict, default, scope: Scope, doc: Located, path: tuple):
        """init: {file: vectors.txt, rest: normal(0.1)}: rows read from a word2vec file, matched to
        the task's vocabulary by word when the data is bound (runtime/export/word2vec.py); the
        other rows, and every row until then, from `rest` (default: the param's default)."""
        rest = self._init(raw.get("rest", default), scope, doc.where(path + ("rest",) if "rest" in raw else path))
        rel = raw.get("file")
        file = os.path.join(os.path.dirname(doc.file) if doc.file != "<string>" else "", str(rel))
        rows = (spec.get("shape") or [None])[0]
        if scope.prefix or not (isinstance(rows, str) and (self.doc.data.get("dims") or {}).get(rows) == "data"):
            self.probs.add(doc.where(path), f"init from a file matches rows to the task's vocabulary by word: "
                                            f"the param's rows must be a vocabulary dim declared 'data' "
                                            f"(V, V_src, V_tgt), got shape {spec.get('shape')}")
        elif not os.path.isfile(file):
            self.probs.add(doc.where(path + ("file",)), f"vectors file '{rel}' not found (looked for {file})")
        return ("file", (os.path.abspath(file), rest, rows))

    def _number(self, e, scope: Scope) -> float:
        if isinstance(e, E.Num):
            return e.value
        if isinstance(e, E.Name):
            hit = _lookup(scope, e.id)
            if isinstance(hit, tuple) and hit[0] == "dim" and isinstance(hit[1], int):
                return float(hit[1])
            raise SpecError.at(e.loc, f"'{e.id}' is not a known numeric dim here")
        if isinstance(e, E.BinOp) and e.op in "+-*/":
            a, b = self._number(e.a, scope), self._number(e.b, scope)
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[e.op]
        raise SpecError.at(e.loc, "expected a number")

    def _nodes(self, nodes: dict, scope: Scope, path: tuple, doc: Located):
        # Pre-register every name so equations may refer to nodes defined further down.
        entries = []
        for key, spec in nodes.items():
            targets = [k.strip() for k in key.split(",")]
            for t in targets:
                if not t.isidentifier():
                    self.probs.add(doc.key_loc(path + (key,)), f"'{t}' is not a valid node name")
                taken = _lookup_local(scope, t)
                if taken is not None:
                    op = self.g.nodes.get(scope.prefix + t, Node('', '')).op
                    what = ("a dim" if isinstance(taken, tuple) else "a param" if op == "param"
                            else "an input" if op == "input" else "a node")
                    self.probs.add(doc.key_loc(path + (key,)), f"duplicate name '{t}': already defined as {what}")
                scope.names[t] = Operand(scope.prefix + t)
            if scope.prefix == "":
                self.g.user_nodes.extend(targets)
            entries.append((key, targets, spec))
        for key, targets, spec in entries:
            eq, init_text, axis = spec, None, None
            if isinstance(spec, dict):
                unknown = set(spec) - {"eq", "init", "axis"}
                for u in sorted(unknown):
                    self.probs.add(doc.key_loc(path + (key, u)), f"unknown node key '{u}'{did_you_mean(u, ['eq', 'init', 'axis'])}")
                eq, init_text, axis = spec.get("eq"), spec.get("init"), spec.get("axis")
                eqpath = path + (key, "eq")
            else:
                eqpath = path + (key,)
            loc = doc.where(eqpath)
            try:
                ex = E.parse(eq, loc)
            except SpecError as err:
                self.probs.extend(err)
                continue
            if len(targets) > 1:
                self._multi(targets, ex, scope, loc)
                continue
            name = scope.prefix + targets[0]
            try:
                op = self._lower(ex, scope, name, top=True)
            except SpecError as err:
                self.probs.extend(err)
                continue
            if op is None:
                continue
            if op.node != name:
                self.aliases[name] = op
            node = self.g.nodes.get(name)
            target = node if node is not None else self.g.nodes.get(op.node)
            if axis and target is not None:
                target.declared_axis = axis
            if init_text is not None and target is not None and init_text != "zeros":
                try:
                    iex = E.parse(init_text, doc.where(path + (key, "init")))
                    if isinstance(iex, E.Name) and _lookup(scope, iex.id) is ZEROS:
                        continue
                    target.init = self._lower(iex, scope, name + ".init", top=False)
                    target.init_at = (iex.loc, E.unparse(iex), targets[0], None)
                    call = self.g.calls.get(scope.prefix)
                    if isinstance(iex, E.Name) and call is not None and call.library and iex.id in call.args:
                        # a library block's initial state given at the call: report it there
                        _, loc, text = call.args[iex.id]
                        target.init_at = (loc, text, targets[0], (call.block, iex.id, call.node))
                except SpecError as err:
                    self.probs.extend(err)

    def _multi(self, targets, ex, scope, loc):
        if not (isinstance(ex, E.Call) and ex.fn == "split"):
            self.probs.add(loc, f"several names ({', '.join(targets)}) need split(x, {len(targets)}) on the right")
            return
        if len(ex.args) != 2 or not isinstance(ex.args[1], E.Num) or int(ex.args[1].value) != len(targets):
            self.probs.add(loc, f"split must name as many parts as there are targets: split(x, {len(targets)})")
            return
        src = self._lower(ex.args[0], scope, scope.prefix + targets[0] + "#in")
        k = len(targets)
        for i, t in enumerate(targets):
            name = scope.prefix + t
            self.g.add(Node(name, "take", [src], {"col": i, "width": -k}, loc=loc))

    # ------------------------------------------------------------ lowering
    def _loss_terms(self, node: str) -> Optional[list]:
        """The loss nodes a `loss:` entry adds up: a loss op's node, or those of a sum of them
        (each scalar loss goes to the plan's list of losses, which the model sums); None for
        anything else (a value, a scaled loss)."""
        n = self.g.nodes.get(node)
        if n is not None and n.op in REGISTRY and REGISTRY[n.op].loss:
            return [node]
        if n is not None and n.op == "add":
            parts = [self._loss_terms(a.node) for a in n.args]
            if all(p is not None for p in parts):
                return [t for p in parts for t in p]
        return None

    def _lower_expr(self, text, scope: Scope, loc: Loc, name: str) -> Optional[Operand]:
        try:
            return self._lower(E.parse(text, loc), scope, name, top=True)
        except SpecError as err:
            self.probs.extend(err)
            return None

    def _fresh(self, scope: Scope, owner: str) -> str:
        n = scope.counters.get(owner, 0) + 1
        scope.counters[owner] = n
        return f"{owner}#{n}"

    def _emit(self, name, op, args, loc, attrs=None) -> Operand:
        self.g.add(Node(name, op, list(args), dict(attrs or {}), loc=loc))
        return Operand(name)

    def _const(self, value: float, loc: Loc) -> Operand:
        name = f"const:{value:g}"
        if name not in self.g.nodes:
            self.g.add(Node(name, "const", loc=loc, ty=Ty(1), attrs={"value": value}))
        return Operand(name)

    def _lower(self, e, scope: Scope, name: str, top: bool = False) -> Operand:
        """Lower expression e; if `top`, the result node is called `name`."""
        out = name if top else self._fresh(scope, name.split("#")[0])
        if isinstance(e, E.Num):
            return self._const(e.value, e.loc)
        if isinstance(e, E.Str):
            raise SpecError.at(e.loc, f"a string ('{e.value}') is only allowed as an option value")
        if isinstance(e, (E.Name, E.Ref)):
            op = self._resolve(e.id, scope, e.loc)
            delay = e.delay * scope.direction if isinstance(e, E.Ref) else 0
            if op is ZEROS:
                raise SpecError.at(e.loc, f"'{e.id}' is zeros here; it can only be an initial value (init: {e.id})")
            if isinstance(op, tuple):
                if isinstance(e, E.Ref) and e.delay:
                    raise SpecError.at(e.loc, f"{E.unparse(e)}: '{e.id}' is a dim, not a node")
                return self._const(float(op[1]) if isinstance(op[1], int) else 0.0, e.loc)
            if delay:
                self.g.delay_at.setdefault((op.node, op.delay + delay), e.loc)
            return Operand(op.node, op.delay + delay, op.mode)
        if isinstance(e, E.Lookup):
            table = self._lower(e.table, scope, out)
            idx = self._lower(e.index, scope, out)
            return self._emit(out, "embed", [table, idx], e.loc)
        if isinstance(e, E.BinOp):
            if e.op == "/":
                if not isinstance(e.b, E.Num) or e.b.value == 0:
                    raise SpecError.at(e.loc, "division only by a non-zero number (x / 2); write x * y for products")
                a = self._lower(e.a, scope, out)
                return self._emit(out, "mul", [a, self._const(1.0 / e.b.value, e.loc)], e.loc)
            a = self._lower(e.a, scope, out)
            b = self._lower(e.b, scope, out)
            prim = {"+": "add", "-": "sub", "*": "mul", "@": "matmul"}[e.op]
            return self._emit(out, prim, [a, b], e.loc)
        if isinstance(e, E.Call):
            return self._call(e, scope, out, name)
        raise SpecError.at(getattr(e, "loc", None), "unsupported expression")

    def _resolve(self, ident: str, scope: Scope, loc: Loc):
        hit = _lookup(scope, ident)
        if hit is None and "." in ident:
            # a member of a block instance: enc.s, enc.fwd.h
            full = scope.prefix + ident
            if full in self.aliases:
                return self.aliases[full]
            if full in self.g.nodes:
                return Operand(full)
        if hit is None:
            known = [k for k, v in _all_names(scope).items()]
            if "." in ident:
                known += [k[len(scope.prefix):] for k in self.g.nodes if k.startswith(scope.prefix) and "#" not in k]
            raise SpecError.at(loc, f"unknown name '{ident}'{did_you_mean(ident, known)}")
        return hit

    def _call(self, e: E.Call, scope: Scope, out: str, name: str) -> Operand:
        fn, loc = e.fn, e.loc
        e = self._variant(e)
        fn = e.fn
        if fn in self.blocks:
            return self._instantiate(self.blocks[fn], e, scope, name)
        if fn in ("last", "first", "all"):
            self._arity(e, 1)
            a = self._lower(e.args[0], scope, out)
            if a.mode != "step" or a.delay:
                raise SpecError.at(loc, f"{fn}() takes a node name, e.g. {fn}(enc)")
            return Operand(a.node, 0, fn)
        if fn in CONSTRUCT_KWARGS:
            self._check_kwargs(e, CONSTRUCT_KWARGS[fn], CONSTRUCTS[fn])
        if fn in ("bidirectional", "stack"):
            return self._meta(e, scope, name)
        if fn == "teacher_forced":
            return self._teacher_forced(e, scope, out, name)
        if fn == "split":
            raise SpecError.at(loc, "split(x, k) needs k names on the left: i, f, g, q: split(z, 4)")
        target = callable_ops().get(fn)
        if target is None:
            hit = _lookup(scope, fn)
            if isinstance(hit, Operand) and hit is not ZEROS:
                what = "an input" if self.g.nodes.get(hit.node, Node("", "")).op == "input" else \
                    "a param" if self.g.nodes.get(hit.node, Node("", "")).op == "param" else "a node"
                args = ", ".join(E.unparse(a).strip("()").replace(" ", "") for a in e.args)
                raise SpecError.at(loc, f"'{fn}' is {what}, not a function: a step is read with brackets, "
                                        f"{fn}[{args or 't-1'}]")
            known = FUNCTIONS + sorted(self.blocks)
            hint = did_you_mean(fn, known) or f" (functions: {', '.join(FUNCTIONS)}; blocks: {', '.join(sorted(self.blocks))})"
            raise SpecError.at(loc, f"unknown function '{fn}'{hint}")
        return self._lower_call(e, target, scope, out)

    def _check_kwargs(self, e: E.Call, allowed, usage: str):
        for k, v in e.kwargs.items():
            if k not in allowed:
                hint = did_you_mean(k, allowed) if allowed else ""
                raise SpecError.at(v.loc, f"{e.fn} has no argument '{k}'" + (hint or f" ({usage})"))

    def _lower_call(self, e: E.Call, target, scope: Scope, out: str) -> Operand:
        """A call of a registry op (or of sugar for one), lowered from its entry: positional
        parameters and keywords bind as the entry's syntax says, operands are lowered, numbers
        become attributes (checked by the entry), tables are bound to the data's."""
        sig: OpSig = REGISTRY[target.op] if isinstance(target, Sugar) else target
        params, kwargs = target.params
        self._check_kwargs(e, tuple(kwargs), target.syntax)
        if sig.variadic:
            if len(e.args) < 2:
                raise SpecError.at(e.loc, f"{e.fn} takes two or more nodes")
            return self._emit(out, sig.name, [self._lower(a, scope, out) for a in e.args], e.loc)
        names = params + tuple(k for k in kwargs if k not in e.kwargs)
        if not len(params) <= len(e.args) <= len(names):
            n = len(params)
            raise SpecError.at(e.loc, f"{e.fn} takes {n} argument{'s' if n != 1 else ''}, got {len(e.args)}")
        bound = dict(zip(names, e.args))
        bound.update(e.kwargs)
        given = lambda k: bound[k] if k in bound else E.Num(float(kwargs[k]), e.loc)  # noqa: E731
        # the op's operands, in kernel order: sugar fixes some of them (relu(z) = rectify(z, 0))
        sources = dict(zip((a.name for a in sig.args), target.args)) if isinstance(target, Sugar) else {}
        args = []
        for a in sig.args:
            if a.kind == "table":
                args.append(self._table(a.of))
            elif a.kind == "mask" and a.of:
                continue                # appended once the operands' axes are known (graph.infer)
            else:
                src = sources.get(a.name, a.name)
                args.append(self._const(src, e.loc) if isinstance(src, float) else self._lower(given(src), scope, out))
        attrs = {}
        for k in sig.attrs:
            v = self._number(given(k), scope) if k in params or k in kwargs else -1.0
            attrs[k] = int(v) if v == int(v) else v
        problem = sig.check(attrs) if sig.check else None
        if problem:
            attr, msg = problem
            raise SpecError.at(bound[attr].loc if attr in bound else e.loc, msg)
        return self._emit(out, sig.name, args, e.loc, attrs)

    def _variant(self, e: E.Call) -> E.Call:
        """`gru(x, H, reset='after')` picks the block that declares option {reset: after}."""
        family = [b for b in self.blocks.values() if b.name == e.fn or b.name.startswith(e.fn + "_")]
        for k, v in e.kwargs.items():
            choices = sorted({b.option[k] for b in family if k in b.option})
            if choices and not isinstance(v, E.Str):
                raise SpecError.at(v.loc, f"{e.fn}: {k} must be one of {', '.join(choices)}, got {E.unparse(v)}")
        opts = {k: v.value for k, v in e.kwargs.items() if isinstance(v, E.Str)}
        if not opts or not family:
            return e
        for k, v in opts.items():
            choices = [b.option[k] for b in family if k in b.option]
            if not choices:
                continue
            hit = next((b for b in family if b.option.get(k) == v), None)
            if hit is None:
                raise SpecError.at(e.kwargs[k].loc, f"{e.fn}: {k} must be one of {', '.join(sorted(choices))}, "
                                                    f"got '{v}'{did_you_mean(v, choices)}")
            kwargs = {a: x for a, x in e.kwargs.items() if a != k}
            return E.Call(hit.name, e.args, kwargs, e.loc)
        return e

    def _table(self, kind: str) -> Operand:
        """Int tables the data binds (the Huffman tree, the unigram table)."""
        name = f"table.{kind}"
        if name not in self.g.nodes:
            self.g.add(Node(name, "input", ty=Ty(1, None, "i"),
                            attrs={"kind": "table", "field": kind, "target": False}))
        return Operand(name)

    def _arity(self, e: E.Call, n: int):
        if len(e.args) != n:
            raise SpecError.at(e.loc, f"{e.fn} takes {n} argument{'s' if n != 1 else ''}, got {len(e.args)}")

    def _teacher_forced(self, e: E.Call, scope: Scope, out: str, name: str) -> Operand:
        """prev = y[t-1] when training (teacher forcing), argmax(o[t-1]) when free running;
        scheduled sampling mixes the two with probability `sampling`, constant or rising linearly
        over training (schedule='linear'; the trainer sets the probability every step)."""
        if len(e.args) != 2:
            raise SpecError.at(e.loc, "teacher_forced(y, o) takes the target y and the prediction o it replaces")
        y = self._lower(e.args[0], scope, out)
        pred = self._lower(e.args[1], scope, out)
        yn = self.g.nodes.get(y.node)
        if yn is None or yn.op != "input" or not yn.attrs.get("target"):
            raise SpecError.at(e.args[0].loc, f"teacher_forced: '{y.node}' must be a target input "
                                              f"(declare it with target: true)")
        free = e.kwargs.get("free", E.Str("argmax", e.loc))
        if not isinstance(free, E.Str) or free.value not in ("argmax", "sample"):
            raise SpecError.at(getattr(free, "loc", e.loc), "teacher_forced: free must be 'argmax' or 'sample'")
        sampling = self._number(e.kwargs["sampling"], scope) if "sampling" in e.kwargs else 0.0
        if not 0 <= sampling <= 1:
            raise SpecError.at(e.kwargs["sampling"].loc, f"teacher_forced: sampling must be a probability "
                                                        f"between 0 and 1, got {sampling:g}")
        schedule = e.kwargs.get("schedule", E.Str("constant", e.loc))
        if not isinstance(schedule, E.Str) or schedule.value not in ("constant", "linear"):
            raise SpecError.at(getattr(schedule, "loc", e.loc),
                               "teacher_forced: schedule must be 'constant' (sample with probability `sampling` "
                               "throughout) or 'linear' (from 0 at the first step to `sampling` at the last)")
        bos = self._const_tokens(BOS)
        teacher = Operand(y.node, 1)
        if self.mode == "train" and sampling == 0.0:
            node = teacher      # an alias: training reads the shifted targets, no recurrence
        else:
            guess = self._emit(out + ".pred", free.value, [pred], e.loc,
                               {"temperature": 1.0} if free.value == "sample" else {})
            self.g.nodes[guess.node].init = bos
            # free running reads no target: the guess itself carries the decoder's axis
            self.g.nodes[guess.node].declared_axis = yn.axis
            if self.mode == "train":
                node = self._emit(out, "mix", [teacher, Operand(guess.node, 1)], e.loc,
                                  {"prob": sampling, "schedule": schedule.value})
            else:
                node = Operand(guess.node, 1)
        self.g.nodes[y.node].init = bos
        return node

    def _const_tokens(self, tok: int) -> Operand:
        name = f"token:{tok}"
        if name not in self.g.nodes:
            self.g.add(Node(name, "const", ty=Ty(1, None, "i"), attrs={"value": tok}))
        return Operand(name)

    # ------------------------------------------------------------ blocks
    def _instantiate(self, b: Block, e: E.Call, scope: Scope, name: str, direction: int = 1,
                     first_arg: Optional[Operand] = None) -> Operand:
        prefix = name + "." if "#" not in name else f"{name.split('#')[0]}.{b.name}."
        if prefix in {k[:len(prefix)] for k in self.g.nodes}:
            n = 2
            while f"{prefix[:-1]}_{n}." in {k[:len(prefix) + 2] for k in self.g.nodes}:
                n += 1
            prefix = f"{prefix[:-1]}_{n}."
        inner = Scope(prefix, {}, direction, {}, None)
        self.g.instances[prefix] = b.doc.file
        # positional order: required args, then dims, then args with defaults: rnn(x, H, h0=...)
        params = [a for a, d in b.args if d is None] + list(b.dims) + [a for a, d in b.args if d is not None]
        given = list(e.args)
        if len(given) > len(params):
            raise SpecError.at(e.loc, f"block {b.name} takes at most {len(params)} arguments "
                                      f"({', '.join(params)}), got {len(given)}")
        bound = dict(zip(params, given))
        for k, v in e.kwargs.items():
            if k not in params:
                family = [x for x in self.blocks.values() if x.name.split("_")[0] == b.name.split("_")[0]]
                options = sorted({o for x in family for o in x.option})
                raise SpecError.at(v.loc, f"block {b.name} has no argument '{k}'{did_you_mean(k, params + options)}")
            if k in bound:
                raise SpecError.at(v.loc, f"block {b.name}: argument '{k}' given twice")
            bound[k] = v
        if first_arg is not None:
            bound.pop(b.args[0][0], None)
        shown = re.sub(r"\.(fwd|bwd|l\d+)$", "", name.split("#")[0])
        call = Call(e.loc, b.name, shown, {}, os.path.dirname(os.path.abspath(b.doc.file)) == os.path.abspath(STDLIB))
        self.g.calls[prefix] = call
        for a, default in b.args:
            if a == b.args[0][0] and first_arg is not None:
                inner.names[a] = first_arg
                if e.args:
                    call.args[a] = (first_arg, e.args[0].loc, E.unparse(e.args[0]))
                continue
            if a not in bound and default is None:
                raise SpecError.at(e.loc, f"block {b.name} needs argument '{a}' ({', '.join(params)})")
            if a in bound:
                inner.names[a] = self._lower(bound[a], scope, f"{name}#arg")
                call.args[a] = (inner.names[a], bound[a].loc, E.unparse(bound[a]))
            elif isinstance(default, E.Name) and default.id == "zeros":
                inner.names[a] = ZEROS
            else:
                inner.names[a] = self._lower(default, inner, prefix + a)
        for d, default in b.dims.items():
            if d in bound:
                size = self._size_arg(bound[d], scope)
                if isinstance(size, (int, float)) and (size < 1 or size != int(size)):
                    raise SpecError.at(bound[d].loc, f"block {b.name}: dim '{d}' must be a positive integer, got {size:g}")
                inner.names[d] = ("dim", int(size) if isinstance(size, float) else size)
            elif default is not None:
                inner.names[d] = ("dim", default)
            else:
                raise SpecError.at(e.loc, f"block {b.name} needs dim '{d}' ({', '.join(params)})")
        self._params(b.params, inner, ("params",), b.doc)
        self._nodes(b.nodes, inner, ("nodes",), b.doc)
        out = b.out
        hit = _lookup_local(inner, out)
        if hit is None:
            raise SpecError.at(b.doc.where(("out",)), f"block {b.name}: out '{out}' is not one of its nodes")
        return hit

    def _size_arg(self, e, scope):
        if isinstance(e, E.Num):
            return e.value
        if isinstance(e, E.Name):
            hit = _lookup(scope, e.id)
            if isinstance(hit, tuple):
                return hit[1]
        if isinstance(e, E.BinOp):
            return self._number(e, scope)
        raise SpecError.at(e.loc, f"expected a size, got '{E.unparse(e)}'")

    def _meta(self, e: E.Call, scope: Scope, name: str) -> Operand:
        if not e.args or not isinstance(e.args[0], E.Call) or e.args[0].fn not in self.blocks:
            raise SpecError.at(e.loc, f"{e.fn}() wraps a block call, e.g. {e.fn}(lstm(x, H))")
        inner = self._variant(e.args[0])
        block = self.blocks[inner.fn]
        base = name if "#" not in name else name.split("#")[0]
        if e.fn == "bidirectional":
            combine = e.kwargs.get("combine", E.Str("concat", e.loc))
            if not isinstance(combine, E.Str) or combine.value not in ("concat", "sum"):
                raise SpecError.at(getattr(combine, "loc", e.loc), "bidirectional: combine must be 'concat' or 'sum'")
            x = self._lower(inner.args[0], scope, base + "#x") if inner.args else None
            f = self._instantiate(block, inner, scope, base + ".fwd", 1, first_arg=x)
            b = self._instantiate(block, inner, scope, base + ".bwd", -1, first_arg=x)
            op = "concat" if combine.value == "concat" else "add"
            return self._emit(name, op, [f, b], e.loc)
        raw = self._number(e.kwargs.get("layers", E.Num(2, e.loc)), scope)
        if raw < 1 or raw != int(raw):
            raise SpecError.at(e.loc, f"stack: layers must be a whole number of at least 1, got {raw:g}")
        layers = int(raw)
        x = self._lower(inner.args[0], scope, base + "#x") if inner.args else None
        for i in range(1, layers + 1):
            x = self._instantiate(block, inner, scope, f"{base}.l{i}", scope.direction, first_arg=x)
        return x

    def _load_blocks(self):
        files = sorted(os.path.join(STDLIB, f) for f in os.listdir(STDLIB) if f.endswith(".yaml"))
        # relative to the spec, and shown the way the spec's own path was given
        spec_dir = os.path.dirname(self.doc.file) if self.doc.file != "<string>" else ""
        user = self.doc.data.get("blocks") or []
        for i, rel in enumerate(user if isinstance(user, list) else []):
            path = os.path.join(spec_dir, rel)
            if os.path.isdir(path):
                self.probs.add(self.doc.where(("blocks", i)), f"block file '{rel}' is a directory ({path}), not a block file")
                continue
            if not os.path.exists(path):
                self.probs.add(self.doc.where(("blocks", i)), f"block file '{rel}' not found (looked for {path})")
                continue
            files.append(path)
        for path in files:
            try:
                doc = load_file(path)
            except SpecError as err:
                self.probs.extend(err)
                continue
            from .schema import check_block
            try:
                check_block(doc)
            except SpecError as err:
                self.probs.extend(err)
                continue
            d = doc.data
            args = []
            for a in d.get("args", []):
                if isinstance(a, dict):
                    (k, v), = a.items()
                    args.append((k, E.parse(v, doc.where(("args",))) if v is not None else None))
                else:
                    args.append((a, None))
            dims = {k: (None if v == "required" else v) for k, v in (d.get("dims") or {}).items()}
            name = d["block"]
            if name in FUNCTIONS:
                self.probs.add(doc.where(("block",)), f"block name '{name}' is a built-in function; choose another")
            self.blocks[name] = Block(name, doc, args, dims, d.get("params") or {}, d.get("nodes") or {}, d["out"],
                                      dict(d.get("option") or {}))

    # ------------------------------------------------------------ finishing
    def _resolve_aliases(self):
        def follow(op: Operand) -> Operand:
            seen = set()
            while op.node in self.aliases and op.node not in seen:
                seen.add(op.node)
                tgt = self.aliases[op.node]
                op = Operand(tgt.node, tgt.delay + op.delay, op.mode if op.mode != "step" else tgt.mode)
            return op
        for n in self.g.nodes.values():
            n.args = [follow(a) for a in n.args]
            if n.op == "param":
                n.attrs["shape"] = [("in", follow(x[1])) if isinstance(x, tuple) else x for x in n.attrs["shape"]]
            if n.init is not None:
                n.init = follow(n.init)
        self.g.outputs = {k: follow(v) for k, v in self.g.outputs.items()}
        self.g.losses = [follow(Operand(x)).node for x in self.g.losses]
        self.g.aliases = {k: follow(v) for k, v in self.aliases.items()}


def _listed(v, path):
    if isinstance(v, list):
        return [(path + (i,), x) for i, x in enumerate(v)]
    return [(path, v)]


def _lookup_local(scope: Scope, name: str):
    return scope.names.get(name)


def _lookup(scope: Scope, name: str):
    s = scope
    while s is not None:
        if name in s.names:
            return s.names[name]
        s = s.parent
    return None


def _all_names(scope: Scope) -> dict:
    out = {}
    s = scope
    while s is not None:
        for k, v in s.names.items():
            out.setdefault(k, v)
        s = s.parent
    return out


def _word2vec_form(g: Graph) -> bool:
    """The graph is one lookup of a param by an input and a word2vec head on it (nothing else
    computed), all without an axis: the only form word2vec's update rule is defined for."""
    computed = [n for n in g.nodes.values() if n.op not in ("input", "param")]
    if len(computed) != 2 or len(g.losses) != 1 or any(n.axis for n in g.nodes.values()):
        return False
    head = g.nodes[g.losses[0]]
    look = g.nodes.get(head.args[0].node) if head.args else None
    return (head.op in ("negsample", "hsoftmax") and look is not None and look.op in ("embed", "embed_mean")
            and [g.nodes[a.node].op for a in look.args] == ["param", "input"])
