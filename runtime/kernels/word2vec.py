"""word2vec's two cheap substitutes for a softmax over the vocabulary.

Both are a handful of 64-wide dot products and axpys per example on rows of W picked by the
example; the loops are written so that each one vectorises: a dot in the arrays' precision
(jit_sum), one destination per axpy, softplus and sigmoid in their float32 forms. The updates
are compiled without FMA contraction (jit_ieee): tests/test_word2vec_rule.py checks them
against word2vec.c's, step by step, and one rounding of a dot fed to the exp table can pick the
neighbouring cell, a difference the updates then carry on."""
import numpy as np

from ..jit import const, jit_ieee, jit_sum
from .embedding import embed_bwd, embed_fwd, embed_mean_bwd, embed_mean_fwd
from .vecmath import dot_rows, fast_sigmoid, fast_softplus


@jit_ieee
def _axpy_row(g, a, i, y, k):
    """y[k] += g a[i] (one loop per destination: two destinations in one loop stay scalar;
    2-D indexing: a row view made per call costs more than the 64-wide loop itself)."""
    for c in range(a.shape[1]):
        y[k, c] += g * a[i, c]


@jit_sum
def _softplus_sum(z):
    """sum_i softplus(z_i) = sum_i -log sigmoid(-z_i), in float64."""
    s = 0.0
    for i in range(z.shape[0]):
        s += fast_softplus(z[i])
    return s


@jit_ieee
def _sigmoid_times(z, g0):
    """z = sigmoid(z) g0, in place (one vectorised loop over every example's dots)."""
    for i in range(z.shape[0]):
        z[i] = fast_sigmoid(z[i]) * g0


@jit_ieee
def _path_total(y, tree):
    """How many tree nodes the Huffman paths of the words y visit, in all."""
    n = 0
    for r in range(y.shape[0]):
        n += tree[y[r, 0], 0]
    return n


@jit_ieee
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


@jit_ieee
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


@jit_ieee
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


@jit_ieee
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


@jit_ieee
def hsoftmax_rows(v, y, tree, W, out, norm, mark):
    """mark[n] = 1 for every inner node n on the Huffman paths of the words y."""
    for r in range(y.shape[0]):
        w = y[r, 0]
        for j in range(tree[w, 0]):
            mark[tree[w, 1 + j]] = 1


@jit_ieee
def negsample_rows(v, y, table, W, out, k, norm, drawn, mark):
    """mark = 1 at the true words y and the noise words drawn in forward."""
    for r in range(y.shape[0]):
        mark[y[r, 0]] = 1
        for j in range(drawn.shape[1]):
            mark[drawn[r, j]] = 1


# ---------------------------------------------------------------- fused per-example SGD
# train: {per_example: true} steps after every example (word2vec's online updates). Through the
# plan that is a forward, a backward and an SGD step per example; these kernels do the same
# arithmetic in one pass over the batch, updating E and W in place (runtime/online.py picks
# them for the two-node word2vec form; tests/test_train.py checks them against the plan).

@jit_ieee
def _sgd_example(E, ids, r, mean, W, targets, labels, nt, lr, v, e, g, z):
    """One example: v = E[ids[r]] (or their mean) as embed / embed_mean compute it; every dot with
    W before any update (as the plan's backward sees them); g_t = lr (sigmoid(v . W[t]) - label_t);
    e = -sum_t g_t W[t]; W[t] -= g_t v; then E gets e as embed's backward hands out a gradient.
    z[r, t] = -+ v . W[t], whose softplus is the example's loss (summed later, vectorised)."""
    row = ids[r:r + 1]
    if mean:
        embed_mean_fwd(E, row, v, 0.0)
    else:
        embed_fwd(E, row, v)
    for t in range(nt):
        g[t] = dot_rows(v, 0, W, targets[t])
    one, two = const(v, 1.0), const(v, 2.0)
    for t in range(nt):
        z[r, t] = g[t] * (one - two * labels[t])
    for t in range(nt):
        g[t] = (fast_sigmoid(g[t]) - labels[t]) * lr
    for j in range(v.shape[1]):
        e[0, j] = 0
    for t in range(nt):
        _axpy_row(-g[t], W, targets[t], e, 0)
    for t in range(nt):
        _axpy_row(-g[t], v, 0, W, targets[t])
    if mean:
        embed_mean_bwd(E, row, v, e, E, row, 1, 0.0)
    else:
        embed_bwd(E, row, v, e, E, row, 1)


@jit_ieee
def sgd_negsample(E, ids, mean, y, table, W, k, lr, losses):
    """Per example r: v from E; targets y[r] (label 1) and k words drawn from the unigram table
    (label 0); L_r = sum_t -log sigmoid(+-v . W[t]); one SGD step at rate lr (_sgd_example)."""
    D, K, R = E.shape[1], int(k), ids.shape[0]
    v, e = np.empty((1, D), E.dtype), np.empty((1, D), E.dtype)
    targets, g = np.empty(K + 1, np.int64), np.empty(K + 1, E.dtype)
    labels = np.zeros(K + 1, E.dtype)
    labels[0] = 1
    z = np.empty((R, K + 1), E.dtype)
    rate = const(E, lr)
    for r in range(R):
        targets[0] = y[r]
        for j in range(K):
            targets[1 + j] = table[int(np.random.random() * table.shape[0]), 0]
        _sgd_example(E, ids, r, mean, W, targets, labels, K + 1, rate, v, e, g, z)
    for r in range(R):
        losses[r] = _softplus_sum(z[r])


@jit_ieee
def sgd_hsoftmax(E, ids, mean, y, tree, W, lr, losses):
    """Per example r: v from E; the targets are the inner nodes on y[r]'s Huffman path with label
    1 - code; one SGD step at rate lr (_sgd_example)."""
    D, L, R = E.shape[1], (tree.shape[1] - 1) // 2, ids.shape[0]
    v, e = np.empty((1, D), E.dtype), np.empty((1, D), E.dtype)
    targets, labels, g = np.empty(L, np.int64), np.empty(L, E.dtype), np.empty(L, E.dtype)
    z = np.zeros((R, L), E.dtype)
    count = np.empty(R, np.int64)
    rate = const(E, lr)
    for r in range(R):
        w = y[r]
        nt = count[r] = tree[w, 0]
        for j in range(nt):
            targets[j] = tree[w, 1 + j]
            labels[j] = 1 - tree[w, 1 + L + j]
        _sgd_example(E, ids, r, mean, W, targets, labels, nt, rate, v, e, g, z)
    for r in range(R):
        losses[r] = _softplus_sum(z[r, :count[r]])


# ---------------------------------------------------------------- word2vec's own rule
# train: {per_example: word2vec} updates as word2vec.c's inner loop (and gensim's
# word2vec_inner.pyx) does, which is not the exact gradient of the loss the head states:
#   * sigmoid from a 1000-entry table over [-6, 6), read at int((f + 6) * 83) (83 is C's integer
#     1000 / 6 / 2, in both word2vec.c and gensim);
#   * hierarchical softmax skips a node whose |f| >= 6; negative sampling takes the limit 0 or 1
#     for sigmoid beyond +-6; a noise word equal to the target is skipped;
#   * CBOW's mean: the whole error neu1e goes to every context word (the gradient of the mean
#     would give each 1 / count of it);
#   * W is updated target by target, each dot reading W as the previous targets left it.
MAX_EXP, EXP_TABLE_SIZE = 6, 1000


def exp_table(dtype) -> np.ndarray:
    """word2vec.c's expTable: sigmoid((i / 1000 * 2 - 1) * 6), i = 0..999."""
    x = np.exp((np.arange(EXP_TABLE_SIZE) / EXP_TABLE_SIZE * 2 - 1) * MAX_EXP)
    return (x / (x + 1)).astype(dtype)


@jit_ieee
def _w2v_example(E, ids, r, W, targets, labels, nt, hs, lr, sig, h, e, dots):
    """One example as word2vec.c trains it (see above): h = E[ids[r]] or their mean; per target
    t in order: f = h . W[t]; g = (label_t - sigmoid(f)) lr; e += g W[t]; W[t] += g h; then
    E[c] += e for every context id c. dots[t] = h . W[t] before any update (for the loss)."""
    D = E.shape[1]
    for j in range(D):
        h[0, j] = 0
        e[0, j] = 0
    cw = 0
    for c in range(ids.shape[1]):
        k = ids[r, c]
        if k >= 0:
            _axpy_row(const(h, 1.0), E, k, h, 0)
            cw += 1
    if cw == 0:                             # no context word: word2vec.c skips the example
        for t in range(nt):
            dots[t] = 0                     # (v = 0, as embed_mean gives it, for the loss)
        return
    if cw > 1:
        n = const(h, cw)
        for j in range(D):
            h[0, j] /= n
    for t in range(nt):
        dots[t] = dot_rows(h, 0, W, targets[t])
    top, scale = const(h, MAX_EXP), const(h, EXP_TABLE_SIZE // MAX_EXP // 2)
    for t in range(nt):
        row = targets[t]
        f = dots[t]
        if not hs:                          # a noise word drawn twice reads its first update
            for s in range(t):
                if targets[s] == row:
                    f = dot_rows(h, 0, W, row)
                    break
        if f <= -top or f >= top:
            if hs:
                continue
            p = const(h, 0.0) if f <= -top else const(h, 1.0)
        else:
            p = sig[int((f + top) * scale)]
        g = (labels[t] - p) * lr
        _axpy_row(g, W, row, e, 0)
        _axpy_row(g, h, 0, W, row)
    for c in range(ids.shape[1]):
        k = ids[r, c]
        if k >= 0:
            _axpy_row(const(h, 1.0), e, 0, E, k)


@jit_ieee
def w2v_negsample(E, ids, y, noise, W, lr, sig, losses):
    """Per example r: targets y[r] (label 1) and the noise words noise[r] (label 0; one equal
    to y[r] is skipped); word2vec's update (_w2v_example) at rate lr; L_r = the head's loss
    -log sigmoid(v . W[y]) - sum_j log sigmoid(-v . W[n_j]) before the update."""
    D, K, R = E.shape[1], noise.shape[1], ids.shape[0]
    h, e = np.empty((1, D), E.dtype), np.empty((1, D), E.dtype)
    targets, labels, dots = np.empty(K + 1, np.int64), np.zeros(K + 1, E.dtype), np.empty(K + 1, E.dtype)
    z = np.empty((R, K + 1), E.dtype)
    rate = const(E, lr)
    for r in range(R):
        targets[0], labels[0] = y[r], 1
        nt = 1
        for j in range(K):
            if noise[r, j] != y[r]:
                targets[nt] = noise[r, j]
                nt += 1
        _w2v_example(E, ids, r, W, targets, labels, nt, False, rate, sig, h, e, dots)
        z[r, 0] = -dots[0]
        t = 1
        for j in range(K):                  # every drawn word counts in the loss as stated
            if noise[r, j] == y[r]:
                z[r, 1 + j] = dots[0]
            else:
                z[r, 1 + j] = dots[t]
                t += 1
    for r in range(R):
        losses[r] = _softplus_sum(z[r])


@jit_ieee
def w2v_hsoftmax(E, ids, y, tree, W, lr, sig, losses):
    """Per example r: the inner nodes on y[r]'s Huffman path with label 1 - code; word2vec's
    update (_w2v_example) at rate lr; L_r = the head's loss before the update."""
    D, L, R = E.shape[1], (tree.shape[1] - 1) // 2, ids.shape[0]
    h, e = np.empty((1, D), E.dtype), np.empty((1, D), E.dtype)
    targets, labels, dots = np.empty(L, np.int64), np.empty(L, E.dtype), np.empty(L, E.dtype)
    z = np.zeros((R, L), E.dtype)
    count = np.empty(R, np.int64)
    rate = const(E, lr)
    one = const(E, 1.0)
    for r in range(R):
        w = y[r]
        nt = count[r] = tree[w, 0]
        for j in range(nt):
            targets[j] = tree[w, 1 + j]
            labels[j] = 1 - tree[w, 1 + L + j]
        _w2v_example(E, ids, r, W, targets, labels, nt, True, rate, sig, h, e, dots)
        for j in range(nt):
            z[r, j] = dots[j] * (one - 2 * labels[j])
    for r in range(R):
        losses[r] = _softplus_sum(z[r, :count[r]])
