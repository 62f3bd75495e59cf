"""softmax, log-softmax, and the losses: cross-entropy (with a padding mask) and MSE.

A loss writes one scalar: the sum over rows of mask * loss, divided by norm (the batch size:
summed over time steps, averaged over sequences)."""
import math

from ..jit import const, jit
from .vecmath import dot_rows, exp_sum, fast_exp, row_max, row_sum


@jit
def _lse(x, r):
    """log sum_j exp(x[r, j]) in x's precision (shifted by the max: no overflow)."""
    m = row_max(x, r)
    return m + math.log(exp_sum(x, r, m))


@jit
def softmax_fwd(x, out):
    """y_i = exp(x_i - max) / sum_j exp(x_j - max)"""
    R, C = x.shape
    for r in range(R):
        lse = _lse(x, r)
        for j in range(C):
            out[r, j] = fast_exp(x[r, j] - lse)


@jit
def softmax_bwd(x, out, gout, gx, need):
    """dx += y * (dy - sum_j dy_j y_j)"""
    if need & 1:
        R, C = x.shape
        for r in range(R):
            s = dot_rows(gout, r, out, r)
            for j in range(C):
                gx[r, j] += out[r, j] * (gout[r, j] - s)


@jit
def log_softmax_fwd(x, out):
    """y_i = x_i - log sum_j exp(x_j)"""
    R, C = x.shape
    for r in range(R):
        lse = _lse(x, r)
        for j in range(C):
            out[r, j] = x[r, j] - lse


@jit
def log_softmax_bwd(x, out, gout, gx, need):
    """dx += dy - softmax(x) * sum_j dy_j"""
    if need & 1:
        R, C = x.shape
        for r in range(R):
            s = row_sum(gout, r)
            for j in range(C):
                gx[r, j] += gout[r, j] - fast_exp(out[r, j]) * s


@jit
def cross_entropy_fwd(o, y, m, out, norm):
    """L = sum_r m_r * (log sum_j exp(o_rj) - o_r,y_r) / norm"""
    R, V = o.shape
    rm = m.shape[0]
    total = 0.0
    for r in range(R):
        w = m[r % rm, 0]
        if w == 0:
            continue
        k = y[r, 0]
        if k < 0 or k >= V:
            continue
        total += w * (_lse(o, r) - o[r, k])
    out[0, 0] = total / norm


@jit
def cross_entropy_bwd(o, y, m, out, gout, go, gy, gm, need, norm):
    """do_r += dL * m_r * (softmax(o_r) - onehot(y_r)) / norm"""
    if need & 1:
        R, V = o.shape
        rm = m.shape[0]
        g0 = gout[0, 0] / norm
        for r in range(R):
            w = m[r % rm, 0]
            if w == 0:
                continue
            k = y[r, 0]
            if k < 0 or k >= V:
                continue
            lse = _lse(o, r)
            s = const(go, g0 * w)
            for j in range(V):
                go[r, j] += s * fast_exp(o[r, j] - lse)
            go[r, k] -= s


@jit
def mse_fwd(p, y, m, out, norm):
    """L = sum_r m_r * 0.5 * ||p_r - y_r||^2 / norm"""
    R, C = p.shape
    rm = m.shape[0]
    total = 0.0
    for r in range(R):
        s = 0.0
        for j in range(C):
            d = p[r, j] - y[r, j]
            s += d * d
        total += m[r % rm, 0] * 0.5 * s
    out[0, 0] = total / norm


@jit
def mse_bwd(p, y, m, out, gout, gp, gy, gm, need, norm):
    """dp += dL * m (p - y) / norm;  dy -= the same"""
    R, C = p.shape
    rm = m.shape[0]
    g0 = gout[0, 0] / norm
    for r in range(R):
        s = g0 * m[r % rm, 0]
        for j in range(C):
            d = (p[r, j] - y[r, j]) * s
            if need & 1:
                gp[r, j] += d
            if need & 2:
                gy[r, j] -= d
