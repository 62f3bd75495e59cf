"""Unrolling: random step graphs with random delays give DAGs of the predicted size, and a
zero-delay cycle injected anywhere is always reported."""
import pytest
from hypothesis import given, settings, strategies as st

import graphspec
from graphspec.unroll import topological_order, unroll


@st.composite
def step_graphs(draw):
    """Nodes n0..n{k-1} of size 3 on axis t; node i reads x, earlier nodes at any delay >= 0
    and any node at a delay >= 1: always a valid graph."""
    k = draw(st.integers(1, 5))
    refs = []
    for i in range(k):
        mine = {("x", 0)}
        for _ in range(draw(st.integers(0, 3))):
            j = draw(st.integers(0, k - 1))
            d = draw(st.integers(0 if j < i else 1, 4))
            mine.add((f"n{j}", d))
        refs.append(sorted(mine))
    T = draw(st.integers(1, 6))
    return k, refs, T


def spec_text(refs, extra=None):
    lines = ["name: g", "inputs:", "  x: {real: 3, axis: t}", "nodes:"]
    for i, mine in enumerate(refs):
        terms = [f"{n}[t-{d}]" if d else n for n, d in mine]
        if extra and extra[0] == i:
            terms.append(extra[1])
        lines.append(f"  n{i}: tanh({' + '.join(terms)})")
    lines.append("outputs:")
    lines += [f"  o{i}: n{i}" for i in range(len(refs))]
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(step_graphs())
def test_random_graphs_unroll_to_dags_of_predicted_size(case):
    k, refs, T = case
    g = graphspec.load("g.yaml", spec_text(refs))
    dag = unroll(g, {"t": T})
    # every node of the step graph (inputs and each add/tanh intermediate) once per step
    per_step = sum(1 for n in g.nodes.values() if n.axis == "t" and n.op != "const")
    assert dag.number_of_nodes() == per_step * T
    # edges: one per operand and step whose source step exists (delayed reads before t=0 read
    # the zero initial state: no edge)
    expected = 0
    for n in g.nodes.values():
        if n.op in ("input", "const"):
            continue
        srcs = {(a.node, a.delay) for a in n.args if g.nodes[a.node].op != "const"}
        expected += sum(max(0, T - d) for _, d in srcs)
    assert dag.number_of_edges() == expected
    order = topological_order(dag)
    pos = {u: i for i, u in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v in dag.edges)
    assert order == topological_order(unroll(graphspec.load("g.yaml", spec_text(refs)), {"t": T}))


@settings(max_examples=60, deadline=None)
@given(step_graphs(), st.data())
def test_an_injected_zero_delay_cycle_is_always_reported(case, data):
    k, refs, T = case
    # chain i -> j with a zero delay, then close it: j reads ... and i reads j at the same step
    i = data.draw(st.integers(0, k - 1))
    j = data.draw(st.integers(0, k - 1))
    refs = [list(r) for r in refs]
    if i != j:
        refs[j] = sorted(set(refs[j]) | {(f"n{i}", 0)})
    with pytest.raises(graphspec.SpecError) as err:
        graphspec.load("g.yaml", spec_text(refs, extra=(i, f"n{j}")))
    assert "cycle with no delay" in str(err.value)
    names = {f"n{i}", f"n{j}"}
    assert all(n in str(err.value) for n in names)


def test_node_ids_name_the_step_and_instance():
    g = graphspec.load("specs/seq2seq_attention.yaml", bind={"V_src": 20, "V_tgt": 12})
    dag = unroll(g, {"src": 5, "tgt": 4})
    assert "enc.fwd.h[src=2]" in dag and "dec.h[tgt=3]" in dag and "enc.fwd.W" in dag
    # the shared encoder weight feeds all five source steps (through the hoisted input GEMM)
    users = {v.split("[")[0] for v in dag.successors("enc.fwd.W")}
    assert users == {"enc.fwd.a#2"} and dag.out_degree("enc.fwd.W") == 5
    # the attention context at every target step reads every source step
    ctx = [u for u in dag.predecessors("ctx.c[tgt=2]")]
    assert sum(1 for u in ctx if u.startswith("enc[src=")) == 5
