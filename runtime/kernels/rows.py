"""Runs of plan equations split by batch rows over the team's threads (issues #12 and #17).

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
"""
import numba
import numpy as np

from ..abi import run
from ..jit import jit
from . import team

TABLE, OFFSETS, RECORDS, RECLEN, ATTRS, F_, G_, I, I0, I1, STEP, N = range(12)
DESC_LEN = 12


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
