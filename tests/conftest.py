import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# numba's on-disk cache inside the clone, also for CLI subprocesses
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
sys.path.insert(0, ROOT)


def run_cli(*args, cwd=ROOT, timeout=600):
    """Run `graphspec ARGS` as a user would: a subprocess, output captured."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
