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

from .ops import REGISTRY

MAX_ATTRS = 5             # an op's attrs, then the unit range of a loop split by hidden units
UNITS = 3                 # attrs[UNITS], attrs[UNITS + 1]: units [u0, u1) (0, 0: all); Plan.unit_segments
RECORD_HEADER = 5         # need, nofwd, n_out, n_in, n_scratch
ASSIGN = 32               # need's bit ASSIGN + k: input k's gradient is stored, not added
assert all(len(sig.attrs) <= UNITS for sig in REGISTRY.values())


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


@dataclass(frozen=True)
class Fused:
    """The kernel of a `fused` equation: connected elementwise nodes run as one loop over the
    rows and `width` columns of their outputs, a typed equation list in the spirit of a jaxpr.

    ins:  per input operand, how a row reads it: ('v',) a row of values, ('s',) one number per
          row (or a scalar param), read at x[r % rows] (fewer rows repeat);
    eqns: (op, args) in evaluation order: op an elementwise registry op (its `ew` maths), args
          'i3' (input 3 at column j), 'i3@2' (input 3 at column 2 * width + j: one block of a
          wider value, the third gate of z), 'i3@2+5' (at 2 * width + 5 + j), 'e2' (the result
          of equation 2) or a float;
    outs: per output operand, the equation whose result it writes at [r, j].
    saves: (equation, block) pairs, a block as in eqns ('i0@2'): the forward writes equation n's
          result over it once no equation needs it, and the backward reads it there instead of
          computing it again (passes/inplace.py: the gate activations over z).
    The backward recomputes the other equations and applies each op's `ew` derivatives in reverse."""
    ins: tuple
    eqns: tuple
    outs: tuple
    saves: tuple = ()

    def key(self) -> str:
        return repr((self.ins, self.eqns, self.outs) + ((self.saves,) if self.saves else ()))

    @staticmethod
    def block(arg: str) -> tuple:
        """'i3' -> (3, 0, 0); 'i3@2' -> (3, 2, 0); 'i3@2+5' -> (3, 2, 5): input, block, extra column."""
        k, _, at = arg[1:].partition("@")
        b, _, c = at.partition("+")
        return int(k), int(b or 0), int(c or 0)

    def blocks(self) -> list:
        """The (input, block, extra column) of every input read, sorted, each once."""
        return sorted({self.block(x) for _, args in self.eqns for x in args if isinstance(x, str) and x[0] == "i"})

    def storable(self, k: int) -> bool:
        """Can the backward store input k's gradient row (=) instead of adding to it: a row of
        values read in whole blocks (the kernel has both loops for it; Eqn.assign picks one)."""
        return self.ins[k][0] == "v" and all(c == 0 for j, _, c in self.blocks() if j == k)

    def covers(self, k: int, cols: int, width: int) -> bool:
        """Does the backward write every column of input k, `cols` wide, when the outputs are
        `width` wide: storable, and every block of it read."""
        return (self.storable(k) and cols % width == 0
                and [b for j, b, _ in self.blocks() if j == k] == list(range(cols // width)))

    def __str__(self) -> str:
        reads = " ".join(f"i{k}" + (":scalar" if s[0] == "s" else "") for k, s in enumerate(self.ins))
        body = "; ".join(f"e{i} = {op} {' '.join(map(str, args))}" for i, (op, args) in enumerate(self.eqns))
        saves = "; saved " + " ".join(f"e{n}>{blk}" for n, blk in self.saves) if self.saves else ""
        return f"{{ {reads}; {body} -> {', '.join(f'e{o}' for o in self.outs)}{saves} }}"


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
    outs: list = field(default_factory=list)   # every output ([out] unless fused)
    group: Optional[Fused] = None               # the kernel of a `fused` equation
    assign: tuple = ()         # per input: backward stores its gradient (=), the range's first write

    def __post_init__(self):
        if not self.outs:
            self.outs = [self.out]

    def __str__(self) -> str:
        ty = f"{'i' if self.out.dtype == 'i' else 'f'}[{self.out.rows},{self.out.cols}]"
        args = ", ".join(f"{v}" + ("" if n else "°") for v, n in zip(self.ins, self.need or [True] * len(self.ins)))
        attrs = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in self.attrs.items())
        tag = "  (backward only)" if self.nofwd else ""
        outs = ", ".join(str(v) for v in self.outs)
        if self.group is not None:
            return f"{outs}:{ty} = fused {args}  {self.group}"
        return f"{outs}:{ty} = {self.op}{attrs} {args}{tag}"


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
    def encode(self):
        """(records int64, offsets int64 [n], attrs float64 [n, MAX_ATTRS]): equation i's record
        starts at records[offsets[i]]: [need, nofwd, n_out, n_in, n_scratch], then (offset, rows,
        cols) of each output, each input and the scratch buffer. need: bit k set when backward
        accumulates a gradient into input k, bit ASSIGN + k when it stores it instead (Eqn.assign)."""
        n = len(self.eqns)
        offsets = np.zeros(n, np.int64)
        recs = []
        attrs = np.zeros((n, MAX_ATTRS), np.float64)
        for i, e in enumerate(self.eqns):
            offsets[i] = len(recs)
            views = list(e.outs) + list(e.ins) + ([e.scratch] if e.scratch is not None else [])
            need = sum(1 << k for k, x in enumerate(e.need) if x)
            need |= sum(1 << (ASSIGN + k) for k, x in enumerate(e.assign) if x)
            recs += [need, int(e.nofwd), len(e.outs), len(e.ins), int(e.scratch is not None)]
            for v in views:
                recs += [v.offset, v.rows, v.cols]
            if e.op in REGISTRY:
                for k, name in enumerate(REGISTRY[e.op].attrs):
                    attrs[i, k] = float(e.attrs[name])
        return np.array(recs or [0], np.int64), offsets, attrs

    # ------------------------------------------------------------ rows on separate threads
    def _per_row(self, e: Eqn, k: int, v: View) -> bool:
        """Is input k (or an output, k = -1) of e one of the batch's rows per view row?"""
        if v.rows != self.batch or self.buffers[v.buf].kind not in ("value", "input", "scratch"):
            return False
        return k < 0 or e.op == "fused" or not REGISTRY[e.op].args[k].nograd

    def _row_local(self, e: Eqn) -> bool:
        if e.nofwd or e.scratch is not None or not (e.op == "fused" or REGISTRY[e.op].row_local):
            return False
        return all(self._per_row(e, -1, v) for v in e.outs)

    def shared_grads(self, segments: list) -> list:
        """(offset, rows, cols) of the views that equations of `segments` read shared by all rows
        and accumulate a gradient into (a peephole weight, a learned leak rate): each row range
        but the first sums its part into a copy of its own (encode_rows' `shadow`), added to the
        view's gradient when the run's backward ends."""
        out = []
        for i0, i1 in segments:
            for e in self.eqns[i0:i1]:
                for k, (v, n) in enumerate(zip(e.ins, e.need or (False,) * len(e.ins))):
                    if n and not self._per_row(e, k, v) and (v.offset, v.rows, v.cols) not in out:
                        out.append((v.offset, v.rows, v.cols))
        return out

    def row_segments(self, min_len: int = 4) -> list:
        """Runs [i0, i1) of at least min_len consecutive equations that all read and write their
        batch rows independently (a recurrent loop: T steps of affine_packed and a fused cell):
        rows [r0, r1) of every step can run on one thread while other threads run other rows,
        with no synchronisation until the run ends, forward and backward (encode_rows). A view
        shared by all rows that gets a gradient there is summed per range (shared_grads)."""
        if self.batch < 2:
            return []
        runs, start = [], None
        for i, e in enumerate(self.eqns + [None]):
            if e is not None and self._row_local(e):
                start = i if start is None else start
                continue
            if start is not None and i - start >= min_len:
                runs.append((start, i))
            start = None
        return runs

    def encode_rows(self, r0: int, r1: int, segments: list, shadow: Optional[dict] = None):
        """encode()'s records with the equations of `segments` narrowed to batch rows [r0, r1):
        every per-row view (offset, B, cols) becomes (offset + r0 * cols, r1 - r0, cols); a shared
        view in `shadow` ((offset, rows, cols) -> offset of this range's copy) is read from and
        accumulated into its copy; other shared operands and equations are unchanged."""
        shadow = shadow or {}
        records, offsets, _ = self.encode()
        records = records.copy()
        for i0, i1 in segments:
            for i in range(i0, i1):
                e = self.eqns[i]
                at = offsets[i] + RECORD_HEADER
                views = [(-1, v) for v in e.outs] + list(enumerate(e.ins))
                for j, (k, v) in enumerate(views):
                    if self._per_row(e, k, v):
                        records[at + 3 * j] = v.offset + r0 * v.cols
                        records[at + 3 * j + 1] = r1 - r0
                    elif (v.offset, v.rows, v.cols) in shadow:
                        records[at + 3 * j] = shadow[v.offset, v.rows, v.cols]
        return records

    # ------------------------------------------------------------ hidden units on separate threads
    def _unit_width(self, e: Eqn):
        """W if `e` can run units [u0, u1) of W-wide blocks alone (unit_segments), else None;
        ('p', W) for a product, which reads every column of its input."""
        if e.nofwd or e.scratch is not None:
            return None
        if e.op == "fused":
            W = e.outs[0].cols
            if any(v.cols != W for v in e.outs) or any(c for _, _, c in e.group.blocks()):
                return None
            for k, (spec, v) in enumerate(zip(e.group.ins, e.ins)):
                if spec[0] == "s" and e.need and e.need[k]:
                    return None             # a per-row number's gradient sums over every unit
                if spec[0] == "v" and v.cols % W:
                    return None
            return W
        sig = REGISTRY[e.op]
        if not sig.units:
            return None
        names = [a.name for a in sig.args]
        x = e.ins[names.index("x")]
        others = [v for a, v in zip(sig.args, e.ins) if not a.nograd and a.name != "x"]
        ok = e.out.cols % x.cols == 0 and all(v.cols == e.out.cols for v in others)
        return ("p", x.cols) if ok else None

    def unit_segments(self, parts: int = 2, min_len: int = 4) -> list:
        """Runs (i0, i1, W) of at least min_len consecutive equations that `parts` threads can run
        split by hidden units, one barrier before each product: every equation is a fused group
        whose outputs are W wide, or a product over packed weights (OpSig.units) from a W-wide
        input to a multiple of W, with at least one product. Part p runs units [u0, u1) (unit_cuts:
        multiples of 16, the packed weights' panels): columns u0..u1 of every W-wide block of
        each output and of each input's gradient. A fused group reads only those columns of its
        inputs (whole rows or whole blocks, no extra column; a per-row number only if it takes
        no gradient, which would sum over every unit), so what one part reads that another
        wrote is a product's input, or in backward its output's gradient (unit_barriers).
        Results are bit for bit one thread's: each column is computed the same way."""
        runs, start, width = [], None, None
        for i, e in enumerate(self.eqns + [None]):
            w = self._unit_width(e) if e is not None else None
            W = w[1] if isinstance(w, tuple) else w
            if W is not None and start is not None and W == width:
                continue
            if start is not None and i - start >= min_len and width % 16 == 0 and width >= 16 * parts \
                    and any(self.eqns[j].op != "fused" for j in range(start, i)):
                runs.append((start, i, width))
            start, width = (i, W) if W is not None else (None, None)
        return runs

    @staticmethod
    def unit_cuts(W: int, parts: int) -> list:
        """Part p runs units [cuts[p], cuts[p + 1]): near-equal shares in multiples of 16."""
        return [round(p * W / parts / 16) * 16 for p in range(parts)] + [W]

    def unit_attrs(self, segments: list, p: int, parts: int, attrs: Optional[np.ndarray] = None) -> np.ndarray:
        """A copy of encode()'s attrs (or of `attrs`, encode()'s already made) with part p's unit
        range in attrs[UNITS:] of every equation of `segments`."""
        attrs = self.encode()[2] if attrs is None else attrs.copy()
        for i0, i1, W in segments:
            cuts = self.unit_cuts(W, parts)
            attrs[i0:i1, UNITS], attrs[i0:i1, UNITS + 1] = cuts[p], cuts[p + 1]
        return attrs

    def unit_barriers(self, segments: list, step: int) -> np.ndarray:
        """Per equation, 1 where the threads of a unit-split run wait for each other before it, run
        in `step` order (1 forward, -1 backward): before every product but a run's first equation.
        A product reads all its input (the units every part wrote in the step before) and, in
        backward, all its output's gradient (what every part's cells wrote just before)."""
        flags = np.zeros(len(self.eqns), np.int64)
        for i0, i1, _ in segments:
            order = range(i0, i1) if step > 0 else range(i1 - 1, i0 - 1, -1)
            for n, i in enumerate(order):
                flags[i] = n > 0 and self.eqns[i].op != "fused"
        return flags

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
