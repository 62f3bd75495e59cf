"""Attention over the steps of another axis. Keys and values are time-major: row s*B + b is
key step s of sequence b; the query has B rows, so S = keys.rows // B."""
import math

from ..jit import const, jit


@jit
def tdot_fwd(k, q, out):
    """score[s, b] = k[s, b] . q[b]"""
    B, F = q.shape
    S = k.shape[0] // B
    for s in range(S):
        for b in range(B):
            acc = const(out, 0.0)
            for j in range(F):
                acc += k[s * B + b, j] * q[b, j]
            out[s * B + b, 0] = acc


@jit
def tdot_bwd(k, q, out, gout, gk, gq, need):
    """dk[s, b] += dscore[s, b] q[b];  dq[b] += sum_s dscore[s, b] k[s, b]"""
    B, F = q.shape
    S = k.shape[0] // B
    for s in range(S):
        for b in range(B):
            g = gout[s * B + b, 0]
            if need & 1:
                for j in range(F):
                    gk[s * B + b, j] += g * q[b, j]
            if need & 2:
                for j in range(F):
                    gq[b, j] += g * k[s * B + b, j]


@jit
def tadd_fwd(k, q, out):
    """y[s, b] = k[s, b] + q[b]  (additive attention's W_k k + W_q q)"""
    B, F = q.shape
    S = k.shape[0] // B
    for s in range(S):
        for b in range(B):
            for j in range(F):
                out[s * B + b, j] = k[s * B + b, j] + q[b, j]


@jit
def tadd_bwd(k, q, out, gout, gk, gq, need):
    """dk[s, b] += dy[s, b];  dq[b] += sum_s dy[s, b]"""
    B, F = q.shape
    S = k.shape[0] // B
    for s in range(S):
        for b in range(B):
            for j in range(F):
                g = gout[s * B + b, j]
                if need & 1:
                    gk[s * B + b, j] += g
                if need & 2:
                    gq[b, j] += g


@jit
def tsoftmax_fwd(e, m, out, batch):
    """w[s, b] = exp(e[s, b]) / sum over unmasked s' of exp(e[s', b]); 0 on padding."""
    B = int(batch)
    S = e.shape[0] // B
    for b in range(B):
        mx = -1e30
        for s in range(S):
            if m[s * B + b, 0] > 0.5:
                mx = max(mx, float(e[s * B + b, 0]))
        tot = 0.0
        for s in range(S):
            if m[s * B + b, 0] > 0.5:
                tot += math.exp(e[s * B + b, 0] - mx)
        for s in range(S):
            if m[s * B + b, 0] > 0.5 and tot > 0:
                out[s * B + b, 0] = math.exp(e[s * B + b, 0] - mx) / tot
            else:
                out[s * B + b, 0] = 0


@jit
def tsoftmax_bwd(e, m, out, gout, ge, gm, need, batch):
    """de[s] += w[s] (dw[s] - sum_s' dw[s'] w[s'])"""
    if need & 1:
        B = int(batch)
        S = e.shape[0] // B
        for b in range(B):
            dot = 0.0
            for s in range(S):
                dot += gout[s * B + b, 0] * out[s * B + b, 0]
            for s in range(S):
                i = s * B + b
                ge[i, 0] += out[i, 0] * (gout[i, 0] - dot)


@jit
def tsum_fwd(w, v, out):
    """c[b] = sum_s w[s, b] v[s, b]: the context vector."""
    B, F = out.shape
    S = v.shape[0] // B
    for b in range(B):
        for j in range(F):
            out[b, j] = 0
    for s in range(S):
        for b in range(B):
            ws = w[s * B + b, 0]
            for j in range(F):
                out[b, j] += ws * v[s * B + b, j]


@jit
def tsum_bwd(w, v, out, gout, gw, gv, need):
    """dw[s, b] += dc[b] . v[s, b];  dv[s, b] += w[s, b] dc[b]"""
    B, F = out.shape
    S = v.shape[0] // B
    for s in range(S):
        for b in range(B):
            i = s * B + b
            if need & 1:
                acc = const(out, 0.0)
                for j in range(F):
                    acc += gout[b, j] * v[i, j]
                gw[i, 0] += acc
            if need & 2:
                ws = w[i, 0]
                for j in range(F):
                    gv[i, j] += ws * gout[b, j]
