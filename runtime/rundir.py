"""A run directory: one training's files, written so that a kill at any moment loses nothing.

    metrics.jsonl   one JSON object a line, appended (train steps and validations)
    gradnorm.npy    ||dL/dh(t)|| per logged step, rewritten whole (small)
    best.npz        the checkpoint with the lowest validation loss so far
    best-stepS.npz  with train.keep_best: K, the checkpoints of the K lowest validation losses
    last.npz        the latest checkpoint: the commit record of the whole directory
    attention.npz   one example's attention weights, written at the end
    run.json        what reproduces the run: graphspec's version, Python's, the packages' and the
                    platform's, the GEMM path, the git commit (and whether the tree had changes)
                    of graphspec's source and of the spec's directory, where either is a checkout
    run.lock        held (flock) by the training that owns the directory

The commit protocol: before last.npz says step S, everything the logs hold up to S is on disk
(metrics.jsonl flushed and fsynced, gradnorm.npy and best.npz renamed into place and the
directory fsynced). A kill leaves at most rows past S, which `--resume` cuts off before it
replays those steps; so a resumed run ends byte-identical to an uninterrupted one. Every file
but metrics.jsonl is replaced atomically: written to a temp file, fsynced, renamed, and the
directory fsynced (a rename is durable only once its directory is).

GRAPHSPEC_CRASH_AT=POINT[:N] kills the process (SIGKILL) the Nth time it reaches POINT: the tests
use it to kill mid-write. Points: `metrics.jsonl:torn` (half a line written), and for each file
F above `F:written` (temp file complete, not yet renamed) and `F:renamed` (renamed, directory not
yet fsynced). Unset, it costs one comparison per write.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import zipfile
from typing import Callable, Optional

import numpy as np

from graphspec.errors import UserError
from graphspec.limits import BadFile, check_regular

RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "gradnorm.npy", "attention.npz")
LOCK = "run.lock"
RECORD = "run.json"
TMP = ".tmp-"


# ---------------------------------------------------------------- test hook: kill at a write point
def _crash_spec():
    spec = os.environ.get("GRAPHSPEC_CRASH_AT")
    if not spec:
        return None
    name, _, n = spec.rpartition(":") if spec.rsplit(":", 1)[-1].isdigit() else (spec, "", "1")
    return [name, int(n)]


_CRASH = _crash_spec()


def crash_point(name: str, before: Optional[Callable] = None):
    """SIGKILL here if GRAPHSPEC_CRASH_AT names this point (after `before()`, which tears a write)."""
    if _CRASH is None or _CRASH[0] != name:
        return
    _CRASH[1] -= 1
    if _CRASH[1] == 0:
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- atomic files
def fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, write: Callable):
    """write(f) into a temp file beside path, fsync it, rename it over path, fsync the directory.
    A failure (a full disk) leaves the old file untouched and no temp file behind."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f"{TMP}{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        crash_point(os.path.basename(path) + ":written")
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):       # name the file the user knows
            raise OSError(e.errno, e.strerror, path) from None
        raise
    crash_point(os.path.basename(path) + ":renamed")
    fsync_dir(d)


def write_npz(f, arrays: dict):
    """np.savez's format (np.load reads it) without its timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            with z.open(info, "w", force_zip64=True) as g:
                np.lib.format.write_array(g, np.asanyarray(a), allow_pickle=False)


def save_npz(path: str, arrays: dict):
    write_atomic(path, lambda f: write_npz(f, arrays))


def save_npy(path: str, array: np.ndarray):
    write_atomic(path, lambda f: np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False))


# ---------------------------------------------------------------- the directory and its lock
def _in_use(out: str, f) -> UserError:
    f.seek(0)
    pid = f.read().strip()[:20]
    return UserError(f"{out} is in use by another training (pid {pid or '?'}); wait for it to finish or "
                     f"train into another --out")


def _check_unlocked(out: str):
    """Refuse a directory another training holds, without taking its lock."""
    path = os.path.join(out, LOCK)
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        raise UserError(f"{path}: not a regular file; a run directory holds only files graphspec wrote")
    try:
        import fcntl
        f = open(path)
    except (ImportError, OSError):
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out, f) from None
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lock(out: str):
    """An exclusive flock on OUT/run.lock, held while the returned file is open (the kernel drops
    it when the process dies, however it dies: no stale locks)."""
    try:
        import fcntl
    except ImportError:              # no flock on this platform: run unlocked
        return contextlib.nullcontext()
    f = open(os.path.join(out, LOCK), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        err = _in_use(out, f)
        f.close()
        raise err from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def kept_checkpoints(out: str) -> list:
    """best-stepS.npz: the checkpoints `keep_best` keeps, in step order."""
    import re
    names = [n for n in os.listdir(out) if re.fullmatch(r"best-step[0-9]+\.npz", n)] if os.path.isdir(out) else []
    return sorted(names, key=lambda n: int(n[9:-4]))


def earlier_files(out: str) -> list:
    return [n for n in RUN_FILES + (RECORD,) if os.path.lexists(os.path.join(out, n))] + kept_checkpoints(out)


def check_run_dir(out: str, resume: bool, overwrite: bool, locked: bool = False) -> list:
    """What open_run_dir will refuse, checked without touching anything (so a bad --out is named
    before any work starts; `locked`: we hold its lock). Returns the earlier run's files found."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out}: exists and is not a directory")
    if os.path.isdir(out) and not locked:
        _check_unlocked(out)
    found = earlier_files(out) if os.path.isdir(out) else []
    for name in found:
        if not os.path.isfile(os.path.join(out, name)) or os.path.islink(os.path.join(out, name)):
            raise UserError(f"{os.path.join(out, name)}: not a regular file; a run directory holds only files "
                            f"graphspec wrote")
    if resume:
        if "last.npz" not in found:
            raise UserError(f"--resume: {os.path.join(out, 'last.npz')} does not exist; run without --resume to start")
    elif found and not overwrite:
        raise UserError(f"{out} holds an earlier run ({', '.join(found)}); continue it with --resume, "
                        f"train into another --out, or pass --overwrite to start again")
    return found


def open_run_dir(out: str, resume: bool, overwrite: bool):
    """Create and lock OUT for a training. A fresh run refuses a directory that holds an earlier
    run's files unless --overwrite (which removes them, last.npz first); --resume needs last.npz.
    Leftover temp files of a killed run are removed. Returns the lock: `with open_run_dir(...):`."""
    check_run_dir(out, resume, overwrite)
    try:
        os.makedirs(out, exist_ok=True)
        lock = _lock(out)
    except OSError as e:
        raise UserError(f"--out {out}: cannot use it as a run directory: {e.strerror}") from None
    for name in os.listdir(out):
        if name.startswith(TMP):
            os.unlink(os.path.join(out, name))
    found = check_run_dir(out, resume, overwrite, locked=True)    # again, now that no one else can change it
    if found and not resume:
        for name in found:                 # last.npz first: a kill midway leaves no resumable half
            os.unlink(os.path.join(out, name))
        fsync_dir(out)
    return lock


# ---------------------------------------------------------------- metrics.jsonl: append only
def _bad_line(path: str, lineno: int, why: str):
    return UserError(f"{path}:{lineno}: {why}; the log is damaged (move the file away to resume without it)")


def cut_metrics(path: str, step: int):
    """Cut the log back to the rows of steps <= step (those the checkpoint holds): the first row
    past it, or a torn last line, and everything after go. One truncate, no rewrite."""
    if not os.path.exists(path):
        return
    keep = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break                          # a torn last line: a write a kill interrupted
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                raise _bad_line(path, lineno, "not a JSON line") from None
            if not isinstance(rec, dict) or isinstance(rec.get("step"), bool) or not isinstance(rec.get("step"), int):
                raise _bad_line(path, lineno, "not a record with an integer step")
            if rec["step"] > step:
                break
            keep += len(line)
    if keep < os.path.getsize(path):
        os.truncate(path, keep)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())


class MetricsLog:
    """metrics.jsonl, opened for appending. sync() makes every row so far durable (before a
    checkpoint commits them)."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "a")

    def append(self, rec: dict):
        line = json.dumps(rec) + "\n"
        crash_point("metrics.jsonl:torn", lambda: (self.f.write(line[:len(line) // 2]), self.f.flush()))
        with self._named():
            self.f.write(line)

    def sync(self):
        with self._named():
            self.f.flush()
            os.fsync(self.f.fileno())

    @contextlib.contextmanager
    def _named(self):
        try:
            yield
        except OSError as e:        # a write error names no file: name this one
            raise OSError(e.errno, e.strerror, self.path) from None

    def close(self, flush: bool = True):
        """flush=False: after a failed write (a full disk), drop what the buffer still holds."""
        if self.f.closed:
            return
        try:
            self.f.close()
        except OSError:
            if flush:
                raise


# ---------------------------------------------------------------- gradnorm.npy
MAX_GRADNORM_CELLS = 1 << 24          # 128 MiB of float64: far more than any run logs


def npy_header(f) -> tuple:
    """(shape, dtype) of the .npy stream f, read from its header alone (the data is not touched)."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"an .npy version {version} header")
    shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)(f)
    return shape, dtype


def regular(path: str, max_bytes: int, what: str):
    """UserError unless path is a regular file of at most max_bytes (a FIFO would block a read)."""
    try:
        check_regular(path, max_bytes, what)
    except BadFile as e:
        raise UserError(f"{path}: {e}") from None


def read_gradnorm(path: str) -> Optional[np.ndarray]:
    """gradnorm.npy as float64 [rows, 1 + T] (the step, then ||dL/dh(t)||), checked before it is
    read: a 2-D float array of bounded size, never an object array; None if there is none."""
    if not os.path.lexists(path):
        return None
    regular(path, 8 * MAX_GRADNORM_CELLS + 4096, "gradient-norm log")
    try:
        with open(path, "rb") as f:
            shape, dtype = npy_header(f)
            if dtype.kind != "f" or len(shape) != 2 or shape[1] < 2:
                raise ValueError(f"an array of {dtype} and shape {shape}, not float rows of a step and its norms")
            if shape[0] * shape[1] > MAX_GRADNORM_CELLS:
                raise ValueError(f"{shape[0] * shape[1]:,} values, more than {MAX_GRADNORM_CELLS:,}")
            f.seek(0)
            arr = np.lib.format.read_array(f, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{path}: not a gradient-norm log ({' '.join(str(e).split())}); move it away") from None
    return np.asarray(arr, np.float64)


# ---------------------------------------------------------------- run.json: what reproduces a run
PACKAGES = ("numpy", "numba", "llvmlite", "scipy", "PyYAML", "jsonschema", "networkx", "tqdm")
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_version() -> str:
    """graphspec's version: this checkout's pyproject.toml, else the installed package's."""
    import re
    try:
        with open(os.path.join(SOURCE, "pyproject.toml"), encoding="utf-8") as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    from importlib import metadata
    try:
        return metadata.version("graphspec")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_state(path: str) -> Optional[dict]:
    """{commit, dirty} of the git checkout holding path; None outside one (or without git)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment(spec: str) -> dict:
    """What a run depends on besides its spec, data and seed (none of it varies between a run
    and its resumption on the same machine: no time, host name or command line)."""
    import platform
    from importlib import metadata
    from .cpu import GEMM_PATH
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    env = {"graphspec": package_version(), "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "gemm": GEMM_PATH, "packages": packages,
           "git": {"graphspec": git_state(SOURCE)}}
    spec_dir = os.path.dirname(os.path.abspath(spec))
    spec_git = git_state(spec_dir)
    if spec_git is not None and spec_git != env["git"]["graphspec"]:
        env["git"]["spec"] = spec_git
    return env


def record_environment(out: str, env: dict):
    """run.json: the environment the run started in; a resumption in another one is appended
    (`resumed_in`), so the record says every environment the run's steps were computed in."""
    path = os.path.join(out, RECORD)
    rec = {"environment": env}
    if os.path.exists(path):
        regular(path, 1 << 20, "run record")
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
            if not isinstance(rec, dict) or "environment" not in rec:
                raise ValueError("no environment")
        except ValueError as e:
            raise UserError(f"{path}: not a run record ({e}); move it away") from None
        if env == rec["environment"] or env in rec.get("resumed_in", []):
            return
        rec.setdefault("resumed_in", []).append(env)
    data = (json.dumps(rec, indent=1, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(path, lambda f: f.write(data))
