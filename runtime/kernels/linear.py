"""matmul: y = W x for every row x (W [N, K] is [out, in]; rows are batch rows, and all time
steps at once when hoisted); affine: y = W x + a, the GEMM accumulating into y."""
from graphspec.plan import ASSIGN

from ..jit import const, jit
from .blas import gemm
from .elementwise import _accumulate, copy_fwd
from .packed import gemm_packed, gemm_packed_cols, pack_both


@jit
def matmul_fwd(w, x, out):
    """Y[R, N] = X[R, K] @ W[N, K].T"""
    gemm(False, True, 1.0, x, w, 0.0, out)


@jit
def matmul_bwd(w, x, out, gout, gw, gx, need):
    """dX += dY @ W;  dW += dY.T @ X (one GEMM over every row, accumulated in place; stored,
    beta=0, where the plan says it is the gradient's first write: Eqn.assign)."""
    if need & 1:
        gemm(True, False, 1.0, gout, x, 0.0 if need & (1 << ASSIGN) else 1.0, gw)
    if need & 2:
        gemm(False, False, 1.0, gout, w, 0.0 if need & (1 << (ASSIGN + 1)) else 1.0, gx)


@jit
def affine_fwd(w, x, a, out):
    """Y = A (rows repeated) + X @ W.T: A is copied in, then the GEMM adds to it (beta=1). When
    the compiler put Y in A's buffer (its only reader), the GEMM accumulates onto A in place."""
    if a.ctypes.data != out.ctypes.data or a.shape[0] != out.shape[0]:
        copy_fwd(a, out)
    gemm(False, True, 1.0, x, w, 1.0, out)


@jit
def affine_bwd(w, x, a, out, gout, gw, gx, ga, need):
    """dX += dY @ W;  dW += dY.T @ X;  dA += dY summed over A's repeated rows."""
    matmul_bwd(w, x, out, gout, gw, gx, need)
    if need & 4:
        _accumulate(ga, gout, const(gout, 1.0))


@jit
def affine_table_fwd(w, e, b, out):
    """T = E @ W.T + b: affine's forward with E's rows as the rows of X."""
    affine_fwd(w, e, b, out)


@jit
def affine_table_bwd(w, e, b, out, gout, gw, ge, gb, need):
    """dE += dT @ W;  dW += dT.T @ E;  db += dT summed over rows."""
    affine_bwd(w, e, b, out, gout, gw, ge, gb, need)


# ---------------------------------------------------------------- over packed weights
@jit
def _layouts(w, p):
    """P's two packed copies of W [N, K]: for X @ W.T, then for dY @ W."""
    N, K = w.shape
    nf = (N + 15) // 16 * K
    return p[:nf], p[nf:]


@jit
def pack_fwd(w, out):
    """P = [W.T packed; W packed] (runtime/kernels/packed.py): once per forward, before the loops."""
    pf, pb = _layouts(w, out)
    pack_both(w, pf, pb)


@jit
def pack_bwd(w, out, gout, gw, need):
    """No gradient: W's comes from the deferred GEMM of the ops that read P."""


@jit
def matmul_packed_fwd(w, p, x, out, u0, u1):
    """Y = X @ W.T over P's first layout. Units [u0, u1) (Plan.unit_segments; u1 = 0: all):
    columns u0..u1 of each block of X's width in Y only."""
    if u1 == 0:
        gemm_packed(x, _layouts(w, p)[0], out, False)
        return
    W = x.shape[1]
    for b in range(out.shape[1] // W):
        gemm_packed_cols(x, _layouts(w, p)[0], out, False, b * W + u0, b * W + u1)


@jit
def matmul_packed_bwd(w, p, x, out, gout, gw, gp, gx, need, u0, u1):
    """dX += dY @ W over P's second layout (dW: the deferred GEMM over all steps); units
    [u0, u1): columns u0..u1 of dX, from every column of dY."""
    if need & 4:
        if u1 == 0:
            gemm_packed(gout, _layouts(w, p)[1], gx, True)
        else:
            gemm_packed_cols(gout, _layouts(w, p)[1], gx, True, u0, u1)


@jit
def affine_packed_fwd(w, p, x, a, out, u0, u1):
    """Y = A + X @ W.T over P; in A's buffer when the compiler put it there. Units [u0, u1):
    as matmul_packed."""
    inplace = a.ctypes.data == out.ctypes.data and a.shape[0] == out.shape[0]
    if u1 == 0:
        if not inplace:
            copy_fwd(a, out)
        gemm_packed(x, _layouts(w, p)[0], out, True)
        return
    W = x.shape[1]
    for b in range(out.shape[1] // W):
        c0, c1 = b * W + u0, b * W + u1
        if not inplace:
            for r in range(out.shape[0]):
                out[r, c0:c1] = a[r % a.shape[0], c0:c1]
        gemm_packed_cols(x, _layouts(w, p)[0], out, True, c0, c1)


@jit
def affine_packed_bwd(w, p, x, a, out, gout, gw, gp, gx, ga, need, u0, u1):
    """dX += dY @ W over P;  dA += dY summed over A's repeated rows. Units [u0, u1): as
    matmul_packed, and the forward's columns of dA."""
    matmul_packed_bwd(w, p, x, out, gout, gw, gp, gx, need, u0, u1)
    if need & 8:
        if u1 == 0:
            _accumulate(ga, gout, const(gout, 1.0))
            return
        W = x.shape[1]
        for b in range(out.shape[1] // W):
            c0, c1 = b * W + u0, b * W + u1
            for r in range(gout.shape[0]):
                ga[r % ga.shape[0], c0:c1] += gout[r, c0:c1]
