"""Built-in tasks, generated from a seed, no download.

Every batch is a pure function of (task parameters, split, step, seed): the same arguments give
the same arrays, so training can resume bit-identically and splits never share a stream. The
text corpora are built at run time from the docstrings of Python's standard library, which
every machine with Python has.

Batch keys: sequence tasks give `x` (+ `x_mask`, `x_len`) and `y` (+ `y_mask`, `y_len`); the
encoder-decoder tasks put the source on `x` and the target (followed by <eos>) on `y`.
"""
from __future__ import annotations

import calendar
import datetime
import difflib
import functools
import inspect
import re
import sys

import numpy as np

from .data import Vocab, pad_batch

SPLITS = {"train": 0, "valid": 1, "test": 2}


def rng_for(seed: int, split: str, step: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (train, valid, test)")
    return np.random.default_rng([int(seed), SPLITS[split], int(step)])


MAX_INT_PARAM = 100_000        # lengths, gaps, windows: a batch is allocated from them


class Task:
    name = ""
    params: dict = {}
    param_bounds: dict = {}    # param -> (lo, hi) where it differs from [1, MAX_INT_PARAM] / [0, 1]

    def __init__(self, **params):
        unknown = set(params) - set(self.params)
        if unknown:
            k = sorted(unknown)[0]
            close = difflib.get_close_matches(k, list(self.params), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"task {self.name}: unknown parameter '{k}'{hint} "
                             f"(parameters: {', '.join(sorted(self.params)) or 'none'})")
        for k, v in params.items():
            self._check_param(k, v)
        self.p = dict(self.params, **params)
        for lo, hi in (("min_len", "max_len"), ("first_year", "last_year")):
            if lo in self.p and self.p[lo] > self.p[hi]:
                raise ValueError(f"task {self.name}: {lo} {self.p[lo]} is more than {hi} {self.p[hi]}")

    def _check_param(self, k, v):
        """A param has its default's type, within bounds: wrong ones are errors, not crashes later."""
        default = self.params[k]
        if isinstance(default, str):
            if not isinstance(v, str):
                raise ValueError(f"task {self.name}: {k} must be a string, got {v!r}")
            return
        kind = "an integer" if isinstance(default, int) else "a number"
        lo, hi = self.param_bounds.get(k, (1, MAX_INT_PARAM) if isinstance(default, int) else (0.0, 1.0))
        ok = (isinstance(v, int) or (isinstance(v, float) and not isinstance(default, int))) \
            and not isinstance(v, bool)
        if not ok or not lo <= v <= hi:
            raise ValueError(f"task {self.name}: {k} must be {kind} from {lo} to {hi}, got {v!r}")

    def steps_per_epoch(self, B: int) -> int:
        return 1000

    def describe(self) -> str:
        return f"{self.name}: {(self.__doc__ or '').strip().splitlines()[0]}"


# ---------------------------------------------------------------- encoder-decoder tasks
class Seq2Seq(Task):
    """Shared char vocabulary for source and target unless a subclass sets two."""
    alphabet = ""

    def __init__(self, **params):
        super().__init__(**params)
        self.vocab = Vocab(list(self.alphabet))
        self.src_vocab = self.tgt_vocab = self.vocab

    def example(self, rng) -> tuple:
        raise NotImplementedError

    def batch(self, split: str, B: int, step: int, seed: int = 0) -> dict:
        rng = rng_for(seed, split, step)
        pairs = [self.example(rng) for _ in range(B)]
        x, xm, xl = pad_batch([self.src_vocab.encode(list(s)) for s, _ in pairs])
        y, ym, yl = pad_batch([self.tgt_vocab.encode(list(t), add_eos=True) for _, t in pairs])
        return {"x": x, "x_mask": xm, "x_len": xl, "y": y, "y_mask": ym, "y_len": yl}

    def _letters(self, rng):
        n = rng.integers(self.p["min_len"], self.p["max_len"] + 1)
        return "".join(rng.choice(list(self.symbols), n))


class Copy(Seq2Seq):
    """copy a string of letters"""
    name, alphabet, symbols = "copy", "abcdefghijklmnopqrstuvwxyz", "abcdefghijkl"
    params = {"min_len": 3, "max_len": 10}

    def example(self, rng):
        s = self._letters(rng)
        return s, s


class Reverse(Copy):
    """reverse a string of letters"""
    name = "reverse"

    def example(self, rng):
        s = self._letters(rng)
        return s, s[::-1]


class Sort(Copy):
    """sort the letters of a string"""
    name = "sort"

    def example(self, rng):
        s = self._letters(rng)
        return s, "".join(sorted(s))


class Addition(Seq2Seq):
    """add two integers written in decimal: '123+4567' -> '4690'"""
    name, alphabet = "addition", "0123456789+"
    params = {"max_digits": 4}
    param_bounds = {"max_digits": (1, 18)}           # the sums stay within int64

    def example(self, rng):
        a, b = (int(rng.integers(0, 10 ** rng.integers(1, self.p["max_digits"] + 1))) for _ in range(2))
        return f"{a}+{b}", str(a + b)


DATE_FORMATS = [
    lambda d: f"{d.day} {calendar.month_name[d.month]} {d.year}",
    lambda d: f"{calendar.month_name[d.month]} {d.day}, {d.year}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{calendar.day_abbr[d.weekday()]} {d.day} {calendar.month_abbr[d.month]} {d.year}",
    lambda d: f"{d.year} {calendar.month_abbr[d.month].lower()} {d.day}",
    lambda d: f"{calendar.day_name[d.weekday()]}, {calendar.month_name[d.month]} {_ordinal(d.day)} {d.year}",
    lambda d: f"{d.day} {calendar.month_abbr[d.month].upper()} {d.year}",
    lambda d: f"{d.month}/{d.day}/{d.year}",
    lambda d: f"{_ordinal(d.day)} of {calendar.month_name[d.month].lower()} {d.year}",
    lambda d: f"{calendar.month_abbr[d.month]} {d.day} {d.year}",
    lambda d: f"{d.day}-{calendar.month_abbr[d.month].lower()}-{d.year % 100:02d}",
]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Dates(Seq2Seq):
    """human-readable dates in 12 formats -> ISO 8601 (the classic attention task)"""
    name = "dates"
    params = {"first_year": 1950, "last_year": 2049}
    param_bounds = {"first_year": (1, 9999), "last_year": (1, 9999)}     # datetime.date's years

    def __init__(self, **params):
        Task.__init__(self, **params)
        chars = set()
        for f in DATE_FORMATS:
            for m in range(1, 13):
                for day in (1, 2, 3, 11, 22, 28):
                    chars |= set(f(datetime.date(2000 + (m % 7), m, day)))
        self.src_vocab = Vocab(sorted(chars))
        self.tgt_vocab = Vocab(list("0123456789-"))
        self.vocab = self.tgt_vocab

    def example(self, rng):
        lo = datetime.date(self.p["first_year"], 1, 1).toordinal()
        hi = datetime.date(self.p["last_year"], 12, 31).toordinal()
        d = datetime.date.fromordinal(int(rng.integers(lo, hi + 1)))
        f = DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))]
        return f(d), d.isoformat()


# ---------------------------------------------------------------- long-term dependencies
class Adding(Task):
    """the adding problem: y = the sum of the two marked values of a length-T sequence"""
    name = "adding"
    params = {"length": 50}

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        T = self.p["length"]
        x = np.zeros((T, B, 2), np.float32)
        x[:, :, 0] = rng.random((T, B))
        y = np.zeros((B, 1), np.float32)
        for b in range(B):
            i = rng.integers(0, max(1, T // 2))
            j = rng.integers(T // 2, T)
            x[i, b, 1] = x[j, b, 1] = 1
            y[b, 0] = x[i, b, 0] + x[j, b, 0]
        return {"x": x, "x_mask": np.ones((T, B), np.float32), "y": y}


class CopyMemory(Task):
    """copy-memory: remember 10 symbols across a gap of blanks, write them after the delimiter"""
    name = "copy_memory"
    params = {"gap": 50, "symbols": 8, "remember": 10}
    param_bounds = {"symbols": (1, 16)}

    def __init__(self, **params):
        super().__init__(**params)
        self.vocab = Vocab(list("abcdefghijklmnop"[:self.p["symbols"]]) + ["_", ":"])

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        k, gap = self.p["remember"], self.p["gap"]
        L = 2 * k + gap + 1
        blank, delim = self.vocab.stoi["_"], self.vocab.stoi[":"]
        sym = rng.integers(4, 4 + self.p["symbols"], (k, B))
        x = np.full((L, B), blank, np.int64)
        x[:k] = sym
        x[k + gap] = delim
        y = np.full((L, B), blank, np.int64)
        y[-k:] = sym
        return {"x": x, "x_mask": np.ones((L, B), np.float32), "y": y, "y_mask": np.ones((L, B), np.float32)}


class Parity(Task):
    """parity of a bit string (sequence -> one label)"""
    name = "parity"
    params = {"min_len": 2, "max_len": 12}

    def __init__(self, **params):
        super().__init__(**params)
        self.vocab = Vocab(["0", "1"])

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        seqs, ys = [], []
        for _ in range(B):
            bits = rng.integers(0, 2, rng.integers(self.p["min_len"], self.p["max_len"] + 1))
            seqs.append([4 + int(v) for v in bits])
            ys.append(int(bits.sum() % 2))
        x, m, n = pad_batch(seqs)
        return {"x": x, "x_mask": m, "x_len": n, "y": np.array(ys, np.int64)}


class Bits(Task):
    """parity of n bits given as one real vector (feedforward)"""
    name = "bits"
    params = {"n": 8}

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        x = rng.integers(0, 2, (B, self.p["n"]))
        return {"x": x.astype(np.float32), "y": (x.sum(1) % 2).astype(np.int64)}


class Neighbours(Task):
    """tag each digit with the pair (previous digit, next digit): needs both directions"""
    name = "neighbours"
    params = {"min_len": 5, "max_len": 15}

    def __init__(self, **params):
        super().__init__(**params)
        self.src_vocab = Vocab(list("0123456789"))
        # one tag per pair, '-' where a neighbour is missing: the readout is additive in the
        # two directions' states, so a linear output layer can name the pair
        digits = list("0123456789-")
        self.tgt_vocab = Vocab([a + b for a in digits for b in digits])
        self.vocab = self.tgt_vocab

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        xs, ys = [], []
        for _ in range(B):
            d = "".join(str(v) for v in rng.integers(0, 10, rng.integers(self.p["min_len"], self.p["max_len"] + 1)))
            xs.append(self.src_vocab.encode(list(d)))
            tags = [(d[i - 1] if i > 0 else "-") + (d[i + 1] if i + 1 < len(d) else "-") for i in range(len(d))]
            ys.append(self.tgt_vocab.encode(tags))
        x, m, n = pad_batch(xs)
        y, _, _ = pad_batch(ys)
        return {"x": x, "x_mask": m, "x_len": n, "y": y, "y_mask": m}


# ---------------------------------------------------------------- text from the standard library
STDLIB_MODULES = ("abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections",
                  "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
                  "difflib", "email", "enum", "fractions", "functools", "glob", "gzip", "hashlib", "heapq",
                  "html", "http.client", "inspect", "io", "ipaddress", "itertools", "json", "logging",
                  "math", "mimetypes", "operator", "os", "pathlib", "pickle", "pprint", "random", "re",
                  "shlex", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile",
                  "tempfile", "textwrap", "threading", "tokenize", "typing", "unittest", "urllib.parse",
                  "uuid", "warnings", "weakref", "xml.etree.ElementTree", "zipfile")


@functools.lru_cache(maxsize=1)
def stdlib_corpus() -> str:
    """The docstrings of a fixed list of standard-library modules, their classes, functions and
    methods, in a deterministic order (a few megabytes of English about programming)."""
    import importlib
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # deprecated modules warn when their docs are read
        return _collect_docs(importlib)


def _stdlib_made(obj) -> bool:
    """Defined by the standard library, not swapped in by a package (a wrapper someone patched
    over inspect.getsourcefile must not change the corpus)."""
    mod = getattr(obj, "__module__", None) or "builtins"
    return mod.split(".")[0] in sys.stdlib_module_names


def _collect_docs(importlib) -> str:
    docs, seen = [], set()
    for name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        items = [(name, mod)]
        # public names only: a private helper can be swapped in by whatever else the process has
        # imported (typing_extensions patches typing's), and the corpus must not depend on that
        for attr in sorted(a for a in dir(mod) if not a.startswith("_")):
            try:
                obj = getattr(mod, attr)
            except Exception:
                continue
            if (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)) and _stdlib_made(obj):
                items.append((f"{name}.{attr}", obj))
                if inspect.isclass(obj):
                    for m in sorted(vars(obj)):
                        if not m.startswith("_"):
                            items.append((f"{name}.{attr}.{m}", getattr(obj, m, None)))
        for _, obj in items:
            doc = inspect.getdoc(obj) if obj is not None else None
            if doc and id(doc) not in seen and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return "\n\n".join(docs)


class CharLM(Task):
    """character-level language modelling on standard-library docstrings"""
    name = "charlm"
    params = {"length": 64, "min_count": 20}

    def __init__(self, text=None, **params):
        super().__init__(**params)
        self.text = text if text is not None else stdlib_corpus()
        # code points counted and mapped with numpy: 12 bytes a character at the peak, where
        # Python lists of characters and ids took 24 and a second per 10 MB
        cps = np.frombuffer(self.text.encode("utf-32-le"), np.uint32)
        n_of = np.bincount(cps) if len(cps) else np.zeros(0, np.int64)
        counts = {chr(c): int(n_of[c]) for c in np.flatnonzero(n_of)}
        keep = sorted((c for c, n in counts.items() if n >= self.p["min_count"]), key=lambda c: (-counts[c], c))
        self.vocab = Vocab(keep, counts)
        lut = np.full(len(n_of), 1, np.int64)                # <unk> unless kept
        for c in keep:
            lut[ord(c)] = self.vocab.stoi[c]
        self.ids = lut[cps]
        del cps
        n = len(self.ids)
        self.bounds = {"train": (0, int(n * 0.9)), "valid": (int(n * 0.9), int(n * 0.95)), "test": (int(n * 0.95), n)}
        for split, (lo, hi) in self.bounds.items():
            if hi - lo < self.p["length"] + 2:
                raise ValueError(f"task charlm: the {split} split has {hi - lo} characters, too few for windows "
                                 f"of length {self.p['length']} (use a shorter length or more text)")

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        L = self.p["length"]
        lo, hi = self.bounds[split]
        starts = rng.integers(lo, hi - L - 1, B)
        idx = starts[None, :] + np.arange(L)[:, None]
        return {"x": self.ids[idx], "y": self.ids[idx + 1], "x_mask": np.ones((L, B), np.float32),
                "y_mask": np.ones((L, B), np.float32)}

    def steps_per_epoch(self, B):
        return max(1, (self.bounds["train"][1] // self.p["length"]) // B)


class Words(Task):
    """word2vec pairs from the words of standard-library docstrings (skip-gram or CBOW)"""
    name = "words"
    params = {"mode": "skipgram", "window": 5, "min_count": 5, "sample": 1e-3}
    param_bounds = {"window": (1, 1000)}

    def __init__(self, text=None, **params):
        super().__init__(**params)
        if self.p["mode"] not in ("skipgram", "cbow"):
            raise ValueError(f"task words: mode must be skipgram or cbow, got '{self.p['mode']}'")
        words = re.findall(r"[a-z]+", (text if text is not None else stdlib_corpus()).lower())
        self.vocab = Vocab.build([words], min_count=self.p["min_count"])
        ids = np.array(self.vocab.encode(words), np.int64)
        self.ids = ids[ids != 1]                      # unknown words dropped, as word2vec does
        # the vocabulary's order as gensim ranks it (by count, the later first appearance first
        # between equal counts): the Huffman tree breaks ties by it (runtime/data.py)
        first = np.full(len(self.vocab), len(self.ids), np.int64)
        seen, at = np.unique(self.ids, return_index=True)
        first[seen] = at
        self.rank = np.empty(len(self.vocab), np.int64)
        self.rank[np.lexsort((-first, -self.vocab.counts))] = np.arange(len(self.vocab))
        counts = self.vocab.counts.astype(np.float64)
        total = counts.sum()
        f = counts / max(total, 1)
        t = self.p["sample"]
        # word2vec's keep probability for frequent-word subsampling: (sqrt(f / t) + 1) t / f
        self.keep = np.minimum(1.0, (np.sqrt(f / t) + 1) * t / np.maximum(f, 1e-12)) if t else np.ones_like(f)
        n = len(self.ids)
        self.bounds = {"train": (0, int(n * 0.95)), "valid": (int(n * 0.95), n), "test": (int(n * 0.95), n)}
        # examples in one pass over a split (expected): a centre per kept word, times E[2 reach] =
        # W + 1 context words for skip-gram (one example per pair)
        pairs = self.p["window"] + 1 if self.p["mode"] == "skipgram" else 1
        self.per_pass = {s: max(1, int(self.keep[self.ids[lo:hi]].sum() * pairs)) for s, (lo, hi) in self.bounds.items()}
        self._starts: dict = {}         # (split, seed) -> first example of each pass computed so far
        self._pass = (None, None)       # (split, seed, pass) and its words, reaches, examples

    def corpus_ids(self):
        return self.ids

    def batch(self, split, B, step, seed=0):
        """Examples B * step .. B * step + B - 1 of the split's stream, made as word2vec.c makes
        them: pass after pass over the text in order; each pass drops frequent words (each with
        its keep probability, drawn afresh every pass) before the windows are taken, so a window
        reaches past them; each kept word w is a centre once, its window shrunk at random to
        reach = W - b, b uniform in [0, W), and cut at the split's ends. CBOW: one example per
        centre, `context` its window left to right (-1 beyond the reach). Skip-gram: one example
        per (centre, context word) pair, the context words left to right (the specs predict the
        centre from the context word, as word2vec.c does)."""
        W = self.p["window"]
        skipgram = self.p["mode"] == "skipgram"
        centers = np.empty(B, np.int64)
        context = np.empty((B, 1) if skipgram else (B, 2 * W), np.int64)
        at, done = B * int(step), 0
        while done < B:
            n, first = self._pass_of(split, seed, at)
            kept, reach, ends = self._pass_words(split, seed, n)
            take = min(B - done, first + int(ends[-1]) - at)
            _word_examples(kept, reach, ends, at - first, W, skipgram, centers[done:done + take],
                           context[done:done + take])
            done, at = done + take, at + take
        return {"center": centers, "context": context[:, 0] if skipgram else context}

    def _pass_of(self, split, seed, at) -> tuple:
        """(pass n, its first example) for the stream's example `at`: passes differ in length
        (the subsampling and the windows are drawn afresh), so their starts add up."""
        starts = self._starts.setdefault((split, seed), [0])
        while starts[-1] <= at:
            self.pass_start(split, seed, len(starts))
        n = int(np.searchsorted(starts, at, side="right")) - 1
        return n, starts[n]

    def pass_start(self, split, seed, n) -> int:
        """The stream's first example of pass n (so n passes are pass_start(split, seed, n) examples)."""
        starts = self._starts.setdefault((split, seed), [0])
        while len(starts) <= n:
            starts.append(starts[-1] + int(self._pass_words(split, seed, len(starts) - 1)[2][-1]))
        return starts[n]

    def draws(self, split, seed, n) -> tuple:
        """Pass n's random draws: a uniform number per word of the split (it is kept when the
        number is below its keep probability) and b in [0, W) per kept word (its window reach
        is W - b)."""
        lo, hi = self.bounds[split]
        rng = np.random.default_rng([int(seed), SPLITS[split], int(n), 7])
        return rng.random(hi - lo), rng.integers(0, self.p["window"], hi - lo)

    def _pass_words(self, split, seed, n) -> tuple:
        """Pass n's kept words, each centre's reach, and the cumulative example count per centre
        (cached: a pass spans many batches)."""
        key = (split, seed, n)
        if self._pass[0] != key:
            lo, hi = self.bounds[split]
            ids = self.ids[lo:hi]
            u, b = self.draws(split, seed, n)
            kept = ids[u < self.keep[ids]]
            W = self.p["window"]
            if len(kept) < 2 * W + 2:         # a tiny split: keep every word
                kept = ids
            if len(kept) < 2 * W + 2:
                raise ValueError(f"task words: the {split} split has {len(ids)} words; a window of {W} "
                                 f"needs at least {2 * W + 2} (use more text or a smaller window)")
            reach = W - b[:len(kept)]
            if self.p["mode"] == "skipgram":
                pos = np.arange(len(kept))
                per = np.minimum(pos, reach) + np.minimum(len(kept) - 1 - pos, reach)
            else:
                per = np.ones(len(kept), np.int64)
            self._pass = (key, (kept, reach, np.cumsum(per)))
        return self._pass[1]

    def steps_per_epoch(self, B):
        return max(1, self.per_pass["train"] // B)

    def quality(self, E: np.ndarray, words: int = 200, k: int = 10) -> dict:
        """Neighbour overlap: of each frequent word's k nearest neighbours (cosine), the share that
        occur within the window of it somewhere in the corpus; chance is the same share for k
        random words."""
        top = [i for i in np.argsort(-self.vocab.counts) if i >= 4][:words]
        near = {w: set() for w in top}
        W = self.p["window"]
        ids = self.ids
        pos = {w: np.nonzero(ids == w)[0] for w in top}
        for w in top:
            for p in pos[w][:2000]:
                near[w].update(ids[max(0, p - W):p + W + 1].tolist())
        U = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        hits = chance = 0.0
        for w in top:
            sims = U[4:] @ U[w]
            order = [i + 4 for i in np.argsort(-sims) if i + 4 != w][:k]
            hits += np.mean([i in near[w] for i in order])
            chance += len(near[w]) / len(self.vocab)
        return {"neighbours": hits / len(top), "neighbours_chance": chance / len(top)}


def _jit_on_first_call(fn):
    """numba compiles it when a batch first needs it: the task table itself imports no numba
    (graphspec validate checks a spec's data section against it)."""
    compiled = []

    @functools.wraps(fn)
    def call(*args):
        if not compiled:
            from .jit import jit
            compiled.append(jit(fn))
        return compiled[0](*args)
    return call


@_jit_on_first_call
def _word_examples(kept, reach, ends, at, W, skipgram, centers, context):
    """The pass's examples at, at + 1, ... into centers / context (see Words.batch); ends[i] is
    the number of examples of centres 0..i."""
    i = np.searchsorted(ends, at, side="right")
    k = at - (ends[i - 1] if i > 0 else 0)              # the example's rank among centre i's
    L = kept.shape[0]
    for n in range(centers.shape[0]):
        c, r = kept[i], reach[i]
        centers[n] = c
        if skipgram:
            j = max(0, i - r) + k                     # the k-th context position, left to right
            if j >= i:
                j += 1
            context[n, 0] = kept[j]
            k += 1
            if k == ends[i] - (ends[i - 1] if i > 0 else 0):
                i, k = i + 1, 0
        else:
            for d in range(W):
                near = d < r
                context[n, W - 1 - d] = kept[i - d - 1] if near and i - d - 1 >= 0 else -1
                context[n, W + d] = kept[i + d + 1] if near and i + d + 1 < L else -1
            i += 1


TASKS = {t.name: t for t in (Copy, Reverse, Sort, Addition, Dates, Adding, CopyMemory, Parity, Bits,
                              Neighbours, CharLM, Words)}


def get_task(name: str, **params) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown task '{name}'{hint} (tasks: {', '.join(sorted(TASKS))})")
    return TASKS[name](**params)



class WordLM(CharLM):
    """word-level language modelling on a text file (--data FILE --tokens words)"""
    name = "wordlm"
    tokens = "words"
    params = {"length": 32, "min_count": 1, "max_vocab": 0}
    param_bounds = {"max_vocab": (0, 10_000_000)}         # 0: no limit

    def __init__(self, text: str, **params):
        from .data import text_words
        Task.__init__(self, **params)
        words = text_words(text)
        p = self.p
        n = len(words)
        # the vocabulary of the training part: a word seen only in held-out text is <unk>, as new text's would be
        self.vocab = Vocab.build([words[:int(n * 0.9)]], min_count=p["min_count"],
                                 max_size=p["max_vocab"] + 4 if p["max_vocab"] else None)
        self.ids = np.array(self.vocab.encode(words), np.int64)
        self.bounds = {"train": (0, int(n * 0.9)), "valid": (int(n * 0.9), int(n * 0.95)), "test": (int(n * 0.95), n)}
        for split, (lo, hi) in self.bounds.items():
            if hi - lo < p["length"] + 2:
                raise ValueError(f"the {split} split has {hi - lo} words, too few for windows of {p['length']} "
                                 f"(use a shorter data.length or more text)")


# ---------------------------------------------------------------- `graphspec tasks`: what each one is
# The metric a spec on each task is judged by (its train.target), and what it means.
METRICS = {
    "copy": "free_seq_acc: outputs entirely right, decoding from the model's own predictions",
    "reverse": "free_seq_acc: outputs entirely right, decoding from the model's own predictions",
    "sort": "free_seq_acc: outputs entirely right, decoding from the model's own predictions",
    "addition": "free_seq_acc: sums entirely right, decoding from the model's own predictions",
    "dates": "free_seq_acc: dates entirely right, decoding from the model's own predictions",
    "adding": "mse of the sum (predicting 1, the mean, scores about 0.167)",
    "copy_memory": "acc over every step, the blanks included (blanks alone score (gap + remember + 1) / "
                   "(gap + 2 remember + 1), 0.86 at the defaults)",
    "parity": "acc: the share of parities right",
    "bits": "acc: the share of parities right",
    "neighbours": "acc: the share of tags right",
    "charlm": "ppl: per-character perplexity on held-out text",
    "words": "neighbours: the share of a frequent word's 10 nearest neighbours found in its windows "
             "(random vectors score about 0.25)",
}


def _draws(t: Task) -> str:
    p = t.p
    if isinstance(t, Copy):
        return f"a string of {p['min_len']}..{p['max_len']} letters from '{t.symbols}' (the vocabulary: a-z)"
    if isinstance(t, Addition):
        return f"two integers of 1..{p['max_digits']} digits each, written 'a+b'; the target is their sum"
    if isinstance(t, Dates):
        return (f"a day from {p['first_year']}-01-01 to {p['last_year']}-12-31, written in one of "
                f"{len(DATE_FORMATS)} formats; the target is YYYY-MM-DD")
    if isinstance(t, Adding):
        return (f"{p['length']} steps of (a value uniform in [0, 1), a marker); two steps marked, one in each "
                f"half; the target is the sum of the two marked values")
    if isinstance(t, CopyMemory):
        return (f"{p['remember']} symbols drawn from {p['symbols']}, {p['gap']} blanks, a delimiter; the target is "
                f"blanks, then the {p['remember']} symbols again")
    if isinstance(t, Parity):
        return f"{p['min_len']}..{p['max_len']} bits; the target is their parity (one label per sequence)"
    if isinstance(t, Bits):
        return f"{p['n']} bits as one real vector; the target is their parity"
    if isinstance(t, Neighbours):
        return (f"{p['min_len']}..{p['max_len']} digits; each is tagged with its previous and next digit "
                f"('-' at an end)")
    if isinstance(t, CharLM):
        return (f"windows of {p['length']} characters of standard-library docstrings (characters seen fewer "
                f"than {p['min_count']} times read as <unk>); the target is the next character")
    if isinstance(t, Words):
        return (f"{p['mode']} examples: a word and its context within {p['window']} words (shrunk at random), "
                f"words seen fewer than {p['min_count']} times dropped, frequent ones subsampled ({p['sample']})")
    return ""


def _show(vocab, limit: int = 60) -> str:
    toks = vocab.itos[4:]
    text = "".join(toks) if all(len(x) == 1 for x in toks) else " ".join(toks)
    return f"{len(toks)} symbols: {text[:limit]!r}{'...' if len(text) > limit else ''}"


def _example(t: Task) -> str:
    """One training example (seed 0, step 0), as text."""
    b = t.batch("train", 1, 0, seed=0)
    if isinstance(t, Words):
        w = lambda i: t.vocab.itos[int(i)]  # noqa: E731
        ctx = np.ravel(b["context"])
        return f"{w(b['center'][0])} ~ {' '.join(w(i) for i in ctx if i >= 0)}"
    if isinstance(t, Adding):
        x = b["x"][:, 0]
        i, j = np.flatnonzero(x[:, 1])
        return f"marked x[{i}] = {x[i, 0]:.3f}, x[{j}] = {x[j, 0]:.3f} -> {b['y'][0, 0]:.3f}"
    if isinstance(t, Bits):
        return f"{''.join(str(int(v)) for v in b['x'][0])} -> {int(b['y'][0])}"
    src = getattr(t, "src_vocab", None) or t.vocab
    tgt = getattr(t, "tgt_vocab", None) or t.vocab
    n = int(b["x_len"][0]) if "x_len" in b else b["x"].shape[0]
    x = "".join(src.decode(b["x"][:n, 0], strip=False))
    if b["y"].ndim == 1:
        return f"{x!r} -> {int(b['y'][0])}"
    m = int(b["y_len"][0]) if "y_len" in b else (n if "x_len" in b else b["y"].shape[0])
    ys = tgt.decode(b["y"][:m, 0], strip=isinstance(t, Seq2Seq))      # an encoder-decoder's <eos> is not shown
    y = " ".join(ys) if any(len(s) > 1 for s in ys) else "".join(ys)
    if isinstance(t, CharLM):
        return f"{x[:40]!r}... -> {y[:40]!r}... (the same text, one character on)"
    return f"{x!r} -> {y!r}"


def describe(name: str) -> dict:
    """What `graphspec tasks` prints of a task, at its default parameters."""
    t = get_task(name)
    vocab = (f"source {_show(t.src_vocab)}; target {_show(t.tgt_vocab)}" if getattr(t, "src_vocab", None) is not None
             and t.src_vocab is not t.tgt_vocab else _show(t.vocab) if getattr(t, "vocab", None) is not None
             else "none: real values and labels")
    return {"task": name, "doc": (t.__doc__ or "").strip().splitlines()[0], "draws": _draws(t), "vocab": vocab,
            "params": ", ".join(f"{k}={v}" for k, v in t.params.items()) or "none",
            "metric": METRICS.get(name, ""), "example": _example(t)}
