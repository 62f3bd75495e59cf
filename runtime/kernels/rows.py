"""Runs of plan equations split by batch rows over the team's threads (issues #12 and #17).

A recurrent loop is T steps of a per-step GEMM and a fused cell, each reading and writing its
batch rows independently (graphspec/plan.py: Plan.row_segments). Splitting every step's product
over threads costs a hand-off per step and moves each step's rows between the cores' caches;
splitting the batch instead gives each thread rows [r0, r1) of the whole run, forward or
backward, with one hand-off for the run: the threads share only the read-only weights.

A job's description `desc` (int64, DESC_LEN) is written by the caller before it publishes the
job (team.publish_rows) and read by the workers; `parts` [nparts, len(records)] holds each row
range's records (Plan.encode_rows). The caller and the workers claim parts one at a time, like
a GEMM's chunks. A kernel called inside a part finds the team busy and runs alone. Results are
the same as one thread's, bit for bit: every row's arithmetic is unchanged.
"""
import numba
import numpy as np

from ..abi import run
from ..jit import jit
from . import team

TABLE, OFFSETS, RECORDS, RECLEN, ATTRS, F, G, I, I0, I1, STEP, N = range(12)
DESC_LEN = 12


@jit
def _part(d, k):
    table = numba.carray(team.as_pointer(d[TABLE], np.int64), (d[N],))
    offsets = numba.carray(team.as_pointer(d[OFFSETS], np.int64), (d[N],))
    run(table, offsets, d[RECORDS] + 8 * d[RECLEN] * k, d[ATTRS], d[F], d[G], d[I], d[I0], d[I1], d[STEP])


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
def parallel(desc, table, offsets, parts, attrs, f, g, i, i0, i1, step, records):
    """Equations [i0, i1) in `step` order, each thread on its rows: parts of the team's job, or
    all rows on this thread (the full `records`) when there is no team to share with."""
    c = team.ctl()
    desc[TABLE], desc[OFFSETS], desc[N] = table.ctypes.data, offsets.ctypes.data, table.shape[0]
    desc[RECORDS], desc[RECLEN], desc[ATTRS] = parts.ctypes.data, parts.shape[1], attrs
    desc[F], desc[G], desc[I], desc[I0], desc[I1], desc[STEP] = f, g, i, i0, i1, step
    gen = team.publish_rows(c, desc.ctypes.data, parts.shape[0])
    if gen < 0:
        run(table, offsets, records, attrs, f, g, i, i0, i1, step)
        return
    run_parts(c, gen, desc)
    team.wait(c, parts.shape[0])
