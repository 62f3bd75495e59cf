"""Optimizers over the flat learnable block F[:nlearn] and its gradient G[:nlearn].

One jitted loop per update rule over the whole vector: no per-param Python work. State (moments,
step count) is plain arrays, saved in checkpoints as they are.

Lookup tables (word vectors, embeddings) have row-sparse gradients. Given the `Support` of a
gradient (Executor.grad_support), plain SGD updates only the rows a batch touched, and norms sum
only over them: the same numbers as the dense loops, at a cost that does not grow with the
vocabulary. Momentum and Adam move every row every step (their moments decay), so they stay
dense: a sparse Adam would be a different optimizer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .jit import const, jit, jit_sum


@dataclass
class Support:
    """Where a gradient over F[:nlearn] can be nonzero: `dense` ranges [a, z), and for each
    sparse param (offset, rows, cols, the rows touched)."""
    dense: list
    tables: list

    def table_views(self, v: np.ndarray):
        """([rows, cols] view of each sparse param in v, its touched rows)"""
        for off, n, cols, rows in self.tables:
            yield v[off:off + n * cols].reshape(n, cols), rows


@jit
def _sgd_rows(p, g, rows, lr, s):
    """p[i] -= lr (s g[i]) for the touched rows i only"""
    for i in rows:
        pi, gi = p[i], g[i]
        for j in range(pi.shape[0]):
            pi[j] -= lr * (s * gi[j])


@jit_sum
def _sumsq_rows(g, rows):
    s = 0.0
    for i in rows:
        gi = g[i]
        for j in range(gi.shape[0]):
            s += float(gi[j]) * float(gi[j])
    return s


@jit
def _scale_rows(g, rows, c):
    for i in rows:
        gi = g[i]
        for j in range(gi.shape[0]):
            gi[j] *= c


@jit
def _sgd(p, g, lr, wd, s):
    """p -= lr * (s g + wd * p)"""
    S = const(p, s)
    for i in range(p.shape[0]):
        p[i] -= lr * (S * g[i] + wd * p[i])


@jit
def _momentum(p, g, m, lr, mu, wd, s):
    """m = mu m + s g + wd p;  p -= lr m"""
    S = const(p, s)
    for i in range(p.shape[0]):
        m[i] = mu * m[i] + S * g[i] + wd * p[i]
        p[i] -= lr * m[i]


@jit
def _adam(p, g, m, v, lr, b1, b2, eps, wd, t, s):
    """Adam with bias correction; weight decay decoupled (AdamW), of the gradient s g:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + lr wd p
    in the params' precision (float64 math cost 5x in float32 training: scalar sqrt and divide)."""
    a, c = const(p, lr / (1.0 - b1 ** t)), const(p, 1.0 / (1.0 - b2 ** t))
    B1, B2, E, L, one, S = const(p, b1), const(p, b2), const(p, eps), const(p, lr * wd), const(p, 1.0), const(p, s)
    for i in range(p.shape[0]):
        gi = S * g[i]
        mi = B1 * m[i] + (one - B1) * gi
        vi = B2 * v[i] + (one - B2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= a * mi / (np.sqrt(vi * c) + E) + L * p[i]


@jit_sum
def _sumsq(g):
    """sum g_i^2 in float64 (jit_sum: the sum vectorises; 0.2 ms -> 0.03 ms for 225k floats)"""
    s = 0.0
    for i in range(g.shape[0]):
        s += float(g[i]) * float(g[i])
    return s


def global_norm(g: np.ndarray, support: Support = None) -> float:
    if support is None:
        return math.sqrt(_sumsq(g))
    s = sum(_sumsq(g[a:z]) for a, z in support.dense)
    return math.sqrt(s + sum(_sumsq_rows(t, rows) for t, rows in support.table_views(g)))


def clip_factor(g: np.ndarray, max_norm: float, support: Support = None) -> tuple:
    """(the norm of g, the factor that brings it to at most max_norm: 1 when it is within, or
    max_norm is 0). Optimizer.step(scale=factor) then reads g clipped without g being rewritten:
    a pass over g fewer than clip_by_global_norm, the same numbers."""
    norm = global_norm(g, support)
    return norm, (max_norm / (norm + 1e-12) if max_norm and norm > max_norm else 1.0)


def clip_by_global_norm(g: np.ndarray, max_norm: float, support: Support = None) -> float:
    """Scale g in place so its norm is at most max_norm (direction kept); returns the norm
    before clipping."""
    norm, factor = clip_factor(g, max_norm, support)
    if factor != 1.0:
        c = g.dtype.type(factor)
        if support is None:
            g *= c
        else:
            for a, z in support.dense:
                g[a:z] *= c
            for t, rows in support.table_views(g):
                _scale_rows(t, rows, c)
    return norm


def learning_rate(cfg: dict, step: int, total: int) -> float:
    """The rate of step `step` (0-based) of `total`. With `warmup: W`, steps 0..W-1 rise linearly
    to lr (lr (step + 1) / W), and the schedule then runs over the remaining total - W steps as
    if they were the whole run."""
    lr, kind = float(cfg["lr"]), cfg.get("schedule", "constant")
    warm = int(cfg.get("warmup") or 0)
    if step < warm:
        return lr * (step + 1) / warm
    step, total = step - warm, total - warm
    if kind == "constant":
        return lr
    if kind == "linear":                      # to 1e-4 of lr at the last step (word2vec's schedule)
        return lr * max(1e-4, 1.0 - step / max(total, 1))
    if kind == "cosine":                      # half a cosine from lr down to 0 after the last step
        return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    if kind == "step":
        return lr * float(cfg.get("decay", 0.5)) ** (step // int(cfg.get("decay_every", 1000)))
    if kind == "exponential":
        return lr * float(cfg.get("decay", 0.5)) ** (step / int(cfg.get("decay_every", 1000)))
    raise ValueError(f"unknown schedule {kind}")


class Optimizer:
    def __init__(self, cfg: dict, n: int, dtype=np.float32):
        self.kind = cfg.get("optimizer", "adam")
        self.cfg = cfg
        self.wd = float(cfg.get("weight_decay", 0.0))
        self.t = 0
        self.m = np.zeros(n, dtype)
        self.v = np.zeros(n if self.kind == "adam" else 0, dtype)

    def step(self, p: np.ndarray, g: np.ndarray, lr: float, support: Support = None, scale: float = 1.0):
        """One update of p from scale * g (scale: a clip's factor, clip_factor); with the
        gradient's support, plain SGD touches only it."""
        self.t += 1
        if self.kind == "sgd" and support is not None and self.wd == 0:
            for a, z in support.dense:
                _sgd(p[a:z], g[a:z], lr, 0.0, scale)
            for (pt, rows), (gt, _) in zip(support.table_views(p), support.table_views(g)):
                _sgd_rows(pt, gt, rows, p.dtype.type(lr), p.dtype.type(scale))
        elif self.kind == "sgd":
            _sgd(p, g, lr, self.wd, scale)
        elif self.kind == "momentum":
            _momentum(p, g, self.m, lr, float(self.cfg.get("momentum", 0.9)), self.wd, scale)
        elif self.kind == "adam":
            _adam(p, g, self.m, self.v, lr, 0.9, 0.999, 1e-8, self.wd, float(self.t), scale)
        else:
            raise ValueError(f"unknown optimizer {self.kind}")

    def state(self) -> dict:
        return {"opt_t": np.array(self.t), "opt_m": self.m, "opt_v": self.v}

    def load_state(self, d: dict):
        self.t = int(d["opt_t"])
        self.m[...] = d["opt_m"]
        self.v = np.array(d["opt_v"], self.m.dtype)
