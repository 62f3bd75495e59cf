"""Run every benchmark and write bench/results.json and the tables in bench/README.md.

    pip install -e '.[bench]' && python bench/run.py [--quick] [--smoke --out DIR]

Throughput against torch (bench/throughput.py), with a busy core beside (--contended), the size
sweep (bench/sweep.py, its heatmap bench/sweep.png), cells written as equations against eager
torch and torch.compile (bench/custom_cells.py), word2vec against gensim (bench/word2vec.py),
compile time against T (bench/compile.py), GFLOP/s, start times and memory (bench/system.py).
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

MARK = "<!-- results -->"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds, the two smaller sizes, the sweep's 2x2 subset, no torch.compile")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round: checks that everything runs")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench"),
                    help="where results.json and README.md go (default bench/; the README's head is read from bench/)")
    a = ap.parse_args()
    from bench import custom_cells, sweep, system, throughput, word2vec
    t0 = time.time()
    res = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}}
    sizes = throughput.SMOKE_SIZES if a.smoke else throughput.SIZES[:2] if a.quick else throughput.SIZES
    rounds = 1 if a.smoke else 3 if a.quick else 7
    steps = 1 if a.smoke else 5
    res["throughput"] = throughput.measure(sizes=sizes, rounds=rounds, steps=steps)
    res["contended"] = throughput.measure(sizes=sizes, rounds=rounds, steps=steps, contended=True,
                                          systems=(throughput.Graphspec, throughput.TorchModule))
    if a.smoke:
        Bs, Hs, eager, T = sweep.SMOKE
    else:
        (Bs, Hs, eager), T = (sweep.QUICK if a.quick else (sweep.BS, sweep.HS, sweep.EAGER_AT)), sweep.T
    res["sweep"] = sweep.measure(Bs=Bs, Hs=Hs, T=T, eager_at=eager, rounds=1 if a.smoke else 3 if a.quick else 5,
                                 steps=steps)
    # torch.compile compiles for ~20-60 s per cell and size: one cell in --smoke, none in --quick
    cc_sizes = custom_cells.SMOKE_SIZES if a.smoke else custom_cells.SIZES[:1] if a.quick else custom_cells.SIZES
    res["custom_cells"] = custom_cells.measure(sizes=cc_sizes, rounds=rounds, steps=steps,
                                               compile_cells=custom_cells.CELLS[:1] if a.smoke else [] if a.quick else None)
    res["seq2seq"] = throughput.measure_seq2seq(rounds=rounds, steps=steps)
    res["word2vec"] = word2vec.measure(epochs=1, rounds=1) if a.smoke else word2vec.measure()
    res["system"] = system.measure(smoke=a.smoke)
    res["seconds"] = time.time() - t0
    os.makedirs(a.out, exist_ok=True)
    sweep.heatmap(res["sweep"], os.path.join(a.out, "sweep.png"))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    s = res["system"]
    comp = "\n".join(f"| {r['T']} | {r['unroll_s']:.3f} | {r['plan_s'] + r['tape_s']:.3f} | {r['plan_ops']} |" for r in s["compile"])
    ach = "\n".join(f"| {r['cell']} B={r['B']} T={r['T']} H={r['H']} | {r['gflops_per_s']:.1f} | {s['matmul_peak_gflops']:.1f} | "
                    f"{r['gflops_per_s'] / s['matmul_peak_gflops']:.2f} |" for r in s["achieved"])
    m = s["memory"]
    text = f"""{MARK}
Measured {res['machine']['date']} on this machine ({res['machine']['cpus']} cores, Python {res['machine']['python']}),
2 threads, float32; `python bench/run.py` regenerates everything below.

### Training throughput (tokens/s; ratio = graphspec / peer, higher is better)

{throughput.table(res['throughput'])}

### Under contention (a busy loop on one core beside the measurement; `--contended`)

tokens/s without and with another process spinning, and the share of its quiet throughput each
system keeps; then graphspec / torch nn quiet and under load.

{throughput.contended_table(res['contended'])}

### Size sweep (ratio vs nn.*, graphspec / torch tokens/s; T={res['sweep'][0]['T']})

The eager cell was run at {', '.join(f'B={b}/H={h}' for b, h in sorted(eager))} ("eager" = ratio vs it).

{sweep.table(res['sweep'])}

![graphspec / nn.* training throughput over B x H](sweep.png)

### Custom cells: written as equations, not from the block library (bench/specs/custom/)

{custom_cells.table(res['custom_cells'])}

Encoder-decoder with attention (bidirectional GRU encoder, LSTM decoder, general attention) at the
dates task's sizes (B=64, source 24, target 11 steps): graphspec {res['seq2seq']['graphspec']['tokens_per_s']:,.0f}
target tokens/s, torch {res['seq2seq']['torch nn']['tokens_per_s']:,.0f}: ratio {res['seq2seq']['ratio vs torch nn']:.2f}.

### word2vec on lee_background.cor ({res['word2vec'][0]['epochs']} epochs; corpus words/s; neighbour agreement with gensim)

{word2vec.table(res['word2vec'])}

### Compile time of specs/lstm.yaml (batch 32)

| T | unroll (s) | plan + tape (s) | plan ops |
|---|---|---|---|
{comp}

### GEMM throughput inside a training step

| model | achieved GFLOP/s (GEMMs) | numpy float32 matmul peak | share |
|---|---|---|---|
{ach}

### Start and memory

- cold start to the first training step (empty numba cache): {_secs(s['start']['cold_start_s'])}; warm start: {s['start']['warm_start_s']:.2f} s
- LSTM at T=1000 (B=32, H=128), memory of one forward+backward: graphspec {m['graphspec_step_mb']:.0f} MB, torch {m['torch_step_mb']:.0f} MB (ratio {m['ratio graphspec/torch (step memory)']:.2f})
"""
    path = os.path.join(ROOT, "bench", "README.md")
    head = open(path).read().split(MARK)[0] if os.path.exists(path) else "# Benchmarks\n\n"
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write(head + text)
    print(text)


def _secs(v) -> str:
    return "not measured" if v is None else f"{v:.1f} s"


if __name__ == "__main__":
    main()
