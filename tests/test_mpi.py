"""Data-parallel training (runtime/distributed.py): N ranks with B/N examples each take the same
steps as one process with batch B; only rank 0 writes; a dying rank leaves a checkpoint to
resume from, with another N."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT, run_cli
from runtime import distributed

MPIEXEC = distributed.mpiexec()
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(MPIEXEC is None or not HAVE_MPI4PY,
                               reason="mpiexec or mpi4py absent: pip install -e '.[mpi]' runs these")

SMALL = ["data.length=8", "train.batch=8", "train.steps=20", "train.eval_every=10"]
CASES = {
    # dense Adam over an LSTM
    "lstm": ("specs/lstm.yaml", ["dims.H=8"] + SMALL),
    # plain SGD with clipping: the embedding E's row-sparse gradient and sparse update
    "elman_sgd": ("specs/elman.yaml", ["dims.H=8", "dims.D=4", "train.optimizer=sgd", "train.lr=0.5",
                                       "train.clip=0.5"] + SMALL),
}
SINGLE_THREAD = dict(os.environ, GRAPHSPEC_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def params(out) -> dict:
    with np.load(os.path.join(out, "last.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def losses(out) -> list:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f if '"split"' not in line]


def assert_same_run(a, b, tol=1e-6):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == np.float64
        np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=tol, err_msg=k)
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) == 20
    np.testing.assert_allclose(la, lb, rtol=1e-9)


def train_f64(spec, out, sets, ranks=None):
    cmd = [sys.executable, os.path.join(ROOT, "tests", "mpi_train.py"), spec, str(out), *sets]
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=SINGLE_THREAD)
    assert p.returncode == 0, p.stderr
    return p


@needs_mpi
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_of_half_the_batch_equal_one_process(case, tmp_path):
    spec, sets = CASES[case]
    train_f64(spec, tmp_path / "one", sets)
    p = train_f64(spec, tmp_path / "two", sets, ranks=2)
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # rank 0 alone wrote the log (20 steps and 2 validations, no line twice) and says the cost
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 22
    assert "data-parallel over 2 ranks: all-reduce " in p.stderr and " ms per step (rank 0, 20 steps)" in p.stderr


# ---------------------------------------------------------------- the same code path in one process
class ThreadComm:
    """MPI's collectives for ranks that are threads of one process (sums in rank order)."""

    def __init__(self, size):
        self.size, self.barrier = size, threading.Barrier(size)
        self.slots = [None] * size
        self.rank = threading.local()

    def Get_rank(self):
        return self.rank.r

    def Get_size(self):
        return self.size

    def _exchange(self, value):
        self.slots[self.rank.r] = value
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        return got

    def Allreduce(self, inplace, buf, op):
        buf[...] = sum(x for x in self._exchange(buf.copy()))

    def Bcast(self, buf, root=0):
        buf[...] = self._exchange(buf.copy())[root]

    def allgather(self, x):
        return self._exchange(x)

    def Abort(self, code):
        raise SystemExit(code)


class FakeMPI:
    IN_PLACE, SUM = object(), object()


def run_as_threads(size, fn):
    comm, errors, results = ThreadComm(size), [], [None] * size

    def rank(r):
        comm.rank.r = r
        distributed._local.world = distributed.MPIWorld(comm, FakeMPI)
        try:
            results[r] = fn()
        except BaseException as e:          # noqa: B036 - reported below
            errors.append(e)
            comm.barrier.abort()
        finally:
            distributed._local.world = None

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_the_data_parallel_path_in_one_process(case, tmp_path):
    """Ranks as threads over an in-process communicator: shards, weighted all-reduce, rank 0's
    writes; runs without MPI installed."""
    from runtime.train import run
    spec, sets = CASES[case]
    run(os.path.join(ROOT, spec), str(tmp_path / "one"), progress=False, sets=sets, dtype=np.float64)
    run_as_threads(2, lambda: run(os.path.join(ROOT, spec), str(tmp_path / "two"), progress=False, sets=sets,
                                  dtype=np.float64))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 22


def test_shards_are_contiguous_slices_weighted_by_their_size():
    from runtime.model import Model
    m = Model(os.path.join(ROOT, "specs", "lstm.yaml"))

    def shard():
        w = distributed.world()
        b = {"x": np.arange(5 * 7 * 2).reshape(5, 7, 2), "x_mask": np.ones((5, 7)), "y": np.arange(7)[:, None]}
        s = w.shard(b, m)
        return s["x"][0, :, 0].tolist(), s["y"][:, 0].tolist(), s["x_mask"].shape, w.weight

    got = run_as_threads(3, shard)
    assert got == [([0, 2], [0, 1], (5, 2), 2 / 7), ([4, 6], [2, 3], (5, 2), 2 / 7),
                   ([8, 10, 12], [4, 5, 6], (5, 3), 3 / 7)]


# ---------------------------------------------------------------- the command line
@needs_mpi
def test_a_dying_rank_ends_the_run_with_the_checkpoint_to_resume_from(tmp_path):
    """Rank 0 killed (SIGKILL) just after its 2nd checkpoint: mpiexec ends rank 1, the launcher
    says what happened, and the run continues with one process from that checkpoint."""
    out = tmp_path / "run"
    sets = [f"--set={s}" for s in ["dims.H=8", "data.length=8", "train.batch=8", "train.steps=30",
                                   "train.eval_every=10"]]
    env = dict(SINGLE_THREAD, GRAPHSPEC_CRASH_AT="last.npz:renamed:3")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), "train", "specs/lstm.yaml", "--out", str(out),
                        "--quiet", "--procs", "2", *sets], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=env)
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("graphspec: --procs 2: a rank ended abnormally (mpiexec exit ")
    assert last.endswith(f"); {out}/last.npz holds step 20, intact (continue with --resume)")
    r = run_cli("train", "specs/lstm.yaml", "--out", out, "--quiet", "--resume", *sets)
    assert r.returncode == 0, r.stderr
    with open(out / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f if '"split"' not in line]
    assert steps == list(range(1, 31))


@needs_mpi
def test_word2vec_online_updates_are_refused_under_mpi(tmp_path):
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "cli.py"), "train",
                        "specs/w2v_skipgram_ns.yaml", "--steps", "2", "--out", str(tmp_path / "w")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env=SINGLE_THREAD)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "graphspec: per_example training (word2vec's online updates) does not run data-parallel: its updates "
        "are sequential by definition; train it with one process (without mpiexec/--procs)"]


@needs_mpi
def test_early_stopping_is_refused_under_mpi(tmp_path):
    """Only rank 0 validates, so a decision to stop would leave the other ranks waiting."""
    p = subprocess.run([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "cli.py"), "train",
                        "specs/feedforward.yaml", "--steps", "2", "--patience", "2", "--out", str(tmp_path / "f")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env=SINGLE_THREAD)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "graphspec: early stopping (stop_at_target, patience) does not run data-parallel yet: rank 0 alone "
        "validates; train with one process, or without it"]


def test_procs_without_mpiexec_says_what_to_install(tmp_path, monkeypatch):
    from conftest import main
    monkeypatch.setattr(distributed, "mpiexec", lambda: None)
    code, out, err = main("train", "specs/lstm.yaml", "--procs", "2", "--out", tmp_path / "r")
    assert (code, out) == (2, "")
    assert err == ("graphspec: --procs 2: mpiexec not found; install the MPI extra (pip install 'graphspec[mpi]': "
                   "mpi4py and the MPICH wheel) or your cluster's MPI\n")
