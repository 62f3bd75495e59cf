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
    s.add_argument("spec")
    s.add_argument("--task", help="a built-in task (default: the spec's data.task)")
    s.add_argument("--data", help="a data file: TSV source<TAB>target pairs, or plain text")
    s.add_argument("--steps", type=flags.spec_value("train", "steps"))
    s.add_argument("--epochs", type=flags.number(float, 0, lo_open=True))
    s.add_argument("--batch", type=flags.spec_value("train", "batch"))
    s.add_argument("--lr", type=flags.spec_value("train", "lr"))
    s.add_argument("--seed", type=flags.spec_value("train", "seed"))
    s.add_argument("--out", default=None, help="run directory (default runs/NAME)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    s.add_argument("--overwrite", action="store_true", help="start again in an OUT that holds an earlier run")
    s.add_argument("--quiet", action="store_true", help="no progress output")
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

    s = sub.add_parser("eval", help="evaluate a checkpoint on validation (or test) data")
    s.add_argument("ckpt")
    s.add_argument("--split", default="valid", choices=["valid", "test"])
    s.add_argument("--batches", type=flags.number(int, 1, MAX_EVAL_BATCHES), default=8)
    s.add_argument("--data")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("predict", help="decode an input with a trained encoder-decoder")
    s.add_argument("ckpt")
    s.add_argument("text")
    s.add_argument("--beam", type=flags.number(int, 1, MAX_BEAM), default=1, help="beam width (1: greedy)")
    s.add_argument("--max-len", type=flags.number(int, 1, MAX_DECODE_LEN), default=40,
                   help="most output tokens")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("generate", help="sample text from a trained language model")
    s.add_argument("ckpt")
    s.add_argument("--prompt", default="")
    s.add_argument("--temperature", type=flags.number(float, 0), default=0.8, help="0: always the likeliest")
    s.add_argument("--length", type=flags.number(int, 0, MAX_GENERATE), default=200, help="characters to sample")
    s.add_argument("--seed", type=flags.spec_value("train", "seed"), default=0)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("neighbors", help="nearest words of a trained embedding")
    s.add_argument("ckpt")
    s.add_argument("word", nargs="?")
    s.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="b - a + c")
    s.add_argument("-k", type=flags.number(int, 1, MAX_NEIGHBORS), default=10)
    s.set_defaults(fn=cmd_neighbors)

    s = sub.add_parser("export", help="a trained model as ONNX (checked by ONNX Runtime), or its word "
                                      "vectors in word2vec's format")
    s.add_argument("ckpt")
    s.add_argument("-o", "--output", required=True, help="model.onnx | vectors.txt | vectors.bin")
    s.add_argument("--format", default="onnx", choices=["onnx", "word2vec"])
    s.add_argument("--binary", action="store_true", help="word2vec's binary format (default: text)")
    s.add_argument("--param", help="the table to write as word vectors (default: the one the model looks up)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("gradcheck", help="finite-difference check of every parameter's gradient (float64)")
    s.add_argument("specs", nargs="+")
    s.add_argument("--tol", type=flags.number(float, 0, lo_open=True), default=1e-6)
    s.set_defaults(fn=cmd_gradcheck)

    s = sub.add_parser("viz", help="draw the folded graph, or the unrolled one with --unroll N")
    s.add_argument("spec")
    s.add_argument("-o", "--output", required=True, help="out.svg | out.png | out.dot")
    s.add_argument("--unroll", type=flags.number(int, 1, MAX_UNROLL), help="steps per axis to unroll")
    s.set_defaults(fn=cmd_viz)

    s = sub.add_parser("plot", help="loss curves, gradient norm over time, attention, eigenvalues")
    s.add_argument("run_dir")
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
              progress=not args.quiet, stop_after=args.stop_after, overwrite=args.overwrite, sets=args.sets)
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
        task = make_task(g0, mode_data or meta.get("data"), meta.get("task"))
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
    from .train import check_batch_fits, evaluate
    model, task, meta = restore(args.ckpt, args.data)
    check_batch_fits(model, task, int(meta["cfg"]["batch"]), meta["seed"] + 1)    # the batch a checkpoint names
    res = evaluate(model, task, meta["cfg"], split=args.split, batches=args.batches, seed=meta["seed"] + 1)
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- decoding
def cmd_predict(args):
    from .decode import beam_search
    model, task, meta = restore(args.ckpt)
    _needs("predict", args.ckpt, model, task, meta)
    src_vocab = getattr(task, "src_vocab", None) or task.vocab
    tgt_vocab = getattr(task, "tgt_vocab", None) or task.vocab
    hyps = beam_search(model, src_vocab, tgt_vocab, args.text, beam=args.beam, max_len=args.max_len)
    for text, score in hyps[:max(1, min(args.beam, 5))]:
        print(f"{text}\t{score:.3f}" if args.beam > 1 else text)
    return 0


def cmd_generate(args):
    from .decode import sample_text
    model, task, meta = restore(args.ckpt)
    _needs("generate", args.ckpt, model, task, meta)
    print(sample_text(model, task.vocab, args.prompt, args.length, args.temperature, args.seed))
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
    for w, s in rows:
        print(f"{w}\t{s:.3f}")
    return 0


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
