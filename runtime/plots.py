"""Pictures of a training run: loss and metric curves, the gradient norm ||dL/dh(t)|| over time
steps and training (the vanishing/exploding picture), attention maps, and the eigenvalues of the
recurrent weight matrices. numpy and matplotlib only (no numba)."""
from __future__ import annotations

import json
import os

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(run_dir: str):
    train, valid = [], []
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                (valid if rec.get("split") == "valid" else train).append(rec)
    return train, valid


def plot_curves(run_dir: str, out: str) -> str:
    plt = _plt()
    train, valid = read_metrics(run_dir)
    metrics = [k for k in ("ppl", "acc", "seq_acc", "free_acc", "free_seq_acc", "mse") if any(k in v for v in valid)]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(12 if metrics else 7, 4.5), squeeze=False)
    ax = axes[0, 0]
    if train:
        s = np.array([r["step"] for r in train])
        loss = np.array([r["loss"] for r in train])
        ax.plot(s, loss, color="#bbbbbb", lw=0.7, label="train")
        k = max(1, len(loss) // 50)
        if len(loss) > k:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1:], smooth, color="#1f77b4", label=f"train (mean of {k})")
    if valid:
        ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", color="#d62728", label="validation")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if train and min(r["loss"] for r in train) > 0 else "linear")
    ax.set_title("loss")
    ax.legend()
    if metrics:
        ax = axes[0, 1]
        for m in metrics:
            ax.plot([r["step"] for r in valid if m in r], [r[m] for r in valid if m in r], "o-", label=m)
        ax.set_xlabel("training step")
        ax.set_title("validation metrics")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_gradnorm(run_dir: str, out: str):
    path = os.path.join(run_dir, "gradnorm.npy")
    if not os.path.exists(path):
        return None
    arr = np.load(path)
    if arr.size == 0:
        return None
    plt = _plt()
    steps, norms = arr[:, 0], arr[:, 1:]
    logn = np.log10(np.where(norms > 0, norms, np.nan))
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    im = a.imshow(logn, aspect="auto", origin="lower", cmap="magma",
                  extent=[-0.5, norms.shape[1] - 0.5, steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1])
    a.set_xlabel("time step t")
    a.set_ylabel("training step")
    a.set_title("log10 ||dL/dh(t)||: how much gradient reaches each step")
    fig.colorbar(im, ax=a)
    for i, lab in ((0, "first logged step"), (-1, "last logged step")):
        b.semilogy(np.arange(norms.shape[1]), norms[i], label=f"{lab} ({int(steps[i])})")
    b.set_xlabel("time step t")
    b.set_ylabel("||dL/dh(t)||")
    b.set_title("gradient norm over time")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_attention(run_dir: str, out: str):
    path = os.path.join(run_dir, "attention.npz")
    if not os.path.exists(path):
        return None
    plt = _plt()
    z = np.load(path, allow_pickle=False)
    w, src, tgt = z["weights"], [str(s) for s in z["src"]], [str(t) for t in z["tgt"]]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(src) + 2), max(3, 0.45 * len(tgt) + 1.5)))
    ax.imshow(w[:len(tgt), :len(src)], cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), [repr(s)[1:-1] for s in src])
    ax.set_yticks(range(len(tgt)), [repr(t)[1:-1] for t in tgt])
    ax.set_xlabel("source (encoder steps)")
    ax.set_ylabel("target (decoder steps)")
    ax.set_title("attention weights")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def recurrent_matrices(params: dict) -> dict:
    """H x H blocks of the params that multiply a recurrent state: square matrices and the
    stacked-gate [k*H, H] matrices of lstm/gru blocks (names W, R, R_n, W_m, W_s, S)."""
    out = {}
    for name, p in params.items():
        if p.ndim != 2:
            continue
        rows, cols = p.shape
        base = name.rsplit(".", 1)[-1]
        if base not in ("W", "R", "R_n", "W_m", "W_s", "S") or rows % cols or rows // cols > 4:
            continue
        if base == "W" and rows != cols:
            continue
        for k in range(rows // cols):
            out[f"{name}[{k}]" if rows > cols else name] = p[k * cols:(k + 1) * cols]
    return out


def plot_eigen(run_dir: str, out: str):
    path = os.path.join(run_dir, "last.npz")
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    mats = recurrent_matrices(params)
    if not mats:
        return None
    plt = _plt()
    n = len(mats)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    th = np.linspace(0, 2 * np.pi, 200)
    for ax, (name, m) in zip(axes.ravel(), mats.items()):
        ev = np.linalg.eigvals(m.astype(np.float64))
        ax.plot(np.cos(th), np.sin(th), color="#999999", lw=0.8)
        ax.scatter(ev.real, ev.imag, s=8)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: spectral radius {np.abs(ev).max():.2f}", fontsize=9)
        ax.set_xlabel("Re")
        ax.set_ylabel("Im")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("eigenvalues of recurrent weights (unit circle: |lambda| = 1)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(run_dir: str, out_dir=None) -> list:
    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    written = [plot_curves(run_dir, os.path.join(out_dir, "curves.png"))]
    for fn, name in ((plot_gradnorm, "gradnorm.png"), (plot_attention, "attention.png"), (plot_eigen, "eigen.png")):
        p = fn(run_dir, os.path.join(out_dir, name))
        if p:
            written.append(p)
    return written
