"""Kernel pairs for every registry op, one op family per module, forward and backward side by
side. Calling convention (the executor relies on it):

    NAME_fwd(in0, in1, ..., out, *attrs[, scratch])                  writes out
    NAME_bwd(in0, ..., out, gout, gin0, gin1, ..., need, *attrs[, scratch])
                                                                    gin_k += ... if need & (1 << k)

Every operand is a 2-D C-contiguous view (floats of the run's dtype, or int64 ids); attributes
are float64 scalars.
"""
from graphspec.ops import REGISTRY

from . import attention, decode, elementwise, embedding, linear, shape, softmax, word2vec

FAMILIES = (linear, elementwise, shape, softmax, embedding, attention, decode, word2vec)

KERNELS = {}
for _mod in FAMILIES:
    for _name in REGISTRY:
        fwd, bwd = getattr(_mod, f"{_name}_fwd", None), getattr(_mod, f"{_name}_bwd", None)
        if fwd is not None and bwd is not None:
            KERNELS[_name] = (fwd, bwd)


def missing() -> list:
    """Registry ops with no kernel pair (tests/test_registry.py asserts there are none)."""
    return [name for name in REGISTRY if name not in KERNELS]
