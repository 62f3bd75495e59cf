"""Vocabularies, padding, user data files, and the tables word2vec needs.

Batches are dicts of numpy arrays, time-major: a token sequence `x` is int64 [T, B] with
`x_mask` float32 [T, B] (1 on real steps) and `x_len` int64 [B]; a real sequence is [T, B, F];
a per-example label is [B], a per-example vector [B, F].
"""
from __future__ import annotations

import heapq
from collections import Counter

import numpy as np

from graphspec.errors import UserError
from graphspec.limits import MAX_DATA_BYTES, BadFile, read_bytes

PAD, UNK, BOS, EOS = 0, 1, 2, 3
RESERVED = ("<pad>", "<unk>", "<bos>", "<eos>")     # the compiler relies on <bos> = 2


class DataError(UserError):
    """A bad data file: one line, `path:line: what is wrong`."""


class Vocab:
    def __init__(self, tokens=(), counts=None):
        self.itos = list(RESERVED) + [t for t in tokens if t not in RESERVED]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.counts = np.zeros(len(self.itos), np.int64)
        if counts:
            for t, c in counts.items():
                if t in self.stoi:
                    self.counts[self.stoi[t]] = c

    @classmethod
    def build(cls, token_lists, min_count: int = 1, max_size=None) -> "Vocab":
        c = Counter()
        for toks in token_lists:
            c.update(toks)
        kept = sorted((t for t, n in c.items() if n >= min_count), key=lambda t: (-c[t], t))
        if max_size:
            kept = kept[:max_size - len(RESERVED)]
        return cls(kept, c)

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens, add_bos=False, add_eos=False) -> list:
        ids = [self.stoi.get(t, UNK) for t in tokens]
        return ([BOS] if add_bos else []) + ids + ([EOS] if add_eos else [])

    def decode(self, ids, strip=True) -> list:
        out = []
        for i in ids:
            i = int(i)
            if strip and i == EOS:
                break
            if strip and i in (PAD, BOS):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else RESERVED[UNK])
        return out

    def to_json(self) -> list:
        return self.itos[len(RESERVED):]

    @classmethod
    def from_json(cls, tokens) -> "Vocab":
        return cls(tokens)


def pad_batch(seqs, pad: int = PAD, length=None):
    """(ids [T, B], mask [T, B], len [B]), time-major."""
    lens = np.array([len(s) for s in seqs], np.int64)
    T = int(length or max(1, lens.max(initial=1)))
    ids = np.full((T, len(seqs)), pad, np.int64)
    for b, s in enumerate(seqs):
        ids[:len(s), b] = s[:T]
    mask = (np.arange(T)[:, None] < lens[None, :]).astype(np.float32)
    return ids, mask, lens


# ---------------------------------------------------------------- user files
MAX_PAIR_TOKENS = 10_000     # a source or target longer than this is not one example of a sequence task


def read_text(path: str) -> str:
    """A regular UTF-8 file of at most MAX_DATA_BYTES (32 MiB), decoded."""
    try:
        raw = read_bytes(path, MAX_DATA_BYTES, "data file")
    except BadFile as e:
        raise DataError(f"{path}: {e}") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        f"save the file as UTF-8") from None


def _read_lines(path: str) -> list:
    return read_text(path).splitlines()


def tokenize(text: str, how: str) -> list:
    return list(text) if how == "chars" else text.split()


def detokenize(tokens, how: str) -> str:
    """Tokens back to text: characters joined, words spaced (a "\n" token ends a line)."""
    if how == "chars":
        return "".join(tokens)
    out = ""
    for t in tokens:
        out += t if t == "\n" or not out or out.endswith("\n") else " " + t
    return out


def text_words(text: str) -> list:
    """A text's words, each line ending in a "\n" token (so a model learns where lines end)."""
    words = []
    for line in text.splitlines():
        words += line.split() + ["\n"]
    return words


def load_pairs(path: str, max_len=None, tokens: str = "chars") -> list:
    """TSV `source<TAB>target` lines -> [(source tokens, target tokens)]."""
    out = []
    for i, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{i}: no tab; each line must be source<TAB>target")
        src, tgt = line.split("\t", 1)
        longest = max(len(src), len(tgt)) if tokens == "chars" else 0     # before a list is made of it
        if longest > MAX_PAIR_TOKENS:
            raise DataError(f"{path}:{i}: a sequence of {longest} characters is longer than {MAX_PAIR_TOKENS}, "
                            f"the most one example may have")
        s, t = tokenize(src, tokens), tokenize(tgt, tokens)
        if max_len and max(len(s), len(t)) > max_len:
            raise DataError(f"{path}:{i}: a sequence of {max(len(s), len(t))} tokens is longer than "
                            f"the allowed {max_len}")
        out.append((s, t))
    if not out:
        raise DataError(f"{path}: no pairs found")
    return out


HELD_OUT = 0.05      # of a data file's examples: the share each of valid and test holds


def split_three(examples: list, what: str = "examples") -> dict:
    """train / valid / test of a data file's examples: one fixed shuffle (the same for every run
    and --seed: a file sorted by length or topic would otherwise hold out only its tail), then
    the last 5% (at least one) is test, the 5% before it valid, the rest train."""
    n = len(examples)
    if n < 3:
        raise ValueError(f"{n} {what}; need at least 3 (one each for training, validation and test)")
    k = max(1, round(n * HELD_OUT))
    order = np.random.default_rng(0).permutation(n)
    shuffled = [examples[i] for i in order]
    return {"train": shuffled[:n - 2 * k], "valid": shuffled[n - 2 * k:n - k], "test": shuffled[n - k:]}


def load_text(path: str, tokens: str = "chars") -> list:
    lines = _read_lines(path)
    toks = []
    for line in lines:
        toks += tokenize(line + ("\n" if tokens == "chars" else ""), tokens)
    return toks


# ---------------------------------------------------------------- word2vec tables
class _Weighed:
    """A tree node in the heap, ordered by its count alone (as gensim's Heapitem)."""
    __slots__ = ("count", "node")

    def __init__(self, count, node):
        self.count, self.node = count, node

    def __lt__(self, other):
        return self.count < other.count


def huffman_tree(counts, rank=None) -> np.ndarray:
    """The Huffman tree of word2vec's hierarchical softmax, as an int64 table [V, 1 + 2L]:
    row w = [path length n, inner nodes n_1..n_L (root first), codes d_1..d_L]. Inner nodes are
    numbered 0..V-2; d_j = 1 when the path turns to the second child. Frequent words get short
    paths.

    Built as gensim builds it: a heapq over the words in vocabulary order (`rank`, default: the
    id) that compares counts only; the two lightest nodes merge, the first taken gets code 0, and
    between equal counts the heap's own order decides. Which of two equal counts goes where
    changes the vectors about as much as another seed does, so the bench's agreement with gensim
    needs gensim's tree (Words.rank is gensim's vocabulary order). Words
    with a zero count (<pad>, <unk> ...) are left out of that tree, so it is gensim's; they hang
    below the rarest counted word, whose path alone gets one node longer, so every word has a
    path."""
    counts = np.asarray(counts, np.int64)
    V = len(counts)
    if V == 1:
        return np.zeros((1, 3), np.int64)
    rank = np.arange(V) if rank is None else np.asarray(rank)
    parent, code = {}, {}
    nxt = [V]                           # inner nodes are V, V + 1, ... here (0, 1, ... in the table)

    def merge(words):
        """Huffman merges of `words` (in rank order); returns the root."""
        heap = [_Weighed(int(counts[w]), w) for w in sorted(words, key=lambda w: rank[w])]
        heapq.heapify(heap)
        while len(heap) > 1:
            a, b = heapq.heappop(heap), heapq.heappop(heap)
            parent[a.node], code[a.node], parent[b.node], code[b.node] = nxt[0], 0, nxt[0], 1
            heapq.heappush(heap, _Weighed(a.count + b.count, nxt[0]))
            nxt[0] += 1
        return heap[0].node

    seen = [w for w in range(V) if counts[w] > 0]
    unseen = [w for w in range(V) if counts[w] <= 0]
    root = merge(seen or unseen)
    if seen and unseen:                 # the unseen words' subtree and the rarest word share a node
        lost = merge(unseen)
        rarest = max(seen, key=lambda w: (-counts[w], rank[w]))
        node = nxt[0]
        nxt[0] += 1
        if rarest == root:
            root = node
        else:
            parent[node], code[node] = parent[rarest], code[rarest]
        parent[rarest], code[rarest], parent[lost], code[lost] = node, 0, node, 1
    paths = []
    for w in range(V):
        nodes, codes, n = [], [], w
        while n != root:
            nodes.append(parent[n] - V)
            codes.append(code[n])
            n = parent[n]
        paths.append((nodes[::-1], codes[::-1]))
    L = max(len(p[0]) for p in paths)
    out = np.zeros((V, 1 + 2 * L), np.int64)
    for w, (nodes, codes) in enumerate(paths):
        out[w, 0] = len(nodes)
        out[w, 1:1 + len(nodes)] = nodes
        out[w, 1 + L:1 + L + len(codes)] = codes
    return out


def unigram_table(counts, size: int = 1_000_000, power: float = 0.75) -> np.ndarray:
    """Word ids in proportion to count ** 0.75 (negative sampling's noise distribution), [size, 1]."""
    p = np.asarray(counts, np.float64) ** power
    p[:len(RESERVED)] = 0 if p[len(RESERVED):].sum() > 0 else p[:len(RESERVED)]
    p /= p.sum()
    edges = np.cumsum(p)
    idx = np.searchsorted(edges, (np.arange(size) + 0.5) / size)
    return np.minimum(idx, len(p) - 1).astype(np.int64).reshape(-1, 1)
