"""Every numba option in one place.

- njit: nopython mode, no silent object-mode fallbacks;
- cache: compiled code goes to disk (NUMBA_CACHE_DIR, inside the clone), so a second process
  starts in a second instead of a minute;
- error_model='numpy': no zero-division check in every division, which stops LLVM from
  vectorising elementwise loops (measured 4.2 ns against 0.76 ns per element);
- fastmath off: gradient checks in float64 need IEEE semantics. The one exception is `jit_sum`,
  for small reduction helpers only: 'reassoc' lets LLVM split a sum over vector lanes (a
  sequential float sum cannot vectorise: 64 dependent adds, ~100 ns for one 64-wide dot). It
  changes rounding at the last bit, never NaN/Inf handling.
"""
import functools

import numba
import numpy as np
from numba.extending import overload

OPTIONS = dict(cache=True, error_model="numpy", nogil=True, fastmath=False)

jit = functools.partial(numba.njit, **OPTIONS)
SUM_OPTIONS = dict(OPTIONS, fastmath={"reassoc"})
jit_sum = functools.partial(numba.njit, **SUM_OPTIONS)


def const(a, value):
    """`value` typed like a's elements (numba promotes float32 * 1.0 to float64 otherwise)."""
    return value


@overload(const, jit_options=dict(OPTIONS))
def _const(a, value):
    kind = np.float32 if getattr(a, "dtype", a) == numba.float32 else np.float64

    def impl(a, value):
        return kind(value)
    return impl
