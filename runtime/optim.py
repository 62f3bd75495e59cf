"""Optimizers over the flat learnable block F[:nlearn] and its gradient G[:nlearn].

One jitted loop per update rule over the whole vector: no per-param Python work. State (moments,
step count) is plain arrays, saved in checkpoints as they are.
"""
from __future__ import annotations

import math

import numpy as np

from .jit import jit, jit_sum


@jit
def _sgd(p, g, lr, wd):
    """p -= lr * (g + wd * p)"""
    for i in range(p.shape[0]):
        p[i] -= lr * (g[i] + wd * p[i])


@jit
def _momentum(p, g, m, lr, mu, wd):
    """m = mu m + g + wd p;  p -= lr m"""
    for i in range(p.shape[0]):
        m[i] = mu * m[i] + g[i] + wd * p[i]
        p[i] -= lr * m[i]


@jit
def _adam(p, g, m, v, lr, b1, b2, eps, wd, t):
    """Adam with bias correction; weight decay decoupled (AdamW):
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + lr wd p"""
    c1 = 1.0 - b1 ** t
    c2 = 1.0 - b2 ** t
    for i in range(p.shape[0]):
        gi = g[i]
        m[i] = b1 * m[i] + (1.0 - b1) * gi
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi
        p[i] -= lr * ((m[i] / c1) / (math.sqrt(v[i] / c2) + eps) + wd * p[i])


@jit_sum
def _sumsq(g):
    """sum g_i^2 in float64 (jit_sum: the sum vectorises; 0.2 ms -> 0.03 ms for 225k floats)"""
    s = 0.0
    for i in range(g.shape[0]):
        s += float(g[i]) * float(g[i])
    return s


def global_norm(g: np.ndarray) -> float:
    return math.sqrt(_sumsq(g))


def clip_by_global_norm(g: np.ndarray, max_norm: float) -> float:
    """Scale g in place so its norm is at most max_norm (direction kept); returns the norm
    before clipping."""
    norm = global_norm(g)
    if max_norm and norm > max_norm:
        g *= g.dtype.type(max_norm / (norm + 1e-12))
    return norm


def learning_rate(cfg: dict, step: int, total: int) -> float:
    lr, kind = float(cfg["lr"]), cfg.get("schedule", "constant")
    if kind == "constant":
        return lr
    if kind == "linear":                      # to 1e-4 of lr at the last step (word2vec's schedule)
        return lr * max(1e-4, 1.0 - step / max(total, 1))
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

    def step(self, p: np.ndarray, g: np.ndarray, lr: float):
        self.t += 1
        if self.kind == "sgd":
            _sgd(p, g, lr, self.wd)
        elif self.kind == "momentum":
            _momentum(p, g, self.m, lr, float(self.cfg.get("momentum", 0.9)), self.wd)
        elif self.kind == "adam":
            _adam(p, g, self.m, self.v, lr, 0.9, 0.999, 1e-8, self.wd, float(self.t))
        else:
            raise ValueError(f"unknown optimizer {self.kind}")

    def state(self) -> dict:
        return {"opt_t": np.array(self.t), "opt_m": self.m, "opt_v": self.v}

    def load_state(self, d: dict):
        self.t = int(d["opt_t"])
        self.m[...] = d["opt_m"]
        self.v = np.array(d["opt_v"], self.m.dtype)
