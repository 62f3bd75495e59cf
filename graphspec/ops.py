"""The op registry: the single source of truth for every primitive.

Each primitive has a name, its operand dtypes, an output dtype, a shape rule and the maths.
graphspec/ uses the registry for shape inference, lowering and the schema; runtime/ binds a
forward and a backward kernel to every entry (tests/test_registry.py fails if one is missing).

Shapes here are *per-step feature shapes*: every value is a batch of rows, and the registry
only sees what one row looks like. A row type is `Ty(feat, seq, dtype)`:
  feat  -- feature size (an int, or a str naming a dim not yet bound to data);
  seq   -- None, or the axis a value spans inside one step (the keys of attention: all(enc));
  dtype -- 'f' (float) or 'i' (integer token ids).
"""
from __future__ import annotations

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
class OpSig:
    name: str
    inputs: tuple          # operand dtypes, 'f' or 'i'
    out: str               # output dtype
    shape: Callable        # (list[Ty], attrs) -> Ty
    doc: str
    attrs: tuple = ()      # attribute names (ints or floats carried in the plan)
    grad: bool = True      # False: no gradient flows through (argmax, sampling)
    scratch: Optional[str] = None   # 'f' or 'i': the op keeps a per-row scratch buffer for backward
    masks: tuple = ()               # inputs that are padding masks: read, never differentiated
    rows: tuple = ()                # inputs whose gradient touches only the rows the op's ids pick


@dataclass(frozen=True)
class MatTy(Ty):
    """A matrix param [rows, feat] (for W @ x: [out, in]); only matmul and lookups take one."""
    seq_rows: Size = 0

    def __str__(self) -> str:
        return f"f[{self.seq_rows}, {self.feat}]"


REGISTRY: dict[str, OpSig] = {}


def op(name, inputs, out="f", attrs=(), grad=True, scratch=None, masks=(), rows=()):
    def register(rule):
        REGISTRY[name] = OpSig(name, tuple(inputs), out, rule, (rule.__doc__ or "").strip(),
                               tuple(attrs), grad, scratch, tuple(masks), tuple(rows))
        return rule
    return register


ANY = "?"   # a size not inferred yet (inside a recurrence, before the fixpoint reaches it)


def _same(a: Size, b: Size) -> bool:
    return a == b or ANY in (a, b)


def _need(cond: bool, msg: str):
    if not cond:
        raise ShapeError(msg)


def _plain(t: Ty, what: str):
    _need(t.seq is None, f"{what} must be one vector per step, got {t}")


# ---------------------------------------------------------------- linear algebra
@op("matmul", "ff")
def _matmul(ts, at):
    """y = W x, as in the source's equations: W is a matrix param [N, K] (out, in), x a row [K],
    y a row [N]. Row-major: Y[R, N] = X[R, K] @ W.T (torch.nn.Linear's layout).
    backward: dx += dy @ W, dW += dy.T @ x (summed over every row: all batch rows and, when
    hoisted, all time steps in one GEMM)."""
    w, x = ts
    _need(isinstance(w, MatTy), f"matmul: the left operand must be a matrix param (W @ x), got {w}")
    _need(not isinstance(x, MatTy), f"matmul: the right operand must be a vector, got {x}")
    _need(_same(x.feat, w.feat), f"matmul: cannot multiply [{w.seq_rows}, {w.feat}] by {x}: "
          f"the matrix takes {w.feat} inputs, the vector has {x.feat}")
    return Ty(w.seq_rows, x.seq)


@op("affine", "fff")
def _affine(ts, at):
    """y = W x + a: a matmul whose only reader adds it to a (a bias row, or a value of y's size,
    such as the hoisted b + U x(t) of a recurrence). The compiler fuses the pair
    (compile.py `_fuse_affine`): the GEMM accumulates into y (BLAS beta=1) after a is copied in,
    instead of writing a temporary that an add then reads. a's rows repeat as in add.
    backward: dx += dy @ W, dW += dy.T @ x, da += dy (summed over a's repeated rows)."""
    w, x, a = ts
    y = _matmul([w, x], at)
    _need(_same(a.feat, y.feat) and a.seq == y.seq, f"affine: the added value {a} does not match W x = {y}")
    return y


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


for _name, _doc in (
        ("add", "y = a + b (a row of size 1 broadcasts). backward: da += dy, db += dy (summed over broadcast axes)."),
        ("sub", "y = a - b. backward: da += dy, db -= dy."),
        ("mul", "y = a * b elementwise. backward: da += dy * b, db += dy * a.")):
    _r = _broadcast(_name)
    _r.__doc__ = _doc
    op(_name, "ff")(_r)


def _unary(name, doc):
    def rule(ts, at):
        return Ty(ts[0].feat, ts[0].seq)
    rule.__doc__ = doc
    op(name, "f")(rule)


_unary("tanh", "y = tanh(x). backward: dx += dy * (1 - y^2).")
_unary("sigmoid", "y = 1 / (1 + exp(-x)). backward: dx += dy * y * (1 - y).")


@op("rectify", "ff")
def _rectify(ts, at):
    """The rectifier family g(z, a) = max(0, z) + a * min(0, z), a per unit or one scalar:
    ReLU a=0, absolute value a=-1, leaky ReLU a small and fixed, PReLU a learned.
    backward: dz += dy * (1 if z > 0 else a), da += dy * min(0, z) (summed if a broadcasts)."""
    z, a = ts
    _need(a.feat in (1, z.feat) and a.seq is None,
          f"rectify: the slope must have size 1 or {z.feat}, got {a}")
    return Ty(z.feat, z.seq)


@op("softmax", "f")
def _softmax(ts, at):
    """y_i = exp(x_i - max x) / sum_j exp(x_j - max x) over the features of a row.
    backward: dx += y * (dy - sum(dy * y))."""
    _plain(ts[0], "softmax input")
    return Ty(ts[0].feat)


@op("log_softmax", "f")
def _log_softmax(ts, at):
    """y_i = x_i - log sum_j exp(x_j). backward: dx += dy - softmax(x) * sum(dy)."""
    _plain(ts[0], "log_softmax input")
    return Ty(ts[0].feat)


# ---------------------------------------------------------------- shape plumbing
@op("place", "f", attrs=("col", "width"))
def _place(ts, at):
    """Write x into columns [col, col + width) of y (how concat is lowered: one place per part).
    backward: dx += dy[:, col:col + width]."""
    return Ty(at["width"])


@op("take", "f", attrs=("col", "width"))
def _take(ts, at):
    """y = x[:, col:col + width] (how split and slice are lowered).
    backward: dx[:, col:col + width] += dy."""
    x = ts[0]
    _plain(x, "take input")
    _need(at["col"] >= 0 and (isinstance(x.feat, str) or at["col"] + at["width"] <= x.feat),
          f"slice [{at['col']}:{at['col'] + at['width']}] is out of range for {x}")
    return Ty(at["width"])


@op("copy", "f")
def _copy(ts, at):
    """y = x (an initial state taken from another node). backward: dx += dy."""
    return Ty(ts[0].feat, ts[0].seq)


@op("sum", "f")
def _sum(ts, at):
    """y = sum_i x_i over the features of a row. backward: dx_i += dy."""
    return Ty(1, ts[0].seq)


@op("mean", "f")
def _mean(ts, at):
    """y = (1/n) sum_i x_i over the n features of a row. backward: dx_i += dy / n."""
    return Ty(1, ts[0].seq)


@op("select", "fff", masks=(0,))
def _select(ts, at):
    """y = a where m else b, with m a 0/1 mask per row: a recurrent state carried over padding.
    backward: da += m * dy, db += (1 - m) * dy."""
    m, a, b = ts
    _need(m.feat == 1, f"select: the mask must have size 1, got {m}")
    _need(a.feat == b.feat, f"select: shapes {a} and {b} do not match")
    return Ty(a.feat, a.seq)


# ---------------------------------------------------------------- lookups and losses
@op("embed", "fi", rows=(0,))
def _embed(ts, at):
    """y = E[x]: row x of the table, i.e. one-hot(x) @ E. backward: dE[x] += dy (a sparse,
    row-wise gradient)."""
    table, ids = ts
    _need(isinstance(table, MatTy), f"embed: the table must be a matrix param, got {table}")
    return Ty(table.feat)


@op("embed_mean", "fi", attrs=("width",), rows=(0,))
def _embed_mean(ts, at):
    """y = mean of E[x_j] over the `width` ids of a row, ids < 0 skipped (CBOW's context).
    backward: dE[x_j] += dy / n for every used id."""
    table, ids = ts
    _need(isinstance(table, MatTy), f"embed_mean: the table must be a matrix param, got {table}")
    return Ty(table.feat)


@op("cross_entropy", "fif", attrs=("norm",), masks=(2,))
def _cross_entropy(ts, at):
    """L += sum_rows mask * -log softmax(o)[y] / norm, accumulated into a scalar loss.
    backward: do += mask * (softmax(o) - onehot(y)) * dL / norm."""
    o, y, m = ts
    _plain(o, "cross_entropy logits")
    return Ty(1)


@op("mse", "fff", attrs=("norm",), masks=(2,))
def _mse(ts, at):
    """L += sum_rows mask * 0.5 * ||p - y||^2 / norm. backward: dp += mask * (p - y) * dL / norm."""
    p, y, m = ts
    _need(p.feat == y.feat, f"mse: prediction {p} and target {y} differ in size")
    return Ty(1)


# ---------------------------------------------------------------- attention (time-major keys)
@op("tdot", "ff")
def _tdot(ts, at):
    """score[s] = k[s] . q for every step s of the keys (dot-product attention scores).
    backward: dk[s] += dscore[s] * q, dq += sum_s dscore[s] * k[s]."""
    k, q = ts
    _need(k.seq is not None, f"attention keys must span an axis (all(...)), got {k}")
    _need(k.feat == q.feat and q.seq is None, f"attention: keys {k} and query {q} differ in size")
    return Ty(1, k.seq)


@op("tadd", "ff")
def _tadd(ts, at):
    """y[s] = k[s] + q for every step s of the keys (additive attention's W1 k + W2 q).
    backward: dk[s] += dy[s], dq += sum_s dy[s]."""
    k, q = ts
    _need(k.seq is not None, f"attention keys must span an axis (all(...)), got {k}")
    _need(k.feat == q.feat and q.seq is None, f"attention: keys {k} and query {q} differ in size")
    return Ty(k.feat, k.seq)


@op("tsoftmax", "ff", attrs=("batch",), masks=(1,))
def _tsoftmax(ts, at):
    """w[s] = exp(e[s]) / sum_{s' unmasked} exp(e[s']), w[s] = 0 where the key step is padding.
    backward: de += w * (dw - sum_s dw[s] w[s])."""
    e, m = ts
    _need(e.seq is not None and e.feat == 1, f"tsoftmax: scores must be one per key step, got {e}")
    return Ty(1, e.seq)


@op("tsum", "ff")
def _tsum(ts, at):
    """c = sum_s w[s] v[s]: the context vector, a weighted average of the values.
    backward: dw[s] += dc . v[s], dv[s] += w[s] * dc."""
    w, v = ts
    _need(w.seq is not None and w.feat == 1, f"tsum: weights must be one per key step, got {w}")
    _need(v.seq == w.seq, f"tsum: weights {w} and values {v} span different axes")
    return Ty(v.feat)


@op("lastof", "ff", masks=(1,))
def _lastof(ts, at):
    """y[b] = x[len_b - 1, b]: the value at each sequence's last real step, len_b = sum_t m[t, b]
    (how last(x) reads an axis with padding). backward: dx[len_b - 1, b] += dy[b]."""
    x, m = ts
    _need(x.seq is not None, f"lastof: needs a whole axis, got {x}")
    return Ty(x.feat)


@op("lstm_cell", "ff")
def _lstm_cell(ts, at):
    """The LSTM block's elementwise part, fused (compile.py substitutes it for the stdlib lstm
    block's gate nodes; tests check it against the block). z = [z_i, z_f, z_g, z_o], sp = s(t-1):
    s = sigmoid(z_f) sp + sigmoid(z_i) tanh(z_g);  h = tanh(s) sigmoid(z_o);  y = [s, h].
    backward: with gs = dy_s + dy_h o (1 - tanh(s)^2): dz_i += gs g i(1-i), dz_f += gs sp f(1-f),
    dz_g += gs i (1-g^2), dz_o += dy_h tanh(s) o(1-o), dsp += gs f."""
    z, sp = ts
    _need(z.feat == ANY or sp.feat == ANY or z.feat == 4 * sp.feat,
          f"lstm_cell: gates {z} must be 4 times the state {sp}")
    return Ty(2 * sp.feat if sp.feat != ANY else ANY)


@op("gru_cell", "fff")
def _gru_cell(ts, at):
    """The reset-after GRU block's elementwise part, fused (compile.py substitutes it for the
    stdlib gru_after block; tests check it against the block). a = W x + b and c = R h(t-1) + b_R,
    each [r, u, n]; hp = h(t-1):  r = sigmoid(a_r + c_r), u = sigmoid(a_u + c_u),
    n = tanh(a_n + r c_n), h = (1 - u) n + u hp.
    backward: gn = dh (1 - u); gz_n = gn (1 - n^2): da_n += gz_n, dc_n += gz_n r;
    gz_r = gz_n c_n r (1 - r): da_r, dc_r += gz_r; gz_u = dh (hp - n) u (1 - u): da_u, dc_u += gz_u;
    dhp += dh u."""
    a, c, hp = ts
    _need(a.feat == ANY or hp.feat == ANY or a.feat == 3 * hp.feat,
          f"gru_cell: gates {a} must be 3 times the state {hp}")
    return Ty(hp.feat)


# ---------------------------------------------------------------- decoding (no gradient)
@op("argmax", "f", out="i", grad=False)
def _argmax(ts, at):
    """y = argmax_i x_i: the model's own prediction, fed back when free running."""
    _plain(ts[0], "argmax input")
    return Ty(1, None, "i")


@op("sample", "f", out="i", attrs=("temperature",), grad=False)
def _sample(ts, at):
    """y ~ softmax(x / temperature): a sampled prediction."""
    _plain(ts[0], "sample input")
    return Ty(1, None, "i")


@op("mix", "ii", out="i", attrs=("prob",), grad=False)
def _mix(ts, at):
    """Scheduled sampling: y = b with probability prob, else a (per row)."""
    return Ty(1, None, "i")


@op("dropout", "f", attrs=("p",), scratch="f")
def _dropout(ts, at):
    """Training only: y = x * m / (1 - p), m ~ Bernoulli(1 - p) kept for backward.
    backward: dx += dy * m / (1 - p). At evaluation y = x."""
    return Ty(ts[0].feat, ts[0].seq)


# ---------------------------------------------------------------- word2vec heads
@op("hsoftmax", "fiif", attrs=("norm",), rows=(3,))
def _hsoftmax(ts, at):
    """Hierarchical softmax over a binary (Huffman) tree: with path nodes n_j and codes d_j of
    word y, L += -sum_j log sigmoid((1 - 2 d_j) * v . W[n_j]) / norm.
    Operands: v [D], y (word id), tree (int table: per word its path nodes and codes),
    W [V-1, D] the inner nodes' vectors.
    backward: g_j = sigmoid(v . W[n_j]) - (1 - d_j); dv += g_j W[n_j], dW[n_j] += g_j v."""
    v, y, tree, w = ts
    _need(isinstance(w, MatTy) and w.feat == v.feat,
          f"hsoftmax: inner-node matrix {w} does not match vector {v}")
    return Ty(1)


@op("negsample", "fiif", attrs=("k", "norm"), scratch="i", rows=(3,))
def _negsample(ts, at):
    """Negative sampling: L += -(log sigmoid(v . W[y]) + sum_{j<k} log sigmoid(-v . W[n_j])) / norm,
    n_j drawn from the unigram distribution ** 0.75 (the int table operand), kept for backward.
    backward: dv += sum over (word, label) of (sigmoid(v . W[w]) - label) W[w], dW[w] += (...) v."""
    v, y, table, w = ts
    _need(isinstance(w, MatTy) and w.feat == v.feat,
          f"negsample: output matrix {w} does not match vector {v}")
    return Ty(1)


OP_NAMES = tuple(REGISTRY)
OPCODES = {name: i for i, name in enumerate(OP_NAMES)}
