"""Every VJP of the reference autodiff against central finite differences (float64).

L = sum(r * f(inputs)) for a fixed random r; dL/dinput from backward() must equal
(L(input + eps e_i) - L(input - eps e_i)) / 2 eps for every element i of every input."""
import numpy as np
import pytest

from . import autograd as ag

rng = np.random.default_rng(0)
R = lambda *s: rng.normal(size=s)  # noqa: E731
COND = rng.random((2, 3)) < 0.5

# case -> (the op it checks, a function of Vars, input arrays); broadcasting and repeated indices included
CASES = {
    "add": ("add", lambda a, b: a + b, [R(3, 4), R(4)]),
    "add_row": ("add", lambda a, b: a + b, [R(1, 4), R(3, 4)]),
    "sub": ("sub", lambda a, b: a - b, [R(4), R(3, 4)]),
    "mul": ("mul", lambda a, b: a * b, [R(3, 4), R(3, 1)]),
    "mul_scalar": ("mul", lambda a: 2.5 * a, [R(3)]),
    "where": ("where", lambda a, b: ag.where(COND, a, b), [R(2, 3), R(3)]),
    "tanh": ("tanh", ag.tanh, [R(5)]),
    "sigmoid": ("sigmoid", ag.sigmoid, [R(5)]),
    "exp": ("exp", ag.exp, [R(5)]),
    "log": ("log", ag.log, [rng.uniform(0.5, 2.0, 5)]),
    "matmul_vec": ("matmul", lambda w, x: w @ x, [R(3, 4), R(4)]),
    "matmul_mat": ("matmul", lambda a, b: a @ b, [R(3, 4), R(4, 2)]),
    "transpose": ("transpose", lambda a: a.T, [R(3, 4)]),
    "vsum": ("vsum", lambda a: a.sum(), [R(3, 4)]),
    "vsum_axis": ("vsum", lambda a: a.sum(axis=0), [R(3, 4)]),
    "log_softmax": ("log_softmax", ag.log_softmax, [R(5)]),
    "log_softmax_axis0": ("log_softmax", lambda a: ag.log_softmax(a, axis=0), [R(4, 3)]),
    "getitem_rows": ("getitem", lambda a: a[np.array([2, 0, 2])], [R(4, 3)]),       # a row picked twice
    "getitem_slice": ("getitem", lambda a: a[1:3], [R(5)]),
    "getitem_int": ("getitem", lambda a: a[2], [R(4, 3)]),
    "concat": ("concat", lambda a, b: ag.concat([a, b]), [R(3), R(2)]),
    "concat_axis1": ("concat", lambda a, b: ag.concat([a, b], axis=1), [R(2, 3), R(2, 2)]),
    "stack": ("stack", lambda a, b: ag.stack([a, b]), [R(3), R(3)]),
    "reshape": ("reshape", lambda a: ag.reshape(a, (2, 3)), [R(6)]),
}


def _loss(f, arrays, r):
    return float((f(*[ag.Var(a) for a in arrays]).value * r).sum())


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_matches_finite_differences(name):
    _, f, arrays = CASES[name]
    xs = [ag.Var(a.copy()) for a in arrays]
    y = f(*xs)
    r = np.random.default_rng(1).normal(size=y.shape)
    (y * r).sum().backward()
    eps = 1e-6
    for k, a in enumerate(arrays):
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            up, down = [x.copy() for x in arrays], [x.copy() for x in arrays]
            up[k][i] += eps
            down[k][i] -= eps
            num[i] = (_loss(f, up, r) - _loss(f, down, r)) / (2 * eps)
        assert xs[k].grad.shape == a.shape
        np.testing.assert_allclose(xs[k].grad, num, rtol=1e-7, atol=1e-8, err_msg=f"{name}: input {k}")


def test_every_op_is_checked():
    assert {op for op, _, _ in CASES.values()} == set(ag.OPS)


def test_shared_value_accumulates_and_deep_chains_do_not_recurse():
    x = ag.Var(np.array([0.3, -0.2]))
    y = x
    for _ in range(5000):                 # deeper than Python's recursion limit
        y = ag.tanh(y) * 0.5 + y * 0.5
    (y * y).sum().backward()
    assert np.all(np.isfinite(x.grad)) and np.all(x.grad != 0)
    a = ag.Var(np.array(2.0))
    (a * a + a).backward()                # d/da (a^2 + a) = 2a + 1, a read three times
    assert a.grad == 5.0
