"""Size sweep (issue 17): training throughput of rnn/lstm/gru against torch.nn.RNN/LSTM/GRU over
B in {1, 4, 16, 64} x H in {32, 128, 512} (T=64), and against the eager torch cell at a subset
(EAGER_AT: the four corners and the centre); a table and a heatmap of the ratio.

    python bench/sweep.py [--quick] [--contended] [--cells lstm] [--png bench/sweep.png] [--smoke] [--json out.json]

The model, the training step and the measurement are bench/throughput.py's: embedding (V=E=64)
-> cell -> linear -> cross-entropy, forward + backward + clip + Adam, float32, 2 threads,
systems interleaved round by round, a ratio the median of per-round paired ratios.
--contended also times graphspec and torch.nn with a busy loop beside them (bench/throughput.py
busy_core) and draws the ratio under load as a second row of the picture.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))

from bench import throughput  # noqa: E402  (after the path and cache set-up)

T = 64
BS, HS = [1, 4, 16, 64], [32, 128, 512]
EAGER_AT = {(1, 32), (1, 512), (16, 128), (64, 32), (64, 512)}      # (B, H): the corners and the centre
QUICK = ([1, 16], [32, 128], {(1, 32), (16, 128)})
SMOKE = ([1, 2], [8], {(1, 8)}, 4)                                  # Bs, Hs, eager points, T
PNG = os.path.join(ROOT, "bench", "sweep.png")


def measure(cells=throughput.CELLS, Bs=BS, Hs=HS, T=T, rounds=5, steps=5, warmup=2, eager_at=EAGER_AT,
            contended=False):
    import torch
    torch.set_num_threads(2)
    rows = []
    for cell in cells:
        for B in Bs:
            for H in Hs:
                systems = [throughput.Graphspec, throughput.TorchModule]
                if (B, H) in eager_at and not contended:
                    systems.append(throughput.TorchEager)
                with throughput.build(systems, cell, B, T, H, isolated=contended) as built:
                    quiet, busy = throughput.interleave(built, rounds, steps, warmup, contended)
                row = {"cell": cell, "B": B, "T": T, "H": H, "rounds": rounds, **throughput.summarise(quiet, B * T)}
                if contended:
                    row["contended"] = throughput.contended_summary(quiet, busy, B * T)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _k(v: float) -> str:
    return f"{v / 1e3:,.1f}k" if v >= 1e3 else f"{v:,.0f}"


def worst(rows, cell, get=lambda r: r["ratio vs torch nn"]):
    return min((r for r in rows if r["cell"] == cell), key=get)


def table(rows) -> str:
    """One line per cell and B, one column per H: ratio vs nn.* (graphspec / torch tokens/s), the
    eager-cell ratio where it was measured; under it the worst point of each cell."""
    Hs = sorted({r["H"] for r in rows})
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    lines = ["| cell | B | " + " | ".join(f"H={h}" for h in Hs) + " |", "|" + "---|" * (2 + len(Hs))]
    at = {(r["cell"], r["B"], r["H"]): r for r in rows}
    for cell in cells:
        for B in sorted({r["B"] for r in rows if r["cell"] == cell}):
            out = []
            for H in Hs:
                r = at.get((cell, B, H))
                if r is None:
                    out.append("-")
                    continue
                s = (f"**{r['ratio vs torch nn']:.2f}** ({_k(r['graphspec']['tokens_per_s'])} / "
                     f"{_k(r['torch nn']['tokens_per_s'])})")
                if "ratio vs torch eager cell" in r:
                    s += f"; eager {r['ratio vs torch eager cell']:.1f}"
                out.append(s)
            lines.append(f"| {cell} | {B} | " + " | ".join(out) + " |")
    summary = "; ".join(f"{c} {w['ratio vs torch nn']:.2f} at B={w['B']}/H={w['H']}"
                        for c in cells for w in [worst(rows, c)])
    lines.append("")
    lines.append(f"Worst point of the sweep (ratio vs nn.*): {summary}.")
    if any("contended" in r for r in rows):
        busy = "; ".join(f"{c} {w['contended']['ratio vs torch nn']:.2f} at B={w['B']}/H={w['H']}"
                         for c in cells for w in [worst(rows, c, lambda r: r["contended"]["ratio vs torch nn"])])
        lines.append(f"With a busy core (--contended), worst: {busy}.")
    return "\n".join(lines)


def contended_table(rows) -> str:
    """Per point: the ratio vs nn.* under load, and the share of its quiet throughput each side keeps."""
    Hs = sorted({r["H"] for r in rows})
    at = {(r["cell"], r["B"], r["H"]): r for r in rows}
    lines = ["| cell | B | " + " | ".join(f"H={h}" for h in Hs) + " |", "|" + "---|" * (2 + len(Hs))]
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for B in sorted({r["B"] for r in rows if r["cell"] == cell}):
            out = []
            for H in Hs:
                c = at[(cell, B, H)]["contended"] if (cell, B, H) in at else None
                out.append("-" if c is None else f"**{c['ratio vs torch nn']:.2f}** (kept: graphspec "
                           f"{c['retained']['graphspec']:.2f}, torch {c['retained']['torch nn']:.2f})")
            lines.append(f"| {cell} | {B} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def heatmap(rows, path):
    """ratio vs nn.* per cell over B x H, on a log colour scale centred on 1 (red: graphspec
    slower, blue: faster); with contended figures, a second row of panels for them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    Bs, Hs = sorted({r["B"] for r in rows}), sorted({r["H"] for r in rows})
    panels = [("quiet", lambda r: r["ratio vs torch nn"])]
    if any("contended" in r for r in rows):
        panels.append(("a busy core beside", lambda r: r["contended"]["ratio vs torch nn"]))
    at = {(r["cell"], r["B"], r["H"]): r for r in rows}
    span = 3.0                              # 1/8x .. 8x; beyond saturates (the number is printed in the cell)
    norm = Normalize(-span, span)
    fig, axes = plt.subplots(len(panels), len(cells), figsize=(3.4 * len(cells), 2.9 * len(panels)),
                             squeeze=False, constrained_layout=True)
    for i, (label, get) in enumerate(panels):
        for j, cell in enumerate(cells):
            ax = axes[i][j]
            grid = [[math.log2(get(at[(cell, b, h)])) if (cell, b, h) in at else float("nan") for h in Hs] for b in Bs]
            im = ax.imshow(grid, cmap="RdBu", norm=norm, origin="lower", aspect="auto")
            for bi, b in enumerate(Bs):
                for hi, h in enumerate(Hs):
                    if (cell, b, h) in at:
                        v = get(at[(cell, b, h)])
                        ax.text(hi, bi, f"{v:.2f}", ha="center", va="center", fontsize=10,
                                color="white" if abs(math.log2(v)) > 0.6 * span else "black")
            ax.set_xticks(range(len(Hs)), [str(h) for h in Hs])
            ax.set_yticks(range(len(Bs)), [str(b) for b in Bs])
            ax.set_xlabel("H")
            ax.set_ylabel("B")
            ax.set_title(f"{cell}: graphspec / nn.{cell.upper()}" + ("" if i == 0 else f"\n({label})"), fontsize=10)
    cb = fig.colorbar(im, ax=axes, shrink=0.8)
    ticks = list(range(-int(span), int(span) + 1))
    cb.set_ticks(ticks, labels=[f"{2.0 ** t:g}x" for t in ticks])
    fig.suptitle(f"training tokens/s ratio, T={rows[0]['T']} (blue: graphspec faster)", fontsize=11)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cells", default=",".join(throughput.CELLS))
    ap.add_argument("--quick", action="store_true", help="B in {1, 16} x H in {32, 128}, 3 rounds")
    ap.add_argument("--contended", action="store_true",
                    help="also time each point with a busy loop spinning beside it (one core lost); no eager cell")
    ap.add_argument("--png", help=f"where the heatmap goes (default {os.path.relpath(PNG, ROOT)}; "
                                  "with --smoke or --json, beside the JSON)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks the script runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    Bs, Hs, eager, t = BS, HS, EAGER_AT, T
    if a.quick:
        (Bs, Hs, eager), a.rounds = QUICK, 3
    if a.smoke:
        (Bs, Hs, eager, t), a.rounds, a.steps = SMOKE, 1, 1
    rows = measure(a.cells.split(","), Bs, Hs, t, a.rounds, a.steps, 1 if a.smoke else 2, eager, a.contended)
    png = a.png or (os.path.splitext(a.json)[0] + ".png" if a.json else None) or (None if a.smoke else PNG)
    print(table(rows))
    if a.contended:
        print()
        print(contended_table(rows))
    if png:
        os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
        heatmap(rows, png)
        print(f"\nheatmap: {png}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
