"""Run one case through graphspec's Model and through its reference; compare loss and gradients.

The examples are drawn first (each sequence at its own length); the padded, time-major batch is
built from them with random junk in the padding (real ids and values, so a padded step that
leaked into the result would show). The params are random (every one, including those that
start at zero) and rounded to float32, so float32 and float64 runs see the same numbers.

err(a, ref) = max|a - ref| / max(max|ref|, ATOL_SCALE): relative to the tensor's largest entry,
absolute below ATOL_SCALE (a gradient that is zero in the reference must be zero here too)."""
from __future__ import annotations

import numpy as np

from runtime.data import huffman_tree, unigram_table
from runtime.model import Model

from .autograd import Var
from .cases import Case

ATOL_SCALE = 1e-8
SEED = 7                       # the forward's seed (negative samples)
_models: dict = {}


def mask_fields(case: Case) -> dict:
    """axis -> the batch field of its mask: the first input on the axis names it (`x_mask`)."""
    out = {}
    for name, (_, axis, _) in case.inputs.items():
        if axis and axis not in out:
            out[axis] = f"{name}_mask"
    return out


def draw_examples(case: Case, rng) -> list:
    B = case.batch
    lens = {}
    for axis, T in case.lengths.items():
        n = [T, max(1, T - 2)] + [int(rng.integers(1, T // 2 + 1)) for _ in range(B - 2)]
        lens[axis] = n[:B]
    examples = []
    for b in range(B):
        ex = {}
        for name, (kind, axis, size) in case.inputs.items():
            n = lens[axis][b] if axis else None
            if kind == "tokens":
                ex[name] = rng.integers(0, size, size=n) if axis else int(rng.integers(0, size))
            elif kind == "label":
                ex[name] = int(rng.integers(0, size))
            elif kind == "real":
                ex[name] = rng.normal(size=(n, size) if axis else (size,))
            elif kind == "window":
                V, width = size
                ids = rng.integers(0, V, size=width)
                ids[1:][rng.random(width - 1) < 0.4] = -1          # the first id always stays
                ex[name] = ids
        examples.append(ex)
    return examples


def pad(case: Case, examples: list, rng) -> dict:
    """graphspec's batch: time-major [T, B] ids / [T, B, F] values with junk past each length,
    a float mask [T, B] per axis; per-example fields [B] / [B, F]."""
    B, batch = len(examples), {}
    for name, (kind, axis, size) in case.inputs.items():
        col = [ex[name] for ex in examples]
        if not axis:
            batch[name] = np.array(col, np.int64 if kind != "real" else np.float64)
            continue
        T = case.lengths[axis]
        if kind == "tokens":
            arr = rng.integers(0, size, size=(T, B))
        else:
            arr = rng.normal(size=(T, B, size))
        for b, seq in enumerate(col):
            arr[:len(seq), b] = seq
        batch[name] = arr
    for axis, field in mask_fields(case).items():
        first = next(n for n, (_, a, _) in case.inputs.items() if a == axis)
        lens = [len(ex[first]) for ex in examples]
        batch[field] = (np.arange(case.lengths[axis])[:, None] < np.array(lens)[None, :]).astype(np.float64)
    return batch


def tables(case: Case) -> dict:
    if not case.tables:
        return {}
    counts = np.random.default_rng(3).integers(1, 60, size=case.dims["V"])
    return {"tree": huffman_tree(counts)} if case.tables == "tree" else {"unigram": unigram_table(counts, size=200)}


def model(case: Case, dtype, fuse: bool = True) -> Model:
    key = (case.name, np.dtype(dtype).name, fuse)
    if key not in _models:
        _models[key] = Model(case.path, bind=case.dims, text=case.text(), dtype=dtype, seed=0,
                             tables=tables(case), fuse=fuse)
    return _models[key]


def check_layout(case: Case, m: Model):
    """graphspec's params are exactly the reference's: names, shapes (vectors stored [1, n])
    and which are learned."""
    got = {b.name: (tuple(b.shape), b.learn) for b in m.param_buffers}
    want = {k: ((1,) + s if len(s) == 1 else s, k not in case.fixed) for k, s in case.params.items()}
    assert got == want, f"{case.name}: graphspec's params {got} are not the reference's {want}"


def random_params(case: Case, rng) -> dict:
    """Every param random, float32-exact; vectors in graphspec's [1, n] storage."""
    out = {}
    for k, s in case.params.items():
        shape = (1,) + s if len(s) == 1 else s
        out[k] = rng.normal(0, 0.6, size=shape).astype(np.float32).astype(np.float64)
    return out


def run_graphspec(case: Case, params: dict, batch: dict, dtype, fuse: bool, mode: str):
    m = model(case, dtype, fuse)
    check_layout(case, m)
    m.set_params(params)
    loss = m.forward(batch, mode=mode, seed=SEED)
    m.backward()
    grads = {k: v.astype(np.float64) for k, v in m.grads().items()}
    return loss, grads, observed(m)


def observed(m: Model) -> dict:
    """What the reference must be told rather than compute: the noise words negative sampling
    drew in this forward (its scratch buffer, [B, k])."""
    ex = m.current
    for e in ex.plan.eqns:
        if e.op == "negsample":
            s = e.scratch
            return {"noise": ex.I[s.offset:s.offset + s.rows * s.cols].reshape(s.rows, s.cols).copy()}
    return {}


def run_reference(case: Case, params: dict, examples: list, mode: str, seen: dict, tabs: dict):
    """Mean over examples of the reference's per-example loss; gradients in graphspec's shapes."""
    P = {k: Var(v.reshape(case.params[k])) for k, v in params.items()}
    total = 0.0
    for b, ex in enumerate(examples):
        ex = dict(ex, tree=tabs.get("tree"), noise=seen["noise"][b] if "noise" in seen else None)
        total = total + case.model(P, ex, mode)
    loss = total * (1.0 / len(examples))
    loss.backward()
    grads = {k: (P[k].grad if P[k].grad is not None else np.zeros(P[k].shape)).reshape(params[k].shape)
             for k in params if k not in case.fixed}
    return float(loss.value), grads


def err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), ATOL_SCALE))


def compare(case: Case, dtype=np.float64, fuse: bool = True, mode: str = "train", seed: int = 0) -> dict:
    """{'loss': err, param: err, ...} of graphspec against the reference on one padded batch."""
    rng = np.random.default_rng(seed)
    examples = draw_examples(case, rng)
    batch = pad(case, examples, rng)
    params = random_params(case, rng)
    loss, grads, seen = run_graphspec(case, params, batch, dtype, fuse, mode)
    ref_loss, ref_grads = run_reference(case, params, examples, mode, seen, tables(case))
    assert set(grads) == set(ref_grads), (sorted(grads), sorted(ref_grads))
    out = {"loss": err(loss, ref_loss)}
    out.update({k: err(grads[k], ref_grads[k]) for k in sorted(ref_grads)})
    return out
