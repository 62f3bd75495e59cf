"""Training throughput (tokens/s) of graphspec against PyTorch, same equations and sizes.

Model: embedding (V=E=64) -> cell -> linear -> softmax cross-entropy over all steps; float32,
Adam, global-norm clip 5, 2 threads. Peers: torch.nn.RNN/LSTM/GRU (fused cuDNN-style CPU kernels)
and a torch eager custom cell (the same equations written step by step, what a user with a new
cell writes). Systems are interleaved round by round; tokens/s is the median over rounds of the
median step time after warm-up, and a ratio is the median over rounds of that round's ratio (the
two systems measured side by side, so a slow spell of the shared machine cancels).

    python bench/throughput.py [--rounds 5] [--steps 5] [--quick] [--contended] [--smoke] [--json out.json]

--contended also times graphspec and torch.nn with another process spinning beside them (a core
lost, as on a user's busy machine): tokens/s with and without it, and the share each keeps. Each
system then runs in a process of its own (`Isolated`): in one process a system's step was timed
right after the other's, whose threads still held the cores (graphspec's LSTM step at
B=32/H=128 beside a busy core: 17 ms alone, 61 ms right after a torch step).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))

SIZES = [(1, 64, 32), (32, 64, 128), (64, 64, 512)]     # (B, T, H)
SMOKE_SIZES = [(1, 4, 8)]
CELLS = ["rnn", "lstm", "gru"]
V = E = 64


def batch(B, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))


# ---------------------------------------------------------------- graphspec
class Graphspec:
    name = "graphspec"

    def __init__(self, cell, B, T, H, spec=None):
        from runtime.model import Model
        from runtime.optim import Optimizer
        self.m = Model(spec or os.path.join(ROOT, "bench", "specs", f"{cell}.yaml"), bind={"H": H})
        x, y = batch(B, T)
        self.b = {"x": x, "y": y, "x_mask": np.ones((T, B), np.float32)}
        self.opt = Optimizer({"optimizer": "adam", "lr": 1e-3}, self.m.nlearn)

    def step(self):
        from runtime.optim import clip_factor
        m = self.m
        loss = m.forward(self.b)
        m.backward()
        ex = m.current
        g = ex.G[:m.nlearn]
        _, factor = clip_factor(g, 5.0)            # as runtime/train.py: the clip inside the update
        self.opt.step(ex.F[:m.nlearn], g, 1e-3, scale=factor)
        return loss


# ---------------------------------------------------------------- torch
class TorchBase:
    def __init__(self, cell, B, T, H):
        import torch
        self.torch = torch
        x, y = batch(B, T)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y)
        self.B = B
        self.build(cell, H)
        self.opt = torch.optim.Adam(self.params, lr=1e-3)

    def step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        logits = self.forward()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), self.y.reshape(-1), reduction="sum") / self.B
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return loss.item()


class TorchModule(TorchBase):
    name = "torch nn"

    def build(self, cell, H):
        nn = self.torch.nn
        self.emb = nn.Embedding(V, E)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](E, H)
        self.out = nn.Linear(H, V)
        self.params = [*self.emb.parameters(), *self.rnn.parameters(), *self.out.parameters()]

    def forward(self):
        h, _ = self.rnn(self.emb(self.x))
        return self.out(h)


class TorchEager(TorchBase):
    name = "torch eager cell"

    def build(self, cell, H):
        torch, nn = self.torch, self.torch.nn
        self.cell, self.H = cell, H
        k = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
        self.emb = nn.Embedding(V, E)
        self.W = nn.Parameter(torch.randn(k * H, E) * 0.1)
        self.R = nn.Parameter(torch.randn(k * H, H) * 0.1)
        self.b = nn.Parameter(torch.zeros(k * H))
        self.bR = nn.Parameter(torch.zeros(k * H))
        self.out = nn.Linear(H, V)
        self.params = [*self.emb.parameters(), self.W, self.R, self.b, self.bR, *self.out.parameters()]

    def forward(self):
        torch = self.torch
        xs = self.emb(self.x)
        T, B = self.x.shape
        h = torch.zeros(B, self.H)
        s = torch.zeros(B, self.H)
        outs = []
        for t in range(T):
            a = xs[t] @ self.W.T + self.b
            c = h @ self.R.T + self.bR
            if self.cell == "rnn":
                h = torch.tanh(a + c)
            elif self.cell == "lstm":
                i, f, g, o = (a + c).chunk(4, 1)
                s = torch.sigmoid(f) * s + torch.sigmoid(i) * torch.tanh(g)
                h = torch.tanh(s) * torch.sigmoid(o)
            else:
                ar, az, an = a.chunk(3, 1)
                cr, cz, cn = c.chunk(3, 1)
                r, z = torch.sigmoid(ar + cr), torch.sigmoid(az + cz)
                n = torch.tanh(an + r * cn)
                h = (1 - z) * n + z * h
            outs.append(h)
        return self.out(torch.stack(outs))


def time_steps(sys_, steps):
    """The median of `steps` timed training steps (an Isolated system times them in its process)."""
    if isinstance(sys_, Isolated):
        return sys_.time_steps(steps)
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sys_.step()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _serve(conn, system, args):
    """An Isolated system's process: build it, then run what the parent asks until told to stop."""
    import torch
    torch.set_num_threads(2)
    s = system(*args)
    conn.send(s.name)
    while True:
        steps = conn.recv()
        if steps is None:
            return
        if steps:
            conn.send(time_steps(s, steps))
        else:
            s.step()
            conn.send(None)


class Isolated:
    """A system (Graphspec, TorchModule, ...) built and stepped in a process of its own; while
    the other system is timed it waits on its pipe, its threads asleep."""

    def __init__(self, system, *args):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, system, args), daemon=True)
        self.proc.start()
        self.name = self.conn.recv()

    def step(self):
        self.conn.send(0)
        return self.conn.recv()

    def time_steps(self, steps):
        self.conn.send(steps)
        return self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.proc.join(timeout=30)


@contextlib.contextmanager
def build(systems, cell, B, T, H, isolated=False):
    """The systems for one cell and size, each in a process of its own when `isolated` (what
    --contended measures with)."""
    built = [Isolated(S, cell, B, T, H) if isolated else S(cell, B, T, H) for S in systems]
    try:
        yield built
    finally:
        for s in built:
            if isinstance(s, Isolated):
                s.close()


BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def busy_core():
    """Another process spinning beside the measurement: one core's worth of CPU taken away, as
    on a user's machine running something else (issue 12's `--contended` mode). Not pinned: the
    scheduler places it, as it would a user's other program."""
    p = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    time.sleep(0.2)                     # let it start spinning before the timing does
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def interleave(built, rounds, steps, warmup=2, contended=False):
    """Per-round median step times {name: [seconds per round]} of systems built side by side,
    interleaved round by round (the order reversed every other round, against drift). With
    `contended`, every round also times each system with a busy loop running beside it (the
    quiet and the busy phase alternating which goes first): returns (quiet, busy), busy None
    without it."""
    for s in built:
        for _ in range(warmup):
            s.step()
    quiet = {s.name: [] for s in built}
    busy = {s.name: [] for s in built} if contended else None
    for r in range(rounds):
        order = built if r % 2 == 0 else built[::-1]
        phases = [(quiet, contextlib.nullcontext)] + ([(busy, busy_core)] if contended else [])
        for per, ctx in (phases if r % 2 == 0 else phases[::-1]):
            with ctx():
                for s in order:
                    per[s.name].append(time_steps(s, steps))
    return quiet, busy


def summarise(per, tokens, base="graphspec"):
    """Tokens/s per system (the median over rounds) and the paired ratio of `base` to each peer:
    the median over rounds of that round's peer time / base time (each round's figures were
    taken side by side, so a slow spell of the machine cancels instead of landing on one)."""
    row = {}
    for name, times in per.items():
        sec = statistics.median(times)
        row[name] = {"step_ms": sec * 1e3, "tokens_per_s": tokens / sec,
                     "step_ms_rounds": [round(t * 1e3, 3) for t in times]}
    for name in per:
        if name != base:
            row[f"ratio vs {name}"] = statistics.median(p / g for p, g in zip(per[name], per[base]))
    return row


def contended_summary(quiet, busy, tokens, base="graphspec"):
    """The busy phase's figures, and per system the share of its quiet throughput it keeps with
    a core taken (median over rounds of quiet time / busy time, paired within each round)."""
    out = summarise(busy, tokens, base)
    out["retained"] = {n: statistics.median(q / b for q, b in zip(quiet[n], busy[n])) for n in quiet}
    return out


def measure(cells=CELLS, sizes=SIZES, rounds=7, steps=5, warmup=2, systems=(Graphspec, TorchModule, TorchEager),
            contended=False):
    import torch
    torch.set_num_threads(2)
    rows = []
    for cell in cells:
        for B, T, H in sizes:
            with build(systems, cell, B, T, H, isolated=contended) as built:
                quiet, busy = interleave(built, rounds, steps, warmup, contended)
            row = {"cell": cell, "B": B, "T": T, "H": H, "rounds": rounds, **summarise(quiet, B * T)}
            if contended:
                row["contended"] = contended_summary(quiet, busy, B * T)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def contended_table(rows) -> str:
    """graphspec and each peer with and without a busy core, and the ratio under load."""
    peers = [k[len("ratio vs "):] for k in rows[0] if k.startswith("ratio vs ")]
    head = ("| cell | B | T | H | graphspec tok/s quiet / busy (kept) | "
            + " | ".join(f"{p} tok/s quiet / busy (kept) | ratio quiet / busy" for p in peers) + " |")
    lines = [head, "|" + "---|" * (5 + 2 * len(peers))]
    for r in rows:
        c = r["contended"]

        def fig(n):
            return f"{r[n]['tokens_per_s']:,.0f} / {c[n]['tokens_per_s']:,.0f} ({c['retained'][n]:.2f})"
        cells = [r["cell"], r["B"], r["T"], r["H"], fig("graphspec")]
        for p in peers:
            cells += [fig(p), f"{r['ratio vs ' + p]:.2f} / {c['ratio vs ' + p]:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def table(rows) -> str:
    peers = [k[len("ratio vs "):] for k in rows[0] if k.startswith("ratio vs ")]
    head = "| cell | B | T | H | graphspec tok/s | " + " | ".join(f"{p} tok/s | ratio" for p in peers) + " |"
    lines = [head, "|" + "---|" * (4 + 1 + 2 * len(peers))]
    for r in rows:
        cells = [r["cell"], r["B"], r["T"], r["H"], f"{r['graphspec']['tokens_per_s']:,.0f}"]
        for p in peers:
            cells += [f"{r[p]['tokens_per_s']:,.0f}", f"{r['ratio vs ' + p]:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- encoder-decoder with attention
S2S = {"B": 64, "S": 24, "T": 11, "V_src": 40, "V_tgt": 16, "D": 32, "H": 64, "H2": 128}   # the dates task's sizes


class Seq2SeqGraphspec:
    name = "graphspec"

    def __init__(self):
        from runtime.model import Model
        from runtime.optim import Optimizer
        c = S2S
        self.m = Model(os.path.join(ROOT, "bench", "specs", "seq2seq_attention.yaml"))
        rng = np.random.default_rng(0)
        self.b = {"x": rng.integers(4, c["V_src"], (c["S"], c["B"])), "x_mask": np.ones((c["S"], c["B"])),
                  "y": rng.integers(4, c["V_tgt"], (c["T"], c["B"])), "y_mask": np.ones((c["T"], c["B"]))}
        self.opt = Optimizer({"optimizer": "adam", "lr": 1e-3}, self.m.nlearn)

    step = Graphspec.step


class Seq2SeqTorch:
    name = "torch nn"

    def __init__(self):
        import torch
        nn = torch.nn
        c = S2S
        self.torch = torch
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.integers(4, c["V_src"], (c["S"], c["B"])))
        self.y = torch.from_numpy(rng.integers(4, c["V_tgt"], (c["T"], c["B"])))
        self.prev = torch.cat([torch.full((1, c["B"]), 2, dtype=self.y.dtype), self.y[:-1]])
        self.E_x, self.E_y = nn.Embedding(c["V_src"], c["D"]), nn.Embedding(c["V_tgt"], c["D"])
        self.enc = nn.GRU(c["D"], c["H"], bidirectional=True)
        self.dec = nn.LSTM(c["D"], c["H2"])
        self.W_a = nn.Linear(c["H2"], 2 * c["H"], bias=False)
        self.W_c = nn.Linear(2 * c["H2"], c["H2"], bias=False)
        self.out = nn.Linear(c["H2"], c["V_tgt"])
        mods = (self.E_x, self.E_y, self.enc, self.dec, self.W_a, self.W_c, self.out)
        self.params = [p for m in mods for p in m.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=1e-3)
        self.B = c["B"]

    def step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        enc, _ = self.enc(self.E_x(self.x))                                # [S, B, 2H]
        h0 = enc[-1].unsqueeze(0)
        d, _ = self.dec(self.E_y(self.prev), (h0, torch.zeros_like(h0)))    # [T, B, H2]
        scores = torch.einsum("tbh,sbh->tbs", self.W_a(d), enc)
        ctx = torch.einsum("tbs,sbh->tbh", torch.softmax(scores, -1), enc)
        logits = self.out(torch.tanh(self.W_c(torch.cat([d, ctx], -1))))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.y.reshape(-1),
                                                 reduction="sum") / self.B
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return loss.item()


def measure_seq2seq(rounds=7, steps=5):
    import torch
    torch.set_num_threads(2)
    quiet, _ = interleave([Seq2SeqGraphspec(), Seq2SeqTorch()], rounds, steps)
    row = {"model": "seq2seq attention (dates sizes)", **S2S, **summarise(quiet, S2S["B"] * S2S["T"])}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--quick", action="store_true", help="the two smaller sizes only")
    ap.add_argument("--contended", action="store_true",
                    help="also time graphspec and torch nn with a busy loop spinning beside them (one core lost)")
    ap.add_argument("--smoke", action="store_true", help="one tiny size, one round: checks the script runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    sizes = SMOKE_SIZES if a.smoke else SIZES[:2] if a.quick else SIZES
    if a.smoke:
        a.rounds, a.steps = 1, 1
    # under contention the eager cell is left out: it says nothing the nn modules do not, at 2x the time
    systems = (Graphspec, TorchModule) if a.contended else (Graphspec, TorchModule, TorchEager)
    rows = measure(a.cells.split(","), sizes, a.rounds, a.steps, warmup=1 if a.smoke else 2, systems=systems,
                   contended=a.contended)
    print(contended_table(rows) if a.contended else table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
