"""word2vec's two cheap substitutes for a softmax over the vocabulary.

Both are a handful of 64-wide dot products and axpys per example on rows of W picked by the
example; the loops are written so that each one vectorises: a dot in the arrays' precision
(jit_sum), one destination per axpy, softplus and sigmoid in their float32 forms."""
import numpy as np

from ..jit import const, jit, jit_sum
from .vecmath import dot_rows, fast_sigmoid, fast_softplus


@jit
def _axpy_row(g, a, i, y, k):
    """y[k] += g a[i] (one loop per destination: two destinations in one loop stay scalar)."""
    src, dst = a[i], y[k]
    for c in range(src.shape[0]):
        dst[c] += g * src[c]


@jit_sum
def _softplus_sum(z):
    """sum_i softplus(z_i) = sum_i -log sigmoid(-z_i), in float64."""
    s = 0.0
    for i in range(z.shape[0]):
        s += fast_softplus(z[i])
    return s


@jit
def _sigmoid_times(z, g0):
    """z = sigmoid(z) g0, in place (one vectorised loop over every example's dots)."""
    for i in range(z.shape[0]):
        z[i] = fast_sigmoid(z[i]) * g0


@jit
def _path_total(y, tree):
    """How many tree nodes the Huffman paths of the words y visit, in all."""
    n = 0
    for r in range(y.shape[0]):
        n += tree[y[r, 0], 0]
    return n


@jit
def hsoftmax_fwd(v, y, tree, W, out, norm):
    """L = -sum_r sum_j log sigmoid((1 - 2 d_j) v_r . W[n_j]) / norm along the Huffman path
    (n_j, d_j) of word y_r; tree row w = [path length, nodes..., codes...]."""
    L = (tree.shape[1] - 1) // 2
    z = np.empty(_path_total(y, tree), v.dtype)     # -(1 - 2 d) v . W[n], node by node
    i = 0
    for r in range(v.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            n, d = tree[w, 1 + j], tree[w, 1 + L + j]
            dot = dot_rows(v, r, W, n)
            z[i] = dot if d else -dot
            i += 1
    out[0, 0] = _softplus_sum(z) / norm


@jit
def hsoftmax_bwd(v, y, tree, W, out, gout, gv, gy, gtree, gW, need, norm):
    """g = (sigmoid(v . W[n]) - (1 - d)) dL / norm;  dv += g W[n];  dW[n] += g v"""
    L = (tree.shape[1] - 1) // 2
    g0, one = const(v, gout[0, 0] / norm), const(v, 1.0)
    g = np.empty(_path_total(y, tree), v.dtype)
    i = 0
    for r in range(v.shape[0]):             # the dots first: independent, they overlap
        w = y[r, 0]
        for j in range(tree[w, 0]):
            g[i] = dot_rows(v, r, W, tree[w, 1 + j])
            i += 1
    _sigmoid_times(g, g0)
    i = 0
    for r in range(v.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            n, d = tree[w, 1 + j], tree[w, 1 + L + j]
            gi = g[i] - (one - const(v, d)) * g0
            i += 1
            if need & 1:
                _axpy_row(gi, W, n, gv, r)
            if need & 8:
                _axpy_row(gi, v, r, gW, n)


@jit
def negsample_fwd(v, y, table, W, out, k, norm, drawn):
    """L = -sum_r (log sigmoid(v . W[y]) + sum_j log sigmoid(-v . W[n_j])) / norm, the k noise
    words n_j drawn from the unigram table (counts ** 0.75) and kept for backward."""
    K = int(k)
    Ts = table.shape[0]
    z = np.empty((v.shape[0], K + 1), v.dtype)  # -log sigmoid(s) = softplus(-s)
    for r in range(v.shape[0]):
        z[r, 0] = -dot_rows(v, r, W, y[r, 0])
        for j in range(K):
            n = table[int(np.random.random() * Ts), 0]
            drawn[r, j] = n
            z[r, 1 + j] = dot_rows(v, r, W, n)
    out[0, 0] = _softplus_sum(z.reshape(-1)) / norm


@jit
def negsample_bwd(v, y, table, W, out, gout, gv, gy, gtable, gW, need, k, norm, drawn):
    """For (word, label) in (y, 1), (n_j, 0): g = (sigmoid(v . W[word]) - label) dL / norm;
    dv += g W[word];  dW[word] += g v"""
    K = int(k)
    R = v.shape[0]
    g0 = const(v, gout[0, 0] / norm)
    g = np.empty((R, K + 1), v.dtype)
    for r in range(R):                      # the dots first: independent, they overlap
        g[r, 0] = dot_rows(v, r, W, y[r, 0])
        for j in range(K):
            g[r, 1 + j] = dot_rows(v, r, W, drawn[r, j])
    _sigmoid_times(g.reshape(-1), g0)
    for r in range(R):
        g[r, 0] -= g0                       # the true word's label is 1
        for j in range(K + 1):
            word = y[r, 0] if j == 0 else drawn[r, j - 1]
            if need & 1:
                _axpy_row(g[r, j], W, word, gv, r)
            if need & 8:
                _axpy_row(g[r, j], v, r, gW, word)


@jit
def hsoftmax_rows(v, y, tree, W, out, norm, mark):
    """mark[n] = 1 for every inner node n on the Huffman paths of the words y."""
    for r in range(y.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            mark[tree[w, 1 + j]] = 1


@jit
def negsample_rows(v, y, table, W, out, k, norm, drawn, mark):
    """mark = 1 at the true words y and the noise words drawn in forward."""
    for r in range(y.shape[0]):
        mark[y[r, 0]] = 1
        for j in range(drawn.shape[1]):
            mark[drawn[r, j]] = 1
