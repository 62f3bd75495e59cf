"""User data files as tasks: TSV pairs for encoder-decoders, plain text for language models
(characters) and word2vec (words). Pairs are split train/valid/test 90/5/5 after one fixed
shuffle (runtime/data.py split_three), text 90/5/5 in order (runtime/tasks.py CharLM); the
vocabularies come from the training split (docs/data.md)."""
from __future__ import annotations

from .data import MAX_PAIR_TOKENS, DataError, Vocab, load_pairs, pad_batch, split_three
from .tasks import CharLM, Task, WordLM, Words, rng_for


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


def user_task(path: str, g, cfg: dict, options: dict = None) -> Task:
    """options: the vocabulary flags of train (tokens, min_count, max_vocab), given ones only."""
    options = options or {}
    from .data import read_text
    text = read_text(path)
    if any("\t" in line for line in text[:1 << 16].splitlines()[:5]):
        return Pairs(path, max_len=cfg.get("max_len"), **options)
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

