"""The plan: the contract between graphspec/ (which compiles it) and runtime/ (which runs it).

A plan is a flat, typed, ordered list of equations over two flat arrays, F (floats) and I (int64
token ids). Every value lives at a fixed offset; an operand is a *view*: (offset, rows, cols), a
C-contiguous [rows, cols] block of F or I. The runtime never sees nodes, axes or time steps, only
this list (docs/plan.md). Gradients live in G, an array with F's layout.

Layout of F: learnable params first (one contiguous block the optimizer updates in place), then
fixed params, constants, float inputs (masks, real-valued sequences), values and scratch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .ops import OPCODES, REGISTRY

MAX_INPUTS = 4
MAX_ATTRS = 3
NOFWD = 1 << 8            # flag: the equation only exists for its backward (a deferred weight gradient)
# tape columns: opcode, flags, out(off, rows, cols), 4 x in(off, rows, cols), scratch(off, rows, cols)
TAPE_COLS = 2 + 3 * (2 + MAX_INPUTS)


@dataclass
class Buffer:
    name: str
    kind: str                  # param | const | input | value | scratch
    dtype: str                 # 'f' or 'i'
    shape: tuple               # (slots, rows, cols) for values and inputs; (rows, cols) otherwise
    offset: int = 0
    learn: bool = False
    sparse: bool = False       # a learnable param read only where an op's `rows` says: its gradient
                               # is nonzero only on the rows that the batch's ids pick
    init: object = None        # params: (initializer, args); consts: the value
    pre: int = 0               # slots before t=0 (delayed reads) and after t=T-1 (t+k reads)
    post: int = 0
    node: Optional[str] = None
    fields: dict = field(default_factory=dict)   # inputs: kind, field, axis

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class View:
    dtype: str
    offset: int
    rows: int
    cols: int
    buf: str = ""
    slot: str = ""             # for printing: 't=3', 't=*', ...

    def __str__(self) -> str:
        at = f"[{self.slot}]" if self.slot else ""
        return f"{self.buf}{at}"


@dataclass
class Eqn:
    op: str
    out: View
    ins: list
    attrs: dict = field(default_factory=dict)
    need: tuple = ()           # per input: does backward accumulate a gradient into it
    nofwd: bool = False
    scratch: Optional[View] = None
    node: str = ""             # the step-graph node it computes (for errors and schedules)

    def __str__(self) -> str:
        ty = f"{'i' if self.out.dtype == 'i' else 'f'}[{self.out.rows},{self.out.cols}]"
        args = ", ".join(f"{v}" + ("" if n else "°") for v, n in zip(self.ins, self.need or [True] * len(self.ins)))
        attrs = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in self.attrs.items())
        tag = "  (backward only)" if self.nofwd else ""
        return f"{self.out}:{ty} = {self.op}{attrs} {args}{tag}"


@dataclass
class Plan:
    name: str
    batch: int
    lengths: dict                                   # axis -> T
    buffers: dict = field(default_factory=dict)     # name -> Buffer
    eqns: list = field(default_factory=list)
    fsize: int = 0
    isize: int = 0
    nlearn: int = 0                                 # F[:nlearn] are the learnable params
    value_start: int = 0                            # F[value_start:] is zeroed before each forward
    ivalue_start: int = 0
    losses: list = field(default_factory=list)      # views of the scalar losses
    outputs: dict = field(default_factory=dict)     # name -> (buffer name, mode)
    fills: list = field(default_factory=list)       # (int offset, size, value): pre-slots of tokens
    stats: dict = field(default_factory=dict)       # pass-by-pass counts, for `compile`

    # ------------------------------------------------------------ encoding for the runtime
    def tape(self):
        """(int64 [n, TAPE_COLS], float64 [n, MAX_ATTRS]): the equations, integer-encoded."""
        n = len(self.eqns)
        t = np.zeros((n, TAPE_COLS), np.int64)
        a = np.zeros((n, MAX_ATTRS), np.float64)
        for i, e in enumerate(self.eqns):
            need = sum(1 << k for k, x in enumerate(e.need) if x)
            t[i, 0] = OPCODES[e.op]
            t[i, 1] = need | (NOFWD if e.nofwd else 0)
            t[i, 2:5] = (e.out.offset, e.out.rows, e.out.cols)
            for k, v in enumerate(e.ins):
                t[i, 5 + 3 * k: 8 + 3 * k] = (v.offset, v.rows, v.cols)
            if e.scratch is not None:
                t[i, 17:20] = (e.scratch.offset, e.scratch.rows, e.scratch.cols)
            for k, name in enumerate(REGISTRY[e.op].attrs):
                a[i, k] = float(e.attrs[name])
        return t, a

    def params(self):
        return [b for b in self.buffers.values() if b.kind == "param"]

    def param_count(self, learn_only=True) -> int:
        return sum(b.size for b in self.params() if b.learn or not learn_only)

    def listing(self) -> str:
        """The plan as text, one equation a line, like a jaxpr."""
        lines = [f"plan {self.name}  batch={self.batch}  "
                 + "  ".join(f"{k}={v}" for k, v in self.lengths.items())]
        for b in self.buffers.values():
            if b.kind in ("param", "input", "const"):
                shape = "x".join(map(str, b.shape))
                extra = (" learn" if b.learn else "") + (" sparse" if b.sparse else "")
                lines.append(f"  {b.kind:6} {b.name}: {b.dtype}[{shape}]{extra}")
        lines.append("  {")
        lines += [f"    {e}" for e in self.eqns]
        lines.append("  }")
        lines.append("  loss = " + " + ".join(str(v) for v in self.losses))
        return "\n".join(lines)
