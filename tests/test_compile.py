"""The compiler: hoisting, delays, loops, deferred weight gradients, on small specs."""
import pytest

import graphspec
from graphspec.compile import compile_graph

ELMAN = """
name: elman
dims: {V: 11, D: 3, H: 5}
inputs:
  x: {tokens: V, axis: t}
  y: {tokens: V, axis: t, target: true}
params:
  E: {shape: [V, D]}
  U: {shape: [H, D]}
  W: {shape: [H, H], init: orthogonal}
  b: {shape: [H]}
  V_o: {shape: [V, H]}
  c: {shape: [V]}
nodes:
  a: b + W @ h[t-1] + U @ E[x]
  h: tanh(a)
  o: c + V_o @ h
  unused: tanh(o)
loss: cross_entropy(o, y)
"""


def fused_and_plain(spec, batch, text=None, bind=None, seed=0, jitter=0.0):
    """Two float64 models of one spec, fused and as written, with the same params; asserts they
    give the same loss and the same gradient for every param, and returns them."""
    import numpy as np
    from runtime.model import Model
    fused, plain = (Model(spec, text=text, bind=bind, dtype=np.float64, seed=seed, fuse=f) for f in (True, False))
    fused.params[:] += np.random.default_rng(seed).normal(0, jitter, fused.params.shape)
    plain.set_params(fused.get_params())
    np.testing.assert_allclose(fused.forward(batch), plain.forward(batch), rtol=1e-12)
    fused.backward()
    plain.backward()
    gf, gp = fused.grads(), plain.grads()
    for k in gf:
        np.testing.assert_allclose(gf[k], gp[k], rtol=1e-9, atol=1e-12, err_msg=k)
    return fused, plain


def test_elman_plan_hoists_everything_but_the_recurrence():
    g = graphspec.load("elman.yaml", ELMAN)
    plan = compile_graph(g, {"t": 7}, 4, fuse=False)
    ops = [e.op for e in plan.eqns]
    # b + W h[t-1] + U x is regrouped as (b + U x) + W h[t-1]: per step W @ h[t-1], one add,
    # tanh = 3 ops x 7 steps; hoisted: embed, U@, +b, V@, +c, loss, and the deferred dW GEMM
    assert len(ops) == 3 * 7 + 7
    hoisted = [e for e in plan.eqns if e.out.rows == 7 * 4]
    assert sorted(e.op for e in hoisted) == ["add", "add", "embed", "matmul", "matmul", "matmul"]
    assert plan.stats["regrouped sums"] == 1
    assert plan.stats["dead nodes removed"] == 1
    assert plan.stats["plan ops before hoisting"] == 9 * 7   # 9 nodes survive dead-node elimination
    deferred = [e for e in plan.eqns if e.nofwd]
    assert len(deferred) == 1 and deferred[0].need == (True, False) and deferred[0].out.rows == 28


def test_affine_fusion_leaves_one_gemm_and_the_cell_per_step():
    g = graphspec.load("elman.yaml", ELMAN)
    plan = compile_graph(g, {"t": 7}, 4)
    # per step: affine(W, h[t-1], b + U x(t)) over W packed once, and tanh; hoisted: the
    # lookup of b + U E[x] folded into its table (11 rows, fewer than the 28 lookups) and the
    # lookup, affine(V_o, h, c), the loss, the pack of W and the deferred dW GEMM
    assert len(plan.eqns) == 2 * 7 + 6
    assert plan.stats["fused affine"] == 3
    step = [e for e in plan.eqns if e.out.rows == 4]
    assert [e.op for e in step] == ["affine_packed", "tanh"] * 7
    # W's gradient comes from the deferred GEMM; a's is y's: y is computed in a's buffer
    assert all(e.need == (False, False, True, False) for e in step if e.op == "affine_packed")
    assert all(e.out.offset == e.ins[3].offset for e in step if e.op == "affine_packed")
    (deferred,) = [e for e in plan.eqns if e.nofwd]
    assert deferred.out.buf == "a" and deferred.out.rows == 28
    hoisted = sorted(e.op for e in plan.eqns if e.out.rows == 28 and not e.nofwd)
    assert hoisted == ["affine", "embed_affine"]
    (table,) = [e for e in plan.eqns if e.op == "affine_table"]
    assert (table.out.rows, table.out.cols) == (11, 5) and plan.stats["folded lookups"] == 1


def test_a_folded_lookup_computes_what_the_lookup_and_the_affine_do():
    """b + U E[x] read from the table E U^T + b (11 rows for 8 x 3 lookups): the same loss and
    gradients as the lookup and the GEMM, through padding."""
    import numpy as np
    rng = np.random.default_rng(5)
    T, B = 8, 3
    batch = {"x": rng.integers(0, 11, (T, B)), "y": rng.integers(0, 11, (T, B)),
             "x_mask": (np.arange(T)[:, None] < np.array([8, 5, 2])).astype(float)}
    fused, plain = fused_and_plain("elman.yaml", batch, text=ELMAN, seed=2, jitter=0.3)
    assert fused.current.plan.stats["folded lookups"] == 1
    assert "affine_table" not in [e.op for e in plain.current.plan.eqns]


def test_affine_fusion_computes_what_the_matmuls_and_adds_do():
    import numpy as np
    rng = np.random.default_rng(4)
    T, B = 5, 3
    batch = {"x": rng.integers(0, 11, (T, B)), "y": rng.integers(0, 11, (T, B)),
             "x_mask": (np.arange(T)[:, None] < np.array([5, 3, 1])).astype(float)}
    fused, plain = fused_and_plain("elman.yaml", batch, text=ELMAN, seed=1)
    assert fused.current.plan.stats["fused affine"] == 3 and plain.current.plan.stats["fused affine"] == 0


def test_a_hoisted_matmul_is_not_fused_into_a_per_step_add():
    spec = ELMAN.replace("a: b + W @ h[t-1] + U @ E[x]", "a: W @ h[t-1] + U @ E[x]").replace("  b: {shape: [H]}\n", "")
    plan = compile_graph(graphspec.load("elman.yaml", spec), {"t": 4}, 2)
    step = [e.op for e in plan.eqns if e.out.rows == 2]
    assert step == ["affine_packed", "tanh"] * 4   # W h[t-1] fused, U x(t) still one GEMM over all steps
    assert [e.op for e in plan.eqns if e.out.rows == 8 and not e.nofwd] == ["embed", "matmul", "affine"]


def test_delayed_reads_are_views_of_earlier_slots():
    g = graphspec.load("elman.yaml", ELMAN)
    plan = compile_graph(g, {"t": 3}, 2)
    h = plan.buffers["h"]
    assert h.shape == (4, 2, 5) and h.pre == 1
    step_mm = [e for e in plan.eqns if e.op == "matmul" and e.out.rows == 2]
    # at t the recurrent matmul reads slot t-1, i.e. h's slot (pre + t - 1)
    for t, e in enumerate(step_mm):
        assert e.ins[1].offset == h.offset + t * 2 * 5
        assert e.need == (False, True)     # dW comes from the deferred GEMM


def test_params_come_first_and_learnable_block_is_contiguous():
    g = graphspec.load("elman.yaml", ELMAN)
    plan = compile_graph(g, {"t": 3}, 2)
    params = plan.params()
    assert [b.name for b in params] == ["E", "U", "W", "b", "V_o", "c"]
    assert plan.nlearn == sum(b.size for b in params) == 11 * 3 + 5 * 3 + 25 + 5 + 55 + 11


def test_fused_lstm_matches_the_lstm_block():
    """The generated kernel replaces the lstm block's elementwise nodes; losses and every
    gradient must equal the block's as written (float64)."""
    import numpy as np
    spec = "specs/bilstm_concat.yaml"          # forward and backward (t+1) instances, padding
    bind = {"V_src": 9, "V_tgt": 11, "H": 5, "D": 3}
    rng = np.random.default_rng(0)
    T, B = 6, 3
    mask = (np.arange(T)[:, None] < np.array([6, 4, 2])[None, :]).astype(float)
    batch = {"x": rng.integers(0, 9, (T, B)), "y": rng.integers(0, 11, (T, B)), "x_mask": mask}
    fused, block = fused_and_plain(spec, batch, bind=bind, seed=3, jitter=0.5)
    assert fused.current.plan.stats["fused groups"] == 2
    assert block.current.plan.stats["fused groups"] == 0
    assert len(fused.current.plan.eqns) < len(block.current.plan.eqns) / 2


def test_a_fused_backward_whose_row_buffer_leaves_the_stack_matches_the_block(monkeypatch):
    """A fused backward keeps its row buffer on the stack while small (runtime/abi.py), on the
    heap past codegen.STACK_BYTES: the heap side, forced here, gives the block's gradients."""
    import numpy as np
    from runtime import codegen
    monkeypatch.setattr(codegen, "STACK_BYTES", 8)
    monkeypatch.setattr(codegen, "_resolved", {})
    assert "if nbuf <= 1 else" in codegen.fused_source(_lstm_group(), "float64")
    rng = np.random.default_rng(4)
    T, B = 4, 3
    batch = {"x": rng.integers(0, 9, (T, B)), "y": rng.integers(0, 11, (T, B)), "x_mask": np.ones((T, B))}
    fused, _ = fused_and_plain("specs/bilstm_concat.yaml", batch, bind={"V_src": 9, "V_tgt": 11, "H": 5, "D": 3},
                               seed=5, jitter=0.5)
    assert fused.current.plan.stats["fused groups"] == 2


def _lstm_group():
    from runtime.model import Model
    plan = Model("specs/bilstm_concat.yaml", bind={"V_src": 9, "V_tgt": 11, "H": 5, "D": 3}).plan({"t": 2}, 1)
    return next(e.group for e in plan.eqns if e.op == "fused")


def test_fused_gru_matches_the_gru_after_block():
    import numpy as np
    spec = "bench/specs/seq2seq_attention.yaml"     # bidirectional gru_after encoder, padded, + lstm decoder
    bind = {"V_src": 9, "V_tgt": 7, "H": 3, "H2": 6, "D": 4}
    rng = np.random.default_rng(1)
    S, T, B = 5, 4, 3
    batch = {"x": rng.integers(0, 9, (S, B)), "x_mask": (np.arange(S)[:, None] < np.array([5, 3, 2])).astype(float),
             "y": rng.integers(0, 7, (T, B)), "y_mask": (np.arange(T)[:, None] < np.array([4, 4, 2])).astype(float)}
    fused, _ = fused_and_plain(spec, batch, bind=bind, seed=2, jitter=0.5)
    assert fused.current.plan.stats["fused groups"] == 3       # two GRU directions, one LSTM


TEACHER = """
name: tf
dims: {V: 6, D: 3}
inputs:
  y: {tokens: V, axis: t, target: true}
params:
  E: {shape: [V, D], init: normal(1.0)}
  V_o: {shape: [V, D], init: normal(1.0)}
nodes:
  prev: teacher_forced(y, o)
  o: V_o @ E[prev]
loss: cross_entropy(o, y)
"""


def test_teacher_forcing_reads_bos_at_the_first_step_in_every_mode():
    """docs/spec.md: at t=0 both the teacher-forced and the free-running input are <bos> (2).
    One step, one example: the three modes see the same input, and E's gradient lands on <bos>."""
    import numpy as np
    from runtime.model import Model
    m = Model("tf.yaml", text=TEACHER, dtype=np.float64)
    batch = {"y": np.array([[4]]), "y_mask": np.ones((1, 1))}
    E, V_o = m.param("E"), m.param("V_o")
    logits = V_o @ E[2]
    want = np.log(np.exp(logits).sum()) - logits[4]
    train = m.forward(batch, mode="train")
    m.backward()
    grad = m.grads()["E"]
    assert train == pytest.approx(want, rel=1e-12)
    assert m.forward(batch, mode="eval") == pytest.approx(want, rel=1e-12)
    assert m.forward(batch, mode="free") == pytest.approx(want, rel=1e-12)
    assert np.abs(grad[2]).sum() > 0 and np.abs(np.delete(grad, 2, axis=0)).sum() == 0


def test_an_output_reads_the_step_its_mode_names():
    import numpy as np
    from runtime.model import Model
    spec = ELMAN.replace("loss: cross_entropy(o, y)", "loss: cross_entropy(o, y)\noutputs:\n  "
                         "first_h: first(h)\n  last_h: last(h)\n  every_h: h")
    m = Model("elman.yaml", text=spec, dtype=np.float64)
    rng = np.random.default_rng(0)
    T, B = 4, 3
    batch = {"x": rng.integers(0, 11, (T, B)), "y": rng.integers(0, 11, (T, B)),
             "x_mask": (np.arange(T)[:, None] < np.array([4, 2, 3])).astype(float)}
    m.forward(batch)
    h = m.value("h")[1:]                                 # [T, B, H] without the initial slot
    np.testing.assert_array_equal(m.output("every_h"), h)
    np.testing.assert_array_equal(m.output("first_h"), h[0])
    np.testing.assert_array_equal(m.output("last_h"), h[[3, 1, 2], np.arange(B)])


def test_concat_of_a_step_value_and_a_static_one_repeats_the_static_part_on_every_step():
    """concat(x, last(x)): last(x) is one row per sequence; every step's row carries it (it was
    filled at t=0 only)."""
    import numpy as np
    from runtime.model import Model
    spec = """
name: cat
dims: {H: 3}
inputs: {x: {real: 3, axis: t}, y: {real: 6, axis: t, target: true}}
nodes: {c: "concat(x, last(x))"}
loss: mse(c, y)
"""
    m = Model("cat.yaml", text=spec, dtype=np.float64)
    x = np.arange(1, 13, dtype=float).reshape(4, 1, 3)
    y = np.zeros((4, 1, 6))
    loss = m.forward({"x": x, "x_mask": np.ones((4, 1)), "y": y})
    want = np.concatenate([x, np.repeat(x[-1:], 4, 0)], axis=2)
    np.testing.assert_array_equal(m.value("c"), want)
    assert loss == pytest.approx(0.5 * (want ** 2).sum())


def test_a_sum_of_losses_is_the_list_of_them():
    """loss: mse(h, y) + mse(o, y) compiles to the plan the list form does (it was an internal
    error: the sum's node was emitted as a loss of its own)."""
    head = ("name: t\ndims: {H: 4}\ninputs:\n  x: {real: 4, axis: t}\n  y: {real: 4, axis: t, target: true}\n"
            "params:\n  W: {shape: [H, H]}\n  U: {shape: [H, 4]}\n  b: {shape: [H]}\n"
            "nodes:\n  a: b + U @ x + W @ h[t-1]\n  h: tanh(a)\n  o: a * 2\n")
    plans = [compile_graph(graphspec.load("t.yaml", head + loss), {"t": 3}, 2)
             for loss in ("loss: mse(h, y) + mse(o, y)\n", "loss: [mse(h, y), mse(o, y)]\n")]
    def shape(p):    # the losses' nodes are named loss#1, loss#2 in one and loss, loss1 in the other
        return [(e.op, e.attrs, [(v.offset, v.rows, v.cols) for v in e.outs + e.ins]) for e in p.eqns]
    assert shape(plans[0]) == shape(plans[1])
    assert [v.offset for v in plans[0].losses] == [v.offset for v in plans[1].losses] and len(plans[0].losses) == 2
