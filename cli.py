"""graphspec: validate, compile, train, decode and draw sequence models written as YAML specs.

Spec errors print as `file:line:col: message` and exit with code 2; no traceback, ever, for
bad input. Exit codes, for every verb: 0 done, 2 bad input (a spec, a flag, a file, a path that
cannot be written), 130 interrupted (Ctrl-C; train writes a checkpoint first), 70 a bug of ours
(one line; GRAPHSPEC_DEBUG=1 shows the traceback); `gradcheck` exits 1 when a gradient fails its
check. Only the verbs that run a model import runtime/ (and so numba).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from graphspec import flags

EXIT_SPEC = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130


def _fail(msg: str, code: int = EXIT_SPEC):
    print(msg, file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2): `graphspec train: argument --lr: ...`."""

    def error(self, message):
        self.exit(EXIT_SPEC, f"{self.prog}: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- front-end verbs
def cmd_validate(args):
    import graphspec
    try:
        from runtime.userdata import check_data     # the data section against the built-in tasks
    except ImportError:
        check_data = lambda g: None  # noqa: E731
    bad = 0
    for path in args.specs:
        try:
            g = graphspec.load(path)
            check_data(g)
        except graphspec.SpecError as e:
            print(e, file=sys.stderr)
            bad += 1
            continue
        n = sum(not x.is_leaf for x in g.nodes.values())
        print(f"{path}: OK ({n} step nodes, {len(g.params())} params, axes: {', '.join(g.axes) or 'none'})")
    return EXIT_SPEC if bad else 0


def _bind_for(g, args) -> dict:
    """Dims bound from data: a placeholder size lets compile run without the data."""
    from graphspec.spec import placeholders
    return placeholders(g, flags.resolve_bind(getattr(args, "bind", None), g.dims))


def cmd_compile(args):
    import graphspec
    from graphspec.compile import compile_graph, memory_estimate
    g = graphspec.load(args.spec)
    bind = _bind_for(g, args)
    if bind:
        g = graphspec.load(args.spec, bind=bind)
    lengths = flags.resolve_lengths(args.len, g.axes)
    if args.after:
        from graphspec.compile import make_ctx
        from graphspec.passes import print_ir, run
        print(print_ir(run(g, make_ctx(g, lengths, args.batch), until=args.after), args.after))
        return 0
    plan = compile_graph(g, lengths, args.batch)
    if args.plan:
        print(plan.listing())
        return 0
    s = plan.stats
    unbound = [k for k, v in graphspec.load(args.spec).dims.items() if isinstance(v, str)]
    print(f"{args.spec}: {g.name}")
    if unbound:
        print(f"  dims from data, shown at a placeholder: {', '.join(f'{k}={bind[k]}' for k in unbound)}")
    print(f"  batch {plan.batch}, lengths: {', '.join(f'{k}={v}' for k, v in plan.lengths.items()) or 'none'}")
    print(f"  params: {plan.param_count():,} learnable in {sum(b.learn for b in plan.params())} tensors"
          + "".join(f"\n    {b.name:24} {'x'.join(map(str, b.shape)):>12}{'' if b.learn else '  (fixed)'}"
                    for b in plan.params()))
    print(f"  step nodes: {s['step nodes']}  (after dead-node elimination: {s['after dead-node elimination']})")
    print(f"  unrolled nodes: {s['unrolled nodes']}")
    print(f"  plan ops: {s['plan ops before hoisting']} one per node and step -> {s['plan ops']} after hoisting "
          f"{s['hoisted nodes']} nodes out of the loops")
    fused = [f"{s[k]} {what}" for k, what in (("fused affine", "matmul+add -> affine"),
                                              ("fused groups", f"elementwise groups ({s.get('fused nodes', 0)} nodes)"))
             if s.get(k)]
    if fused:
        print(f"  fused: {', '.join(fused)}")
    stored = sum(v.rows * v.cols for e in plan.eqns for v, a in zip(e.ins, e.assign) if a)
    if stored:
        print(f"  gradients stored, not added: {s['stored gradient writes']} writes "
              f"({stored * 4 / 2**20:.2f} MiB of float32 G that backward need not zero first)")
    if s.get("activations saved in place"):
        print(f"  activations saved in place: {s['activations saved in place']} (a fused cell's backward reads "
              "them where their input was, instead of computing them again)")
    mem, shared = memory_estimate(plan), s.get("bytes shared in place", 0)
    reuse = f"; {(mem + shared) / 2**20:.2f} MiB before {s['in-place values']} in-place value(s)" if shared else ""
    print(f"  activation memory: {mem / 2**20:.2f} MiB (float32 values and gradients{reuse})")
    return 0


def cmd_render(args):
    import yaml
    import graphspec
    from graphspec.render import render
    g = graphspec.load(args.spec)
    print(yaml.safe_dump(render(g), sort_keys=False, width=100), end="")
    return 0


def cmd_schema(args):
    from graphspec.schema import schema
    print(json.dumps(schema(), indent=1))
    return 0


# ---------------------------------------------------------------- dispatch
class _Version(argparse.Action):
    """--version, looked up only when asked for (no import of numba for the parser)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import platform
        from importlib import metadata
        from runtime.rundir import package_version
        parts = [f"Python {platform.python_version()}"]
        for name in ("numpy", "numba"):
            try:
                parts.append(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                pass
        print(f"graphspec {package_version()} ({', '.join(parts)})")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    from graphspec.passes import PASSES
    p = Parser(prog="graphspec", description=__doc__.splitlines()[0])
    p.add_argument("--version", action=_Version, help="print graphspec's version (and Python's, numpy's, numba's)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="VERB")

    s = sub.add_parser("validate", help="check specs; an OK line per file, or the errors")
    s.add_argument("specs", nargs="+", metavar="SPEC", help="spec files (YAML)")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("compile", help="compile a spec and summarise (or print) the plan")
    s.add_argument("spec", help="a spec file (YAML)")
    s.add_argument("--len", action="append", type=flags.length, metavar="T|AXIS=T",
                   help="sequence length (per axis: src=12)")
    s.add_argument("--batch", type=flags.spec_value("train", "batch"), default=32,
                   help="batch size to compile for (default 32)")
    s.add_argument("--bind", action="append", type=flags.bind, metavar="DIM=N",
                   help="a dim's size: one the data would bind (V=60), or another to try")
    s.add_argument("--plan", action="store_true", help="print the plan, one equation a line")
    s.add_argument("--after", choices=PASSES, metavar="PASS",
                   help=f"print the IR after a compiler pass ({', '.join(PASSES)})")
    s.set_defaults(fn=cmd_compile)

    s = sub.add_parser("render", help="print the spec fully expanded, every default filled in")
    s.add_argument("spec", help="a spec file (YAML)")
    s.set_defaults(fn=cmd_render)

    s = sub.add_parser("schema", help="print the JSON Schema of specs")
    s.set_defaults(fn=cmd_schema)

    try:
        from runtime.commands import register
    except ImportError:       # runtime/ missing its dependencies: front-end verbs still work
        register = None
    if register is not None:
        register(sub)
    return p


def main(argv=None) -> int:
    import graphspec
    p = build_parser()
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)      # for verbs that start themselves again
    try:
        return args.fn(args) or 0
    except graphspec.SpecError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return 0
    except graphspec.UserError as e:
        return _fail(f"graphspec: {_one_line(e)}", e.code)
    except OSError as e:         # a path we were told to read or write: the user's environment
        if e.filename is None or os.environ.get("GRAPHSPEC_DEBUG"):
            return _bug(e)
        return _fail(f"graphspec: {e.filename}: {e.strerror or e}")
    except Exception as e:
        return _bug(e)


def _one_line(e) -> str:
    return " ".join(str(e).split("\n"))


def _bug(e: Exception) -> int:
    """A bug of ours, not the user's: say so in one line (exit 70)."""
    if os.environ.get("GRAPHSPEC_DEBUG"):
        raise e
    return _fail(f"graphspec: internal error: {type(e).__name__}: {_one_line(e)} "
                 f"(rerun with GRAPHSPEC_DEBUG=1 for the traceback, and please report it)", EXIT_BUG)


if __name__ == "__main__":
    sys.exit(main())
