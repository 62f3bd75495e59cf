"""The custom cells of the benchmark (bench/specs/custom/) compute what their equations say: each
spec's loss and every gradient equal those of the same equations written in torch
(bench/custom_cells.py TORCH_CELLS), in float64 from copied weights. For the peephole LSTM, the
MI-RNN and the MGU this is the only reference; the inline and user-block LSTMs are also checked
against the stdlib block itself."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.custom_cells import CELLS, TORCH_CELLS, spec_path, torch_logits, torch_loss  # noqa: E402
from runtime.model import Model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, B, H = 5, 5, 6           # B = 5: two threads split each loop 2 + 3 rows


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 64, (T, B)), rng.integers(0, 64, (T, B))
    return {"x": x, "y": y, "x_mask": np.ones((T, B))}


def perturbed(m, seed=1):
    """Weights away from the initializers' special values (zero biases, unit alpha), so that a
    term dropped from an equation shows in the loss or a gradient."""
    rng = np.random.default_rng(seed)
    m.set_params({k: v + rng.normal(0, 0.3, v.shape) for k, v in m.get_params().items()})
    return m.get_params()


@pytest.mark.parametrize("cell", CELLS)
def test_loss_and_gradients_equal_the_equations_in_torch(cell):
    m = Model(spec_path(cell), bind={"H": H}, dtype=np.float64)
    params = perturbed(m)
    b = batch()
    loss = m.forward(b)
    m.backward()
    grads = m.grads()

    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ref = torch_loss(torch_logits(cell, p, torch.from_numpy(b["x"])), torch.from_numpy(b["y"]), B)
    ref.backward()

    assert set(grads) == set(p)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(g, p[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=f"{cell}: d{name}")


@pytest.mark.parametrize("cell", ["lstm_inline", "lstm_user_block"])
def test_the_lstm_copies_equal_the_stdlib_block(cell):
    """Written inline or through a user's block file, the LSTM is the stdlib block's LSTM."""
    std = Model(os.path.join(ROOT, "bench", "specs", "lstm.yaml"), bind={"H": H}, dtype=np.float64)
    params = perturbed(std)
    m = Model(spec_path(cell), bind={"H": H}, dtype=np.float64)
    prefix = TORCH_CELLS[cell][1]
    rename = {k: k.replace("h.", prefix, 1) if k.startswith("h.") else k.replace("o.", "logits.", 1)
              for k in params}
    m.set_params({rename[k]: v for k, v in params.items()})
    b = batch(2)
    assert m.forward(b) == pytest.approx(std.forward(b), rel=1e-12)
    m.backward()
    std.backward()
    g, gs = m.grads(), std.grads()
    for k in params:
        np.testing.assert_allclose(g[rename[k]], gs[k], rtol=1e-9, atol=1e-12, err_msg=f"{cell}: d{k}")
