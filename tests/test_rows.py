"""Recurrent loops split by batch rows over threads (Plan.row_segments, runtime/kernels/rows.py):
which equations may be split, how their views narrow, and that a split run computes exactly
what one thread does: the same loss, values and gradients, bit for bit, for every spec (a
param every row reads, like a peephole weight, within rounding: its per-range sums add up in
another order)."""
import glob
import os

import numpy as np
import pytest

import graphspec
from graphspec.compile import compile_graph
from runtime.gradcheck import random_batch, random_tables, tiny_bind
from runtime.kernels import packed, team
from runtime.model import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
needs_team = pytest.mark.skipif(not packed.SIMD, reason="no SIMD GEMM path: the loops run on BLAS, unsplit")

LSTM = """
name: rows
dims: {V: 11, H: 6}
inputs:
  x: {tokens: V, axis: t}
  y: {tokens: V, axis: t, target: true}
params:
  E: {shape: [V, H], init: normal(0.1)}
nodes:
  h: lstm(E[x], H)
  o: softmax_out(h, V)
loss: cross_entropy(o, y)
"""


@pytest.fixture
def two_threads():
    before = team.size() + 1
    packed.set_threads(2)
    yield
    packed.set_threads(before)


def plan_of(text, batch, T=5):
    return compile_graph(graphspec.load("rows.yaml", text), {"t": T}, batch)


def test_the_lstm_loop_is_one_segment_of_every_step():
    plan = plan_of(LSTM, 4)
    (i0, i1), = plan.row_segments()
    ops = [e.op for e in plan.eqns[i0:i1]]
    assert ops == ["affine_packed", "fused"] * 5
    # what comes before and after reads or writes all steps' rows at once
    assert plan.eqns[i0 - 1].out.rows == 5 * 4 and plan.eqns[i1].ins[1].rows == 5 * 4


def test_one_row_is_not_split():
    assert plan_of(LSTM, 1).row_segments() == []


def test_a_learned_operand_shared_by_all_rows_gets_a_copy_per_row_range():
    """A per-unit weight inside the cell (a peephole): every row's step adds to its gradient, so
    each row range but the first reads and sums into a copy of its own (shared_grads)."""
    scaled = LSTM.replace("h: lstm(E[x], H)", "h: tanh(E[x] + W @ h[t-1]) * p").replace(
        "E: {shape: [V, H], init: normal(0.1)}",
        "E: {shape: [V, H], init: normal(0.1)}\n  W: {shape: [H, H], init: orthogonal}\n  p: {shape: [H], init: ones}")
    plan = plan_of(scaled, 4)
    segs = plan.row_segments()
    p = plan.buffers["p"]
    assert [e.op for i0, i1 in segs for e in plan.eqns[i0:i1]] == ["affine_packed", "fused"] * 5
    assert plan.shared_grads(segs) == [(p.offset, 1, 6)]
    full, offsets, _ = plan.encode()
    part = plan.encode_rows(2, 4, segs, {(p.offset, 1, 6): plan.fsize})
    first = plan.encode_rows(0, 2, segs)
    fused = next(i for i in range(*segs[0]) if plan.eqns[i].op == "fused")
    j = [v.buf for v in plan.eqns[fused].ins].index("p")
    at = offsets[fused] + 5 + 3 * (len(plan.eqns[fused].outs) + j)
    assert tuple(part[at:at + 3]) == (plan.fsize, 1, 6) and tuple(first[at:at + 3]) == (p.offset, 1, 6)


def test_encode_rows_narrows_per_row_views_and_keeps_shared_ones():
    plan = plan_of(LSTM, 4)
    segs = plan.row_segments()
    full, offsets, _ = plan.encode()
    part = plan.encode_rows(1, 3, segs)
    i0, i1 = segs[0]
    assert np.array_equal(full[:offsets[i0]], part[:offsets[i0]])           # outside: unchanged
    e = plan.eqns[i0]                                                         # affine_packed W, P, h, a
    at = offsets[i0] + 5
    views = list(e.outs) + list(e.ins)
    for j, v in enumerate(views):
        got = tuple(part[at + 3 * j:at + 3 * j + 3])
        shared = j in (1, 2)                                                  # W and its packed copy
        assert got == ((v.offset, v.rows, v.cols) if shared else (v.offset + v.cols, 2, v.cols)), (j, v)


def _model(spec, dtype):
    bind = tiny_bind(graphspec.load(spec))
    rng = np.random.default_rng(3)
    tables = random_tables(graphspec.load(spec, bind=bind), rng)
    model = Model(spec, bind=bind, dtype=dtype, seed=1, tables=tables)
    model.params[:] += rng.normal(0, 0.3, model.params.shape).astype(model.params.dtype)
    lengths = {a: 6 + i for i, a in enumerate(model.graph.axes)}
    return model, random_batch(model, lengths, 5, rng)


def _run(model, batch, split):
    ex = model.current
    saved = ex.segs
    ex.segs = saved if split else saved[:0]         # no runs: every equation on this thread
    try:
        loss = model.forward(batch, seed=7)
        model.backward()
        return loss, {k: v.copy() for k, v in model.grads().items()}, ex.F.copy()
    finally:
        ex.segs = saved


@needs_team
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS, ids=[os.path.basename(s) for s in SPECS])
def test_split_rows_compute_what_one_thread_computes(spec, dtype, two_threads):
    model, batch = _model(spec, dtype)
    model.forward(batch, seed=7)                 # builds the executor (with the team's 2 threads)
    if not model.current.segments:
        pytest.skip("no recurrent loop with per-row equations only")
    one = _run(model, batch, split=False)
    two = _run(model, batch, split=True)
    assert two[0] == one[0]
    np.testing.assert_array_equal(two[2], one[2])
    # a shared view's gradient (and what flows from it) is summed per row range, then added:
    # another order of the same sum
    shared = model.current.plan.shared_grads(model.current.segments)
    for k in one[1]:
        if shared:
            np.testing.assert_allclose(two[1][k], one[1][k], rtol=1e-12 if dtype == np.float64 else 1e-5,
                                       atol=1e-12 if dtype == np.float64 else 1e-6, err_msg=f"d{k}")
        else:
            np.testing.assert_array_equal(two[1][k], one[1][k], err_msg=f"d{k}")


@needs_team
def test_the_specs_with_recurrent_loops_do_split(two_threads):
    """Guards the test above against skipping everything: the LSTM, the Elman RNN, the
    encoder-decoder and the leaky units (a learned rate every row reads) run their loops split
    at 5 rows (5 = 2 + 3 over two threads)."""
    split = set()
    for spec in SPECS:
        model, batch = _model(spec, np.float32)
        model.forward(batch, seed=7)
        if model.current.segments:
            assert model.current.parts.shape[0] == 2
            split.add(os.path.basename(spec))
    assert {"lstm.yaml", "elman.yaml", "seq2seq.yaml", "leaky_units.yaml"} <= split, split


FORK_AFTER_START = r"""
import os, sys
sys.path.insert(0, {root!r})
from runtime.kernels import packed
packed.set_threads(2)                   # a cold cache: the workers' loop compiles now
pid = os.fork()                         # as codegen.warm's pool does, for a new plan's kernels
if pid == 0:
    import numba
    numba.njit(lambda x: x + 1)(1)      # needs numba's compiler lock
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""


@needs_team
def test_a_process_forked_after_the_threads_start_can_compile(tmp_path):
    """The team's threads must not hold numba's compiler lock once started (they did while
    compiling their loop on a cold cache: a child forked then waited for it forever)."""
    import subprocess
    import sys
    code = FORK_AFTER_START.format(root=ROOT)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cold"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[-2:] == ["child", "0"], out.stderr[-2000:]


def test_a_bias_added_every_step_gets_its_gradient_after_the_loop():
    """The GRU with reset='after' adds b_R inside the reset gate's product every step: its gradient is one
    sum over all steps' rows after the loop's backward (like dW), so the steps only read it and
    the loop splits. (The values are checked against NumPy in tests/reference.)"""
    gru = LSTM.replace("lstm(E[x], H)", "gru(E[x], H, reset='after')")
    plan = plan_of(gru, 4)
    steps = [e for e in plan.eqns if e.op == "affine_packed"]
    assert len(steps) == 5 and all(e.ins[3].buf == "h.b_R" and not e.need[3] for e in steps)
    deferred = [e for e in plan.eqns if e.nofwd and e.op == "add"]
    assert len(deferred) == 1 and deferred[0].ins[1].buf == "h.b_R" and deferred[0].need == (False, True)
    assert deferred[0].out.rows == 5 * 4
    (i0, i1), = plan.row_segments()
    assert plan.eqns.index(deferred[0]) < i0 and [e.op for e in plan.eqns[i0:i1]] == ["affine_packed", "fused"] * 5


@needs_team
@pytest.mark.parametrize("cell, B, H, split", [("lstm", 4, 128, "rows"), ("lstm", 4, 512, "units"),
                                              ("lstm", 16, 512, "units"), ("lstm", 16, 256, "rows"),
                                              ("lstm", 64, 512, "rows"), ("rnn", 4, 512, "columns"),
                                              ("rnn", 16, 512, "rows")])
def test_few_rows_a_thread_and_a_big_weight_split_by_units_or_columns_instead(cell, B, H, split, two_threads):
    """B=4 over 2 threads is 2 rows each: with H=512 every thread would stream the 4 MB packed
    weight each step, so the loop is split by units, each thread reading half (or, where the
    loop cannot be, the Elman RNN's lone tanh, each product by columns); from 8 rows a thread
    the RNN's loop splits by rows, the LSTM's up to 16."""
    model = Model(os.path.join(ROOT, "bench", "specs", f"{cell}.yaml"), bind={"H": H})
    x = np.zeros((3, B), np.int64)
    model.forward({"x": x, "y": x, "x_mask": np.ones((3, B))})
    ex = model.current
    assert ("rows" if ex.segments else "units" if ex.unit_segments else "columns") == split


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_flat_arrays_start_on_a_cache_line(dtype, two_threads):
    """Buffers sit at multiples of 16 floats: on a line only if F and G start on one (numpy gives
    16 bytes; a packed panel's row then spans two lines). Also once F grows for the row ranges'
    copies of a shared gradient (leaky units)."""
    for spec in ("lstm.yaml", "leaky_units.yaml"):
        model, batch = _model(os.path.join(ROOT, "specs", spec), dtype)
        model.forward(batch, seed=7)
        ex = model.current
        assert ex.F.ctypes.data % 64 == 0 and ex.G.ctypes.data % 64 == 0, spec
        assert ex.F.size == ex.G.size >= ex.plan.fsize
    assert ex.shadows.size, "leaky_units: the row ranges' copies of the learned rate extend F"


def test_small_plans_run_their_blas_gemms_on_one_thread():
    """OpenBLAS splits any GEMM of 2^18 multiply-adds or more over its threads; up to 2^22 that
    costs more than it saves (runtime/executor.py blas_threads)."""
    from runtime.executor import _BLAS_THREADS, SMALL_GEMM, blas_threads
    small, big = plan_of(LSTM, 1), plan_of(LSTM.replace("H: 6", "H: 256"), 32, T=64)
    assert blas_threads(small) == 1
    macs = max(e.out.rows * e.out.cols * e.ins[0].cols for e in big.eqns if e.op in ("affine", "matmul"))
    assert macs > SMALL_GEMM and blas_threads(big) == _BLAS_THREADS    # what OpenBLAS started with


def test_a_busy_process_beside_is_seen_and_takes_a_blas_thread(monkeypatch):
    """A process spinning beside is counted among the runnable threads of other processes (it
    never sleeps), and the plan's BLAS GEMMs then run on the cores it leaves."""
    import subprocess
    import sys
    import time
    from runtime import executor
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert min(executor.busy_elsewhere(max_age=0) for _ in range(5)) >= 1
    finally:
        spinner.kill()
        spinner.wait()
    reads = []
    monkeypatch.setattr(executor, "_runnable_elsewhere", lambda: reads.append(1) or 7)
    assert [executor.busy_elsewhere(max_age=0), executor.busy_elsewhere(max_age=60)] == [7, 7]
    assert len(reads) == 1          # the second within max_age of the first: not read again
    calls = []
    monkeypatch.setattr(executor, "_set_blas_threads", calls.append)
    ex = executor.Executor.__new__(executor.Executor)
    ex.blas_threads = 2
    for busy, threads in ((0, 2), (os.cpu_count() - 1, 1), (os.cpu_count() + 3, 1)):
        monkeypatch.setattr(executor, "busy_elsewhere", lambda: busy)
        ex._blas()
        assert calls.pop() == min(threads, os.cpu_count())
    ex.blas_threads = 1
    monkeypatch.setattr(executor, "busy_elsewhere", lambda: 1 / 0)      # not even asked
    ex._blas()
    assert calls.pop() == 1


def test_backward_leaves_unzeroed_only_the_gradient_no_equation_touches():
    """The packed weight's G is the one range backward skips (W's gradient comes from the
    deferred GEMM): NaN put there survives a second backward (it is not zeroed) and reaches
    no gradient (nothing reads it), which equal the first backward's."""
    from runtime.executor import _no_gradient
    plan = plan_of(LSTM, 4)
    assert _no_gradient(plan) == [(b.offset, b.offset + b.size) for b in plan.buffers.values()
                                  if any(e.op == "pack" and e.out.buf == b.name for e in plan.eqns)]
    model, batch = _model(os.path.join(ROOT, "specs", "lstm.yaml"), np.float64)
    model.forward(batch)
    first = _run(model, batch, split=False)
    ex = model.current
    skipped = np.concatenate([np.arange(a, z) for a, z in _no_gradient(ex.plan)])
    assert not np.any(ex.G[skipped])
    ex.G[skipped] = np.nan
    second = _run(model, batch, split=False)
    assert np.all(np.isnan(ex.G[skipped]))
    ex.G[skipped] = 0
    assert first[0] == second[0]
    for name, g in first[1].items():
        assert np.array_equal(g, second[1][name]), name


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.basename(s) for s in SPECS])
def test_stored_gradients_need_no_zeroing_and_equal_added_ones(spec, monkeypatch):
    """Gradients the plan stores (Eqn.assign) overwrite whatever G held there: NaN put in those
    ranges before backward reaches nothing, and every gradient equals the plan's without the
    assign pass (each write added onto zeroed G), bit for bit."""
    from graphspec import passes
    from runtime.executor import _assigned
    model, batch = _model(spec, np.float64)
    model.forward(batch)
    stored = _assigned(model.current.plan)
    model.current.G[np.concatenate([np.arange(a, z) for a, z in stored] + [np.zeros(0, int)])] = np.nan
    loss, grads, _ = _run(model, batch, split=False)
    monkeypatch.setattr(passes, "PIPELINE", [(n, f) for n, f in passes.PIPELINE if n != "assign"])
    ref, ref_batch = _model(spec, np.float64)
    ref.forward(ref_batch)
    assert not any(e.assign for e in ref.current.plan.eqns)
    ref_loss, ref_grads, _ = _run(ref, ref_batch, split=False)
    assert loss == ref_loss
    for name, g in ref_grads.items():
        assert np.array_equal(grads[name], g), name
    if "lstm" in os.path.basename(spec):
        assert stored             # the gates and dW at least


WARM_UP = """
import os, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests.test_rows import _model
from runtime import interp
dtype = np.dtype({dtype!r})
interp.prepare(dtype)
loops = (interp.forward_rows, interp.backward_rows, interp.touched)
before = [set(f.signatures) for f in loops]
assert all(before), before
for spec in ("w2v_skipgram_ns.yaml", "lstm.yaml"):         # a sparse param (touched runs), a loop
    model, batch = _model(os.path.join({root!r}, "specs", spec), dtype)
    model.forward(batch)
    model.backward()
added = [set(f.signatures) - b for f, b in zip(loops, before)]
print(added)
assert not any(added), added
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_interpreter_warm_up_compiles_what_the_executor_calls(dtype):
    """interp.prepare (run in codegen.warm's pool on a cold start) compiles the loops for the
    executor's argument types: forward and backward of a model add no specialisation (in a
    process of its own, where nothing else has compiled them)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", WARM_UP.format(root=ROOT, dtype=dtype)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]


# ---------------------------------------------------------------- split by hidden units
BENCH = os.path.join(ROOT, "bench", "specs")
UNIT_SPECS = [os.path.join(BENCH, f) for f in ("lstm.yaml", "gru.yaml", "rnn.yaml")] + \
    [f for f in sorted(glob.glob(os.path.join(BENCH, "custom", "*.yaml"))) if "\nblock:" not in open(f).read()]


def test_the_lstm_loop_splits_by_units_with_a_barrier_before_each_product():
    plan = plan_of(LSTM.replace("H: 6", "H: 32"), 1)
    (i0, i1, W), = plan.unit_segments()
    assert W == 32 and [e.op for e in plan.eqns[i0:i1]] == ["affine_packed", "fused"] * 5
    assert plan.unit_cuts(32, 2) == [0, 16, 32] and plan.unit_cuts(96, 2) == [0, 48, 96]
    # forward: before every step's product but the first (h(-1) is written before the run);
    # backward, last equation first: before every product (its dz comes from both parts' cells)
    assert list(np.flatnonzero(plan.unit_barriers([(i0, i1, W)], 1))) == list(range(i0 + 2, i1, 2))
    assert list(np.flatnonzero(plan.unit_barriers([(i0, i1, W)], -1))) == list(range(i0, i1, 2))
    attrs = plan.unit_attrs([(i0, i1, W)], 1, 2)
    from graphspec.plan import UNITS
    assert (attrs[i0:i1, UNITS:UNITS + 2] == [16, 32]).all() and not attrs[:i0, UNITS:].any()


@pytest.mark.parametrize("H", [6, 16, 40])
def test_units_split_in_multiples_of_16_two_parts_at_least(H):
    """A thread's units are whole 16-column panels of the packed weights, and each part gets one."""
    assert plan_of(LSTM.replace("H: 6", f"H: {H}"), 1).unit_segments() == []


def _units_run(model, batch, mode):
    model.current.split_units = mode
    loss = model.forward(batch, seed=7)
    model.backward()
    return loss, model.current.F.copy(), model.current.G.copy()


@needs_team
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", UNIT_SPECS, ids=[os.path.relpath(s, BENCH) for s in UNIT_SPECS])
def test_split_units_compute_what_one_thread_computes(spec, dtype, B, two_threads):
    """Each column is computed as one thread computes it: loss, values and every gradient bit for
    bit (the peephole LSTM's per-unit weights too: each part writes its units' gradient)."""
    model = Model(spec, bind={"H": 32}, dtype=dtype, seed=1)
    model.params[:] += np.random.default_rng(2).normal(0, 0.3, model.params.shape).astype(dtype)
    rng = np.random.default_rng(4)
    x = rng.integers(0, 64, (6, B))
    batch = {"x": x, "y": rng.integers(0, 64, (6, B)), "x_mask": np.ones((6, B))}
    model.forward(batch, seed=7)
    if not model.current.unit_segments:
        pytest.skip("no loop of products and fused cells only")
    one = _units_run(model, batch, "never")
    helped = team.stats()["helped"]
    two = _units_run(model, batch, "always")
    assert team.stats()["helped"] == helped + 2          # the worker ran a part, forward and backward
    assert two[0] == one[0]
    np.testing.assert_array_equal(two[1], one[1])
    np.testing.assert_array_equal(two[2], one[2])


@needs_team
def test_the_gated_cells_split_by_units(two_threads):
    """Guards the test above against skipping everything."""
    split = set()
    for spec in UNIT_SPECS:
        model = Model(spec, bind={"H": 32})
        x = np.zeros((3, 1), np.int64)
        model.forward({"x": x, "y": x, "x_mask": np.ones((3, 1))})
        if model.current.unit_segments:
            split.add(os.path.relpath(spec, BENCH))
    assert {"lstm.yaml", "gru.yaml", "custom/peephole_lstm.yaml", "custom/lstm_inline.yaml"} <= split, split


@needs_team
@pytest.mark.parametrize("H, free, wait", [(256, 2, True), (256, 1, False), (128, 2, False)])
def test_units_split_a_big_weight_when_no_core_is_busy(H, free, wait, monkeypatch, two_threads):
    """'auto': a packed weight of 1 MB or more (the LSTM from H=256), and both cores free."""
    from runtime import executor
    model = Model(os.path.join(BENCH, "lstm.yaml"), bind={"H": H})
    x = np.zeros((3, 1), np.int64)
    model.forward({"x": x, "y": x, "x_mask": np.ones((3, 1))})
    monkeypatch.setattr(executor, "_CPUS", 2)
    monkeypatch.setattr(executor, "busy_elsewhere", lambda: 2 - free)
    assert model.current._by_units() == (executor.CLAIM_WAIT if wait else 0)
    model.current.split_units = "never"
    assert model.current._by_units() == 0
