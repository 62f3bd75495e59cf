"""graphspec against torch autograd in float64 on copied weights, where torch has the cell:
nn.RNN / nn.LSTM / nn.GRU (bidirectional and ragged batches through packed sequences, whose
backward direction starts at each sequence's own last step), nn.LSTMCell decoders; the
reset-before GRU, attention, the rectifiers and the word2vec heads as their equations in torch.
Skipped where torch is not installed (the bench extra)."""
import numpy as np
import pytest

from .cases import BY_NAME
from .harness import draw_examples, err, pad, random_params, run_graphspec, tables

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn
pack = torch.nn.utils.rnn.pack_padded_sequence
unpack = torch.nn.utils.rnn.pad_packed_sequence
f64 = torch.float64
BOS = 2


class Net:
    """Torch leaves for graphspec's params; an nn module gets copies, and its grads map back."""

    def __init__(self, params):
        self.params = params
        self.leaves = {}
        self.owner = {}             # graphspec name -> the module param holding it

    def __getitem__(self, k):
        if k not in self.leaves:
            self.leaves[k] = torch.tensor(self.params[k], dtype=f64, requires_grad=True)
        return self.leaves[k]

    def module(self, mod, names: dict):
        """names: torch param name -> graphspec param name (None: zero, e.g. bias_hh)."""
        mod = mod.to(f64)
        with torch.no_grad():
            for tname, p in mod.named_parameters():
                k = names[tname]
                p.copy_(torch.tensor(self.params[k]).reshape(p.shape) if k else torch.zeros_like(p))
                if k:
                    self.owner[k] = p
        return mod

    def grads(self) -> dict:
        out = {}
        for k, v in list(self.leaves.items()) + list(self.owner.items()):
            out[k] = np.zeros(self.params[k].shape) if v.grad is None else v.grad.numpy().reshape(self.params[k].shape)
        return out


def rnn_names(prefixes: dict, gs: dict) -> dict:
    """{torch suffix: graphspec prefix} x {torch weight kind: graphspec name} -> the module map."""
    return {f"{kind}{suf}": (pre + name if name else None) for suf, pre in prefixes.items()
            for kind, name in gs.items()}


RNN = {"weight_ih_l": "U", "weight_hh_l": "W", "bias_ih_l": "b", "bias_hh_l": None}
LSTM = {"weight_ih_l": "W", "weight_hh_l": "R", "bias_ih_l": "b", "bias_hh_l": None}
GRU_AFTER = {"weight_ih_l": "W", "weight_hh_l": "R", "bias_ih_l": "b", "bias_hh_l": "b_R"}


def lengths(mask):
    return torch.tensor(mask.sum(0).astype(np.int64))


def ce_steps(o, y, mask):
    """Per-sequence sums over the real steps, averaged over the batch."""
    T, B, V = o.shape
    nll = F.cross_entropy(o.reshape(T * B, V), torch.tensor(y).reshape(-1), reduction="none").reshape(T, B)
    return (nll * torch.tensor(mask)).sum() / B


def mse(p, y):
    return 0.5 * ((p - torch.tensor(y)) ** 2).sum() / p.shape[0]


def packed(mod, x, mask):
    out, last = mod(pack(x, lengths(mask), enforce_sorted=False))
    return unpack(out, total_length=x.shape[0])[0], last


# ---------------------------------------------------------------- the models
def elman(net, b, d, mode):
    rnn = net.module(nn.RNN(d["D"], d["H"]), rnn_names({"0": ""}, RNN))
    out, _ = rnn(net["E"][torch.tensor(b["x"])])
    return ce_steps(out @ net["V_o"].T + net["c"], b["y"], b["x_mask"])


def seq_to_one(net, b, d, mode):
    rnn = net.module(nn.RNN(d["D"], d["H"]), rnn_names({"0": "h."}, RNN))
    _, h = packed(rnn, net["E"][torch.tensor(b["x"])], b["x_mask"])
    o = h[0] @ net["V_o"].T + net["c"]
    return F.cross_entropy(o, torch.tensor(b["y"]), reduction="sum") / o.shape[0]


def birnn(net, b, d, mode):
    rnn = net.module(nn.RNN(d["D"], d["H"], bidirectional=True),
                     rnn_names({"0": "h.fwd.", "0_reverse": "h.bwd."}, RNN))
    out, _ = packed(rnn, net["E"][torch.tensor(b["x"])], b["x_mask"])
    return ce_steps(out @ net["o.V_o"].T + net["o.c"], b["y"], b["x_mask"])


def deep_rnn_a(net, b, d, mode):
    rnn = net.module(nn.RNN(d["D"], d["H"], num_layers=2), rnn_names({"0": "h.l1.", "1": "h.l2."}, RNN))
    out, _ = rnn(net["E"][torch.tensor(b["x"])])
    return ce_steps(out @ net["o.V_o"].T + net["o.c"], b["y"], b["x_mask"])


def lstm(net, b, d, mode):
    rnn = net.module(nn.LSTM(2, d["H"]), rnn_names({"0": "h."}, LSTM))
    _, (h, _) = packed(rnn, torch.tensor(b["x"]), b["x_mask"])
    return mse(h[0] @ net["V_o"].T + net["c"], b["y"])


def gru_after(net, b, d, mode):
    rnn = net.module(nn.GRU(d["D"], d["H"]), rnn_names({"0": "h."}, GRU_AFTER))
    out, _ = rnn(net["E"][torch.tensor(b["x"])])
    return ce_steps(out @ net["o.V_o"].T + net["o.c"], b["y"], b["x_mask"])


def gru_before_cell(net, pre):
    """Cho et al.'s GRU in torch ops (torch has only the reset-after form)."""
    def cell(x, h):
        H = h.shape[1]
        a = x @ net[pre + "W"].T + net[pre + "b"]
        c = h @ net[pre + "R"].T
        r = torch.sigmoid(a[:, :H] + c[:, :H])
        u = torch.sigmoid(a[:, H:2 * H] + c[:, H:])
        n = torch.tanh(a[:, 2 * H:] + (r * h) @ net[pre + "R_n"].T)
        return (1 - u) * n + u * h
    return cell


def gru(net, b, d, mode):
    cell = gru_before_cell(net, "h.")
    x = net["E"][torch.tensor(b["x"])]
    h, out = torch.zeros(x.shape[1], d["H"], dtype=f64), []
    for t in range(x.shape[0]):
        h = cell(x[t], h)
        out.append(h)
    return ce_steps(torch.stack(out) @ net["o.V_o"].T + net["o.c"], b["y"], b["x_mask"])


def bilstm(combine):
    def model(net, b, d, mode):
        rnn = net.module(nn.LSTM(d["D"], d["H"], bidirectional=True),
                         rnn_names({"0": "h.fwd.", "0_reverse": "h.bwd."}, LSTM))
        out, _ = packed(rnn, net["E"][torch.tensor(b["x"])], b["x_mask"])
        if combine == "sum":
            out = out[..., :d["H"]] + out[..., d["H"]:]
        return ce_steps(out @ net["o.V_o"].T + net["o.c"], b["y"], b["x_mask"])
    return model


def decode(b, mode, step, state, mask="y_mask"):
    """prev(0) = <bos>; then y(t-1) (train, eval) or argmax o(t-1) (free)."""
    y = torch.tensor(b["y"])
    prev, logits = torch.full((y.shape[1],), BOS), []
    for t in range(y.shape[0]):
        o, state = step(t, prev, state)
        logits.append(o)
        prev = o.argmax(1) if mode == "free" else y[t]
    return ce_steps(torch.stack(logits), b["y"], b[mask])


def output_recurrence(net, b, d, mode):
    x = net["E"][torch.tensor(b["x"])]

    def step(t, prev, state):
        h = torch.tanh(net["b"] + net["E_y"][prev] @ net["W"].T + x[t] @ net["U"].T)
        return net["c"] + h @ net["V_o"].T, state
    return decode(b, mode, step, None, mask="x_mask")


def lstm_cell(net, pre, din, H):
    return net.module(nn.LSTMCell(din, H), {"weight_ih": pre + "W", "weight_hh": pre + "R",
                                            "bias_ih": pre + "b", "bias_hh": None})


def seq2seq(net, b, d, mode):
    enc = net.module(nn.LSTM(d["D"], d["H"]), rnn_names({"0": "enc."}, LSTM))
    _, (h, s) = packed(enc, net["E_x"][torch.tensor(b["x"])], b["x_mask"])
    cell = lstm_cell(net, "dec.", d["D"], d["H"])

    def step(t, prev, state):
        state = cell(net["E_y"][prev], state)
        return state[0] @ net["o.V_o"].T + net["o.c"], state
    return decode(b, mode, step, (h[0], s[0]))


def reverse_each(x, n):
    """Each sequence reversed within its own length (the padding stays at the end)."""
    T = x.shape[0]
    idx = torch.stack([torch.cat([torch.arange(k - 1, -1, -1), torch.arange(k, T)]) for k in n.tolist()], 1)
    return torch.gather(x, 0, idx[..., None].expand_as(x))


def attention(score):
    def model(net, b, d, mode):
        x, m = net["E_x"][torch.tensor(b["x"])], torch.tensor(b["x_mask"]) > 0
        n = lengths(b["x_mask"])
        runs = []
        for pre, flip in (("enc.fwd.", False), ("enc.bwd.", True)):
            cell, xs = gru_before_cell(net, pre), reverse_each(x, n) if flip else x
            h, hs = torch.zeros(x.shape[1], d["H"], dtype=f64), []
            for t in range(x.shape[0]):
                h = cell(xs[t], h)
                hs.append(h)
            hs = torch.stack(hs)
            runs.append(reverse_each(hs, n) if flip else hs)
        enc = torch.cat(runs, -1)                                   # [S, B, 2H]
        last = enc[n - 1, torch.arange(x.shape[1])]
        cell = lstm_cell(net, "dec.", d["D"], d["H2"])

        def step(t, prev, state):
            state = cell(net["E_y"][prev], state)
            q = state[0]
            if score == "additive":
                e = (torch.tanh(enc @ net["ctx.W_k"].T + q @ net["ctx.W_q"].T) @ net["ctx.v"].T)[..., 0]
            elif score == "dot":
                e = (enc * q).sum(-1)
            else:
                e = (enc * (q @ net["ctx.W_a"].T)).sum(-1)
            w = torch.softmax(e.masked_fill(~m, float("-inf")), 0)
            ctx = (w[..., None] * enc).sum(0)
            o = torch.tanh(torch.cat([q, ctx], 1) @ net["W_c"].T) @ net["o.V_o"].T + net["o.c"]
            return o, state
        return decode(b, mode, step, (last, torch.zeros(x.shape[1], d["H2"], dtype=f64)))
    return model


def feedforward(net, b, d, mode):
    x = torch.tensor(b["x"])
    h1 = F.relu(x @ net["W1"].T + net["b1"])
    h2 = F.leaky_relu(h1 @ net["W2"].T + net["b2"], 0.01)
    h3 = F.prelu(h2 @ net["W3"].T + net["b3"], net["a3"].reshape(-1))
    z4 = h3 @ net["W4"].T + net["b4"]
    h4 = torch.tanh(z4) + torch.abs(torch.sigmoid(z4) - 0.5)
    o = h4 @ net["W5"].T + net["b5"]
    return F.cross_entropy(o, torch.tensor(b["y"]), reduction="sum") / o.shape[0]


def word2vec(arch, head):
    def model(net, b, d, mode):
        E, W = net["E"], net["loss.W"]
        if arch == "skipgram":
            v, y = E[torch.tensor(b["context"])], b["center"]
        else:
            ids = torch.tensor(b["context"])
            keep = (ids >= 0).to(f64)
            v = (E[ids.clamp(min=0)] * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            y = b["center"]
        total = 0
        for r in range(len(y)):
            if head == "hs":
                tree = b["tree"]
                L, k = (tree.shape[1] - 1) // 2, int(tree[y[r], 0])
                nodes, codes = torch.tensor(tree[y[r], 1:1 + k]), torch.tensor(tree[y[r], 1 + L:1 + L + k])
                total = total - F.logsigmoid((1 - 2 * codes) * (W[nodes] @ v[r])).sum()
            else:
                noise = torch.tensor(b["noise"][r])
                total = total - F.logsigmoid(W[int(y[r])] @ v[r]) - F.logsigmoid(-(W[noise] @ v[r])).sum()
        return total / len(y)
    return model


TORCH = {"elman": elman, "seq_to_one": seq_to_one, "birnn": birnn, "deep_rnn_a": deep_rnn_a, "lstm": lstm,
         "gru": gru, "gru_after": gru_after, "bilstm_concat": bilstm("concat"), "bilstm_sum": bilstm("sum"),
         "output_recurrence": output_recurrence, "seq2seq": seq2seq,
         "seq2seq_attention": attention("general"), "seq2seq_attention_dot": attention("dot"),
         "seq2seq_attention_additive": attention("additive"), "feedforward": feedforward,
         **{f"w2v_{a}_{h}": word2vec(a, h) for a in ("skipgram", "cbow") for h in ("hs", "ns")}}
RUNS = [(name, mode) for name in TORCH for mode in BY_NAME[name].modes]


def compare_torch(name, mode, seed=0) -> dict:
    case = BY_NAME[name]
    rng = np.random.default_rng(seed)
    examples = draw_examples(case, rng)
    batch = pad(case, examples, rng)
    params = random_params(case, rng)
    loss, grads, seen = run_graphspec(case, params, batch, np.float64, True, mode)
    net = Net(params)
    tl = TORCH[name](net, dict(batch, **tables(case), **seen), case.dims, mode)
    tl.backward()
    tg = net.grads()
    assert set(tg) == set(grads), f"torch reads params {sorted(tg)}, graphspec learns {sorted(grads)}"
    out = {"loss": err(loss, tl.item())}
    out.update({k: err(grads[k], tg[k]) for k in sorted(grads)})
    return out


@pytest.mark.parametrize("name,mode", RUNS, ids=[f"{n}-{m}" for n, m in RUNS])
def test_loss_and_gradients_match_torch(name, mode):
    torch.set_num_threads(1)
    errors = compare_torch(name, mode)
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= 1e-9}
    assert not bad, f"{name} ({mode}): relative errors against torch above 1e-9: {bad}"
