"""Command-line values, checked as argparse parses them: before any work starts.

A flag that overrides a spec value (--lr, --batch, --steps, --seed, --len, --bind) gets exactly
the checks the JSON Schema gives that value in a spec (the bounds are read from the schema, not
restated); every other number gets the bounds written here. A bad value exits 2 with one line:
`graphspec train: argument --lr: -1 is not greater than 0 (as train.lr in a spec)`.
"""
from __future__ import annotations

import argparse
import math
import re
from typing import Callable, Optional

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse(text: str, kind: type):
    """int or finite float from a flag's text; ArgumentTypeError naming what was expected."""
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return v


def _bounds(v, lo=None, hi=None, lo_open=False, what="", text=None) -> None:
    shown = text if text is not None else v
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise argparse.ArgumentTypeError(f"{shown} is not {'greater than' if lo_open else 'at least'} {lo}{what}")
    if hi is not None and v > hi:
        raise argparse.ArgumentTypeError(f"{shown} is more than {hi}, the most allowed{what}")


def number(kind: type, lo=None, hi=None, lo_open: bool = False) -> Callable:
    """An argparse type: int or finite float within [lo, hi] ((lo, hi] when lo_open)."""
    def parse(text: str):
        v = _parse(text, kind)
        _bounds(v, lo, hi, lo_open, text=text)
        return v
    parse.__name__ = "integer" if kind is int else "number"
    return parse


def _schema_rule(path: tuple) -> dict:
    from .schema import schema
    node = schema()
    for key in path:
        node = node["properties"][key] if key in node.get("properties", {}) else node["additionalProperties"]
    return node


def _check_schema_value(v, rule: dict, where: str, text: str):
    if rule.get("type") == "integer" and not isinstance(v, int):
        raise argparse.ArgumentTypeError(f"{text} is not an integer{where}")
    _bounds(v, rule.get("minimum", rule.get("exclusiveMinimum")), rule.get("maximum"),
            "exclusiveMinimum" in rule, where, text)


def spec_value(*path: str) -> Callable:
    """An argparse type for a flag that overrides the spec value at `path` (('train', 'lr')):
    the number type and bounds the schema gives it there."""
    rule = _schema_rule(path)
    kind = int if rule.get("type") == "integer" else float
    where = f" (as {'.'.join(path)} in a spec)"

    def parse(text: str):
        v = _parse(text, kind)
        _check_schema_value(v, rule, where, text)
        return v
    parse.__name__ = "integer" if kind is int else "number"
    return parse


def length(text: str) -> tuple:
    """--len T (every axis) or --len AXIS=T: (axis or None, T), T checked as train.len's values.
    Whether the axis exists is checked once the spec is loaded (resolve_lengths)."""
    axis, eq, t = text.rpartition("=")
    if eq and not NAME.match(axis):
        raise argparse.ArgumentTypeError(f"{text!r}: give T or AXIS=T, with AXIS an axis name like t or src")
    v = _parse(t, int)
    _check_schema_value(v, _schema_rule(("train", "len", "*")), " (as a length in train.len)", t)
    return (axis or None, v)


def bind(text: str) -> tuple:
    """--bind DIM=N: (dim, N), N checked as a dim's size in a spec."""
    dim, eq, n = text.partition("=")
    if not eq or not NAME.match(dim):
        raise argparse.ArgumentTypeError(f"{text!r}: give DIM=N, e.g. V=60")
    v = _parse(n, int)
    _bounds(v, 1, None, False, " (as a dim's size in a spec)", n)
    return (dim, v)


def resolve_lengths(items: Optional[list], axes) -> dict:
    """{axis: T} from --len values; an unknown axis is an error naming the spec's axes."""
    from .errors import UserError, did_you_mean
    out = {}
    for axis, t in items or []:
        if axis is None:
            out.update({a: t for a in axes})
        elif axis not in axes:
            raise UserError(f"--len {axis}={t}: the spec has no axis '{axis}'{did_you_mean(axis, axes)} "
                            f"(axes: {', '.join(axes) or 'none'})")
        else:
            out[axis] = t
    return out


def resolve_bind(items: Optional[list], dims: dict) -> dict:
    """{dim: N} from --bind values; a name that is not one of the spec's dims is an error."""
    from .errors import UserError, did_you_mean
    out = {}
    for dim, n in items or []:
        if dim not in dims:
            raise UserError(f"--bind {dim}={n}: the spec has no dim '{dim}'{did_you_mean(dim, dims)} "
                            f"(dims: {', '.join(dims) or 'none'})")
        out[dim] = n
    return out
