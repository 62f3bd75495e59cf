"""The JSON Schema (draft 2020-12): the one structural contract of a spec and of a block file.

The schema is generated from the op registry and the function table, and also shipped as
graphspec/schema.json for editors (a test keeps the two equal: `python -m graphspec.schema`
rewrites the file).
"""
from __future__ import annotations

import difflib
import json
import os

from .errors import Problems, SpecError, did_you_mean
from .loader import Located

SCHEMA_FILE = os.path.join(os.path.dirname(__file__), "schema.json")
SCHEMA_ID = "https://graphspec.dev/schema/spec-v1.json"

_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
# a spec's name names its run directory (runs/NAME): one plain path component, never '..' or '/x'
_FILE_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$", "maxLength": 100}
_SIZE = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1}]}


def build_schema() -> dict:
    from .lang import FUNCTIONS, INITS
    from .lang import METRICS
    from .ops import OP_NAMES
    eq_doc = ("An equation, read once per time step: + - * / @, name[t-k] (delayed read), "
              "name[t+k] (backward in time), E[x] (row lookup), and calls of: " + ", ".join(FUNCTIONS)
              + ", or of a block. Primitives: " + ", ".join(OP_NAMES) + ".")
    equation = {"type": ["string", "number"], "description": eq_doc}
    param = {
        "type": "object", "additionalProperties": False, "required": ["shape"],
        "properties": {
            "shape": {"type": "array", "maxItems": 2, "items": _SIZE,
                      "description": "[] a scalar, [N] a vector (bias), [R, C] a matrix"},
            "init": {"type": ["string", "number", "object"],
                     "description": "initializer: " + ", ".join(sorted(INITS)) + " (with arguments in parentheses), "
                                    "or {file: vectors.txt, rest: INIT}: rows of a word2vec text/binary file matched "
                                    "to the vocabulary by word, the other rows from rest",
                     "examples": sorted(INITS),
                     # these apply to the mapping form only
                     "required": ["file"], "additionalProperties": False,
                     "properties": {"file": {"type": "string"}, "rest": {"type": ["string", "number"]}}},
            "learn": {"type": "boolean", "description": "false: a fixed value (e.g. a fixed leaky-unit alpha)"},
        }}
    node = {"oneOf": [equation, {
        "type": "object", "additionalProperties": False, "required": ["eq"],
        "properties": {"eq": equation,
                       "init": {"type": ["string", "number"], "description": "initial value for delayed reads: zeros, a param, last(x), ..."},
                       "axis": {"type": "string", "description": "the axis, when no input fixes it"}}}]}
    inp = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "tokens": _SIZE, "real": _SIZE, "label": _SIZE,
            "axis": _NAME, "target": {"type": "boolean"},
            "width": {"type": "integer", "minimum": 1, "description": "token ids per row (a CBOW window)"},
            "from": {"type": "string", "description": "the data field, when it differs from the input's name"}},
        "oneOf": [{"required": ["tokens"]}, {"required": ["real"]}, {"required": ["label"]}]}
    train = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "optimizer": {"enum": ["sgd", "momentum", "adam"]},
            "lr": {"type": "number", "exclusiveMinimum": 0},
            "schedule": {"enum": ["constant", "linear", "cosine", "step", "exponential"],
                         "description": "the learning rate over the run (after the warm-up): constant; linear "
                                        "to 1e-4 lr; cosine, half a cosine down to 0; step, times decay every "
                                        "decay_every steps; exponential, decay ** (step / decay_every)"},
            "decay": {"type": "number"}, "decay_every": {"type": "integer", "minimum": 1},
            "momentum": {"type": "number", "minimum": 0, "maximum": 1},
            "weight_decay": {"type": "number", "minimum": 0},
            "clip": {"type": "number", "exclusiveMinimum": 0},
            "batch": {"type": "integer", "minimum": 1}, "steps": {"type": "integer", "minimum": 1},
            "per_example": {"enum": [True, False, "word2vec"],
                            "description": "a step after every example of a batch at rate lr (optimizer sgd, no "
                                           "clipping): true, along the exact gradient of its loss; word2vec, "
                                           "word2vec.c's and gensim's update rule (the word2vec form only)"},
            "seed": {"type": "integer", "minimum": 0}, "eval_every": {"type": "integer", "minimum": 1},
            "len": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
            "target": {"type": "object", "additionalProperties": False,
                       "description": "the metric this spec must reach: {metric: value}",
                       "properties": {m: {"type": "number"} for m in METRICS}},
            "warmup": {"type": "integer", "minimum": 0,
                       "description": "steps over which the rate rises linearly to lr before the schedule starts"},
            "stop_at_target": {"type": "boolean", "description": "stop at the first validation that reaches "
                                                                 "every metric of target (--stop-at-target)"},
            "patience": {"type": "integer", "minimum": 1,
                         "description": "stop after this many validations without a lower validation loss"},
            "keep_best": {"type": "integer", "minimum": 1, "maximum": 100,
                          "description": "keep the checkpoints of the K lowest validation losses as "
                                         "best-stepS.npz (best.npz is always the lowest)"},
        }}
    spec = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "graphspec model spec v1",
        "type": "object", "additionalProperties": False,
        "required": ["name", "nodes"],
        "properties": {
            "name": dict(_FILE_NAME, description="the model's name; also its run directory, runs/NAME"),
            "doc": {"type": "string"},
            "data": {"type": "object", "description": "{task: NAME, ...options} or {file: PATH, task: pairs|text}"},
            "dims": {"type": "object", "propertyNames": _NAME,
                     "additionalProperties": {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "data"}]}},
            "blocks": {"type": "array", "items": {"type": "string"}, "description": "user block files"},
            "inputs": {"type": "object", "propertyNames": _NAME, "additionalProperties": inp},
            "params": {"type": "object", "propertyNames": _NAME, "additionalProperties": param},
            "nodes": {"type": "object", "minProperties": 1, "additionalProperties": node},
            "loss": {"oneOf": [equation, {"type": "array", "items": equation, "minItems": 1}]},
            "outputs": {"type": "object", "propertyNames": _NAME, "additionalProperties": equation},
            "train": train,
            "decode": {"type": "object"},
        },
        "$defs": {"function": {"enum": FUNCTIONS}, "primitive": {"enum": list(OP_NAMES)},
                  "block": {
                      "type": "object", "additionalProperties": False, "required": ["block", "nodes", "out"],
                      "properties": {
                          "block": _NAME, "doc": {"type": "string"},
                          "option": {"type": "object", "additionalProperties": {"type": "string"},
                                     "description": "the option value that selects this block: {reset: after}"},
                          "args": {"type": "array", "items": {"oneOf": [_NAME, {"type": "object", "maxProperties": 1}]}},
                          "dims": {"type": "object", "additionalProperties": {"oneOf": [{"type": "integer"}, {"const": "required"}]}},
                          "params": {"type": "object", "propertyNames": _NAME, "additionalProperties": param},
                          "nodes": {"type": "object", "minProperties": 1, "additionalProperties": node},
                          "out": _NAME}}},
    }
    return spec


_cache: dict = {}


def schema() -> dict:
    if "s" not in _cache:
        with open(SCHEMA_FILE) as f:
            _cache["s"] = json.load(f)
    return _cache["s"]


def _validator(sub=None):
    import jsonschema
    s = schema()
    if sub:
        s = dict(s["$defs"][sub], **{"$defs": s["$defs"]})
    return jsonschema.Draft202012Validator(s)


def _report(doc: Located, validator) -> None:
    probs = Problems()
    errors = sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path)))
    # a missing key that an unknown key nearly spells is reported once, as the misspelling
    misspelt = set()
    for err in errors:
        if err.validator == "additionalProperties":
            allowed = list(err.schema.get("properties", {}))
            for k in err.instance or {}:
                if k not in allowed:
                    close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                    if close:
                        misspelt.add((tuple(err.absolute_path), close[0]))
    for err in errors:
        path = tuple(err.absolute_path)
        keys = "/".join(map(str, path)) or "(top level)"
        if err.validator == "additionalProperties":
            allowed = list(err.schema.get("properties", {}))
            extra = [k for k in (err.instance or {}) if k not in allowed]
            for k in extra:
                probs.add(doc.key_loc(path + (k,)),
                          f"unknown key '{k}' in {keys}{did_you_mean(k, allowed)} (allowed: {', '.join(allowed)})")
            continue
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else ""
            if (path, missing) in misspelt:
                continue
            probs.add(doc.where(path), f"{keys}: {err.message}")
            continue
        if err.validator == "oneOf" and path[:1] == ("dims",) and len(path) == 2:
            probs.add(doc.where(path), f"dim '{path[1]}' must be a positive integer or 'data', got {err.instance!r}")
            continue
        if err.validator == "oneOf" and path[:1] == ("inputs",):
            if isinstance(err.instance, dict):      # (not a mapping at all: the type error says it)
                probs.add(doc.where(path), f"{keys}: an input needs exactly one of tokens, real or label")
            continue
        if err.validator == "oneOf" and path[:1] == ("nodes",):
            allowed = ["eq", "init", "axis"]
            extra = [k for k in err.instance or {} if k not in allowed] if isinstance(err.instance, dict) else []
            for k in extra:
                probs.add(doc.key_loc(path + (k,)), f"unknown key '{k}' in {keys}{did_you_mean(k, allowed)} "
                                                    f"(allowed: {', '.join(allowed)})")
            if not extra:
                probs.add(doc.where(path), f"{keys}: a node is an equation string or {{eq: ..., init: ...}}")
            continue
        if err.validator == "enum":
            allowed = [_yaml_word(v) for v in err.validator_value]
            close = did_you_mean(str(err.instance), allowed)
            probs.add(doc.where(path), f"{keys}: {err.instance!r} is not one of {', '.join(allowed)}{close}")
            continue
        if err.validator == "pattern" and path == ("name",):
            probs.add(doc.where(path), f"name: {err.instance!r} is not a plain name (letters, digits, _ . + -, not "
                                       f"starting with . + or -): it names the run directory runs/NAME")
            continue
        if err.validator == "pattern":
            probs.add(doc.where(path), f"{keys}: '{err.instance}' is not a valid name (letters, digits, _)")
            continue
        probs.add(doc.where(path), f"{keys}: {err.message}")
    probs.raise_if_any()


def _yaml_word(v) -> str:
    """A value as the spec writes it (true, not Python's True)."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def check_spec(doc: Located) -> None:
    if not isinstance(doc.data, dict):
        raise SpecError.at(doc.where(()), "a spec is a YAML mapping with at least name and nodes")
    _report(doc, _validator())


def check_block(doc: Located) -> None:
    if not isinstance(doc.data, dict):
        raise SpecError.at(doc.where(()), "a block file is a YAML mapping with block, nodes and out")
    _report(doc, _validator("block"))


if __name__ == "__main__":
    with open(SCHEMA_FILE, "w") as f:
        json.dump(build_schema(), f, indent=1)
        f.write("\n")
    print(f"wrote {SCHEMA_FILE}")
