"""The op registry is the single source of truth: schema, kernels and the interpreter agree."""
import json
import os

from graphspec.ops import REGISTRY
from graphspec.schema import SCHEMA_FILE, build_schema
from runtime.kernels import KERNELS, missing


def test_every_op_has_kernels_and_a_docstring_with_its_backward():
    assert missing() == []
    for name, sig in REGISTRY.items():
        assert sig.doc, name
        if sig.variadic:
            continue
        fwd, bwd = KERNELS[name]
        assert fwd.py_func.__doc__ or not sig.grad, name


def test_shipped_schema_is_generated_from_the_registry():
    with open(SCHEMA_FILE) as f:
        shipped = json.load(f)
    assert shipped == json.loads(json.dumps(build_schema())), "run: python -m graphspec.schema"
    assert shipped["$defs"]["primitive"]["enum"] == list(REGISTRY)


def test_every_op_names_the_module_of_its_kernels():
    """`kernels=` in the registry is where a hand-written pair lives; an op without one has
    elementwise maths to generate it from (or is lowered to other ops, as concat)."""
    import importlib
    for name, sig in REGISTRY.items():
        if sig.variadic:
            continue
        if sig.kernels:
            mod = importlib.import_module(f"runtime.kernels.{sig.kernels}")
            assert hasattr(mod, f"{name}_fwd") or sig.ew is not None, name
        else:
            assert sig.ew is not None, name
