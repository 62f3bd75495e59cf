"""Worker threads that share one kernel call's chunks of work (the packed GEMM of packed.py).

Why not numba's prange: the per-step GEMM is 5-40 us of work, 128 calls a training step, called
from the jitted interpreter. The workqueue layer's workers and its caller poll with usleep(1)
(a launch costs tens of us); the OpenMP layer splits statically, so a worker the OS does not
schedule (a busy machine) stalls the caller for the worker's whole half.

Here the caller publishes a job in a control block and claims chunks itself, one at a time, as
do the workers: a worker that wakes late finds nothing left and goes back to sleep, so the
caller never waits for a worker to start, only for a chunk a worker has claimed. Workers spin
for a while after each job (the next per-step GEMM comes within microseconds), then sleep on a
futex; the caller only makes the wake-up system call when one sleeps.

The control block, CTL int64 slots each on its own cache line, is a buffer registered with
LLVM under the name `graphspec_team_ctl` (as blas.py registers BLAS), so jitted code reaches it
without an argument and cached code links to it in every process. One job at a time: a caller
that finds the team busy (another thread's job, or the rows job it is part of:
runtime/kernels/rows.py) runs its product alone. A job is a GEMM's panel chunks (KIND
GEMM_JOB, the params line), a run of plan equations' row ranges (ROWS_JOB, DESC: the address
of its description) or of their hidden units (UNITS_JOB: every part at once, meeting at
barriers, BARRIER counting arrivals).

Job protocol (all atomics sequentially consistent):
    caller:  cas(BUSY 0 -> 1); write params; DONE = 0; NEXT = gen << 32; GEN = gen;
             if SLEEPING: futex_wake(GEN); claim/run chunks; wait DONE == nchunks; BUSY = 0
    worker:  wait for GEN to change (spin, then futex_wait); read params; claim/run chunks
    claim:   cas(NEXT, gen << 32 | c -> c + 1) while NEXT's gen is the job's and c < nchunks,
             so a worker that read the previous job's params can never claim a chunk of this one.
"""
import atexit
import os
import platform
import sys
import threading

import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import jit

LINE = 8                            # int64 slots per cache line
BUSY, GEN, NEXT, DONE, SLEEPING, STOP, WORKERS, HELPED, STATS, PARAMS, JOB, BARRIER, SHAPES = (LINE * i for i in range(13))
JOBS, SOLOS, WAITED = STATS, STATS + 1, STATS + 2               # counters, for benchmarks
A_ADDR, P_ADDR, C_ADDR, M_, R_, N_, ACC, NCHUNKS = range(PARAMS, PARAMS + 8)
KIND, DESC = JOB, JOB + 1           # what a job is: a GEMM (the params above) or rows of a plan run
GEMM_JOB, ROWS_JOB, UNITS_JOB = 0, 1, 2
SHAPE_BITS = 6
NSHAPES = 1 << SHAPE_BITS          # per-shape timings (a line each) for choosing team or solo
T_TEAM, T_SOLO, CALLS, EXPLORE, INTERVAL, BURST, LAST, KEY = range(8)
CTL = SHAPES + NSHAPES * LINE
MASK = (1 << 32) - 1
SPIN_CYCLES = 1 << 17               # ~40 us of polling for the next job before sleeping
YIELD_SPINS = 1 << 12               # a caller waiting this long for a chunk yields its core
BURST_LEN = 2                       # calls per exploration of the other mode (the first warms up)
MIN_INTERVAL, MAX_INTERVAL = 32, 1 << 14    # so exploring costs at most 2 calls in 32, soon fewer

_ctl = np.zeros(CTL + LINE, np.int64)                                   # + a line for alignment
_ctl = _ctl[(-_ctl.ctypes.data // 8) % LINE:][:CTL]
ll.add_symbol("graphspec_team_ctl", _ctl.ctypes.data)
X86 = platform.machine().lower() in ("x86_64", "amd64")


# ---------------------------------------------------------------- primitives
@intrinsic
def _ctl_ptr(typingctx):
    sig = types.CPointer(types.int64)()

    def codegen(context, builder, signature, args):
        gv = builder.module.globals.get("graphspec_team_ctl")
        if gv is None:
            gv = ir.GlobalVariable(builder.module, ir.ArrayType(ir.IntType(64), CTL), "graphspec_team_ctl")
        return builder.bitcast(gv, ir.IntType(64).as_pointer())
    return sig, codegen


@jit
def ctl():
    """The control block as an int64 array."""
    return numba.carray(_ctl_ptr(), (CTL,))


def _slot(context, builder, arr, arrty, i):
    data = cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data
    return builder.gep(data, [i])


@intrinsic
def _load(typingctx, arr, i):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_slot(context, builder, args[0], signature.args[0], args[1]), "seq_cst", 8)
    return types.int64(arr, i), codegen


@intrinsic
def _store(typingctx, arr, i, v):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _slot(context, builder, args[0], signature.args[0], args[1]), "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(arr, i, v), codegen


@intrinsic
def _add(typingctx, arr, i, v):
    """Atomic fetch-and-add; returns the old value."""
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _slot(context, builder, args[0], signature.args[0], args[1]), args[2],
                                  "seq_cst")
    return types.int64(arr, i, v), codegen


@intrinsic
def _cas(typingctx, arr, i, old, new):
    def codegen(context, builder, signature, args):
        res = builder.cmpxchg(_slot(context, builder, args[0], signature.args[0], args[1]), args[2], args[3],
                              "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)
    return types.boolean(arr, i, old, new), codegen


@intrinsic
def _pause(typingctx):
    """A spin-wait hint (x86 `pause`): a spinning thread yields execution resources to its sibling."""
    def codegen(context, builder, signature, args):
        if X86:
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def cycles(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _futex(typingctx, arr, i, op, val):
    """futex(&arr[i], op | FUTEX_PRIVATE_FLAG, val): op 0 waits while the slot's low 32 bits equal
    val, op 1 wakes up to val waiters (Linux x86-64, syscall 202)."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
        addr = builder.ptrtoint(_slot(context, builder, args[0], signature.args[0], args[1]), i64)
        builder.call(fn, [ir.Constant(i64, 202), addr, builder.or_(args[2], ir.Constant(i64, 128)),
                          builder.trunc(args[3], ir.IntType(32)), ir.Constant(i64, 0)])
        return context.get_dummy_value()
    return types.void(arr, i, op, val), codegen


@intrinsic
def as_pointer(typingctx, addr, dtype):
    """The address `addr` as a pointer to `dtype` elements (to rebuild a job's arrays)."""
    ty = dtype.dtype if isinstance(dtype, types.DType) else dtype.key if isinstance(dtype, types.NumberClass) else None
    if ty is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(ty)))
    return types.CPointer(ty)(addr, dtype), codegen


# ---------------------------------------------------------------- the job protocol
@jit
def publish(c, A, P, C, accumulate, nchunks):
    """Take the team for a job of nchunks chunks; returns its generation, or -1 (no workers, or
    another caller's job is running: run alone)."""
    if _load(c, WORKERS) == 0 or not _cas(c, BUSY, 0, 1):
        return -1
    c[KIND] = GEMM_JOB
    c[A_ADDR] = A.ctypes.data
    c[P_ADDR] = P.ctypes.data
    c[C_ADDR] = C.ctypes.data
    c[M_], c[R_], c[N_] = A.shape[0], A.shape[1], C.shape[1]
    c[ACC] = 1 if accumulate else 0
    return _open(c, nchunks)


@jit
def publish_rows(c, desc, nparts):
    """Take the team for a run of plan equations over nparts row ranges (runtime/interp.py:
    `desc` is the address of the run's description); returns its generation, or -1."""
    if _load(c, WORKERS) == 0 or not _cas(c, BUSY, 0, 1):
        return -1
    c[KIND] = ROWS_JOB
    c[DESC] = desc
    return _open(c, nparts)


@jit
def publish_units(c, desc, nparts):
    """Take the team for a run of plan equations split by hidden units into nparts parts that
    wait for each other at barriers (runtime/kernels/rows.py by_units); returns its generation,
    or -1."""
    if _load(c, WORKERS) == 0 or not _cas(c, BUSY, 0, 1):
        return -1
    c[KIND] = UNITS_JOB
    c[DESC] = desc
    _store(c, BARRIER, 0)
    return _open(c, nparts)


@jit
def claimed(c, gen):
    """How many chunks of job `gen` are claimed (-1: it is not the current job)."""
    v = _load(c, NEXT)
    return v & MASK if (v >> 32) == (gen & MASK) else -1


@jit
def barrier(c, target):
    """Arrive at a barrier of a units job and wait for the others: its k-th barrier is passed
    when all nparts threads have arrived, k * nparts arrivals since the job began."""
    _add(c, BARRIER, 1)
    spins = 0
    while _load(c, BARRIER) < target:
        spins += 1
        if spins >= YIELD_SPINS:
            _sched_yield()      # the other part's thread may share this core (a busy machine)
        else:
            _pause()


@jit
def pause():
    _pause()


@jit
def busy(c):
    """Is a job running? (A kernel called inside a job's chunk then runs alone, untimed.)"""
    return _load(c, BUSY) != 0


@jit
def _open(c, nchunks):
    gen = _load(c, GEN) + 1
    c[NCHUNKS] = nchunks
    _store(c, DONE, 0)
    _store(c, NEXT, (gen & MASK) << 32)
    _store(c, GEN, gen)
    if _load(c, SLEEPING) > 0:
        _futex(c, GEN, 1, 1 << 30)
    return gen


@jit
def workers(c):
    return _load(c, WORKERS) > 0


@jit
def claim(c, gen):
    """The next unclaimed chunk of job `gen`, or -1 when none is left (or the job is over)."""
    while True:
        v = _load(c, NEXT)
        k = v & MASK
        if (v >> 32) != (gen & MASK) or k >= c[NCHUNKS]:
            return -1
        if _cas(c, NEXT, v, v + 1):
            return k


@jit
def finish(c):
    _add(c, DONE, 1)


@jit
def helped(c, chunks):
    """Count chunks a worker ran (the share the workers take, for benchmarks)."""
    if chunks:
        _add(c, HELPED, chunks)


def stats() -> dict:
    """Counters since the process started: calls run as shared jobs and alone (of the sizes
    that may share), chunks the workers ran, cycles callers waited for workers' chunks."""
    return dict(jobs=int(_ctl[JOBS]), solos=int(_ctl[SOLOS]), helped=int(_ctl[HELPED]), waited=int(_ctl[WAITED]))


@jit
def wait(c, nchunks):
    """Wait until every chunk is finished, then free the team. Only
    chunks a worker has claimed are outstanding: this waits for work in progress, never for a
    worker to wake up."""
    start = cycles()
    spins = 0
    while _load(c, DONE) < nchunks:
        spins += 1
        if spins >= YIELD_SPINS:
            _sched_yield()      # the worker may share this core (a busy machine): let it run
        else:
            _pause()
    _store(c, BUSY, 0)
    c[WAITED] += cycles() - start


@jit
def shape_slot(key):
    """The line of a shape's timings: the top bits of key times 2^64 / golden ratio (Fibonacci
    hashing). A sum of the sizes modulo NSHAPES put every shape with the same M on one line when
    r and n were multiples of 64, so an RNN's forward and backward products evicted each
    other's timings at every pass."""
    return ((key * -7046029254386353131) >> (64 - SHAPE_BITS)) & (NSHAPES - 1)


@jit
def choose(c, M, r, n):
    """Team or solo for this call of shape (M, r, n): whichever has been faster for this shape
    (per-call cycles, halved with each new sample), except during an exploration: every INTERVAL
    calls, BURST_LEN calls in the other mode (the first not timed: it wakes a sleeping worker).
    INTERVAL doubles while the other mode keeps losing. So a busy machine, where waiting on a
    descheduled worker makes shared calls slow, turns the team off within a few calls, and a
    quiet one turns it back on within a few thousand. Returns (slot, use the team, time it)."""
    key = (M << 42) ^ (r << 21) ^ n
    s = SHAPES + LINE * shape_slot(key)
    if c[s + KEY] != key:
        c[s + T_TEAM] = c[s + T_SOLO] = c[s + CALLS] = c[s + BURST] = c[s + LAST] = 0
        c[s + EXPLORE], c[s + INTERVAL], c[s + KEY] = BURST_LEN, MIN_INTERVAL, key
    c[s + CALLS] += 1
    team = c[s + T_TEAM] == 0 or (c[s + T_SOLO] != 0 and c[s + T_TEAM] <= c[s + T_SOLO])
    if c[s + BURST] > 0:
        c[s + BURST] -= 1
        c[s + LAST] = c[s + BURST] == 0
        return s, not team, True
    if c[s + CALLS] >= c[s + EXPLORE]:
        c[s + BURST] = BURST_LEN - 1
        c[s + EXPLORE] = c[s + CALLS] + c[s + INTERVAL]
        return s, not team, False
    return s, team, True


@jit
def learn(c, s, team, timed, cycles):
    """Fold one call's cycles into its shape's estimate for the mode it ran (an outlier, such
    as a preemption, counts at most four times the estimate)."""
    if team:
        c[JOBS] += 1
    else:
        c[SOLOS] += 1
    if not timed:
        return
    f = s + (T_TEAM if team else T_SOLO)
    old = c[f]
    c[f] = cycles if old == 0 else (old + min(cycles, 4 * old)) // 2
    if c[s + LAST]:
        # an exploration just ended: back off while the explored mode keeps losing
        c[s + LAST] = 0
        lost = c[s + T_TEAM] > c[s + T_SOLO] if team else c[s + T_SOLO] > c[s + T_TEAM]
        c[s + INTERVAL] = min(2 * c[s + INTERVAL], MAX_INTERVAL) if lost else MIN_INTERVAL
        c[s + EXPLORE] = c[s + CALLS] + c[s + INTERVAL]


@jit
def generation(c):
    return _load(c, GEN)


@jit
def next_job(c, seen):
    """Block until a job newer than `seen` is published; returns its generation, or -1 on STOP.
    Polls for SPIN_CYCLES, yielding the core between polls (on a busy machine the poll costs the
    other processes nothing), then sleeps on the futex."""
    while True:
        start = cycles()
        while cycles() - start < SPIN_CYCLES:
            for _ in range(64):
                g = _load(c, GEN)
                if g != seen:
                    return g
                _pause()
            if _load(c, STOP):
                return -1
            _sched_yield()
        _add(c, SLEEPING, 1)
        if _load(c, GEN) == seen and not _load(c, STOP):
            _futex(c, GEN, 0, seen & MASK)
        _add(c, SLEEPING, -1)


# ---------------------------------------------------------------- threads
_threads = []


def start(n: int, worker) -> None:
    """Run `worker()` (a jitted, nogil loop over next_job) on n threads, stopping any running.
    Linux only (the workers sleep on a futex); elsewhere callers run alone."""
    stop()
    if not sys.platform.startswith("linux"):
        return
    # Compile (or load) the loop here, not in the new threads: a thread compiling holds numba's
    # compiler lock, and a process forked meanwhile (codegen.warm's workers) inherits it held and
    # never compiles anything (seen: a cold cache, threads started, then a new plan's kernels).
    worker.compile(())
    c = _ctl
    c[WORKERS] = n
    for _ in range(n):
        t = threading.Thread(target=worker, daemon=True, name="graphspec-gemm")
        t.start()
        _threads.append(t)


def stop() -> None:
    """Stop and join the workers (the caller must not be inside a kernel call)."""
    c = _ctl
    c[WORKERS] = 0
    if _threads:
        c[STOP] = 1
        c[GEN] += 1
        _wake(c)
        for t in _threads:
            t.join()
        _threads.clear()
        c[STOP] = 0


@jit
def _wake(c):
    _futex(c, GEN, 1, 1 << 30)


def size() -> int:
    return len(_threads)


def _forget_threads() -> None:
    """In a forked child: the workers were not copied; callers there run alone."""
    _ctl[WORKERS] = 0
    _ctl[SLEEPING] = 0
    _threads.clear()


# stop the workers before the interpreter tears down the JIT whose code they run
atexit.register(stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)
