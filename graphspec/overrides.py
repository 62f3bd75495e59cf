"""`--set KEY=VALUE`: any value of a spec from the command line (train.clip=1, dims.H=64,
data.length=100, params.W.init=normal(0.2)).

KEY is a dotted path into the spec; VALUE is read as a YAML scalar or flow value (64 is an
integer, 0.01 a number, adam a string, {t: 50} a mapping), so it has the type it would have
in the file. A key must name a value the schema allows there, and in maps of the spec's own
names (dims, params, inputs, nodes, outputs) one the spec has: a wrong key is an error with a
did-you-mean. The value gets the spec's own checks (the schema, then names and shapes), its
errors located at `--set KEY=VALUE` and the rest at the file's line:col.

The resolved spec is plain YAML text (`resolve`): the run directory keeps it as config.yaml,
and a model is built from it with the original path (so block and vector files resolve as
before). Pure and light: yaml and the schema, no runtime.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Optional

import yaml

from .errors import Loc, SpecError, UserError, did_you_mean
from .loader import Located

# maps whose keys are the spec's own names: setting one the spec lacks is a misspelling
NAMED_MAPS = ("dims", "params", "inputs", "nodes", "outputs")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class SetLoc(Loc):
    """The location of an overridden value: the flag that set it."""
    flag: str = ""

    def __str__(self) -> str:
        return f"--set {self.flag}"


@dataclass(frozen=True)
class Override:
    path: tuple
    value: object
    text: str            # KEY=VALUE as given

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _value(text: str, flag: str):
    if not text.strip():
        raise UserError(f"--set {flag}: an empty value; give KEY=VALUE (quote '' for an empty string)")
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"--set {flag}: the value is not YAML ({why}); quote it in the shell if it holds spaces") from None
    if isinstance(v, str) and text.strip() == v and _FLOAT.match(v):
        v = float(v)             # 1e-3: YAML 1.1 reads it as a string; on a command line it is a number
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        raise UserError(f"--set {flag}: {text} is not a finite number; every number in a spec is finite")
    if v is None:
        raise UserError(f"--set {flag}: null is not a value a spec holds; give KEY=VALUE")
    return v


def parse(text: str) -> Override:
    """KEY=VALUE -> Override; malformed text is a UserError naming it."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise UserError(f"--set {text}: give KEY=VALUE, e.g. --set train.lr=0.001 or --set dims.H=128")
    if not _KEY.match(key):
        raise UserError(f"--set {text}: '{key}' is not a dotted path of names like train.lr or dims.H")
    return Override(tuple(key.split(".")), _value(raw, text), text)


def split_values(raw: str) -> list:
    """'1,2,{a: 1, b: 2}' -> ['1', '2', '{a: 1, b: 2}']: commas inside brackets or quotes stay."""
    out, depth, quote, cur = [], 0, None, ""
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_sweep(text: str) -> list:
    """KEY=V1,V2,... -> [Override per value] (a sweep axis); each value checked as in parse."""
    key, eq, raw = text.partition("=")
    if not eq:
        raise UserError(f"--set {text}: give KEY=V1,V2,..., e.g. --set train.lr=0.001,0.003")
    values = split_values(raw)
    if any(v == "" for v in values):
        raise UserError(f"--set {text}: an empty value in the list")
    if len(set(values)) != len(values):
        raise UserError(f"--set {text}: a value is listed twice")
    return [parse(f"{key}={v}") for v in values]


# ---------------------------------------------------------------- keys
def _rule(rule: dict, key: str) -> Optional[dict]:
    if key in rule.get("properties", {}):
        return rule["properties"][key]
    extra = rule.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _check_key(data: dict, ov: Override) -> None:
    """The path names a value a spec may hold there (and, in maps of the spec's names, one this
    spec has); otherwise a one-line error with a did-you-mean."""
    from .schema import schema
    rule, here = schema(), data
    for i, key in enumerate(ov.path):
        where = ".".join(ov.path[:i]) or "the spec"
        parent = ov.path[i - 1] if i else None
        have = list(here) if isinstance(here, dict) else []
        known = list(rule.get("properties", {})) if rule is not None else []
        if i == 1 and parent in NAMED_MAPS:
            if key not in have:
                what = parent[:-1] if parent != "dims" else "dim"
                raise UserError(f"--set {ov.text}: the spec has no {what} '{key}'{did_you_mean(key, have)} "
                                f"({parent}: {', '.join(have) or 'none'})")
        elif rule is not None and "properties" in rule and rule.get("additionalProperties") is False \
                and key not in known:
            raise UserError(f"--set {ov.text}: {where} has no key '{key}'{did_you_mean(key, known)} "
                            f"(keys: {', '.join(known)})")
        elif rule is None and key not in have and not isinstance(here, dict):
            raise UserError(f"--set {ov.text}: {where} is {_kind(here)}, not a mapping with keys")
        if isinstance(here, dict) and key in here:
            here = here[key]
            if not isinstance(here, dict) and i + 1 < len(ov.path):
                raise UserError(f"--set {ov.text}: {'.'.join(ov.path[:i + 1])} is {_kind(here)}, "
                                f"not a mapping with keys")
        else:
            here = None
        rule = _rule(rule, key) if rule is not None else None


def _kind(v) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list"}.get(type(v), "a value")


# ---------------------------------------------------------------- applying
def apply(doc: Located, overrides: list) -> Located:
    """A new Located with every override set: its value located at the flag that set it."""
    data = copy.deepcopy(doc.data) if isinstance(doc.data, dict) else {}
    locs = dict(doc.locs)
    for ov in overrides:
        _check_key(data, ov)
        here = data
        for key in ov.path[:-1]:
            if not isinstance(here.get(key), dict):
                here[key] = {}
            here = here[key]
        here[ov.path[-1]] = copy.deepcopy(ov.value)
        at = SetLoc(f"--set {ov.text}", 1, 1, ov.text)
        n = len(ov.path)
        for p in [p for p in locs if (p[1:] if p[:1] == ("key",) else p)[:n] == ov.path]:
            del locs[p]
        for p in _paths(ov.value, ov.path):
            locs[p] = at
            locs[("key",) + p] = at
        for i in range(1, n):            # a section the override created
            locs.setdefault(ov.path[:i], at)
            locs.setdefault(("key",) + ov.path[:i], at)
    return Located(data, locs, doc.file, doc.text)


def _paths(v, path: tuple):
    yield path
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, path + (str(k),))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, path + (i,))


def check(doc: Located, overrides: list, mode: str = "train", bind: Optional[dict] = None):
    """The overridden spec's graph, through every check graphspec.load makes; raises SpecError
    (overridden values located at their flag) or UserError."""
    from .graph import check_cycles, infer
    from .lang import Builder
    from .schema import check_spec
    d = apply(doc, overrides)
    check_spec(d)
    g = Builder(d, mode=mode, bind=bind).build()
    check_cycles(g)
    infer(g)
    g.source = d
    return g


def resolve(doc: Located, overrides: list, command: str = "") -> str:
    """The spec text with the overrides applied: the file's own text when there are none (its
    comments kept), else its values as YAML under a header naming the flags."""
    if not overrides:
        return doc.text
    data = apply(doc, overrides).data
    head = "".join(f"# --set {ov.text}\n" for ov in overrides)
    return (f"# {doc.file} with overrides (the resolved spec a run used{': ' + command if command else ''})\n"
            + head + yaml.safe_dump(data, sort_keys=False, width=100, allow_unicode=True,
                                                            default_flow_style=None))


def load(path: str, sets: list, mode: str = "train", bind: Optional[dict] = None):
    """(graph, resolved text) of a spec file with --set texts applied, checked as a spec is."""
    from .spec import read
    doc = read(path)
    from .spec import load as plain
    ovs = [parse(s) for s in sets]
    if not ovs:
        return plain(path, mode=mode, bind=bind), doc.text
    plain(path, mode=mode)      # the file's own errors first, at its line:col, not blamed on a flag
    g = check(doc, ovs, mode, bind)
    return g, resolve(doc, ovs)


def fingerprint(sets: list) -> str:
    """A short hash of the overrides as parsed (so 'lr=0.010' and 'lr=0.01' agree); '' without any."""
    if not sets:
        return ""
    ovs = [parse(s) for s in sets]
    canon = "\n".join(f"{ov.key}={yaml.safe_dump(ov.value, default_flow_style=True).strip()}" for ov in ovs)
    return hashlib.sha256(canon.encode()).hexdigest()[:8]

