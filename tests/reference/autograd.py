"""A tiny reverse-mode autodiff over NumPy float64 arrays, independent of graphspec.

The reference models (models.py) are written as their equations over `Var`s; `loss.backward()`
then fills `.grad` of every leaf. Each op records its inputs and a vector-Jacobian product (VJP):
given dL/dy it returns dL/dx for every input. test_autograd.py checks every VJP against central
finite differences, so the reference's gradients rest on nothing but those checks.

    W, x = Var(np.ones((3, 2))), Var(np.ones(2))
    loss = tanh(W @ x).sum()
    loss.backward()          # W.grad, x.grad
"""
from __future__ import annotations

import numpy as np


class Var:
    """A value in the graph: `value` (a float64 array), `grad` after backward()."""
    __slots__ = ("value", "grad", "parents")

    def __init__(self, value, parents=()):
        self.value = np.asarray(value, np.float64)
        self.grad = None
        self.parents = parents          # ((input Var, vjp: dy -> dx), ...)

    shape = property(lambda self: self.value.shape)

    def backward(self):
        """dL/dv for every v this scalar depends on (reverse topological order, each VJP once)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:                    # iterative post-order DFS: deep unrolls do not recurse
            v, done = stack.pop()
            if done:
                order.append(v)
                continue
            if id(v) in seen:
                continue
            seen.add(id(v))
            stack.append((v, True))
            stack.extend((p, False) for p, _ in v.parents)
        for v in order:
            v.grad = None
        self.grad = np.ones_like(self.value)
        for v in reversed(order):
            if v.grad is None:
                continue
            for p, vjp in v.parents:
                g = vjp(v.grad)
                p.grad = g if p.grad is None else p.grad + g

    # operators, so that equations read as written
    __add__ = lambda a, b: add(a, b)
    __radd__ = lambda a, b: add(b, a)
    __sub__ = lambda a, b: sub(a, b)
    __rsub__ = lambda a, b: sub(b, a)
    __mul__ = lambda a, b: mul(a, b)
    __rmul__ = lambda a, b: mul(b, a)
    __neg__ = lambda a: mul(a, -1.0)
    __matmul__ = lambda a, b: matmul(a, b)
    __getitem__ = lambda a, idx: getitem(a, idx)
    T = property(lambda a: transpose(a))

    def sum(self, axis=None):
        return vsum(self, axis)


def lift(x) -> Var:
    """A constant (no gradient wanted) as a Var; a Var unchanged."""
    return x if isinstance(x, Var) else Var(x)


def _unbroadcast(g, shape):
    """Sum g over the axes NumPy broadcast to get from `shape` to g.shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


# ---------------------------------------------------------------- elementwise (broadcasting)
def add(a, b) -> Var:
    a, b = lift(a), lift(b)
    return Var(a.value + b.value, ((a, lambda g: _unbroadcast(g, a.shape)),
                                   (b, lambda g: _unbroadcast(g, b.shape))))


def sub(a, b) -> Var:
    a, b = lift(a), lift(b)
    return Var(a.value - b.value, ((a, lambda g: _unbroadcast(g, a.shape)),
                                   (b, lambda g: -_unbroadcast(g, b.shape))))


def mul(a, b) -> Var:
    a, b = lift(a), lift(b)
    return Var(a.value * b.value, ((a, lambda g: _unbroadcast(g * b.value, a.shape)),
                                   (b, lambda g: _unbroadcast(g * a.value, b.shape))))


def where(cond, a, b) -> Var:
    """a where cond (a constant boolean array) else b: how the rectifiers are written."""
    a, b = lift(a), lift(b)
    cond = np.asarray(cond, bool)
    return Var(np.where(cond, a.value, b.value),
               ((a, lambda g: _unbroadcast(np.where(cond, g, 0.0), a.shape)),
                (b, lambda g: _unbroadcast(np.where(cond, 0.0, g), b.shape))))


def tanh(x) -> Var:
    x = lift(x)
    y = np.tanh(x.value)
    return Var(y, ((x, lambda g: g * (1 - y * y)),))


def sigmoid(x) -> Var:
    x = lift(x)
    y = 1 / (1 + np.exp(-x.value))
    return Var(y, ((x, lambda g: g * y * (1 - y)),))


def exp(x) -> Var:
    x = lift(x)
    y = np.exp(x.value)
    return Var(y, ((x, lambda g: g * y),))


def log(x) -> Var:
    x = lift(x)
    return Var(np.log(x.value), ((x, lambda g: g / x.value),))


# ---------------------------------------------------------------- linear algebra and reductions
def matmul(a, b) -> Var:
    """a @ b for a matrix a and a matrix or vector b (W @ x with x a column vector)."""
    a, b = lift(a), lift(b)
    if b.value.ndim == 1:
        return Var(a.value @ b.value, ((a, lambda g: np.outer(g, b.value)), (b, lambda g: a.value.T @ g)))
    return Var(a.value @ b.value, ((a, lambda g: g @ b.value.T), (b, lambda g: a.value.T @ g)))


def transpose(a) -> Var:
    a = lift(a)
    return Var(a.value.T, ((a, lambda g: g.T),))


def vsum(x, axis=None) -> Var:
    x = lift(x)
    y = x.value.sum(axis=axis)

    def vjp(g):
        if axis is not None:
            g = np.expand_dims(g, axis)
        return np.broadcast_to(g, x.shape).copy()
    return Var(y, ((x, vjp),))


def log_softmax(x, axis=-1) -> Var:
    """x - log sum exp x along axis (the max subtracted first)."""
    x = lift(x)
    z = x.value - x.value.max(axis=axis, keepdims=True)
    y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return Var(y, ((x, lambda g: g - np.exp(y) * g.sum(axis=axis, keepdims=True)),))


# ---------------------------------------------------------------- indexing and shapes
def getitem(x, idx) -> Var:
    """x[idx], any NumPy index (rows of an embedding table, a slice of a gate vector);
    backward scatters with repeats summed (np.add.at)."""
    x = lift(x)

    def vjp(g):
        out = np.zeros_like(x.value)
        np.add.at(out, idx, g)
        return out
    return Var(x.value[idx], ((x, vjp),))


def concat(xs, axis=0) -> Var:
    xs = [lift(x) for x in xs]
    cuts = np.cumsum([x.shape[axis] for x in xs])[:-1]
    y = np.concatenate([x.value for x in xs], axis=axis)
    return Var(y, tuple((x, (lambda g, i=i: np.split(g, cuts, axis=axis)[i])) for i, x in enumerate(xs)))


def stack(xs, axis=0) -> Var:
    xs = [lift(x) for x in xs]
    y = np.stack([x.value for x in xs], axis=axis)
    return Var(y, tuple((x, (lambda g, i=i: np.take(g, i, axis=axis))) for i, x in enumerate(xs)))


def reshape(x, shape) -> Var:
    x = lift(x)
    return Var(x.value.reshape(shape), ((x, lambda g: g.reshape(x.shape)),))


OPS = ("add", "sub", "mul", "where", "tanh", "sigmoid", "exp", "log", "matmul", "transpose", "vsum",
       "log_softmax", "getitem", "concat", "stack", "reshape")
