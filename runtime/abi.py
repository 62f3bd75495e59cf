"""The kernels' calling convention, shared by every generated adapter (runtime/codegen.py):
views of the flat arrays built from an equation's record (Plan.encode). Kept in one module so
that numba compiles these helpers once, not once per generated kernel."""
import numpy as np
from numba import carray

from graphspec.plan import MAX_ATTRS, RECORD_HEADER

from .jit import jit


@jit
def fv32(p, off, rows, cols):
    """A [rows, cols] float32 view at offset `off` of the array at address p."""
    return carray(p, (off + rows * cols,), np.float32)[off:].reshape((rows, cols))


@jit
def fv64(p, off, rows, cols):
    return carray(p, (off + rows * cols,), np.float64)[off:].reshape((rows, cols))


@jit
def iv(p, off, rows, cols):
    """A [rows, cols] view of token ids (int64)."""
    return carray(p, (off + rows * cols,), np.int64)[off:].reshape((rows, cols))


@jit
def record(p, nviews):
    """An equation's record: the header, then (offset, rows, cols) of each view."""
    return carray(p, (RECORD_HEADER + 3 * nviews,), np.int64)


@jit
def attributes(p):
    return carray(p, (MAX_ATTRS,), np.float64)
