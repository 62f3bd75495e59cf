"""graphspec's Model against references written from the equations (models.py), every concept
of specs/: loss and every param gradient on random params and a padded batch.

float64 within 1e-9 (fused plan, and the unfused one that keeps every block as written);
float32 on the same params within 1e-5 of the float64 reference. Errors are relative to each
tensor's largest entry (harness.err)."""
import heapq
import os

import numpy as np
import pytest

from runtime.data import huffman_tree

from .cases import CASES, ROOT
from .harness import compare, draw_examples, pad, random_params, run_reference

VARIANTS = {"float64": (np.float64, True, 1e-9), "float64-unfused": (np.float64, False, 1e-9),
            "float32": (np.float32, True, 1e-5)}
RUNS = [(c, mode, v) for c in CASES for mode in c.modes for v in VARIANTS]


@pytest.mark.parametrize("case,mode,variant", RUNS, ids=[f"{c.name}-{m}-{v}" for c, m, v in RUNS])
def test_loss_and_gradients_match_the_reference(case, mode, variant):
    dtype, fuse, tol = VARIANTS[variant]
    errors = compare(case, dtype, fuse, mode)
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= tol}
    assert not bad, f"{case.name} ({mode}, {variant}): relative errors above {tol:g}: {bad}"


def test_every_spec_has_a_reference():
    specs = {f for f in os.listdir(os.path.join(ROOT, "specs")) if f.endswith(".yaml")}
    assert specs == {c.spec for c in CASES}


@pytest.mark.parametrize("case", [c for c in CASES if "free" in c.modes], ids=lambda c: c.name)
def test_free_running_reads_other_tokens_than_teacher_forcing(case):
    """The free-mode comparison checks something of its own: on these params the argmax the
    decoder feeds back differs from the targets, so the two references' losses differ by more
    than the float32 tolerance: a free mode that teacher-forced would fail its comparison."""
    rng = np.random.default_rng(0)
    examples = draw_examples(case, rng)
    pad(case, examples, rng)                   # the same draws as compare() makes
    params = random_params(case, rng)
    train, _ = run_reference(case, params, examples, "train", {}, {})
    free, _ = run_reference(case, params, examples, "free", {}, {})
    assert abs(train - free) > 1e-4 * abs(train)


def _huffman_cost(counts) -> int:
    """The least sum_w count(w) * depth(w) over binary codes: the sum of every merge's weight."""
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        s = heapq.heappop(heap) + heapq.heappop(heap)
        cost += s
        heapq.heappush(heap, s)
    return cost


@pytest.mark.parametrize("V", [2, 3, 12, 40])
def test_huffman_table_is_an_optimal_binary_tree(V):
    """The tree table the hs references read (models.huffman_path) is a Huffman tree of the
    counts: one root, each inner node 0..V-2 with exactly two children (codes 0 and 1), the
    words at distinct leaves, and the least weighted path length."""
    counts = np.random.default_rng(V).integers(1, 100, size=V)
    tree = huffman_tree(counts)
    L = (tree.shape[1] - 1) // 2
    children, leaves, depth = {}, set(), 0
    for w in range(V):
        n = int(tree[w, 0])
        nodes, codes = tree[w, 1:1 + n], tree[w, 1 + L:1 + L + n]
        assert n >= 1 and nodes[0] == tree[0, 1], f"word {w} does not start at the root"
        for j in range(n):
            child = ("node", int(nodes[j + 1])) if j + 1 < n else ("word", w)
            key = (int(nodes[j]), int(codes[j]))
            assert children.setdefault(key, child) == child, f"inner node {key} has two children {child}"
        leaves.add(children[(int(nodes[-1]), int(codes[-1]))])
        depth += int(counts[w]) * n
    assert sorted(children) == [(i, d) for i in range(V - 1) for d in (0, 1)]
    assert len(leaves) == V
    assert depth == _huffman_cost(counts)


def test_references_use_no_graphspec_code():
    """The references (and the autodiff under them) import nothing of graphspec or runtime:
    they are an outside opinion, not the plan run a second time."""
    import ast
    here = os.path.dirname(os.path.abspath(__file__))
    for f in ("models.py", "autograd.py"):
        with open(os.path.join(here, f)) as fh:
            tree = ast.parse(fh.read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] in ("graphspec", "runtime")], (f, names)
