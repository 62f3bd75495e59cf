"""Every registry op: forward against a NumPy reference written from the equations, and a
float64 finite-difference check of its backward, generated from the registry."""
import os
import subprocess
import sys

import numpy as np
import pytest

from graphspec.ops import REGISTRY
from graphspec.passes.inplace import from_result
from runtime.kernels import KERNELS, missing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

rng = np.random.default_rng(0)
R, B, S, C, V = 6, 2, 3, 4, 7


def f(*shape, lo=None):
    x = rng.normal(0, 1, shape)
    if lo is not None:             # keep rectifier inputs off the kink at 0
        x = np.where(np.abs(x) < lo, np.sign(x + 1e-12) * lo, x)
    return x


def ids(*shape, n=V):
    return rng.integers(0, n, shape).astype(np.int64)


def tree():
    from runtime.data import huffman_tree
    return huffman_tree(rng.integers(1, 30, V))


class Gen:
    """Operand makers for the registry's examples (graphspec/ops.py `example=`)."""
    R, B, S, C, V = R, B, S, C, V

    def f(self, *shape, lo=None):
        return f(*shape, lo=lo)

    def ids(self, *shape, n=V):
        return ids(*shape, n=n)

    def mask(self, rows):
        return (rng.random((rows, 1)) > 0.3).astype(float)

    def window(self, rows, width):
        return np.where(rng.random((rows, width)) < 0.3, -1, ids(rows, width))

    def tree(self):
        return tree()

    def key_mask(self):
        return np.array([[1.0], [1], [1], [0], [1], [0]])    # S=3 key steps x B=2: lengths 3 and 1

    def lengths_mask(self):
        return np.array([[1.0], [1], [1], [0], [0], [0]])    # lengths 2 and 1

    def packed(self, w):
        """W packed as the `pack` op does (the forward and backward layouts)."""
        from graphspec.ops import PANEL, packed_rows
        from runtime.kernels.linear import pack_fwd
        N, K = w.shape
        p = np.zeros((packed_rows(N, K) + packed_rows(K, N), PANEL))
        pack_fwd(w, p)
        return p


KERNEL_OPS = [n for n, sig in REGISTRY.items() if not sig.variadic]
CASES = {name: (lambda sig=REGISTRY[name]: sig.example(Gen())) for name in KERNEL_OPS}


def run(name, ins, out_shape, attrs, dtype=np.float64, seed=0):
    sig = REGISTRY[name]
    fwd, bwd = KERNELS[name]
    ins = [x.astype(dtype) if d == "f" else x for x, d in zip(ins, sig.inputs)]
    out = np.zeros(out_shape, dtype if sig.out == "f" else np.int64)
    a = [float(attrs[k]) for k in sig.attrs]
    tail = []                   # the scratch buffer, then a units op's unit range (0, 0: every unit)
    if sig.scratch:
        cols = out_shape[1] if name == "dropout" else int(attrs["k"])
        tail = [np.zeros((ins[0].shape[0], cols), dtype if sig.scratch == "f" else np.int64)]
    if sig.units:
        tail += [0, 0]
    from runtime import interp
    interp.seed(seed)
    fwd(*ins, out, *a, *tail)
    return ins, out, a, tail


def test_every_registry_op_has_a_kernel_pair_and_an_example():
    assert missing() == []
    assert all(REGISTRY[n].example is not None for n in KERNEL_OPS)


@pytest.mark.parametrize("name", [n for n in KERNEL_OPS if REGISTRY[n].grad])
def test_backward_matches_finite_differences(name):
    sig = REGISTRY[name]
    ins, out_shape, attrs = CASES[name]()
    ins, out, a, tail = run(name, ins, out_shape, attrs)
    gout = rng.normal(0, 1, out.shape)
    grads = [np.zeros_like(x) if d == "f" else np.zeros((1, 1)) for x, d in zip(ins, sig.inputs)]
    need = sum(1 << k for k in sig.differentiable)
    KERNELS[name][1](*ins, out, gout, *grads, need, *a, *tail)
    eps = 1e-6
    for k, d in enumerate(sig.inputs):
        if not need & (1 << k):
            continue
        direction = rng.normal(0, 1, ins[k].shape)
        plus = [x.copy() for x in ins]
        minus = [x.copy() for x in ins]
        plus[k] += eps * direction
        minus[k] -= eps * direction
        lp = (gout * run(name, plus, out_shape, attrs)[1]).sum()
        lm = (gout * run(name, minus, out_shape, attrs)[1]).sum()
        numeric = (lp - lm) / (2 * eps)
        analytic = (grads[k] * direction).sum()
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (name, k, numeric, analytic)


@pytest.mark.parametrize("name", [n for n in KERNEL_OPS if REGISTRY[n].grad])
def test_backward_accumulates(name):
    sig = REGISTRY[name]
    ins, out_shape, attrs = CASES[name]()
    ins, out, a, tail = run(name, ins, out_shape, attrs)
    gout = rng.normal(0, 1, out.shape)
    need = sum(1 << k for k in sig.differentiable)
    once = [np.zeros_like(x) if d == "f" else np.zeros((1, 1)) for x, d in zip(ins, sig.inputs)]
    twice = [g.copy() for g in once]
    KERNELS[name][1](*ins, out, gout, *once, need, *a, *tail)
    for _ in range(2):
        KERNELS[name][1](*ins, out, gout, *twice, need, *a, *tail)
    for g1, g2 in zip(once, twice):
        np.testing.assert_allclose(g2, 2 * g1, rtol=1e-12, atol=1e-12)


STORES = [(n, k) for n in KERNEL_OPS for k in REGISTRY[n].differentiable if REGISTRY[n].stores(k)]


@pytest.mark.parametrize("name, k", STORES, ids=[f"{n}-{k}" for n, k in STORES])
def test_backward_stores_a_whole_gradient_when_told(name, k):
    """With need's bit ASSIGN + k (Eqn.assign) operand k's gradient is stored: what G held there
    (NaN here) is gone, and the result is what adding onto zeros gives."""
    from graphspec.plan import ASSIGN
    sig = REGISTRY[name]
    ins, out_shape, attrs = CASES[name]()
    ins, out, a, tail = run(name, ins, out_shape, attrs)
    if sig.ew is not None and ins[k].shape != out.shape:
        ins[k] = rng.normal(0, 1, out.shape)      # the pass stores only an operand of y's shape
        ins, out, a, tail = run(name, ins, out_shape, attrs)
    gout = rng.normal(0, 1, out.shape)
    need = sum(1 << j for j in sig.differentiable)
    added = [np.zeros_like(x) if d == "f" else np.zeros((1, 1)) for x, d in zip(ins, sig.inputs)]
    stored = [g.copy() for g in added]
    stored[k][...] = np.nan
    KERNELS[name][1](*ins, out, gout, *added, need, *a, *tail)
    KERNELS[name][1](*ins, out, gout, *stored, need | 1 << (ASSIGN + k), *a, *tail)
    assert np.array_equal(stored[k], added[k])
    assert np.any(added[k])


@pytest.mark.parametrize("name", [n for n in KERNEL_OPS if REGISTRY[n].out == "f" and n != "dropout"])
def test_float32_forward_matches_float64(name):
    ins, out_shape, attrs = CASES[name]()
    o64 = run(name, ins, out_shape, attrs)[1]
    o32 = run(name, ins, out_shape, attrs, dtype=np.float32)[1]
    np.testing.assert_allclose(o32, o64, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", [n for n in KERNEL_OPS if REGISTRY[n].rows])
def test_rows_kernel_marks_exactly_the_rows_backward_writes(name):
    from runtime.kernels import ROWS
    sig = REGISTRY[name]
    (k,) = sig.rows
    ins, out_shape, attrs = CASES[name]()
    ins, out, a, tail = run(name, ins, out_shape, attrs)
    grads = [np.zeros_like(x) if d == "f" else np.zeros((1, 1)) for x, d in zip(ins, sig.inputs)]
    KERNELS[name][1](*ins, out, rng.normal(0, 1, out.shape), *grads, 1 << k, *a, *tail)
    mark = np.zeros(ins[k].shape[0], np.int64)
    ROWS[name](*ins, out, *a, *tail, mark)
    written = np.flatnonzero(np.abs(grads[k]).sum(1))
    assert len(written) > 0
    np.testing.assert_array_equal(np.flatnonzero(mark), written)


@pytest.mark.parametrize("name", [n for n in KERNEL_OPS if REGISTRY[n].grad and n != "dropout"])
def test_float32_backward_matches_float64(name):
    """The float32 kernels take other paths (polynomial tanh and exp, vectorised sums)."""
    sig = REGISTRY[name]
    ins, out_shape, attrs = CASES[name]()
    gout = rng.normal(0, 1, out_shape)
    need = sum(1 << k for k in sig.differentiable)
    grads = {}
    for dtype in (np.float64, np.float32):
        xs, out, a, tail = run(name, ins, out_shape, attrs, dtype=dtype)
        gs = [np.zeros_like(x) if d == "f" else np.zeros((1, 1), dtype) for x, d in zip(xs, sig.inputs)]
        KERNELS[name][1](*xs, out, gout.astype(dtype), *gs, need, *a, *tail)
        grads[dtype] = gs
    for g64, g32 in zip(grads[np.float64], grads[np.float32]):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", [1, 7, 8, 9, 64, 67])
def test_row_max_over_eight_running_maxima_is_the_max(width):
    from runtime.kernels.vecmath import row_max
    x = rng.normal(0, 30, (5, width)).astype(np.float32)
    x[1, -1] = 1e30                     # the maximum in the tail, and alone in a lane
    x[2, :] = -np.inf
    assert [row_max(x, r) for r in range(5)] == list(x.max(axis=1))


def test_float32_exp_over_its_whole_range():
    from runtime.kernels.vecmath import fast_exp
    from runtime.jit import jit

    @jit
    def exp_all(x, out):
        for i in range(x.shape[0]):
            out[i] = fast_exp(x[i])
    x = np.concatenate([np.linspace(-100, 88.3, 400_001), [-np.inf, 0.0]]).astype(np.float32)
    out = np.empty_like(x)
    exp_all(x, out)
    ref = np.exp(x.astype(np.float64))
    normal = (x >= np.float32(-87.3)) & np.isfinite(x)
    assert np.max(np.abs(out[normal] - ref[normal]) / ref[normal]) < 2e-7
    assert np.all(out[x < -87.3] == 0) and out[-1] == 1.0
    nan = np.array([np.nan], np.float32)
    exp_all(nan, out[:1])
    assert np.isnan(out[0])


# ---------------------------------------------------------------- references from the equations
def test_matmul_is_w_times_each_row():
    w, x = f(3, C), f(R, C)
    _, out, _, _ = run("matmul", [w, x], (R, 3), {})
    np.testing.assert_allclose(out, x @ w.T, rtol=1e-12)


@pytest.mark.parametrize("rows", [1, B, R])
def test_affine_is_w_times_each_row_plus_a(rows):
    """a is a bias row (1), one row per sequence repeated over steps (B), or a full value (R)."""
    w, x, a = f(3, C), f(R, C), f(rows, 3)
    _, out, _, _ = run("affine", [w, x, a], (R, 3), {})
    np.testing.assert_allclose(out, x @ w.T + np.tile(a, (R // rows, 1)), rtol=1e-12)
    gout = f(R, 3)
    gw, gx, ga = np.zeros_like(w), np.zeros_like(x), np.zeros_like(a)
    KERNELS["affine"][1](w, x, a, out, gout, gw, gx, ga, 7)
    np.testing.assert_allclose(ga, gout.reshape(R // rows, rows, 3).sum(0), rtol=1e-12)
    np.testing.assert_allclose(gw, gout.T @ x, rtol=1e-12)
    np.testing.assert_allclose(gx, gout @ w, rtol=1e-12)


def test_a_folded_lookup_is_w_times_the_looked_up_row_plus_b():
    """affine_table then embed_affine = W E[x] + b, E[x] = 0 for an id outside E (-1, V)."""
    w, e, b = f(3, C), f(V, C), f(1, 3)
    x = np.array([[0], [V - 1], [-1], [V], [2], [2]])
    _, table, _, _ = run("affine_table", [w, e, b], (V, 3), {})
    _, out, _, _ = run("embed_affine", [table, x, b], (len(x), 3), {})
    looked_up = np.where((x >= 0) & (x < V), e[np.clip(x[:, 0], 0, V - 1)], 0.0)
    np.testing.assert_allclose(out, looked_up @ w.T + b, rtol=1e-12)
    gout = f(len(x), 3)
    gt, gb = np.zeros_like(table), np.zeros_like(b)
    KERNELS["embed_affine"][1](table, x, b, out, gout, gt, np.zeros((1, 1)), gb, 5)
    gw, ge, gb2 = np.zeros_like(w), np.zeros_like(e), np.zeros_like(b)
    KERNELS["affine_table"][1](w, e, b, table, gt, gw, ge, gb2, 7)
    np.testing.assert_allclose(gw, gout.T @ looked_up, rtol=1e-12)
    np.testing.assert_allclose(gb + gb2, gout.sum(0, keepdims=True), rtol=1e-12)
    onehot = np.zeros((len(x), V))
    onehot[[0, 1, 4, 5], x[[0, 1, 4, 5], 0]] = 1
    np.testing.assert_allclose(ge, onehot.T @ gout @ w, rtol=1e-12)


@pytest.mark.parametrize("a", [0.0, -1.0, 0.01, "learned"])
def test_rectifier_family(a):
    z = f(R, C)
    slope = rng.uniform(0, 0.5, (1, C)) if a == "learned" else np.full((1, 1), a)
    _, out, _, _ = run("rectify", [z, slope], (R, C), {})
    np.testing.assert_allclose(out, np.maximum(0, z) + slope * np.minimum(0, z), rtol=1e-12)
    if a == 0.0:
        np.testing.assert_allclose(out, np.maximum(z, 0))
    if a == -1.0:
        np.testing.assert_allclose(out, np.abs(z))


def test_squashing_and_softmax():
    x = f(R, C) * 3
    np.testing.assert_allclose(run("tanh", [x], (R, C), {})[1], np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(run("sigmoid", [x], (R, C), {})[1], 1 / (1 + np.exp(-x)), rtol=1e-12)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(run("softmax", [x], (R, C), {})[1], e / e.sum(1, keepdims=True), rtol=1e-12)
    x32 = np.linspace(-12, 12, 2001).reshape(1, -1)
    np.testing.assert_allclose(run("tanh", [x32], x32.shape, {}, dtype=np.float32)[1], np.tanh(x32), atol=5e-7)


def test_cross_entropy_masks_padding_and_divides_by_norm():
    o, y = f(R, V), ids(R, 1)
    m = np.array([[1.0], [1], [0], [1], [0], [1]])
    _, out, _, _ = run("cross_entropy", [o, y, m], (1, 1), {"norm": 2.0})
    lse = np.log(np.exp(o).sum(1))
    ref = ((lse - o[np.arange(R), y[:, 0]]) * m[:, 0]).sum() / 2
    np.testing.assert_allclose(out[0, 0], ref, rtol=1e-12)


UNIT_OPS = [n for n, sig in REGISTRY.items() if sig.units]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNIT_OPS)
def test_unit_ranges_add_up_to_the_whole_op_bit_for_bit(name, dtype):
    """A units op (OpSig.units) run over units [0, 16) and [16, 48) of a 48-wide input computes
    exactly what one call over every unit does: columns u0..u1 of each 48-wide block of the
    output forward; backward, columns u0..u1 of dx from every column of dy, and the forward's
    columns of the other operands' gradients (a loop split by units: Plan.unit_segments)."""
    sig = REGISTRY[name]
    W, R = 48, 3
    ins = []
    for a in sig.args:
        if a.name == "W":
            w = rng.normal(0, 1, (4 * W, W)).astype(dtype)
            ins.append(w)
        elif a.name == "P":
            ins.append(Gen().packed(w).astype(dtype))
        elif a.name == "x":
            ins.append(rng.normal(0, 1, (R, W)).astype(dtype))
        else:
            ins.append(rng.normal(0, 1, (R, 4 * W)).astype(dtype))
    fwd, bwd = KERNELS[name]
    need = sum(1 << k for k in sig.differentiable)
    gout = rng.normal(0, 1, (R, 4 * W)).astype(dtype)
    runs = {}
    for ranges in ([(0, 0)], [(0, 16), (16, W)]):
        out = np.zeros((R, 4 * W), dtype)
        grads = [np.zeros_like(x) for x in ins]
        for u in ranges:
            fwd(*ins, out, *u)
        for u in ranges:
            bwd(*ins, out, gout, *grads, need, *u)
        runs[len(ranges)] = (out, grads)
    (whole, gwhole), (parts, gparts) = runs[1], runs[2]
    np.testing.assert_array_equal(parts, whole)
    for k in sig.differentiable:
        np.testing.assert_array_equal(gparts[k], gwhole[k], err_msg=sig.args[k].name)
    assert np.abs(whole).min() > 0 and all(np.abs(gwhole[k]).min() > 0 for k in sig.differentiable)


def test_attention_over_time_major_keys():
    k, q = f(S * B, C), f(B, C)
    m = np.array([[1.0], [1], [1], [1], [1], [0]])        # sequence 1 has 2 real key steps
    e = run("tdot", [k, q], (S * B, 1), {})[1]
    ks = k.reshape(S, B, C)
    np.testing.assert_allclose(e.reshape(S, B), np.einsum("sbc,bc->sb", ks, q), rtol=1e-12)
    w = run("tsoftmax", [e, m], (S * B, 1), {"batch": B})[1].reshape(S, B)
    assert w[2, 1] == 0 and np.allclose(w.sum(0), 1)
    ref = np.exp(e.reshape(S, B)) * m.reshape(S, B)
    np.testing.assert_allclose(w, ref / ref.sum(0), rtol=1e-12)
    c = run("tsum", [w.reshape(-1, 1), k], (B, C), {})[1]
    np.testing.assert_allclose(c, np.einsum("sb,sbc->bc", w, ks), rtol=1e-12)


def test_lastof_reads_each_sequence_at_its_own_end():
    x = f(S * B, C)
    m = np.array([[1.0], [1], [1], [0], [0], [0]])        # lengths 2 and 1
    out = run("lastof", [x, m], (B, C), {})[1]
    np.testing.assert_allclose(out, x.reshape(S, B, C)[[1, 0], [0, 1]])


def test_hierarchical_softmax_is_a_distribution_and_negsample_matches_its_formula():
    t = tree()
    v, W = f(1, C), f(V - 1, C)
    total = 0.0
    for w in range(V):
        out = run("hsoftmax", [v, np.array([[w]]), t, W], (1, 1), {"norm": 1.0})[1]
        total += np.exp(-out[0, 0])
    assert abs(total - 1) < 1e-9
    v, y, table, W = f(2, C), ids(2, 1), ids(20, 1), f(V, C)
    ins, out, a, (drawn,) = run("negsample", [v, y, table, W], (1, 1), {"k": 3, "norm": 2.0})
    ls = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    ref = -sum(ls(v[r] @ W[y[r, 0]]) + sum(ls(-v[r] @ W[n]) for n in drawn[r]) for r in range(2)) / 2
    np.testing.assert_allclose(out[0, 0], ref, rtol=1e-12)
    assert set(drawn.ravel()) <= set(table.ravel())


# ---------------------------------------------------------------- fused kernels, generated over the registry
EW_OPS = [n for n in KERNEL_OPS if REGISTRY[n].ew is not None]


@pytest.mark.parametrize("name", EW_OPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("units", [False, True])
def test_a_fused_group_of_each_elementwise_op_equals_its_kernels_run_one_by_one(name, dtype, units):
    """e0 = op(i0, ...), e1 = tanh(e0), both outputs: the generated kernel (runtime/codegen.py, from
    the registry's `ew` maths) against the op's own kernels and tanh's, forward and backward,
    with an input read as a block of a wider value and a scalar (mask) input where the op has one."""
    from graphspec.plan import Fused
    from runtime import codegen
    sig = REGISTRY[name]
    W, Rr = 5, 4
    specs, args, ins = [], [], []
    for k, a in enumerate(sig.args):
        if a.kind == "mask":
            specs.append(("s",))
            args.append(f"i{k}")
            ins.append((rng.random((Rr, 1)) > 0.5).astype(float))
        elif k == 0:
            specs.append(("v",))
            args.append(f"i{k}@1")                      # the second block of a [R, 3W] value
            ins.append(f(Rr, 3 * W, lo=0.1))
        else:
            specs.append(("v",))
            args.append(f"i{k}")
            ins.append(f(1 if k == 1 else Rr, W, lo=0.1))   # a param row broadcast over rows
    group = Fused(tuple(specs), ((name, tuple(args)), ("tanh", ("e0",))), (0, 1))
    # units: the kernels of a loop split by hidden units (here over every unit)
    mod = codegen.load("fused", codegen.fused_source(group, np.dtype(dtype).name, units))
    n = (W,) if units else ()
    xs = [x.astype(dtype) for x in ins]
    o0, o1 = np.zeros((Rr, W), dtype), np.zeros((Rr, W), dtype)
    mod.fwd(*xs, o0, o1, *n)
    # the same through the op's own kernels, every operand at full size (a broadcast row repeated)
    direct = [x[:, W:2 * W].copy() if s == "i0@1" else np.repeat(x, Rr // x.shape[0], 0) for x, s in zip(xs, args)]
    r0, r1 = np.zeros_like(o0), np.zeros_like(o1)
    KERNELS[name][0](*direct, r0)
    KERNELS["tanh"][0](r0, r1)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(o0, r0, **tol)
    np.testing.assert_allclose(o1, r1, **tol)
    g0, g1 = f(Rr, W).astype(dtype), f(Rr, W).astype(dtype)
    grads = [np.zeros_like(x) for x in xs]
    need = sum(1 << k for k, a in enumerate(sig.args) if a.kind != "mask")
    ga = g0.copy()
    mod.bwd(*xs, o0, o1, g0, g1, *grads, need, *n)
    KERNELS["tanh"][1](r0, r1, g1, ga, 1)
    # e0's gradient goes back to G whole: from outside the group (g0) and from tanh inside it
    np.testing.assert_allclose(g0, ga, err_msg="the output's whole gradient", **tol)
    ref = [np.zeros_like(x) for x in direct]
    KERNELS[name][1](*direct, r0, ga, *ref, need)
    for k, (x, s) in enumerate(zip(xs, args)):
        want = ref[k].reshape(Rr // x.shape[0], x.shape[0], -1).sum(0) if s != "i0@1" else ref[k]
        if s == "i0@1":
            want = np.zeros_like(x)
            want[:, W:2 * W] = ref[k]
        np.testing.assert_allclose(grads[k], want, err_msg=f"{name} input {k}", **tol)



SAVED_OPS = [n for n in EW_OPS if from_result(n)]


@pytest.mark.parametrize("name", SAVED_OPS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("units", [False, True])
def test_a_saved_result_is_written_over_its_block_and_read_back_as_computed(name, dtype, units):
    """e0 = op(i0@1) saved over i0@1 (graphspec/passes/inplace.py), e1 = tanh(e0): the forward
    writes e0 over the second block of the [R, 3W] input and nothing else; the backward, reading
    it there, gives every gradient bit for bit as the kernel that computes e0 again from i0."""
    from graphspec.plan import Fused
    from runtime import codegen
    W, Rr = 5, 4
    eqns = ((name, ("i0@1",)), ("tanh", ("e0",)))
    mods = [codegen.load("fused", codegen.fused_source(Fused((("v",),), eqns, (0, 1), saves), np.dtype(dtype).name,
                                                       units)) for saves in ((), ((0, "i0@1"),))]
    n = (W,) if units else ()
    x = f(Rr, 3 * W, lo=0.1).astype(dtype)
    g0, g1 = f(Rr, W).astype(dtype), f(Rr, W).astype(dtype)
    got = []
    for mod in mods:
        xs, o0, o1 = x.copy(), np.zeros((Rr, W), dtype), np.zeros((Rr, W), dtype)
        mod.fwd(xs, o0, o1, *n)
        gx, gy0 = np.zeros_like(xs), g0.copy()
        mod.bwd(xs, o0, o1, gy0, g1.copy(), gx, 1, *n)
        got.append((xs, o0, o1, gy0, gx))
    (x0, *plain), (x1, *saved) = got
    assert np.array_equal(x0, x)
    assert np.array_equal(x1[:, W:2 * W], saved[0]) and np.array_equal(np.delete(x1, range(W, 2 * W), 1),
                                                                       np.delete(x, range(W, 2 * W), 1))
    for a, b in zip(plain, saved):
        assert np.array_equal(a, b)


_COLD = """
import json
import numpy as np
import graphspec
from runtime import codegen
from runtime.model import Model
from runtime.train import bind_dims, make_task, make_tables
compiled = []
warm = codegen.warm
codegen.warm = lambda eqns, dtype: compiled.append(warm(eqns, dtype)) or compiled[-1]
import runtime.executor
runtime.executor.warm = codegen.warm
g = graphspec.load("specs/elman.yaml")
task = make_task(g)
bind = bind_dims(g, task)
m = Model("specs/elman.yaml", bind=bind, tables=make_tables(graphspec.load("specs/elman.yaml", bind=bind), task))
loss = m.forward(task.batch("train", 4, 0, 0), seed=0)
m.backward()
print([compiled, len(codegen._modules), loss, float(np.abs(m.current.G[:m.nlearn]).sum())])
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="warm() compiles in parallel only with 2+ cores")
def test_a_cold_cache_compiles_across_processes_then_loads(tmp_path):
    """On an empty cache the executor's modules compile in forked workers (a cold first run waits
    for ~20 modules in turn otherwise); it then loads them from numba's cache and computes the same
    loss and gradient, bit for bit, as a process on this suite's own cache."""
    def run(name):
        env = dict(os.environ, **({"NUMBA_CACHE_DIR": str(tmp_path / name)} if name else {}))
        out = subprocess.run([sys.executable, "-c", _COLD], cwd=ROOT, capture_output=True, text=True, timeout=900,
                             env=env)
        assert out.returncode == 0, out.stderr
        return eval(out.stdout.splitlines()[-1])
    warmed, loaded, loss, gsum = run("parallel")
    assert warmed[0] >= 2 and loaded >= warmed[0]        # the workers compiled, this process loaded
    theirs = run(None)                                   # this suite's own cache, compiled in turn or warm
    assert theirs[2:] == [loss, gsum]
    again = run("parallel")                          # the same cache: nothing to compile
    assert again[0] == [0] and again[2:] == [loss, gsum]
