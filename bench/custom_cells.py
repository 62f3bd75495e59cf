"""Custom cells (issue 11): cells that are not in the block library, written as equations in a
spec, against the same equations in eager PyTorch and under torch.compile, with the stdlib LSTM
block as the reference point.

    python bench/custom_cells.py [--cells mgu,mi_rnn] [--quick] [--no-compile] [--smoke] [--json out.json]

Every model is the harness of bench/specs/lstm.yaml: embedding (V=E=64) -> cell -> linear ->
softmax cross-entropy over all T=64 steps; a training step is forward + backward + global-norm
clip 5 + Adam, float32, 2 threads (bench/throughput.py's systems and its interleaved, paired
rounds). The specs are in bench/specs/custom/:

- lstm_inline: the LSTM's equations written in the spec (graphspec/blocks/lstm.yaml's, inline);
- lstm_user_block: a user's copy of lstm.yaml under another name (my_lstm.yaml), used as a block;
- peephole_lstm: Gers & Schmidhuber's peepholes: i, f read s(t-1), o reads s(t), per-unit weights;
- gru_before_inline: the reset-before GRU (Cho et al.) inline;
- mi_rnn: multiplicative integration (Wu et al. 2016),
  h = tanh(alpha * (W x) * (U h(t-1)) + beta1 * (U h(t-1)) + beta2 * (W x) + b);
- mgu: the minimal gated unit (Zhou et al. 2016), f = sigmoid(W_f x + U_f h(t-1) + b_f),
  n = tanh(W x + U (f * h(t-1)) + b), h = (1 - f) h(t-1) + f n.

The torch side runs the same equations (TORCH_CELLS below) from the graphspec model's initial
weights: the input projections of all steps in one GEMM before the loop (what a careful user
writes), then a Python loop over t. tests/test_custom_cells.py checks, in float64 with copied
weights, that each spec's loss and gradients equal these equations'; for the peephole LSTM,
MI-RNN and MGU that is the only reference there is.

torch.compile compiles the whole forward (the loop unrolled over T by dynamo; inductor generates
C++ through gcc): each first step (compile) is timed and reported, outside the measurement.
Inductor's caches go to a fresh temporary folder per run (unless TORCHINDUCTOR_CACHE_DIR is set),
so the time is a first compile's; within a run, a graph compiled before (the inline and the
user-block LSTM are the same graph) is a cache hit, as it would be for a user.

Plan entries per step: how many plan entries one more time step adds, (n(T) - n(T/2)) / (T/2)
from the compiled plans; the rest of the plan (hoisted GEMMs, the output layer, the loss) does
not grow with T.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    # torch.compile's compile time as a user's first compile sees it: inductor's on-disk caches
    # (in /tmp, kept across runs) would otherwise make a second run's "compile" a cache read
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphspec-bench-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)

from bench import throughput  # noqa: E402  (after the path and cache set-up)
from bench.throughput import V, batch  # noqa: E402

SPECS = os.path.join(ROOT, "bench", "specs", "custom")
SIZES = [(1, 64, 32), (32, 64, 128)]           # (B, T, H): the two points
SMOKE_SIZES = throughput.SMOKE_SIZES


# ---------------------------------------------------------------- the equations in torch
# Each cell: the params of its recurrence (the spec's names, without the instance prefix), the
# input projections of all steps at once (pre: p, xs [T, B, E] -> tensors [T, B, *]), and one
# step (p, the projections at t, state) -> state; state[0] is h, the cell's output.
# Matrices are [out, in], vectors [1, H], as graphspec stores them.

def _lstm_pre(p, xs):
    return (xs @ p["W"].T + p["b"],)


def _lstm_gates(p, a, h):
    z = a + h @ p["R"].T
    return z.chunk(4, -1)


def _lstm_step(p, a, state):
    torch = _torch()
    h, s = state
    i, f, g, o = _lstm_gates(p, a[0], h)
    s = torch.sigmoid(f) * s + torch.sigmoid(i) * torch.tanh(g)
    return torch.tanh(s) * torch.sigmoid(o), s


def _peephole_step(p, a, state):
    torch = _torch()
    h, s_prev = state
    i, f, g, o = _lstm_gates(p, a[0], h)
    s = (torch.sigmoid(f + p["p_f"] * s_prev) * s_prev
         + torch.sigmoid(i + p["p_i"] * s_prev) * torch.tanh(g))
    return torch.tanh(s) * torch.sigmoid(o + p["p_o"] * s), s


def _gru_pre(p, xs):
    return (xs @ p["W"].T + p["b"],)


def _gru_step(p, a, state):
    torch = _torch()
    h, = state
    a_r, a_u, a_n = a[0].chunk(3, -1)
    c_r, c_u = (h @ p["R"].T).chunk(2, -1)
    r, u = torch.sigmoid(a_r + c_r), torch.sigmoid(a_u + c_u)
    n = torch.tanh(a_n + (r * h) @ p["R_n"].T)
    return ((1 - u) * n + u * h,)


def _mi_pre(p, xs):
    return (xs @ p["W"].T,)


def _mi_step(p, a, state):
    torch = _torch()
    h, = state
    wx, uh = a[0], h @ p["U"].T
    return (torch.tanh(p["alpha"] * wx * uh + p["beta1"] * uh + p["beta2"] * wx + p["b"]),)


def _mgu_pre(p, xs):
    return (xs @ p["W_f"].T + p["b_f"], xs @ p["W"].T + p["b"])


def _mgu_step(p, a, state):
    torch = _torch()
    h, = state
    f = torch.sigmoid(a[0] + h @ p["U_f"].T)
    n = torch.tanh(a[1] + (f * h) @ p["U"].T)
    return ((1 - f) * h + f * n,)


# name: (spec file in bench/specs/custom, prefix of the cell's params, pre, step, number of states)
TORCH_CELLS = {
    "lstm_inline": ("lstm_inline.yaml", "", _lstm_pre, _lstm_step, 2),
    "lstm_user_block": ("lstm_user_block.yaml", "h.", _lstm_pre, _lstm_step, 2),
    "peephole_lstm": ("peephole_lstm.yaml", "", _lstm_pre, _peephole_step, 2),
    "gru_before_inline": ("gru_before_inline.yaml", "", _gru_pre, _gru_step, 1),
    "mi_rnn": ("mi_rnn.yaml", "", _mi_pre, _mi_step, 1),
    "mgu": ("mgu.yaml", "", _mgu_pre, _mgu_step, 1),
}
CELLS = list(TORCH_CELLS)


def _torch():
    import torch
    return torch


def spec_path(cell: str) -> str:
    return os.path.join(SPECS, TORCH_CELLS[cell][0])


def torch_logits(cell: str, p: dict, x):
    """The model's logits [T, B, V] from the params p (graphspec's names -> tensors) and tokens
    x [T, B]: embedding, the cell's loop over t from a zero state, the output layer."""
    torch = _torch()
    _, prefix, pre, step, nstate = TORCH_CELLS[cell]
    cp = {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}
    xs = p["emb"][x]
    proj = pre(cp, xs)
    H = cp["R" if "R" in cp else "U"].shape[1]
    state = tuple(xs.new_zeros(x.shape[1], H) for _ in range(nstate))
    hs = []
    for t in range(x.shape[0]):
        state = step(cp, tuple(a[t] for a in proj), state)
        hs.append(state[0])
    return torch.stack(hs) @ p["logits.V_o"].T + p["logits.c"]


def torch_loss(logits, y, B):
    """graphspec's cross_entropy over all steps: summed over steps and rows, divided by B."""
    torch = _torch()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum") / B


# ---------------------------------------------------------------- the systems
class GraphspecCell(throughput.Graphspec):
    """graphspec training the custom cell's spec."""
    name = "graphspec"

    def __init__(self, cell, B, T, H):
        super().__init__(cell, B, T, H, spec=spec_path(cell))


class StdlibLSTM(throughput.Graphspec):
    """The reference point: bench/specs/lstm.yaml, the stdlib lstm block, at the same sizes."""
    name = "stdlib lstm"

    def __init__(self, cell, B, T, H):
        super().__init__("lstm", B, T, H)


class TorchCell(throughput.TorchBase):
    """The same equations in eager PyTorch, from the graphspec model's initial weights."""
    name = "torch eager"
    compiled = False

    def build(self, cell, H):
        from runtime.model import Model
        torch = self.torch
        init = Model(spec_path(cell), bind={"H": H}).get_params()
        self.p = {k: torch.nn.Parameter(torch.from_numpy(v)) for k, v in init.items()}
        self.params = list(self.p.values())
        self.cell = cell
        self._logits = torch_logits
        if self.compiled:
            # the loop is unrolled over T into one graph; every cell and size is its own graph
            torch._dynamo.config.cache_size_limit = 64
            self._logits = torch.compile(torch_logits, dynamic=False)

    def forward(self):
        return self._logits(self.cell, self.p, self.x)


class TorchCompiled(TorchCell):
    name = "torch.compile"
    compiled = True

    def __init__(self, cell, B, T, H):
        super().__init__(cell, B, T, H)
        t0 = time.perf_counter()
        self.step()                             # compiles forward and backward: not timed with the rest
        self.compile_s = time.perf_counter() - t0


def plan_entries_per_step(spec: str, B: int, T: int, H: int) -> dict:
    """Plan entries in all and per time step: (n(T) - n(T/2)) / (T - T/2), what one more step adds."""
    from runtime.model import Model
    m = Model(spec, bind={"H": H})
    n = len(m.plan({"t": T}, B).eqns)
    half = max(1, T // 2)
    n_half = len(m.plan({"t": half}, B).eqns)
    return {"plan_entries": n, "per_step": (n - n_half) / (T - half)}


def measure(cells=CELLS, sizes=SIZES, rounds=7, steps=5, warmup=2, compile_cells=None):
    """One row per cell and size. compile_cells: the cells to run under torch.compile too
    (default all); a compile that fails is recorded with its error instead of a figure."""
    import torch
    torch.set_num_threads(2)
    compile_cells = cells if compile_cells is None else compile_cells
    rows = []
    for cell in cells:
        for B, T, H in sizes:
            row = {"cell": cell, "B": B, "T": T, "H": H, "rounds": rounds}
            try:
                built = [GraphspecCell(cell, B, T, H)]
            except Exception as err:            # a finding for the compiler, not a crash of the bench
                row["graphspec error"] = f"{type(err).__name__}: {err}"
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                continue
            built += [StdlibLSTM(cell, B, T, H), TorchCell(cell, B, T, H)]
            if cell in compile_cells:
                try:
                    tc = TorchCompiled(cell, B, T, H)
                    built.append(tc)
                    row["torch.compile seconds"] = tc.compile_s
                except Exception as err:
                    row["torch.compile error"] = f"{type(err).__name__}: {str(err)[:2000]}"
            quiet, _ = throughput.interleave(built, rounds, steps, warmup)
            row.update(throughput.summarise(quiet, B * T))
            row["plan"] = plan_entries_per_step(spec_path(cell), B, T, H)
            row["stdlib lstm plan"] = plan_entries_per_step(os.path.join(ROOT, "bench", "specs", "lstm.yaml"), B, T, H)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


TARGETS = ("targets (issue 11): ratio vs stdlib lstm >= 0.90 (the inline LSTM >= 0.95); vs torch eager "
           ">= 5 at B=1, >= 1.5 at B=32/H=128; vs torch.compile >= 1; plan entries per step <= 3 for a gated cell")


def table(rows) -> str:
    def peer(r, name):
        if name not in r:
            return ["failed" if f"{name} error" in r else "not run", "-"]
        return [f"{r[name]['tokens_per_s']:,.0f}", f"{r['ratio vs ' + name]:.2f}"]
    lines = ["| cell | B | H | graphspec tok/s | stdlib lstm tok/s | ratio | torch eager tok/s | ratio | "
             "torch.compile tok/s | ratio | plan entries / step (stdlib lstm) |",
             "|" + "---|" * 11]
    for r in rows:
        if "graphspec error" in r:
            lines.append(f"| {r['cell']} | {r['B']} | {r['H']} | failed: {r['graphspec error'][:200]} |"
                         + " |" * 7)
            continue
        cells = [r["cell"], r["B"], r["H"], f"{r['graphspec']['tokens_per_s']:,.0f}",
                 *peer(r, "stdlib lstm"), *peer(r, "torch eager"), *peer(r, "torch.compile"),
                 f"{r['plan']['per_step']:g} ({r['stdlib lstm plan']['per_step']:g})"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    notes = [f"- torch.compile failed for {r['cell']} B={r['B']} H={r['H']}: `{r['torch.compile error'][:300]}`"
             for r in rows if "torch.compile error" in r]
    secs = [r["torch.compile seconds"] for r in rows if "torch.compile seconds" in r]
    if secs:
        span = f"{min(secs):.0f}" if round(min(secs)) == round(max(secs)) else f"{min(secs):.0f}-{max(secs):.0f}"
        notes.append(f"- torch.compile's first step (compiling forward and backward, not in the figures): "
                     f"{span} s per cell and size")
    return "\n".join([TARGETS, "", *lines, *([""] + notes if notes else [])])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--quick", action="store_true", help="B=1/H=32 only, 3 rounds")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    ap.add_argument("--smoke", action="store_true",
                    help="one tiny size, one round, torch.compile for the first cell only: checks the script runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    cells = a.cells.split(",")
    unknown = [c for c in cells if c not in TORCH_CELLS]
    if unknown:
        ap.error(f"unknown cell(s) {', '.join(unknown)}; the cells are {', '.join(CELLS)}")
    sizes = SMOKE_SIZES if a.smoke else SIZES[:1] if a.quick else SIZES
    if a.smoke:
        a.rounds, a.steps = 1, 1
    elif a.quick:
        a.rounds = 3
    compile_cells = [] if a.no_compile else cells[:1] if a.smoke else cells
    rows = measure(cells, sizes, a.rounds, a.steps, warmup=1 if a.smoke else 2, compile_cells=compile_cells)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
