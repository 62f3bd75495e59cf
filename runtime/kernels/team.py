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
that finds the team busy (another thread's job) runs its product alone.

Job protocol (all atomics sequentially consistent):
    caller:  cas(BUSY 0 -> 1); write params; DONE = 0; NEXT = gen << 32; GEN = gen;
             if SLEEPING: futex_wake(GEN); claim/run chunks; wait DONE == nchunks; BUSY = 0
    worker:  wait for GEN to change (spin, then futex_wait); read params; claim/run chunks
    claim:   cas(NEXT, gen << 32 | c -> c + 1) while NEXT's gen is the job's and c < nchunks,
             so a worker that read the previous job's params can never claim a chunk of this one.
"""
import platform
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
BUSY, GEN, NEXT, DONE, SLEEPING, STOP, WORKERS, HELPED, SOLO, PARAMS = (LINE * i for i in range(10))
PENALTY = SOLO + 1                  # (both the caller's: how many calls to run alone, and the next penalty)
STALLS, WAITED, JOBS = SOLO + 2, SOLO + 3, SOLO + 4     # statistics (the caller's)
A_ADDR, P_ADDR, C_ADDR, M_, R_, N_, ACC, NCHUNKS = range(PARAMS, PARAMS + 8)
CTL = PARAMS + LINE
MASK = (1 << 32) - 1
SPIN_CYCLES = 1 << 17               # ~40 us of spinning after a job before sleeping
YIELD_SPINS = 1 << 12               # a caller waiting this long for a chunk yields its core
STALL_CYCLES = 1 << 14              # slack (~4 us) before a late worker chunk counts as a stall
MIN_PENALTY, MAX_PENALTY = 16, 1 << 14

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
    gen = _load(c, GEN) + 1
    c[A_ADDR] = A.ctypes.data
    c[P_ADDR] = P.ctypes.data
    c[C_ADDR] = C.ctypes.data
    c[M_], c[R_], c[N_] = A.shape[0], A.shape[1], C.shape[1]
    c[ACC] = 1 if accumulate else 0
    c[NCHUNKS] = nchunks
    _store(c, DONE, 0)
    _store(c, NEXT, (gen & MASK) << 32)
    _store(c, GEN, gen)
    if _load(c, SLEEPING) > 0:
        _futex(c, GEN, 1, 1 << 30)
    return gen


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
    """Counters since the process started: shared jobs, chunks the workers ran, stalls (a late
    worker), cycles the callers waited for workers."""
    return dict(jobs=int(_ctl[JOBS]), helped=int(_ctl[HELPED]), stalls=int(_ctl[STALLS]), waited=int(_ctl[WAITED]))


@jit
def wait(c, nchunks):
    """Wait until every chunk is finished, then free the team; returns the cycles waited. Only
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
    return cycles() - start


@jit
def solo(c):
    """True while the caller should run alone (a penalty for stalls is being served)."""
    if c[SOLO] > 0:
        c[SOLO] -= 1
        return True
    return False


@jit
def judge(c, cycles_per_chunk, waited):
    """After a shared job: the caller waited `waited` cycles for the workers' last chunks. More
    than two of its own chunks' time means a worker was not running (another process has its
    core): run alone for the next PENALTY calls, doubling on each stall, halving on each job
    that went well. So on a busy machine the product degrades to one thread's speed instead of
    waiting on a descheduled thread 128 times a training step."""
    penalty = max(c[PENALTY], MIN_PENALTY)
    c[JOBS] += 1
    c[WAITED] += waited
    if waited > 2 * cycles_per_chunk + STALL_CYCLES:
        c[STALLS] += 1
        c[SOLO] = penalty
        c[PENALTY] = min(2 * penalty, MAX_PENALTY)
    else:
        c[PENALTY] = max(penalty // 2, MIN_PENALTY)


@jit
def generation(c):
    return _load(c, GEN)


@jit
def next_job(c, seen):
    """Block until a job newer than `seen` is published; returns its generation, or -1 on STOP."""
    while True:
        start = cycles()
        while cycles() - start < SPIN_CYCLES:
            g = _load(c, GEN)
            if g != seen:
                return g
            if _load(c, STOP):
                return -1
            _pause()
        _add(c, SLEEPING, 1)
        if _load(c, GEN) == seen and not _load(c, STOP):
            _futex(c, GEN, 0, seen & MASK)
        _add(c, SLEEPING, -1)


# ---------------------------------------------------------------- threads
_threads = []


def start(n: int, worker) -> None:
    """Run `worker()` (a jitted, nogil loop over next_job) on n threads, stopping any running."""
    stop()
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
