"""The verbs that run models: train, eval, predict, generate, neighbors, export, gradcheck, viz, plot.

Registered into cli.py's parser. This module imports nothing heavy at import time, so
`graphspec validate` never pays for numba.
"""
from __future__ import annotations

import json
import os
import sys

from graphspec import flags
from graphspec.errors import UserError
from graphspec.limits import MAX_UNROLL

# Bounds of the loops a decoding flag drives: each step of them runs the model once.
MAX_GENERATE = 100_000          # characters sampled
MAX_BEAM = 100
MAX_DECODE_LEN = 1000           # target steps of beam search (each compiles a longer plan)
MAX_NEIGHBORS = 10_000
MAX_EVAL_BATCHES = 100_000
MAX_PROCS = 4096


def register(sub):
    s = sub.add_parser("train", help="train a spec on its built-in task or a data file")
    s.add_argument("spec", help="a spec file (YAML)")
    s.add_argument("--task", help="a built-in task (default: the spec's data.task)")
    s.add_argument("--data", help="a data file: TSV source<TAB>target pairs, or plain text")
    s.add_argument("--tokens", choices=["chars", "words"],
                   help="a --data file's tokens: characters (default) or words (split at white space)")
    s.add_argument("--min-count", type=flags.number(int, 1, 1_000_000), metavar="N",
                   help="a --data file's vocabulary: tokens seen fewer than N times in training read as <unk>")
    s.add_argument("--max-vocab", type=flags.number(int, 1, 10_000_000), metavar="N",
                   help="a --data file's vocabulary: at most the N most frequent tokens (--tokens words)")
    s.add_argument("--steps", type=flags.spec_value("train", "steps"), help="training steps (the spec's train.steps)")
    s.add_argument("--epochs", type=flags.number(float, 0, lo_open=True),
                   help="train for this many passes over the training split instead of --steps")
    s.add_argument("--batch", type=flags.spec_value("train", "batch"), help="batch size (the spec's train.batch)")
    s.add_argument("--lr", type=flags.spec_value("train", "lr"), help="learning rate (the spec's train.lr)")
    s.add_argument("--seed", type=flags.spec_value("train", "seed"),
                   help="seed of the initial params, the batches and every random draw (the spec's train.seed)")
    s.add_argument("--out", default=None, help="run directory (default runs/NAME)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    s.add_argument("--overwrite", action="store_true", help="start again in an OUT that holds an earlier run")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.add_argument("--stop-at-target", action="store_true", default=None,
                   help="stop at the first validation that reaches the spec's train.target")
    s.add_argument("--patience", type=flags.spec_value("train", "patience"), metavar="N",
                   help="stop after N validations without a lower validation loss")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a value of the spec: train.clip=1, dims.H=64, data.length=100 (repeatable; "
                        "recorded in OUT/config.yaml)")
    s.add_argument("--procs", type=flags.number(int, 1, MAX_PROCS), default=1,
                   help="data-parallel over N processes: runs this command under mpiexec -n N (the mpi extra)")
    s.add_argument("--stop-after", type=flags.number(int, 0), help=argparse_hidden())
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("sweep", help="train a grid of --set values (and seeds): a run directory each, a results "
                                     "table and a plot; the same command continues an interrupted sweep")
    s.add_argument("specs", nargs="+", metavar="SPEC", help="one spec, or several: one more axis of the grid")
    s.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2,...", dest="sets",
                   help="a swept value (several values: a grid axis) or a fixed one (one value); repeatable")
    s.add_argument("--seeds", type=flags.number(int, 1, 1000), help="K runs per point, train.seed=0..K-1")
    s.add_argument("--procs", type=flags.number(int, 1, MAX_PROCS), default=1,
                   help="trainings at once on this machine (under mpiexec: the ranks share the grid instead)")
    s.add_argument("--out", help="sweep directory (default sweeps/NAME)")
    s.add_argument("--metric", help="the metric of the table's plot (default: the spec's target, else loss)")
    s.add_argument("--quiet", action="store_true", help="no line per run")
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("eval", help="evaluate a checkpoint on the whole validation (or test) split")
    s.add_argument("ckpt", help="a checkpoint: RUN_DIR/best.npz or RUN_DIR/last.npz")
    s.add_argument("--split", default="valid", choices=["valid", "test"],
                   help="the held-out split to evaluate on (docs/data.md: how each is chosen)")
    s.add_argument("--batches", type=flags.number(int, 1, MAX_EVAL_BATCHES), default=None,
                   help="only the first N batches (default: the whole split; 8 batches for a task that "
                        "draws its examples)")
    s.add_argument("--data", help="evaluate on this data file's split instead of the training data")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("predict", help="decode inputs with a trained encoder-decoder: TEXT, or a file of lines")
    s.add_argument("ckpt", help="a checkpoint of an encoder-decoder (RUN_DIR/best.npz)")
    s.add_argument("text", nargs="*", help="inputs to decode (or --input)")
    s.add_argument("--input", "-i", metavar="FILE", help="decode every non-empty line of FILE ('-': stdin)")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="write the outputs to FILE (one line per input; with --nbest, K lines per input)")
    s.add_argument("--beam", type=flags.number(int, 1, MAX_BEAM), default=None,
                   help="beam width (default: --nbest, 1 without it: greedy)")
    s.add_argument("--nbest", type=flags.number(int, 1, MAX_BEAM), default=1,
                   help="the K best outputs of beam search, each as INPUT_NO<TAB>TEXT<TAB>LOG_PROB")
    s.add_argument("--max-len", type=flags.number(int, 1, MAX_DECODE_LEN), default=40,
                   help="most output tokens")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("generate", help="sample text from a trained language model")
    s.add_argument("ckpt", help="a checkpoint of a language model (RUN_DIR/best.npz)")
    s.add_argument("--prompt", default="", help="the text to continue (default: none)")
    s.add_argument("--input", "-i", metavar="FILE",
                   help="one sample per non-empty line of FILE ('-': stdin), written as JSON lines "
                        "{\"prompt\": ..., \"text\": ...}")
    s.add_argument("-o", "--output", metavar="FILE", help="write the samples to FILE instead of stdout")
    s.add_argument("--temperature", type=flags.number(float, 0), default=0.8, help="0: always the likeliest")
    s.add_argument("--length", type=flags.number(int, 0, MAX_GENERATE), default=200, help="tokens to sample (characters, or words for a word model)")
    s.add_argument("--seed", type=flags.spec_value("train", "seed"), default=0,
                   help="seed of the sampling (the Nth prompt of --input samples with seed + N - 1)")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("tasks", help="the built-in tasks: what each draws, its vocabulary, metric and an example")
    s.add_argument("names", nargs="*", metavar="TASK", help="only these tasks (default: all)")
    s.set_defaults(fn=cmd_tasks)

    s = sub.add_parser("neighbors", help="nearest words of a trained embedding")
    s.add_argument("ckpt", help="a checkpoint of a model with an embedding table (RUN_DIR/best.npz)")
    s.add_argument("word", nargs="?", help="the word whose nearest words to list (by cosine)")
    s.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="b - a + c")
    s.add_argument("-k", type=flags.number(int, 1, MAX_NEIGHBORS), default=10, help="how many words (default 10)")
    s.set_defaults(fn=cmd_neighbors)

    s = sub.add_parser("export", help="a trained model as ONNX (checked by ONNX Runtime), or its word "
                                      "vectors in word2vec's format")
    s.add_argument("ckpt", help="a checkpoint (RUN_DIR/best.npz)")
    s.add_argument("-o", "--output", required=True, help="model.onnx | vectors.txt | vectors.bin")
    s.add_argument("--format", default="onnx", choices=["onnx", "word2vec"],
                   help="onnx: the model (docs/export.md); word2vec: its word vectors (default onnx)")
    s.add_argument("--binary", action="store_true", help="word2vec's binary format (default: text)")
    s.add_argument("--param", help="the table to write as word vectors (default: the one the model looks up)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("gradcheck", help="finite-difference check of every parameter's gradient (float64)")
    s.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    s.add_argument("--tol", type=flags.number(float, 0, lo_open=True), default=1e-6,
                   help="the largest relative error that passes (default 1e-6)")
    s.set_defaults(fn=cmd_gradcheck)

    s = sub.add_parser("viz", help="draw the folded graph, or the unrolled one with --unroll N")
    s.add_argument("spec", help="a spec file (YAML)")
    s.add_argument("-o", "--output", required=True, help="out.svg | .pdf | .png | .jpg | .dot")
    s.add_argument("--unroll", type=flags.number(int, 1, MAX_UNROLL), help="steps per axis to unroll")
    s.set_defaults(fn=cmd_viz)

    s = sub.add_parser("plot", help="loss curves, gradient norm over time, attention, eigenvalues")
    s.add_argument("run_dir", help="a run directory (runs/NAME)")
    s.add_argument("-o", "--output", help="directory for the PNGs (default: the run directory)")
    s.set_defaults(fn=cmd_plot)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


# ---------------------------------------------------------------- train / eval
def cmd_train(args):
    from .distributed import world
    w = world()
    try:
        return _train_cmd(args, w)
    except BaseException as e:
        if w.size > 1 and not w.started:       # the other ranks must not wait for this one
            w.setup_done(e)
        raise


def _train_cmd(args, w):
    from graphspec.overrides import load as load_with
    g, _ = load_with(args.spec, args.sets)
    out = args.out or os.path.join("runs", g.name)       # the schema keeps a name one plain component
    if args.procs > 1:
        return _launch(args, out)
    from .train import run
    res = run(args.spec, out, task_name=args.task, data_path=args.data, steps=args.steps,
              epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, resume=args.resume,
              progress=not args.quiet, stop_after=args.stop_after, overwrite=args.overwrite, sets=args.sets,
              options={"stop_at_target": args.stop_at_target, "patience": args.patience,
                       "tokens": args.tokens, "min_count": args.min_count, "max_vocab": args.max_vocab})
    if not w.root:
        return 0
    target = (g.train or {}).get("target") or {}
    print(json.dumps({"run": out, **{k: v for k, v in res.items()}}))
    for k, want in target.items():
        if k in res:
            lower = k in ("ppl", "mse", "loss")
            ok = res[k] <= want if lower else res[k] >= want
            print(f"target {k} {'<=' if lower else '>='} {want}: {'reached' if ok else 'NOT reached'} "
                  f"({res[k]:.4g})", file=sys.stderr)
    return 0


def _launch(args, out: str) -> int:
    """--procs N: this command again under mpiexec; a rank that died is said in one line, with
    the checkpoint the run can continue from."""
    from .checkpoint import open_checkpoint
    from .distributed import launch, launched_by_mpi, strip_procs
    if launched_by_mpi():
        raise UserError(f"--procs {args.procs}: this process was already started by an MPI launcher; "
                        f"give the ranks to mpiexec -n or to --procs, not both")
    import cli
    code = launch(strip_procs(args.argv), args.procs, os.path.abspath(cli.__file__))
    if code in (0, 2, 130):          # done, or a message the ranks printed themselves
        return code
    last, where = os.path.join(out, "last.npz"), "no checkpoint was written"
    if os.path.exists(last):
        try:
            ck = open_checkpoint(last)
            where = f"{last} holds step {ck.meta['step']}, intact (continue with --resume)"
            ck.close()
        except UserError as e:
            where = str(e)
    raise UserError(f"--procs {args.procs}: a rank ended abnormally (mpiexec exit {code}); {where}")


def cmd_sweep(args):
    from graphspec.overrides import load as load_with
    from .sweep import run_sweep
    g, _ = load_with(args.specs[0], [])
    out = args.out or os.path.join("sweeps", g.name)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out}: exists and is not a directory")
    res = run_sweep(args.specs, args.sets, out, seeds=args.seeds, procs=args.procs, metric=args.metric,
                    log=(lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True)))
    if res:
        print(json.dumps(res))
    return 0


def restore(path: str, mode_data=None):
    """(model, task, meta) from a checkpoint: its meta checked, its spec unchanged since, its
    params exactly the spec's."""
    import graphspec
    from .checkpoint import open_checkpoint
    from .model import Model
    from .train import bind_dims, load_state, make_tables, make_task, spec_hash
    ck = open_checkpoint(path)
    try:
        meta = ck.meta
        spec = meta["spec"]
        if not os.path.exists(spec):
            raise UserError(f"{path}: its spec {spec} is gone; the checkpoint carries its text in meta['spec_text']")
        sets = meta.get("set") or []
        if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
            raise UserError(f"{path}: meta 'set' is not a list of KEY=VALUE strings")
        if spec_hash(spec, sets) != meta["spec_hash"]:
            raise UserError(f"{path} was trained from a different version of {spec} (hash {meta['spec_hash']}, "
                            f"now {spec_hash(spec, sets)})")
        from graphspec.overrides import load as load_with
        g0, text = load_with(spec, sets)
        text = text if sets else None
        task = make_task(g0, mode_data or meta.get("data"), meta.get("task"), meta.get("data_options"))
        bind = bind_dims(g0, task)
        model = Model(spec, bind=bind, text=text,
                      tables=make_tables(graphspec.load(spec, text, bind=bind), task))
        load_state(ck, model)
    finally:
        ck.close()
    return model, task, meta


def decoding_verbs(model, task) -> list:
    """The verbs a trained model can serve, from its inputs and its task's vocabularies."""
    from .decode import kinds
    return ["eval"] + kinds(model, task)


def _needs(verb: str, path: str, model, task, meta):
    verbs = decoding_verbs(model, task)
    if verb not in verbs:
        what = {"generate": "a language model over tokens (tokens in, the next token out, on one axis)",
                "predict": "an encoder-decoder over tokens (a source and a target on two axes)",
                "neighbors": "a model with an embedding table (E[x] or embed_mean) and a vocabulary"}[verb]
        raise UserError(f"{path}: {verb} needs {what}; this checkpoint ({model.graph.name}, task "
                        f"{meta.get('task') or meta.get('data')}) supports: {', '.join(verbs)}")


def cmd_eval(args):
    from .train import check_batch_fits, evaluate_split
    model, task, meta = restore(args.ckpt, args.data)
    check_batch_fits(model, task, int(meta["cfg"]["batch"]), meta["seed"] + 1)    # the batch a checkpoint names
    res = evaluate_split(model, task, meta["cfg"], args.split, args.batches, seed=meta["seed"] + 1)
    print(json.dumps(dict(res, checkpoint_step=meta.get("step"))))
    return 0


# ---------------------------------------------------------------- decoding
def _inputs(args) -> list:
    """[(where, text)]: the positional texts (where: None) or the lines of --input (where:
    FILE:LINE, for messages), never both."""
    texts = getattr(args, "text", None) or []
    if args.input is not None and texts:
        raise UserError(f"{args.cmd}: give inputs as arguments or with --input, not both")
    if args.input is not None:
        from .decode import read_inputs
        name = "stdin" if args.input == "-" else args.input
        return [(f"{name}:{n}", line) for n, line in read_inputs(args.input)]
    return [(None, t) for t in texts]


def _check_output(path):
    """-o: refused before any decoding when it cannot be written."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UserError(f"-o {path}: is a directory")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UserError(f"-o {path}: directory {d} does not exist")


def cmd_predict(args):
    from .decode import Output, beam_search
    inputs = _inputs(args)
    if not inputs:
        raise UserError("predict: give the TEXT to decode, or --input FILE ('-' reads stdin)")
    beam = args.beam or args.nbest
    if args.nbest > beam:
        raise UserError(f"predict: --nbest {args.nbest} needs a beam at least as wide (--beam {beam})")
    _check_output(args.output)
    model, task, meta = restore(args.ckpt)
    _needs("predict", args.ckpt, model, task, meta)
    from .userdata import check_seen
    for where, text in inputs:
        check_seen(task, text, where or "predict")
    src_vocab = getattr(task, "src_vocab", None) or task.vocab
    tgt_vocab = getattr(task, "tgt_vocab", None) or task.vocab
    out = Output(args.output)
    for n, (where, text) in enumerate(inputs, 1):
        try:
            hyps = beam_search(model, src_vocab, tgt_vocab, text, beam=beam, max_len=args.max_len,
                               tokens=getattr(task, "tokens", "chars"))
        except UserError as e:
            if where is None:
                raise
            raise UserError(f"{where}: {e}") from None
        if args.nbest == 1:
            out.line(hyps[0][0])
        else:
            for hyp, score in hyps[:args.nbest]:
                out.line(f"{n}\t{hyp}\t{score:.4f}")
    out.close()
    return 0


def cmd_generate(args):
    from .decode import Output, sample_text
    if args.input is not None and args.prompt:
        raise UserError("generate: give --prompt or --input, not both")
    prompts = _inputs(args) if args.input is not None else [("--prompt", args.prompt)]
    _check_output(args.output)
    model, task, meta = restore(args.ckpt)
    _needs("generate", args.ckpt, model, task, meta)
    from .userdata import check_seen
    for where, prompt in prompts:
        check_seen(task, prompt, where if args.input is not None else "generate --prompt", source=False)
    out = Output(args.output)
    for i, (where, prompt) in enumerate(prompts):
        text = sample_text(model, task.vocab, prompt, args.length, args.temperature, args.seed + i,
                           tokens=getattr(task, "tokens", "chars"))
        out.line(json.dumps({"prompt": prompt, "text": text}) if args.input is not None else text)
    out.close()
    return 0


def cmd_tasks(args):
    import glob
    import re
    from .tasks import TASKS, describe, get_task
    for name in args.names:
        if name not in TASKS:
            try:
                get_task(name)            # says which task was meant
            except ValueError as e:
                raise UserError(str(e)) from None
    used = {}
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")
    for path in sorted(glob.glob(os.path.join(here, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            m = re.search(r"^data:\s*\{\s*task:\s*(\w+)", f.read(), re.M)
        if m:
            used.setdefault(m.group(1), []).append(os.path.basename(path)[:-5])
    for i, name in enumerate(args.names or TASKS):
        d = describe(name)
        print(("\n" if i else "") + f"{name}: {d['doc']}")
        rows = [("draws", d["draws"]), ("vocabulary", d["vocab"]), ("params", d["params"]),
                ("metric", d["metric"]), ("example", d["example"])]
        if name in used:
            rows.append(("specs", ", ".join(used[name])))
        for k, v in rows:
            print(f"  {k:11}{v}")
    return 0


def cmd_neighbors(args):
    from .decode import analogy, embedding_vocab, neighbors
    if not args.word and not args.analogy:
        raise UserError("neighbors: give a WORD or --analogy A B C")
    if args.word and args.analogy:
        raise UserError("neighbors: give a WORD or --analogy A B C, not both")
    model, task, meta = restore(args.ckpt)
    _needs("neighbors", args.ckpt, model, task, meta)
    vocab = embedding_vocab(model, task)
    if args.analogy:
        rows = analogy(model, vocab, *args.analogy, k=args.k)
    else:
        rows = neighbors(model, vocab, args.word, k=args.k)
    import numpy as np
    base = random_pair_cosines(model)
    # trained vectors share a common direction: random pairs of words can average a cosine of 0.95,
    # so a cosine alone says little; its rank among random pairs says how near a neighbour is
    print(f"graphspec: word, cosine, and the share of random pairs of words with a lower cosine (their "
          f"median is {np.median(base):.3f})", file=sys.stderr)
    for w, s in rows:
        print(f"{w}\t{s:.3f}\t{100 * np.searchsorted(base, s) / len(base):.1f}%")
    return 0


def random_pair_cosines(model, pairs: int = 20_000):
    """The sorted cosines of random pairs of distinct words (seeded: the same every run)."""
    import numpy as np
    from .decode import _unit_rows, embedding_matrix
    U = _unit_rows(embedding_matrix(model))[4:]          # the reserved rows are no words
    i, j = np.random.default_rng(0).integers(0, len(U), (2, pairs))
    return np.sort((U[i[i != j]] * U[j[i != j]]).sum(axis=1))


def cmd_export(args):
    from .export import export
    export(args.ckpt, args.output, args.format, binary=args.binary, param=args.param)
    return 0


# ---------------------------------------------------------------- checks and pictures
def cmd_gradcheck(args):
    from .gradcheck import check
    bad = 0
    for spec in args.specs:
        errs = check(spec)
        worst = max(errs.values()) if errs else 0.0
        status = "OK" if worst < args.tol else "FAIL"
        bad += status == "FAIL"
        print(f"{spec}: {status}  max relative error {worst:.2e} over {len(errs)} params")
        for k, v in sorted(errs.items(), key=lambda kv: -kv[1]):
            print(f"  {k:28} {v:.2e}")
    return 1 if bad else 0


def cmd_viz(args):
    from graphspec.draw import viz
    counts = viz(args.spec, args.output, unroll=args.unroll)
    print(f"wrote {args.output} ({counts['nodes']} nodes, {counts['edges']} edges)")
    if "note" in counts:
        print(f"graphspec: note: {counts['note']}", file=sys.stderr)
    return 0


def cmd_plot(args):
    from .plots import plot_run
    from .rundir import RUN_FILES
    if not os.path.isdir(args.run_dir):
        raise UserError(f"{args.run_dir}: not a run directory")
    if args.output and os.path.lexists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"-o {args.output}: exists and is not a directory")
    written = plot_run(args.run_dir, args.output)
    if not written:
        raise UserError(f"{args.run_dir}: nothing to plot (no training has written "
                        f"{', '.join(n for n in RUN_FILES if n != 'best.npz')} here)")
    for path in written:
        print(f"wrote {path}")
    return 0
