"""Whole-model gradient checks: every spec in specs/, float64, tiny dims, two lengths."""
import glob
import os

import pytest

from runtime.gradcheck import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.basename(s) for s in SPECS])
def test_spec_gradients_match_finite_differences(spec):
    errors = check(spec)
    assert errors, "no learnable params checked"
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-6, f"{worst}: relative error {errors[worst]:.2e}"


def test_gradcheck_cli_reports_per_param_and_exit_code(cli):
    r = cli("gradcheck", "specs/elman.yaml")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("specs/elman.yaml: OK  max relative error ")
    assert sorted(l.split()[0] for l in lines[1:]) == ["E", "U", "V_o", "W", "b", "c"]
    r = cli("gradcheck", "specs/elman.yaml", "--tol", "1e-30")
    assert r.returncode == 1 and "FAIL" in r.stdout


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.basename(s) for s in SPECS])
def test_forward_reads_nothing_left_from_an_earlier_batch(spec):
    """set_batch zeroes only the slots that no forward writes (initial states): a value region
    full of NaN from before must give the same loss and gradients as a fresh one."""
    import numpy as np
    import graphspec
    from runtime.gradcheck import random_batch, random_tables, tiny_bind
    from runtime.model import Model
    bind = tiny_bind(graphspec.load(spec))
    rng = np.random.default_rng(5)
    tables = random_tables(graphspec.load(spec, bind=bind), rng)
    model = Model(spec, bind=bind, dtype=np.float64, seed=2, tables=tables)
    lengths = {a: 4 + i for i, a in enumerate(model.graph.axes)}
    batch = random_batch(model, lengths, 3, rng)
    clean = model.forward(batch, seed=7)
    model.backward()
    grads = model.grads()
    ex = model.current
    ex.F[ex.plan.value_start:] = np.nan
    ex.G[ex.plan.value_start:] = np.nan
    assert model.forward(batch, seed=7) == clean
    model.backward()
    for k, g in model.grads().items():
        np.testing.assert_array_equal(g, grads[k], err_msg=k)
