"""Word vectors in word2vec's formats (what gensim's KeyedVectors.load_word2vec_format reads):

    text:    a header line "COUNT DIM", then one line per word: "word v1 v2 ... vDIM"
    binary:  the same header, then per word: the word's UTF-8 bytes, a space, DIM little-endian
             float32s, a newline (word2vec.c's layout)

Out: `graphspec export CKPT --format word2vec [--binary]` writes a model's embedding rows under
its vocabulary's words. In: a param declared `init: {file: vectors.txt}` takes the rows whose
word the file has (apply_pretrained, called when training starts).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from graphspec.errors import UserError
from graphspec.render import init_text

from ..data import RESERVED


def write(path: str, words: list, vectors: np.ndarray, binary: bool = False) -> list:
    """Write words with their vectors (float32), atomically; returns the words left out
    because the format cannot hold them (the reserved <pad> <unk> <bos> <eos>, and any word
    containing whitespace, which separates fields)."""
    vectors = np.asarray(vectors, np.float32)
    kept = [(w, v) for w, v in zip(words, vectors) if w not in RESERVED and w and not any(c.isspace() for c in w)]
    skipped = [w for w in words if w in RESERVED or not w or any(c.isspace() for c in w)]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".w2v")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{len(kept)} {vectors.shape[1]}\n".encode())
            for w, v in kept:
                if binary:
                    f.write(w.encode("utf-8") + b" " + v.astype("<f4").tobytes() + b"\n")
                else:       # %.9g round-trips every float32
                    f.write((w + " " + " ".join("%.9g" % x for x in v) + "\n").encode("utf-8"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return [w for w in skipped if w not in RESERVED]


def read(path: str) -> tuple:
    """(words, float32 vectors [n, dim]) from a word2vec text or binary file (told apart by
    whether the first record parses as text)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    head, _, body = raw.partition(b"\n")
    try:
        count, dim = (int(x) for x in head.split())
        if count < 0 or dim < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"{path}:1: not a word2vec file: the first line must be 'COUNT DIM', "
                        f"got {head[:40].decode('utf-8', 'replace')!r}") from None
    first = body.split(b"\n", 1)[0]
    words, vecs = (_read_text if _is_text(first, dim) else _read_binary)(path, body, count, dim)
    seen = set()
    for i, w in enumerate(words):
        if w in seen:
            raise UserError(f"{path}: word {w!r} appears twice (record {i + 1})")
        seen.add(w)
    return words, vecs


def _is_text(line: bytes, dim: int) -> bool:
    try:
        fields = line.decode("utf-8").rstrip().split(" ")
        [float(x) for x in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        return False
    return len(fields) == dim + 1


def _read_text(path, body: bytes, count: int, dim: int):
    try:
        lines = [ln for ln in body.decode("utf-8").split("\n") if ln.strip()]
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 at byte {e.start} of the word lines") from None
    if len(lines) != count:
        raise UserError(f"{path}: the header says {count} words, the file has {len(lines)}")
    words, vecs = [], np.empty((count, dim), np.float32)
    for i, line in enumerate(lines):
        fields = line.rstrip().split(" ")
        if len(fields) != dim + 1:
            raise UserError(f"{path}:{i + 2}: a word and {dim} numbers expected, got {len(fields)} fields")
        try:
            vecs[i] = [float(x) for x in fields[1:]]
        except ValueError:
            raise UserError(f"{path}:{i + 2}: not a number among the {dim} values of {fields[0]!r}") from None
        words.append(fields[0])
    return words, vecs


def _read_binary(path, body: bytes, count: int, dim: int):
    words, vecs = [], np.empty((count, dim), np.float32)
    pos, size = 0, 4 * dim
    for i in range(count):
        while pos < len(body) and body[pos:pos + 1] == b"\n":
            pos += 1
        end = body.find(b" ", pos)
        if end < 0 or end + 1 + size > len(body):
            raise UserError(f"{path}: the file ends inside record {i + 1} of {count} (truncated?)")
        try:
            words.append(body[pos:end].decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"{path}: record {i + 1}: the word is not UTF-8") from None
        vecs[i] = np.frombuffer(body, "<f4", dim, end + 1)
        pos = end + 1 + size
    if body[pos:].strip(b"\n"):
        raise UserError(f"{path}: the header says {count} words, the file has more")
    return words, vecs


def apply_pretrained(model, vocabs: dict, log=print) -> dict:
    """Rows of every param declared `init: {file: ...}` from its file, matched by word to the
    vocabulary of its rows' dim (vocabs: dim name -> Vocab); the other rows keep the values
    `rest` gave them. Returns {param: rows matched} and logs one line per param."""
    out = {}
    for b in model.param_buffers:
        kind, args = b.init if isinstance(b.init, tuple) else (None, None)
        if kind != "file":
            continue
        path, rest, dim = args
        words, vecs = read(path)
        rows = model.param(b.name)
        if vecs.shape[1] != rows.shape[1]:
            raise UserError(f"{path}: vectors of {vecs.shape[1]} numbers, but param {b.name} is "
                            f"{rows.shape[0]}x{rows.shape[1]}: its columns must match the file")
        vocab = vocabs[dim]
        index = {w: i for i, w in enumerate(words)}
        hit = [(i, index[w]) for i, w in enumerate(vocab.itos) if w in index]
        if hit:
            mine, theirs = (np.array(x) for x in zip(*hit))
            rows[mine] = vecs[theirs]
        out[b.name] = len(hit)
        log(f"{b.name}: {len(hit)} of {rows.shape[0]} rows from {path} "
            f"(the other {rows.shape[0] - len(hit)}: {init_text(*rest)})")
    return out
