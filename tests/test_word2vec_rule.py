"""per_example: word2vec against word2vec.c.

`word2vec_c` below is TrainModelThread's loop from word2vec.c (one thread), transcribed with
plain Python loops over words, windows and targets; only the arithmetic on one vector is numpy.
It reads its random numbers from the same draws the words task and runtime/online.py take (the
subsampling and window draws of each pass, the noise words of each step) instead of word2vec.c's
linear congruential generator, and its learning rate from the same per-step schedule (word2vec.c
recomputes alpha every 10,000 words; here every batch of examples). Everything else -- the
keep probability, the reduced window, the sentence walk, the exp table and its index, the skips
and limits beyond MAX_EXP, the CBOW mean and its unscaled error, skip-gram's direction -- is
word2vec.c's own.
"""
import os

import numpy as np
import pytest

import graphspec
from runtime.model import Model
from runtime.online import Online, draw_noise
from runtime.optim import Optimizer, learning_rate
from runtime.tasks import Words
from runtime.train import make_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_EXP, EXP_TABLE_SIZE = 6, 1000


def word2vec_c(task, syn0, syn1, tables, noise, alpha_of, examples, cbow, hs, dtype):
    """word2vec.c's training of `examples` examples (a CBOW centre, or a skip-gram pair) over the
    task's train split; returns the number of updates that took the |f| >= MAX_EXP branch."""
    real = np.dtype(dtype).type
    window, sample = task.p["window"], task.p["sample"]
    cn = task.vocab.counts
    train_words = cn.sum()
    expTable = np.empty(EXP_TABLE_SIZE, dtype)
    for i in range(EXP_TABLE_SIZE):
        e = np.exp((i / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP)
        expTable[i] = e / (e + 1)
    tree = tables.get("tree")
    L = (tree.shape[1] - 1) // 2 if hs else 0
    lo, hi = task.bounds["train"]
    text = task.ids[lo:hi]
    noise = iter(noise)
    done = clipped = 0
    for n in range(10 ** 6):                    # passes ("iter"), until `examples` are done
        ran_draws, b_draws = task.draws("train", 0, n)
        sen = []
        for word, r in zip(text, ran_draws):
            if sample > 0:
                ran = (np.sqrt(cn[word] / (sample * train_words)) + 1) * (sample * train_words) / cn[word]
                if ran < r:
                    continue
            sen.append(int(word))
        for sentence_position, word in enumerate(sen):
            b = int(b_draws[sentence_position])
            neu1 = np.zeros(syn0.shape[1], dtype)
            neu1e = np.zeros(syn0.shape[1], dtype)

            def train_on(l1_vec, alpha):
                """HS / NS for the target `word` from the hidden vector l1_vec; adds to neu1e."""
                nonlocal clipped
                if hs:
                    for d in range(tree[word, 0]):
                        l2, code = tree[word, 1 + d], tree[word, 1 + L + d]
                        f = l1_vec @ syn1[l2]
                        if f <= -MAX_EXP or f >= MAX_EXP:
                            clipped += 1
                            continue
                        f = expTable[int((f + MAX_EXP) * (EXP_TABLE_SIZE // MAX_EXP // 2))]
                        g = (1 - code - f) * alpha
                        neu1e[:] += real(g) * syn1[l2]
                        syn1[l2] += real(g) * l1_vec
                else:
                    for d in range(K + 1):
                        if d == 0:
                            target, label = word, 1
                        else:
                            target = next(noise)
                            if target == word:
                                continue
                            label = 0
                        f = l1_vec @ syn1[target]
                        if f > MAX_EXP:
                            g, clipped = (label - 1) * alpha, clipped + 1
                        elif f < -MAX_EXP:
                            g, clipped = (label - 0) * alpha, clipped + 1
                        else:
                            g = (label - expTable[int((f + MAX_EXP) * (EXP_TABLE_SIZE // MAX_EXP // 2))]) * alpha
                        neu1e[:] += real(g) * syn1[target]
                        syn1[target] += real(g) * l1_vec

            if cbow:
                if done == examples:
                    return clipped
                alpha = real(alpha_of(done))
                cw = 0
                for a in range(b, window * 2 + 1 - b):
                    if a != window:
                        c = sentence_position - window + a
                        if c < 0 or c >= len(sen):
                            continue
                        neu1 += syn0[sen[c]]
                        cw += 1
                if cw:
                    neu1 /= real(cw)
                    train_on(neu1, alpha)
                    for a in range(b, window * 2 + 1 - b):      # hidden -> in: the whole neu1e
                        if a != window:
                            c = sentence_position - window + a
                            if c < 0 or c >= len(sen):
                                continue
                            syn0[sen[c]] += neu1e
                done += 1
            else:
                for a in range(b, window * 2 + 1 - b):
                    if a != window:
                        c = sentence_position - window + a
                        if c < 0 or c >= len(sen):
                            continue
                        if done == examples:
                            return clipped
                        alpha = real(alpha_of(done))
                        l1 = sen[c]
                        neu1e[:] = 0
                        train_on(syn0[l1].copy(), alpha)    # syn0[l1] is read, not written, in the loop
                        syn0[l1] += neu1e
                        done += 1
    raise AssertionError("unreachable")


K, B, D = 5, 32, 8       # K: the specs' k


def _corpus(rng, n=400, V=14):
    """Zipf-like words over a small vocabulary: the frequent ones are subsampled."""
    p = 1.0 / np.arange(1, V + 1)
    words = [f"w{chr(97 + i)}" for i in range(V)]
    return " ".join(words[i] for i in rng.choice(V, n, p=p / p.sum()))


# float32 at a lower rate: a dot summed in another order (SIMD lanes vs numpy) can land on the
# other side of an exp-table cell, and at rate 0.6 one such flip grows past 1e-4
@pytest.mark.parametrize("dtype, tol, lr", [(np.float64, 1e-6, 0.6), (np.float32, 1e-4, 0.1)])
@pytest.mark.parametrize("variant", ["cbow_hs", "cbow_ns", "skipgram_hs", "skipgram_ns"])
def test_word2vec_rule_equals_word2vec_c(variant, dtype, tol, lr):
    mode, head = variant.split("_")
    task = Words(text=_corpus(np.random.default_rng(3)), mode=mode, window=3, min_count=1, sample=0.02)
    path = os.path.join(ROOT, "specs", f"w2v_{variant}.yaml")
    bind = {"V": len(task.vocab), "D": D}
    spec = graphspec.load(path, bind=bind)
    assert spec.train["per_example"] == "word2vec"          # the shipped specs use the rule
    tables = make_tables(spec, task)
    model = Model(path, bind=bind, tables=tables, dtype=dtype, seed=5)
    params = model.get_params()
    syn0, syn1 = params["E"].copy(), params["loss.W"].copy()
    syn1[:] = np.random.default_rng(1).uniform(-1.5, 1.5, syn1.shape)     # not word2vec's zeros: every
    model.set_params(dict(params, **{"loss.W": syn1.copy()}))             # branch is reached sooner
    steps = 40 if mode == "cbow" else 120                   # about three passes over the split
    cfg = {"lr": lr, "schedule": "linear"}
    online = Online(model, Optimizer({"optimizer": "sgd"}, model.nlearn), rule="word2vec")
    noise = []
    for step in range(steps):
        online.step(task.batch("train", B, step, 0), learning_rate(cfg, step, steps), step)
        if head == "ns":
            noise += draw_noise(tables["unigram"], B, K, step).reshape(-1).tolist()
    assert len(task._starts[("train", 0)]) >= 4             # the stream crossed passes
    clipped = word2vec_c(task, syn0, syn1, tables, noise, lambda i: learning_rate(cfg, i // B, steps),
                         steps * B, mode == "cbow", head == "hs", dtype)
    got = model.get_params()
    np.testing.assert_allclose(got["E"], syn0, rtol=0, atol=tol)
    np.testing.assert_allclose(got["loss.W"], syn1, rtol=0, atol=tol)
    assert np.abs(syn0 - params["E"]).max() > 0.1           # the vectors moved
    assert clipped > 0 or dtype == np.float32               # the MAX_EXP branches were taken
