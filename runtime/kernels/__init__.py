"""Kernel pairs for every registry op, one op family per module, forward and backward side by
side. The registry names each op's module (`kernels=`); an elementwise op with no hand-written
pair gets one generated from its `ew` maths (runtime/codegen.py). Calling convention:

    NAME_fwd(in0, in1, ..., out, *attrs[, scratch][, u0, u1])        writes out
    NAME_bwd(in0, ..., out, gout, gin0, gin1, ..., need, *attrs[, scratch][, u0, u1])
                                                                    gin_k += ... if need & (1 << k)
    (u0, u1: for ops with `units` in the registry, the hidden units a thread runs of a loop split
    by units, docs/plan.md; 0, 0: all)
    NAME_rows(in0, ..., out, *attrs[, scratch], mark)                for ops with `rows` in the
                              registry: mark[i] = 1 for each row i of that input backward writes

Every operand is a 2-D C-contiguous view (floats of the run's dtype, or int64 ids); attributes
are float64 scalars. The interpreter (runtime/interp.py) reaches them through adapters that
runtime/codegen.py generates.
"""
import importlib

from graphspec.ops import REGISTRY


def _bind():
    kernels, rows = {}, {}
    for name, sig in REGISTRY.items():
        if sig.variadic:
            continue                    # emitted as its parts' op (concat -> place)
        mod = importlib.import_module(f"{__name__}.{sig.kernels}") if sig.kernels else None
        if mod is not None and hasattr(mod, f"{name}_fwd") and hasattr(mod, f"{name}_bwd"):
            kernels[name] = (getattr(mod, f"{name}_fwd"), getattr(mod, f"{name}_bwd"))
        elif sig.ew is not None:
            from ..codegen import array_kernels
            kernels[name] = array_kernels(name)
        if mod is not None and hasattr(mod, f"{name}_rows"):
            rows[name] = getattr(mod, f"{name}_rows")
    return kernels, rows


KERNELS, ROWS = _bind()


def missing() -> list:
    """Registry ops with no kernel pair, or with `rows` and no rows kernel (tests/test_registry.py
    asserts there are none)."""
    return [name for name, sig in REGISTRY.items()
            if not sig.variadic and (name not in KERNELS or (sig.rows and name not in ROWS))]
