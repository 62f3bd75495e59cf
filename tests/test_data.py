"""The data layer and the built-in tasks: determinism, shapes and masks, and that each task's
targets are what its definition says."""
import datetime
import os

import numpy as np
import pytest

from runtime.data import BOS, EOS, PAD, Vocab, huffman_tree, pad_batch, unigram_table
from runtime.tasks import TASKS, get_task


def test_vocab_reserves_pad_unk_bos_eos_and_round_trips():
    v = Vocab.build([list("abcab"), list("ca")], min_count=2)
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and BOS == 2 and EOS == 3 and PAD == 0
    assert v.itos[4:] == ["a", "b", "c"]                   # by count, then by token
    ids = v.encode(list("abz"), add_bos=True, add_eos=True)
    assert ids == [2, 4, 5, 1, 3]
    assert v.decode(ids) == ["a", "b", "<unk>"]
    assert Vocab.from_json(v.to_json()).itos == v.itos


def test_pad_batch_is_time_major_with_masks():
    ids, mask, lens = pad_batch([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 8], [6, 0], [7, 0]]
    assert mask.tolist() == [[1, 1], [1, 0], [1, 0]] and lens.tolist() == [3, 1]


def test_huffman_tree_is_a_prefix_code_and_a_distribution():
    counts = np.array([50, 1, 1, 1, 30, 20, 10, 5, 2, 2])
    tree = huffman_tree(counts)
    V, L = len(counts), (tree.shape[1] - 1) // 2
    codes = []
    for w in range(V):
        n = tree[w, 0]
        nodes, bits = tree[w, 1:1 + n], tree[w, 1 + L:1 + L + n]
        assert (0 <= nodes).all() and (nodes < V - 1).all()
        codes.append("".join(map(str, bits)))
    assert all(not b.startswith(a) for a in codes for b in codes if a != b)    # prefix-free
    assert tree[0, 0] <= tree[1, 0]                  # the frequent word has the shorter path
    x = np.random.default_rng(0).normal(size=V - 1)  # any inner-node scores give a distribution
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    total = sum(np.prod([sig((1 - 2 * tree[w, 1 + L + j]) * x[tree[w, 1 + j]]) for j in range(tree[w, 0])])
                for w in range(V))
    assert abs(total - 1) < 1e-12


def test_unigram_table_follows_counts_to_the_three_quarters():
    counts = np.array([0, 0, 0, 0, 100, 10, 1])
    table = unigram_table(counts, size=100_000)
    freq = np.bincount(table[:, 0], minlength=7) / len(table)
    want = counts ** 0.75 / (counts ** 0.75).sum()
    assert np.allclose(freq, want, atol=1e-3) and freq[:4].sum() == 0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_batches_are_pure_functions_of_their_arguments(name):
    t = get_task(name)
    a, b = t.batch("train", 8, 3, 0), t.batch("train", 8, 3, 0)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    c = t.batch("valid", 8, 3, 0)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    for k, v in a.items():
        if k.endswith("_mask"):
            field = a[k[:-5]]
            assert v.shape == field.shape[:2] and set(np.unique(v)) <= {0.0, 1.0}
            if k[:-5] + "_len" in a:
                assert (v.sum(0) == a[k[:-5] + "_len"]).all()


def _text(vocab, col):
    return "".join(vocab.decode(col))


def test_seq2seq_tasks_compute_what_they_say():
    for name, fn in (("reverse", lambda s: s[::-1]), ("copy", lambda s: s), ("sort", lambda s: "".join(sorted(s)))):
        t = get_task(name)
        b = t.batch("train", 16, 0, 1)
        for j in range(16):
            assert _text(t.tgt_vocab, b["y"][:, j]) == fn(_text(t.src_vocab, b["x"][:, j]))
            assert b["y"][int(b["y_len"][j]) - 1, j] == EOS
    t = get_task("addition")
    b = t.batch("train", 16, 0, 1)
    for j in range(16):
        x, y = _text(t.src_vocab, b["x"][:, j]), _text(t.tgt_vocab, b["y"][:, j])
        a, c = x.split("+")
        assert int(a) + int(c) == int(y)


def test_dates_map_to_the_same_day_in_iso_8601():
    t = get_task("dates")
    b = t.batch("train", 64, 0, 0)
    months = {m.lower(): i for i, m in enumerate(__import__("calendar").month_name) if m}
    for j in range(64):
        src, iso = _text(t.src_vocab, b["x"][:, j]), _text(t.tgt_vocab, b["y"][:, j])
        d = datetime.date.fromisoformat(iso)
        assert str(d.day) in src and (str(d.year) in src or f"{d.year % 100:02d}" in src)
        named = [m for m in months if m[:3] in src.lower()]
        assert not named or months[named[0]] == d.month


def test_adding_parity_and_neighbours_targets():
    b = get_task("adding", length=20).batch("train", 32, 0, 0)
    x, y = b["x"], b["y"]
    assert (x[:, :, 1].sum(0) == 2).all()
    assert np.allclose((x[:, :, 0] * x[:, :, 1]).sum(0), y[:, 0])
    t = get_task("parity")
    b = t.batch("train", 32, 0, 0)
    bits = (b["x"] - 4) * b["x_mask"]
    assert ((bits.sum(0) % 2) == b["y"]).all()
    t = get_task("neighbours")
    b = t.batch("train", 8, 0, 0)
    for j in range(8):
        d = _text(t.src_vocab, b["x"][:, j])
        tags = t.tgt_vocab.decode(b["y"][:len(d), j])
        assert tags[0] == "-" + d[1] and tags[-1] == d[-2] + "-"


def test_charlm_targets_are_the_next_character_and_words_pairs_are_in_window():
    t = get_task("charlm", length=16)
    b = t.batch("train", 4, 0, 0)
    assert (b["x"][1:] == b["y"][:-1]).all()
    w = get_task("words", mode="cbow", window=3)
    b = w.batch("train", 16, 0, 0)
    assert b["context"].shape == (16, 6) and ((b["context"] >= -1) & (b["context"] < len(w.vocab))).all()


def _letters(i):
    """A distinct lowercase word per number (the words task reads [a-z]+ only)."""
    return "".join(chr(97 + (i // 26 ** k) % 26) for k in range(3))


def test_word2vec_examples_are_windows_of_the_subsampled_text():
    """The words task streams examples as word2vec.c makes them: centres in text order, each
    with a window of reach 1..W (W - b, b uniform in [0, W)) cut at the ends of the text; skip-gram
    gives one example per context word, left to right."""
    from runtime.tasks import Words
    words = [_letters(i) for i in range(3000)]          # every word once: a word is its position
    plain = Words(text=" ".join(words), mode="skipgram", window=4, min_count=1, sample=0)
    pos = {plain.vocab.stoi[w]: i for i, w in enumerate(words)}
    b = plain.batch("train", 2000, 0, 0)
    centres = [pos[x] for x in b["center"]]
    assert centres == sorted(centres) and centres[0] == 0           # text order, from the start
    reaches = []
    for c in sorted(set(centres)):
        got = [pos[y] - c for x, y in zip(b["center"], b["context"]) if pos[x] == c]
        r = max(abs(d) for d in got)
        if c < centres[-1]:                         # the last centre may continue in the next batch
            assert got == [d for d in range(-r, r + 1) if d and c + d >= 0], (c, got)
            reaches.append(r)
    assert set(reaches) == {1, 2, 3, 4}
    assert np.bincount(reaches)[1:].min() > 0.15 * len(reaches)   # uniform reach
    # the stream continues across batches
    nxt = plain.batch("train", 2000, 1, 0)
    both = plain.batch("train", 4000, 0, 0)
    np.testing.assert_array_equal(both["context"], np.concatenate([b["context"], nxt["context"]]))
    cbow = Words(text=" ".join(words), mode="cbow", window=3, min_count=1, sample=0)
    b = cbow.batch("train", 500, 0, 0)
    assert [pos[x] for x in b["center"]] == list(range(500))
    for x, ctx in zip(b["center"], b["context"]):
        r = max(int((ctx[3:] >= 0).sum()), int((ctx[:3] >= 0).sum()))
        assert [pos[c] - pos[x] for c in ctx if c >= 0] == [d for d in range(-r, r + 1) if d and pos[x] + d >= 0]
    # a frequent word, subsampled, is rarely a centre or a context, and windows reach past it
    text = " ".join(f"the {w}" for w in words)
    sub = Words(text=text, mode="skipgram", window=2, min_count=1, sample=1e-3)
    the = sub.vocab.stoi["the"]
    b = sub.batch("train", 4000, 0, 0)
    assert (b["center"] == the).mean() < 0.1 and (b["context"] == the).mean() < 0.1
    rare = [(x, c) for x, c in zip(b["center"], b["context"]) if x != the and c != the]
    raw = {sub.vocab.stoi[w]: 2 * i + 1 for i, w in enumerate(words)}
    assert max(abs(raw[c] - raw[x]) for x, c in rare) > 2          # past the dropped "the"s


def test_stdlib_corpus_does_not_depend_on_what_else_is_imported():
    """typing_extensions swaps private helpers into typing; the corpus reads public names only.
    (A host that patches a public function loses that one docstring: pytest replaces
    threading.excepthook, torch inspect.getfile; a patched function is never read.)"""
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, {root!r}); {pre}"
            "from runtime.tasks import stdlib_corpus; import hashlib; "
            "print(hashlib.sha256(stdlib_corpus().encode()).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = [subprocess.run([sys.executable, "-c", code.format(root=root, pre=pre)], capture_output=True, text=True,
                           check=True).stdout for pre in ("", "import typing_extensions, hypothesis, jsonschema; ")]
    assert outs[0] == outs[1] and len(outs[0].strip()) == 64


def test_unknown_task_and_parameter_are_named():
    with pytest.raises(ValueError, match="unknown task 'revers'; did you mean 'reverse'"):
        get_task("revers")
    with pytest.raises(ValueError, match="task adding: unknown parameter 'lenght'; did you mean 'length'"):
        get_task("adding", lenght=5)


def test_user_pairs_are_bucketed_by_length(tmp_path):
    from runtime.userdata import Pairs
    rng = np.random.default_rng(0)
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{'a' * n}\t{'b' * n}\n" for n in rng.integers(1, 40, 2000)))
    b = Pairs(str(path)).batch("train", 32, 0, 0)
    assert b["x_mask"].mean() > 0.9            # similar lengths: little padding


def test_huffman_tree_is_gensims():
    """Hierarchical softmax's vectors depend on which of two equal counts goes where about as much
    as on the seed: the tree is gensim's, path for path (codes and inner nodes up to their
    numbering), but for the rarest word, below which the words that never occur hang."""
    gensim = pytest.importorskip("gensim")
    import re
    from gensim.test.utils import datapath
    from runtime.data import huffman_tree
    from runtime.tasks import Words
    with open(datapath("lee_background.cor")) as f:
        text = f.read()
    sents = [re.findall(r"[a-z]+", line.lower()) for line in text.splitlines() if line.strip()]
    m = gensim.models.Word2Vec(vector_size=8, min_count=5, hs=1, negative=0)
    m.build_vocab(sents)
    task = Words(text=text, mode="cbow", min_count=5)
    tree = huffman_tree(task.vocab.counts, task.rank)
    L = (tree.shape[1] - 1) // 2
    node_of = {}
    for w in m.wv.index_to_key[:-1]:
        row = tree[task.vocab.stoi[w]]
        n = row[0]
        assert row[1 + L:1 + L + n].tolist() == m.wv.get_vecattr(w, "code").tolist(), w
        for ours, theirs in zip(row[1:1 + n], m.wv.get_vecattr(w, "point")):
            assert node_of.setdefault(ours, theirs) == theirs
    rarest = tree[task.vocab.stoi[m.wv.index_to_key[-1]]]
    assert rarest[0] == len(m.wv.get_vecattr(m.wv.index_to_key[-1], "code")) + 1
    assert all(tree[w, 0] > 0 for w in range(4))            # <pad> <unk> <bos> <eos> have paths
