"""Whole-model gradient checks in float64: analytic gradients (the backward over the plan)
against central finite differences along a random direction, per parameter."""
from __future__ import annotations

import numpy as np

import graphspec

from .model import Model


def tiny_bind(g) -> dict:
    """Shrink every dim (about 16x, at least 2) so a whole model checks in a second; sizes
    that are multiples of each other stay so (H2 = 2H)."""
    out = {}
    for k, v in g.dims.items():
        out[k] = 7 if isinstance(v, str) else max(2, v // 16) if v > 8 else v
    return out


def random_batch(model: Model, lengths: dict, B: int, rng: np.random.Generator) -> dict:
    """Random inputs for every input of the graph; sequences of random lengths (padding included)."""
    g = model.graph
    lens = {a: rng.integers(max(1, T // 2), T + 1, size=B) for a, T in lengths.items()}
    for a in lens:
        lens[a][0] = lengths[a]           # at least one full-length sequence
    batch = {}
    for n in g.nodes.values():
        if n.op != "input":
            continue
        kind, field = n.attrs.get("kind"), n.attrs.get("field")
        if kind == "table":
            continue
        if kind == "mask":
            T = lengths[n.axis]
            batch[field] = (np.arange(T)[:, None] < lens[n.axis][None, :]).astype(np.float64)
            continue
        shape = (lengths[n.axis], B) if n.axis else (B,)
        if kind in ("tokens", "label"):
            vocab = n.attrs.get("vocab")
            V = g.dims.get(vocab, vocab) if isinstance(vocab, str) else vocab
            V = int(V) if isinstance(V, (int, np.integer)) else 7
            width = n.attrs.get("width")
            if width:
                arr = rng.integers(0, V, size=shape + (width,))
                arr[..., width // 2:] = np.where(rng.random(arr[..., width // 2:].shape) < 0.3, -1,
                                                 arr[..., width // 2:])
            else:
                arr = rng.integers(0, V, size=shape)
            batch[field] = arr.astype(np.int64)
        else:
            size = n.ty.feat
            batch[field] = rng.normal(0, 1, size=shape + (size,))
    return batch


def random_tables(g, rng) -> dict:
    if not any(n.op == "input" and n.attrs.get("kind") == "table" for n in g.nodes.values()):
        return {}
    from .data import huffman_tree, unigram_table
    V = next((v for k, v in g.dims.items() if k == "V"), 7)
    counts = rng.integers(1, 50, size=V)
    return {"tree": huffman_tree(counts), "unigram": unigram_table(counts, size=200)}


def check(spec: str, lengths_list=(3, 5), B: int = 4, seed: int = 0, eps: float = 1e-5) -> dict:
    """{param: max relative error over the lengths checked}. B = 4 rows: two threads split a
    recurrent loop 2 + 2 (runtime/kernels/rows.py), so the check covers that path too."""
    g = graphspec.load(spec)
    bind = tiny_bind(g)
    gb = graphspec.load(spec, bind=bind)
    rng = np.random.default_rng(seed)
    tables = random_tables(gb, rng)
    model = Model(spec, bind=bind, dtype=np.float64, seed=seed, tables=tables)
    # nudge params off zero-initialised values so every path carries a gradient
    model.params[:] += rng.normal(0, 0.3, model.params.shape)
    worst: dict = {}
    for T in lengths_list:
        lengths = {a: T + i for i, a in enumerate(g.axes)}
        batch = random_batch(model, lengths, B, rng)
        s = int(rng.integers(1 << 30))
        model.forward(batch, seed=s)
        model.backward()
        grads = model.grads()
        for b in model.param_buffers:
            if not b.learn:
                continue
            d = rng.normal(0, 1, b.shape)
            p = model.param(b.name)
            base = p.copy()
            p[...] = base + eps * d
            up = model.forward(batch, seed=s)
            p[...] = base - eps * d
            down = model.forward(batch, seed=s)
            p[...] = base
            num = (up - down) / (2 * eps)
            ana = float((grads[b.name] * d).sum())
            err = abs(num - ana) / max(abs(num), abs(ana), 1e-8)
            worst[b.name] = max(worst.get(b.name, 0.0), err)
    return worst
