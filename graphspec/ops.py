"""The op registry: the single source of truth for every primitive.

An entry says everything about one op, and nothing else in the code names these facts:
  - its surface syntax and keyword arguments (`syntax`), which lang.py lowers generically,
    or the sugar that reaches it (`SUGAR`: relu(z) is rectify(z, 0));
  - its operands (`Arg`: dtype, and whether the compiler supplies it: a padding mask, a table the
    data binds) and attributes, with the checks on their values;
  - its shape rule (the decorated function) and the maths of forward and backward (docstring);
  - for elementwise ops, the maths as expressions (`ew`), from which runtime/ generates kernels
    and fuses whole groups of nodes into one kernel;
  - the kernel module in runtime/kernels/ that holds a hand-written kernel pair, if any;
  - the flags the compiler needs (a loss, emitted step by step, replaced when not training,
    a scratch buffer and its width, operands whose gradient is row-sparse);
  - an example of valid operands, from which tests are generated for every op.
graphspec/ uses the registry for shape inference, lowering and the schema; runtime/ binds a
kernel pair to every entry (tests/test_registry.py fails if one is missing).

Shapes here are *per-step feature shapes*: every value is a batch of rows, and the registry
only sees what one row looks like. A row type is `Ty(feat, seq, dtype)`:
  feat  -- feature size (an int, or a str naming a dim not yet bound to data);
  seq   -- None, or the axis a value spans inside one step (the keys of attention: all(enc));
  dtype -- 'f' (float) or 'i' (integer token ids).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

Size = Union[int, str]


class ShapeError(ValueError):
    """A shape rule refused its operands; the message names both shapes."""


@dataclass(frozen=True)
class Ty:
    feat: Size
    seq: Optional[str] = None
    dtype: str = "f"

    def __str__(self) -> str:
        kind = "int" if self.dtype == "i" else "f"
        inner = f"{self.seq}, " if self.seq else ""
        return f"{kind}[{inner}{self.feat}]"


@dataclass(frozen=True)
class MatTy(Ty):
    """A matrix param [rows, feat] (for W @ x: [out, in]); only matmul and lookups take one."""
    seq_rows: Size = 0

    def __str__(self) -> str:
        return f"f[{self.seq_rows}, {self.feat}]"


@dataclass(frozen=True)
class Arg:
    """One operand. kind: 'value'; 'mask' (a 0/1 padding mask per row: read, never
    differentiated; with `of` set, the compiler appends it: the mask of operand `of`'s step axis,
    or with span=True of the axis it spans, ones where there is none); 'table' (an int table the
    data binds, named by `of`: 'tree' or 'unigram')."""
    name: str
    dtype: str = "f"
    kind: str = "value"
    of: str = ""
    span: bool = False
    rows: bool = False          # backward touches only the rows the op's ids pick (a lookup table)
    nograd: bool = False        # the op passes no gradient to it (a packed weight, and W beside it)


@dataclass(frozen=True)
class Elementwise:
    """y = fwd, and per operand its gradient contribution given g = dL/dy: expressions over the
    operand names, y and g, with + - * /, numbers, `a if c else b`, comparisons, and tanh,
    sigmoid, exp, log1p, abs, max, min. A scalar operand (size 1) broadcasts."""
    fwd: str
    grads: dict


@dataclass(frozen=True)
class OpSig:
    name: str
    args: tuple                  # Arg, in kernel order
    out: str                     # output dtype
    shape: Callable              # (list[Ty], attrs) -> Ty
    doc: str
    attrs: tuple = ()            # attribute names, in kernel order (floats in the plan)
    grad: bool = True            # False: no gradient flows through (argmax, sampling)
    scratch: Optional[str] = None    # 'f' or 'i': a per-row buffer the forward fills for backward
    scratch_cols: str = ""       # its width: 'out' (the output's columns) or an attribute's name
    syntax: str = ""             # how a spec calls it: 'negsample(v, y, W, k=5)'; '' = compiler-made
    check: Optional[Callable] = None     # attrs -> None, or (the attribute at fault, a message)
    prepare: Optional[Callable] = None   # (operand types, attrs) -> fill derived attrs; False: wait
    loss: bool = False           # a scalar loss [1, 1]: sum over rows / norm (norm = batch)
    stepwise: bool = False       # rows pair key steps with batch rows: emitted one step at a time
    eval_as: str = ""            # the op it becomes when not training (dropout -> copy)
    variadic: str = ""           # any number of operands, emitted as one `variadic` eqn per part
    ew: Optional[Elementwise] = None
    gemm: tuple = ()             # (weight, input): in a loop, dW = one GEMM over every step (deferred)
    assigns: tuple = ()          # operands whose whole gradient the backward can store (=) instead
                                 # of adding, when the plan says so (Eqn.assign; passes/assign.py)
    onto: int = -1               # the output starts as a copy of this operand (it may take its buffer)
    kernels: str = ""            # runtime/kernels/<module>.py with NAME_fwd/NAME_bwd ('' = generated)
    rowwise: bool = False        # row r of the output reads only row r of each operand with the
                                 # batch's rows (elementwise ops are, by their `ew`): Plan.row_segments
    units: bool = False          # the kernel can compute the output columns of a unit range alone
                                 # (attrs[UNITS:]; Plan.unit_segments: a loop split by hidden units)
    out_unread: bool = False     # the backward never reads the output's values, nor operand `onto`'s:
                                 # a later kernel may overwrite them (graphspec/passes/inplace.py)
    example: Optional[Callable] = None   # gen -> (operands, out shape, attrs): valid operands for tests

    @property
    def inputs(self) -> str:
        return "".join(a.dtype for a in self.args)

    @property
    def masks(self) -> tuple:
        return tuple(k for k, a in enumerate(self.args) if a.kind == "mask")

    @property
    def row_local(self) -> bool:
        """Can one thread run rows [r0, r1) of this op while another runs the rest?"""
        return (self.rowwise or self.ew is not None) and self.scratch is None and not self.loss and not self.stepwise

    @property
    def rows(self) -> tuple:
        return tuple(k for k, a in enumerate(self.args) if a.rows)

    def stores(self, k: int) -> bool:
        """Can the backward store operand k's whole gradient (=) instead of adding it, when the plan
        says so (Eqn.assign): the operands in `assigns`, and every operand of a generated
        elementwise kernel (runtime/codegen.py elementwise_source)."""
        return k in self.assigns or (self.ew is not None and not self.kernels)

    @property
    def differentiable(self) -> tuple:
        """Operands whose gradient the backward kernel accumulates (when asked to)."""
        return tuple(k for k, a in enumerate(self.args)
                     if a.dtype == "f" and a.kind != "mask" and not a.nograd) if self.grad else ()

    @property
    def params(self) -> tuple:
        """The positional parameters of the surface call, and its keywords with defaults."""
        return _parse_syntax(self.syntax)


REGISTRY: dict[str, OpSig] = {}


def op(name, args, out="f", **kw):
    """Register the decorated shape rule as op `name`; `args` are Args or 'f'/'i' letters."""
    def register(rule):
        spec = tuple(a if isinstance(a, Arg) else Arg(f"x{k}" if len(args) > 1 else "x", a)
                     for k, a in enumerate(args))
        REGISTRY[name] = OpSig(name, spec, out, rule, (rule.__doc__ or "").strip(), **kw)
        return rule
    return register


def _parse_syntax(syntax: str) -> tuple:
    if not syntax:
        return (), {}
    call = ast.parse(syntax, mode="eval").body
    return (tuple(a.id for a in call.args),
            {k.arg: ast.literal_eval(k.value) for k in call.keywords})


ANY = "?"   # a size not inferred yet (inside a recurrence, before the fixpoint reaches it)


def _same(a: Size, b: Size) -> bool:
    return a == b or ANY in (a, b)


def _need(cond: bool, msg: str):
    if not cond:
        raise ShapeError(msg)


def _plain(t: Ty, what: str):
    _need(t.seq is None, f"{what} must be one vector per step, got {t}")


# ---------------------------------------------------------------- linear algebra
@op("matmul", (Arg("W"), Arg("x")), gemm=(0, 1), assigns=(0, 1), out_unread=True, kernels="linear",
    example=lambda g: ([g.f(3, g.C), g.f(g.R, g.C)], (g.R, 3), {}))
def _matmul(ts, at):
    """y = W x, as in the source's equations: W is a matrix param [N, K] (out, in), x a row [K],
    y a row [N]. Row-major: Y[R, N] = X[R, K] @ W.T (torch.nn.Linear's layout). Written `W @ x`.
    backward: dx += dy @ W, dW += dy.T @ x (summed over every row: all batch rows and, when
    hoisted, all time steps in one GEMM)."""
    w, x = ts
    _need(isinstance(w, MatTy), f"matmul: the left operand must be a matrix param (W @ x), got {w}")
    _need(not isinstance(x, MatTy), f"matmul: the right operand must be a vector, got {x}")
    _need(_same(x.feat, w.feat), f"matmul: cannot multiply [{w.seq_rows}, {w.feat}] by {x}: "
          f"the matrix takes {w.feat} inputs, the vector has {x.feat}")
    return Ty(w.seq_rows, x.seq)


@op("affine", (Arg("W"), Arg("x"), Arg("a")), gemm=(0, 1), onto=2, assigns=(0, 1), out_unread=True, kernels="linear",
    example=lambda g: ([g.f(3, g.C), g.f(g.R, g.C), g.f(g.B, 3)], (g.R, 3), {}))
def _affine(ts, at):
    """y = W x + a: a matmul whose only reader adds it to a (a bias row, or a value of y's size,
    such as the hoisted b + U x(t) of a recurrence). The compiler fuses the pair
    (graphspec/passes/affine.py): the GEMM accumulates into y (BLAS beta=1) after a is copied in,
    instead of writing a temporary that an add then reads. a's rows repeat as in add.
    backward: dx += dy @ W, dW += dy.T @ x, da += dy (summed over a's repeated rows)."""
    w, x, a = ts
    y = _matmul([w, x], at)
    _need(_same(a.feat, y.feat) and a.seq == y.seq, f"affine: the added value {a} does not match W x = {y}")
    return y


@op("affine_table", (Arg("W"), Arg("E"), Arg("b")), assigns=(0, 1), out_unread=True, kernels="linear",
    example=lambda g: ([g.f(3, g.C), g.f(g.V, g.C), g.f(1, 3)], (g.V, 3), {}))
def _affine_table(ts, at):
    """T = E W^T + b: every row of a lookup table E [V, K] through the affine map y = W x + b
    that reads its rows (graphspec/passes/fold.py), so that W E[x] + b = T[x]: V rows multiplied
    once a pass instead of one per lookup. b is one row (a bias), repeated.
    backward: dE += dT @ W, dW += dT.T @ E, db += dT summed over its rows."""
    w, e, b = ts
    _need(isinstance(w, MatTy) and isinstance(e, MatTy), f"affine_table: needs two matrices, got {w} and {e}")
    _need(_same(e.feat, w.feat), f"affine_table: cannot multiply [{w.seq_rows}, {w.feat}] by the rows of {e}")
    _need(not isinstance(b, MatTy) and b.seq is None and _same(b.feat, w.seq_rows),
          f"affine_table: the bias {b} is not one row of {w.seq_rows}")
    return MatTy(w.seq_rows, seq_rows=e.seq_rows)


PANEL = 16     # packed weights: columns of B in panels of 16 (runtime/kernels/packed.py)


def packed_rows(n: Size, r: Size) -> Size:
    """Rows of 16 floats that B [r, n] takes packed."""
    return -(-n // PANEL) * r if isinstance(n, int) and isinstance(r, int) else ANY


@op("pack", (Arg("W"),), grad=False, kernels="linear",
    example=lambda g: ([g.f(3, g.C)], (packed_rows(3, g.C) + packed_rows(g.C, 3), PANEL), {}))
def _pack(ts, at):
    """P = W [N, K] packed twice for the per-step products of a loop: its transpose for
    Y = X W^T (the forward) and W itself for dX = dY W (the backward), each as panels of 16
    columns (rows packed_rows(N, K) + packed_rows(K, N)). Run once per forward: the weights
    change only between passes. No gradient: dW comes from the deferred GEMM over all steps."""
    (w,) = ts
    _need(isinstance(w, MatTy), f"pack: needs a matrix param, got {w}")
    rows = packed_rows(w.seq_rows, w.feat)
    back = packed_rows(w.feat, w.seq_rows)
    return MatTy(PANEL, seq_rows=rows + back if ANY not in (rows, back) else ANY)


def _packed_example(with_a):
    def example(g):
        w = g.f(3, g.C)
        ins = [w, g.packed(w), g.f(g.R, g.C)] + ([g.f(g.B, 3)] if with_a else [])
        return ins, (g.R, 3), {}
    return example


@op("matmul_packed", (Arg("W", nograd=True), Arg("P", nograd=True), Arg("x")), gemm=(0, 2), out_unread=True,
    kernels="linear", rowwise=True, units=True,
    example=_packed_example(False))
def _matmul_packed(ts, at):
    """y = W x inside a loop, over P = pack(W) (graphspec/passes/pack.py): the same product as
    matmul, from weights packed once per pass instead of once per step. W's gradient comes from
    the deferred GEMM over all steps (W is here for it); P gets none.
    backward: dx += dy @ W (over P's second layout)."""
    w, p, x = ts
    return _matmul([w, x], at)


@op("affine_packed", (Arg("W", nograd=True), Arg("P", nograd=True), Arg("x"), Arg("a")), gemm=(0, 2), onto=3,
    out_unread=True, kernels="linear", rowwise=True, units=True,
    example=_packed_example(True))
def _affine_packed(ts, at):
    """y = W x + a inside a loop, over P = pack(W): affine from packed weights.
    backward: dx += dy @ W (over P), da += dy."""
    w, p, x, a = ts
    return _affine([w, x, a], at)


# ---------------------------------------------------------------- elementwise
def _broadcast(name):
    def rule(ts, at):
        a, b = ts
        if isinstance(a, MatTy) or isinstance(b, MatTy):
            raise ShapeError(f"{name}: cannot apply to a matrix {a if isinstance(a, MatTy) else b}; "
                             f"matrices only appear in matmul (@) and lookups (E[x])")
        for x, y in ((a, b), (b, a)):
            if x.feat == 1 and x.seq is None:
                return Ty(y.feat, y.seq)
        for x, y in ((a, b), (b, a)):
            if x.feat == ANY:
                return Ty(y.feat, y.seq or x.seq)
        _need(_same(a.feat, b.feat) and a.seq == b.seq,
              f"{name}: shapes {a} and {b} do not match")
        return Ty(a.feat, a.seq)
    return rule


def _ew_example(*widths):
    """Operands of an elementwise example: full [R, C], or broadcast rows/columns."""
    def example(g):
        shapes = {"full": (g.R, g.C), "row": (1, g.C), "batch": (g.B, g.C), "col": (g.R, 1)}
        return [g.f(*shapes[w]) for w in widths], (g.R, g.C), {}
    return example


for _name, _sym, _fwd, _grads, _doc, _ex in (
        ("add", "+", "a + b", {"a": "g", "b": "g"},
         "y = a + b (a row of size 1 broadcasts). backward: da += dy, db += dy (summed over broadcast axes).",
         ("full", "row")),
        ("sub", "-", "a - b", {"a": "g", "b": "-g"}, "y = a - b. backward: da += dy, db -= dy.",
         ("col", "batch")),
        ("mul", "*", "a * b", {"a": "g * b", "b": "g * a"},
         "y = a * b elementwise. backward: da += dy * b, db += dy * a.", ("full", "batch"))):
    _r = _broadcast(_name)
    _r.__doc__ = f"{_doc} Written `a {_sym} b`."
    op(_name, (Arg("a"), Arg("b")), kernels="elementwise", ew=Elementwise(_fwd, _grads),
       example=_ew_example(*_ex))(_r)


def _same_shape(ts, at):
    return Ty(ts[0].feat, ts[0].seq)


def _unary(name, doc, fwd, grad, kernels="elementwise"):
    rule = lambda ts, at: _same_shape(ts, at)  # noqa: E731
    rule.__doc__ = doc
    op(name, (Arg("x"),), syntax=f"{name}(x)", kernels=kernels, ew=Elementwise(fwd, {"x": grad}),
       assigns=(0,), example=_ew_example("full"))(rule)


_unary("tanh", "y = tanh(x). backward: dx += dy * (1 - y^2).", "tanh(x)", "g * (1 - y * y)")
_unary("sigmoid", "y = 1 / (1 + exp(-x)). backward: dx += dy * y * (1 - y).", "sigmoid(x)", "g * y * (1 - y)")
_unary("softplus", "y = log(1 + exp(x)), a smooth ReLU. backward: dx += dy * sigmoid(x).", "softplus(x)",
       "g * sigmoid(x)", kernels="")


@op("rectify", (Arg("z"), Arg("a")), syntax="rectify(z, a)", kernels="elementwise",
    ew=Elementwise("max(z, 0) + a * min(z, 0)", {"z": "g * (1 if z > 0 else a)", "a": "g * min(z, 0)"}),
    example=lambda g: ([g.f(g.R, g.C, lo=0.1), g.f(1, g.C)], (g.R, g.C), {}))
def _rectify(ts, at):
    """The rectifier family g(z, a) = max(0, z) + a * min(0, z), a per unit or one scalar:
    ReLU a=0, absolute value a=-1, leaky ReLU a small and fixed, PReLU a learned.
    backward: dz += dy * (1 if z > 0 else a), da += dy * min(0, z) (summed if a broadcasts)."""
    z, a = ts
    _need(a.feat in (1, z.feat) and a.seq is None,
          f"rectify: the slope must have size 1 or {z.feat}, got {a}")
    return Ty(z.feat, z.seq)


@op("copy", (Arg("x"),), kernels="elementwise", ew=Elementwise("x", {"x": "g"}),
    example=lambda g: ([g.f(g.B, g.C)], (g.R, g.C), {}))
def _copy(ts, at):
    """y = x (an initial state taken from another node, x's rows repeated). backward: dx += dy."""
    return Ty(ts[0].feat, ts[0].seq)


@op("select", (Arg("m", kind="mask"), Arg("a"), Arg("b")), syntax="select(m, a, b)",
    kernels="elementwise",
    ew=Elementwise("a if m > 0.5 else b", {"a": "g if m > 0.5 else 0", "b": "0 if m > 0.5 else g"}),
    example=lambda g: ([g.mask(g.R), g.f(g.R, g.C), g.f(g.R, g.C)], (g.R, g.C), {}))
def _select(ts, at):
    """y = a where m else b, with m a 0/1 mask per row: a recurrent state carried over padding.
    backward: da += m * dy, db += (1 - m) * dy (the mask gets none)."""
    m, a, b = ts
    _need(m.feat == 1, f"select: the mask must have size 1, got {m}")
    _need(_same(a.feat, b.feat), f"select: shapes {a} and {b} do not match")
    return Ty(a.feat if a.feat != ANY else b.feat, a.seq)


# ---------------------------------------------------------------- rows
@op("softmax", "f", syntax="softmax(x)", kernels="softmax", example=_ew_example("full"))
def _softmax(ts, at):
    """y_i = exp(x_i - max x) / sum_j exp(x_j - max x) over the features of a row.
    backward: dx += y * (dy - sum(dy * y))."""
    _plain(ts[0], "softmax input")
    return Ty(ts[0].feat)


@op("log_softmax", "f", syntax="log_softmax(x)", kernels="softmax", example=_ew_example("full"))
def _log_softmax(ts, at):
    """y_i = x_i - log sum_j exp(x_j). backward: dx += dy - softmax(x) * sum(dy)."""
    _plain(ts[0], "log_softmax input")
    return Ty(ts[0].feat)


@op("sum", "f", syntax="sum(x)", kernels="shape",
    example=lambda g: ([g.f(g.R, g.C)], (g.R, 1), {}))
def _sum(ts, at):
    """y = sum_i x_i over the features of a row. backward: dx_i += dy."""
    return Ty(1, ts[0].seq)


@op("mean", "f", syntax="mean(x)", kernels="shape",
    example=lambda g: ([g.f(g.R, g.C)], (g.R, 1), {}))
def _mean(ts, at):
    """y = (1/n) sum_i x_i over the n features of a row. backward: dx_i += dy / n."""
    return Ty(1, ts[0].seq)


# ---------------------------------------------------------------- shape plumbing
@op("place", "f", attrs=("col", "width"), kernels="shape",
    example=lambda g: ([g.f(g.R, 2)], (g.R, 5), {"col": 1, "width": 2}))
def _place(ts, at):
    """Write x into columns [col, col + width) of y (how concat is lowered: one place per part).
    backward: dx += dy[:, col:col + width]."""
    return Ty(at["width"])


def _split_width(ts, at):
    """split(z, k) lowers to k takes of width -k (k parts): fill in col and width once z's size
    is known."""
    if at["width"] >= 0:
        return True
    k, feat = -at["width"], ts[0].feat
    if not isinstance(feat, int):
        return False
    if feat % k:
        raise ShapeError(f"split: size {feat} does not divide into {k} parts")
    at["col"], at["width"] = at["col"] * (feat // k), feat // k
    return True


def _check_slice(at):
    """For a written slice(x, start, width); split(z, k) makes its takes itself."""
    if at["col"] != int(at["col"]):
        return "col", f"slice: start must be a whole number, got {at['col']:g}"
    if at["width"] < 1 or at["width"] != int(at["width"]):
        return "width", f"slice: width must be a whole number of at least 1, got {at['width']:g}"
    return None


@op("take", "f", attrs=("col", "width"), syntax="slice(x, col, width)", check=_check_slice,
    prepare=_split_width, kernels="shape",
    example=lambda g: ([g.f(g.R, 5)], (g.R, 2), {"col": 2, "width": 2}))
def _take(ts, at):
    """y = x[:, col:col + width] (how split and slice are lowered; `slice(x, start, width)`).
    backward: dx[:, col:col + width] += dy."""
    x = ts[0]
    _plain(x, "take input")
    _need(at["col"] >= 0 and (isinstance(x.feat, str) or at["col"] + at["width"] <= x.feat),
          f"slice [{at['col']}:{at['col'] + at['width']}] is out of range for {x}")
    return Ty(at["width"])


def _concat(ts, at):
    """concat(a, b, ...) joins features, emitted as one `place` per part.
    backward: each part gets its columns of dy."""
    for t in ts:
        if t.seq is not None:
            raise ShapeError(f"concat: {t} spans an axis; concat joins one vector per step")
    if any(t.feat == ANY for t in ts):
        return Ty(ANY)
    if any(isinstance(t.feat, str) for t in ts):
        return Ty("+".join(str(t.feat) for t in ts))
    return Ty(sum(t.feat for t in ts))


op("concat", ("f",), syntax="concat(x)", variadic="place")(_concat)


# ---------------------------------------------------------------- lookups and losses
@op("embed", (Arg("E", rows=True), Arg("x", "i")), syntax="embed(E, x)", out_unread=True, kernels="embedding",
    example=lambda g: ([g.f(g.V, g.C), g.ids(g.R, 1)], (g.R, g.C), {}))
def _embed(ts, at):
    """y = E[x]: row x of the table, i.e. one-hot(x) @ E (also written `E[x]`).
    backward: dE[x] += dy (a sparse, row-wise gradient)."""
    table, ids = ts
    _need(isinstance(table, MatTy), f"embed: the table must be a matrix param, got {table}")
    return Ty(table.feat)


@op("embed_affine", (Arg("T"), Arg("x", "i"), Arg("b")), out_unread=True, kernels="embedding",
    example=lambda g: ([g.f(g.V, g.C), g.ids(g.R, 1, n=g.V + 3), g.f(1, g.C)], (g.R, g.C), {}))
def _embed_affine(ts, at):
    """y = T[x], or b where x is outside the table: W E[x] + b read from T = E W^T + b
    (affine_table, graphspec/passes/fold.py); an id outside E looks up zeros, so W 0 + b = b.
    backward: dT[x] += dy where x is in the table, db += dy where it is not."""
    table, ids, b = ts
    _need(isinstance(table, MatTy), f"embed_affine: the table must be a matrix, got {table}")
    _need(not isinstance(b, MatTy) and b.seq is None and _same(b.feat, table.feat),
          f"embed_affine: the bias {b} is not one row of the table's {table.feat}")
    return Ty(table.feat)


def _window_width(ts, at):
    if at["width"] < 0:
        if not isinstance(ts[1].feat, int):
            return False
        at["width"] = ts[1].feat
    return True


@op("embed_mean", (Arg("E", rows=True), Arg("ids", "i")), attrs=("width",), syntax="embed_mean(E, ids)",
    prepare=_window_width, kernels="embedding",
    example=lambda g: ([g.f(g.V, g.C), g.window(g.R, 3)], (g.R, g.C), {"width": 3}))
def _embed_mean(ts, at):
    """y = mean of E[x_j] over the `width` ids of a row, ids < 0 skipped (CBOW's context).
    backward: dE[x_j] += dy / n for every used id."""
    table, ids = ts
    _need(isinstance(table, MatTy), f"embed_mean: the table must be a matrix param, got {table}")
    return Ty(table.feat)


@op("cross_entropy", (Arg("o"), Arg("y", "i"), Arg("mask", kind="mask", of="o")), attrs=("norm",),
    syntax="cross_entropy(o, y)", loss=True, kernels="softmax",
    example=lambda g: ([g.f(g.R, g.V), g.ids(g.R, 1), g.mask(g.R)], (1, 1), {"norm": 2.0}))
def _cross_entropy(ts, at):
    """L += sum_rows mask * -log softmax(o)[y] / norm, accumulated into a scalar loss.
    backward: do += mask * (softmax(o) - onehot(y)) * dL / norm."""
    o, y, m = ts
    _plain(o, "cross_entropy logits")
    return Ty(1)


@op("mse", (Arg("p"), Arg("y"), Arg("mask", kind="mask", of="p")), attrs=("norm",), syntax="mse(p, y)",
    loss=True, kernels="softmax",
    example=lambda g: ([g.f(g.R, g.C), g.f(g.R, g.C), g.mask(g.R)], (1, 1), {"norm": 2.0}))
def _mse(ts, at):
    """L += sum_rows mask * 0.5 * ||p - y||^2 / norm. backward: dp += mask * (p - y) * dL / norm."""
    p, y, m = ts
    _need(_same(p.feat, y.feat), f"mse: prediction {p} and target {y} differ in size")
    return Ty(1)


# ---------------------------------------------------------------- attention (time-major keys)
@op("tdot", (Arg("k"), Arg("q")), syntax="tdot(k, q)", stepwise=True, kernels="attention",
    example=lambda g: ([g.f(g.S * g.B, g.C), g.f(g.B, g.C)], (g.S * g.B, 1), {}))
def _tdot(ts, at):
    """score[s] = k[s] . q for every step s of the keys (dot-product attention scores).
    backward: dk[s] += dscore[s] * q, dq += sum_s dscore[s] * k[s]."""
    k, q = ts
    _need(k.seq is not None, f"attention keys must span an axis (all(...)), got {k}")
    _need(_same(k.feat, q.feat) and q.seq is None, f"attention: keys {k} and query {q} differ in size")
    return Ty(1, k.seq)


@op("tadd", (Arg("k"), Arg("q")), syntax="tadd(k, q)", stepwise=True, kernels="attention",
    example=lambda g: ([g.f(g.S * g.B, g.C), g.f(g.B, g.C)], (g.S * g.B, g.C), {}))
def _tadd(ts, at):
    """y[s] = k[s] + q for every step s of the keys (additive attention's W1 k + W2 q).
    backward: dk[s] += dy[s], dq += sum_s dy[s]."""
    k, q = ts
    _need(k.seq is not None, f"attention keys must span an axis (all(...)), got {k}")
    _need(_same(k.feat, q.feat) and q.seq is None, f"attention: keys {k} and query {q} differ in size")
    return Ty(k.feat, k.seq)


@op("tsoftmax", (Arg("e"), Arg("mask", kind="mask", of="e", span=True)), attrs=("batch",),
    syntax="tsoftmax(e)", stepwise=True, kernels="attention",
    example=lambda g: ([g.f(g.S * g.B, 1), g.key_mask()], (g.S * g.B, 1), {"batch": g.B}))
def _tsoftmax(ts, at):
    """w[s] = exp(e[s]) / sum_{s' unmasked} exp(e[s']), w[s] = 0 where the key step is padding.
    backward: de += w * (dw - sum_s dw[s] w[s])."""
    e, m = ts
    _need(e.seq is not None and e.feat == 1, f"tsoftmax: scores must be one per key step, got {e}")
    return Ty(1, e.seq)


@op("tsum", (Arg("w"), Arg("v")), syntax="tsum(w, v)", stepwise=True, kernels="attention",
    example=lambda g: ([g.f(g.S * g.B, 1), g.f(g.S * g.B, g.C)], (g.B, g.C), {}))
def _tsum(ts, at):
    """c = sum_s w[s] v[s]: the context vector, a weighted average of the values.
    backward: dw[s] += dc . v[s], dv[s] += w[s] * dc."""
    w, v = ts
    _need(w.seq is not None and w.feat == 1, f"tsum: weights must be one per key step, got {w}")
    _need(v.seq == w.seq, f"tsum: weights {w} and values {v} span different axes")
    return Ty(v.feat)


@op("lastof", (Arg("x"), Arg("mask", kind="mask")), kernels="shape",
    example=lambda g: ([g.f(g.S * g.B, g.C), g.lengths_mask()], (g.B, g.C), {}))
def _lastof(ts, at):
    """y[b] = x[len_b - 1, b]: the value at each sequence's last real step, len_b = sum_t m[t, b]
    (how last(x) reads an axis with padding). backward: dx[len_b - 1, b] += dy[b]."""
    x, m = ts
    _need(x.seq is not None, f"lastof: needs a whole axis, got {x}")
    return Ty(x.feat)


# ---------------------------------------------------------------- decoding (no gradient)
@op("argmax", "f", out="i", grad=False, syntax="argmax(x)", kernels="decode",
    example=lambda g: ([g.f(g.R, g.V)], (g.R, 1), {}))
def _argmax(ts, at):
    """y = argmax_i x_i: the model's own prediction, fed back when free running."""
    _plain(ts[0], "argmax input")
    return Ty(1, None, "i")


def _check_temperature(at):
    t = at["temperature"]
    return None if 0 < t < float("inf") else ("temperature", f"sample: temperature must be positive and finite, got {t:g}")


@op("sample", "f", out="i", attrs=("temperature",), grad=False, syntax="sample(x, temperature=1.0)",
    check=_check_temperature, kernels="decode",
    example=lambda g: ([g.f(g.R, g.V)], (g.R, 1), {"temperature": 1.0}))
def _sample(ts, at):
    """y ~ softmax(x / temperature): a sampled prediction."""
    _plain(ts[0], "sample input")
    return Ty(1, None, "i")


@op("mix", (Arg("a", "i"), Arg("b", "i")), out="i", attrs=("prob",), grad=False, kernels="decode",
    example=lambda g: ([g.ids(g.R, 1), g.ids(g.R, 1)], (g.R, 1), {"prob": 0.5}))
def _mix(ts, at):
    """Scheduled sampling: y = b with probability prob, else a (per row)."""
    return Ty(1, None, "i")


def _check_p(at):
    return None if 0 <= at["p"] < 1 else ("p", f"dropout: p must be in [0, 1), got {at['p']:g}")


@op("dropout", "f", attrs=("p",), scratch="f", scratch_cols="out", syntax="dropout(x, p)", check=_check_p,
    eval_as="copy", kernels="elementwise",
    example=lambda g: ([g.f(g.R, g.C)], (g.R, g.C), {"p": 0.3}))
def _dropout(ts, at):
    """Training only: y = x * m / (1 - p), m ~ Bernoulli(1 - p) kept for backward.
    backward: dx += dy * m / (1 - p). At evaluation y = x."""
    return Ty(ts[0].feat, ts[0].seq)


# ---------------------------------------------------------------- word2vec heads
@op("hsoftmax", (Arg("v"), Arg("y", "i"), Arg("tree", "i", kind="table", of="tree"), Arg("W", rows=True)),
    attrs=("norm",), syntax="hsoftmax(v, y, W)", loss=True, kernels="word2vec",
    example=lambda g: ([g.f(g.R, g.C), g.ids(g.R, 1), g.tree(), g.f(g.V - 1, g.C)], (1, 1), {"norm": 3.0}))
def _hsoftmax(ts, at):
    """Hierarchical softmax over a binary (Huffman) tree: with path nodes n_j and codes d_j of
    word y, L += -sum_j log sigmoid((1 - 2 d_j) * v . W[n_j]) / norm.
    Operands: v [D], y (word id), tree (int table: per word its path nodes and codes),
    W [V-1, D] the inner nodes' vectors.
    backward: g_j = sigmoid(v . W[n_j]) - (1 - d_j); dv += g_j W[n_j], dW[n_j] += g_j v."""
    v, y, tree, w = ts
    _need(isinstance(w, MatTy) and _same(w.feat, v.feat),
          f"hsoftmax: inner-node matrix {w} does not match vector {v}")
    return Ty(1)


def _check_k(at):
    k = at["k"]
    return None if k >= 1 and k == int(k) else ("k", f"negsample: k must be a whole number of at least 1, got {k:g}")


@op("negsample", (Arg("v"), Arg("y", "i"), Arg("table", "i", kind="table", of="unigram"), Arg("W", rows=True)),
    attrs=("k", "norm"), scratch="i", scratch_cols="k", syntax="negsample(v, y, W, k=5)", check=_check_k,
    loss=True, kernels="word2vec",
    example=lambda g: ([g.f(g.R, g.C), g.ids(g.R, 1), g.ids(50, 1), g.f(g.V, g.C)], (1, 1),
                       {"k": 3, "norm": 3.0}))
def _negsample(ts, at):
    """Negative sampling: L += -(log sigmoid(v . W[y]) + sum_{j<k} log sigmoid(-v . W[n_j])) / norm,
    n_j drawn from the unigram distribution ** 0.75 (the int table operand), kept for backward.
    backward: dv += sum over (word, label) of (sigmoid(v . W[w]) - label) W[w], dW[w] += (...) v."""
    v, y, table, w = ts
    _need(isinstance(w, MatTy) and _same(w.feat, v.feat),
          f"negsample: output matrix {w} does not match vector {v}")
    return Ty(1)


# ---------------------------------------------------------------- sugar
@dataclass(frozen=True)
class Sugar:
    """A function users write that is one registry op with some operands fixed:
    relu(z) = rectify(z, 0). `args` name the call's parameters or give numbers."""
    syntax: str
    op: str
    args: tuple
    doc: str

    @property
    def params(self) -> tuple:
        return _parse_syntax(self.syntax)


SUGAR = {s.syntax.split("(")[0]: s for s in (
    Sugar("relu(z)", "rectify", ("z", 0.0), "ReLU: max(0, z)"),
    Sugar("absolute(z)", "rectify", ("z", -1.0), "absolute-value rectification: |z|"),
    Sugar("leaky_relu(z, a=0.01)", "rectify", ("z", "a"), "leaky ReLU: a fixed small slope below 0"),
    Sugar("prelu(z, a)", "rectify", ("z", "a"), "parametric ReLU: a learned slope per unit"),
)}


def callable_ops() -> dict:
    """Function name -> OpSig or Sugar, for every function a spec may call directly."""
    out = {sig.syntax.split("(")[0]: sig for sig in REGISTRY.values() if sig.syntax}
    out.update(SUGAR)
    return out


OP_NAMES = tuple(REGISTRY)
OPCODES = {name: i for i, name in enumerate(OP_NAMES)}
