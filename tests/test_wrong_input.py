"""Wrong input outside the spec (data files, checkpoints, flags, pictures' names) fails in one
line with exit 2, saying what would be right; never an internal error, never trained on silently.
Spec errors are tests/test_bad_specs.py's."""
import pytest

from conftest import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "pairs.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in ("abc", "bcad", "cadb", "dabca") * 10))
    (d / "text.txt").write_text("the cat sat on the mat and the dog ran off\n" * 40)
    return d


@pytest.mark.parametrize("spec, file, expected", [
    ("elman", "pairs.tsv", "holds source<TAB>target pairs, but specs/elman.yaml is a language model (tokens in "
                           "and out on one axis): train it on plain text"),
    ("seq2seq_attention", "text.txt", "is plain text (no tabs in its first lines), but specs/seq2seq_attention.yaml "
                                      "is an encoder-decoder (token inputs on two axes): train it on a TSV of "
                                      "source<TAB>target pairs"),
    ("w2v_cbow_hs", "pairs.tsv", "holds source<TAB>target pairs, but specs/w2v_cbow_hs.yaml is a word-vector model "
                                 "(tokens, no time axis): train it on plain text"),
    ("lstm", "text.txt", "is plain text (no tabs in its first lines), but specs/lstm.yaml is a model of real values "
                         "or labels: train it on a built-in task (--task NAME)"),
])
def test_a_data_file_of_the_wrong_kind_is_refused(data, tmp_path, spec, file, expected):
    code, out, err = main("train", f"specs/{spec}.yaml", "--data", data / file, "--out", tmp_path / "run", "--quiet")
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"graphspec: --data {data / file} {expected}"]


def test_a_task_without_a_vocabulary_for_a_model_that_needs_one(tmp_path):
    code, out, err = main("train", "specs/elman.yaml", "--task", "adding", "--out", tmp_path / "run", "--quiet")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["graphspec: dim V is 'data' (a vocabulary's size) but task adding has no vocabulary "
                                "(it feeds real values)"]


@pytest.mark.parametrize("files", [("best.npz", "last.npz"), ()])
def test_a_run_directory_where_a_checkpoint_belongs(tmp_path, files):
    run = tmp_path / "run"
    run.mkdir()
    for f in files:
        (run / f).write_bytes(b"")
    code, out, err = main("eval", run)
    assert (code, out) == (2, "")
    which = f"{run}/best.npz or {run}/last.npz" if files else \
        f"a run directory holds best.npz and last.npz, {run} holds neither"
    assert err.splitlines() == [f"graphspec: {run} is a directory; give a checkpoint file: {which}"]


@pytest.fixture(scope="module")
def reverse_run(tmp_path_factory):
    """seq2seq on the reverse task: a vocabulary of a-z, strings drawn from a-l."""
    from conftest import spec_text
    d = tmp_path_factory.mktemp("rev")
    spec = d / "seq2seq.yaml"
    spec.write_text(spec_text("seq2seq.yaml", ("D: 32, H: 128", "D: 4, H: 8"),
                              ("batch: 64, steps: 3000", "batch: 4, steps: 2, eval_every: 2")))
    code, _, err = main("train", spec, "--out", d / "run", "--quiet")
    assert code == 0, err
    return d / "run" / "best.npz"


def test_predict_refuses_characters_the_task_never_drew(reverse_run):
    code, out, err = main("predict", reverse_run, "abcxyz")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["graphspec: predict: the model never saw 'x', 'y', 'z' in training "
                                "(task reverse drew from: 'abcdefghijkl')"]
    code, out, err = main("predict", reverse_run, "abcl")
    assert code == 0 and err == "" and len(out.splitlines()) == 1


def test_generate_refuses_a_prompt_outside_the_vocabulary(tiny):
    code, out, err = main("generate", tiny["run_elman"] / "best.npz", "--prompt", "def f(x): \u2603", "--length", "3")
    assert (code, out) == (2, "")
    assert err.startswith("graphspec: generate --prompt: the model never saw '\u2603' in training (task charlm knows: ")
    assert len(err.splitlines()) == 1


def test_train_refuses_a_spec_with_nothing_to_train(tmp_path):
    """No loss is allowed only when no param learns (validate says so otherwise): such a spec
    compiles and runs its outputs, but training it would change nothing."""
    spec = tmp_path / "fixed.yaml"
    spec.write_text("name: fixed\ndata: {task: adding, length: 6}\ndims: {H: 4}\n"
                    "inputs:\n  x: {real: 2, axis: t}\n  y: {real: 1, target: true}\n"
                    "params:\n  U: {shape: [H, 2], learn: false}\n  V_o: {shape: [1, H], learn: false}\n"
                    "nodes:\n  mu: 0.5 * mu[t-1] + tanh(U @ x)\n  p: V_o @ last(mu)\noutputs:\n  pred: p\n")
    assert main("validate", spec)[0] == 0
    code, out, err = main("train", spec, "--out", tmp_path / "run", "--quiet")
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"graphspec: {spec}: nothing to train: no loss"]


def test_neighbors_rank_each_cosine_among_random_pairs(tiny):
    """A cosine of 0.95 means little where random pairs average 0.95: each neighbour's cosine
    comes with the share of random pairs of words (20,000, seeded) below it."""
    import numpy as np
    from runtime.commands import random_pair_cosines, restore
    from runtime.decode import _unit_rows, embedding_matrix
    ckpt = tiny["run_elman"] / "best.npz"
    code, out, err = main("neighbors", ckpt, "e", "-k", "3")
    assert code == 0
    model, task, _ = restore(str(ckpt))
    base = random_pair_cosines(model)
    assert err.splitlines() == ["graphspec: word, cosine, and the share of random pairs of words with a lower cosine "
                                f"(their median is {np.median(base):.3f})"]
    U = _unit_rows(embedding_matrix(model))
    cos = U @ U[task.vocab.stoi["e"]]
    rows = [ln.split("\t") for ln in out.splitlines()]
    assert len(rows) == 3
    for w, c, pct in rows:
        want = cos[task.vocab.stoi[w]]
        assert c == f"{want:.3f}"
        assert pct == f"{100 * np.mean(base < want):.1f}%"
