"""Safe YAML loading that remembers where every key and value came from.

yaml.compose gives nodes with marks; we build plain Python objects from them ourselves so that
(1) no object is ever constructed from tags (safe), (2) duplicate keys are an error, and
(3) each path (tuple of keys/indices) maps to its file:line:col for error messages.
"""
from __future__ import annotations

import os
from typing import Any

import yaml

from .errors import Loc, SpecError

MAX_BYTES = 1 << 20          # a spec is a page of text; a megabyte is certainly a mistake
MAX_DEPTH = 32
MAX_NODES = 100_000          # counts alias re-visits too, so an alias bomb is refused
# the standard tags plain YAML resolves to; anything else (!!python/object, ...) is refused
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}


class Located:
    """A loaded document: `data` plain Python, `where(path)` its location."""

    def __init__(self, data: Any, locs: dict, file: str, text: str):
        self.data, self.locs, self.file, self.text = data, locs, file, text

    def where(self, path=()) -> Loc:
        path = tuple(path)
        while path and path not in self.locs:
            path = path[:-1]
        return self.locs.get(path, Loc(self.file, 1, 1))

    def key_loc(self, path) -> Loc:
        """Location of the key itself (for 'unknown key' errors)."""
        return self.locs.get(("key",) + tuple(path), self.where(path))


_scalar = yaml.SafeLoader.construct_scalar


def _yaml_message(e) -> str:
    """PyYAML's problem, with its context: where an unclosed bracket was opened."""
    if e.context and e.context.startswith("while"):
        m, p = e.context_mark, e.problem_mark
        if m is not None and p is not None and m.line != p.line:
            return f"{e.problem} ({e.context} started at line {m.line + 1}, column {m.column + 1})"
        return e.problem
    return ", ".join(x for x in (e.context, e.problem) if x)


def load_text(text: str, file: str = "<string>") -> Located:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SpecError.at(Loc(file, 1, 1), f"the file is larger than {MAX_BYTES} bytes; a spec should be a page of YAML")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError.at(Loc(file, line, col), f"YAML syntax: {_yaml_message(e)}") from None
    except yaml.YAMLError as e:
        raise SpecError.at(Loc(file, 1, 1), f"YAML syntax: {e}") from None
    locs: dict = {}
    count = [0]
    loader = yaml.SafeLoader("")

    def loc(node) -> Loc:
        return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(node, path, depth):
        count[0] += 1
        if count[0] > MAX_NODES:
            raise SpecError.at(loc(node), f"the document expands to more than {MAX_NODES} values (alias expansion?); refusing it")
        if depth > MAX_DEPTH:
            raise SpecError.at(loc(node), f"nesting deeper than {MAX_DEPTH} levels; a spec is shallower than that")
        locs[path] = loc(node)
        if node.tag and node.tag not in PLAIN_TAGS:
            raise SpecError.at(loc(node), f"the tag {node.tag} is not allowed: a spec is plain YAML "
                                          f"(mappings, lists, strings and numbers)")
        if isinstance(node, yaml.MappingNode):
            out = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise SpecError.at(loc(knode), "a key must be a plain name, not a list or mapping")
                if knode.tag and knode.tag not in PLAIN_TAGS:
                    raise SpecError.at(loc(knode), f"the tag {knode.tag} is not allowed: a spec is plain YAML "
                                                   f"(mappings, lists, strings and numbers)")
                if knode.tag == "tag:yaml.org,2002:merge":
                    raise SpecError.at(loc(knode), "YAML merge keys (<<) are not supported; write the keys out")
                key = loader.construct_object(knode)
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    first = locs[("key",) + path + (key,)]
                    raise SpecError.at(loc(knode), f"duplicate key '{key}' (first defined at line {first.line}); each key may appear once")
                locs[("key",) + path + (key,)] = loc(knode)
                out[key] = build(vnode, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(v, path + (i,), depth + 1) for i, v in enumerate(node.value)]
        value = loader.construct_object(node)
        if node.style in ('"', "'") and isinstance(value, str):
            locs[path] = loc(node).shifted(1)   # expression columns count from inside the quotes
        return value

    data = build(root, (), 0) if root is not None else None
    return Located(data, locs, file, text)


def load_file(path: str) -> Located:
    if os.path.isdir(path):
        raise SpecError.at(Loc(path, 1, 1), "a directory, not a spec file")
    try:
        size = os.path.getsize(path)
    except OSError:
        raise SpecError.at(Loc(path, 1, 1), "no such file") from None
    if size > MAX_BYTES:
        raise SpecError.at(Loc(path, 1, 1), f"the file is {size} bytes, larger than {MAX_BYTES}; a spec should be a page of YAML")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise SpecError.at(Loc(path, 1, 1), f"not UTF-8 text (byte {e.start})") from None
    return load_text(text, path)
