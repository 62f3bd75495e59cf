"""word2vec's two cheap substitutes for a softmax over the vocabulary."""
import math

import numpy as np

from ..jit import jit


@jit
def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


@jit
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@jit
def _dot(a, i, b, k):
    s = 0.0
    for j in range(a.shape[1]):
        s += a[i, j] * b[k, j]
    return s


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
            total -= _log_sigmoid((1 - 2 * d) * _dot(v, r, W, n))
    out[0, 0] = total / norm


@jit
def hsoftmax_bwd(v, y, tree, W, out, gout, gv, gy, gtree, gW, need, norm):
    """g = (sigmoid(v . W[n]) - (1 - d)) dL / norm;  dv += g W[n];  dW[n] += g v"""
    L = (tree.shape[1] - 1) // 2
    g0 = gout[0, 0] / norm
    D = v.shape[1]
    for r in range(v.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            n, d = tree[w, 1 + j], tree[w, 1 + L + j]
            g = (_sigmoid(_dot(v, r, W, n)) - (1 - d)) * g0
            for k in range(D):
                vk = v[r, k]
                if need & 1:
                    gv[r, k] += g * W[n, k]
                if need & 8:
                    gW[n, k] += g * vk


@jit
def negsample_fwd(v, y, table, W, out, k, norm, drawn):
    """L = -sum_r (log sigmoid(v . W[y]) + sum_j log sigmoid(-v . W[n_j])) / norm, the k noise
    words n_j drawn from the unigram table (counts ** 0.75) and kept for backward."""
    K = int(k)
    Ts = table.shape[0]
    total = 0.0
    for r in range(v.shape[0]):
        total -= _log_sigmoid(_dot(v, r, W, y[r, 0]))
        for j in range(K):
            n = table[int(np.random.random() * Ts), 0]
            drawn[r, j] = n
            total -= _log_sigmoid(-_dot(v, r, W, n))
    out[0, 0] = total / norm


@jit
def negsample_bwd(v, y, table, W, out, gout, gv, gy, gtable, gW, need, k, norm, drawn):
    """For (word, label) in (y, 1), (n_j, 0): g = (sigmoid(v . W[word]) - label) dL / norm;
    dv += g W[word];  dW[word] += g v"""
    K = int(k)
    g0 = gout[0, 0] / norm
    D = v.shape[1]
    for r in range(v.shape[0]):
        for j in range(K + 1):
            word = y[r, 0] if j == 0 else drawn[r, j - 1]
            label = 1.0 if j == 0 else 0.0
            g = (_sigmoid(_dot(v, r, W, word)) - label) * g0
            for c in range(D):
                vc = v[r, c]
                if need & 1:
                    gv[r, c] += g * W[word, c]
                if need & 8:
                    gW[word, c] += g * vc
