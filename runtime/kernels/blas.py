"""GEMM from compiled code, with the accumulate mode numba's np.dot lacks.

scipy ships BLAS as Cython functions; their addresses are registered with LLVM under our own
names, and an intrinsic calls them with Fortran's by-pointer convention. `gemm` computes
C = alpha op(A) op(B) + beta C on row-major arrays: beta=1 accumulates a gradient in place,
with no scratch copy.
"""
import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ..jit import jit

ll.add_symbol("graphspec_sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
ll.add_symbol("graphspec_dgemm", get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))


@intrinsic
def _xgemm(typingctx, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    dtype = C.dtype
    sig = types.void(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)

    def codegen(context, builder, signature, args):
        ta, tb, m_, n_, k_, al, a, lda_, b, ldb_, be, c, ldc_ = args
        ft = context.get_value_type(dtype)
        i8, i32 = ir.IntType(8), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i8.as_pointer(), i32.as_pointer(),
                                               i32.as_pointer(), i32.as_pointer(), ft.as_pointer(),
                                               ft.as_pointer(), i32.as_pointer(), ft.as_pointer(),
                                               i32.as_pointer(), ft.as_pointer(), ft.as_pointer(),
                                               i32.as_pointer()])
        name = "graphspec_sgemm" if dtype == types.float32 else "graphspec_dgemm"
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)

        def ref(value, ty):
            p = cgutils.alloca_once(builder, ty)
            builder.store(value, p)
            return p

        def ival(v, ty):
            return ref(builder.trunc(v, ty), ty)

        def fval(v, vty):
            return ref(context.cast(builder, v, vty, dtype), ft)

        def data(arr, arrty):
            return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data

        s = signature.args
        builder.call(fn, [ival(ta, i8), ival(tb, i8), ival(m_, i32), ival(n_, i32), ival(k_, i32),
                          fval(al, s[5]), data(a, s[6]), ival(lda_, i32), data(b, s[8]), ival(ldb_, i32),
                          fval(be, s[10]), data(c, s[11]), ival(ldc_, i32)])
        return context.get_dummy_value()
    return sig, codegen


@jit
def gemm(ta, tb, alpha, A, B, beta, C):
    """C = alpha op(A) op(B) + beta C for C-contiguous 2-D arrays (op = transpose if the flag).
    Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so the operands swap."""
    M, N = C.shape
    K = A.shape[0] if ta else A.shape[1]
    if M == 0 or N == 0:
        return
    if K == 0:                  # BLAS's rule: beta = 0 ignores what C held (a NaN too)
        for i in range(M):
            for j in range(N):
                C[i, j] = 0 if beta == 0 else C[i, j] * beta
        return
    _xgemm(84 if tb else 78, 84 if ta else 78, N, M, K, alpha, B, B.shape[1], A, A.shape[1], beta, C, N)
