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
