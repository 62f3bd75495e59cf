"""Runs of plan equations split by batch rows, or by hidden units, over the team's threads
(issues #12 and #17).

A recurrent loop is T steps of a per-step GEMM and a fused cell, each reading and writing its
batch rows independently (graphspec/plan.py: Plan.row_segments). Splitting every step's product
over threads costs a hand-off per step and moves each step's rows between the cores' caches;
splitting the batch instead gives each thread rows [r0, r1) of the whole run, forward or
backward, with one hand-off for the run: the threads share only the read-only weights, and a range's
partial gradient of a param every row reads (a peephole weight) goes to its own copy, added
in when the run ends.

A job's description `desc` (int64, DESC_LEN) is written by the caller before it publishes the
job (team.publish_rows) and read by the workers; `parts` [nparts, len(records)] holds each row
range's records (Plan.encode_rows). The caller and the workers claim parts one at a time, like
a GEMM's chunks. A kernel called inside a part finds the team busy and runs alone. Results are
the same as one thread's, bit for bit, except for those shared gradients: summed per range,
then added, in another order.

A loop with one row (B=1) cannot be split by rows, and one with few rows over a big weight
should not be (each thread would stream all of it every step): `by_units` splits it by hidden
units instead (Plan.unit_segments), each thread computing its units' columns of every product
and cell, the threads meeting at a barrier before each product (a step's product reads the
whole h(t-1)). A barrier alone is ~70 ns here, but the other thread's h(t-1) and dz(t) come
from its core: it pays from a 1 MB packed weight (runtime/executor.py MIN_UNIT_WEIGHT).
"""
import numba
import numpy as np

from graphspec.plan import MAX_ATTRS

from ..abi import call, run
from ..jit import jit
from . import team

TABLE, OFFSETS, RECORDS, RECLEN, ATTRS, F_, G_, I, I0, I1, STEP, N, SYNC = range(13)
DESC_LEN = 13
UNIT_PARTS = 2                      # threads on a loop split by hidden units (more: more barriers)
CLAIM_WAIT = 1 << 18                # cycles (~80 us) a caller waits for a worker to take a units part


@jit
def _part(d, k):
    table = numba.carray(team.as_pointer(d[TABLE], np.int64), (d[N],))
    offsets = numba.carray(team.as_pointer(d[OFFSETS], np.int64), (d[N],))
    run(table, offsets, d[RECORDS] + 8 * d[RECLEN] * k, d[ATTRS], d[F_], d[G_], d[I], d[I0], d[I1], d[STEP])


@jit
def run_parts(c, gen, d):
    """Claim and run parts of job `gen` until none is left; returns how many this thread ran."""
    ran = 0
    while True:
        k = team.claim(c, gen)
        if k < 0:
            return ran
        _part(d, k)
        team.finish(c)
        ran += 1


@jit
def worker_job(c, gen):
    """A worker's share of a rows job (its description's address is in the control block)."""
    d = numba.carray(team.as_pointer(c[team.DESC], np.int64), (DESC_LEN,))
    return run_parts(c, gen, d)


@jit
def parallel(desc, table, offsets, parts, attrs, F, G, i, i0, i1, step, records, shadows):
    """Equations [i0, i1) in `step` order, each thread on its rows: parts of the team's job, or
    all rows on this thread (the full `records`) when there is no team to share with.
    shadows[s] = (offset, copy, size): a view shared by all rows that gets a gradient in the run
    and one range's copy of it past F's end: forward fills the copy with the view's values, and
    backward sums the range's gradient in the copy, then adds it to the view's."""
    f, g = F.ctypes.data, G.ctypes.data
    c = team.ctl()
    desc[TABLE], desc[OFFSETS], desc[N] = table.ctypes.data, offsets.ctypes.data, table.shape[0]
    desc[RECORDS], desc[RECLEN], desc[ATTRS] = parts.ctypes.data, parts.shape[1], attrs
    desc[F_], desc[G_], desc[I], desc[I0], desc[I1], desc[STEP] = f, g, i, i0, i1, step
    for s in range(shadows.shape[0]):
        o, copy, n = shadows[s, 0], shadows[s, 1], shadows[s, 2]
        if step > 0:
            F[copy:copy + n] = F[o:o + n]
        else:
            G[copy:copy + n] = 0
    gen = team.publish_rows(c, desc.ctypes.data, parts.shape[0])
    if gen < 0:
        run(table, offsets, records, attrs, f, g, i, i0, i1, step)
        return
    run_parts(c, gen, desc)
    team.wait(c, parts.shape[0])
    if step < 0:
        for s in range(shadows.shape[0]):
            o, copy, n = shadows[s, 0], shadows[s, 1], shadows[s, 2]
            G[o:o + n] += G[copy:copy + n]


# ---------------------------------------------------------------- split by hidden units
@jit
def _run_synced(table, offsets, records, attrs, f, g, i, i0, i1, step, sync, c):
    """abi.run, meeting the other parts at a barrier before each equation with sync[k] set."""
    k = i0 if step > 0 else i1 - 1
    met = 0
    for _ in range(i1 - i0):
        if sync[k]:
            met += 1
            team.barrier(c, met * UNIT_PARTS)
        if table[k] != 0:
            call(table[k], f, g, i, records + 8 * offsets[k], attrs + 8 * MAX_ATTRS * k)
        k += step


@jit
def _unit_part(d, k, c):
    """Part k of a units job: the run with part k's attrs (its unit range; Plan.unit_attrs)."""
    n = d[N]
    table = numba.carray(team.as_pointer(d[TABLE], np.int64), (n,))
    offsets = numba.carray(team.as_pointer(d[OFFSETS], np.int64), (n,))
    sync = numba.carray(team.as_pointer(d[SYNC], np.int64), (n,))
    _run_synced(table, offsets, d[RECORDS], d[ATTRS] + 8 * MAX_ATTRS * n * k, d[F_], d[G_], d[I],
                d[I0], d[I1], d[STEP], sync, c)


@jit
def worker_units(c, gen):
    """A worker's part of a units job: one part at most (a thread with two would wait for itself)."""
    k = team.claim(c, gen)
    if k < 0:
        return 0
    d = numba.carray(team.as_pointer(c[team.DESC], np.int64), (DESC_LEN,))
    _unit_part(d, k, c)
    team.finish(c)
    return 1


@jit
def by_units(desc, table, offsets, records, uattrs, attrs, F, G, i, i0, i1, step, sync, wait):
    """Equations [i0, i1) in `step` order split by hidden units (Plan.unit_segments): UNIT_PARTS
    threads each run every equation over its units, uattrs[p] holding part p's ranges, meeting
    where sync says. Every part must run at once, so the caller takes a part only after a worker
    has taken the other, waiting up to `wait` cycles (CLAIM_WAIT) for one to wake; if none did, it
    takes both and runs all units alone (`attrs`): the same results, bit for bit."""
    c = team.ctl()
    n = table.shape[0]
    desc[TABLE], desc[OFFSETS], desc[N], desc[SYNC] = table.ctypes.data, offsets.ctypes.data, n, sync.ctypes.data
    desc[RECORDS], desc[ATTRS] = records, uattrs.ctypes.data
    desc[F_], desc[G_], desc[I], desc[I0], desc[I1], desc[STEP] = F.ctypes.data, G.ctypes.data, i, i0, i1, step
    gen = team.publish_units(c, desc.ctypes.data, UNIT_PARTS)
    if gen < 0:
        run(table, offsets, records, attrs, F.ctypes.data, G.ctypes.data, i, i0, i1, step)
        return
    start = team.cycles()
    while team.claimed(c, gen) < UNIT_PARTS - 1 and team.cycles() - start < wait:
        team.pause()
    k = team.claim(c, gen)
    if k == 0 and team.claim(c, gen) == 1:
        run(table, offsets, records, attrs, F.ctypes.data, G.ctypes.data, i, i0, i1, step)
        team.finish(c)
    else:
        _unit_part(desc, k, c)
    team.finish(c)
    team.wait(c, UNIT_PARTS)
