"""Pictures of a training run: loss and metric curves, the gradient norm ||dL/dh(t)|| over time
steps and training (the vanishing/exploding picture), attention maps, and the eigenvalues of the
recurrent weight matrices. numpy and matplotlib (Agg) only: no numba, nothing compiled.

A run directory holds metrics.jsonl (train lines: step, loss, grad_norm, lr and sometimes
grad_norm_t; validation lines: "split": "valid", step, loss and some of ppl, acc, seq_acc, mse,
free_acc, free_seq_acc), gradnorm.npy ([rows, 1+T]: the step, then ||dL/dh(t)|| per t, NaN padded),
perhaps attention.npz (weights [T_tgt, T_src], src and tgt tokens) and last.npz (param/NAME).
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from .rundir import npy_header, read_gradnorm as read_gradnorm_file, regular

VALID_METRICS = ("ppl", "acc", "seq_acc", "free_acc", "free_seq_acc", "mse")
RECURRENT_NAMES = ("W", "R", "R_n", "W_m", "W_s", "S")     # S: the skip matrix of deep_transition_skip


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: str) -> str:
    fig.savefig(out, dpi=100)
    _plt().close(fig)
    return out


# ---------------------------------------------------------------- metrics
MAX_METRICS_BYTES = 1 << 30         # ~3 million steps of log
MAX_TOKENS_SHOWN = 200             # attention: rows and columns drawn (the figure grows with them)
MAX_EIGEN = 2048                   # eigenvalues of matrices up to this size (O(n^3))
MAX_PANELS = 16
MAX_HEATMAP_CELLS = 1_000_000


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics(run_dir: str):
    """(train records, validation records) from metrics.jsonl; lines that are not records with a
    numeric step (a torn last line, damage) are skipped."""
    train, valid = [], []
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.lexists(path):
        regular(path, MAX_METRICS_BYTES, "metrics log")
        with open(path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(rec, dict) and _number(rec.get("step")):
                    (valid if rec.get("split") == "valid" else train).append(rec)
    return train, valid


def _series(recs, key):
    pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = zip(*pts)
    return np.asarray(s, float), np.asarray(v, float)


def smooth(y: np.ndarray, k: Optional[int] = None) -> np.ndarray:
    """Exponential moving average with bias correction (span about len/25, at least 1)."""
    if len(y) == 0:
        return y
    k = k or max(1, len(y) // 25)
    a = 2.0 / (k + 1)
    out, m, w = np.empty(len(y)), 0.0, 0.0
    for i, v in enumerate(y):
        m = (1 - a) * m + a * v
        w = (1 - a) * w + a
        out[i] = m / w
    return out


def curve_panels(train, valid) -> tuple:
    """(the panels drawn, {series: value} of those the same at every logged step). A series
    that never moves (a char LM's seq_acc of 0, a constant lr) is said in the title, not drawn."""
    series = {m: _series(valid, m) for m in VALID_METRICS}
    series.update({k: _series(train, k) for k in ("grad_norm", "lr")})
    flat = {k: float(y[0]) for k, (_, y) in series.items() if len(y) > 1 and (y == y[0]).all()}
    return ["loss"] + [k for k, (s, _) in series.items() if len(s) and k not in flat], flat


def plot_curves(run_dir: str, out: str) -> Optional[str]:
    """Loss (train, smoothed, validation), then one panel per validation metric, the gradient
    norm and the learning rate when logged."""
    train, valid = read_metrics(run_dir)
    if not train and not valid:
        return None
    plt = _plt()
    panels, flat = curve_panels(train, valid)
    cols = 2 if len(panels) == 4 else min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), panels):
        if name == "loss":
            s, y = _series(train, "loss")
            if len(s):
                ax.plot(s, y, color="#bbbbbb", lw=0.7, label="train")
                ax.plot(s, smooth(y), color="#1f77b4", lw=1.5, label="train (smoothed)")
            vs, vy = _series(valid, "loss")
            if len(vs):
                ax.plot(vs, vy, "o-", color="#d62728", ms=3, label="validation")
            allv = np.concatenate([y, vy])
            if len(allv) and (allv > 0).all() and allv.max() / allv.min() > 20:
                ax.set_yscale("log")
            ax.set_title("loss")
            ax.set_ylabel("loss")
        elif name in VALID_METRICS:
            vs, vy = _series(valid, name)
            ax.plot(vs, vy, "o-", ms=3, color="#2ca02c")
            if name == "ppl" and len(vy) and (vy > 0).all() and vy.max() / vy.min() > 20:
                ax.set_yscale("log")
            ax.set_title(f"validation {name}")
            ax.set_ylabel(name)
        else:
            s, y = _series(train, name)
            ax.plot(s, y, color="#bbbbbb" if name == "grad_norm" else "#9467bd", lw=0.7, label=name)
            if name == "grad_norm" and len(y):
                ax.plot(s, smooth(y), color="#ff7f0e", lw=1.3, label="smoothed")
                if (y > 0).all():
                    ax.set_yscale("log")
            ax.set_title("gradient norm (before clipping)" if name == "grad_norm" else "learning rate")
            ax.set_ylabel("||grad||" if name == "grad_norm" else "lr")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    title = f"training curves: {os.path.basename(os.path.abspath(run_dir))}"
    if flat:
        title += "\nthe same at every step, not drawn: " + ", ".join(f"{k} {v:.4g}" for k, v in flat.items())
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


# ---------------------------------------------------------------- gradient norm over time steps
def read_gradnorm(run_dir: str):
    """(steps [R], norms [R, T]) from gradnorm.npy, else from the grad_norm_t of metrics.jsonl;
    None when neither has any."""
    arr = read_gradnorm_file(os.path.join(run_dir, "gradnorm.npy"))
    if arr is not None and arr.shape[0]:
        return arr[:, 0], arr[:, 1:]
    train, _ = read_metrics(run_dir)
    rows = [(r["step"], r["grad_norm_t"]) for r in train if isinstance(r.get("grad_norm_t"), list)
            and r["grad_norm_t"] and all(isinstance(v, (int, float)) for v in r["grad_norm_t"])]
    if not rows:
        return None
    T = max(len(g) for _, g in rows)
    norms = np.full((len(rows), T), np.nan)
    for i, (_, g) in enumerate(rows):
        norms[i, :len(g)] = np.asarray(g, float)
    return np.asarray([s for s, _ in rows], float), norms


def _edges(c: np.ndarray) -> np.ndarray:
    """Cell edges around centres c (for pcolormesh with uneven steps)."""
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def unpadded(norms: np.ndarray) -> np.ndarray:
    """Batches are padded (lengths rounded up to a multiple of 8): the trailing steps no logged
    row has any gradient at are padding, not part of the sequence."""
    reached = np.nonzero((np.isfinite(norms) & (norms > 0)).any(axis=0))[0]
    return norms[:, :reached[-1] + 1] if reached.size else norms


def plot_gradnorm(run_dir: str, out: str) -> Optional[str]:
    got = read_gradnorm(run_dir)
    if got is None:
        return None
    steps, norms = got
    order = np.argsort(steps, kind="stable")
    steps, norms = steps[order], norms[order]
    norms = unpadded(norms)
    if norms.size > MAX_HEATMAP_CELLS:          # evenly spaced logged steps: the picture stays bounded
        keep = np.unique(np.linspace(0, len(steps) - 1, max(2, MAX_HEATMAP_CELLS // norms.shape[1])).astype(int))
        steps, norms = steps[keep], norms[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        logn = np.where(norms > 0, np.log10(norms), np.nan)
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    T = norms.shape[1]
    finite = logn[np.isfinite(logn)]
    if finite.size:
        im = a.pcolormesh(np.arange(T + 1) - 0.5, _edges(steps), np.ma.masked_invalid(logn), cmap="magma",
                          shading="flat", vmin=finite.min(), vmax=finite.max() if finite.max() > finite.min() else None)
        fig.colorbar(im, ax=a, label="log10 ||dL/dh(t)||")
    a.set_xlabel("time step t")
    a.set_ylabel("training step")
    a.set_title("log10 ||dL/dh(t)||: how much gradient reaches each step")
    for i, lab, color in ((0, "first logged step", "#1f77b4"), (len(steps) - 1, "last logged step", "#d62728")):
        y = norms[i]
        ok = np.isfinite(y) & (y > 0)
        if ok.any():
            b.semilogy(np.arange(T)[ok], y[ok], "o-", ms=3, color=color, label=f"{lab} ({int(steps[i])})")
    b.set_xlim(-0.5, T - 0.5)
    b.set_xlabel("time step t")
    b.set_ylabel("||dL/dh(t)||")
    b.set_title("gradient norm over time steps")
    b.grid(alpha=0.3, which="both")
    if b.get_legend_handles_labels()[0]:
        b.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


# ---------------------------------------------------------------- attention
def plot_attention(run_dir: str, out: str) -> Optional[str]:
    path = os.path.join(run_dir, "attention.npz")
    if not os.path.lexists(path):
        return None
    w, src, tgt = read_attention(path)
    nt, ns = min(len(tgt), w.shape[0]) or w.shape[0], min(len(src), w.shape[1]) or w.shape[1]
    nt, ns = min(nt, MAX_TOKENS_SHOWN), min(ns, MAX_TOKENS_SHOWN)
    w = w[:nt, :ns]
    show = lambda s: repr(s)[1:-1] if s.strip() else repr(s)      # noqa: E731  (spaces, newlines visible)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.42 * ns + 2.5), max(3.5, 0.42 * nt + 2)))
    im = ax.imshow(w, cmap="Blues", vmin=0, vmax=max(1.0, float(np.nanmax(w)) if w.size else 1.0), aspect="auto")
    fig.colorbar(im, ax=ax, label="attention weight")
    if src:
        ax.set_xticks(range(ns), [show(s) for s in src[:ns]], rotation=90 if max(map(len, src)) > 2 else 0)
    if tgt:
        ax.set_yticks(range(nt), [show(t) for t in tgt[:nt]])
    ax.set_xlabel("source token (encoder step)")
    ax.set_ylabel("output token (decoder step)")
    ax.set_title("attention: where each decoder step looks")
    fig.tight_layout()
    return _save(fig, out)


def read_attention(path: str):
    """(weights [T_tgt, T_src], src tokens, tgt tokens) of attention.npz, each array's header
    checked before it is read (2-D floats, 1-D strings, bounded sizes; never objects)."""
    import zipfile
    from graphspec.errors import UserError
    regular(path, 1 << 30, "attention file")
    want = {"weights": ("f", 2, 1 << 24), "src": ("U", 1, 1 << 20), "tgt": ("U", 1, 1 << 20)}
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name not in want:
                    raise ValueError(f"an array '{name}'")
                with z.open(info) as f:
                    shape, dtype = npy_header(f)
                    kind, ndim, most = want[name]
                    if dtype.kind != kind or len(shape) != ndim or math.prod(shape) > most:
                        raise ValueError(f"'{name}' is a {shape} {dtype} array")
                with z.open(info) as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
        if "weights" not in out:
            raise ValueError("no weights")
    except Exception as e:
        raise UserError(f"{path}: not an attention file ({' '.join(str(e).split())})") from None
    return (np.asarray(out["weights"], float), [str(s) for s in out.get("src", [])],
            [str(t) for t in out.get("tgt", [])])


# ---------------------------------------------------------------- eigenvalues of recurrent weights
def gate_names(g, param: str, k: int, width: int) -> Optional[list]:
    """The names of the k gates a stacked param [k*H, H] feeds in step graph g: the parts
    split(z, k) takes from the sum its product is in (lstm: i, f, g, o; gru's R: r, u), their
    common prefix dropped (c_r, c_u -> r, u); None when the spec does not split it that way."""
    cons = g.consumers()
    todo = [n.name for n in g.nodes.values() if n.op == "matmul" and n.args and n.args[0].node == param]
    seen = set(todo)
    while todo:
        name = todo.pop()
        takes = sorted((g.nodes[c] for c in cons.get(name, []) if g.nodes[c].op == "take"
                        and g.nodes[c].attrs.get("width") == width), key=lambda n: n.attrs["col"])
        if [t.attrs["col"] for t in takes] == [i * width for i in range(k)]:
            names = [t.name.rsplit(".", 1)[-1] for t in takes]
            cut = os.path.commonprefix(names)
            cut = cut[:cut.rfind("_") + 1]
            return [x[len(cut):] for x in names]
        for c in cons.get(name, []):
            if g.nodes[c].op in ("add", "sub") and c not in seen:
                seen.add(c)
                todo.append(c)
    return None


def _spec_graph(meta):
    """The step graph of a checkpoint's spec (from the text it carries), or None."""
    import graphspec
    try:
        return graphspec.load(meta["spec"], text=meta["spec_text"], bind=meta.get("bind") or None)
    except Exception:           # a spec that no longer loads (a block file gone): panels keep indices
        return None


def recurrent_matrices(params: dict, graph=None) -> dict:
    """The H x H blocks of the params that multiply a recurrent state: params whose name ends in
    W, R, R_n, W_m, W_s (or S) with shape [k*H, H], k in 1..4 (stacked gates of lstm/gru blocks give
    one block per gate, NAME[i]). A W counts only when square: the stacked input weights of the
    lstm/gru blocks are also called W."""
    out = {}
    for name, p in params.items():
        p = np.asarray(p)
        if p.ndim != 2 or p.shape[1] == 0:
            continue
        rows, cols = p.shape
        base = name.rsplit(".", 1)[-1]
        if base not in RECURRENT_NAMES or rows % cols or not 1 <= rows // cols <= 4:
            continue
        if base == "W" and rows != cols:
            continue
        k = rows // cols
        gates = gate_names(graph, name, k, cols) if graph is not None and k > 1 else None
        for i in range(k):
            label = f"{name} gate {gates[i]}" if gates else f"{name}[{i}]" if k > 1 else name
            out[label] = p[i * cols:(i + 1) * cols]
    return out


def read_params(path: str, with_meta: bool = False):
    from .checkpoint import open_checkpoint
    ck = open_checkpoint(path, need_meta=False)
    try:
        params = ck.params(max_bytes=1 << 30)
        return (params, ck.meta) if with_meta else params
    finally:
        ck.close()


def plot_eigen(run_dir: str, out: str) -> Optional[str]:
    path = os.path.join(run_dir, "last.npz")
    if not os.path.lexists(path):
        return None
    params, meta = read_params(path, with_meta=True)
    graph = _spec_graph(meta) if meta else None
    mats = {k: m for k, m in recurrent_matrices(params, graph).items() if m.shape[0] <= MAX_EIGEN}
    mats = dict(list(mats.items())[:MAX_PANELS])
    if not mats:
        return None
    plt = _plt()
    n = len(mats)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.9 * rows + 0.5), squeeze=False,
                             layout="constrained")     # makes room for the title, however it wraps
    th = np.linspace(0, 2 * np.pi, 256)
    for ax, (name, m) in zip(axes.ravel(), mats.items()):
        m = np.asarray(m, np.float64)
        ev = np.linalg.eigvals(m) if np.isfinite(m).all() else np.array([np.nan])
        rho = float(np.nanmax(np.abs(ev))) if np.isfinite(ev).any() else float("nan")
        ax.plot(np.cos(th), np.sin(th), color="#999999", lw=0.8, label="|lambda| = 1")
        ax.scatter(ev.real, ev.imag, s=10, color="#d62728" if rho > 1 else "#1f77b4", zorder=3, label="eigenvalues")
        lim = max(1.15, rho * 1.1 if math.isfinite(rho) else 1.15)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="#dddddd", lw=0.6, zorder=0)
        ax.axvline(0, color="#dddddd", lw=0.6, zorder=0)
        ax.set_title(f"{name} ({m.shape[0]}x{m.shape[1]}): spectral radius {rho:.3f}", fontsize=9)
        ax.set_xlabel("Re(lambda)")
        ax.set_ylabel("Im(lambda)")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    import textwrap
    title = "eigenvalues of the recurrent weights (outside the unit circle: growth along that direction)"
    fig.suptitle(textwrap.fill(title, int(11 * 3.8 * cols)), fontsize=11)     # ~11 characters an inch
    return _save(fig, out)


# ---------------------------------------------------------------- all of them
def check_run_files(run_dir: str):
    """Read every run file once before drawing anything: damage is named before any work."""
    read_metrics(run_dir)
    read_gradnorm_file(os.path.join(run_dir, "gradnorm.npy"))
    if os.path.lexists(os.path.join(run_dir, "attention.npz")):
        read_attention(os.path.join(run_dir, "attention.npz"))
    if os.path.lexists(os.path.join(run_dir, "last.npz")):
        read_params(os.path.join(run_dir, "last.npz"))


def plot_run(run_dir: str, out_dir: Optional[str] = None) -> list:
    """Draw every picture the run directory has data for; the PNG files written, in order:
    curves.png, gradnorm.png, attention.png, eigen.png."""
    check_run_files(str(run_dir))
    out_dir = str(out_dir or run_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for fn, name in ((plot_curves, "curves.png"), (plot_gradnorm, "gradnorm.png"),
                     (plot_attention, "attention.png"), (plot_eigen, "eigen.png")):
        p = fn(str(run_dir), os.path.join(out_dir, name))
        if p:
            written.append(p)
    return written
