"""word2vec against gensim on the lee_background.cor corpus that ships with gensim: speed (corpus
words per second, per worker) at equal hyperparameters, and whether graphspec learns gensim's
vectors.

Same settings on both sides: 64 dimensions, window 5 (randomly shrunk), min_count 5, frequent-word
subsampling 1e-3, 5 noise words or a Huffman tree, learning rate 0.025 decaying linearly to
0.025e-4, EPOCHS passes (20). graphspec trains as the word2vec specs do (`per_example: word2vec`,
word2vec.c's update rule, examples in word2vec.c's order, 1024 to a batch) and, beside it, with
the exact gradient (`per_example: true`); gensim runs its Cython loop with 1 worker (seeds 1 and
2) and with 2. graphspec runs on one thread, so "per worker" compares it with gensim's 1 worker.

Quality: neighbour agreement. For the words ranked 50-250 by frequency, the share of their 10
nearest neighbours (cosine) that two models have in common. graphspec's figure is the mean of
its agreement with gensim seed 1 and seed 2; it is reported divided by the agreement of the two
gensim seeds with each other (1.0: as close to gensim as gensim is to itself).

    python bench/word2vec.py [--epochs 20] [--smoke] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))

VARIANTS = [("skipgram", "hs"), ("skipgram", "ns"), ("cbow", "hs"), ("cbow", "ns")]
DIM, WINDOW, MIN_COUNT, SAMPLE, ALPHA, EPOCHS = 64, 5, 5, 1e-3, 0.025, 20
RANKS, TOP = (50, 250), 10           # the words compared, and how many neighbours of each


def corpus():
    from gensim.test.utils import datapath
    with open(datapath("lee_background.cor")) as f:
        return f.read()


def sentences(text) -> list:
    return [re.findall(r"[a-z]+", line.lower()) for line in text.splitlines() if line.strip()]


def neighbours(vectors: dict, words: list, common: list) -> dict:
    """Each word's TOP nearest words (cosine) among `common`."""
    M = np.array([vectors[w] for w in common], np.float64)
    M /= np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
    at = {w: i for i, w in enumerate(common)}
    out = {}
    for w in words:
        sims = M @ M[at[w]]
        sims[at[w]] = -np.inf
        out[w] = {common[i] for i in np.argpartition(-sims, TOP)[:TOP]}
    return out


def agreement(a: dict, b: dict, ranked: list) -> float:
    """The share of top-TOP neighbours that vectors a and b have in common, over the words ranked
    RANKS[0]..RANKS[1] by frequency (ranked: the vocabulary, most frequent first)."""
    common = [w for w in ranked if w in a and w in b]
    words = common[RANKS[0]:RANKS[1]]
    na, nb = neighbours(a, words, common), neighbours(b, words, common)
    return float(np.mean([len(na[w] & nb[w]) / TOP for w in words]))


def spearman(model_vectors: dict) -> float:
    """Spearman correlation with wordsim353 over the pairs both words of which are known."""
    from gensim.test.utils import datapath
    from scipy.stats import spearmanr
    gold, pred = [], []
    with open(datapath("wordsim353.tsv")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            a, b, s = line.strip().split("\t")
            a, b = a.lower(), b.lower()
            if a in model_vectors and b in model_vectors:
                va, vb = model_vectors[a], model_vectors[b]
                gold.append(float(s))
                pred.append(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb) + 1e-12)))
    return float(spearmanr(gold, pred).correlation) if len(gold) > 5 else float("nan"), len(gold)


def run_graphspec(text, mode, head, epochs, rule, B=1024):
    """rule: "word2vec" (word2vec.c's updates) or "exact" (the gradient of each example's loss)."""
    from runtime.model import Model
    from runtime.online import Online
    from runtime.optim import Optimizer
    from runtime.tasks import Words
    from runtime.train import make_tables
    import graphspec
    task = Words(text=text, mode=mode, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE)
    task.bounds["train"] = (0, len(task.ids))         # the whole corpus, as gensim trains on it
    spec = os.path.join(ROOT, "specs", f"w2v_{mode}_{head}.yaml")
    bind = {"V": len(task.vocab), "D": DIM}
    model = Model(spec, bind=bind, tables=make_tables(graphspec.load(spec, bind=bind), task), seed=1)
    raw_words = sum(len(s) for s in sentences(text))    # the corpus, as gensim counts it
    steps = -(-task.pass_start("train", 0, epochs) // B)
    online = Online(model, Optimizer({"optimizer": "sgd"}, model.nlearn), rule)
    online.step(task.batch("train", B, 0, 0), 0.0, 0)     # load compiled code outside the timing (rate 0)
    t0 = time.perf_counter()
    for step in range(steps):
        online.step(task.batch("train", B, step, 0), ALPHA * max(1e-4, 1 - step / steps), step)
    sec = time.perf_counter() - t0
    E = model.param("E").astype(np.float64)
    vectors = {w: E[i] for i, w in enumerate(task.vocab.itos) if i >= 4}
    return {"words_per_s": epochs * raw_words / sec, "seconds": sec, "steps": steps,
            "wordsim353": spearman(vectors)[0], "neighbours": task.quality(E)["neighbours"]}, vectors


def run_gensim(text, mode, head, epochs, workers, seed=1):
    from gensim.models import Word2Vec
    from runtime.tasks import Words
    sents = sentences(text)
    raw_words = sum(len(s) for s in sents)
    m = Word2Vec(vector_size=DIM, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE, sg=int(mode == "skipgram"),
                 hs=int(head == "hs"), negative=5 if head == "ns" else 0, workers=workers, alpha=ALPHA, seed=seed)
    m.build_vocab(sents)
    t0 = time.perf_counter()
    m.train(sents, total_examples=len(sents), epochs=epochs)
    sec = time.perf_counter() - t0
    vectors = {w: m.wv[w].astype(np.float64) for w in m.wv.index_to_key}
    # the same neighbour-overlap measure as graphspec's, on gensim's vectors
    task = Words(text=text, mode=mode, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE)
    E = np.zeros((len(task.vocab), DIM))
    for i, w in enumerate(task.vocab.itos):
        if w in m.wv:
            E[i] = m.wv[w]
    return {"words_per_s": epochs * raw_words / sec, "seconds": sec, "wordsim353": spearman(vectors)[0],
            "neighbours": task.quality(E)["neighbours"]}, (vectors, list(m.wv.index_to_key))


SYSTEMS = ["graphspec word2vec", "graphspec exact", "gensim seed 1", "gensim seed 2", "gensim 2 workers"]


def _run(name, text, mode, head, epochs):
    if name.startswith("graphspec"):
        return run_graphspec(text, mode, head, epochs, name.split()[-1])
    if name == "gensim 2 workers":
        return run_gensim(text, mode, head, epochs, 2)
    return run_gensim(text, mode, head, epochs, 1, seed=int(name[-1]))


def measure(epochs=EPOCHS, variants=VARIANTS, rounds=3):
    """Each variant: the SYSTEMS interleaved over `rounds` (order reversed every other round);
    words/s are medians (gensim per worker: over both seeds' runs), quality is the first round's
    (every side is seeded)."""
    import statistics
    text = corpus()
    rows = []
    for mode, head in variants:
        runs, vecs = {name: [] for name in SYSTEMS}, {}
        for r in range(rounds):
            for name in (SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]):
                res, v = _run(name, text, mode, head, epochs)
                runs[name].append(res)
                vecs.setdefault(name, v)
        ranked = vecs["gensim seed 1"][1]
        g1, g2 = vecs["gensim seed 1"][0], vecs["gensim seed 2"][0]
        row = {"variant": f"{mode}+{head}", "rounds": rounds, "epochs": epochs,
               "agreement gensim seed vs seed": agreement(g1, g2, ranked)}
        for name, rs in runs.items():
            row[name] = dict(rs[0], words_per_s=statistics.median(x["words_per_s"] for x in rs),
                             words_per_s_rounds=[x["words_per_s"] for x in rs])
        row["gensim 1 worker words_per_s"] = statistics.median(
            x["words_per_s"] for name in ("gensim seed 1", "gensim seed 2") for x in runs[name])
        for rule in ("word2vec", "exact"):
            v = vecs[f"graphspec {rule}"]
            a = (agreement(v, g1, ranked) + agreement(v, g2, ranked)) / 2
            row[f"agreement {rule}"] = a
            row[f"agreement {rule} / seed vs seed"] = a / row["agreement gensim seed vs seed"]
        row["ratio word2vec vs exact"] = statistics.median(
            a["words_per_s"] / b["words_per_s"] for a, b in zip(runs["graphspec word2vec"], runs["graphspec exact"]))
        row["ratio vs gensim per worker"] = row["graphspec word2vec"]["words_per_s"] / row["gensim 1 worker words_per_s"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    lines = ["| variant | graphspec words/s: word2vec rule / exact gradient | gensim 1 worker / 2 workers | "
             "ratio per worker (word2vec rule / gensim) | neighbour agreement with gensim / gensim seed-vs-seed: "
             "word2vec rule / exact gradient | gensim seed-vs-seed |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['graphspec word2vec']['words_per_s']:,.0f} / "
                     f"{r['graphspec exact']['words_per_s']:,.0f} | {r['gensim 1 worker words_per_s']:,.0f} / "
                     f"{r['gensim 2 workers']['words_per_s']:,.0f} | {r['ratio vs gensim per worker']:.2f} | "
                     f"**{r['agreement word2vec / seed vs seed']:.2f}** / {r['agreement exact / seed vs seed']:.2f} | "
                     f"{r['agreement gensim seed vs seed']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="one epoch, one round: checks the script runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = measure(1, rounds=1) if a.smoke else measure(a.epochs, rounds=a.rounds)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
