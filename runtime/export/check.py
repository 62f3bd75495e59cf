"""Export a Model to ONNX and check the file: onnx.checker, then ONNX Runtime against
graphspec's own forward on a batch of the model's task."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

import graphspec
from graphspec.errors import UserError

from ..model import Model

TOLERANCE = 1e-4          # float32: the largest difference export accepts


def needs_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise UserError(f"ONNX export needs the onnx extra ({e.name} is not installed): "
                        f"pip install -e '.[onnx]'") from None


def teacher_forced(model: Model) -> bool:
    """Does the spec feed targets back when training (so inference runs free)?"""
    return any(n.op == "input" and n.attrs.get("target") and n.init is not None
               for n in model.graph.nodes.values())


def exporter(model: Model):
    """The translator over the model's inference graph: the free-running one when the spec
    uses teacher forcing, else the graph as written (dropout the identity)."""
    from .onnx import Exporter
    mode = "free" if teacher_forced(model) else "train"
    g = graphspec.load(model.spec, model.text, mode=mode, bind=model.bind)
    return Exporter(g, model.get_params()).build()


@dataclass
class Difference:
    name: str
    shape: tuple
    max_diff: float          # floats: the largest absolute difference; ids: how many differ
    ids: bool


def compare(model: Model, ex, onnx_model, batch: dict) -> list:
    """Run graphspec and ONNX Runtime on one batch; the difference of every output on the
    steps that are real (each axis's mask; a free-running decoder's steps as far as both ran)."""
    import onnxruntime as ort
    from ..train import _steps
    mode = "free" if teacher_forced(model) else "eval"
    model.forward(batch, mode=mode)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "max_len":
            L = ex.decoder
            feeds[i.name] = np.array(model.shape_of(batch)[0][L.axis], np.int64)
        else:
            feeds[i.name] = np.asarray(batch[i.name], np.int64 if "int" in i.type else np.float32)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    out = []
    for name, op in ex.roots.items():
        if name in model.graph.outputs:
            ref = model.output(name)
        else:
            ref = _steps(model, op.node)
        y = got[name]
        lay = ex.an.operand_layout(op)
        if ex.decoder is not None and lay[:1] == (ex.decoder.axis,):
            ref = ref[:y.shape[0]]
        ref = np.asarray(ref).reshape(y.shape)
        keep = _mask(ex, lay, batch, y.shape)
        ids = y.dtype.kind == "i"
        if ids:
            diff = float(np.sum((ref != y) & keep))
        else:
            d = np.abs(ref.astype(np.float64) - y.astype(np.float64))
            diff = float(np.max(np.where(keep, d, 0.0), initial=0.0))
        out.append(Difference(name, y.shape, diff, ids))
    return out


def _mask(ex, lay: tuple, batch: dict, shape: tuple) -> np.ndarray:
    """True where a value is real: every axis of its layout that has a mask in the batch."""
    keep = np.ones(shape, bool)
    if "B" not in lay:
        return keep
    b = lay.index("B")
    for i, label in enumerate(lay):
        if label == "B" or (ex.decoder is not None and label == ex.decoder.axis):
            continue
        mask = ex.g.nodes[ex.g.masks[label]].attrs["field"]
        keep &= _place(np.asarray(batch[mask]) > 0.5, i, b, len(shape))
    return keep


def _place(m: np.ndarray, i: int, b: int, rank: int) -> np.ndarray:
    """A [T, B] mask shaped to broadcast with a tensor whose axis i is T and axis b is B."""
    arr = m if i < b else m.T
    shape = [1] * rank
    shape[min(i, b)], shape[max(i, b)] = arr.shape
    return arr.reshape(shape)


def export_onnx(model: Model, task, path: str, batch_size: int = 8, seed: int = 0, log=print) -> dict:
    """Write PATH (and, for a decoder, PATH's .encoder.onnx and .step.onnx) once onnx.checker
    accepts them and ONNX Runtime matches graphspec within TOLERANCE; return a summary."""
    needs_onnx()
    import onnx
    from .onnx import ops_used
    ex = exporter(model)
    full = ex.full()
    models = {path: full}
    if ex.decoder is not None:
        encoder, step = ex.decoder_models()
        stem = path[:-5] if path.endswith(".onnx") else path
        models[stem + ".encoder.onnx"] = encoder
        models[stem + ".step.onnx"] = step
    for m in models.values():
        onnx.checker.check_model(m, full_check=True)
    batch = task.batch("valid", batch_size, 0, seed)
    diffs = compare(model, ex, full, batch)
    worst = max((d.max_diff for d in diffs if not d.ids), default=0.0)
    wrong_ids = sum(d.max_diff for d in diffs if d.ids)
    ok = worst <= TOLERANCE and wrong_ids == 0
    for d in diffs:
        what = f"{int(d.max_diff)} ids differ" if d.ids else f"max difference {d.max_diff:.2e}"
        log(f"  {d.name:12} {'x'.join(map(str, d.shape)):>14}  {what}")
    if not ok:
        raise ExportMismatch(f"ONNX Runtime differs from graphspec on {path} (max difference {worst:.2e}, "
                             f"{int(wrong_ids)} ids differ; tolerance {TOLERANCE:g}): not written")
    for p, m in models.items():
        _write(m, p)
    return {"files": list(models), "ops": ops_used(full), "max_diff": worst}


class ExportMismatch(UserError):
    code = 1


def _write(m, path: str):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".onnx")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            f.write(m.SerializeToString())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
