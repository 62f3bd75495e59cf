"""User data files as tasks: TSV pairs for encoder-decoders, plain text for language models
(characters) and word2vec (words). Pairs are split train/valid/test 90/5/5 after one fixed
shuffle (runtime/data.py split_three), text 90/5/5 in order (runtime/tasks.py CharLM); the
vocabularies come from the training split (docs/data.md)."""
from __future__ import annotations

from .data import MAX_PAIR_TOKENS, DataError, Vocab, load_pairs, pad_batch, split_three
from .tasks import TASKS, CharLM, Task, WordLM, Words, rng_for


class Pairs(Task):
    """source<TAB>target pairs from a file"""
    name = "pairs"

    def __init__(self, path: str, max_len=None, min_count: int = 1, tokens: str = "chars", max_vocab: int = 0):
        super().__init__()
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                    or not 1 <= max_len <= MAX_PAIR_TOKENS):
            raise DataError(f"data.max_len must be an integer from 1 to {MAX_PAIR_TOKENS}, got {max_len!r}")
        self.tokens = tokens
        pairs = load_pairs(path, max_len=max_len, tokens=tokens)
        try:
            split = split_three(pairs, "pair(s)")
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
        most = max_vocab + 4 if max_vocab else None          # the 4 reserved tokens on top
        self.src_vocab = Vocab.build([s for s, _ in split["train"]], min_count=min_count, max_size=most)
        self.tgt_vocab = Vocab.build([t for _, t in split["train"]], min_count=min_count, max_size=most)
        self.vocab = self.tgt_vocab
        # length bucketing: examples sorted by length, a batch drawn from one window of similar
        # lengths, so little of a batch is padding
        by_len = lambda p: (len(p[0]), len(p[1]))  # noqa: E731
        self.splits = {k: sorted(v, key=by_len) for k, v in split.items()}

    def batch(self, split, B, step, seed=0):
        rng = rng_for(seed, split, step)
        data = self.splits[split]
        window = min(len(data), 4 * B)
        start = int(rng.integers(0, len(data) - window + 1))
        pick = [data[start + i] for i in rng.integers(0, window, B)]
        x, xm, xl = pad_batch([self.src_vocab.encode(s) for s, _ in pick])
        y, ym, yl = pad_batch([self.tgt_vocab.encode(t, add_eos=True) for _, t in pick])
        return {"x": x, "x_mask": xm, "x_len": xl, "y": y, "y_mask": ym, "y_len": yl}

    def steps_per_epoch(self, B):
        return max(1, len(self.splits["train"]) // B)


def model_kind(g) -> str:
    """Which data file a model can train on, from its inputs: 'pairs' (an encoder-decoder: token
    inputs on two axes), 'text' (a language model: token input and target on one axis), 'words'
    (word vectors: token inputs, no axis), or '' (real values or labels: built-in tasks only)."""
    ins = [n for n in g.nodes.values() if n.op == "input" and n.attrs.get("kind") in ("tokens", "real", "label")]
    axes = {n.axis for n in ins if n.axis}
    if any(n.attrs["kind"] != "tokens" for n in ins):
        return ""
    if len(axes) == 2:
        return "pairs"
    if len(axes) == 1 and all(n.axis for n in ins) and any(n.attrs["target"] for n in ins):
        return "text"
    return "words" if not axes else ""


# what each kind of model is, and the data file it takes
KINDS = {"pairs": ("an encoder-decoder (token inputs on two axes)", "a TSV of source<TAB>target pairs"),
         "text": ("a language model (tokens in and out on one axis)", "plain text"),
         "words": ("a word-vector model (tokens, no time axis)", "plain text"),
         "": ("a model of real values or labels", "a built-in task (--task NAME)")}


def _check_kind(path: str, g, data: str):
    kind = model_kind(g)
    fits = {"pairs": ("pairs",), "text": ("text", "words")}[data]
    if kind in fits:
        return
    spec = getattr(getattr(g, "source", None), "file", g.name)
    what = "holds source<TAB>target pairs" if data == "pairs" else "is plain text (no tabs in its first lines)"
    model, needs = KINDS[kind]
    raise DataError(f"--data {path} {what}, but {spec} is {model}: train it on {needs}")


def user_task(path: str, g, cfg: dict, options: dict = None) -> Task:
    """options: the vocabulary flags of train (tokens, min_count, max_vocab), given ones only."""
    options = options or {}
    from .data import read_text
    text = read_text(path)
    if any("\t" in line for line in text[:1 << 16].splitlines()[:5]):
        _check_kind(path, g, "pairs")
        return Pairs(path, max_len=cfg.get("max_len"), **options)
    _check_kind(path, g, "text")
    text = "\n".join(text.splitlines()) + "\n"
    has_axis = any(n.op == "input" and n.axis for n in g.nodes.values())
    if has_axis and options.get("tokens") == "words":
        return WordLM(text=text, length=cfg.get("length", 32),
                      **{k: v for k, v in options.items() if k != "tokens"})
    if has_axis:
        if "max_vocab" in options:
            raise DataError("--max-vocab: a character model keeps every character seen --min-count times; "
                            "use --tokens words for a word vocabulary")
        task = CharLM(text=text, length=cfg.get("length", 64), min_count=options.get("min_count", 1))
        if len(task.ids) < 20 * task.p["length"]:
            raise DataError(f"{path}: {len(task.ids)} characters is too little text for windows of "
                            f"{task.p['length']}; give at least {20 * task.p['length']}")
        return task
    if options.get("tokens") == "chars" or "max_vocab" in options:
        raise DataError("--tokens chars / --max-vocab: a word-vector model reads the words of the text, "
                        "every word seen min_count times (--min-count N)")
    params = {k: v for k, v in cfg.items() if k in Words.params}
    params.update({k: v for k, v in options.items() if k == "min_count"})
    task = Words(text=text, **params)
    if len(task.ids) < 100:
        raise DataError(f"{path}: only {len(task.ids)} words occur at least min_count times; "
                        f"use more text or a smaller min_count")
    return task


def check_data(g):
    """The spec's data section against the task table, at file:line:col (graphspec validate):
    an unknown task or parameter would otherwise pass validate and fail only at train."""
    from graphspec.errors import Problems, did_you_mean
    doc, data = g.source, g.data or {}
    probs = Problems()
    name = data.get("task")
    if name is None:
        return
    cls = TASKS.get(name) if isinstance(name, str) else None
    if cls is None:
        probs.add(doc.where(("data", "task")), f"unknown task {name!r}{did_you_mean(str(name), TASKS)} "
                                               f"(tasks: {', '.join(sorted(TASKS))})")
        probs.raise_if_any()
    probe = cls.__new__(cls)        # the class's parameter checks, without building its data
    for k, v in data.items():
        if k == "task":
            continue
        try:
            if k not in cls.params:
                raise ValueError(f"task {name} has no parameter '{k}'{did_you_mean(k, cls.params)} "
                                 f"(parameters: {', '.join(sorted(cls.params)) or 'none'})")
            probe._check_param(k, v)
        except ValueError as e:
            probs.add(doc.key_loc(("data", k)) if k not in cls.params else doc.where(("data", k)), str(e))
    probs.raise_if_any()


def check_seen(task, text: str, what: str, source: bool = True):
    """Characters a model never trained on would be read as <unk> (or, inside its vocabulary, as
    a symbol its task never drew: the copy tasks' vocabulary is a-z, their strings a-l) and
    decoded without a word: name them instead."""
    from .data import RESERVED
    if getattr(task, "tokens", "chars") == "words":
        return      # a word vocabulary (--min-count, --max-vocab) read rare words as <unk> in training too
    vocab = (getattr(task, "src_vocab", None) if source else None) or task.vocab
    drawn = getattr(task, "symbols", None) if source else None
    tokens = vocab.itos[len(RESERVED):]
    words = any(len(t) > 1 for t in tokens)             # a word vocabulary: the text's words are its tokens
    known = set(drawn if isinstance(drawn, str) else tokens)
    unseen = list(dict.fromkeys(t for t in (text.split() if words else text) if t not in known))
    if unseen:
        shown = "".join(sorted(known)) if not words else " ".join(tokens[:20])
        shown = shown if len(shown) <= 80 else shown[:80] + "..."
        raise DataError(f"{what}: the model never saw {', '.join(map(repr, unseen[:20]))} in training "
                        f"(task {getattr(task, 'name', '') or 'data'} {'drew from' if isinstance(drawn, str) else 'knows'}: "
                        f"{shown!r})")
