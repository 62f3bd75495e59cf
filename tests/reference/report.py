"""The worst relative error of every reference case, as a markdown table:
`python -m tests.reference.report` from the repository root."""
import numpy as np
import pytest

from .cases import CASES
from .harness import compare

try:
    from .test_torch import TORCH, compare_torch
except pytest.skip.Exception:       # torch not installed (pytest.importorskip)
    TORCH = {}


def worst(errors: dict) -> str:
    k = max(errors, key=errors.get)
    return f"{errors[k]:.1e} ({k})"


def main():
    print("| case | mode | float64 | float64 unfused | float32 | torch float64 |")
    print("|---|---|---|---|---|---|")
    for c in CASES:
        for mode in c.modes:
            cols = [worst(compare(c, dt, fuse, mode)) for dt, fuse in
                    ((np.float64, True), (np.float64, False), (np.float32, True))]
            cols.append(worst(compare_torch(c.name, mode)) if c.name in TORCH else "-")
            print(f"| {c.name} | {mode} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
