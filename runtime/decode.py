"""Using a trained model: greedy and beam-search decoding, sampling text, nearest words.

Beam search runs the teacher-forced plan on each hypothesis prefix (the beam is the batch), so
it works for any decoder a spec can write, with no decoder-specific code.
"""
from __future__ import annotations

import numpy as np

from graphspec.errors import UserError

from .model import Model


def _logits_node(model: Model):
    g = model.graph
    for name in g.losses:
        n = g.nodes[name]
        if n.op == "cross_entropy":
            return n.args[0].node, n.args[1].node
    raise UserError("this model has no cross-entropy output to decode")


def _inputs(model: Model):
    """(source input, target input) nodes of an encoder-decoder."""
    g = model.graph
    src = tgt = None
    for n in g.nodes.values():
        if n.op != "input" or n.attrs.get("kind") != "tokens":
            continue
        if n.attrs.get("target"):
            tgt = n
        elif src is None:
            src = n
    return src, tgt


def embedding_vocab(model: Model, task):
    """The vocabulary whose ids index the model's embedding table (the source's, for a tagger
    whose targets have another), or None."""
    rows = next((model.param(n.args[0].node).shape[0] for n in model.graph.nodes.values()
                 if n.op in ("embed", "embed_mean")), None)
    for name in ("src_vocab", "vocab"):
        v = getattr(task, name, None)
        if v is not None and rows is not None and len(v) == rows:
            return v
    return None


def kinds(model: Model, task) -> list:
    """Which decoding verbs fit this model and task: generate (a language model: tokens in, the
    next token of the same vocabulary out, one axis), predict (an encoder-decoder: a source and a
    target on two axes), neighbors (an embedding table over a known vocabulary)."""
    g = model.graph
    ce = any(g.nodes[x].op == "cross_entropy" for x in g.losses)
    src, tgt = _inputs(model)
    tokens = [n for n in g.nodes.values() if n.op == "input" and n.attrs.get("kind") == "tokens"]
    vocab = getattr(task, "vocab", None)
    out = []
    if ce and src is not None and tgt is not None and src.axis and tgt.axis == src.axis \
            and len({n.axis for n in tokens}) == 1 and not src.attrs.get("width") and vocab is not None \
            and getattr(task, "src_vocab", vocab) is vocab:
        out.append("generate")
    if ce and src is not None and tgt is not None and src.axis and tgt.axis and src.axis != tgt.axis \
            and vocab is not None:
        out.append("predict")
    if embedding_vocab(model, task) is not None:
        out.append("neighbors")
    return out


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _step_logits(model: Model, node: str, t: int) -> np.ndarray:
    b = model.current.plan.buffers[node]
    return model.current.view(node)[b.pre + t].astype(np.float64)


def beam_search(model: Model, src_vocab, tgt_vocab, text: str, beam: int = 1, max_len: int = 40,
                tokens: str = "chars"):
    """[(decoded text, log probability)], best first. beam=1 is greedy decoding. tokens: the
    vocabularies' unit, chars or words."""
    from .data import detokenize, tokenize
    src, tgt = _inputs(model)
    if src is None or tgt is None or src.axis == tgt.axis:
        raise UserError("predict needs an encoder-decoder spec (a source input and a target input on two axes)")
    ids = src_vocab.encode(tokenize(text, tokens))
    if not ids:
        raise UserError("predict: the input text is empty")
    logits, _ = _logits_node(model)
    eos = 3
    S = len(ids)
    hyps = [([], 0.0)]
    done = []
    for t in range(max_len):
        k = len(hyps)
        x = np.tile(np.array(ids, np.int64)[:, None], (1, k))
        y = np.zeros((t + 1, k), np.int64)
        for j, (seq, _) in enumerate(hyps):
            y[:t, j] = seq
        batch = {src.attrs["field"]: x, f"{src.attrs['field']}_mask": np.ones((S, k)),
                 tgt.attrs["field"]: y, f"{tgt.attrs['field']}_mask": np.ones((t + 1, k))}
        model.forward(batch, mode="eval")
        lp = _log_softmax(_step_logits(model, logits, t))          # [k, V]
        cands = []
        for j, (seq, score) in enumerate(hyps):
            for w in np.argsort(-lp[j])[:beam]:
                cands.append((seq + [int(w)], score + float(lp[j, w])))
        hyps = next_beam(cands, beam, done, eos)
        if len(done) >= beam or not hyps:
            break
    done += hyps
    done.sort(key=lambda c: -c[1])
    return [(detokenize(tgt_vocab.decode(seq), tokens), score) for seq, score in done[:beam]]


def next_beam(cands: list, beam: int, done: list, eos: int = 3) -> list:
    """The best `beam` candidates (token ids, score, ...) that go on; those ending in eos that
    rank above the last one kept are finished and go to `done`."""
    cands.sort(key=lambda c: -c[1])
    hyps = []
    for c in cands:
        (done if c[0][-1] == eos else hyps).append(c)
        if len(hyps) == beam:
            break
    return hyps


def sample_text(model: Model, vocab, prompt: str, length: int, temperature: float, seed: int,
                tokens: str = "chars") -> str:
    """Sample tokens (characters or words) one at a time from softmax(o / temperature), reading
    back the last 64."""
    from .data import detokenize, tokenize
    logits, _ = _logits_node(model)
    src, _ = _inputs(model)
    rng = np.random.default_rng(seed)
    ids = vocab.encode(tokenize(prompt, tokens)) or [vocab.encode(["\n"])[0] if "\n" in getattr(vocab, "itos", []) else 4]
    out = list(ids)
    window = 64
    for _ in range(length):
        ctx = out[-window:]
        T = len(ctx)
        batch = {src.attrs["field"]: np.array(ctx, np.int64)[:, None],
                 f"{src.attrs['field']}_mask": np.ones((T, 1))}
        for n in model.graph.nodes.values():     # the target field exists in the batch, unused
            if n.op == "input" and n.attrs.get("target") and n.axis:
                batch[n.attrs["field"]] = np.zeros((T, 1), np.int64)
        model.forward(batch, mode="eval")
        z = _step_logits(model, logits, T - 1)[0] / max(temperature, 1e-6)
        p = np.exp(z - z.max())
        p /= p.sum()
        out.append(int(rng.choice(len(p), p=p)))
    more = detokenize(vocab.decode(out[len(ids):], strip=False), tokens)
    space = tokens == "words" and prompt and more and not prompt.endswith((" ", "\n")) and not more.startswith("\n")
    return prompt + (" " if space else "") + more


def embedding_matrix(model: Model) -> np.ndarray:
    g = model.graph
    for n in g.nodes.values():
        if n.op in ("embed", "embed_mean"):
            return model.param(n.args[0].node)
    raise UserError("this model has no embedding table (E[x] or embed_mean)")


def _unit_rows(E):
    E = E.astype(np.float64)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def _id(vocab, word):
    ids = vocab.encode([word])
    if not ids or ids[0] == 1:
        raise UserError(f"'{word}' is not in the vocabulary")
    return ids[0]


def neighbors(model: Model, vocab, word: str, k: int = 10):
    U = _unit_rows(embedding_matrix(model))
    w = _id(vocab, word)
    sims = U @ U[w]
    order = [i for i in np.argsort(-sims) if i != w and i > 3][:k]
    return [(vocab.decode([i], strip=False)[0] if vocab.decode([i], strip=False) else str(i), float(sims[i]))
            for i in order]


def analogy(model: Model, vocab, a: str, b: str, c: str, k: int = 10):
    """Words closest to b - a + c (a is to b as c is to ?)."""
    U = _unit_rows(embedding_matrix(model))
    ia, ib, ic = (_id(vocab, x) for x in (a, b, c))
    q = U[ib] - U[ia] + U[ic]
    sims = U @ (q / np.linalg.norm(q))
    order = [i for i in np.argsort(-sims) if i not in (ia, ib, ic) and i > 3][:k]
    return [(vocab.decode([i], strip=False)[0], float(sims[i])) for i in order]


# ---------------------------------------------------------------- many inputs, one output
def read_inputs(path: str) -> list:
    """[(line number, text)] of the non-empty lines of PATH (or of stdin for '-'), bounded as
    data files are (32 MiB, UTF-8, a regular file)."""
    import sys
    from graphspec.limits import MAX_DATA_BYTES
    from .data import DataError, read_text
    if path == "-":
        raw = sys.stdin.buffer.read(MAX_DATA_BYTES + 1)
        if len(raw) > MAX_DATA_BYTES:
            raise DataError(f"--input -: stdin holds more than {MAX_DATA_BYTES} bytes; split it")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise DataError(f"--input -:{line}: not UTF-8 "
                            f"(byte 0x{raw[e.start]:02x} at offset {e.start})") from None
        name = "stdin"
    else:
        text, name = read_text(path), path
    rows = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise DataError(f"{name}: no input lines")
    return rows


class Output:
    """Lines to stdout as they come, or to -o FILE written whole at the end (atomically: a
    failed or interrupted run leaves no half file)."""

    def __init__(self, path=None):
        self.path, self.lines = path, []

    def line(self, text: str):
        if self.path is None:
            print(text, flush=True)
        else:
            self.lines.append(text)

    def close(self):
        if self.path is not None:
            from .rundir import write_atomic
            data = "".join(x + "\n" for x in self.lines).encode("utf-8")
            write_atomic(self.path, lambda f: f.write(data))
