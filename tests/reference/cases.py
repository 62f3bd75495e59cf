"""The cases: a spec of specs/ (or a variant of one, edited inline), its dims, its inputs, the
param layout the reference expects and the reference model (models.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import models as M

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Case:
    name: str
    spec: str                         # file under specs/
    dims: dict                        # every dim bound (small, mostly coprime: a transposed layout shows)
    inputs: dict                      # name -> (kind, axis or None, size): tokens (size V), real (F),
                                      # label (classes), window ((V, width): ids, -1 = none)
    params: dict                      # name -> shape, as the reference reads them
    model: Callable                   # models.py: loss(P, example, mode)
    lengths: dict = field(default_factory=dict)   # axis -> padded length T
    modes: tuple = ("train",)
    fixed: tuple = ()                 # params that are not learned
    edits: tuple = ()                 # (old, new) replacements of the spec's text: a variant
    tables: Optional[str] = None      # 'tree' or 'unigram' (word2vec)
    batch: int = 5                    # odd: 2 threads split it 2 + 3 rows (runtime/kernels/rows.py)

    @property
    def path(self) -> str:
        return os.path.join(ROOT, "specs", self.spec)

    def text(self) -> Optional[str]:
        if not self.edits:
            return None
        with open(self.path) as f:
            text = f.read()
        for old, new in self.edits:
            assert text.count(old) == 1, f"{self.name}: '{old}' is not once in {self.spec}"
            text = text.replace(old, new)
        return text


TEACHER = ("train", "eval", "free")
V, D, H = 7, 3, 5
LM_DIMS = {"V": V, "D": D, "H": H}
LM_INPUTS = {"x": ("tokens", "t", V), "y": ("tokens", "t", V)}
TAG_DIMS = {"V_src": 6, "V_tgt": 7, "D": D, "H": 4}
TAG_INPUTS = {"x": ("tokens", "t", 6), "y": ("tokens", "t", 7)}
ADDING = {"x": ("real", "t", 2), "y": ("real", None, 1)}
S2S_DIMS = {"V_src": 7, "V_tgt": 8, "D": D, "H": 3, "H2": 6}
S2S_INPUTS = {"x": ("tokens", "src", 7), "y": ("tokens", "tgt", 8)}
S2S_PARAMS = {"E_x": (7, D), "E_y": (8, D), "W_c": (6, 12), **M.gru_params("enc.fwd.", D, 3),
              **M.gru_params("enc.bwd.", D, 3), **M.lstm_params("dec.", D, 6), **M.out_params("o.", 6, 8)}
W2V_V, W2V_D = 12, 4


def _w2v(arch, head):
    inputs = ({"context": ("tokens", None, W2V_V), "center": ("tokens", None, W2V_V)} if arch == "skipgram"
              else {"context": ("window", None, (W2V_V, 10)), "center": ("tokens", None, W2V_V)})
    rows = W2V_V - 1 if head == "hs" else W2V_V
    return Case(f"w2v_{arch}_{head}", f"w2v_{arch}_{head}.yaml", {"V": W2V_V, "D": W2V_D}, inputs,
                {"E": (W2V_V, W2V_D), "loss.W": (rows, W2V_D)}, M.word2vec(arch, head),
                tables="tree" if head == "hs" else "unigram", batch=6)


def _attention(score, edit):
    params = dict(S2S_PARAMS)
    if score == "additive":
        params.update({"ctx.W_k": (4, 6), "ctx.W_q": (4, 6), "ctx.v": (1, 4)})
    elif score == "general":
        params["ctx.W_a"] = (6, 6)
    name = "seq2seq_attention" + ("" if score == "general" else f"_{score}")
    edits = (("score='general'", edit),) if edit else ()
    return Case(name, "seq2seq_attention.yaml", S2S_DIMS, S2S_INPUTS, params, M.seq2seq_attention(score),
                {"src": 6, "tgt": 5}, TEACHER, edits=edits)


CASES = [
    Case("elman", "elman.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), "U": (H, D), "W": (H, H), "b": (H,), "V_o": (V, H), "c": (V,)}, M.elman, {"t": 6}),
    Case("output_recurrence", "output_recurrence.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), "E_y": (V, D), "U": (H, D), "W": (H, D), "b": (H,), "V_o": (V, H), "c": (V,)},
         M.output_recurrence, {"t": 6}, TEACHER),
    Case("seq_to_one", "seq_to_one.yaml", {"V": 5, "D": D, "H": 4},
         {"x": ("tokens", "t", 5), "y": ("label", None, 2)},
         {"E": (5, D), "V_o": (2, 4), "c": (2,), **M.rnn_params("h.", D, 4)}, M.seq_to_one, {"t": 6}),
    Case("birnn", "birnn.yaml", TAG_DIMS, TAG_INPUTS,
         {"E": (6, D), **M.rnn_params("h.fwd.", D, 4), **M.rnn_params("h.bwd.", D, 4), **M.out_params("o.", 8, 7)},
         M.tagger(M.rnn_cell, "concat"), {"t": 6}),
    Case("deep_rnn_a", "deep_rnn_a.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), **M.rnn_params("h.l1.", D, H), **M.rnn_params("h.l2.", H, H), **M.out_params("o.", H, V)},
         M.deep_rnn_a, {"t": 6}),
    Case("deep_rnn_b", "deep_rnn_b.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), "U": (H, D), "b_u": (H,), "Z": (H, H), "b_z": (H,), "h.U": (H, H), "h.W_m": (H, H),
          "h.b_m": (H,), "h.W": (H, H), "h.b": (H,), **M.out_params("o.", H, V)}, M.deep_rnn_bc(False), {"t": 6}),
    Case("deep_rnn_c", "deep_rnn_c.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), "U": (H, D), "b_u": (H,), "Z": (H, H), "b_z": (H,), "h.U": (H, H), "h.W_m": (H, H),
          "h.b_m": (H,), "h.W": (H, H), "h.S": (H, H), "h.b": (H,), **M.out_params("o.", H, V)},
         M.deep_rnn_bc(True), {"t": 6}),
    Case("skip_connections", "skip_connections.yaml", {"H": H}, ADDING,
         {"U": (H, 2), "W": (H, H), "W_s": (H, H), "b": (H,), "V_o": (1, H), "c": (1,)},
         M.skip_connections, {"t": 7}),
    Case("leaky_units", "leaky_units.yaml", {"H": H}, ADDING,
         {"s": (H,), "V_o": (1, H), "c": (1,), **M.rnn_params("mu.", 2, H)}, M.leaky_units(None), {"t": 6}),
    Case("leaky_units_fixed", "leaky_units.yaml", {"H": H}, ADDING,         # alpha = sigmoid(s), s not learned
         {"s": (H,), "V_o": (1, H), "c": (1,), **M.rnn_params("mu.", 2, H)}, M.leaky_units(None), {"t": 6},
         fixed=("s",), edits=(("learn: true", "learn: false"),)),
    Case("leaky_units_number", "leaky_units.yaml", {"H": H}, ADDING,        # leaky(x, 0.7, H): one fixed alpha
         {"V_o": (1, H), "c": (1,), **M.rnn_params("mu.", 2, H)}, M.leaky_units(0.7), {"t": 6},
         edits=(("  s: {shape: [H], init: constant(2.0), learn: true}", ""), ("  alpha: sigmoid(s)\n", ""),
                ("leaky(x, alpha, H)", "leaky(x, 0.7, H)"))),
    Case("lstm", "lstm.yaml", {"H": H}, ADDING,
         {"V_o": (1, H), "c": (1,), **M.lstm_params("h.", 2, H)}, M.lstm, {"t": 6}),
    Case("gru", "gru.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), **M.gru_params("h.", D, H), **M.out_params("o.", H, V)}, M.gru_lm(M.gru_cell), {"t": 6}),
    Case("gru_after", "gru.yaml", LM_DIMS, LM_INPUTS,
         {"E": (V, D), **M.gru_after_params("h.", D, H), **M.out_params("o.", H, V)}, M.gru_lm(M.gru_after_cell),
         {"t": 6}, edits=(("reset='before'", "reset='after'"),)),
    Case("bilstm_concat", "bilstm_concat.yaml", TAG_DIMS, TAG_INPUTS,
         {"E": (6, D), **M.lstm_params("h.fwd.", D, 4), **M.lstm_params("h.bwd.", D, 4), **M.out_params("o.", 8, 7)},
         M.tagger(M.lstm_cell, "concat"), {"t": 6}),
    Case("bilstm_sum", "bilstm_sum.yaml", TAG_DIMS, TAG_INPUTS,
         {"E": (6, D), **M.lstm_params("h.fwd.", D, 4), **M.lstm_params("h.bwd.", D, 4), **M.out_params("o.", 4, 7)},
         M.tagger(M.lstm_cell, "sum"), {"t": 6}),
    Case("seq2seq", "seq2seq.yaml", LM_DIMS, {"x": ("tokens", "src", V), "y": ("tokens", "tgt", V)},
         {"E_x": (V, D), "E_y": (V, D), **M.lstm_params("enc.", D, H), **M.lstm_params("dec.", D, H),
          **M.out_params("o.", H, V)}, M.seq2seq, {"src": 6, "tgt": 5}, TEACHER),
    _attention("general", None),
    _attention("dot", "score='dot'"),
    _attention("additive", "A=4, score='additive'"),
    Case("feedforward", "feedforward.yaml", {"N": 6, "H": H}, {"x": ("real", None, 6), "y": ("label", None, 2)},
         {"W1": (H, 6), "b1": (H,), "W2": (H, H), "b2": (H,), "W3": (H, H), "b3": (H,), "a3": (H,),
          "W4": (H, H), "b4": (H,), "W5": (2, H), "b5": (2,)}, M.feedforward, batch=5),
    _w2v("skipgram", "hs"), _w2v("skipgram", "ns"), _w2v("cbow", "hs"), _w2v("cbow", "ns"),
]
BY_NAME = {c.name: c for c in CASES}
