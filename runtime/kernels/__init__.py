"""Kernel pairs for every registry op, one op family per module, forward and backward side by
side. Calling convention (the executor relies on it):

    NAME_fwd(in0, in1, ..., out, *attrs[, scratch])                  writes out
    NAME_bwd(in0, ..., out, gout, gin0, gin1, ..., need, *attrs[, scratch])
                                                                    gin_k += ... if need & (1 << k)
    NAME_rows(in0, ..., out, *attrs[, scratch], mark)                for ops with `rows` in the
                              registry: mark[i] = 1 for each row i of that input backward writes

Every operand is a 2-D C-contiguous view (floats of the run's dtype, or int64 ids); attributes
are float64 scalars.
"""
from graphspec.ops import REGISTRY

from . import attention, decode, elementwise, embedding, linear, shape, softmax, word2vec

FAMILIES = (linear, elementwise, shape, softmax, embedding, attention, decode, word2vec)

KERNELS, ROWS = {}, {}
for _mod in FAMILIES:
    for _name in REGISTRY:
        fwd, bwd = getattr(_mod, f"{_name}_fwd", None), getattr(_mod, f"{_name}_bwd", None)
        if fwd is not None and bwd is not None:
            KERNELS[_name] = (fwd, bwd)
        if getattr(_mod, f"{_name}_rows", None) is not None:
            ROWS[_name] = getattr(_mod, f"{_name}_rows")


def missing() -> list:
    """Registry ops with no kernel pair, or with `rows` and no rows kernel (tests/test_registry.py
    asserts there are none)."""
    return [name for name, sig in REGISTRY.items() if name not in KERNELS or (sig.rows and name not in ROWS)]
