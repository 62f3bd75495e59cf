"""Elementwise ops with row/column broadcasting, and the squashing nonlinearities.

Broadcasting: an operand with fewer rows than the output is read cyclically (row r uses
r % rows: a param row vector has 1 row; a per-sequence value has B rows against T*B time-major
rows); an operand with one column broadcasts over columns. Backward sums over what broadcast.
"""
import numpy as np

from graphspec.plan import ASSIGN

from ..jit import const, jit
from .vecmath import fast_tanh


# ---------------------------------------------------------------- add, sub, mul
@jit
def _binary(a, b, out, op):
    R, C = out.shape
    ra, rb = a.shape[0], b.shape[0]
    full = a.shape[1] == C and b.shape[1] == C
    for r in range(R):
        ia, ib = r % ra, r % rb
        if full:
            if op == 0:
                for j in range(C):
                    out[r, j] = a[ia, j] + b[ib, j]
            elif op == 1:
                for j in range(C):
                    out[r, j] = a[ia, j] - b[ib, j]
            else:
                for j in range(C):
                    out[r, j] = a[ia, j] * b[ib, j]
        else:
            for j in range(C):
                x = a[ia, j if a.shape[1] == C else 0]
                y = b[ib, j if b.shape[1] == C else 0]
                out[r, j] = x + y if op == 0 else x - y if op == 1 else x * y


@jit
def _accumulate(g, gout, scale):
    """g (broadcast shape) += scale * gout (full shape), summing over what broadcast."""
    R, C = gout.shape
    rg, cg = g.shape
    for r in range(R):
        i = r % rg
        if cg == C:
            for j in range(C):
                g[i, j] += scale * gout[r, j]
        else:
            s = gout[r, 0] * 0
            for j in range(C):
                s += gout[r, j]
            g[i, 0] += scale * s


@jit
def add_fwd(a, b, out):
    """y = a + b"""
    _binary(a, b, out, 0)


@jit
def add_bwd(a, b, out, gout, ga, gb, need):
    """da += dy;  db += dy"""
    if need & 1:
        _accumulate(ga, gout, const(gout, 1.0))
    if need & 2:
        _accumulate(gb, gout, const(gout, 1.0))


@jit
def sub_fwd(a, b, out):
    """y = a - b"""
    _binary(a, b, out, 1)


@jit
def sub_bwd(a, b, out, gout, ga, gb, need):
    """da += dy;  db -= dy"""
    if need & 1:
        _accumulate(ga, gout, const(gout, 1.0))
    if need & 2:
        _accumulate(gb, gout, const(gout, -1.0))


@jit
def mul_fwd(a, b, out):
    """y = a * b"""
    _binary(a, b, out, 2)


@jit
def mul_bwd(a, b, out, gout, ga, gb, need):
    """da += dy * b;  db += dy * a"""
    R, C = gout.shape
    ra, rb = a.shape[0], b.shape[0]
    ca, cb = a.shape[1], b.shape[1]
    for r in range(R):
        ia, ib = r % ra, r % rb
        if ca == C and cb == C:
            if need & 1:
                for j in range(C):
                    ga[ia, j] += gout[r, j] * b[ib, j]
            if need & 2:
                for j in range(C):
                    gb[ib, j] += gout[r, j] * a[ia, j]
        else:
            for j in range(C):
                ja = j if ca == C else 0
                jb = j if cb == C else 0
                if need & 1:
                    ga[ia, ja] += gout[r, j] * b[ib, jb]
                if need & 2:
                    gb[ib, jb] += gout[r, j] * a[ia, ja]


# ---------------------------------------------------------------- squashing
@jit
def tanh_fwd(x, out):
    """y = tanh(x)"""
    R, C = out.shape
    for r in range(R):
        for j in range(C):
            out[r, j] = fast_tanh(x[r, j])


@jit
def tanh_bwd(x, out, gout, gx, need):
    """dx += dy * (1 - y^2) (stored, not added, when the plan says so: Eqn.assign)"""
    if need & 1:
        one = const(out, 1.0)
        R, C = out.shape
        store = need & (1 << ASSIGN)
        for r in range(R):
            if store:
                gx[r, :] = 0    # the row is in L1 for the adds: one loop, not a storing copy of it
            for j in range(C):
                y = out[r, j]
                gx[r, j] += gout[r, j] * (one - y * y)


@jit
def sigmoid_fwd(x, out):
    """y = 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2"""
    h = const(out, 0.5)
    R, C = out.shape
    for r in range(R):
        for j in range(C):
            out[r, j] = h + h * fast_tanh(h * x[r, j])


@jit
def sigmoid_bwd(x, out, gout, gx, need):
    """dx += dy * y * (1 - y) (stored, not added, when the plan says so: Eqn.assign)"""
    if need & 1:
        one = const(out, 1.0)
        R, C = out.shape
        store = need & (1 << ASSIGN)
        for r in range(R):
            if store:
                gx[r, :] = 0    # the row is in L1 for the adds: one loop, not a storing copy of it
            for j in range(C):
                y = out[r, j]
                gx[r, j] += gout[r, j] * y * (one - y)


@jit
def rectify_fwd(z, a, out):
    """The rectifier family: y = max(0, z) + a * min(0, z), a one per unit or one for all:
    ReLU a=0, absolute value a=-1, leaky ReLU a small, PReLU a learned."""
    R, C = out.shape
    ra, ca = a.shape
    zero = const(out, 0.0)
    for r in range(R):
        i = r % ra
        for j in range(C):
            v = z[r, j]
            s = a[i, j if ca == C else 0]
            out[r, j] = max(v, zero) + s * min(v, zero)


@jit
def rectify_bwd(z, a, out, gout, gz, ga, need):
    """dz += dy * (1 if z > 0 else a);  da += dy * min(0, z)"""
    R, C = out.shape
    ra, ca = a.shape
    zero, one = const(out, 0.0), const(out, 1.0)
    for r in range(R):
        i = r % ra
        for j in range(C):
            v = z[r, j]
            jj = j if ca == C else 0
            if need & 1:
                gz[r, j] += gout[r, j] * (one if v > zero else a[i, jj])
            if need & 2:
                ga[i, jj] += gout[r, j] * min(v, zero)


# ---------------------------------------------------------------- plumbing
@jit
def copy_fwd(x, out):
    """y = x, x's rows repeated (an initial state broadcast to every batch row)."""
    R, C = out.shape
    rx = x.shape[0]
    for r in range(R):
        for j in range(C):
            out[r, j] = x[r % rx, j]


@jit
def copy_bwd(x, out, gout, gx, need):
    """dx += dy, summed over the repeated rows."""
    if need & 1:
        _accumulate(gx, gout, const(gout, 1.0))


@jit
def select_fwd(m, a, b, out):
    """y = a where m > 0.5 else b (a state carried over padding)."""
    R, C = out.shape
    rm = m.shape[0]
    for r in range(R):
        take = m[r % rm, 0] > 0.5
        for j in range(C):
            out[r, j] = a[r, j] if take else b[r, j]


@jit
def select_bwd(m, a, b, out, gout, gm, ga, gb, need):
    """da += m dy;  db += (1 - m) dy;  the mask gets no gradient."""
    R, C = out.shape
    rm = m.shape[0]
    for r in range(R):
        take = m[r % rm, 0] > 0.5
        if take and need & 2:
            for j in range(C):
                ga[r, j] += gout[r, j]
        if not take and need & 4:
            for j in range(C):
                gb[r, j] += gout[r, j]


@jit
def dropout_fwd(x, out, p, mask):
    """Training only: y = x * m / (1 - p), m ~ Bernoulli(1 - p), kept in scratch for backward."""
    R, C = out.shape
    keep = const(out, 1.0 / (1.0 - p)) if p < 1.0 else const(out, 0.0)
    for r in range(R):
        for j in range(C):
            m = keep if np.random.random() >= p else const(out, 0.0)
            mask[r, j] = m
            out[r, j] = x[r, j] * m


@jit
def dropout_bwd(x, out, gout, gx, need, p, mask):
    """dx += dy * m / (1 - p)"""
    if need & 1:
        R, C = out.shape
        for r in range(R):
            for j in range(C):
                gx[r, j] += gout[r, j] * mask[r, j]
