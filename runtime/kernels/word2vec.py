"""word2vec's two cheap substitutes for a softmax over the vocabulary."""
import math

import numpy as np

from ..jit import const, jit
from .vecmath import dot_rows, fast_sigmoid


@jit
def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


@jit
def _axpy_row(g, a, i, y, k):
    """y[k] += g a[i] (one loop per destination: two destinations in one loop stay scalar)."""
    for c in range(a.shape[1]):
        y[k, c] += g * a[i, c]


@jit
def hsoftmax_fwd(v, y, tree, W, out, norm):
    """L = -sum_r sum_j log sigmoid((1 - 2 d_j) v_r . W[n_j]) / norm along the Huffman path
    (n_j, d_j) of word y_r; tree row w = [path length, nodes..., codes...]."""
    L = (tree.shape[1] - 1) // 2
    total = 0.0
    for r in range(v.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            n, d = tree[w, 1 + j], tree[w, 1 + L + j]
            total -= _log_sigmoid((1 - 2 * d) * float(dot_rows(v, r, W, n)))
    out[0, 0] = total / norm


@jit
def hsoftmax_bwd(v, y, tree, W, out, gout, gv, gy, gtree, gW, need, norm):
    """g = (sigmoid(v . W[n]) - (1 - d)) dL / norm;  dv += g W[n];  dW[n] += g v"""
    L = (tree.shape[1] - 1) // 2
    g0 = const(v, gout[0, 0] / norm)
    one = const(v, 1.0)
    for r in range(v.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            n, d = tree[w, 1 + j], tree[w, 1 + L + j]
            g = (fast_sigmoid(dot_rows(v, r, W, n)) - (one - const(v, d))) * g0
            if need & 1:
                _axpy_row(g, W, n, gv, r)
            if need & 8:
                _axpy_row(g, v, r, gW, n)


@jit
def negsample_fwd(v, y, table, W, out, k, norm, drawn):
    """L = -sum_r (log sigmoid(v . W[y]) + sum_j log sigmoid(-v . W[n_j])) / norm, the k noise
    words n_j drawn from the unigram table (counts ** 0.75) and kept for backward."""
    K = int(k)
    Ts = table.shape[0]
    total = 0.0
    for r in range(v.shape[0]):
        total -= _log_sigmoid(float(dot_rows(v, r, W, y[r, 0])))
        for j in range(K):
            n = table[int(np.random.random() * Ts), 0]
            drawn[r, j] = n
            total -= _log_sigmoid(-float(dot_rows(v, r, W, n)))
    out[0, 0] = total / norm


@jit
def negsample_bwd(v, y, table, W, out, gout, gv, gy, gtable, gW, need, k, norm, drawn):
    """For (word, label) in (y, 1), (n_j, 0): g = (sigmoid(v . W[word]) - label) dL / norm;
    dv += g W[word];  dW[word] += g v"""
    K = int(k)
    g0 = const(v, gout[0, 0] / norm)
    one, zero = const(v, 1.0), const(v, 0.0)
    for r in range(v.shape[0]):
        for j in range(K + 1):
            word = y[r, 0] if j == 0 else drawn[r, j - 1]
            label = one if j == 0 else zero
            g = (fast_sigmoid(dot_rows(v, r, W, word)) - label) * g0
            if need & 1:
                _axpy_row(g, W, word, gv, r)
            if need & 8:
                _axpy_row(g, v, r, gW, word)
