"""The recurrent GEMMs over weights packed once per optimizer step (issues #12 and #17).

An RNN step multiplies a few rows by the same recurrent weight W [N, K] ([out, in], row-major)
twice per time step, T times a pass:

    forward   Y[M, N] (+)= X[M, K] @ W.T
    backward dX[M, K] (+)= dY[M, N] @ W

Both are C[M, n] (+)= A[M, r] @ B[r, n], with B = W.T (n = N, r = K) or B = W (n = K, r = N).
BLAS repacks B on every call and runs one-row products as a slow GEMM; here B is packed once
(`pack_wt` for the forward product, `pack_w` for the backward one) and every per-step product
reads the packed copy (`gemm_packed`).

Packed layout (the SIMD paths of runtime/cpu.py): B's columns cut into panels of PANEL = 16,
each panel stored row after row of B,

    P[q * r + k, j] = B[k, 16 q + j]        (0 where 16 q + j >= n),   P's shape packed_shape(n, r)

so the micro-kernel reads one panel row, 16 contiguous floats, per step k of the reduction.
On the "blas" path (no AVX2/FMA) the same buffer holds B itself, row-major in its first r * n
elements, and the product is BLAS's.

Micro-kernel (`_tile`): a tile of mr rows of C by np panels (np * 16 columns) lives in
registers, mr * np * 16 / LANES vector accumulators (at most 16: 4 rows x 4 zmm or 8 rows x
2 zmm for AVX-512, 4 x 2 x 2 ymm for AVX2, whose 16 registers hold no 8-row tile); per k it
loads np panel rows, broadcasts mr elements of A and issues the FMAs, then adds the tile into C
(accumulate) or stores it. It is emitted as LLVM vector IR: numba's own loops over this layout
vectorise the wrong loop (2-4 GFLOP/s). Few rows (M = 1..3) run the same kernel with mr = M:
each panel row loaded feeds M FMAs, a GEMV-like stream over P that the memory system bounds.
float64 (gradient checks) runs plain loops over the same layout: slower, same results within
rounding.

The kernel is compiled once, as a C function registered with LLVM by name (like BLAS in
blas.py): every caller, the interpreter included, links to it instead of inlining its unrolled
loops and optimising them again (seconds per caller on a cold cache).

Threads: `set_threads(n)` starts n - 1 workers (runtime/kernels/team.py). A product of 1 MFLOP
or more is cut into chunks of 4 panels that the caller and the workers claim one at a time;
the caller never waits for a worker to start, only for a chunk one has claimed. Per shape the
caller times shared and solo calls and keeps the faster (exploring the other now and then), so
on a busy machine, or where two threads share one core's FMA units, it runs alone. Inside a
recurrent loop split by batch rows (runtime/kernels/rows.py) the team is busy with the loop and
every product runs alone on its thread's rows.
"""
import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..cpu import GEMM_PATH
from ..jit import OPTIONS, jit
from . import rows, team
from .blas import gemm

PANEL = 16
SIMD = GEMM_PATH != "blas"
LANES = 16 if GEMM_PATH == "avx512" else 8     # floats per vector register
GROUP = 4 * LANES // PANEL                       # panels per tile: 4 vectors (zmm or ymm) per row
WIDE_GROUP = GROUP // 2                          # panels per 8-row tile (AVX-512 only)
MAX_ROWS = 8 if LANES == 16 else 4               # rows per tile: 8 x 2 zmm, or 4 x 4 vectors
CHUNK = 4                                        # panels per unit of work shared between threads
KC = 128                                         # reduction rows of a 4-panel block (M > 4 rows)
MIN_PARALLEL_FLOPS = 1 << 20                     # below ~4 us of work a second thread costs more


def packed_shape(n: int, r: int) -> tuple:
    """Shape of the packed copy of B [r, n] (the same on every path)."""
    return (-(-n // PANEL) * r, PANEL)


# ---------------------------------------------------------------- packing
@jit
def pack_wt(W, P):
    """P = W.T [K, N] packed, for Y = X @ W.T (W [N, K]; P of packed_shape(N, K)):
    P[q K + k, j] = W[16 q + j, k]. On the blas path P holds W.T row-major."""
    N, K = W.shape
    if not SIMD:
        B = P.reshape(P.size)[:K * N].reshape((K, N))
        for k in range(K):
            for n in range(N):
                B[k, n] = W[n, k]
        return
    for q in range((N + PANEL - 1) // PANEL):
        width = min(PANEL, N - q * PANEL)
        for k in range(K):                  # each panel row written whole, from `width` rows of W
            for j in range(width):
                P[q * K + k, j] = W[q * PANEL + j, k]
            for j in range(width, PANEL):
                P[q * K + k, j] = 0


@jit
def pack_w(W, P):
    """P = W [N, K] packed, for dX = dY @ W (P of packed_shape(K, N)):
    P[q N + n, j] = W[n, 16 q + j]. On the blas path P holds W row-major."""
    N, K = W.shape
    if not SIMD:
        P.reshape(P.size)[:N * K].reshape((N, K))[:, :] = W
        return
    for q in range((K + PANEL - 1) // PANEL):
        width = min(PANEL, K - q * PANEL)
        for n in range(N):
            for j in range(width):
                P[q * N + n, j] = W[n, q * PANEL + j]
            for j in range(width, PANEL):
                P[q * N + n, j] = 0


@jit
def pack_both(W, Pf, Pb):
    """pack_wt(W, Pf) and pack_w(W, Pb) in one pass over W, 16 rows at a time: the block is
    read from L1 for both layouts instead of W twice from memory (W [2048, 512]: 1050 -> 570 us
    a forward; [512, 128] 22 -> 23). The loops repeat pack_wt's and pack_w's: calling per-panel
    helpers shared with them measured 32-34 us against 23-24 at [512, 128]."""
    N, K = W.shape
    if not SIMD:
        pack_wt(W, Pf)
        pack_w(W, Pb)
        return
    for q in range((N + PANEL - 1) // PANEL):
        n0, width = q * PANEL, min(PANEL, N - q * PANEL)
        for k in range(K):
            for j in range(width):
                Pf[q * K + k, j] = W[n0 + j, k]
            for j in range(width, PANEL):
                Pf[q * K + k, j] = 0
        for c in range((K + PANEL - 1) // PANEL):
            cols = min(PANEL, K - c * PANEL)
            for n in range(n0, n0 + width):
                for j in range(cols):
                    Pb[c * N + n, j] = W[n, c * PANEL + j]
                for j in range(cols, PANEL):
                    Pb[c * N + n, j] = 0


# ---------------------------------------------------------------- the micro-kernel
def _emit_tile(builder, a, lda, p, ps, c, ldc, nlast, K, acc, MR, NP):
    """One float32 tile C[0:MR, 0:16 NP] (+)= A[0:MR, :] @ panels 0..NP-1 (pointers offset)."""
    i32, i64, ftype = ir.IntType(32), ir.IntType(64), ir.FloatType()
    vt = ir.VectorType(ftype, LANES)
    nv = PANEL // LANES
    # fmuladd: a fused multiply-add where the target has FMA (it has, on the SIMD paths)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fmuladd.v{LANES}f32")
    const = lambda v: ir.Constant(i64, v)  # noqa: E731
    rows = [builder.gep(a, [builder.mul(const(i), lda)]) for i in range(MR)]
    panels = [builder.gep(p, [builder.mul(const(q), ps)]) for q in range(NP)]
    accs = [[cgutils.alloca_once_value(builder, ir.Constant(vt, None)) for _ in range(NP * nv)] for _ in range(MR)]
    splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
    undef = ir.Constant(vt, ir.Undefined)
    with cgutils.for_range(builder, K) as loop:
        k = loop.index
        row = builder.mul(k, const(PANEL))
        b = [builder.load(builder.bitcast(builder.gep(panels[q], [builder.add(row, const(v * LANES))]),
                                          vt.as_pointer()), align=4)
             for q in range(NP) for v in range(nv)]
        for i in range(MR):
            x = builder.load(builder.gep(rows[i], [k]))
            xv = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)), undef, splat)
            for u in range(NP * nv):
                builder.store(builder.call(fma, [xv, b[u], builder.load(accs[i][u])]), accs[i][u])
    # the epilogue: whole vectors, then the columns of a partial last panel one by one
    spill = cgutils.alloca_once(builder, vt)
    for i in range(MR):
        crow = builder.gep(c, [builder.mul(const(i), ldc)])
        for u in range(NP * nv):
            q, v = divmod(u, nv)
            dst = builder.gep(crow, [const(u * LANES)])
            whole = cgutils.true_bit if q < NP - 1 else builder.icmp_signed(">=", nlast, const((v + 1) * LANES))
            with builder.if_else(whole) as (vector, partial):
                with vector:
                    vp = builder.bitcast(dst, vt.as_pointer())
                    val = builder.load(accs[i][u])
                    with builder.if_then(acc):
                        builder.store(builder.fadd(builder.load(vp, align=4), val), accs[i][u])
                    builder.store(builder.load(accs[i][u]), vp, align=4)
                with partial:
                    builder.store(builder.load(accs[i][u]), spill)
                    lanes = builder.sub(nlast, const(v * LANES))
                    src = builder.bitcast(spill, ftype.as_pointer())
                    with cgutils.for_range(builder, builder.select(builder.icmp_signed(">", lanes, const(0)),
                                                                   lanes, const(0))) as col:
                        x = builder.load(builder.gep(src, [col.index]))
                        sp = builder.gep(dst, [col.index])
                        builder.store(builder.select(acc, builder.fadd(builder.load(sp), x), x), sp)


@intrinsic
def _tile(typingctx, A, aoff, lda, mr, P, poff, ps, np_, C, coff, ldc, nlast, K, acc):
    """C[coff + i ldc + j] (+)= sum_k A[aoff + i lda + k] P[poff + q ps + 16 k + j'] for i < mr,
    j = 16 q + j' < 16 (np_ - 1) + nlast: one specialised loop per (mr in 1..4, np_ in
    GROUP, GROUP/2, .., 1) and (mr = MAX_ROWS if 8, np_ = WIDE_GROUP), chosen by a switch."""
    sig = types.void(A, aoff, lda, mr, P, poff, ps, np_, C, coff, ldc, nlast, K, acc)

    def codegen(context, builder, signature, args):
        a_, aoff_, lda_, mr_, p_, poff_, ps_, np__, c_, coff_, ldc_, nlast_, K_, acc_ = args
        s = signature.args
        i64 = ir.IntType(64)

        def data(arr, ty, off):
            return builder.gep(cgutils.create_struct_proxy(ty)(context, builder, value=arr).data, [off])

        a, p, c = data(a_, s[0], aoff_), data(p_, s[4], poff_), data(c_, s[8], coff_)
        key = builder.add(builder.mul(mr_, ir.Constant(i64, 64)), np__)
        done = builder.append_basic_block("tile.done")
        switch = builder.switch(key, done)
        for MR in (1, 2, 3, 4) + ((MAX_ROWS,) if MAX_ROWS > 4 else ()):
            NP = GROUP if MR <= 4 else WIDE_GROUP
            while NP >= 1:
                block = builder.append_basic_block(f"tile.{MR}x{NP}")
                switch.add_case(ir.Constant(i64, MR * 64 + NP), block)
                builder.position_at_end(block)
                _emit_tile(builder, a, lda_, p, ps_, c, ldc_, nlast_, K_, acc_, MR, NP)
                builder.branch(done)
                NP = NP // 2 if MR <= 4 else 0      # 8 rows: 2 panels only (each variant costs cold start)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return sig, codegen


def _simd_panels_c(a, p, c, M, r, n, accumulate, q0, q1):
    """C[:, 16 q0 : 16 q1] (+)= A @ B[:, 16 q0 : 16 q1] in float32, B packed in P: panel groups
    outside, then KC rows of the reduction, then 4-row blocks, so the block of a group every row
    block reads (KC x 64 floats, 32 KB) stays in L1 while A's rows stream past. Without the KC
    split a group (r x 64 floats: 128 KB at r = 512) came from L2 once per 4 rows: [16x512] x
    [512x2048] on one thread ran 95 GF/s, with it 111-123 (KC 64: 104-110, 256: 97-99); [64x512] x
    [512x2048] 110 -> 138. Training steps: LSTM B=16/H=512 51 -> 49 ms, B=64/H=512 168 -> 157.
    With 8 rows or more (AVX-512) the blocks are 2 panels by 2 KC rows (32 KB still) and the
    row blocks 8 rows: a block's first row block reads it from L3 (the weight at H = 512 is 4
    MB, a core's L2 2 MB) and its FMAs wait on those loads, so the fewer row blocks the L1 copy
    serves, the more of them overlap the stream. One thread: [8x512]x[512x2048] 204 -> 164 us,
    [8x2048]x[2048x512] 204 -> 151, [32x512]x[512x2048] 530 -> 475; LSTM B=16/H=512 (8 rows a
    thread) 44.9 -> 41.6 ms a step.
    A C function (arrays by address) registered with LLVM: its callers link to it by name instead
    of inlining and optimising its 13 unrolled loops again (seconds each, cold)."""
    A = numba.carray(team.as_pointer(a, np.float32), (M, r))
    P = numba.carray(team.as_pointer(p, np.float32), (((n + PANEL - 1) // PANEL) * r, PANEL))
    C = numba.carray(team.as_pointer(c, np.float32), (M, n))
    npan = (n + PANEL - 1) // PANEL
    nl = n - (npan - 1) * PANEL
    rb = MAX_ROWS if M >= MAX_ROWS else 4
    group = GROUP if rb == 4 else WIDE_GROUP
    kc = KC * GROUP // group                        # a block of KC x GROUP panel rows whatever the tile
    kc = kc if M > rb and r > kc else max(r, 1)     # one pass over K when a single row block reads it
    q = q0
    while q < q1:
        np_ = group
        while np_ > q1 - q:
            np_ //= 2
        nlast = nl if q + np_ == npan else PANEL
        rows = rb if np_ == group else 4            # an 8-row tile spans WIDE_GROUP panels
        for k0 in range(0, max(r, 1), kc):          # K = 0 still runs a pass: C = 0 unless accumulating
            kn = min(kc, r - k0)
            i = 0
            while i < M:
                mr = min(rows, M - i)
                mr = mr if mr == rows or mr <= 4 else 4     # 5-7 rows left: 4, then the rest
                _tile(A, i * r + k0, r, mr, P, (q * r + k0) * PANEL, r * PANEL, np_, C, i * n + q * PANEL,
                      n, nlast, kn, accumulate != 0 or k0 > 0)
                i += mr
        q += np_


def _no_simd_c(a, p, c, M, r, n, accumulate, q0, q1):
    """Stands in for the SIMD panels on the blas path, where nothing calls it."""


_C_SIG = types.void(*[types.int64] * 9)
_C_OPTIONS = dict(cache=True, error_model="numpy", fastmath=False)
_panels_cfunc = numba.cfunc(_C_SIG, **_C_OPTIONS)(_simd_panels_c if SIMD else _no_simd_c)
ll.add_symbol("graphspec_packed_panels_f32", _panels_cfunc.address)


@intrinsic
def _call_panels(typingctx, a, p, c, M, r, n, accumulate, q0, q1):
    sig = types.void(*[types.int64] * 9)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i64] * 9),
                                            "graphspec_packed_panels_f32")
        builder.call(fn, args)
        return context.get_dummy_value()
    return sig, codegen


@jit
def _simd_panels(A, P, C, accumulate, q0, q1):
    M, r = A.shape
    _call_panels(A.ctypes.data, P.ctypes.data, C.ctypes.data, M, r, C.shape[1], 1 if accumulate else 0, q0, q1)


@jit
def _plain_panels(A, P, C, accumulate, q0, q1):
    """The same product over the same layout in plain loops (float64: gradient checks)."""
    M, r = A.shape
    n = C.shape[1]
    acc = np.empty(PANEL, C.dtype)
    for i in range(M):
        for q in range(q0, q1):
            width = min(PANEL, n - q * PANEL)
            acc[:] = 0
            for k in range(r):
                x = A[i, k]
                for j in range(PANEL):
                    acc[j] += x * P[q * r + k, j]
            for j in range(width):
                C[i, q * PANEL + j] = C[i, q * PANEL + j] + acc[j] if accumulate else acc[j]


# ---------------------------------------------------------------- the product
@jit
def _chunks(A, P, C, accumulate, job, gen):
    """Claim chunks of CHUNK panels of job `gen` until none is left (the caller and the workers);
    returns how many this thread ran."""
    npan = (C.shape[1] + PANEL - 1) // PANEL
    ran = 0
    while True:
        c = team.claim(job, gen)
        if c < 0:
            return ran
        _simd_panels(A, P, C, accumulate, c * CHUNK, min(npan, (c + 1) * CHUNK))
        team.finish(job)
        ran += 1


@jit
def gemm_packed(A, P, C, accumulate):
    """C (+)= A @ B with B [r, n] packed in P by pack_wt or pack_w (A [M, r], C [M, n], all
    C-contiguous; P of packed_shape(n, r)). accumulate: C += (True) or C = (False)."""
    M, r = A.shape
    n = C.shape[1]
    if C.shape[0] != M or P.shape[0] * P.shape[1] < ((n + PANEL - 1) // PANEL) * r * PANEL:
        raise ValueError("gemm_packed: A, P and C do not match")
    if M > 0 and n > 0:
        _product(A, P, C, accumulate)


def gemm_packed_cols(A, P, C, accumulate, c0, c1):
    """gemm_packed for columns [c0, c1) of C only (c0 a multiple of PANEL; c1 too, or n), on this
    thread: one thread's share of a loop split by hidden units (Plan.unit_segments). Each column
    is computed as the whole product computes it, so the shares add up to it bit for bit."""


@overload(gemm_packed_cols, jit_options=OPTIONS)
def _cols_impl(A, P, C, accumulate, c0, c1):
    if not SIMD:
        def loops(A, P, C, accumulate, c0, c1):          # P holds B [r, n] itself (the blas path)
            r, n = A.shape[1], C.shape[1]
            B = P.reshape(P.size)[:r * n].reshape((r, n))
            for i in range(A.shape[0]):
                for j in range(c0, c1):
                    s = C[i, j] * 0
                    for k in range(r):
                        s += A[i, k] * B[k, j]
                    C[i, j] = C[i, j] + s if accumulate else s
        return loops
    panels = _simd_panels if C.dtype == types.float32 else _plain_panels

    def cols(A, P, C, accumulate, c0, c1):
        panels(A, P, C, accumulate, c0 // PANEL, (c1 + PANEL - 1) // PANEL)
    return cols


def _product(A, P, C, accumulate):
    """The product on this machine's path, chosen when numba types it (by path and dtype)."""


@overload(_product, jit_options=OPTIONS)
def _product_impl(A, P, C, accumulate):
    if not SIMD:
        def blas(A, P, C, accumulate):
            r, n = A.shape[1], C.shape[1]
            gemm(False, False, 1.0, A, P.reshape(P.size)[:r * n].reshape((r, n)), 1.0 if accumulate else 0.0, C)
        return blas
    if C.dtype != types.float32:
        def plain(A, P, C, accumulate):
            _plain_panels(A, P, C, accumulate, 0, (C.shape[1] + PANEL - 1) // PANEL)
        return plain

    def simd(A, P, C, accumulate):
        M, r = A.shape
        n = C.shape[1]
        npan = (n + PANEL - 1) // PANEL
        nchunks = (npan + CHUNK - 1) // CHUNK
        if nchunks > 1 and 2 * M * r * n >= MIN_PARALLEL_FLOPS:
            job = team.ctl()
            if team.workers(job) and not team.busy(job):
                start = team.cycles()
                slot, shared, timed = team.choose(job, M, r, n)
                gen = team.publish(job, A, P, C, accumulate, nchunks) if shared else -1
                if gen >= 0:
                    _chunks(A, P, C, accumulate, job, gen)
                    team.wait(job, nchunks)
                else:
                    _simd_panels(A, P, C, accumulate, 0, npan)
                team.learn(job, slot, gen >= 0, timed, team.cycles() - start)
                return
        _simd_panels(A, P, C, accumulate, 0, npan)
    return simd


# ---------------------------------------------------------------- threads
@jit
def _worker():
    """A team thread: run chunks of each job the callers publish until told to stop."""
    c = team.ctl()
    seen = -1                   # join a job published before this thread started, if any is left
    while True:
        gen = team.next_job(c, seen)
        if gen < 0:
            return
        seen = gen
        # the params may already be the next job's: harmless, `claim` refuses a stale generation
        if c[team.KIND] == team.ROWS_JOB:
            team.helped(c, rows.worker_job(c, gen))
            continue
        if c[team.KIND] == team.UNITS_JOB:
            team.helped(c, rows.worker_units(c, gen))
            continue
        M, r, n = c[team.M_], c[team.R_], c[team.N_]
        A = numba.carray(team.as_pointer(c[team.A_ADDR], np.float32), (M, r))
        P = numba.carray(team.as_pointer(c[team.P_ADDR], np.float32), (((n + PANEL - 1) // PANEL) * r, PANEL))
        C = numba.carray(team.as_pointer(c[team.C_ADDR], np.float32), (M, n))
        team.helped(c, _chunks(A, P, C, c[team.ACC] != 0, c, gen))


def set_threads(n: int) -> None:
    """Threads for gemm_packed: the caller plus n - 1 workers (n = 1: the caller alone). Call it
    from Python, outside any kernel call. Threads serve the SIMD paths only (on the blas path
    the product's threads are BLAS's: OPENBLAS_NUM_THREADS)."""
    if n < 1:
        raise ValueError(f"set_threads: need at least 1 thread, got {n}")
    if SIMD and n - 1 != team.size():
        team.start(n - 1, _worker)
