"""Checkpoints: .npz files of params (`param/NAME`), optimizer state (`opt_*`) and a JSON `meta`.

Written atomically and deterministically (equal contents give equal bytes: no zip timestamps).
Read defensively: the zip directory and every array's .npy header are checked before any data
is read (names, shapes, dtypes, sizes; never an object array, so nothing is ever unpickled),
meta must be a JSON object with the right types, and a model's checkpoint must hold every param
its spec declares, with its shape, and nothing else. Any damage is one line naming the file.
numpy, zipfile and json only: `graphspec plot` reads checkpoints without numba.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Optional

import numpy as np

from graphspec.errors import UserError

from .rundir import npy_header, regular, save_npz

CKPT_VERSION = 1
MAX_CHECKPOINT_BYTES = 16 << 30       # params and two Adam moments of the largest plan allowed
MAX_META_BYTES = 64 << 20             # the spec's text (<= 1 MiB) and vocabularies
# meta key -> allowed types (None: may be null); best_loss and metrics only in some checkpoints
META_TYPES = {"spec": (str,), "spec_hash": (str,), "spec_text": (str,), "bind": (dict,), "seed": (int,),
              "task": (str, None), "data": (str, None), "cfg": (dict,), "vocab": (dict,), "step": (int,),
              "version": (int,)}
META_OPTIONAL = {"best_loss": (float, int), "metrics": (dict,)}
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", None: "null"}


class DamagedCheckpoint(UserError):
    pass


class _Bad(ValueError):
    """Damage our own checks found (said as it is; others' exceptions are named by type)."""


def _damaged(path: str, why: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(f"{path}: not a readable checkpoint ({why}); it may be truncated or corrupted — use "
                             f"the other checkpoint in the run directory (best.npz or last.npz) or start again "
                             f"without --resume")


def _mismatch(path: str, why: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(f"{path}: {why}")


def save(path: str, params: dict, opt_state: dict, meta: dict, step: int):
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update(opt_state)
    arrays["meta"] = np.array(json.dumps(dict(meta, step=step, version=CKPT_VERSION)))
    save_npz(path, arrays)


def _is(v, types) -> bool:
    for t in types:
        if t is None and v is None:
            return True
        if t is int and isinstance(v, int) and not isinstance(v, bool):
            return True
        if t is float and isinstance(v, float):
            return True
        if t in (str, dict) and isinstance(v, t):
            return True
    return False


def check_meta(meta, path: str) -> dict:
    if not isinstance(meta, dict):
        raise _damaged(path, f"its meta is {type(meta).__name__}, not a JSON object")
    for key, types in META_TYPES.items():
        if key not in meta:
            raise _damaged(path, f"its meta has no '{key}'")
    for key, types in list(META_TYPES.items()) + list(META_OPTIONAL.items()):
        if key in meta and not _is(meta[key], types):
            want = " or ".join(TYPE_NAMES[t] for t in types)
            raise _damaged(path, f"meta '{key}' is {type(meta[key]).__name__}, not {want}")
    if meta["version"] != CKPT_VERSION:
        raise _damaged(path, f"version {meta['version']}; this graphspec reads version {CKPT_VERSION}")
    if meta["step"] < 0 or meta["seed"] < 0:
        raise _damaged(path, "a negative step or seed in its meta")
    if not all(isinstance(k, str) and _is(v, (int,)) and v > 0 for k, v in meta["bind"].items()):
        raise _damaged(path, "meta 'bind' is not {dim: positive integer}")
    import jsonschema
    from graphspec.schema import schema
    errs = list(jsonschema.Draft202012Validator(schema()["properties"]["train"]).iter_errors(meta["cfg"]))
    if errs:
        raise _damaged(path, f"meta 'cfg' is not a train section: {errs[0].message}")
    return meta


class Checkpoint:
    """An opened checkpoint: its meta (checked) and each array's (shape, dtype), data not read."""

    def __init__(self, path: str, need_meta: bool = True):
        self.path = path
        regular(path, MAX_CHECKPOINT_BYTES, "checkpoint")
        try:
            self.zip = zipfile.ZipFile(path)
            self.members = {}
            for info in self.zip.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with self.zip.open(info) as f:
                    shape, dtype = npy_header(f)
                if dtype.hasobject:
                    raise _Bad(f"'{name}' holds Python objects; a checkpoint holds numbers only")
                size = math.prod(shape) * dtype.itemsize
                if info.file_size > size + 65536:     # the header is small: more is not an array
                    raise _Bad(f"'{name}' is {info.file_size} bytes for a {shape} {dtype} array")
                self.members[name] = (tuple(shape), dtype, info)
            meta = self._meta() if need_meta or "meta" in self.members else None
        except UserError:
            raise
        except Exception as e:          # zip errors, truncation, bad headers or JSON: one message
            why = str(e) if isinstance(e, _Bad) else f"{type(e).__name__}: {e}"
            raise _damaged(path, " ".join(why.split())) from None
        self.meta = check_meta(meta, path) if meta is not None else None

    def _meta(self):
        if "meta" not in self.members:
            raise _Bad("no meta")
        shape, dtype, _ = self.members["meta"]
        if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_META_BYTES:
            raise _Bad(f"meta is a {shape} {dtype} array, not one string")
        return json.loads(str(self._read("meta")))

    def _read(self, name: str) -> np.ndarray:
        with self.zip.open(self.members[name][2]) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def read(self, name: str) -> np.ndarray:
        try:
            return self._read(name)
        except Exception as e:
            raise _damaged(self.path, f"'{name}': {type(e).__name__}: {' '.join(str(e).split())}") from None

    def param_shapes(self) -> dict:
        return {k[len("param/"):]: v[0] for k, v in self.members.items() if k.startswith("param/")}

    def params(self, expected: Optional[dict] = None, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict:
        """{name: array}. With expected {name: shape} (the spec's params): every one present with
        its shape, no others, finite floats — else one line saying which. Checked before reading."""
        have = self.param_shapes()
        if expected is not None:
            missing = [k for k in expected if k not in have]
            if missing:
                raise _mismatch(self.path, f"param '{missing[0]}' is missing (the spec declares "
                                          f"{', '.join(expected)}; the checkpoint holds {', '.join(have) or 'none'})")
            extra = [k for k in have if k not in expected]
            if extra:
                raise _mismatch(self.path, f"param '{extra[0]}' is not one of the spec's "
                                          f"({', '.join(expected)}): a checkpoint of another model")
            for k, shape in expected.items():
                if tuple(have[k]) != tuple(shape):
                    raise _mismatch(self.path, f"param '{k}' has shape {_shape(have[k])}; the spec declares "
                                              f"{_shape(shape)}")
        total = 0
        for k in have:
            shape, dtype, _ = self.members["param/" + k]
            if dtype.kind != "f":
                raise _damaged(self.path, f"param '{k}' is {dtype}, not floating point")
            total += math.prod(shape) * dtype.itemsize
        if total > max_bytes:
            raise _damaged(self.path, f"its params are {total:,} bytes, more than the {max_bytes:,} read here")
        out = {}
        for k in have:
            a = self.read("param/" + k)
            if not np.all(np.isfinite(a)):
                raise _damaged(self.path, f"param '{k}' holds NaN or infinite values")
            out[k] = a
        return out

    def opt_state(self, n: int, adam: bool) -> dict:
        """The optimizer's state for n learnable floats: opt_t, opt_m [n], opt_v [n] (adam) or [0]."""
        want = {"opt_t": (), "opt_m": (n,), "opt_v": (n,) if adam else (0,)}
        for k, shape in want.items():
            if k not in self.members:
                raise _damaged(self.path, f"no optimizer state '{k}'")
            have, dtype, _ = self.members[k]
            if have != shape or dtype.kind not in ("f", "i", "u"):
                raise _mismatch(self.path, f"optimizer state '{k}' is a {_shape(have)} {dtype} array; this "
                                          f"model and optimizer need {_shape(shape)}")
        out = {k: self.read(k) for k in want}
        if int(out["opt_t"]) < 0:
            raise _damaged(self.path, "a negative optimizer step count")
        return out

    def close(self):
        self.zip.close()


def _shape(s) -> str:
    return "x".join(map(str, s)) or "scalar"


def open_checkpoint(path: str, need_meta: bool = True) -> Checkpoint:
    """need_meta=False: the params alone are wanted (plot); a meta, if there, is still checked."""
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such checkpoint")
    if os.path.isdir(path):
        have = [os.path.join(path, f) for f in ("best.npz", "last.npz") if os.path.isfile(os.path.join(path, f))]
        raise UserError(f"{path} is a directory; give a checkpoint file: "
                        + (" or ".join(have) if have else f"a run directory holds best.npz and last.npz, {path} "
                                                          f"holds neither"))
    return Checkpoint(path, need_meta)
