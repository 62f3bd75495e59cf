"""The op registry is the single source of truth: schema, kernels and the interpreter agree."""
import json
import os

from graphspec.ops import REGISTRY
from graphspec.schema import SCHEMA_FILE, build_schema
from runtime import executor
from runtime.kernels import KERNELS, missing


def test_every_op_has_kernels_and_a_docstring_with_its_backward():
    assert missing() == []
    for name, sig in REGISTRY.items():
        assert sig.doc, name
        fwd, bwd = KERNELS[name]
        assert fwd.py_func.__doc__ or not sig.grad, name


def test_shipped_schema_is_generated_from_the_registry():
    with open(SCHEMA_FILE) as f:
        shipped = json.load(f)
    assert shipped == json.loads(json.dumps(build_schema())), "run: python -m graphspec.schema"
    assert shipped["$defs"]["primitive"]["enum"] == list(REGISTRY)


def test_generated_interpreter_is_current():
    """The committed file, not one rewritten on import (importing never writes it)."""
    with open(executor.TAPE_FILE) as f:
        assert f.read() == executor.generate(), "run: python -m runtime.executor"


def test_a_stale_interpreter_is_refused_not_rewritten(tmp_path, monkeypatch):
    import pytest
    stale = tmp_path / "_tape.py"
    stale.write_text("# an interpreter from before an op was added\n")
    monkeypatch.setattr(executor, "TAPE_FILE", str(stale))
    with pytest.raises(ImportError, match=r"run `python -m runtime.executor` to regenerate it"):
        executor._check_generated()
    assert stale.read_text() == "# an interpreter from before an op was added\n"
