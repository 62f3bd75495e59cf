"""graphspec: the spec language, its validation, and the compiler from spec to plan.

Nothing here imports numba or runtime/: validating and compiling stay light and fast.
"""
from .errors import Interrupted, SpecError, UserError  # noqa: F401
from .spec import load  # noqa: F401
