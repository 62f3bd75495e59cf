"""The packed recurrent GEMM (runtime/kernels/packed.py) against NumPy's float64 product written
from the equations, and against BLAS: odd sizes (K and N not multiples of the 16-wide panels,
M = 1..33, H = 1), both layouts, accumulate and overwrite, float32 and float64, threads, and every
path this CPU can run (the others in a subprocess with GRAPHSPEC_GEMM set)."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from graphspec.errors import UserError
from runtime import cpu, jit
from runtime.kernels import packed, team
from runtime.kernels.blas import gemm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(1, 4), (4, 1), (1, 1), (3, 17), (17, 3), (16, 64), (33, 65), (5, 130), (64, 257), (300, 40)]   # (K, N)
# 1-4 rows: one tile; 5-33: 8-row tiles (AVX-512) and every remainder, 1 (33), 4 (20), 5 (13), 7 (15)
ROWS = [1, 2, 3, 4, 5, 8, 13, 15, 20, 33]


def _bound(A, B, C0, dtype):
    """Rounding bound of C0 + A @ B summed in `dtype`: (K + 2) eps (|A| @ |B| + |C0|)."""
    eps = np.finfo(dtype).eps
    return (A.shape[1] + 2) * eps * (np.abs(A) @ np.abs(B) + np.abs(C0))


def _case(rng, M, K, N, dtype, accumulate, forward):
    """One product through pack + gemm_packed; returns (result, exact, bound, BLAS's result)."""
    W = rng.standard_normal((N, K)).astype(dtype)
    if forward:         # Y[M, N] (+)= X[M, K] @ W.T
        A, B = rng.standard_normal((M, K)).astype(dtype), W.T
        P = np.full(packed.packed_shape(N, K), np.nan, dtype)
        packed.pack_wt(W, P)
    else:               # dX[M, K] (+)= dY[M, N] @ W
        A, B = rng.standard_normal((M, N)).astype(dtype), W
        P = np.full(packed.packed_shape(K, N), np.nan, dtype)
        packed.pack_w(W, P)
    C0 = rng.standard_normal((M, B.shape[1])).astype(dtype) if accumulate else np.full((M, B.shape[1]), np.nan, dtype)
    C = C0.copy()
    packed.gemm_packed(A, P, C, accumulate)
    start = C0.astype(np.float64) if accumulate else 0.0
    exact = start + A.astype(np.float64) @ B.astype(np.float64)
    blas = C0.copy()
    gemm(False, forward, 1.0, A, W, 1.0 if accumulate else 0.0, blas)
    return C, exact, _bound(A.astype(np.float64), B.astype(np.float64), start, dtype), blas


def check_products():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        for M in ROWS:
            for K, N in SIZES:
                for accumulate in (True, False):
                    for forward in (True, False):
                        C, exact, bound, blas = _case(rng, M, K, N, dtype, accumulate, forward)
                        where = f"M={M} K={K} N={N} {np.dtype(dtype).name} accumulate={accumulate} forward={forward}"
                        assert np.all(np.abs(C - exact) <= bound), where
                        assert np.all(np.abs(C - blas) <= 2 * bound), where


def check_layout():
    """The packed buffers hold what the module docstring says (a wrong layout that the kernel
    happened to read consistently would pass the products but break the lead's plan ops)."""
    K, N = 5, 20
    W = np.arange(N * K, dtype=np.float32).reshape(N, K) + 1
    Pf = np.full(packed.packed_shape(N, K), np.nan, np.float32)
    Pb = np.full(packed.packed_shape(K, N), np.nan, np.float32)
    assert Pf.shape == (2 * K, 16) and Pb.shape == (1 * N, 16)
    packed.pack_wt(W, Pf)
    packed.pack_w(W, Pb)
    if packed.SIMD:
        for q in range(2):
            for k in range(K):
                for j in range(16):
                    assert Pf[q * K + k, j] == (W[16 * q + j, k] if 16 * q + j < N else 0)
        for n in range(N):
            assert np.array_equal(Pb[n], np.concatenate([W[n], np.zeros(11, np.float32)]))
    else:
        assert np.array_equal(Pf.ravel()[:K * N], W.T.ravel())
        assert np.array_equal(Pb.ravel()[:N * K], W.ravel())
    rng = np.random.default_rng(3)
    for N, K in [(1, 1), (20, 5), (17, 33), (64, 16), (40, 300)]:      # both packs in one pass
        W = rng.standard_normal((N, K)).astype(np.float32)
        Pf, Pb = (np.full(packed.packed_shape(n, r), np.nan, np.float32) for n, r in ((N, K), (K, N)))
        Qf, Qb = (np.full(packed.packed_shape(n, r), np.nan, np.float32) for n, r in ((N, K), (K, N)))
        packed.pack_wt(W, Pf)
        packed.pack_w(W, Pb)
        packed.pack_both(W, Qf, Qb)
        assert np.array_equal(Pf, Qf, equal_nan=True) and np.array_equal(Pb, Qb, equal_nan=True), (N, K)


def check_threads():
    """Two threads give the same bits as one: every chunk computed once, by the same kernel."""
    rng = np.random.default_rng(2)
    for M, K, N in [(32, 128, 512), (5, 300, 1000), (64, 33, 700)]:
        A = rng.standard_normal((M, K)).astype(np.float32)
        W = rng.standard_normal((N, K)).astype(np.float32)
        P = np.empty(packed.packed_shape(N, K), np.float32)
        packed.pack_wt(W, P)
        C0 = rng.standard_normal((M, N)).astype(np.float32)
        results = []
        for threads in (1, 2):
            packed.set_threads(threads)
            for accumulate in (True, False):
                C = C0.copy()
                for _ in range(20):
                    packed.gemm_packed(A, P, C, accumulate)
                results.append(C)
        packed.set_threads(1)
        assert np.array_equal(results[0], results[2]) and np.array_equal(results[1], results[3]), (M, K, N)


def check_all():
    check_products()
    check_layout()
    check_threads()


# ---------------------------------------------------------------- this process's path
def test_products_equal_numpy_and_blas():
    check_products()


def test_packed_layout():
    check_layout()


@pytest.mark.skipif(not packed.SIMD, reason="threads serve the SIMD paths only")
def test_two_threads_give_the_same_bits():
    check_threads()


@pytest.mark.skipif(not packed.SIMD, reason="threads serve the SIMD paths only")
def test_a_worker_alone_computes_a_whole_product():
    """The caller publishes a job and claims nothing: the worker thread must run every chunk."""
    rng = np.random.default_rng(3)
    M, K, N = 7, 40, 300
    A, W = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32)
    P = np.empty(packed.packed_shape(N, K), np.float32)
    packed.pack_wt(W, P)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    C = C0.copy()
    c = team.ctl()
    packed.set_threads(2)
    try:
        nchunks = -(-N // (16 * packed.CHUNK))
        gen = team.publish(c, A, P, C, True, nchunks)
        assert gen > 0
        deadline = time.time() + 30
        while c[team.DONE] < nchunks and time.time() < deadline:
            time.sleep(0.001)
        assert c[team.DONE] == nchunks, "the worker did not run the job"
        team.wait(c, nchunks)
    finally:
        packed.set_threads(1)
    exact = C0 + A.astype(np.float64) @ W.T.astype(np.float64)
    assert np.all(np.abs(C - exact) <= _bound(A, W.T, C0, np.float32))


def test_job_protocol():
    """Chunks are handed out once each, only to claims of the current job; a second caller
    finds the team busy and runs alone; a finished job frees the team."""
    c = team.ctl()
    A, P, C = np.zeros((1, 1), np.float32), np.zeros((1, 16), np.float32), np.zeros((1, 1), np.float32)
    assert team.publish(c, A, P, C, True, 3) == -1              # no workers: run alone
    c[team.WORKERS] = 1                                         # pretend (no thread runs)
    try:
        gen = team.publish(c, A, P, C, True, 3)
        assert gen > 0
        assert team.publish(c, A, P, C, True, 3) == -1          # busy
        assert [team.claim(c, gen) for _ in range(4)] == [0, 1, 2, -1]
        assert team.claim(c, gen - 1) == -1
        for _ in range(3):
            team.finish(c)
        team.wait(c, 3)
        gen2 = team.publish(c, A, P, C, False, 2)
        assert gen2 == gen + 1
        assert team.claim(c, gen) == -1                         # a stale worker gets nothing
        assert team.claim(c, gen2) == 0
        team.finish(c)
        assert team.claim(c, gen2) == 1
        team.finish(c)
        team.wait(c, 2)
    finally:
        c[team.WORKERS] = 0


def test_the_products_of_one_loop_keep_their_own_timings():
    """team.choose learns team-or-solo per shape on a line of its own: an RNN's forward product
    ([M, H] x [H, gH]) and backward one ([M, gH] x [gH, H]) run a pass each, alternately, and
    sharing a line would restart both estimates at every pass."""
    for M in (1, 2, 4, 8, 16, 32, 64):
        for H in (32, 64, 128, 256, 512, 1024):
            for gates in (2, 3, 4):         # (1: one shape both ways, one line)
                fwd = team.shape_slot((M << 42) ^ (H << 21) ^ (gates * H))
                bwd = team.shape_slot((M << 42) ^ ((gates * H) << 21) ^ H)
                assert fwd != bwd, (M, H, gates)
                assert 0 <= fwd < team.NSHAPES and 0 <= bwd < team.NSHAPES
    # and the loops of a model at one H but other batch sizes (an eval plan beside training)
    assert len({team.shape_slot((M << 42) ^ (512 << 21) ^ 2048) for M in (1, 4, 16, 64)}) == 4


def test_mismatched_operands_are_refused():
    A, C = np.zeros((2, 8), np.float32), np.zeros((2, 20), np.float32)
    with pytest.raises(ValueError, match="gemm_packed: A, P and C do not match"):
        packed.gemm_packed(A, np.zeros(packed.packed_shape(16, 8), np.float32), C, True)
    with pytest.raises(ValueError, match="gemm_packed: A, P and C do not match"):
        packed.gemm_packed(A, np.zeros(packed.packed_shape(20, 8), np.float32), np.zeros((3, 20), np.float32), True)


def test_set_threads_refuses_zero():
    with pytest.raises(ValueError, match="set_threads: need at least 1 thread, got 0"):
        packed.set_threads(0)


# ---------------------------------------------------------------- path choice and cache key
def test_gemm_path_override(monkeypatch):
    supported = cpu._supported()
    monkeypatch.setenv("GRAPHSPEC_GEMM", "blas")
    assert cpu.gemm_path() == "blas"
    monkeypatch.setenv("GRAPHSPEC_GEMM", "auto")
    assert cpu.gemm_path() == supported[0]
    monkeypatch.setenv("GRAPHSPEC_GEMM", "avx3")
    with pytest.raises(UserError, match=r"^GRAPHSPEC_GEMM='avx3': expected one of auto, avx512, avx2, blas$"):
        cpu.gemm_path()
    for path in cpu.PATHS:
        if path not in supported:
            monkeypatch.setenv("GRAPHSPEC_GEMM", path)
            with pytest.raises(UserError, match=f"^GRAPHSPEC_GEMM={path}: this CPU supports only "):
                cpu.gemm_path()


def test_the_path_is_part_of_the_cache_key(monkeypatch):
    stamps = set()
    for path in cpu.PATHS:
        monkeypatch.setattr(jit, "GEMM_PATH", path)
        stamps.add(jit._sources_stamp())
    assert len(stamps) == len(cpu.PATHS)


def test_an_override_gets_its_own_cache_without_numba_cache_dir():
    """Without NUMBA_CACHE_DIR the cache is ~/.cache/graphspec, still under a stamp that holds the
    GEMM path: a cached SIMD pack beside a freshly compiled blas product would be wrong."""
    code = "import numba, runtime.jit; print(numba.config.CACHE_DIR)"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "GRAPHSPEC_GEMM")}
    auto = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    forced = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=dict(env, GRAPHSPEC_GEMM="blas"))
    assert auto.returncode == 0 and forced.returncode == 0, auto.stderr + forced.stderr
    assert os.path.basename(auto.stdout.strip()).startswith("kernels-")
    assert os.path.basename(forced.stdout.strip()).startswith("kernels-")
    assert forced.stdout.strip() != auto.stdout.strip() or cpu.GEMM_PATH == "blas"


@pytest.mark.parametrize("path", [p for p in cpu.PATHS if p != cpu.GEMM_PATH])
def test_other_paths(path):
    """The same checks on each other path this CPU runs (the blas fallback always)."""
    if path not in cpu._supported():
        pytest.skip(f"this CPU cannot run {path}")
    code = ("import runpy, sys; from runtime.kernels import packed; "
            f"assert packed.GEMM_PATH == {path!r}, packed.GEMM_PATH; "
            f"runpy.run_path({os.path.abspath(__file__)!r})['check_all']()")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, GRAPHSPEC_GEMM=path))
    assert r.returncode == 0, r.stderr[-3000:]
