"""Equations: a node's right-hand side, parsed safely with Python's ast into a small tree.

    a: b + h[t-1] @ W + U[x[t]]

`h[t-1]` is a delayed read (h one step earlier on its axis), `h[t+1]` one step later (the
backward half of a bidirectional layer), `x[t]` (or just `x`) the current step, `U[x]` a row
lookup (one-hot(x) @ U). Calls name a primitive, a sugar function or a block.
Nothing is evaluated: only the node types below are accepted.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Union

from .errors import Loc, SpecError


@dataclass
class Name:
    id: str
    loc: Loc


@dataclass
class Ref:
    """name[t - delay]: delay > 0 reads the past, delay < 0 the future."""
    id: str
    delay: int
    loc: Loc


@dataclass
class Lookup:
    table: "Expr"
    index: "Expr"
    loc: Loc


@dataclass
class Call:
    fn: str
    args: list
    kwargs: dict
    loc: Loc


@dataclass
class BinOp:
    op: str          # '+', '-', '*', '/', '@'
    a: "Expr"
    b: "Expr"
    loc: Loc


@dataclass
class Num:
    value: float
    loc: Loc


@dataclass
class Str:
    value: str
    loc: Loc


Expr = Union[Name, Ref, Lookup, Call, BinOp, Num, Str]

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@"}
MAX_EXPR_CHARS = 2000


def parse(text: Any, loc: Loc) -> Expr:
    """Parse one equation. `loc` is where the string starts in the YAML file."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SpecError.at(loc, f"expected an equation (a string such as 'tanh(a)'), got {type(text).__name__}")
    if isinstance(text, (int, float)):
        return Num(float(text), loc)
    if len(text) > MAX_EXPR_CHARS:
        raise SpecError.at(loc, f"equation longer than {MAX_EXPR_CHARS} characters; split it into several nodes")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except RecursionError:
        raise SpecError.at(loc, "equation nested too deeply; split it into several nodes") from None
    except SyntaxError as e:
        col = (e.offset or 1) - 1 + (len(text) - len(text.lstrip()))
        raise SpecError.at(loc.shifted(col), f"cannot parse equation '{text.strip()}': {e.msg}") from None
    lead = len(text) - len(text.lstrip())
    try:
        return _convert(tree.body, loc, lead)
    except RecursionError:
        raise SpecError.at(loc, "equation nested too deeply; split it into several nodes") from None


def _convert(node, base: Loc, lead: int) -> Expr:
    loc = Loc(base.file, base.line, base.col + lead + getattr(node, "col_offset", 0))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return BinOp(_BINOPS[type(node.op)], _convert(node.left, base, lead), _convert(node.right, base, lead), loc)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _convert(node.operand, base, lead)
        if isinstance(inner, Num):
            return Num(-inner.value, loc)
        return BinOp("*", Num(-1.0, loc), inner, loc)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, str)):
            raise SpecError.at(loc, f"unsupported constant {node.value!r}")
        return Str(node.value, loc) if isinstance(node.value, str) else Num(float(node.value), loc)
    if isinstance(node, ast.Name):
        return Name(node.id, loc)
    if isinstance(node, ast.Attribute):
        # block-instance members read as dotted names: enc.fwd.h
        parts = []
        cur = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            return Name(".".join([cur.id] + parts[::-1]), loc)
    if isinstance(node, ast.Subscript):
        target = _convert(node.value, base, lead)
        delay = _time_index(node.slice)
        if delay is not None:
            if not isinstance(target, Name):
                raise SpecError.at(loc, "a time index [t-k] applies to a node name, e.g. h[t-1]")
            return Ref(target.id, delay, loc)
        sl = node.slice
        if (isinstance(sl, ast.BinOp) and isinstance(sl.left, ast.Name) and sl.left.id == "t"
                and type(sl.op) in (ast.Add, ast.Sub)):
            text = ast.unparse(node).replace(" ", "")
            raise SpecError.at(loc, f"{text}: a time index is t-k or t+k with a whole number k")
        return Lookup(target, _convert(node.slice, base, lead), loc)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise SpecError.at(loc, "only named functions can be called, e.g. tanh(a)")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise SpecError.at(loc, "*args and **kwargs are not supported in equations")
        return Call(node.func.id, [_convert(a, base, lead) for a in node.args],
                    {k.arg: _convert(k.value, base, lead) for k in node.keywords}, loc)
    what = type(node.op).__name__ if isinstance(node, ast.BinOp) else type(node).__name__
    hint = {"Compare": "comparisons", "BoolOp": "and/or", "IfExp": "if/else", "Lambda": "lambda",
            "Pow": "**"}.get(what, what)
    raise SpecError.at(loc, f"unsupported syntax in an equation: {hint}; use + - * / @, calls and name[t-k]")


def _time_index(sl) -> Any:
    """t -> 0, t-k -> k, t+k -> -k; anything else is not a time index (None)."""
    if isinstance(sl, ast.Name) and sl.id == "t":
        return 0
    if (isinstance(sl, ast.BinOp) and isinstance(sl.left, ast.Name) and sl.left.id == "t"
            and isinstance(sl.right, ast.Constant) and isinstance(sl.right.value, int)
            and type(sl.op) in (ast.Add, ast.Sub)):
        return sl.right.value if isinstance(sl.op, ast.Sub) else -sl.right.value
    return None


def unparse(e: Expr) -> str:
    """Canonical text of an expression (used by `graphspec render`)."""
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Ref):
        return f"{e.id}[t]" if e.delay == 0 else f"{e.id}[t{'-' if e.delay > 0 else '+'}{abs(e.delay)}]"
    if isinstance(e, Lookup):
        return f"{unparse(e.table)}[{unparse(e.index)}]"
    if isinstance(e, Call):
        parts = [unparse(a) for a in e.args] + [f"{k}={unparse(v)}" for k, v in e.kwargs.items()]
        return f"{e.fn}({', '.join(parts)})"
    if isinstance(e, BinOp):
        return f"({unparse(e.a)} {e.op} {unparse(e.b)})"
    if isinstance(e, Num):
        return repr(int(e.value)) if e.value == int(e.value) else repr(e.value)
    return repr(e.value)
