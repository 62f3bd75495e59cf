"""Safe YAML loading that remembers where every key and value came from.

yaml.compose gives nodes with marks; we build plain Python objects from them ourselves so that
(1) no object is ever constructed from tags (safe), (2) duplicate keys are an error, and
(3) each path (tuple of keys/indices) maps to its file:line:col for error messages.

Only regular files of at most a megabyte are read, nesting is bounded before the recursive
composer sees it, and numbers must be finite. A file that is neither a spec nor a block file (a
block path that names a secrets file, say) is refused without quoting any of its text: error
messages show content only of files that look like ours.
"""
from __future__ import annotations

import math
import re
from typing import Any

import yaml

from .errors import Loc, SpecError
from .limits import MAX_SPEC_BYTES as MAX_BYTES, BadFile, read_bytes

MAX_DEPTH = 32
MAX_NODES = 100_000          # counts alias re-visits too, so an alias bomb is refused
# the standard tags plain YAML resolves to; anything else (!!python/object, ...) is refused
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
# The top-level keys of specs and of block files (schema.py's lists; a test keeps them equal).
SPEC_KEYS = ("name", "doc", "data", "dims", "blocks", "inputs", "params", "nodes", "loss", "outputs", "train", "decode")
BLOCK_KEYS = ("block", "doc", "option", "args", "dims", "params", "nodes", "out")
_OUR_KEY = re.compile(r"^[{\s]*['\"]?(nodes|block|name)['\"]?\s*:", re.M)
NOT_OURS = ("neither a spec nor a block file (a spec has nodes, a block file has block, and most of either's "
            "top-level keys are theirs); its content is not shown")


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


def _looks_ours(root) -> bool:
    """A mapping with nodes or block, or whose top-level keys are mostly a spec's or a block's."""
    if not isinstance(root, yaml.MappingNode):
        return True              # refused as "not a mapping" without its content (see _placeholder)
    keys = [k.value for k, _ in root.value if isinstance(k, yaml.ScalarNode)]
    if "nodes" in keys or "block" in keys:
        return True
    ours = sum(k in SPEC_KEYS or k in BLOCK_KEYS for k in keys)
    return ours > 0 and 2 * ours > len(keys)


def _placeholder(root):
    """What a document that is not a mapping becomes: its kind without its content, so the schema
    says "a spec is a mapping" and nothing inside (keys of a secrets list) is ever echoed."""
    return [] if isinstance(root, yaml.SequenceNode) else ""


def _check_depth(text: str, file: str):
    """Refuse nesting deeper than MAX_DEPTH from the parser's events (an iterative state machine)
    before the composer, which recurses once per level, sees it. YAML errors are left to it."""
    # libyaml first (fast); its own limit (1000 levels) raises before the events we count, so
    # on any error the pure-Python parser (also iterative) counts again
    for loader in dict.fromkeys((getattr(yaml, "CSafeLoader", yaml.SafeLoader), yaml.SafeLoader)):
        depth = 0
        try:
            for ev in yaml.parse(text, Loader=loader):
                if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    depth += 1
                    if depth > MAX_DEPTH + 1:
                        m = ev.start_mark
                        raise SpecError.at(Loc(file, m.line + 1, m.column + 1),
                                           f"nesting deeper than {MAX_DEPTH} levels; a spec is shallower than that")
                elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    depth -= 1
            return
        except yaml.YAMLError:
            continue


def load_text(text: str, file: str = "<string>") -> Located:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise SpecError.at(Loc(file, 1, 1), f"the file is larger than {MAX_BYTES} bytes; a spec should be a page of YAML")
    _check_depth(text, file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = _yaml_message(e) if _OUR_KEY.search(text) else NOT_OURS
        raise SpecError.at(Loc(file, line, col), f"YAML syntax: {what}") from None
    except yaml.YAMLError as e:
        raise SpecError.at(Loc(file, 1, 1), f"YAML syntax: {e if _OUR_KEY.search(text) else NOT_OURS}") from None
    except RecursionError:       # only if the depth scan could not run (a YAML error before the depth)
        raise SpecError.at(Loc(file, 1, 1), f"nesting deeper than {MAX_DEPTH} levels; a spec is shallower than that") from None
    if root is not None and not _looks_ours(root):
        raise SpecError.at(Loc(file, root.start_mark.line + 1, root.start_mark.column + 1), NOT_OURS)
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
            for knode, vnode in _rejoin_pairs(node, text, file):
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
            return [build(v, path + (i,), depth + 1) for i, v in enumerate(_rejoin_items(node, text))]
        value = loader.construct_object(node)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError.at(loc(node), f"{node.value} is not a finite number; every number in a spec is finite")
        if node.style in ('"', "'") and isinstance(value, str):
            locs[path] = loc(node).shifted(1)   # expression columns count from inside the quotes
        return value

    if root is not None and not isinstance(root, yaml.MappingNode):
        locs[()] = loc(root)
        return Located(_placeholder(root), locs, file, text)
    data = build(root, (), 0) if root is not None else None
    return Located(data, locs, file, text)


# Inside {...} and [...] a comma ends a plain value, so {init: uniform(0, 1)} reads as init:
# 'uniform(0' and a key '1)' with no value. A plain value left with an open bracket is joined
# with the plain, valueless entries that follow until its brackets close: the text between is
# taken from the file as written. Anything else (quoted, a key with a value, never closed) is
# left as YAML reads it.
def _is_plain(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.style is None


def _opens(node) -> int:
    if not _is_plain(node):
        return 0
    return node.value.count("(") - node.value.count(")") + node.value.count("[") - node.value.count("]")


def _joined(first, last, text: str):
    raw = text[first.start_mark.index:last.end_mark.index]
    return yaml.ScalarNode("tag:yaml.org,2002:str", raw, first.start_mark, last.end_mark, style=None)


def _is_null(node) -> bool:
    return _is_plain(node) and node.value == ""


def _rejoin_pairs(node, text: str, file: str) -> list:
    pairs = list(node.value)
    if not node.flow_style:
        return pairs
    out, i = [], 0
    while i < len(pairs):
        k, v = pairs[i]
        depth, j = _opens(v), i
        while depth > 0 and j + 1 < len(pairs) and _is_plain(pairs[j + 1][0]) and _is_null(pairs[j + 1][1]):
            j += 1
            depth += _opens(pairs[j][0])
        if j > i and depth == 0:
            out.append((k, _joined(v, pairs[j][0], text)))
            i = j + 1
            continue
        if j > i:
            raw = _joined(v, pairs[j][0], text).value
            raise SpecError.at(Loc(file, v.start_mark.line + 1, v.start_mark.column + 1),
                               f"'{raw}' does not close its brackets (inside {{...}} a comma would end a plain "
                               f"value: quote it if the comma belongs to it)")
        out.append((k, v))
        i += 1
    return out


def _rejoin_items(node, text: str) -> list:
    items = list(node.value)
    if not node.flow_style:
        return items
    out, i = [], 0
    while i < len(items):
        depth, j = _opens(items[i]), i
        while depth > 0 and j + 1 < len(items) and _is_plain(items[j + 1]):
            j += 1
            depth += _opens(items[j])
        if j > i and depth == 0:
            out.append(_joined(items[i], items[j], text))
            i = j + 1
            continue
        out.append(items[i])
        i += 1
    return out


def load_file(path: str) -> Located:
    try:
        raw = read_bytes(path, MAX_BYTES, "file")
    except BadFile as e:
        msg = str(e)
        if msg.startswith("a directory"):
            msg = "a directory, not a spec file"
        elif msg.startswith("the file is "):
            msg += "; a spec should be a page of YAML"
        raise SpecError.at(Loc(path, 1, 1), msg) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError.at(Loc(path, 1, 1), f"not UTF-8 text (byte {e.start})") from None
    return load_text(text, path)
