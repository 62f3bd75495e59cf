"""The long-term-dependency study's pictures and table (docs/study.md), from two sweeps' directories:

    python docs/study/plots.py [--adding sweeps/study_adding] [--copy sweeps/study_copy] [--out docs/study]

Writes study_vs_T.png (final validation loss and success rate against T, a line per model, for
each task) and study_gradnorm.png (||dL/dh(t)|| over t at the first step and at the last logged
one, Elman and LSTM at T=100 on each task), and prints the table as Markdown.
Success: validation MSE < 0.02 on the adding problem (always answering 1 scores 0.17); every
step of the sequence right (seq_acc) on copy-memory, counted per seed (the rate is over seeds).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runtime.plots import _plt, _save  # noqa: E402

MODELS = ["elman", "elman_clip", "leaky", "skip", "lstm", "gru"]
TASKS = {"adding": ("length", "mse", lambda r: r.get("mse", 1e9) < 0.02),
         "copy": ("gap", "seq_acc", lambda r: r.get("seq_acc", 0) >= 0.9)}


def rows(sweep: str) -> list:
    path = os.path.join(sweep, "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def model_of(r: dict, task: str) -> str:
    return os.path.splitext(os.path.basename(r["spec"]))[0][len(task) + 1:]


def table(results: dict) -> str:
    lines = []
    for task, rs in results.items():
        key, metric, ok = TASKS[task]
        Ts = sorted({r[f"data.{key}"] for r in rs})
        lines.append(f"\n**{task}** (T = data.{key}; cell: success rate over seeds, mean final {metric}, "
                     f"mean final loss)\n")
        lines.append("| model | " + " | ".join(f"T={T}" for T in Ts) + " |")
        lines.append("|---|" + "---|" * len(Ts))
        for m in MODELS:
            cells = []
            for T in Ts:
                sel = [r for r in rs if model_of(r, task) == m and r[f"data.{key}"] == T and r.get("done")]
                if not sel:
                    cells.append("-")
                    continue
                rate = sum(ok(r) for r in sel) / len(sel)
                cells.append(f"{rate:.0%}, {np.mean([r.get(metric, np.nan) for r in sel]):.3g}, "
                             f"{np.mean([r['loss'] for r in sel]):.3g}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_vs_T(results: dict, out: str) -> str:
    plt = _plt()
    fig, axs = plt.subplots(2, len(results), figsize=(5.2 * len(results), 7), squeeze=False)
    for col, (task, rs) in enumerate(results.items()):
        key, metric, ok = TASKS[task]
        for i, m in enumerate(MODELS):
            sel = [r for r in rs if model_of(r, task) == m and r.get("done")]
            Ts = sorted({r[f"data.{key}"] for r in sel})
            if not Ts:
                continue
            loss = [np.mean([r["loss"] for r in sel if r[f"data.{key}"] == T]) for T in Ts]
            rate = [np.mean([ok(r) for r in sel if r[f"data.{key}"] == T]) for T in Ts]
            style = dict(marker="o", color=f"C{i}", label=m, lw=1.5, ms=4)
            axs[0][col].plot(Ts, loss, **style)
            axs[1][col].plot(Ts, np.array(rate) + 0.015 * (i - 2.5), **style)     # nudged apart to stay visible
        # what a model without memory scores: the mean (loss = MSE/2 = Var(a+b)/2 = 1/12), or
        # the blanks right and a uniform guess of each of the 10 symbols (10 ln 8)
        base = 1 / 12 if task == "adding" else 10 * np.log(8)
        axs[0][col].axhline(base, color="gray", ls=":", lw=1.2, label="no memory")
        axs[0][col].set_yscale("log")
        axs[0][col].set_title(f"{task}: final validation loss", fontsize=10)
        axs[1][col].set_title(f"{task}: success ({metric} {'< 0.02' if task == 'adding' else '>= 0.9'})", fontsize=10)
        axs[1][col].set_ylim(-0.1, 1.1)
        for ax in axs[:, col]:
            ax.set_xscale("log")
            ax.set_xlabel(f"T (data.{key})")
            ax.grid(alpha=0.3)
        axs[0][col].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "study_vs_T.png"))


def plot_gradnorm(sweeps: dict, results: dict, out: str, T: int = 100):
    plt = _plt()
    fig, axs = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), squeeze=False)
    for col, (task, rs) in enumerate(results.items()):
        key = TASKS[task][0]
        ax = axs[0][col]
        for i, m in enumerate(["elman", "lstm"]):
            sel = [r for r in rs if model_of(r, task) == m and r[f"data.{key}"] == T and r.get("done")]
            if not sel:
                continue
            g = np.load(os.path.join(sweeps[task], "runs", sel[0]["run"], "gradnorm.npy"))
            steps = g[:, 0]
            for row, ls, when in ((0, "--", "init"), (-1, "-", "trained")):
                y = g[row, 1:]
                y = y[~np.isnan(y)]
                y = y[:np.flatnonzero(y)[-1] + 1] if np.any(y) else y      # the padded steps after T
                ax.plot(np.arange(len(y)), np.maximum(y, 1e-30), ls, color=f"C{4 * i}",
                        label=f"{m}, {when} (step {int(steps[row])})")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("||dL/dh(t)||")
        ax.set_title(f"{task}, T={T}: gradient reaching step t", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "study_gradnorm.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adding", default="sweeps/study_adding")
    ap.add_argument("--copy", default="sweeps/study_copy")
    ap.add_argument("--out", default="docs/study")
    a = ap.parse_args()
    sweeps = {"adding": a.adding, "copy": a.copy}
    results = {t: rows(d) for t, d in sweeps.items() if rows(d)}
    if not results:
        sys.exit(f"plots.py: no results.jsonl in {a.adding} or {a.copy}: run the study's sweeps first (docs/study.md)")
    os.makedirs(a.out, exist_ok=True)
    print(plot_vs_T(results, a.out))
    print(plot_gradnorm(sweeps, results, a.out))
    print(table(results))


if __name__ == "__main__":
    main()
