"""matmul: y = W x for every row x (W [N, K] is [out, in]; rows are batch rows, and all time
steps at once when hoisted); affine: y = W x + a, the GEMM accumulating into y."""
from ..jit import const, jit
from .blas import gemm
from .elementwise import _accumulate, copy_fwd


@jit
def matmul_fwd(w, x, out):
    """Y[R, N] = X[R, K] @ W[N, K].T"""
    gemm(False, True, 1.0, x, w, 0.0, out)


@jit
def matmul_bwd(w, x, out, gout, gw, gx, need):
    """dX += dY @ W;  dW += dY.T @ X (one GEMM over every row, accumulated in place)."""
    if need & 1:
        gemm(True, False, 1.0, gout, x, 1.0, gw)
    if need & 2:
        gemm(False, False, 1.0, gout, w, 1.0, gx)


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
