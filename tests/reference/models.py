"""Whole-model references, written from the equations (CONCEPTS.md, docs/spec.md, docs/api.md)
over the autodiff in autograd.py: one example at a time, a plain Python loop over its real steps.

Nothing here imports graphspec or runtime. Each model is `loss(P, ex, mode)`: P maps param names
(graphspec's, namespaced: `enc.fwd.W`) to Vars in the layouts below, `ex` is one example with its
sequences cut to their real length (no padding, no masks), and the result is that example's loss
summed over its steps. The batch loss is the mean over examples of these sums (docs/plan.md), so
padding is referenced by its meaning: a padded batch must give what each sequence gives alone.

Modes: 'train' and 'eval' feed the decoder the previous target (teacher forcing; no dropout in
these models, so both are equal), 'free' feeds back the argmax of its own previous logits. Both
start from <bos> = 2 at t=0."""
from __future__ import annotations

import numpy as np

from .autograd import Var, concat, exp, log, log_softmax, sigmoid, stack, tanh, vsum, where

BOS = 2


# ---------------------------------------------------------------- param layouts (docs/api.md)
def rnn_params(pre, din, H):
    return {pre + "U": (H, din), pre + "W": (H, H), pre + "b": (H,)}


def lstm_params(pre, din, H):
    """Gates stacked i, f, g, o (torch.nn.LSTM's order); one bias."""
    return {pre + "W": (4 * H, din), pre + "R": (4 * H, H), pre + "b": (4 * H,)}


def gru_params(pre, din, H):
    """Reset before the recurrent matmul: W and b stack r, u, n; R stacks r, u; R_n alone."""
    return {pre + "W": (3 * H, din), pre + "b": (3 * H,), pre + "R": (2 * H, H), pre + "R_n": (H, H)}


def gru_after_params(pre, din, H):
    """torch.nn.GRU's layout: W, R, b, b_R all stack r, u, n."""
    return {pre + "W": (3 * H, din), pre + "b": (3 * H,), pre + "R": (3 * H, H), pre + "b_R": (3 * H,)}


def out_params(pre, din, V):
    return {pre + "V_o": (V, din), pre + "c": (V,)}


# ---------------------------------------------------------------- cells: (x, state) -> state
def rnn_cell(P, pre):
    """h(t) = tanh(b + W h(t-1) + U x(t))"""
    return lambda x, h: tanh(P[pre + "b"] + P[pre + "W"] @ h + P[pre + "U"] @ x)


def lstm_cell(P, pre):
    """z = b + W x(t) + R h(t-1) = [i, f, g, o]; s(t) = sigmoid(f) s(t-1) + sigmoid(i) tanh(g);
    h(t) = tanh(s(t)) sigmoid(o). The state is the pair (h, s)."""
    def cell(x, state):
        h, s = state
        H = h.shape[0]
        z = P[pre + "b"] + P[pre + "W"] @ x + P[pre + "R"] @ h
        i, f, g, o = (z[k * H:(k + 1) * H] for k in range(4))
        s = sigmoid(f) * s + sigmoid(i) * tanh(g)
        return tanh(s) * sigmoid(o), s
    return cell


def gru_cell(P, pre):
    """Cho et al.: r = sigmoid(W_r x + R_r h + b_r), u = sigmoid(W_u x + R_u h + b_u),
    n = tanh(W_n x + b_n + R_n (r * h)), h(t) = (1 - u) n + u h(t-1)."""
    def cell(x, h):
        H = h.shape[0]
        a = P[pre + "b"] + P[pre + "W"] @ x
        c = P[pre + "R"] @ h
        r = sigmoid(a[:H] + c[:H])
        u = sigmoid(a[H:2 * H] + c[H:])
        n = tanh(a[2 * H:] + P[pre + "R_n"] @ (r * h))
        return (1 - u) * n + u * h
    return cell


def gru_after_cell(P, pre):
    """torch.nn.GRU: n = tanh(W_n x + b_n + r * (R_n h + b_Rn)); r, u as above with b_R added."""
    def cell(x, h):
        H = h.shape[0]
        a = P[pre + "b"] + P[pre + "W"] @ x
        c = P[pre + "b_R"] + P[pre + "R"] @ h
        r = sigmoid(a[:H] + c[:H])
        u = sigmoid(a[H:2 * H] + c[H:2 * H])
        n = tanh(a[2 * H:] + r * c[2 * H:])
        return (1 - u) * n + u * h
    return cell


def unroll(cell, xs, state, reverse=False):
    """The states after each step, in time order; a reversed pass starts at the last real step."""
    out = []
    for x in (reversed(xs) if reverse else xs):
        state = cell(x, state)
        out.append(state)
    return out[::-1] if reverse else out


def zeros(n):
    return Var(np.zeros(n))


# ---------------------------------------------------------------- losses
def nll(o, y):
    """-log softmax(o)[y]"""
    return -log_softmax(o)[int(y)]


def half_sq(p, y):
    """0.5 ||p - y||^2"""
    d = p - y
    return 0.5 * vsum(d * d)


def neg_log_sigmoid(z):
    """-log sigmoid(z) = log(1 + exp(-z))"""
    return -log(sigmoid(z))


# ---------------------------------------------------------------- the models
def elman(P, ex, mode):
    """a(t) = b + W h(t-1) + U x(t); h(t) = tanh(a(t)); o(t) = c + V h(t); L = sum_t -log p(y(t))"""
    h = zeros(P["W"].shape[0])
    loss = 0.0
    for x, y in zip(ex["x"], ex["y"]):
        h = tanh(P["b"] + P["W"] @ h + P["U"] @ P["E"][x])
        loss = loss + nll(P["c"] + P["V_o"] @ h, y)
    return loss


def output_recurrence(P, ex, mode):
    """h(t) = tanh(b + W E_y[prev(t)] + U E[x(t)]); o(t) = c + V h(t); prev(0) = <bos>,
    prev(t) = y(t-1) (teacher forcing) or argmax o(t-1) (free running)."""
    loss, prev = 0.0, BOS
    for x, y in zip(ex["x"], ex["y"]):
        h = tanh(P["b"] + P["W"] @ P["E_y"][prev] + P["U"] @ P["E"][x])
        o = P["c"] + P["V_o"] @ h
        loss = loss + nll(o, y)
        prev = int(np.argmax(o.value)) if mode == "free" else y
    return loss


def seq_to_one(P, ex, mode):
    """h(t) = tanh(b + W h(t-1) + U x(t)); o = c + V h(tau); L = -log p(y | x(1..tau))"""
    hs = unroll(rnn_cell(P, "h."), [P["E"][x] for x in ex["x"]], zeros(P["h.W"].shape[0]))
    return nll(P["c"] + P["V_o"] @ hs[-1], ex["y"])


def bidirectional(cell_f, cell_b, xs, state0, combine):
    f = unroll(cell_f, xs, state0)
    b = unroll(cell_b, xs, state0, reverse=True)
    if isinstance(state0, tuple):                          # LSTM: the output is h of (h, s)
        f, b = [s[0] for s in f], [s[0] for s in b]
    return [concat([p, q]) if combine == "concat" else p + q for p, q in zip(f, b)]


def tagger(cell, combine):
    """Bidirectional tagger: o(t) = c + V [f(t); g(t)] (or f(t) + g(t)), f forward and g backward
    in time over the sequence's real steps only."""
    def model(P, ex, mode):
        H = P["h.fwd.W"].shape[1] if cell is rnn_cell else P["h.fwd.R"].shape[1]
        state0 = (zeros(H), zeros(H)) if cell is lstm_cell else zeros(H)
        hs = bidirectional(cell(P, "h.fwd."), cell(P, "h.bwd."), [P["E"][x] for x in ex["x"]], state0, combine)
        return sum((nll(P["o.c"] + P["o.V_o"] @ h, y) for h, y in zip(hs, ex["y"])), 0.0)
    return model


def deep_rnn_a(P, ex, mode):
    """Stacked: h1(t) = tanh(b1 + W1 h1(t-1) + U1 x(t)); h2(t) = tanh(b2 + W2 h2(t-1) + U2 h1(t))"""
    H = P["h.l1.W"].shape[0]
    h1 = unroll(rnn_cell(P, "h.l1."), [P["E"][x] for x in ex["x"]], zeros(H))
    h2 = unroll(rnn_cell(P, "h.l2."), h1, zeros(H))
    return sum((nll(P["o.c"] + P["o.V_o"] @ h, y) for h, y in zip(h2, ex["y"])), 0.0)


def relu(z):
    return where(z.value > 0, z, 0.0)


def deep_rnn_bc(skip):
    """u = relu(b_u + U x); m = tanh(b_m + W_m h(t-1) + U_h u); h = tanh(b + W m [+ S h(t-1)]);
    z = relu(b_z + Z h); o = c + V z (C: o = c + V (z + h))."""
    def model(P, ex, mode):
        h = zeros(P["h.W"].shape[0])
        loss = 0.0
        for x, y in zip(ex["x"], ex["y"]):
            u = relu(P["b_u"] + P["U"] @ P["E"][x])
            m = tanh(P["h.b_m"] + P["h.W_m"] @ h + P["h.U"] @ u)
            h = tanh(P["h.b"] + P["h.W"] @ m + (P["h.S"] @ h if skip else 0.0))
            z = relu(P["b_z"] + P["Z"] @ h)
            loss = loss + nll(P["o.c"] + P["o.V_o"] @ (z + h if skip else z), y)
        return loss
    return model


def skip_connections(P, ex, mode):
    """h(t) = tanh(b + W h(t-1) + W_s h(t-4) + U x(t)), h before t=0 zero; p = c + V h(tau); mse"""
    H = P["W"].shape[0]
    hs = []
    for t, x in enumerate(ex["x"]):
        back = lambda k: hs[t - k] if t >= k else zeros(H)  # noqa: E731
        hs.append(tanh(P["b"] + P["W"] @ back(1) + P["W_s"] @ back(4) + P["U"] @ x))
    return half_sq(P["c"] + P["V_o"] @ hs[-1], ex["y"])


def leaky_units(alpha):
    """v(t) = tanh(b + W mu(t-1) + U x(t)); mu(t) = alpha mu(t-1) + (1 - alpha) v(t);
    p = c + V mu(tau); mse. alpha = sigmoid(s) per unit, or a number."""
    def model(P, ex, mode):
        a = sigmoid(P["s"]) if alpha is None else alpha
        mu = zeros(P["mu.W"].shape[0])
        for x in ex["x"]:
            v = tanh(P["mu.b"] + P["mu.W"] @ mu + P["mu.U"] @ x)
            mu = a * mu + (1 - a) * v
        return half_sq(P["c"] + P["V_o"] @ mu, ex["y"])
    return model


def lstm(P, ex, mode):
    """The LSTM over x(1..tau) from zero (h, s); p = c + V h(tau); mse"""
    H = P["h.R"].shape[1]
    states = unroll(lstm_cell(P, "h."), list(ex["x"]), (zeros(H), zeros(H)))
    return half_sq(P["c"] + P["V_o"] @ states[-1][0], ex["y"])


def gru_lm(cell):
    def model(P, ex, mode):
        hs = unroll(cell(P, "h."), [P["E"][x] for x in ex["x"]], zeros(P["h.W"].shape[0] // 3))
        return sum((nll(P["o.c"] + P["o.V_o"] @ h, y) for h, y in zip(hs, ex["y"])), 0.0)
    return model


def decode(P, ex, mode, state, step):
    """The decoder loop shared by the encoder-decoders: prev(0) = <bos>; then the previous
    target (train, eval) or the argmax of the previous logits (free). step(prev, state) ->
    (logits, state). Sums -log p(y(t)) over the target's real steps."""
    loss, prev = 0.0, BOS
    for y in ex["y"]:
        o, state = step(prev, state)
        loss = loss + nll(o, y)
        prev = int(np.argmax(o.value)) if mode == "free" else y
    return loss


def seq2seq(P, ex, mode):
    """Encoder LSTM over x(1..n_x); the decoder LSTM starts from its final (h, s) (the source's
    own last real step) and reads E_y[prev]; o(t) = c + V h_d(t)."""
    H = P["enc.R"].shape[1]
    enc = unroll(lstm_cell(P, "enc."), [P["E_x"][x] for x in ex["x"]], (zeros(H), zeros(H)))
    cell = lstm_cell(P, "dec.")

    def step(prev, state):
        state = cell(P["E_y"][prev], state)
        return P["o.c"] + P["o.V_o"] @ state[0], state
    return decode(P, ex, mode, enc[-1], step)


def attend(P, score, keys, q):
    """Scores over the source's real steps only; w = softmax_s; c = sum_s w(s) k(s).
    additive: v . tanh(W_k k + W_q q); dot: k . q; general: k . (W_a q)."""
    if score == "additive":
        wq = P["ctx.W_q"] @ q
        e = [(P["ctx.v"] @ tanh(P["ctx.W_k"] @ k + wq))[0] for k in keys]
    elif score == "dot":
        e = [vsum(k * q) for k in keys]
    else:
        wq = P["ctx.W_a"] @ q
        e = [vsum(k * wq) for k in keys]
    w = exp(log_softmax(stack(e)))
    return sum((w[s] * k for s, k in enumerate(keys)), 0.0), w


def seq2seq_attention(score):
    """Encoder: a bidirectional GRU (reset before), e(s) = [f(s); g(s)]. Decoder: LSTM over
    E_y[prev], h_d(0) = e(n_x), s_d(0) = 0; context c(t) from attention over e(1..n_x) with
    query h_d(t); o(t) = c_o + V tanh(W_c [h_d(t); c(t)])."""
    def model(P, ex, mode):
        H = P["enc.fwd.R_n"].shape[0]
        enc = bidirectional(gru_cell(P, "enc.fwd."), gru_cell(P, "enc.bwd."),
                            [P["E_x"][x] for x in ex["x"]], zeros(H), "concat")
        cell = lstm_cell(P, "dec.")

        def step(prev, state):
            state = cell(P["E_y"][prev], state)
            c, _ = attend(P, score, enc, state[0])
            return P["o.c"] + P["o.V_o"] @ tanh(P["W_c"] @ concat([state[0], c])), state
        return decode(P, ex, mode, (enc[-1], zeros(P["dec.R"].shape[1])), step)
    return model


def feedforward(P, ex, mode):
    """The rectifier family g(z, a) = max(0, z) + a min(0, z), each written out by its case:
    h1 = relu, h2 = leaky (a = 0.01), h3 = PReLU (a3 learned), h4 = tanh + |sigmoid - 1/2|."""
    z1 = P["W1"] @ ex["x"] + P["b1"]
    h1 = where(z1.value > 0, z1, 0.0)
    z2 = P["W2"] @ h1 + P["b2"]
    h2 = where(z2.value > 0, z2, 0.01 * z2)
    z3 = P["W3"] @ h2 + P["b3"]
    h3 = where(z3.value > 0, z3, P["a3"] * z3)
    z4 = P["W4"] @ h3 + P["b4"]
    q = sigmoid(z4) - 0.5
    h4 = tanh(z4) + where(q.value > 0, q, -q)
    return nll(P["W5"] @ h4 + P["b5"], ex["y"])


def huffman_path(tree, w):
    """Word w's inner nodes and codes, root first, from the tree table the model is given
    (row w = [path length n, nodes..., codes...]; test_huffman_table checks it is a Huffman code)."""
    L = (tree.shape[1] - 1) // 2
    n = int(tree[w, 0])
    return tree[w, 1:1 + n], tree[w, 1 + L:1 + L + n]


def word2vec(arch, head):
    """v = E[context word] (skip-gram, word2vec.c's direction) or the mean of E over the context
    ids >= 0 (CBOW); the target is the centre.
    hs: -sum_j log sigmoid((1 - 2 d_j) v . W[n_j]) along the target's Huffman path (n_j, d_j);
    ns: -log sigmoid(v . W[y]) - sum_j log sigmoid(-v . W[n_j]), n_j the noise words drawn."""
    def model(P, ex, mode):
        if arch == "skipgram":
            v, y = P["E"][int(ex["context"])], int(ex["center"])
        else:
            ids = [int(i) for i in ex["context"] if i >= 0]
            v, y = sum((P["E"][i] for i in ids), 0.0) * (1.0 / len(ids)), int(ex["center"])
        W = P["loss.W"]
        if head == "hs":
            nodes, codes = huffman_path(ex["tree"], y)
            return sum((neg_log_sigmoid((1 - 2 * int(d)) * vsum(v * W[int(n)])) for n, d in zip(nodes, codes)), 0.0)
        loss = neg_log_sigmoid(vsum(v * W[y]))
        return sum((neg_log_sigmoid(-vsum(v * W[int(n)])) for n in ex["noise"]), loss)
    return model
