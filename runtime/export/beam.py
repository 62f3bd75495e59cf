"""Beam search over an exported decoder's encoder and one-step models, with ONNX Runtime only:
what a caller serving the model does (docs/export.md), and the test that the step model decodes
as graphspec's own beam search does (runtime/decode.py).

The step model's inputs are its states, named NODE[t-1] (NODE[t-2], ... for longer delays), and
the values every step reads, which the encoder computes from the source under the same names;
its outputs are the step's values (the logits among them) and the next states, NODE[t] feeding
NODE[t-1]. The one int64 state is the previous token: a beam puts its own choice there.
"""
from __future__ import annotations

import re

import numpy as np

from ..decode import _log_softmax, next_beam

EOS = 3


def _feeds_from(outputs: dict) -> dict:
    """Next step's state inputs from a step's outputs: X[t] -> X[t-1], X[t-1] -> X[t-2]."""
    out = {}
    for name, v in outputs.items():
        m = re.fullmatch(r"(.*)\[t(?:-(\d+))?\]", name)
        if m:
            out[f"{m.group(1)}[t-{int(m.group(2) or 0) + 1}]"] = v
    return out


def beam_search(encoder, step, source: dict, logits: str, beam: int = 3, max_len: int = 40, eos: int = EOS):
    """[(token ids, log probability)], best first, for one source (a batch of one: `source`
    holds the encoder's inputs, e.g. {'x': ids [S, 1], 'x_mask': ones [S, 1]}).
    encoder, step: onnxruntime InferenceSessions."""
    enc = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, source)))
    batch_axis = {i.name: [d == "batch" for d in i.shape].index(True) for i in step.get_inputs()}
    states = [n for n in batch_axis if n.endswith("]")]
    token = next(i.name for i in step.get_inputs() if i.name in states and "int64" in i.type)
    fixed = {n: enc[n] for n in batch_axis if n not in states}
    hyps = [([], 0.0, {n: enc[n] for n in states})]
    done = []
    for _ in range(max_len):
        k = len(hyps)
        feeds = {n: np.repeat(v, k, axis=batch_axis[n]) for n, v in fixed.items()}
        for n in states:
            feeds[n] = np.concatenate([h[2][n] for h in hyps], axis=batch_axis[n])
        out = dict(zip([o.name for o in step.get_outputs()], step.run(None, feeds)))
        lp = _log_softmax(out[logits].astype(np.float64))             # [k, V]
        after = _feeds_from(out)
        cands = []
        for j, (seq, score, _) in enumerate(hyps):
            for w in np.argsort(-lp[j])[:beam]:
                row = {n: np.take(after[n], [j], axis=batch_axis[n]) for n in states}
                row[token] = np.full_like(row[token], w)        # the beam's choice, not the argmax
                cands.append((seq + [int(w)], score + float(lp[j, w]), row))
        hyps = next_beam(cands, beam, done, eos)
        if len(done) >= beam or not hyps:
            break
    done += hyps
    done.sort(key=lambda c: -c[1])
    return [(seq, score) for seq, score, _ in done[:beam]]
