"""Models and vectors out of graphspec: `graphspec export CKPT -o model.onnx` (an ONNX graph that
ONNX Runtime is checked to run as graphspec does: onnx.py, check.py, beam.py) and
`graphspec export CKPT --format word2vec -o vectors.txt` (word2vec's text or binary format,
which gensim loads: word2vec.py). docs/export.md has both."""
from __future__ import annotations

from graphspec.errors import UserError


def export(ckpt: str, output: str, fmt: str = "onnx", binary: bool = False, param=None, log=print) -> dict:
    """Write a checkpoint's model as ONNX, or one of its lookup tables as word vectors."""
    from ..commands import restore
    if fmt == "onnx":
        for flag, given in (("--binary", binary), ("--param", param)):
            if given:
                raise UserError(f"export: {flag} is for --format word2vec; an ONNX export writes the whole model")
        if not output.endswith(".onnx"):
            raise UserError(f"export: -o {output}: an ONNX model's file name ends in .onnx "
                            f"(for word vectors: --format word2vec)")
        from .check import export_onnx, needs_onnx
        needs_onnx()
        model, task, _ = restore(ckpt)
        log(f"{ckpt} -> {output}: ONNX Runtime against graphspec on a validation batch")
        res = export_onnx(model, task, output, log=log)
        for path in res["files"]:
            log(f"wrote {path}")
        log(f"ops: {', '.join(res['ops'])}")
        return res
    from .word2vec import write
    model, task, _ = restore(ckpt)
    name, vocab = vocab_table(model, task, param)
    E = model.param(name)
    skipped = write(output, vocab.itos, E, binary=binary)
    n = len(vocab.itos) - 4 - len(skipped)
    log(f"wrote {output}: {n} words x {E.shape[1]} from {name} (word2vec {'binary' if binary else 'text'} format)")
    if skipped:
        few = ", ".join(repr(w) for w in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        log(f"left out {len(skipped)} words with whitespace in them, which the format cannot hold: {few}")
    return {"files": [output], "words": n}


def vocab_table(model, task, param=None):
    """(param name, Vocab of its rows): `param`, or the first table the model looks rows up in."""
    import graphspec
    from graphspec.errors import did_you_mean
    from ..train import dim_vocabs
    tables = [b.name for b in model.param_buffers if b.shape[0] > 1 and b.shape[1] > 1]
    if param is None:
        param = next((n.args[0].node for n in model.graph.nodes.values() if n.op in ("embed", "embed_mean")), None)
        if param is None:
            raise UserError("export: this model looks up no table (E[x] or embed_mean); name one with --param")
    elif param not in tables:
        raise UserError(f"export: no table '{param}'{did_you_mean(param, tables)} (tables: {', '.join(tables)})")
    g = graphspec.load(model.spec, model.text)          # unbound: a vocabulary dim keeps its name
    rows = g.nodes[param].attrs["shape"][0]
    vocabs = dim_vocabs(g, task)
    if rows not in vocabs:
        raise UserError(f"export: the rows of {param} are {rows}, not a vocabulary dim of the task "
                        f"({', '.join(vocabs) or 'none'}): no words to write them under")
    return param, vocabs[rows]
