"""`python tests/mpi_train.py SPEC OUT [KEY=VALUE ...]`: runtime.train.run in float64 with those
overrides (under `mpiexec -n N` for N ranks). tests/test_mpi.py compares what it writes."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime.train import run  # noqa: E402

if __name__ == "__main__":
    spec, out, *sets = sys.argv[1:]
    run(spec, out, progress=False, sets=sets, dtype=np.float64)
