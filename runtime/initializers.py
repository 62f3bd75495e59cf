"""Initializers for params, by the names the spec language knows (graphspec.lang.INITS).

Matrices are [out, in] (W @ x), so fan_in is the number of columns.
"""
from __future__ import annotations

import numpy as np


def initialize(init, shape, rng: np.random.Generator) -> np.ndarray:
    name, args = init
    if name == "file":          # the vectors are read once the vocabulary is known (export/word2vec.py)
        return initialize(args[1], shape, rng)
    rows, cols = shape
    if name == "zeros":
        return np.zeros(shape)
    if name == "ones":
        return np.ones(shape)
    if name == "constant":
        return np.full(shape, args[0])
    if name == "uniform":
        return rng.uniform(args[0], args[1], shape)
    if name == "normal":
        return rng.normal(0.0, args[0], shape)
    if name in ("xavier", "glorot"):
        # a vector [1, n] has no fan-in of its own: treat it as n inputs to one unit
        fan_in, fan_out = (cols, rows) if rows > 1 else (cols, 1)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)
    if name == "orthogonal":
        # stacked gates [k*H, H]: each H x H block orthogonal, as the recurrence sees it
        if rows % cols == 0 and rows > cols:
            return np.concatenate([_orthogonal(cols, cols, rng) for _ in range(rows // cols)])
        return _orthogonal(rows, cols, rng)
    if name == "identity":
        out = np.zeros(shape)
        k = min(rows, cols)
        out[np.arange(k), np.arange(k)] = args[0]
        if rows == 1:
            out[:] = args[0]
        return out
    raise ValueError(f"unknown initializer {name}")


def _orthogonal(rows, cols, rng):
    a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return q if rows >= cols else q.T
