"""Run a plan: forward over its equations, backward over them in reverse, in compiled code.

Each equation's kernels are resolved once, when the executor is built, to the addresses of
C-callable functions generated from the op registry (runtime/codegen.py: an adapter per op, a
kernel per fused group); the interpreter (runtime/interp.py) calls them in order. Nothing runs
per op or per time step in Python, and only the kernels a plan uses are ever compiled.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from graphspec.ops import REGISTRY
from graphspec.plan import Plan

from . import interp
from .codegen import kernels_for, warm
from .jit import jit
from .kernels import team
from .kernels.packed import SIMD
from .kernels.rows import CLAIM_WAIT, DESC_LEN, UNIT_PARTS
from .optim import Support

MIN_ROWS = 2        # fewest batch rows a thread takes of a recurrent loop (Executor._rows_setup)
SMALL_GEMM = 1 << 22     # multiply-adds: at most this, the plan's BLAS GEMMs run on one thread
FEW_ROWS, BIG_WEIGHT = 8, 1 << 20       # below 8 rows a thread, a loop with a packed weight over
                                        # 1 MB (both layouts) is not split by rows (but by units, or
                                        # each product by columns)
# A loop not split by rows, its packed weight (both layouts) at least 1 MB (the LSTM from H=256),
# runs split by hidden units. A training step: LSTM B=1/H=256 2229 -> 1711 us, B=1/H=512 8334 ->
# 7035, B=4/H=512 13.0 -> 10.9 ms. At B=1/H=128 (512 KB) the split lost, 574 -> 736 us: the ~1.5
# us a step the halved products save goes to the barriers' waits and the worker's wake-up.
MIN_UNIT_WEIGHT = 1 << 20
# Up to 16 rows a thread, a packed copy over 4 MB (each layout bigger than a core's 2 MB L2 here,
# the LSTM from H=512): split by units, not rows.
UNIT_ROWS, UNIT_WEIGHT = 16, 1 << 22


def _unwritten(plan: Plan) -> list:
    """Ranges of F's value region that neither set_batch nor a forward equation writes, merged:
    the slots before t=0 and after t=T-1 (zero initial states), and buffers nobody writes. The
    rest is overwritten every forward, so zeroing it (tens of MB for a large LSTM) is wasted."""
    written = {e.out.buf for e in plan.eqns if not e.nofwd} | {e.scratch.buf for e in plan.eqns if e.scratch}
    ranges = []
    for b in plan.buffers.values():
        if b.dtype != "f" or b.offset < plan.value_start:
            continue
        if b.kind == "input" or b.name in written:
            if len(b.shape) == 3:
                slot = b.shape[1] * b.shape[2]
                ranges += [(b.offset, b.offset + b.pre * slot),
                           (b.offset + (b.shape[0] - b.post) * slot, b.offset + b.size)]
        else:
            ranges.append((b.offset, b.offset + b.size))
    return _merge(r for r in ranges if r[1] > r[0])


def _merge(ranges) -> list:
    """Ranges (a, z) sorted and merged where they overlap or touch."""
    merged = []
    for a, z in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(z, merged[-1][1]))
        else:
            merged.append((a, z))
    return merged


def _no_gradient(plan: Plan) -> list:
    """Ranges of G that backward neither writes nor reads, merged: buffers whose every reader
    takes no gradient through them and whose every writer has no backward (a packed weight:
    W's gradient comes from the deferred GEMM), where no other buffer overlaps them. They stay
    the zeros G was made of, so backward need not zero them again (8 MB of G's 27 for the LSTM
    at B=16/H=512: 1.0 -> 0.7 ms a step)."""
    carried = {v.buf for e in plan.eqns for v, n in zip(e.ins, e.need or ()) if n}
    carried |= {v.buf for e in plan.eqns if any(e.need) for v in e.outs}
    spans = [(b.offset, b.offset + b.size, b.kind in ("value", "scratch") and b.name not in carried)
             for b in plan.buffers.values() if b.dtype == "f" and b.size]
    kept = [(a, z) for a, z, free in spans if not free]
    return _merge((a, z) for a, z, free in spans if free and not any(x < z and a < y for x, y in kept))


def _assigned(plan: Plan) -> list:
    """Ranges of G that an equation's backward stores, whole, before any other write or read
    (Eqn.assign: graphspec/passes/assign.py), merged: backward need not zero them."""
    return _merge((v.offset, v.offset + v.rows * v.cols) for e in plan.eqns
                  for v, stored in zip(e.ins, e.assign) if stored)


def _without(ranges: list, holes: list) -> list:
    """The parts of sorted, disjoint `ranges` outside sorted, disjoint `holes`."""
    out = []
    for a, z in ranges:
        for x, y in holes:
            if y <= a or x >= z:
                continue
            if x > a:
                out.append((a, x))
            a = max(a, y)
        if a < z:
            out.append((a, z))
    return out


def _openblas():
    """(set_num_threads, the thread count it started with) of scipy's bundled OpenBLAS (what
    runtime/kernels/blas.py calls), or (None, 1) where scipy links another BLAS."""
    import ctypes
    import glob
    import scipy
    for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs", "libscipy_openblas*.so")):
        lib = ctypes.CDLL(path)
        fn, get = (getattr(lib, f"scipy_openblas_{x}_num_threads", None) for x in ("set", "get"))
        if fn is not None and get is not None:
            fn.argtypes = [ctypes.c_int]
            return fn, max(1, get())
    return None, 1


_set_blas_threads, _BLAS_THREADS = _openblas()
_CPUS = os.cpu_count() or 1


def blas_threads(plan: Plan) -> int:
    """Threads for the plan's BLAS GEMMs: one when its biggest has at most SMALL_GEMM
    multiply-adds. OpenBLAS splits a GEMM of 2^18 or more over its threads, and below ~2^22 the
    hand-off costs more than it saves: LSTM training steps, B=1/H=32 0.24 -> 0.18 ms, B=1/H=128
    1.11 -> 0.93, B=4/H=32 0.65 -> 0.59 on one thread; B=4/H=128 (2^24) 1.80 -> 2.09: two."""
    macs = max([e.out.rows * e.out.cols * e.ins[0].cols for e in plan.eqns if e.op in ("affine", "matmul")] or [0])
    return 1 if macs <= SMALL_GEMM else _BLAS_THREADS


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 512)
    finally:
        os.close(fd)


def _runnable_elsewhere() -> int:
    """Threads of other processes runnable right now: /proc/loadavg's count of runnable threads
    (the whole machine's) less this process's own (its tasks in state R); 0 where /proc is
    missing. ~25 us a read."""
    try:
        runnable = int(_read("/proc/loadavg").split()[3].split(b"/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                stat = _read(f"/proc/self/task/{task}/stat")
            except OSError:         # a thread that just ended
                continue
            end = stat.rindex(b")")
            own += stat[end + 2:end + 3] == b"R"
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, runnable - own)


_seen = [float("-inf"), 0]          # when /proc was last read, and what it said


def busy_elsewhere(max_age: float = 0.02) -> int:
    """_runnable_elsewhere, read again when the last reading is older than max_age seconds (two
    reads a step cost 4% of an LSTM step at B=4/H=128, 2.2 ms)."""
    now = time.monotonic()
    if now - _seen[0] > max_age:
        _seen[:] = now, _runnable_elsewhere()
    return _seen[1]


def _packed_bytes(e, dtype) -> int:
    """The size of the packed weight a per-step product reads (0 for other equations)."""
    if e.op not in ("affine_packed", "matmul_packed"):
        return 0
    return e.ins[1].rows * e.ins[1].cols * np.dtype(dtype).itemsize


def threads() -> int:
    """Threads for the per-step products over packed weights: GRAPHSPEC_THREADS, else what the
    BLAS is told (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS), else the cores this process may use
    (at most 4: the products are small). Each call's team measures whether sharing pays."""
    for var in ("GRAPHSPEC_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) >= 1:
            return int(v)
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


_threads_set = []


def _start_threads():
    if not _threads_set:
        from .kernels.packed import set_threads
        set_threads(threads())
        _threads_set.append(True)


def _zeros_aligned(n: int, dtype, line: int = 64) -> np.ndarray:
    """np.zeros(n) starting on a cache line. The plan lays buffers out in multiples of 16 floats
    (packed panels): with F on a line they fall on lines too, so a packed panel's row is one
    64-byte load, not two. numpy gave 16-byte alignment: the LSTM at B=1/H=128 took 18% longer
    a training step, its one-row products being bound by loads from L2."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(n + line // itemsize, dtype)
    skip = (-raw.ctypes.data % line) // itemsize
    return raw[skip:skip + n]


@jit
def _zero_rows(A, rows):
    for i in rows:
        A[i, :] = 0


class Executor:
    """Flat arrays for one plan, and forward/backward over them.

    F holds params, constants, inputs and every value; G the gradients (F's layout); I the
    int64 token ids. The learnable params are F[:plan.nlearn], so an optimizer updates one
    contiguous block in place."""

    def __init__(self, plan: Plan, dtype=np.float32):
        warm(plan.eqns, dtype)            # before the kernel's threads start: it forks
        if any(e.op == "pack" for e in plan.eqns):
            _start_threads()
        self.plan, self.dtype = plan, np.dtype(dtype)
        self.records, self.offsets, self.attrs = plan.encode()
        n = len(plan.eqns)
        self.fwd, self.bwd, self.rows_k = (np.zeros(n, np.int64) for _ in range(3))
        for i, e in enumerate(plan.eqns):
            k = kernels_for(e, self.dtype)
            self.fwd[i] = 0 if e.nofwd else k.fwd
            self.bwd[i] = k.bwd if any(e.need) else 0
            self.rows_k[i] = k.rows
        self.F = _zeros_aligned(plan.fsize, self.dtype)
        self.G = _zeros_aligned(plan.fsize, self.dtype)
        self.I = np.zeros(max(plan.isize, 1), np.int64)
        for b in plan.buffers.values():
            if b.kind == "const" and b.dtype == "f":
                self.F[b.offset] = b.init
        self.loss_offsets = np.array([v.offset for v in plan.losses], np.int64)
        self.zero_each_batch = _unwritten(plan)
        self._sparse_setup()
        self._rows_setup()
        self._units_setup()
        self.blas_threads = blas_threads(plan)
        self.fields = self._batch_fields()      # after _rows_setup: F and I are final

    def _rows_setup(self):
        """The plan's runs of row-local equations (its recurrent loops) run split by batch rows
        over the threads of the packed products' team (runtime/kernels/rows.py), one row range
        a thread, at least MIN_ROWS rows each."""
        p, nthreads = self.plan, team.size() + 1
        nparts = min(nthreads, p.batch // MIN_ROWS)
        self.segments = p.row_segments() if nparts > 1 else []
        rows = p.batch // max(nparts, 1)
        self.unit_runs = p.unit_segments(UNIT_PARTS) if SIMD else []   # read again by _units_setup
        by_units = {(a, z) for a, z, _ in self.unit_runs}
        # Few rows a thread, a big weight: each thread would stream all of it every step (a
        # [2 x 512] x [512 x 2048] product is bound by reading the 4 MB weight); split by units
        # (or, where the loop cannot be, each product by columns), a thread reads half. LSTM
        # B=4/H=512 16.5 ms a step by columns against 24.4 by rows; by units, B=16/H=512 29.1-29.8
        # against 34.5-35.6 by rows, B=32 59.2 against 62.3, B=64 equal. Rows win at B=16/H=256
        # (8.4 against 9.5 by units) and B=4/H=128.
        big = lambda a, z, size: any(_packed_bytes(e, self.dtype) > size for e in p.eqns[a:z])  # noqa: E731
        self.segments = [(a, z) for a, z in self.segments
                         if not (big(a, z, BIG_WEIGHT) and rows < FEW_ROWS
                                 or big(a, z, UNIT_WEIGHT) and rows <= UNIT_ROWS and (a, z) in by_units)]
        self.segs = np.array(self.segments, np.int64).reshape(-1, 2)
        self.desc = np.zeros(DESC_LEN, np.int64)
        self.shadows = np.zeros((0, 3), np.int64)
        self.parts = np.zeros((1, 1), np.int64)
        if not self.segments:
            return
        cut = [k * p.batch // nparts for k in range(nparts + 1)]
        shared, end, shadows, parts = p.shared_grads(self.segments), p.fsize, [], []
        for k in range(nparts):
            remap = {}
            for view in shared if k else ():        # ranges 1.. sum into copies past F's end
                remap[view], end = end, end + view[1] * view[2]
                shadows.append((view[0], remap[view], view[1] * view[2]))
            parts.append(p.encode_rows(cut[k], cut[k + 1], self.segments, remap))
        self.parts = np.stack(parts)
        self.shadows = np.array(shadows, np.int64).reshape(-1, 3)
        if end > p.fsize:
            F, G = self.F, self.G
            self.F, self.G = _zeros_aligned(end, self.dtype), _zeros_aligned(end, self.dtype)
            self.F[:p.fsize], self.G[:p.fsize] = F, G

    def _units_setup(self):
        """A loop that is not split by rows (one row, B=1; or few rows and a big weight) can run
        split by hidden units over two threads (Plan.unit_segments, rows.by_units). `split_units`:
        'auto' does where the packed weight is big enough (MIN_UNIT_WEIGHT) and no other process
        keeps a core busy; 'always' (tests) wherever it can, waiting as long as it takes for the
        worker to join; 'never'."""
        p = self.plan
        segs = []
        if SIMD and team.size() >= UNIT_PARTS - 1 and not self.segments:
            segs = self.unit_runs
        self.unit_segments = segs
        self.units_pay = any(_packed_bytes(e, self.dtype) >= MIN_UNIT_WEIGHT
                             for a, z, _ in segs for e in p.eqns[a:z])
        self.usegs = np.array([(a, z) for a, z, _ in segs], np.int64).reshape(-1, 2)
        self.uattrs = np.stack([p.unit_attrs(segs, k, UNIT_PARTS, self.attrs) for k in range(UNIT_PARTS)])
        self.sync_f, self.sync_b = p.unit_barriers(segs, 1), p.unit_barriers(segs, -1)
        self.split_units = "auto"
        self.fwd_u = self.bwd_u = None

    def _unit_tables(self):
        """The kernel tables of a pass split by units: the fused groups of its loops run kernels
        over a unit range (codegen.fused_source units=True), compiled on the first such pass."""
        self.fwd_u, self.bwd_u = self.fwd.copy(), self.bwd.copy()
        for a, z, _ in self.unit_segments:
            for i in range(a, z):
                e = self.plan.eqns[i]
                if e.op == "fused":
                    k = kernels_for(e, self.dtype, units=True)
                    self.fwd_u[i] = 0 if e.nofwd else k.fwd
                    self.bwd_u[i] = k.bwd if any(e.need) else 0

    def _by_units(self) -> int:
        """How long (cycles) this pass's loops split by units wait for the worker to join; 0: they
        run unsplit. A barrier waits for the other thread: never beside a process that keeps a
        core busy (it would deschedule the other part mid-run)."""
        if not len(self.usegs) or self.split_units == "never":
            return 0
        if self.split_units == "always":
            wait = 1 << 62
        else:
            wait = CLAIM_WAIT if self.units_pay and _CPUS - busy_elsewhere() >= UNIT_PARTS else 0
        if wait and self.fwd_u is None:
            self._unit_tables()
        return wait

    def _sparse_setup(self):
        """Params with row-sparse gradients (plan: Buffer.sparse): backward zeroes only the rows
        the previous backward wrote, marks the rows it writes now, and the optimizer can update
        just those (grad_support)."""
        p = self.plan
        self.sparse = [b for b in p.params() if b.sparse]
        starts, off = {}, 0
        for b in self.sparse:
            starts[b.name], off = off, off + b.shape[0]
        self.M = np.zeros(max(off, 1), np.int64)
        self.moff = np.zeros(len(p.eqns), np.int64)
        for i, e in enumerate(p.eqns):
            hit = [starts[e.ins[k].buf] for k in (REGISTRY[e.op].rows if e.op in REGISTRY else ())
                   if e.ins[k].buf in starts]
            if hit:
                self.moff[i] = hit[0]
            else:
                self.rows_k[i] = 0
        self.mark_start = [starts[b.name] for b in self.sparse]
        self.rows = [np.zeros(0, np.int64) for _ in self.sparse]
        cuts = sorted((b.offset, b.offset + b.size) for b in self.sparse)
        self.dense_ranges, at = [], 0
        for a, z in cuts + [(p.fsize, p.fsize)]:
            if a > at:
                self.dense_ranges.append((at, a))
            at = z
        self.zeroed = _without(self.dense_ranges, _merge(_no_gradient(p) + _assigned(p)))

    # ------------------------------------------------------------ params
    def view(self, name: str, grad: bool = False) -> np.ndarray:
        b = self.plan.buffers[name]
        A = self.G if grad else (self.I if b.dtype == "i" else self.F)
        return A[b.offset:b.offset + b.size].reshape(b.shape)

    def param_names(self):
        return [b.name for b in self.plan.params()]

    # ------------------------------------------------------------ running
    def _batch_fields(self) -> list:
        """(field, input name, where its values go, their shape) of every input a batch fills:
        time-major fields [T, B, ...] go to the slots of t = 0..T-1."""
        out = []
        for b in self.plan.buffers.values():
            if b.kind != "input" or b.fields.get("kind") == "table":
                continue
            dest = self.view(b.name)
            if len(b.shape) == 3:
                T = b.shape[0] - b.pre - b.post
                out.append((b.fields["field"], b.name, dest[b.pre:b.pre + T], (T, b.shape[1], b.shape[2])))
            else:
                out.append((b.fields["field"], b.name, dest, b.shape))
        return out

    def set_batch(self, batch: dict):
        """Copy one batch in (the inputs' views are found once: at B=1 looking them up again
        each step was ~5% of an LSTM step)."""
        p = self.plan
        for a, z in self.zero_each_batch:
            self.F[a:z] = 0
        self.I[p.ivalue_start:] = 0
        for key, name, dest, shape in self.fields:
            if key not in batch:
                raise KeyError(f"the batch has no field '{key}' for input '{name}' "
                               f"(it has: {', '.join(sorted(batch))})")
            dest[...] = np.asarray(batch[key]).reshape(shape)
        for off, size, value in p.fills:
            self.I[off:off + size] = value

    def set_table(self, name: str, table: np.ndarray):
        b = self.plan.buffers[f"table.{name}"]
        dest = self.view(b.name)
        if dest.shape != table.shape:
            raise ValueError(f"table {name}: expected shape {dest.shape}, got {table.shape}")
        dest[...] = table

    def _blas(self):
        """BLAS threads for this pass: the plan's, but no more than the cores other processes
        leave free. OpenBLAS splits a GEMM statically and its threads wait for each other, so a
        thread that shares a core with a busy process stalls the call: LSTM B=32/H=128 beside a
        spinning process 16.1 ms a step on two BLAS threads, 11.2 on one (7.9 quiet on two)."""
        if _set_blas_threads is not None:
            n = self.blas_threads
            if n > 1:
                n = max(1, min(n, _CPUS - busy_elsewhere()))
            _set_blas_threads(n)

    def forward(self, seed: int = 0) -> float:
        self._blas()
        interp.seed(int(seed) & 0x7FFFFFFF)
        wait = self._by_units()
        if wait:
            interp.forward_units(self.fwd_u, self.offsets, self.records, self.attrs, self.F, self.G, self.I,
                                 self.usegs, self.uattrs, self.sync_f, self.desc, wait)
        else:
            interp.forward_rows(self.fwd, self.offsets, self.records, self.attrs, self.F, self.G, self.I,
                                self.segs, self.parts, self.desc, self.shadows)
        return self.loss()

    def loss(self) -> float:
        if len(self.loss_offsets) == 1:
            return float(self.F[self.loss_offsets[0]])
        return float(self.F[self.loss_offsets].astype(np.float64).sum())

    def backward(self):
        self._blas()
        for a, z in self.zeroed:
            self.G[a:z] = 0
        for b, rows in zip(self.sparse, self.rows):
            _zero_rows(self.view(b.name, grad=True), rows)
        self.G[self.loss_offsets] = 1
        wait = self._by_units()
        if wait:
            interp.backward_units(self.bwd_u, self.offsets, self.records, self.attrs, self.F, self.G, self.I,
                                  self.usegs, self.uattrs, self.sync_b, self.desc, wait)
        else:
            interp.backward_rows(self.bwd, self.offsets, self.records, self.attrs, self.F, self.G, self.I,
                                 self.segs, self.parts, self.desc, self.shadows)
        if self.sparse:
            self.M[:] = 0
            interp.touched(self.rows_k, self.moff, self.offsets, self.records, self.attrs, self.F, self.M, self.I)
            self.rows = [np.flatnonzero(self.M[m:m + b.shape[0]]) for b, m in zip(self.sparse, self.mark_start)]

    def grad_support(self) -> Optional[Support]:
        """Where G[:nlearn] can be nonzero after backward, for sparse-aware optimizer steps: None
        when every param is dense."""
        if not self.sparse:
            return None
        n = self.plan.nlearn
        dense = [(a, min(z, n)) for a, z in self.dense_ranges if a < n]
        return Support(dense, [(b.offset, b.shape[0], b.shape[1], rows) for b, rows in zip(self.sparse, self.rows)])
