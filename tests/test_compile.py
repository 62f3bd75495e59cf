"""The compiler: hoisting, delays, loops, deferred weight gradients, on small specs."""
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


def test_elman_plan_hoists_everything_but_the_recurrence():
    g = graphspec.load("elman.yaml", ELMAN)
    plan = compile_graph(g, {"t": 7}, 4)
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


def test_fused_lstm_cell_matches_the_lstm_block():
    """The fused kernel replaces the stdlib lstm block's elementwise nodes; losses and every
    gradient must equal the block's as written (float64)."""
    import numpy as np
    from runtime.model import Model
    spec = "specs/bilstm_concat.yaml"          # forward and backward (t+1) instances, padding
    bind = {"V_src": 9, "V_tgt": 11, "H": 5, "D": 3}
    rng = np.random.default_rng(0)
    T, B = 6, 3
    mask = (np.arange(T)[:, None] < np.array([6, 4, 2])[None, :]).astype(float)
    batch = {"x": rng.integers(0, 9, (T, B)), "y": rng.integers(0, 11, (T, B)), "x_mask": mask}
    fused, block = (Model(spec, bind=bind, dtype=np.float64, seed=3, fuse=f) for f in (True, False))
    fused.params[:] += rng.normal(0, 0.5, fused.params.shape)
    block.set_params(fused.get_params())
    lf, lb = fused.forward(batch), block.forward(batch)
    assert fused.current.plan.stats["fused lstm cells"] == 2
    assert block.current.plan.stats["fused lstm cells"] == 0
    assert len(fused.current.plan.eqns) < len(block.current.plan.eqns) / 2
    np.testing.assert_allclose(lf, lb, rtol=1e-12)
    fused.backward()
    block.backward()
    gf, gb = fused.grads(), block.grads()
    for k in gf:
        np.testing.assert_allclose(gf[k], gb[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_fused_gru_cell_matches_the_gru_after_block():
    import numpy as np
    from runtime.model import Model
    spec = "bench/specs/seq2seq_attention.yaml"     # bidirectional gru_after encoder, padded, + lstm decoder
    bind = {"V_src": 9, "V_tgt": 7, "H": 3, "H2": 6, "D": 4}
    rng = np.random.default_rng(1)
    S, T, B = 5, 4, 3
    batch = {"x": rng.integers(0, 9, (S, B)), "x_mask": (np.arange(S)[:, None] < np.array([5, 3, 2])).astype(float),
             "y": rng.integers(0, 7, (T, B)), "y_mask": (np.arange(T)[:, None] < np.array([4, 4, 2])).astype(float)}
    fused, block = (Model(spec, bind=bind, dtype=np.float64, seed=2, fuse=f) for f in (True, False))
    fused.params[:] += rng.normal(0, 0.5, fused.params.shape)
    block.set_params(fused.get_params())
    lf, lb = fused.forward(batch), block.forward(batch)
    stats = fused.current.plan.stats
    assert (stats["fused gru cells"], stats["fused lstm cells"]) == (2, 1)
    np.testing.assert_allclose(lf, lb, rtol=1e-12)
    fused.backward()
    block.backward()
    gf, gb = fused.grads(), block.grads()
    for k in gf:
        np.testing.assert_allclose(gf[k], gb[k], rtol=1e-9, atol=1e-12, err_msg=k)
