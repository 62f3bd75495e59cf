"""Bounds on what a user's input may make us read, allocate or loop over, checked before the work.

Every number here is a limit a hostile or careless input meets first: a file too large (or not a
file: a FIFO, a device, /dev/zero), a plan too long to compile, a picture too large to draw. Each
check is cheap and runs before the expensive step it guards, so a refusal costs well under a
second and a few megabytes.
"""
from __future__ import annotations

import math
import numbers
import os
import stat
from typing import Optional

from .errors import Loc, SpecError, UserError
from .ops import REGISTRY

MAX_SPEC_BYTES = 1 << 20        # a spec or block file is a page of text; a megabyte is a mistake
MAX_DATA_BYTES = 32 << 20       # --data files: the text and its token ids stay well within 1 GiB
# Plan entries before hoisting (one per node and step) in the step graph as written: a plan's
# compile time and size grow with them (~40 us and ~4 KiB each). 300k is an LSTM over ~20k
# steps or an Elman RNN over ~60k, compiled in a few seconds.
MAX_PLAN_ENTRIES = 300_000
MAX_UNROLL = 200                # steps a picture unrolls; a drawing of more is unreadable
MAX_PICTURE_NODES = 1000        # boxes and arrows a picture draws (time grows with them:
MAX_PICTURE_EDGES = 3000        # 1400 nodes and 2600 edges take ~10 s with matplotlib)


class BadFile(Exception):
    """A path that may not be read: str() says why, without the path (callers add it)."""


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> Optional[str]:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"{kind}, not a regular file"


def check_regular(path: str, max_bytes: int, what: str = "file") -> int:
    """The size of a regular file of at most max_bytes; BadFile otherwise (stat only: a FIFO is
    never opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BadFile("no such file") from None
    except OSError as e:
        raise BadFile(f"cannot read it: {e.strerror}") from None
    why = _not_regular(st.st_mode)
    if why:
        raise BadFile(why)
    if st.st_size > max_bytes:
        raise BadFile(f"the {what} is {st.st_size} bytes, larger than {max_bytes}")
    return st.st_size


def read_bytes(path: str, max_bytes: int, what: str = "file") -> bytes:
    """The contents of a regular file of at most max_bytes; BadFile otherwise. Never blocks on a
    FIFO (it is refused before it is opened, and opened non-blocking in case it was swapped in)
    and never reads more than max_bytes + 1 bytes, whatever the file claims its size is."""
    check_regular(path, max_bytes, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise BadFile(f"cannot read it: {e.strerror}") from None
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why:
            raise BadFile(why)
        chunks, n = [], 0
        while n <= max_bytes:
            b = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
    except OSError as e:
        raise BadFile(f"cannot read it: {e.strerror}") from None
    finally:
        os.close(fd)
    if n > max_bytes:
        raise BadFile(f"the {what} is larger than {max_bytes} bytes")
    return b"".join(chunks)


# ---------------------------------------------------------------- plans
def resolved_lengths(g, lengths: dict) -> dict:
    """Each axis's length as the compiler will use it: given, else the spec's train.len, else 10."""
    default = (g.train.get("len") or {}) if isinstance(g.train.get("len"), dict) else {}
    return {a: lengths.get(a, default.get(a, 10)) for a in g.axes}


def plan_entries(g, T: dict) -> int:
    """One entry per node and step of the step graph as written (an upper bound of the plan's
    entries before hoisting: dead nodes and fused blocks make the real count smaller)."""
    return sum(T[n.axis] if n.axis is not None else 1 for n in g.nodes.values() if not n.is_leaf)


def _feat(n) -> int:
    f = n.ty.feat if n.ty is not None else 1
    return f if isinstance(f, int) else 1


def memory_floor(g, T: dict, batch: int, dtype_bytes: int = 4) -> int:
    """Bytes the plan needs at least, values and gradients: the params and each loss's prediction
    (logits or outputs: one row per example and step). The compiler counts every buffer later;
    this floor is enough to refuse an absurd batch or length before any pass runs."""
    total = 0
    for n in g.nodes.values():
        if n.op == "param":
            total += math.prod(x if isinstance(x, int) else 1 for x in n.attrs.get("shape") or [1])
    for name in g.losses:
        loss = g.nodes.get(name)
        if loss is None or not (loss.op in REGISTRY and REGISTRY[loss.op].loss) or not loss.args:
            continue
        pred = g.nodes.get(loss.args[0].node)
        if pred is not None:
            total += (T[pred.axis] if pred.axis is not None else 1) * batch * _feat(pred)
    return total * dtype_bytes * 2


def _where(g, section: str) -> Loc:
    src = getattr(g, "source", None)
    return src.where((section,)) if src is not None else Loc("<spec>", 1, 1)


def check_plan_size(g, lengths: dict, batch: int, dtype_bytes: int = 4):
    """Refuse a plan too long to compile or too large to hold, before the compiler's passes.
    Lengths and batch must be positive integers (ValueError: the callers check what users give)."""
    from .compile import MAX_BYTES
    for what, v in [(f"length of axis '{a}'", t) for a, t in lengths.items()] + [("batch", batch)]:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    T = {a: int(t) for a, t in resolved_lengths(g, lengths).items()}
    batch = int(batch)
    shown = ", ".join(f"{k}={v}" for k, v in T.items())
    entries = plan_entries(g, T)
    if entries > MAX_PLAN_ENTRIES:
        raise SpecError.at(_where(g, "nodes"), f"lengths {shown} make a plan of about {entries:,} entries (one per "
                                               f"node and step), more than the {MAX_PLAN_ENTRIES:,} a plan may "
                                               f"have: use shorter sequences")
    need = memory_floor(g, T, batch, dtype_bytes)
    if need > MAX_BYTES:
        sizes = ", ".join(f"{k}={v}" for k, v in g.dims.items())
        lengths = f" and lengths {shown}" if shown else ""
        raise SpecError.at(_where(g, "dims"), f"these dims ({sizes}) with batch {batch}{lengths} need at "
                                              f"least {need / 2**30:.1f} GiB for values and gradients; the limit "
                                              f"is {MAX_BYTES / 2**30:.0f} GiB: use smaller dims, a smaller batch "
                                              f"or a shorter length")


# ---------------------------------------------------------------- pictures
def check_unroll(n: int):
    if n > MAX_UNROLL:
        raise UserError(f"--unroll {n}: a picture unrolls at most {MAX_UNROLL} steps")


def check_picture(nodes: int, edges: int, hint: str):
    if nodes > MAX_PICTURE_NODES or edges > MAX_PICTURE_EDGES:
        raise UserError(f"the picture would have {nodes:,} nodes and {edges:,} edges, more than the "
                         f"{MAX_PICTURE_NODES:,} nodes and {MAX_PICTURE_EDGES:,} edges one picture draws: {hint}")
