"""Free running: the model's own predictions, fed back as the next input. No gradient flows
through a choice; the backward kernels do nothing."""
import math

import numpy as np

from ..jit import jit


@jit
def argmax_fwd(x, out):
    """y = argmax_j x_j"""
    R, C = x.shape
    for r in range(R):
        best = 0
        for j in range(1, C):
            if x[r, j] > x[r, best]:
                best = j
        out[r, 0] = best


@jit
def argmax_bwd(x, out, gout, gx, need):
    pass


@jit
def sample_fwd(x, out, temperature):
    """y ~ softmax(x / temperature)"""
    R, C = x.shape
    inv = 1.0 / max(temperature, 1e-6)
    for r in range(R):
        mx = x[r, 0]
        for j in range(1, C):
            mx = max(mx, x[r, j])
        tot = 0.0
        for j in range(C):
            tot += math.exp((x[r, j] - mx) * inv)
        u = np.random.random() * tot
        pick = C - 1
        acc = 0.0
        for j in range(C):
            acc += math.exp((x[r, j] - mx) * inv)
            if acc >= u:
                pick = j
                break
        out[r, 0] = pick


@jit
def sample_bwd(x, out, gout, gx, need, temperature):
    pass


@jit
def mix_fwd(a, b, out, prob):
    """Scheduled sampling: y = b (the model's guess) with probability prob, else a (the truth)."""
    for r in range(out.shape[0]):
        out[r, 0] = b[r, 0] if np.random.random() < prob else a[r, 0]


@jit
def mix_bwd(a, b, out, gout, ga, gb, need, prob):
    pass
