"""matmul: y = W x for every row x (W [N, K] is [out, in]; rows are batch rows, and all time
steps at once when hoisted)."""
from ..jit import jit
from .blas import gemm


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
