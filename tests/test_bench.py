"""Every benchmark command in bench/README.md runs as written (with --smoke: the smallest sizes,
one round, results to a temporary directory), so a benchmark cannot silently stop working."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what each script needs beyond the project's own dependencies (the bench extra)
NEEDS = {"run.py": ("torch", "gensim"), "throughput.py": ("torch",), "system.py": ("torch",),
         "word2vec.py": ("gensim",), "sweep.py": ("torch",), "custom_cells.py": ("torch",),
         "mpi_scaling.py": ("mpi4py",)}
# scripts that write a results file: the flag that sends it somewhere harmless, and the file
WRITES = {"run.py": ("--out", "results.json"), "throughput.py": ("--json", "out.json"),
          "word2vec.py": ("--json", "out.json"), "compile.py": ("--json", "out.json"),
          "system.py": ("--json", "out.json"), "specs_table.py": ("--json", "out.json"),
          "sweep.py": ("--json", "out.json"), "custom_cells.py": ("--json", "out.json")}


def readme_commands() -> list:
    with open(os.path.join(ROOT, "bench", "README.md")) as f:
        text = f.read()
    block = text.split("```")[1]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("python bench/")]


COMMANDS = readme_commands()


def test_the_readme_lists_every_entry_point():
    listed = {shlex.split(c)[1] for c in COMMANDS}
    scripts = {f"bench/{f}" for f in os.listdir(os.path.join(ROOT, "bench"))
               if f.endswith(".py") and f != "__init__.py"}
    assert listed == scripts


def test_no_script_shadows_a_standard_library_module():
    """A script's folder comes first on sys.path: bench/profile.py once replaced the stdlib's
    `profile`, which torch imports through cProfile."""
    for folder in ("bench", "."):
        for f in os.listdir(os.path.join(ROOT, folder)):
            if f.endswith(".py"):
                assert f[:-3] not in sys.stdlib_module_names, f"{folder}/{f} shadows the standard library"


@pytest.mark.parametrize("command", COMMANDS, ids=[shlex.split(c)[1] for c in COMMANDS])
def test_bench_command_runs(command, tmp_path):
    argv = shlex.split(command)
    script = os.path.basename(argv[1])
    missing = [m for m in NEEDS.get(script, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[bench]')")
    extra = ["--smoke"]
    flag, name = WRITES.get(script, (None, None))
    if flag == "--out":
        extra += [flag, str(tmp_path)]
        written = tmp_path / name
    elif flag:
        written = tmp_path / name
        extra += [flag, str(written)]
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache")))
    r = subprocess.run([sys.executable, *argv[1:], *extra], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
    assert r.returncode == 0, f"{command} --smoke failed:\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{command} printed nothing"
    if flag:
        assert written.exists() and written.stat().st_size > 0, f"{command} wrote no {name}"
    if script == "run.py":      # the README it regenerates has every section, and the sweep's picture
        readme = (tmp_path / "README.md").read_text()
        for section in ("### Training throughput", "### Under contention", "### Size sweep",
                        "### Custom cells", "![graphspec / nn.* training throughput over B x H](sweep.png)"):
            assert section in readme, f"run.py --smoke wrote a README without {section!r}"
        assert (tmp_path / "sweep.png").stat().st_size > 0


def test_gemm_flops_counts_every_product_of_the_lstm():
    """bench/system.py's GEMM share divides these FLOPs by the step time: counted here from the
    LSTM's equations, not from the plan. Per step z = W x + R h(t-1) + b (x: E wide, z: 4H), then
    logits = V_o h + c; forward, dW and dx of each (2 FLOPs a multiply-add). dh(t-1) runs at t=0
    too: the zero initial state is a value slot the backward writes, though nothing reads it."""
    sys.path.insert(0, ROOT)
    from bench.system import gemm_flops
    from runtime.model import Model
    T, B, V, E, H = 3, 2, 64, 64, 4
    plan = Model(os.path.join(ROOT, "bench", "specs", "lstm.yaml"), bind={"H": H}).plan({"t": T}, B)
    hoisted = 3 * 2 * T * B * E * 4 * H                    # W x(t) for all t: y, dW, dx
    recurrent = 2 * B * H * 4 * H * 3 * T                   # R h(t-1): y, dR and dh(t-1) each step
    out = 3 * 2 * T * B * H * V
    assert gemm_flops(plan) == hoisted + recurrent + out
