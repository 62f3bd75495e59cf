"""The compiler's passes, one at a time on few-line specs, and the verifier after every pass on
every spec."""
import glob
import os

import numpy as np
import pytest

import graphspec
from graphspec.compile import compile_graph, make_ctx
from graphspec.graph import Node, Operand
from graphspec.passes import PASSES, REWRITES, print_ir, run, verify
from graphspec.passes.verify import IRError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")) + glob.glob(os.path.join(ROOT, "bench", "specs", "*.yaml")))

HEAD = """
name: t
dims: {V: 7, H: 4}
inputs:
  x: {real: 4, axis: t}
  y: {real: 4, axis: t, target: true}
params:
  W: {shape: [H, H]}
  U: {shape: [H, 4]}
  b: {shape: [H]}
"""


def ir(nodes: str, until: str, loss: str = "mse(h, y)", extra_params: str = "", lengths=None):
    g = graphspec.load("t.yaml", HEAD + extra_params + "nodes:\n" + nodes + f"loss: {loss}\n")
    return run(g, make_ctx(g, lengths or {"t": 3}, 2), until=until, check=True)


def ops(g):
    return {n.name: n.op for n in g.nodes.values() if not n.is_leaf}


# ---------------------------------------------------------------- every pass keeps the IR valid
@pytest.mark.parametrize("spec", SPECS, ids=[os.path.relpath(s, ROOT) for s in SPECS])
def test_the_verifier_passes_after_every_pass_of_every_spec(spec):
    from runtime.gradcheck import tiny_bind
    bind = tiny_bind(graphspec.load(spec))
    for mode in ("train", "free"):
        g = graphspec.load(spec, mode=mode, bind=bind)
        lengths = {a: 3 + i for i, a in enumerate(g.axes)}
        compile_graph(g, lengths, 2, training=mode == "train", check=True)
        compile_graph(g, lengths, 2, training=mode == "train", check=True, fuse=False)


def test_the_verifier_names_what_a_broken_pass_left():
    g = ir("  h: tanh(U @ x + W @ h[t-1] + b)\n", "dce")
    g.nodes["h"].args = [Operand("gone")]
    with pytest.raises(IRError, match=r"h reads gone, which does not exist \(after pass oops\)"):
        verify(g, after="oops")
    g = ir("  a: tanh(U @ x)\n  h: a + b\n", "dce")
    g.nodes = {k: g.nodes[k] for k in reversed(list(g.nodes))}
    with pytest.raises(IRError, match=r"reads .* before it is defined"):
        verify(g)
    g = ir("  a: tanh(U @ x)\n  h: a + b\n", "dce")
    g.nodes["h"].args = [Operand("a"), Operand("U")]
    with pytest.raises(IRError, match=r"h: "):
        verify(g)


def test_every_pass_has_a_name_the_cli_accepts(cli):
    r = cli("compile", "specs/elman.yaml", "--after", "nope")
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
    for p in REWRITES:
        r = cli("compile", "specs/elman.yaml", "--len", "3", "--after", p)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"graph elman  (after pass {p})")
    assert PASSES[-4:] == ["layout", "emit", "assign", "inplace"]


# ---------------------------------------------------------------- one pass at a time
def test_order_puts_same_step_reads_first():
    g = ir("  h: a + b\n  a: tanh(U @ x)\n", "order")
    names = [n for n in g.nodes if not g.nodes[n].is_leaf]
    assert names.index("a") < names.index("h")


def test_cross_axis_reads_the_last_real_step():
    spec = HEAD + "  V_o: {shape: [4, H]}\nnodes:\n  h: tanh(U @ x + W @ h[t-1])\n  p: V_o @ last(h)\n" \
           "loss: mse(p, q)\n"
    spec = spec.replace("  y: {real: 4, axis: t, target: true}", "  q: {real: 4, target: true}")
    g = graphspec.load("t.yaml", spec)
    g = run(g, make_ctx(g, {"t": 3}, 2), until="cross_axis", check=True)
    assert g.nodes["h.last"].op == "lastof"
    assert [str(a) for a in g.nodes["h.last"].args] == ["all(h)", "all(mask.t)"]
    assert str(g.nodes["p"].args[1]) == "h.last"


def test_dce_drops_what_reaches_no_loss():
    g = ir("  h: tanh(U @ x + W @ h[t-1])\n  unused: tanh(h)\n", "dce")
    assert "unused" not in g.nodes and "h" in g.nodes


def test_reassociate_hoists_the_sum_free_of_the_recurrence():
    from graphspec.passes.analysis import loops
    g = ir("  h: tanh(b + W @ h[t-1] + U @ x)\n", "reassociate")
    _, loop_of = loops(g)
    (step,) = [n for n in g.nodes.values() if n.op == "add" and n.name in loop_of]
    hoisted, rec = (g.nodes[a.node] for a in step.args)      # (b + U x) + W h[t-1]
    assert hoisted.name not in loop_of and hoisted.op == "add"
    assert sorted(g.nodes[a.node].op for a in hoisted.args) == ["matmul", "param"]
    assert rec.op == "matmul" and [str(a) for a in rec.args] == ["W", "h[t-1]"]


def test_carry_keeps_a_backward_state_through_the_padding():
    g = ir("  h: tanh(U @ x + W @ h[t+1])\n", "carry")
    assert g.nodes["h"].op == "select"
    assert [str(a) for a in g.nodes["h"].args] == ["mask.t", "h#raw", "h[t+1]"]
    assert g.nodes["h#raw"].op == "tanh"


def test_affine_takes_the_matmul_into_the_add_in_the_same_placement():
    g = ir("  h: tanh(b + W @ h[t-1] + U @ x)\n", "affine")
    from graphspec.passes.analysis import loops
    assert sorted(o for o in ops(g).values()) == ["affine", "affine", "mse", "tanh"]
    _, loop_of = loops(g)
    (step,) = [n for n in g.nodes.values() if n.op == "affine" and n.name in loop_of]
    assert [str(a) for a in step.args[:2]] == ["W", "h[t-1]"]
    hoisted = g.nodes[step.args[2].node]                      # b + U x(t), one GEMM over all steps
    assert hoisted.op == "affine" and [str(a) for a in hoisted.args] == ["U", "x", "b"]


LOOKUP = """
name: t
dims: {V: 7, H: 4, D: 3}
inputs:
  x: {tokens: V, axis: t}
  y: {real: 4, axis: t, target: true}
params:
  E: {shape: [V, D]}
  U: {shape: [H, D]}
  W: {shape: [H, H]}
  b: {shape: [H]}
nodes:
"""


def test_fold_reads_an_affine_lookup_from_a_table_when_it_has_fewer_rows_than_the_lookups():
    def folded(nodes, T):
        g = graphspec.load("t.yaml", LOOKUP + nodes + "loss: mse(h, y)\n")
        return run(g, make_ctx(g, {"t": T}, 2), until="fold", check=True)
    g = folded("  h: tanh(b + W @ h[t-1] + U @ E[x])\n", 7)        # 2 x 7 lookups >= 2 x 7 rows
    (table,) = [n for n in g.nodes.values() if n.op == "affine_table"]
    assert [str(a) for a in table.args] == ["U", "E", "b"] and table.axis is None
    (lookup,) = [n for n in g.nodes.values() if n.op == "embed_affine"]
    assert [str(a) for a in lookup.args] == [table.name, "x", "b"] and lookup.axis == "t"
    g = folded("  h: tanh(b + W @ h[t-1] + U @ E[x])\n", 6)        # 12 lookups of 7 rows: not
    assert "affine_table" not in ops(g).values() and "affine" in ops(g).values()
    # the lookup itself stays where something else reads it
    g = folded("  e: E[x]\n  h: tanh(b + W @ h[t-1] + U @ e) + sum(e)\n", 7)
    assert sorted(o for o in ops(g).values() if o.startswith(("embed", "affine_table"))) == ["affine_table", "embed", "embed_affine"]


def test_fuse_makes_one_kernel_of_a_gated_cell_and_keeps_what_others_read():
    cell = ("  z: U @ x + W @ h[t-1]\n"
            "  f: sigmoid(z)\n"
            "  h: f * h[t-1] + (1 - f) * tanh(b)\n")
    g = ir(cell, "fuse")
    (fused,) = [n for n in g.nodes.values() if n.op == "fused"]
    assert fused.attrs["members"] == ["h"]                     # f is read only inside: a register
    assert "f" not in g.nodes and g.nodes["h"].op == "member"
    assert [op for op, _ in fused.attrs["group"].eqns] == ["sigmoid", "mul", "sub", "mul", "add"]
    assert print_ir(g, "fuse").count("fused") >= 2


def test_fuse_never_makes_a_same_step_cycle():
    """a -> matmul -> c -> d with a and d elementwise: fusing a and d would need the matmul both
    before and after the kernel."""
    cell = ("  a: tanh(U @ x + W @ h[t-1])\n"
            "  c: W @ a\n"
            "  h: sigmoid(a) * tanh(c)\n")
    g = ir(cell, "fuse")
    for n in g.nodes.values():
        if n.op == "fused":
            names = n.attrs["members"]
            assert not ({"a", "h"} <= set(names))


def test_pack_leaves_products_of_more_rows_than_pack_rows_to_blas():
    """On AVX2 the packed kernel is behind BLAS from 32 rows (runtime/cpu.py PACK_ROWS)."""
    text = HEAD + "nodes:\n  h: tanh(b + W @ h[t-1] + U @ x)\nloss: mse(h, y)\n"
    step_ops = lambda plan: {e.op for e in plan.eqns if e.out.slot == "t=2"}      # noqa: E731
    assert "affine_packed" in step_ops(compile_graph(graphspec.load("t.yaml", text), {"t": 4}, 16, pack_rows=16))
    wide = compile_graph(graphspec.load("t.yaml", text), {"t": 4}, 17, pack_rows=16, check=True)
    assert "affine" in step_ops(wide) and not any(e.op == "pack" for e in wide.eqns)
    assert "affine_packed" in step_ops(compile_graph(graphspec.load("t.yaml", text), {"t": 4}, 64))   # no bound


def test_pack_reads_a_loop_weight_packed_once_and_leaves_dw_to_one_gemm():
    g = ir("  h: tanh(b + W @ h[t-1] + U @ x)\n", "pack")
    (step,) = [n for n in g.nodes.values() if n.op == "affine_packed"]
    assert [str(a) for a in step.args[:3]] == ["W", "W#packed", "h[t-1]"]
    assert g.nodes["W#packed"].op == "pack" and g.nodes["W#packed"].axis is None
    assert not any(n.op == "affine_packed" and n.args[0].node == "U" for n in g.nodes.values())   # hoisted: BLAS
    plan = compile_graph(graphspec.load("t.yaml", HEAD + "nodes:\n  h: tanh(b + W @ h[t-1] + U @ x)\nloss: mse(h, y)\n"),
                         {"t": 4}, 2, check=True)
    (dw,) = [e for e in plan.eqns if e.nofwd]
    assert dw.op == "matmul" and dw.ins[0].buf == "W" and dw.out.rows == 8


def test_fuse_off_leaves_every_node():
    g = graphspec.load("specs/lstm.yaml")
    ctx = make_ctx(g, {"t": 3}, 2, fuse=False)
    g2 = run(g, ctx, until="fuse", check=True)
    assert not any(n.op == "fused" for n in g2.nodes.values())


def test_layout_and_emit_give_two_plan_entries_per_step_for_the_lstm_block():
    g = graphspec.load("specs/lstm.yaml")
    plan = compile_graph(g, {"t": 5}, 4, check=True)
    per_step = [e for e in plan.eqns if e.out.slot == "t=2"]
    assert [e.op for e in per_step] == ["affine_packed", "fused"]
    assert [v.buf for v in per_step[1].outs] == ["h.s", "h.h"]


def _writes(plan):
    """(equation, input, start, end) of every gradient write of a plan."""
    return [(i, k, v.offset, v.offset + v.rows * v.cols) for i, e in enumerate(plan.eqns)
            for k, (v, need) in enumerate(zip(e.ins, e.need or ())) if need and v.rows * v.cols]


def test_assign_stores_what_one_equation_writes_whole():
    """A leaky Elman loop: the cell's input b + U x + W h[t-1] (its step's only reader) and the
    deferred dW are stored; so is the initial state's gradient by the first step's cell, which
    backward runs before that step's product. h[t-1] for t > 0 (the loss's gradient is there
    first) and the bias (its rows repeat over the batch) are added to."""
    text = HEAD + "nodes:\n  h: 0.5 * h[t-1] + tanh(b + W @ h[t-1] + U @ x)\nloss: mse(h, y)\n"
    plan = compile_graph(graphspec.load("t.yaml", text), {"t": 4}, 2, check=True)
    stored = {(e.op, e.ins[k].buf) for e in plan.eqns for k, a in enumerate(e.assign) if a}
    added = {(e.op, e.ins[k].buf) for e in plan.eqns for k, n in enumerate(e.need)
             if n and not (e.assign and e.assign[k])}
    fused = [e for e in plan.eqns if e.op == "fused"]
    assert [e.assign for e in fused] == [(True, True)] + [(False, True)] * 3
    assert ("matmul", "W") in stored and ("affine", "U") in stored
    assert ("affine_packed", "h") in added and ("fused", "h") in added and ("affine", "b") in added
    assert plan.stats["stored gradient writes"] == sum(map(sum, (e.assign for e in plan.eqns)))


def test_compile_reports_the_stored_gradients():
    import re
    from tests.conftest import main
    code, out, err = main("compile", os.path.join(ROOT, "specs", "lstm.yaml"), "--len", "4", "--batch", "3")
    assert code == 0, err
    writes, mib = re.search(r"gradients stored, not added: (\d+) writes \((\d+\.\d\d) MiB of float32 G", out).groups()
    assert int(writes) >= 2 * 4 and float(mib) > 0        # at least each step's gates and old state


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.relpath(s, ROOT) for s in SPECS])
def test_assign_marks_exactly_the_sole_whole_writes_of_every_spec(spec):
    """Against a brute-force reference: a write is stored iff no overlapping write runs before it
    in backward (a later equation in the plan, or the same one), it covers its range
    (passes.assign.writes_whole) and is not into a sparse param."""
    from graphspec.passes.assign import writes_whole
    from runtime.gradcheck import tiny_bind
    g = graphspec.load(spec, bind=tiny_bind(graphspec.load(spec)))
    plan = compile_graph(g, {a: 5 for a in g.axes}, 3, check=True)
    writes = _writes(plan)
    for i, k, a, z in writes:
        e = plan.eqns[i]
        alone = not any(x < z and a < y and j >= i for j, m, x, y in writes if (j, m) != (i, k))
        expect = alone and writes_whole(e, k) and not plan.buffers[e.ins[k].buf].sparse
        assert bool(e.assign and e.assign[k]) == expect, (str(e), k)


# ---------------------------------------------------------------- fused = unfused, every spec
@pytest.mark.parametrize("spec", SPECS, ids=[os.path.relpath(s, ROOT) for s in SPECS])
def test_fused_plans_compute_what_the_unfused_plan_computes(spec):
    """Loss to 1e-12 and every gradient to 1e-9, float64, random params and a padded batch."""
    from runtime.gradcheck import random_batch, random_tables, tiny_bind
    from runtime.model import Model
    g = graphspec.load(spec)
    bind = tiny_bind(g)
    rng = np.random.default_rng(3)
    tables = random_tables(graphspec.load(spec, bind=bind), rng)
    fused, plain = (Model(spec, bind=bind, dtype=np.float64, seed=1, tables=tables, fuse=f) for f in (True, False))
    fused.params[:] += rng.normal(0, 0.3, fused.params.shape)
    plain.set_params(fused.get_params())
    lengths = {a: 4 + i for i, a in enumerate(fused.graph.axes)}
    batch = random_batch(fused, lengths, 3, rng)
    for mode in ("train", "free") if "free" in fused.graphs or any(
            n.op == "mix" or (n.op == "input" and n.init is not None) for n in fused.graph.nodes.values()) else ("train",):
        lf, lp = fused.forward(batch, mode=mode, seed=5), plain.forward(batch, mode=mode, seed=5)
        np.testing.assert_allclose(lf, lp, rtol=1e-12, err_msg=mode)
        if mode == "train":
            fused.backward()
            plain.backward()
            gf, gp = fused.grads(), plain.grads()
            for k in gf:
                np.testing.assert_allclose(gf[k], gp[k], rtol=1e-9, atol=1e-12, err_msg=k)
            # the gradient of every state over time, as training records it (a fused cell's own
            # uses of its state were once left out of G: ||dL/ds(T)|| read 0 for the LSTM)
            from runtime.train import grad_norms_over_time, state_nodes
            for node in state_nodes(fused):
                np.testing.assert_allclose(grad_norms_over_time(fused, node), grad_norms_over_time(plain, node),
                                           rtol=1e-9, atol=1e-12, err_msg=node)


# ---------------------------------------------------------------- inplace
def _saves(spec_text_or_path, lengths=None, batch=2):
    g = graphspec.load(spec_text_or_path) if spec_text_or_path.endswith(".yaml") else \
        graphspec.load("t.yaml", spec_text_or_path)
    plan = compile_graph(g, lengths or {"t": 3}, batch, check=True)
    return plan, [e.group.saves for e in plan.eqns if e.op == "fused"]


def test_inplace_saves_the_lstm_gates_over_their_pre_activations():
    plan, saves = _saves("specs/lstm.yaml")
    # the four gates over their blocks of z; tanh(c) is not one of z's blocks: computed again
    assert saves == [((0, "i0@1"), (2, "i0"), (3, "i0@2"), (7, "i0@3"))] * 3
    assert plan.stats["activations saved in place"] == 12


def test_inplace_saves_the_gru_gates_in_the_step_products_output_first():
    """e1 = sigmoid(a_r + c_r) goes over c_r, the step's product output (in cache), not over
    a_r, written before the loop; the candidate's tanh goes over a_n: c_n is still needed
    (d r = dn * c_n)."""
    _, saves = _saves("bench/specs/gru.yaml")
    assert saves[0] == ((1, "i1"), (3, "i1@1"), (6, "i0@2"))


@pytest.mark.parametrize("nodes, why", [
    ("  h: sigmoid(a) * h[t-1]\n", ""),
    ("  h: sigmoid(a) * tanh(a)\n", "two functions of one block"),
    ("  h: sigmoid(a) * h[t-1]\n  o: a * 2\n", "read after the cell"),
])
def test_inplace_keeps_a_value_something_else_still_reads(nodes, why):
    nodes = "  a: b + U @ x + W @ h[t-1]\n" + nodes
    plan, saves = _saves(HEAD + "nodes:\n" + nodes + ("loss: [mse(h, y), mse(o, y)]\n" if "o:" in nodes else
                                                      "loss: mse(h, y)\n"))
    assert saves and all(len(g.eqns) >= 2 for e in plan.eqns if e.op == "fused" for g in [e.group])
    assert not any(saves) if why else all(s == ((0, "i0"),) for s in saves), why


@pytest.mark.parametrize("spec", ["specs/lstm.yaml", "bench/specs/gru.yaml", "bench/specs/custom/peephole_lstm.yaml",
                                  "bench/specs/custom/gru_before_inline.yaml"])
def test_inplace_saves_change_no_bit_of_the_loss_or_the_gradients(spec, monkeypatch):
    """The backward reads a saved activation where it computed the same number again before."""
    from graphspec import passes
    from runtime.gradcheck import random_batch, random_tables, tiny_bind
    from runtime.model import Model

    def model():
        g = graphspec.load(spec)
        bind = tiny_bind(g)
        rng = np.random.default_rng(3)
        m = Model(spec, bind=bind, dtype=np.float32, seed=1, tables=random_tables(graphspec.load(spec, bind=bind), rng))
        m.params[:] += rng.normal(0, 0.3, m.params.shape).astype(np.float32)
        batch = random_batch(m, {a: 5 for a in m.graph.axes}, 3, rng)
        loss = m.forward(batch, seed=5)
        m.backward()
        return m, loss, m.grads()

    saved, loss, grads = model()
    assert any(e.group.saves for e in saved.current.plan.eqns if e.op == "fused")
    at = passes.PASSES.index("inplace")
    monkeypatch.setattr(passes, "PIPELINE", passes.PIPELINE[:at] + [("inplace", lambda g, ctx: {})])
    plain, loss0, grads0 = model()
    assert not any(e.group.saves for e in plain.current.plan.eqns if e.op == "fused")
    assert loss == loss0
    for k in grads:
        assert np.array_equal(grads[k], grads0[k]), k


def test_compile_reports_the_saved_activations(cli):
    r = cli("compile", "specs/lstm.yaml", "--len", "5", "--batch", "2")
    assert r.returncode == 0, r.stderr
    assert "  activations saved in place: 20 (a fused cell's backward reads them" in r.stdout    # 4 gates x 5 steps
