"""Data-parallel training over MPI (mpi4py), behind one interface with a single-process fallback.

`world()` is the MPI world when this process was started by an MPI launcher (mpiexec, srun)
with more than one rank and mpi4py is installed; otherwise a world of one whose collectives do
nothing. The training loop calls the same methods either way, so nothing else knows.

What data parallelism means here (runtime/train.py):
- every rank builds the same model; rank 0's params are broadcast at the start (and after a
  resume), so initialisation and pretrained vectors need not agree across ranks;
- every batch is a pure function of (task, split, step, seed): each rank builds the whole batch
  and keeps its own contiguous slice of the examples (rank r of N: [r B/N, (r+1) B/N)), so a
  resume with another N replays the same batches;
- a plan's loss is each sequence's summed loss averaged over the batch, so the batch-B gradient
  is sum_r (B_r / B) g_r: each rank scales its gradient by B_r / B and one in-place Allreduce
  (SUM) of the flat vector G[:nlearn] gives every rank the full gradient, row-sparse tables
  included (their untouched rows are zeros); the rows any rank touched become every rank's
  touched rows, so the sparse optimizer paths and the next backward's zeroing stay right;
- the loss and the Ctrl-C flag travel in a second, 2-number Allreduce, so every rank sees the
  same loss (a NaN stops all of them at the same step) and stops at the same step;
- clipping and the optimizer step then run identically on every rank: no parameter traffic;
- only rank 0 validates and writes (metrics, checkpoints, pictures, config.yaml).

A rank that dies takes the others down with it (MPI's default), and one that fails alone
(rank 0 cannot write, say) calls Abort after its message, so no rank waits forever; the last
checkpoint, written atomically, is intact.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

import numpy as np

from graphspec.errors import UserError

# environment variables an MPI launcher sets in the processes it starts
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")


class Single:
    """One process: every collective is the identity."""

    rank, size, root = 0, 1, True

    def __init__(self):
        self.allreduce_s, self.steps = 0.0, 0
        self.started = False

    def shard(self, batch: dict, model) -> dict:
        return batch

    def share(self, batch_size: int) -> float:
        return 1.0

    def broadcast(self, arr: np.ndarray):
        pass

    def agree(self, loss: float, stop: bool) -> tuple:
        return loss, stop

    def reduce_grads(self, model):
        pass

    def reduce_sq(self, v: np.ndarray) -> np.ndarray:
        return v

    def barrier(self):
        pass

    def summary(self) -> Optional[str]:
        return None

    def setup_done(self, err: Optional[BaseException] = None):
        if err is not None:
            raise err

    def abort(self, code: int):
        sys.exit(code)


class MPIWorld(Single):
    """N ranks of an MPI communicator (`MPI`: the mpi4py module, or a stand-in with IN_PLACE
    and SUM for tests that run the ranks as threads of one process)."""

    def __init__(self, comm, MPI=None):
        super().__init__()
        if MPI is None:
            from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.weight = 1.0
        self._buf = np.zeros(2, np.float64)

    def _range(self, B: int) -> tuple:
        return self.rank * B // self.size, (self.rank + 1) * B // self.size

    def share(self, B: int) -> float:
        a, z = self._range(B)
        return (z - a) / B

    def shard(self, batch: dict, model) -> dict:
        """This rank's contiguous slice of the examples; time-major fields are cut on axis 1."""
        fields = {n.attrs["field"]: n.axis is not None for n in model.graph.nodes.values()
                  if n.op == "input" and n.attrs.get("field") in batch}
        B = None
        out = dict(batch)
        for f, timed in fields.items():
            arr = np.asarray(batch[f])
            n = arr.shape[1] if timed else arr.shape[0]
            B = n if B is None else B
            a, z = self._range(n)
            out[f] = arr[:, a:z] if timed else arr[a:z]
            mask = f + "_mask"
            if mask in batch and mask not in fields:
                out[mask] = np.asarray(batch[mask])[:, a:z]
        self.weight = self.share(B or 1)
        return out

    def broadcast(self, arr: np.ndarray):
        self.comm.Bcast(arr, root=0)

    def barrier(self):
        self.comm.Barrier()

    def agree(self, loss: float, stop: bool) -> tuple:
        """(the whole batch's loss, whether any rank was asked to stop)."""
        self._buf[0], self._buf[1] = loss * self.weight, float(bool(stop))
        self.comm.Allreduce(self.MPI.IN_PLACE, self._buf, op=self.MPI.SUM)
        return float(self._buf[0]), self._buf[1] > 0

    def reduce_grads(self, model):
        ex = model.current
        g = ex.G[:model.nlearn]
        if self.weight != 1.0:
            g *= g.dtype.type(self.weight)
        t0 = time.perf_counter()
        self._allreduce(g)
        self.allreduce_s += time.perf_counter() - t0
        self.steps += 1
        if ex.sparse:
            # the rows every rank touched: where the summed gradient is nonzero
            ex.rows = [np.flatnonzero(np.any(ex.view(b.name, grad=True) != 0, axis=1)) for b in ex.sparse]

    def _allreduce(self, g: np.ndarray):
        """In place, SUM. Non-blocking and polled with short sleeps: MPICH's blocking calls spin,
        and a rank that finished first would take the core its peer needs on a machine with no
        core to spare (1 ms of extra latency at most, against a step of tens of ms)."""
        if not hasattr(self.comm, "Iallreduce") or os.environ.get("GRAPHSPEC_MPI_SPIN"):
            self.comm.Allreduce(self.MPI.IN_PLACE, g, op=self.MPI.SUM)
            return
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, g, op=self.MPI.SUM)
        while not req.Test():
            time.sleep(0.0001)

    def reduce_sq(self, v: np.ndarray) -> np.ndarray:
        """Squared per-step gradient norms of this rank's examples, rescaled and summed over ranks:
        ||dL/dh(t)|| of the whole batch."""
        w = np.ascontiguousarray(np.square(v, dtype=np.float64) * self.weight ** 2)
        self.comm.Allreduce(self.MPI.IN_PLACE, w, op=self.MPI.SUM)
        return np.sqrt(w)

    def setup_done(self, err: Optional[BaseException] = None):
        """Every rank says whether it is ready to train (called once by each: on success by
        guarded, on an error before it by the train command). When one failed, all stop here
        instead of waiting for it in a collective: rank 0 raises its error or one naming the
        failed rank (whose message is printed by that rank), the others exit quietly."""
        self.started = True
        failed = self.comm.allgather(err is not None)
        if not any(failed):
            return
        code = getattr(err, "code", 2) if isinstance(getattr(err, "code", None), int) else 2
        if self.root:
            if err is not None:
                raise err
            bad = failed.index(True)
            raise UserError(f"rank {bad} of {self.size} could not start training (its message above)")
        if err is not None and not failed[0]:
            msg = " ".join(str(err).split()) or type(err).__name__
            print(f"graphspec: rank {self.rank} of {self.size}: {msg}", file=sys.stderr, flush=True)
        sys.exit(code)

    def summary(self) -> Optional[str]:
        if not self.steps:
            return None
        return (f"data-parallel over {self.size} ranks: all-reduce {1e3 * self.allreduce_s / self.steps:.2f} ms "
                f"per step (rank 0, {self.steps} steps)")

    def abort(self, code: int):
        sys.stderr.flush()
        self.comm.Abort(code)


_world: list = []
_local = threading.local()       # a world for this thread only (tests run ranks as threads)


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in LAUNCHER_VARS)


def world():
    """The MPI world if an MPI launcher started this process with more than one rank, else Single."""
    if getattr(_local, "world", None) is not None:
        return _local.world
    if not _world:
        w = Single()
        if launched_by_mpi():
            try:
                from mpi4py import MPI
            except ImportError:
                MPI = None
            if MPI is None:
                if int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) or 1) > 1:
                    raise UserError("started by mpiexec with several ranks, but mpi4py is not installed: "
                                    "pip install 'graphspec[mpi]' (each rank would train alone)")
            elif MPI.COMM_WORLD.Get_size() > 1:
                w = MPIWorld(MPI.COMM_WORLD)
        _world.append(w)
    return _world[0]


def guarded(fn, *args, **kw):
    """Run fn on every rank. An error every rank meets at the same step (Ctrl-C, a NaN loss:
    they agree through the loss reduction) is raised on rank 0 and ends the other ranks quietly;
    any other error is one rank's alone, and the others would wait for it in a collective
    forever: its message is printed, naming the rank, and the whole job aborted."""
    from graphspec.errors import Interrupted
    w = world()
    if w.size == 1:
        return fn(*args, **kw)
    w.setup_done(None)
    try:
        return fn(*args, **kw)
    except (Agreed, Interrupted) as e:
        if w.root:
            raise
        sys.exit(e.code)
    except BaseException as e:
        code = e.code if isinstance(e, UserError) else (e.code if isinstance(e, SystemExit) else 70)
        if isinstance(code, int) and code == 0:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        what = "" if isinstance(e, (UserError, OSError)) else f"internal error: {type(e).__name__}: "
        print(f"graphspec: rank {w.rank} of {w.size}: {what}{msg}; ending every rank", file=sys.stderr, flush=True)
        w.abort(code if isinstance(code, int) else 70)


class Agreed(UserError):
    """An error every rank raises at the same step (see guarded): a NaN loss."""


# ---------------------------------------------------------------- launching
def mpiexec() -> Optional[str]:
    """The mpiexec beside this Python (a venv's, from the mpich wheel), else the one on PATH."""
    import shutil
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec")


def launch(argv: list, procs: int, cli_path: str) -> int:
    """`graphspec train ... --procs N`: the same command under `mpiexec -n N`, each rank given
    its share of the cores (GRAPHSPEC_THREADS and the BLAS's threads, unless set already)."""
    import subprocess
    exe = mpiexec()
    if exe is None:
        raise UserError(f"--procs {procs}: mpiexec not found; install the MPI extra (pip install "
                        f"'graphspec[mpi]': mpi4py and the MPICH wheel) or your cluster's MPI")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise UserError(f"--procs {procs}: mpi4py is not installed; pip install 'graphspec[mpi]'") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    each = str(max(1, cores // procs))
    env = dict(os.environ)
    for var in ("GRAPHSPEC_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, each)
    cmd = [exe, "-n", str(procs), sys.executable, cli_path] + argv
    import signal
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the ranks' to handle
    try:
        return subprocess.call(cmd, env=env)
    finally:
        signal.signal(signal.SIGINT, old)


def strip_procs(argv: list) -> list:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            out.append(a)
    return out
