"""The Python API: load a spec, compile it for given lengths and batch size, run it.

    m = Model("specs/elman.yaml", bind={"V": 60})
    loss = m.forward(batch)           # batch: a dict of time-major arrays (runtime/data.py)
    m.backward()
    grads = m.grads()                 # {param name: array}
    m.set_params({"W": ...}); m.save("p.npz"); m.load("p.npz")

One set of params is shared by every compiled shape (lengths, batch size) and mode ('train':
teacher forcing and dropout; 'eval': teacher forcing, no dropout; 'free': decoders read their
own predictions). Params occupy the same prefix of F in every plan, so switching shape copies
that prefix and nothing else.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import graphspec
from graphspec.compile import compile_graph

from .cpu import PACK_ROWS
from .executor import Executor, threads
from .initializers import initialize


class Model:
    def __init__(self, spec: str, bind: Optional[dict] = None, text: Optional[str] = None,
                 dtype=np.float32, seed: int = 0, tables: Optional[dict] = None, fuse: bool = True):
        self.spec, self.text, self.bind = spec, text, dict(bind or {})
        self.fuse = fuse
        self.dtype = np.dtype(dtype)
        self.graphs = {"train": graphspec.load(spec, text, mode="train", bind=self.bind)}
        self.graph = self.graphs["train"]
        # shape_of's (field, axis) of every input a batch fills
        self._fields = [(n.attrs.get("field"), n.axis) for n in self.graph.nodes.values()
                        if n.op == "input" and n.attrs.get("kind") != "table"]
        self.tables = dict(tables or {})
        self._plans: dict = {}
        self._execs: dict = {}
        self.current: Optional[Executor] = None
        probe = self.plan(self._default_lengths(), 1)
        self.param_buffers = probe.params()
        self.param_end = max((b.offset + b.size for b in self.param_buffers), default=0)
        self.nlearn = probe.nlearn
        self.params = np.zeros(self.param_end, self.dtype)
        self.init_params(seed)

    # ------------------------------------------------------------ compiling
    def _default_lengths(self) -> dict:
        return {a: 4 for a in self.graph.axes}

    def _graph(self, mode: str):
        gm = "free" if mode == "free" else "train"
        if gm not in self.graphs:
            self.graphs[gm] = graphspec.load(self.spec, self.text, mode=gm, bind=self.bind)
        return self.graphs[gm]

    def plan(self, lengths: dict, batch: int, mode: str = "train"):
        # PACK_ROWS bounds one thread's rows; a loop split by rows gives each thread batch/threads
        key = (tuple(sorted(lengths.items())), batch, mode)
        if key not in self._plans:
            shapes = {k: v.shape for k, v in self.tables.items()}
            self._plans[key] = compile_graph(self._graph(mode), lengths, batch, training=mode == "train",
                                             tables=shapes, dtype_bytes=self.dtype.itemsize, fuse=self.fuse,
                                             pack_rows=PACK_ROWS and PACK_ROWS * threads())
        return self._plans[key]

    def executor(self, lengths: dict, batch: int, mode: str = "train") -> Executor:
        key = (tuple(sorted(lengths.items())), batch, mode)
        ex = self._execs.get(key)
        if ex is None:
            ex = Executor(self.plan(lengths, batch, mode), self.dtype)
            for name, table in self.tables.items():
                if f"table.{name}" in ex.plan.buffers:
                    ex.set_table(name, table)
            self._execs[key] = ex
        if ex is not self.current:
            self._sync_out()
            ex.F[:self.param_end] = self.params
            self.params = ex.F[:self.param_end]       # the live params are now this executor's
            self.current = ex
        return ex

    def _sync_out(self):
        if self.current is not None:
            self.params = self.current.F[:self.param_end].copy()

    def shape_of(self, batch: dict) -> tuple:
        """(lengths, batch size) of a batch: each axis's length from an input on it."""
        lengths, B = {}, None
        for field, axis in self._fields:
            if field not in batch:
                continue
            arr = np.asarray(batch[field])
            if axis is not None:
                lengths[axis] = arr.shape[0]
                B = arr.shape[1]
            elif B is None:
                B = arr.shape[0]
        for a in self.graph.axes:
            if a not in lengths:
                raise KeyError(f"the batch gives no input on axis '{a}'")
        return lengths, B

    # ------------------------------------------------------------ running
    def forward(self, batch: dict, mode: str = "train", seed: int = 0) -> float:
        lengths, B = self.shape_of(batch)
        ex = self.executor(lengths, B, mode)
        ex.set_batch(batch)
        return ex.forward(seed)

    def backward(self):
        self.current.backward()

    def grads(self) -> dict:
        return {b.name: self.current.view(b.name, grad=True).copy() for b in self.param_buffers if b.learn}

    def value(self, node: str) -> np.ndarray:
        """A node's buffer after forward: [slots, rows, cols] for axis values (the slots before
        t=0 and after t=T-1 included, see Buffer.pre/post)."""
        return self.current.view(node).copy()

    def output(self, name: str) -> np.ndarray:
        """An output of the spec, time-major [T, B, cols] for a value per step (or `all(h)`),
        [B, cols] for a static one and for `first(h)` / `last(h)`."""
        node, mode = self.current.plan.outputs[name]
        b = self.current.plan.buffers[node]
        v = self.current.view(node)
        if len(b.shape) == 3:
            v = v[b.pre:b.shape[0] - b.post]
            if mode == "first":
                v = v[0]
            elif mode == "lastslot":        # last(h) on an axis without padding: the last slot
                v = v[-1]
        return v.copy()

    # ------------------------------------------------------------ params
    def init_params(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        for b in self.param_buffers:
            self.params[b.offset:b.offset + b.size] = initialize(b.init, b.shape, rng).ravel()

    def param(self, name: str) -> np.ndarray:
        b = next(b for b in self.param_buffers if b.name == name)
        return self.params[b.offset:b.offset + b.size].reshape(b.shape)

    def get_params(self) -> dict:
        return {b.name: self.param(b.name).copy() for b in self.param_buffers}

    def set_params(self, values: dict):
        known = {b.name: b for b in self.param_buffers}
        for name, v in values.items():
            if name not in known:
                raise KeyError(f"no param '{name}' (params: {', '.join(known)})")
            v = np.asarray(v)
            if v.reshape(-1).size != known[name].size:
                raise ValueError(f"param '{name}' has shape {known[name].shape}, got {v.shape}")
            self.param(name)[...] = v.reshape(known[name].shape)

    def save(self, path: str):
        """Params as .npz, written atomically and durably (temp file, fsync, rename, fsync of the
        directory; runtime/rundir.py)."""
        from .rundir import save_npz
        save_npz(path, self.get_params())

    def load(self, path: str):
        with np.load(path, allow_pickle=False) as z:
            self.set_params({k: z[k] for k in z.files})
