"""Per-example updates (a spec's `train: {per_example: true | word2vec}`): one step after every
example of a batch at rate lr, instead of one step per batch on its mean loss.

`per_example: true` steps along the exact gradient of each example's loss. `per_example: word2vec`
updates as word2vec.c and gensim do (runtime/kernels/word2vec.py says how that differs from the
gradient); it is defined for the two-node word2vec form only.

The general path runs the plan on one example at a time (forward, backward, SGD step: exact,
and slow). The two-node word2vec form -- v = E[w] or the mean of E over a window, then a
negative-sampling or hierarchical-softmax head -- has fused kernels that do the same arithmetic
in one pass over the batch, updating E and W in place (runtime/kernels/word2vec.py); tests check
them against the general path.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from graphspec.errors import UserError

from . import interp
from .kernels import word2vec as w2v
from .model import Model
from .optim import Optimizer


def one_example(model: Model, batch: dict, i: int) -> dict:
    """Example i of a batch as a batch of one (time-major fields are sliced on axis 1)."""
    out = {}
    for n in model.graph.nodes.values():
        f = n.attrs.get("field")
        if n.op == "input" and f in batch:
            arr = np.asarray(batch[f])
            out[f] = arr[:, i:i + 1] if n.axis is not None else arr[i:i + 1]
    return out


class Online:
    """Steps a model through batches one example at a time."""

    def __init__(self, model: Model, opt: Optimizer, rule="exact"):
        if opt.kind != "sgd" or opt.wd:
            raise ValueError("per-example updates are plain SGD's: optimizer sgd without weight decay")
        if rule not in ("exact", "word2vec"):
            raise ValueError(f"unknown per-example rule {rule!r} (exact, word2vec)")
        self.model, self.opt, self.rule = model, opt, rule
        self.forms: dict = {}           # plan id -> its word2vec form (or None), found once
        self.sig = w2v.exp_table(model.dtype)

    def step(self, batch: dict, lr: float, seed: int, fused: bool = True) -> float:
        """The mean over the batch of each example's loss (taken before its own update)."""
        m = self.model
        lengths, B = m.shape_of(batch)
        ex = m.executor(lengths, B, "train")
        if id(ex.plan) not in self.forms:
            self.forms[id(ex.plan)] = _word2vec_form(ex.plan)
        form = self.forms[id(ex.plan)] if fused or self.rule == "word2vec" else None
        if form is None and self.rule == "word2vec":
            raise UserError(f"{m.graph.name}: per_example: word2vec updates the word2vec form only: "
                            f"v = E[ids] or embed_mean(E, ids) of one example's ids, and the loss "
                            f"negsample_head(v, y, V) or hsoftmax_head(v, y, V); use per_example: true")
        if form is None:
            return self._general(batch, B, lr, seed)
        head, E, W, table = form
        ids = np.ascontiguousarray(np.asarray(batch[ex.plan.buffers[head["ids"]].fields["field"]]).reshape(B, -1), np.int64)
        y = np.ascontiguousarray(np.asarray(batch[ex.plan.buffers[head["y"]].fields["field"]]).reshape(B), np.int64)
        losses = np.empty(B, np.float64)
        if self.rule == "word2vec":
            Ev, Wv, tab = ex.view(E), ex.view(W), ex.view(table)
            if head["op"] == "negsample":
                w2v.w2v_negsample(Ev, ids, y, draw_noise(tab, B, int(head["k"]), seed), Wv, lr, self.sig, losses)
            else:
                w2v.w2v_hsoftmax(Ev, ids, y, tab, Wv, lr, self.sig, losses)
            return float(losses.mean())
        interp.seed(int(seed) & 0x7FFFFFFF)
        Ev, Wv, tab = ex.view(E), ex.view(W), ex.view(table)
        if head["op"] == "negsample":
            w2v.sgd_negsample(Ev, ids, head["mean"], y, tab, Wv, float(head["k"]), lr, losses)
        else:
            w2v.sgd_hsoftmax(Ev, ids, head["mean"], y, tab, Wv, lr, losses)
        return float(losses.mean())

    def _general(self, batch: dict, B: int, lr: float, seed: int) -> float:
        m, total = self.model, 0.0
        for i in range(B):
            total += m.forward(one_example(m, batch, i), seed=seed + i)
            m.backward()
            ex = m.current
            self.opt.step(ex.F[:m.nlearn], ex.G[:m.nlearn], lr, ex.grad_support())
        return total / B


def draw_noise(table: np.ndarray, B: int, k: int, seed: int) -> np.ndarray:
    """The k noise words of each of B examples under per_example: word2vec, drawn from the
    unigram table (a pure function of the step's seed, so a test can replay them)."""
    u = np.random.default_rng([int(seed) & 0x7FFFFFFF, 11]).random((B, k))
    return np.ascontiguousarray(table[(u * table.shape[0]).astype(np.int64), 0])


def _word2vec_form(plan) -> Optional[tuple]:
    """(head, E, W, table) when the plan's forward is exactly v = embed|embed_mean(E, ids) and
    loss = negsample|hsoftmax(v, y, table, W), with E and W learnable; else None."""
    eqns = [e for e in plan.eqns if not e.nofwd]
    if len(eqns) != 2 or len(plan.losses) != 1:
        return None
    look, head = eqns
    if look.op not in ("embed", "embed_mean") or head.op not in ("negsample", "hsoftmax"):
        return None
    E, ids = look.ins
    v, y, table, W = head.ins
    bufs = plan.buffers
    if (v.buf != look.out.buf or head.out.buf != plan.losses[0].buf or not bufs[E.buf].learn
            or not bufs[W.buf].learn or bufs[ids.buf].kind != "input" or bufs[y.buf].kind != "input"):
        return None
    # one example per row: inputs without an axis (a sequence of ids is not word2vec's form)
    if any(len(bufs[b].shape) != 2 or bufs[b].shape[0] != plan.batch for b in (ids.buf, y.buf)):
        return None
    info = {"op": head.op, "mean": look.op == "embed_mean", "ids": ids.buf, "y": y.buf, "k": head.attrs.get("k", 0)}
    return info, E.buf, W.buf, table.buf
