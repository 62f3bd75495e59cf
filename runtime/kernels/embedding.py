"""Lookups: y = E[x] (one-hot x times E) and the mean of several rows (CBOW's context).
The gradient is sparse: only the looked-up rows of E receive anything, and NAME_rows marks them
(the runtime then zeroes and updates only those rows)."""
from ..jit import const, jit


@jit
def embed_fwd(table, ids, out):
    """y_r = E[x_r] (an id outside the table gives zeros)."""
    R, D = out.shape
    V = table.shape[0]
    for r in range(R):
        k = ids[r, 0]
        if 0 <= k < V:
            for j in range(D):
                out[r, j] = table[k, j]
        else:
            for j in range(D):
                out[r, j] = 0


@jit
def embed_bwd(table, ids, out, gout, gtable, gids, need):
    """dE[x_r] += dy_r"""
    if need & 1:
        R, D = out.shape
        V = table.shape[0]
        for r in range(R):
            k = ids[r, 0]
            if 0 <= k < V:
                for j in range(D):
                    gtable[k, j] += gout[r, j]


@jit
def embed_affine_fwd(table, ids, b, out):
    """y_r = T[x_r], or b where x_r is outside the table."""
    embed_fwd(table, ids, out)
    V = table.shape[0]
    for r in range(out.shape[0]):
        if not 0 <= ids[r, 0] < V:
            out[r, :] = b[0, :]


@jit
def embed_affine_bwd(table, ids, b, out, gout, gtable, gids, gb, need):
    """dT[x_r] += dy_r where x_r is in the table, else db += dy_r"""
    embed_bwd(table, ids, out, gout, gtable, gids, need & 1)
    if need & 4:
        V = table.shape[0]
        for r in range(out.shape[0]):
            if not 0 <= ids[r, 0] < V:
                gb[0, :] += gout[r, :]


@jit
def _count(ids, r, V):
    n = 0
    for c in range(ids.shape[1]):
        if 0 <= ids[r, c] < V:
            n += 1
    return n


@jit
def embed_mean_fwd(table, ids, out, width):
    """y_r = mean of E[x_rc] over the ids c of row r that are >= 0 (negative = no word)."""
    R, D = out.shape
    V = table.shape[0]
    for r in range(R):
        for j in range(D):
            out[r, j] = 0
        n = _count(ids, r, V)
        if n == 0:
            continue
        inv = const(out, 1.0 / n)
        for c in range(ids.shape[1]):
            k = ids[r, c]
            if 0 <= k < V:
                for j in range(D):
                    out[r, j] += table[k, j] * inv


@jit
def embed_mean_bwd(table, ids, out, gout, gtable, gids, need, width):
    """dE[x_rc] += dy_r / n_r"""
    if need & 1:
        R, D = out.shape
        V = table.shape[0]
        for r in range(R):
            n = _count(ids, r, V)
            if n == 0:
                continue
            inv = const(out, 1.0 / n)
            for c in range(ids.shape[1]):
                k = ids[r, c]
                if 0 <= k < V:
                    for j in range(D):
                        gtable[k, j] += gout[r, j] * inv


@jit
def embed_rows(table, ids, out, mark):
    """mark[x_r] = 1: the rows of E that backward writes."""
    V = table.shape[0]
    for r in range(ids.shape[0]):
        k = ids[r, 0]
        if 0 <= k < V:
            mark[k] = 1


@jit
def embed_mean_rows(table, ids, out, width, mark):
    """mark[x_rc] = 1 for every id >= 0 of every row."""
    V = table.shape[0]
    for r in range(ids.shape[0]):
        for c in range(ids.shape[1]):
            k = ids[r, c]
            if 0 <= k < V:
                mark[k] = 1
