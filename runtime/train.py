"""Training: the loop, validation, metrics, checkpoints and resuming.

A run directory (runtime/rundir.py) holds metrics.jsonl (one JSON object per line: train steps
and validations), last.npz and best.npz (checkpoints), and gradnorm.npy (||dL/dh(t)|| per logged
step and time step, for `graphspec plot`). Every batch is a pure function of (task, split, step,
seed) and every random draw inside a step is seeded from (seed, step), so a resumed run replays
exactly the losses an uninterrupted one would have produced; and since last.npz is written only
once the logs hold everything up to its step, a run killed at any moment and resumed ends with
the same files, byte for byte, as one never interrupted.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
import time
from typing import Optional

import numpy as np

import graphspec
from graphspec.errors import Interrupted, UserError
from graphspec.limits import MAX_SPEC_BYTES, BadFile, read_bytes
from graphspec.spec import read, train_config

from . import checkpoint as ckpt
from .model import Model
from .online import Online
from .optim import Optimizer, clip_factor, learning_rate
from .distributed import Agreed, guarded, world
from .rundir import MetricsLog, check_run_dir, cut_metrics, open_run_dir, read_gradnorm, save_npy, save_npz
from .rundir import environment, record_environment


# ---------------------------------------------------------------- setup
def spec_hash(path: str, sets=()) -> str:
    """The spec file's hash; with --set overrides, theirs appended (a run of other values)."""
    try:
        h = hashlib.sha256(read_bytes(path, MAX_SPEC_BYTES, "spec")).hexdigest()[:16]
    except BadFile as e:
        raise UserError(f"{path}: {e}") from None
    from graphspec.overrides import fingerprint
    return h + ("+" + fingerprint(sets) if sets else "")


DATA_OPTIONS = ("tokens", "min_count", "max_vocab")      # train flags that shape a data file's vocabulary


def make_task(g, data_path: Optional[str] = None, task_name: Optional[str] = None,
              data_options: Optional[dict] = None):
    from . import tasks as T
    cfg = dict(g.data or {})
    name = task_name or cfg.pop("task", None)
    cfg.pop("task", None)
    if not name and not data_path:
        raise UserError("the spec has no data.task and no --task/--data was given")
    if data_options and not data_path:
        raise UserError(f"--{next(iter(data_options)).replace('_', '-')}: the vocabulary options apply to a --data "
                        f"file; a built-in task has its own vocabulary (graphspec tasks)")
    try:
        if data_path:
            from .userdata import user_task
            return user_task(data_path, g, cfg, data_options)
        return T.get_task(name, **cfg)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None


def dim_vocabs(g, task) -> dict:
    """The vocabulary of the task each dim declared `data` stands for."""
    have = {name: getattr(task, name) for name in ("vocab", "src_vocab", "tgt_vocab")
            if getattr(task, name, None) is not None}
    out = {}
    for k, v in g.dims.items():
        if not isinstance(v, str):
            continue
        if k in ("V", "V_in", "V_out"):
            key = "vocab" if "vocab" in have else "tgt_vocab"
        elif k == "V_src":
            key = "src_vocab" if "src_vocab" in have else "vocab"
        elif k == "V_tgt":
            key = "tgt_vocab" if "tgt_vocab" in have else "vocab"
        else:
            raise UserError(f"dim {k} is 'data' but the task binds only V, V_src and V_tgt")
        if key not in have:
            raise UserError(f"dim {k} is 'data' (a vocabulary's size) but task {task.name} has no vocabulary "
                            f"(it feeds real values)")
        out[k] = have[key]
    return out


def bind_dims(g, task) -> dict:
    """Dims declared `data` take their sizes from the task's vocabularies."""
    return {k: len(v) for k, v in dim_vocabs(g, task).items()}


def make_tables(g, task) -> dict:
    from .data import huffman_tree, unigram_table
    names = {n.attrs["field"] for n in g.nodes.values() if n.op == "input" and n.attrs.get("kind") == "table"}
    counts = None
    if names:
        v = getattr(task, "vocab", None)
        counts = np.asarray([v.counts.get(tok, 0) for tok in v.itos] if isinstance(v.counts, dict) else v.counts)
    out = {}
    if "tree" in names:
        out["tree"] = huffman_tree(counts, getattr(task, "rank", None))
    if "unigram" in names:
        # 10 entries per word on average: every word of the vocabulary can be drawn, and the
        # table stays small enough to sit in cache beside the vectors (50 per word cost 30%)
        out["unigram"] = unigram_table(counts, size=min(1_000_000, 10 * len(counts)))
    return out


def round_lengths(batch: dict, model: Model, multiple: int = 8) -> dict:
    """Pad every time axis up to a multiple of 8 steps (masked out), so a run compiles a few
    plans instead of one per distinct length."""
    out = dict(batch)
    for n in model.graph.nodes.values():
        if n.op != "input" or n.axis is None:
            continue
        f = n.attrs["field"]
        if f not in out:
            continue
        a = np.asarray(out[f])
        T = a.shape[0]
        T2 = -(-T // multiple) * multiple
        if T2 != T:
            pad = np.zeros((T2 - T,) + a.shape[1:], a.dtype)
            out[f] = np.concatenate([a, pad])
    return out


# ---------------------------------------------------------------- metrics
def _loss_parts(model: Model):
    """(loss op, logits/prediction node, target node, mask node) of each loss."""
    parts = []
    graph = model._graph("train")
    for name in graph.losses:
        n = graph.nodes[name]
        if n.op in ("cross_entropy", "mse"):
            parts.append((n.op, n.args[0].node, n.args[1].node, n.args[2].node if len(n.args) > 2 else None))
    return parts


def _steps(model: Model, node: str) -> np.ndarray:
    """A node's values without the extra slots: [T, B, F] or [B, F]."""
    b = model.current.plan.buffers[node]
    v = model.current.view(node)
    if len(b.shape) == 3:
        return v[b.pre:b.shape[0] - b.post]
    return v


def batch_metrics(model: Model, batch: dict, free: bool = False) -> dict:
    """Token and sequence accuracy (cross-entropy losses) or MSE, from the last forward."""
    out = {}
    for op, pred, target, mask in _loss_parts(model):
        p = _steps(model, pred)
        y = _steps(model, target)
        m = _steps(model, mask) if mask and mask in model.current.plan.buffers else None
        if op == "cross_entropy":
            guess = p.argmax(-1)                       # [T, B] or [B]
            yy = y.reshape(guess.shape)
            mm = (m.reshape(guess.shape) > 0.5) if m is not None and m.size == guess.size \
                else np.ones(guess.shape, bool)
            right = guess == yy
            out["tokens"] = out.get("tokens", 0) + int(mm.sum())
            out["right"] = out.get("right", 0) + int((right & mm).sum())
            # a sequence is right when every real step is (one label: when the label is)
            seq_ok = np.all(right | ~mm, axis=0) if right.ndim == 2 else right
            out["seqs"] = out.get("seqs", 0) + seq_ok.size
            out["seqs_right"] = out.get("seqs_right", 0) + int(seq_ok.sum())
        else:
            err = ((p - y) ** 2).mean(-1)
            out["sq"] = out.get("sq", 0.0) + float(err.sum())
            out["n"] = out.get("n", 0) + err.size
    return out


def summarize(acc: dict, loss: float, nbatches: int, batch_size: int) -> dict:
    res = {"loss": loss / max(nbatches, 1)}
    if acc.get("tokens"):
        per_token = loss * batch_size / acc["tokens"]
        res["ppl"] = math.exp(min(per_token, 50))
        res["acc"] = acc["right"] / acc["tokens"]
        res["seq_acc"] = acc["seqs_right"] / acc["seqs"]
    if acc.get("n"):
        res["mse"] = acc["sq"] / acc["n"]
    return res


def free_running_metrics(model: Model, batch: dict, seed: int) -> dict:
    """Decode with the model's own predictions fed back; compare with the targets."""
    model.forward(batch, mode="free", seed=seed)
    acc = batch_metrics(model, batch, free=True)
    res = {}
    if acc.get("tokens"):
        res["free_acc"] = acc["right"] / acc["tokens"]
        res["free_seq_acc"] = acc["seqs_right"] / acc["seqs"]
    return res


def evaluate(model: Model, task, cfg: dict, split: str = "valid", batches: int = 4, seed: int = 0) -> dict:
    B = int(cfg["batch"])
    total, acc, free = 0.0, {}, {}
    has_free = "free" in model.graphs or _has_teacher_forcing(model)
    for i in range(batches):
        batch = round_lengths(task.batch(split, B, i, seed), model)
        total += model.forward(batch, mode="eval", seed=seed + i)
        for k, v in batch_metrics(model, batch).items():
            acc[k] = acc.get(k, 0) + v
        if has_free:
            for k, v in free_running_metrics(model, batch, seed + i).items():
                free[k] = free.get(k, 0.0) + v / batches
    res = summarize(acc, total, batches, B)
    res.update(free)
    return res


def split_batches(task, split: str, B: int):
    """The whole of a split, in a fixed order, as batches of at most B; None for a task that
    draws its examples from the seed (an endless stream has no whole)."""
    from .data import pad_batch
    if isinstance(getattr(task, "splits", None), dict) and hasattr(task, "src_vocab"):      # a pairs file
        data = task.splits[split]

        def pairs(chunk):
            x, xm, xl = pad_batch([task.src_vocab.encode(s) for s, _ in chunk])
            y, ym, yl = pad_batch([task.tgt_vocab.encode(t, add_eos=True) for _, t in chunk])
            return {"x": x, "x_mask": xm, "x_len": xl, "y": y, "y_mask": ym, "y_len": yl}
        return (pairs(data[i:i + B]) for i in range(0, len(data), B))
    if getattr(task, "name", "") in ("charlm", "wordlm"):     # one stream: back-to-back windows, each token predicted once
        L = task.p["length"]
        lo, hi = task.bounds[split]
        starts = np.arange(lo, hi - L, L)          # the targets of a window run to start + L < hi

        def windows(st):
            idx = st[None, :] + np.arange(L)[:, None]
            ones = np.ones((L, len(st)), np.float32)
            return {"x": task.ids[idx], "y": task.ids[idx + 1], "x_mask": ones, "y_mask": ones}
        return (windows(starts[i:i + B]) for i in range(0, len(starts), B))
    return None


def evaluate_split(model: Model, task, cfg: dict, split: str, max_batches=None, seed: int = 0) -> dict:
    """`graphspec eval`: the whole split, in order (the first max_batches batches of it when
    given), the same numbers every time; a task that draws its examples from the seed is
    evaluated on max_batches (default 8) batches drawn with `seed`."""
    B = int(cfg["batch"])
    batches = split_batches(task, split, B)
    if batches is None:
        n = max_batches or 8
        res = evaluate(model, task, cfg, split=split, batches=n, seed=seed)
        return dict(res, split=split, examples=n * B, whole_split=False)
    has_free = "free" in model.graphs or _has_teacher_forcing(model)
    total, acc, free, examples = 0.0, {}, {}, 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = round_lengths(batch, model)
        _, b = model.shape_of(batch)
        total += model.forward(batch, mode="eval", seed=seed + i) * b      # the loss is a mean over the batch
        examples += b
        for k, v in batch_metrics(model, batch).items():
            acc[k] = acc.get(k, 0) + v
        if has_free:
            for k, v in free_running_metrics(model, batch, seed + i).items():
                free[k] = free.get(k, 0.0) + v * b
    res = summarize(acc, total / max(examples, 1), 1, examples)
    res.update({k: v / max(examples, 1) for k, v in free.items()})
    return dict(res, split=split, examples=examples, whole_split=max_batches is None)


def _has_teacher_forcing(model: Model) -> bool:
    return any(n.op == "input" and n.attrs.get("target") and n.init is not None
               for n in model.graph.nodes.values())


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: str, model: Model, opt: Optimizer, step: int, meta: dict):
    """Atomically and durably (runtime/rundir.py): a temp file renamed over the old one."""
    ckpt.save(path, model.get_params(), opt.state(), meta, step)


def param_shapes(model: Model) -> dict:
    return {b.name: tuple(b.shape) for b in model.param_buffers}


def load_state(ck: "ckpt.Checkpoint", model: Model, opt: Optional[Optimizer] = None):
    """An opened checkpoint into the model (and optimizer): every param the spec declares must
    be there with its shape, and nothing else."""
    model.set_params(ck.params(param_shapes(model)))
    if opt is not None:
        opt.load_state(ck.opt_state(model.nlearn, opt.kind == "adam"))


# ---------------------------------------------------------------- the loop
def data_sizes(task, data_path: Optional[str] = None) -> str:
    """What the run trains on and how much of it each split holds."""
    src = f"{data_path}" if data_path else f"task {getattr(task, 'name', '?')}"
    if hasattr(task, "splits"):                        # examples held in memory (a pairs file)
        unit, n = "pairs", {k: len(v) for k, v in task.splits.items()}
    elif hasattr(task, "bounds"):                      # one token stream cut in three
        unit = "words" if getattr(task, "name", "") == "words" or getattr(task, "tokens", "") == "words" \
            else "characters"
        n = {k: hi - lo for k, (lo, hi) in task.bounds.items()}
    else:
        params = ", ".join(f"{k}={v}" for k, v in getattr(task, "p", {}).items())
        return f"{src}{f' ({params})' if params else ''}: examples drawn from the seed, every split its own stream"
    same = " (test = valid)" if task_splits_shared(task) else ""
    return f"{src}: " + " / ".join(f"{k} {n[k]:,}" for k in ("train", "valid", "test") if k in n) + f" {unit}{same}"


def task_splits_shared(task) -> bool:
    """A split that is the same data as another one (then it says nothing new)."""
    if hasattr(task, "splits"):
        return task.splits.get("test") is task.splits.get("valid")
    b = getattr(task, "bounds", {})
    return b.get("test") is not None and b.get("test") == b.get("valid")


def startup_header(model: Model, task, meta: dict, out: str, start: int) -> str:
    """What a run is about to do, printed before its first step (which may compile for a minute)."""
    cfg = meta["cfg"]
    learn = [b for b in model.param_buffers if b.learn]
    n = sum(int(np.prod(b.shape)) for b in learn)
    sched = cfg.get("schedule", "constant")
    if cfg.get("warmup"):
        sched += f", {int(cfg['warmup'])} warm-up steps"
    stop = []
    if cfg.get("stop_at_target") and cfg.get("target"):
        stop.append("at the target " + ", ".join(f"{k} {v}" for k, v in cfg["target"].items()))
    if cfg.get("patience"):
        stop.append(f"after {int(cfg['patience'])} validations without a better loss")
    lines = [f"{model.graph.name}: {n:,} learnable params in {len(learn)} tensors",
             f"  data      {data_sizes(task, meta.get('data'))}",
             f"  training  {int(cfg['steps']):,} steps of batch {int(cfg['batch'])}, {cfg.get('optimizer', 'adam')} "
             f"lr {cfg['lr']:g} ({sched}), validation every {int(cfg['eval_every'])} steps"
             + (f"; stops early {' or '.join(stop)}" if stop else ""),
             f"  run dir   {out}" + (f" (resuming at step {start})" if start else "")]
    return "\n".join(lines)


class Progress:
    """Progress on stderr: tqdm on a terminal, plain lines (every ~5%) otherwise.

    A run's first step compiles the numba kernels it has not cached yet (a minute or more the
    first time): a ticker says so while it waits, and the rate and ETA count from the end of the
    first step, never the compile (counting it once gave ETA 4418s for a two-minute run)."""
    NOTICE_AFTER = 2.0        # seconds of a first step before saying it is compiling
    TICK = 10.0               # seconds between elapsed-time lines while it still is

    def __init__(self, total: int, start: int, enabled: bool = True, stream=None, clock=time.perf_counter):
        self.total, self.start = total, start
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.clock = clock
        self.t_begin = clock()
        self.t0 = None            # the end of the first step
        self.first = None         # steps done at that moment
        self.bar = None
        self.every = max(1, total // 20)
        self.noticed = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._ticker = None
        if enabled and start < total:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self):
        wait = self.NOTICE_AFTER
        while not self._done.wait(wait):
            with self._lock:
                if self._done.is_set():
                    return
                el = self.clock() - self.t_begin
                msg = (f"compiling kernels for the first step: {el:.0f}s (numba; later runs load them "
                       f"from its cache)")
                if self.tty:
                    print("\r" + msg + "\x1b[K", end="", file=self.stream, flush=True)
                else:
                    print(msg, file=self.stream, flush=True)
                self.noticed = True
            wait = self.TICK

    def _first_step(self, step: int, loss: float):
        self._done.set()
        with self._lock:            # a tick line in the middle of being written ends first
            pass
        self.t0, self.first = self.clock(), step + 1
        took = self.t0 - self.t_begin
        if self.noticed:
            if self.tty:
                print("\r\x1b[K", end="", file=self.stream)
            print(f"step {step + 1}/{self.total}  loss {loss:.4f}  first step {took:.1f}s (kernels compiled; "
                  f"rate and ETA count from here)", file=self.stream, flush=True)
        elif not self.tty and ((step + 1) % self.every == 0 or step + 1 == self.total):
            print(f"step {step + 1}/{self.total}  loss {loss:.4f}", file=self.stream, flush=True)
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, initial=step + 1, unit="step", dynamic_ncols=True, file=self.stream)

    def update(self, step: int, loss: float, tokens_per_s: float):
        if not self.enabled:
            return
        if self.t0 is None:
            self._first_step(step, loss)
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
        elif (step + 1) % self.every == 0 or step + 1 == self.total:
            rate = (step + 1 - self.first) / max(self.clock() - self.t0, 1e-9)
            eta = (self.total - step - 1) / max(rate, 1e-9)
            print(f"step {step + 1}/{self.total}  loss {loss:.4f}  {rate:.1f} steps/s  "
                  f"{tokens_per_s:,.0f} tokens/s  ETA {eta:.0f}s", file=self.stream, flush=True)

    def write(self, msg: str):
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        elif self.enabled:
            with self._lock:
                if self.tty and self.noticed and self.t0 is None:
                    print("\r\x1b[K", end="", file=self.stream)
                print(msg, file=self.stream, flush=True)

    def close(self):
        self._done.set()
        if self.bar is not None:
            self.bar.close()


class NonFinite(Exception):
    pass


def first_nonfinite(model: Model) -> Optional[str]:
    ex = model.current
    for e in ex.plan.eqns:
        v = ex.F[e.out.offset:e.out.offset + e.out.rows * e.out.cols] if e.out.dtype == "f" else None
        if v is not None and not np.all(np.isfinite(v)):
            where = f" at {e.out.slot}" if e.out.slot else ""
            part = f" (its part {e.out.buf})" if "#" in e.out.buf else ""
            return f"'{e.node.split('#')[0] or e.out.buf}'{part}{where}"
    return None


def state_nodes(model: Model) -> list:
    """Recurrent states whose gradient over time is worth drawing: delayed-read nodes the user wrote."""
    g = model.graph
    read_delayed = {a.node for n in g.nodes.values() for a in n.args if a.mode == "step" and a.delay}
    return [n for n in g.nodes if n in read_delayed and "#" not in n and g.nodes[n].op not in ("input", "param")]


def grad_norms_over_time(model: Model, node: str) -> np.ndarray:
    b = model.current.plan.buffers[node]
    gv = model.current.view(node, grad=True)[b.pre:b.shape[0] - b.post]
    return np.sqrt((gv.astype(np.float64) ** 2).sum(axis=(1, 2)))


def run(spec: str, out: str, task_name: Optional[str] = None, data_path: Optional[str] = None,
        steps: Optional[int] = None, epochs: Optional[float] = None, batch: Optional[int] = None,
        lr: Optional[float] = None, seed: Optional[int] = None, resume: bool = False,
        progress: bool = True, stop_after: Optional[int] = None, overwrite: bool = False,
        options: Optional[dict] = None, sets: Optional[list] = None, dtype=np.float32) -> dict:
    """Train SPEC; returns the final validation metrics. `stop_after` ends the run early (after
    that many steps of this invocation) as if interrupted, writing last.npz: used by tests.
    `options`: train-section values given as flags (stop_at_target, patience, and the data file's
    vocabulary flags); `sets`: --set KEY=VALUE overrides (graphspec/overrides.py)."""
    from graphspec.overrides import load as load_with
    w = world()
    check_run_dir(out, resume, overwrite)
    sets = list(sets or [])
    g0, text = load_with(spec, sets)
    text = text if sets else None
    cfg = train_config(g0)
    for k, v in (("steps", steps), ("batch", batch), ("lr", lr), ("seed", seed)):
        if v is not None:
            cfg[k] = v
    options = dict(options or {})
    data_options = {k: options.pop(k) for k in DATA_OPTIONS if options.get(k) is not None}
    task = make_task(g0, data_path, task_name, data_options)
    bind = bind_dims(g0, task)
    g = graphspec.load(spec, text, bind=bind)
    tables = make_tables(g, task)
    if epochs is not None:
        cfg["steps"] = steps_for_epochs(task, epochs, int(cfg["batch"]))
    cfg.update({k: v for k, v in (options or {}).items() if v is not None})
    check_stopping(cfg)
    B, seed = int(cfg["batch"]), int(cfg["seed"])
    if w.size > 1 and cfg.get("per_example"):
        raise UserError(f"per_example training (word2vec's online updates) does not run data-parallel: its "
                        f"updates are sequential by definition; train it with one process (without mpiexec/--procs)")
    if w.size > 1 and (cfg.get("stop_at_target") or cfg.get("patience")):
        raise UserError("early stopping (stop_at_target, patience) does not run data-parallel yet: rank 0 alone "
                        "validates; train with one process, or without it")
    if w.size > B:
        raise UserError(f"batch {B} is smaller than the {w.size} ranks: each rank needs an example of every batch")
    model = Model(spec, bind=bind, text=text, seed=seed, tables=tables, dtype=dtype)
    if not model.nlearn or not g.losses:
        raise UserError(f"{spec}: nothing to train: {'no loss' if not g.losses else 'every param is learn: false'}")
    check_batch_fits(model, task, B, seed)
    if not resume:                  # params declared init: {file: ...}
        from .export.word2vec import apply_pretrained
        apply_pretrained(model, dim_vocabs(g0, task), log=lambda msg: print(msg, file=sys.stderr))
    opt = Optimizer(cfg, model.nlearn, model.dtype)
    meta = {"spec": os.path.abspath(spec), "spec_hash": spec_hash(spec, sets), "spec_text": read(spec).text,
            "bind": bind, "seed": seed, "task": getattr(task, "name", None), "data": data_path, "cfg": cfg,
            "vocab": _vocab_json(task)}
    if data_options:
        meta["data_options"] = data_options
    if sets:
        meta["set"] = sets

    def train_here():
        if not w.root:                # only rank 0 holds the run directory and writes
            return _train(out, model, opt, task, meta, resume, False, stop_after)
        with open_run_dir(out, resume, overwrite):       # locked until the training ends
            write_config(out, text or read(spec).text)
            res = _train(out, model, opt, task, meta, resume, progress, stop_after)
        if w.summary():
            print(w.summary(), file=sys.stderr)
        return res
    return guarded(train_here)


def write_config(out: str, text: str):
    """config.yaml: the spec as this run resolved it (the file's text, or with --set applied)."""
    from .rundir import write_atomic
    write_atomic(os.path.join(out, "config.yaml"), lambda f: f.write(text.encode("utf-8")))


def _train(out: str, model: Model, opt: Optimizer, task, meta: dict, resume: bool, progress: bool,
           stop_after: Optional[int]) -> dict:
    """The loop, in a locked run directory: from step 0, or from last.npz with --resume."""
    cfg = meta["cfg"]
    w = world()
    total, B, seed = int(cfg["steps"]), int(cfg["batch"]), int(cfg["seed"])
    rule = cfg.get("per_example")
    online = Online(model, opt, "word2vec" if rule == "word2vec" else "exact") if rule else None
    last, best = os.path.join(out, "last.npz"), os.path.join(out, "best.npz")
    metrics_path = os.path.join(out, "metrics.jsonl")
    start, best_loss, result = 0, math.inf, {}
    gradnorm_rows = []
    watch = Watch(cfg, out)
    if resume:
        start, best_loss, result = _resume(last, meta["spec_hash"], model, opt)
        if w.root:
            cut_metrics(metrics_path, start)
            gradnorm_rows = _load_gradnorms(out, start)
        watch.resume(last)
        if watch.stopped:
            if w.root:
                print(f"{out}: this run stopped early at step {start} ({watch.stopped}); nothing to resume",
                      file=sys.stderr)
            return dict(result, stopped=watch.stopped)
    w.broadcast(model.params)       # every rank starts from rank 0's params
    log = MetricsLog(metrics_path) if w.root else None
    if progress:
        print(startup_header(model, task, meta, out, start), file=sys.stderr, flush=True)
    bar = Progress(total, start, progress)
    states = state_nodes(model)
    eval_every = int(cfg["eval_every"])
    committed = [start]            # the step last.npz holds

    def commit(done: int, metrics: dict):
        """Logs durable up to step `done`, then last.npz says `done` (see runtime/rundir.py)."""
        if not w.root:
            committed[0] = done
            return
        log.sync()
        _save_gradnorms(out, gradnorm_rows)
        save_checkpoint(last, model, opt, done, dict(meta, best_loss=best_loss, metrics=metrics, **watch.state()))
        committed[0] = done

    step = start
    stop = []
    stopping = False       # every rank stops at the same step: the flag travels with the loss
    old_handler = _defer_sigint(stop)
    try:
        if not resume:
            commit(0, {})         # from here on the directory can always be resumed
        # after the first commit: a run killed before it is started again, not resumed
        if w.root:
            record_environment(out, environment(meta["spec"]))
        for step in range(start, total):
            if (stopping if w.size > 1 else stop) or (stop_after is not None and step - start >= stop_after):
                raise KeyboardInterrupt
            t0 = time.perf_counter()
            b = w.shard(round_lengths(task.batch("train", B, step, seed), model), model)
            _schedule_sampling(model, b, step, total)
            rate = learning_rate(cfg, step, total)
            if online is not None:                  # word2vec's updates: no batch gradient, no norm
                loss, norm = online.step(b, rate, _step_seed(seed, step)), None
                if not math.isfinite(loss):
                    raise NonFinite("loss")
            else:
                loss = model.forward(b, mode="train", seed=_step_seed(seed, step))
                loss, stopping = w.agree(loss, bool(stop))
                if not math.isfinite(loss):
                    raise NonFinite(first_nonfinite(model) or "loss (on another rank)")
                model.backward()
                w.reduce_grads(model)
                gvec = model.current.G[:model.nlearn]
                support = model.current.grad_support()
                norm, factor = clip_factor(gvec, float(cfg.get("clip") or 0), support)
                opt.step(model.current.F[:model.nlearn], gvec, rate, support, scale=factor)
            dt = time.perf_counter() - t0
            ntok = _tokens(b, model)
            # no wall time in the log: a resumed run's log must equal an uninterrupted one's
            rec = {"step": step + 1, "loss": loss, "lr": rate}
            if norm is not None:
                rec["grad_norm"] = norm
            if states and (step % max(1, eval_every // 4) == 0):
                gn = w.reduce_sq(grad_norms_over_time(model, states[0]))
                rec["grad_norm_t"] = gn.round(8).tolist()
                gradnorm_rows.append((step + 1, gn))
            if not w.root:
                continue
            log.append(rec)
            bar.update(step, loss, ntok / max(dt, 1e-9))
            if (step + 1) % eval_every == 0 or step + 1 == total:
                result = evaluate(model, task, cfg, seed=seed)
                result["step"] = step + 1
                improved = result["loss"] < best_loss
                log.append(dict(result, split="valid", best=True) if improved else dict(result, split="valid"))
                bar.write("valid " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in result.items()))
                if improved:
                    best_loss = result["loss"]
                    save_checkpoint(best, model, opt, step + 1, dict(meta, best_loss=best_loss, metrics=result))
                why = watch.validated(step + 1, step + 1 == total, result, improved, best_loss, lambda path: save_checkpoint(
                    path, model, opt, step + 1, dict(meta, best_loss=best_loss, metrics=result)))
                commit(step + 1, result)
                if why:
                    bar.write(f"stopping early at step {step + 1}: {why}")
                    break
        else:
            step = total
    except KeyboardInterrupt:
        _restore_sigint(old_handler)
        done = step              # steps start .. step-1 are complete; step was not begun
        commit(done, result)
        bar.close()
        if log:
            log.close()
        raise Interrupted(f"interrupted at step {done}; checkpoint written to {last} "
                          f"(continue with --resume)")
    except NonFinite as e:
        _restore_sigint(old_handler)
        bar.close()
        if log:
            log.close()
        raise Agreed(f"the loss became NaN/Inf at step {step + 1}: node {e} is the first non-finite value; "
                        f"last good checkpoint: {last} (step {committed[0]}). Try a lower --lr or a clip in the "
                        f"train section") from None
    except OSError as e:          # a full disk, a directory made read-only: the last commit stands
        _restore_sigint(old_handler)
        bar.close()
        if log:
            log.close(flush=False)
        raise UserError(f"cannot write {e.filename or out}: {e.strerror or e}; {last} holds step {committed[0]}, "
                        f"intact (continue with --resume)") from None
    _restore_sigint(old_handler)
    bar.close()
    if not w.root:
        return result
    log.close()
    _save_gradnorms(out, gradnorm_rows)
    _save_attention(model, task, out, seed)
    if hasattr(task, "quality"):
        E = _embedding(model)
        if E is not None:
            result.update(task.quality(E))
    if watch.stopped:
        result["stopped"] = watch.stopped
    if watch.best_step is not None:
        result["best_step"] = watch.best_step       # the step best.npz holds
    return result


def _lower_is_better(metric: str) -> bool:
    return metric in ("ppl", "mse", "loss")


def check_stopping(cfg: dict):
    """Train-section values that only make sense together, checked before any work."""
    if cfg.get("stop_at_target") and not cfg.get("target"):
        raise UserError("train.stop_at_target: the spec has no train.target to stop at")
    if int(cfg.get("warmup") or 0) >= int(cfg["steps"]):
        raise UserError(f"train.warmup {cfg['warmup']}: not fewer than the run's {cfg['steps']} steps")


class Watch:
    """What the validation losses decide: stopping early (at the target, with stop_at_target;
    after `patience` validations without a lower loss) and which checkpoints to keep (keep_best:
    the K lowest, as best-stepS.npz). Its state travels in last.npz's meta, so a resumed run
    decides exactly as an uninterrupted one."""

    def __init__(self, cfg: dict, out: str):
        self.out = out
        self.target = dict(cfg.get("target") or {}) if cfg.get("stop_at_target") else {}
        self.patience = int(cfg.get("patience") or 0)
        self.keep = int(cfg.get("keep_best") or 0)
        self.best_step, self.bad, self.top, self.stopped = None, 0, [], None

    def state(self) -> dict:
        return {"best_step": self.best_step, "bad_evals": self.bad, "top": [list(x) for x in self.top],
                "stopped": self.stopped}

    def resume(self, last: str):
        ck = ckpt.open_checkpoint(last)
        try:
            m = ck.meta
        finally:
            ck.close()
        self.best_step, self.bad = m.get("best_step"), int(m.get("bad_evals") or 0)
        self.top, self.stopped = [(float(a), int(b)) for a, b in m.get("top") or []], m.get("stopped")
        from .rundir import kept_checkpoints
        kept = {self.path(s) for _, s in self.top}
        for name in kept_checkpoints(self.out):      # written after the checkpoint we resume from
            if os.path.join(self.out, name) not in kept:
                os.unlink(os.path.join(self.out, name))

    def path(self, step: int) -> str:
        return os.path.join(self.out, f"best-step{step}.npz")

    def validated(self, step: int, final: bool, result: dict, improved: bool, best_loss: float,
                  save) -> Optional[str]:
        """After a validation: keep its checkpoint if it ranks (save(path) writes it); the reason
        to stop here, or None (always at the final step: the run ends anyway)."""
        if improved:
            self.best_step, self.bad = step, 0
        else:
            self.bad += 1
        if self.keep:
            self.top = sorted(self.top + [(float(result["loss"]), step)])
            if (float(result["loss"]), step) in self.top[:self.keep]:
                save(self.path(step))
            for _, s in self.top[self.keep:]:
                if os.path.exists(self.path(s)):
                    os.unlink(self.path(s))
            self.top = self.top[:self.keep]
        if final:
            return None
        if self.target and all(k in result for k in self.target) and all(
                (result[k] <= v) if _lower_is_better(k) else (result[k] >= v) for k, v in self.target.items()):
            self.stopped = "target " + ", ".join(f"{k} {'<=' if _lower_is_better(k) else '>='} {v} ({result[k]:.4g})"
                                                 for k, v in self.target.items()) + " reached"
        elif self.patience and self.bad >= self.patience:
            self.stopped = (f"no lower validation loss in {self.bad} validations (the lowest, {best_loss:.4g}, "
                            f"at step {self.best_step})")
        return self.stopped


def steps_for_epochs(task, epochs: float, batch: int) -> int:
    per_epoch = getattr(task, "steps_per_epoch", lambda b: 1000)(batch)
    steps = int(epochs * per_epoch)
    if steps < 1:
        raise UserError(f"--epochs {epochs}: less than one step (an epoch is {per_epoch} steps of batch {batch})")
    return steps


def check_batch_fits(model: Model, task, B: int, seed: int):
    """Compile the plans of the first train and valid batches at batch size B (the compiler's
    size checks refuse what cannot fit) from one-example probes, before a batch of B is built.
    A task that cannot make batches says why here, not in the middle of the loop."""
    for split, mode in (("train", "train"), ("valid", "eval")):
        try:
            probe = round_lengths(task.batch(split, 1, 0, seed), model)
        except ValueError as e:
            raise UserError(str(e)) from None
        lengths, _ = model.shape_of(probe)
        model.plan(lengths, B, mode)


def _resume(last: str, h: str, model: Model, opt: Optimizer) -> tuple:
    """(step, best loss, last validation metrics) of last.npz, its params and optimizer state
    loaded; a checkpoint of another spec or a damaged one is refused."""
    ck = ckpt.open_checkpoint(last)
    try:
        if ck.meta["spec_hash"] != h:
            raise UserError(f"{last} was written for a different spec (hash {ck.meta['spec_hash']}, "
                            f"this spec is {h}); train into a new --out directory")
        load_state(ck, model, opt)
    finally:
        ck.close()
    return ck.meta["step"], float(ck.meta.get("best_loss", math.inf)), dict(ck.meta.get("metrics") or {})


def _save_attention(model, task, out, seed):
    """The attention weights of one validation example, decoded free running (for plot)."""
    g = model.graph
    att = [op.node for op in g.outputs.values() if g.nodes[op.node].op == "tsoftmax"]
    if not att:
        return
    batch = task.batch("valid", 1, 0, seed)
    mode = "free" if _has_teacher_forcing(model) else "eval"
    model.forward(batch, mode=mode, seed=seed)
    b = model.current.plan.buffers[att[0]]
    w = model.current.view(att[0])[b.pre:b.shape[0] - b.post, :, 0]      # [T_tgt, S*1]
    src_field = next(n.attrs["field"] for n in g.nodes.values() if n.op == "input" and n.axis and not n.attrs.get("target")
                     and n.attrs.get("kind") == "tokens")
    src_len = int(np.asarray(batch[src_field + "_mask"])[:, 0].sum())
    sv = getattr(task, "src_vocab", None) or task.vocab
    tv = getattr(task, "tgt_vocab", None) or task.vocab
    logits = next(g.nodes[x].args[0].node for x in g.losses if g.nodes[x].op == "cross_entropy")
    lb = model.current.plan.buffers[logits]
    pred = model.current.view(logits)[lb.pre:lb.shape[0] - lb.post, 0].argmax(-1)
    tgt = []
    for i in pred:
        tgt.append(tv.itos[int(i)])
        if int(i) == 3:
            break
    src = [sv.itos[int(i)] for i in np.asarray(batch[src_field])[:src_len, 0]]
    save_npz(os.path.join(out, "attention.npz"), {"weights": w[:len(tgt), :src_len].astype(np.float64),
                                                  "src": np.array(src), "tgt": np.array(tgt)})


def _embedding(model):
    for n in model.graph.nodes.values():
        if n.op in ("embed", "embed_mean"):
            return model.param(n.args[0].node).astype(np.float64)
    return None


def _defer_sigint(flag: list):
    """Ctrl-C sets a flag the loop checks between steps (a checkpoint then holds whole steps)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *a: flag.append(1))


def _restore_sigint(handler):
    import signal
    import threading
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)


def _schedule_sampling(model, batch, step, total):
    """Scheduled sampling with schedule='linear': the probability of feeding the model's own
    guess rises from 0 at the first step to `sampling` at the last."""
    g = model.graph
    mixes = {n.name: n.attrs for n in g.nodes.values() if n.op == "mix" and n.attrs.get("schedule") == "linear"}
    if not mixes:
        return
    lengths, B = model.shape_of(batch)
    ex = model.executor(lengths, B, "train")
    for i, e in enumerate(ex.plan.eqns):
        if e.op == "mix" and e.node in mixes:
            ex.attrs[i, 0] = mixes[e.node]["prob"] * step / max(total - 1, 1)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 17) & 0x7FFFFFFF


def _tokens(batch: dict, model: Model) -> int:
    for n in model.graph.nodes.values():
        if n.op == "input" and n.attrs.get("kind") == "mask":
            f = n.attrs["field"]
            if f in batch:
                return int(np.asarray(batch[f]).sum())
    for v in batch.values():
        return int(np.asarray(v).shape[0])
    return 0


def _save_gradnorms(out: str, rows):
    if not rows:
        return
    T = max(len(r[1]) for r in rows)
    arr = np.full((len(rows), T + 1), np.nan)
    for i, (s, gn) in enumerate(rows):
        arr[i, 0] = s
        arr[i, 1:1 + len(gn)] = gn
    save_npy(os.path.join(out, "gradnorm.npy"), arr)


def _load_gradnorms(out: str, step: int):
    arr = read_gradnorm(os.path.join(out, "gradnorm.npy"))
    if arr is None:
        return []
    return [(int(r[0]), r[1:][~np.isnan(r[1:])]) for r in arr if r[0] <= step]


def _vocab_json(task):
    out = {}
    for name in ("vocab", "src_vocab", "tgt_vocab"):
        v = getattr(task, name, None)
        if v is not None and hasattr(v, "to_json"):
            out[name] = v.to_json()
    return out
