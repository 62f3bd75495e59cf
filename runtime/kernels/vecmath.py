"""Scalar maths written so that the loops calling it vectorise.

pip's llvmlite has no vector maths library: a loop over libm's tanh or exp stays scalar (~25 ns
per element). In float32 these are branch-free polynomial forms LLVM turns into AVX code; in
float64 (gradient checks) they are libm's. Sums go through `jit_sum` helpers (reassociation
only) so that they vectorise too.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..jit import OPTIONS, const, jit, jit_sum


# ---------------------------------------------------------------- tanh
def fast_tanh(x):
    return math.tanh(x)


@overload(fast_tanh, jit_options=dict(OPTIONS))
def _fast_tanh(x):
    """float64: libm's tanh (gradient checks). float32: a rational approximation (Eigen's),
    max error ~1e-7, branch-free so loops vectorise; libm tanh costs ~25 ns per element."""
    if x == numba.float32:
        a1, a3, a5 = np.float32(4.89352455891786e-03), np.float32(6.37261928875436e-04), np.float32(1.48572235717979e-05)
        a7, a9 = np.float32(5.12229709037114e-08), np.float32(-8.60467152213735e-11)
        a11, a13 = np.float32(2.00018790482477e-13), np.float32(-2.76076847742355e-16)
        b0, b2 = np.float32(4.89352518554385e-03), np.float32(2.26843463243900e-03)
        b4, b6 = np.float32(1.18534705686654e-04), np.float32(1.19825839466702e-06)
        lim = np.float32(7.90531110763549805)

        def impl(x):
            v = min(max(x, -lim), lim)
            v2 = v * v
            p = v2 * a13 + a11
            p = v2 * p + a9
            p = v2 * p + a7
            p = v2 * p + a5
            p = v2 * p + a3
            p = v2 * p + a1
            p = v * p
            q = v2 * b6 + b4
            q = v2 * q + b2
            q = v2 * q + b0
            return p / q
        return impl
    return lambda x: math.tanh(x)


# ---------------------------------------------------------------- exp
@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (2^n is (n + 127) << 23)."""
    def codegen(context, builder, signature, args):
        v = args[0]
        if v.type.width > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(bits), codegen


def fast_exp(x):
    return math.exp(x)


@overload(fast_exp, jit_options=dict(OPTIONS))
def _fast_exp(x):
    """float64: libm's exp. float32: Cephes' expf, exp(x) = 2^n exp(r) with n = round(x log2 e),
    |r| <= ln(2)/2 and a degree-7 polynomial for exp(r); max relative error ~2e-7, branch-free.
    Below -87.3 (where float32 leaves its normal range) it returns 0; above 88.3 it saturates
    at exp(88.3) = 2.1e38 (2^n must stay a normal float32)."""
    if x == numba.float32:
        log2e, c1, c2 = np.float32(1.44269504088896341), np.float32(0.693359375), np.float32(-2.12194440e-4)
        p0, p1, p2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
        p3, p4, p5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
        lo, hi, half, one, zero = (np.float32(-87.3), np.float32(88.3), np.float32(0.5), np.float32(1.0),
                                   np.float32(0.0))

        def impl(x):
            v = min(max(x, lo), hi)
            n = np.floor(v * log2e + half)
            r = v - n * c1 - n * c2
            p = p0 * r + p1
            p = p * r + p2
            p = p * r + p3
            p = p * r + p4
            p = p * r + p5
            p = p * (r * r) + r + one
            y = p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
            return zero if x < lo else y        # NaN stays NaN
        return impl
    return lambda x: math.exp(x)


def fast_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@overload(fast_sigmoid, jit_options=dict(OPTIONS))
def _fast_sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2: no overflow for large |x| and, in float32, no libm."""
    half = np.float32(0.5) if x == numba.float32 else 0.5

    def impl(x):
        return half + half * fast_tanh(half * x)
    return impl


# ---------------------------------------------------------------- reductions
@jit_sum
def dot_rows(a, i, b, k):
    """a[i] . b[k], accumulated in the arrays' precision."""
    s = const(a, 0.0)
    for j in range(a.shape[1]):
        s += a[i, j] * b[k, j]
    return s


@jit_sum
def row_sum(x, r):
    s = const(x, 0.0)
    for j in range(x.shape[1]):
        s += x[r, j]
    return s


@jit_sum
def exp_sum(x, r, shift):
    """sum_j exp(x[r, j] - shift)"""
    s = const(x, 0.0)
    for j in range(x.shape[1]):
        s += fast_exp(x[r, j] - shift)
    return s


@jit
def _larger(a, b):
    return b if b > a else a


@jit
def row_max(x, r):
    """max_j x[r, j] over eight running maxima. One chain of 64 dependent comparisons made a
    softmax row wait its whole latency before the exponentials could start (LLVM does not
    vectorise a max reduction without fast-math's no-NaNs): the log-sum-exp of [4096, 64] float32
    389 -> 173 us."""
    C = x.shape[1]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = x[r, 0]
    j = 0
    while j + 8 <= C:
        a0, a1 = _larger(a0, x[r, j]), _larger(a1, x[r, j + 1])
        a2, a3 = _larger(a2, x[r, j + 2]), _larger(a3, x[r, j + 3])
        a4, a5 = _larger(a4, x[r, j + 4]), _larger(a5, x[r, j + 5])
        a6, a7 = _larger(a6, x[r, j + 6]), _larger(a7, x[r, j + 7])
        j += 8
    while j < C:
        a0 = _larger(a0, x[r, j])
        j += 1
    return _larger(_larger(_larger(a0, a1), _larger(a2, a3)), _larger(_larger(a4, a5), _larger(a6, a7)))


def fast_softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@overload(fast_softplus, jit_options=dict(OPTIONS))
def _fast_softplus(x):
    """softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|);  -log sigmoid(x) = softplus(-x).
    float32: log1p(u) for u in (0, 1] as 2 atanh(s), s = u / (2 + u) <= 1/3, by its odd series to
    s^13 (error < 4e-8, no range reduction, no cancellation for small u); float64: libm."""
    if x == numba.float32:
        zero, one, two = np.float32(0.0), np.float32(1.0), np.float32(2.0)
        c3, c5, c7 = np.float32(1 / 3), np.float32(1 / 5), np.float32(1 / 7)
        c9, c11, c13 = np.float32(1 / 9), np.float32(1 / 11), np.float32(1 / 13)

        def impl(x):
            u = fast_exp(-abs(x))
            s = u / (two + u)
            s2 = s * s
            p = c13 * s2 + c11
            p = p * s2 + c9
            p = p * s2 + c7
            p = p * s2 + c5
            p = p * s2 + c3
            p = p * s2 + one
            return max(x, zero) + two * s * p
        return impl
    return lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x)))
