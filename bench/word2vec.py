"""word2vec against gensim on the lee_background.cor corpus that ships with gensim: speed (corpus
words per second) at equal hyperparameters, and quality side by side (Spearman correlation on
wordsim353, also shipped with gensim, and neighbour overlap).

Same settings on both sides: 64 dimensions, window 5 (randomly shrunk), min_count 5, frequent-word
subsampling 1e-3, 5 noise words or a Huffman tree, learning rate 0.025 per example decaying
linearly, EPOCHS passes. graphspec trains as the word2vec specs do (`per_example: true`: an SGD
step after every example, examples drawn 1024 to a batch); gensim runs its Cython loop with 1
and with 2 worker threads. graphspec runs on one thread, so "per worker" compares it with
gensim's 1-worker figure.

    python bench/word2vec.py [--epochs 5] [--smoke] [--json out.json]
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
DIM, WINDOW, MIN_COUNT, SAMPLE, ALPHA = 64, 5, 5, 1e-3, 0.025


def corpus():
    from gensim.test.utils import datapath
    with open(datapath("lee_background.cor")) as f:
        return f.read()


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


def run_graphspec(text, mode, head, epochs, B=1024):
    from runtime.model import Model
    from runtime.online import Online
    from runtime.optim import Optimizer
    from runtime.tasks import Words
    from runtime.train import make_tables
    import graphspec
    task = Words(text=text, mode=mode, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE)
    spec = os.path.join(ROOT, "specs", f"w2v_{mode}_{head}.yaml")
    bind = {"V": len(task.vocab), "D": DIM}
    model = Model(spec, bind=bind, tables=make_tables(graphspec.load(spec, bind=bind), task), seed=1)
    raw_words = len(re.findall(r"[a-z]+", text.lower()))    # the corpus, as gensim's count has it
    effective = float(task.keep[task.ids].sum())
    per_word = 6.0 if mode == "skipgram" else 1.0     # E[2 x shrunk window] context pairs per word
    steps = int(epochs * effective * per_word / B)
    online = Online(model, Optimizer({"optimizer": "sgd"}, model.nlearn))
    online.step(task.batch("train", B, 0, 0), 0.0, 0)     # load compiled code outside the timing
    t0 = time.perf_counter()
    for step in range(steps):
        online.step(task.batch("train", B, step, 0), ALPHA * max(1e-4, 1 - step / steps), step)
    sec = time.perf_counter() - t0
    E = model.param("E").astype(np.float64)
    vectors = {w: E[i] for i, w in enumerate(task.vocab.itos) if i >= 4}
    q = task.quality(E)
    return {"words_per_s": epochs * raw_words / sec, "seconds": sec, "steps": steps,
            "wordsim353": spearman(vectors)[0], "neighbours": q["neighbours"]}


def run_gensim(text, mode, head, epochs, workers):
    from gensim.models import Word2Vec
    from runtime.tasks import Words
    sentences = [re.findall(r"[a-z]+", line.lower()) for line in text.splitlines() if line.strip()]
    raw_words = sum(len(s) for s in sentences)
    m = Word2Vec(vector_size=DIM, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE, sg=int(mode == "skipgram"),
                 hs=int(head == "hs"), negative=5 if head == "ns" else 0, workers=workers, alpha=ALPHA, seed=1)
    m.build_vocab(sentences)
    t0 = time.perf_counter()
    m.train(sentences, total_examples=len(sentences), epochs=epochs)
    sec = time.perf_counter() - t0
    vectors = {w: m.wv[w].astype(np.float64) for w in m.wv.index_to_key}
    # the same neighbour-overlap measure as graphspec's, on gensim's vectors
    task = Words(text=text, mode=mode, window=WINDOW, min_count=MIN_COUNT, sample=SAMPLE)
    E = np.zeros((len(task.vocab), DIM))
    for i, w in enumerate(task.vocab.itos):
        if w in m.wv:
            E[i] = m.wv[w]
    q = task.quality(E)
    return {"words_per_s": epochs * raw_words / sec, "seconds": sec, "wordsim353": spearman(vectors)[0],
            "neighbours": q["neighbours"]}


def measure(epochs=5, variants=VARIANTS, rounds=3):
    """Each variant: graphspec, gensim with 1 and with 2 workers, interleaved over `rounds`
    (order reversed every other round); words/s are medians, quality is the first round's (both
    sides are seeded)."""
    import statistics
    text = corpus()
    rows = []
    for mode, head in variants:
        runs = {"graphspec": [], "gensim w1": [], "gensim w2": []}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                runs[name].append(run_graphspec(text, mode, head, epochs) if name == "graphspec"
                                  else run_gensim(text, mode, head, epochs, int(name[-1])))
        row = {"variant": f"{mode}+{head}", "rounds": rounds}
        for name, rs in runs.items():
            row[name] = dict(rs[0], words_per_s=statistics.median(x["words_per_s"] for x in rs),
                             words_per_s_rounds=[x["words_per_s"] for x in rs])
        g = row["graphspec"]["words_per_s"]
        row["ratio vs gensim per worker"] = g / row["gensim w1"]["words_per_s"]
        row["ratio vs gensim 2 workers"] = g / row["gensim w2"]["words_per_s"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    lines = ["| variant | graphspec words/s | gensim 1 worker | gensim 2 workers | ratio (per worker) | "
             "wordsim353 graphspec / gensim | neighbours graphspec / gensim |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        g, g1, g2 = r["graphspec"], r["gensim w1"], r["gensim w2"]
        lines.append(f"| {r['variant']} | {g['words_per_s']:,.0f} | {g1['words_per_s']:,.0f} | {g2['words_per_s']:,.0f} | "
                     f"{r['ratio vs gensim per worker']:.2f} | {g['wordsim353']:.3f} / {g1['wordsim353']:.3f} | "
                     f"{g['neighbours']:.3f} / {g1['neighbours']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one epoch, one round: checks the script runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = measure(1, rounds=1) if a.smoke else measure(a.epochs)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
