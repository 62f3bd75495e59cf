"""Moving features around: concat (as place), split/slice (as take), sums, and last(x)."""
from ..jit import const, jit


@jit
def place_fwd(x, out, col, width):
    """out[:, col:col+width] = x (one place per part of a concat), x's rows repeated: a static
    part (one row per sequence) joins a value on every step of an axis."""
    c0 = int(col)
    R, w = out.shape[0], x.shape[1]
    rx = x.shape[0]
    for r in range(R):
        dst = out[r, c0:c0 + w]       # row slices: the copy vectorises (3x faster than 2-D indexing)
        src = x[r % rx]
        for j in range(w):
            dst[j] = src[j]


@jit
def place_bwd(x, out, gout, gx, need, col, width):
    """dx += dy[:, col:col+width], summed over x's repeated rows."""
    if need & 1:
        c0 = int(col)
        R, w = gout.shape[0], x.shape[1]
        rx = x.shape[0]
        for r in range(R):
            src = gout[r, c0:c0 + w]
            dst = gx[r % rx]
            for j in range(w):
                dst[j] += src[j]


@jit
def take_fwd(x, out, col, width):
    """y = x[:, col:col+width] (split and slice)."""
    c0 = int(col)
    R, w = out.shape
    for r in range(R):
        src = x[r, c0:c0 + w]
        dst = out[r]
        for j in range(w):
            dst[j] = src[j]


@jit
def take_bwd(x, out, gout, gx, need, col, width):
    """dx[:, col:col+width] += dy"""
    if need & 1:
        c0 = int(col)
        R, w = out.shape
        for r in range(R):
            dst = gx[r, c0:c0 + w]
            src = gout[r]
            for j in range(w):
                dst[j] += src[j]


@jit
def sum_fwd(x, out):
    """y = sum_j x_j"""
    R, C = x.shape
    for r in range(R):
        s = const(out, 0.0)
        for j in range(C):
            s += x[r, j]
        out[r, 0] = s


@jit
def sum_bwd(x, out, gout, gx, need):
    """dx_j += dy"""
    if need & 1:
        R, C = x.shape
        for r in range(R):
            for j in range(C):
                gx[r, j] += gout[r, 0]


@jit
def mean_fwd(x, out):
    """y = (1/n) sum_j x_j"""
    R, C = x.shape
    inv = const(out, 1.0 / C)
    for r in range(R):
        s = const(out, 0.0)
        for j in range(C):
            s += x[r, j]
        out[r, 0] = s * inv


@jit
def mean_bwd(x, out, gout, gx, need):
    """dx_j += dy / n"""
    if need & 1:
        R, C = x.shape
        inv = const(out, 1.0 / C)
        for r in range(R):
            for j in range(C):
                gx[r, j] += gout[r, 0] * inv


@jit
def _last_index(m, B, b):
    T = m.shape[0] // B
    n = 0
    for t in range(T):
        if m[t * B + b, 0] > 0.5:
            n = t + 1
    return max(n - 1, 0)


@jit
def lastof_fwd(x, m, out):
    """y[b] = x[len_b - 1, b], len_b the number of real steps of sequence b (time-major rows)."""
    B, C = out.shape
    for b in range(B):
        i = _last_index(m, B, b) * B + b
        for j in range(C):
            out[b, j] = x[i, j]


@jit
def lastof_bwd(x, m, out, gout, gx, gm, need):
    """dx[len_b - 1, b] += dy[b]"""
    if need & 1:
        B, C = out.shape
        for b in range(B):
            i = _last_index(m, B, b) * B + b
            for j in range(C):
                gx[i, j] += gout[b, j]
