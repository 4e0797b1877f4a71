import numpy as np
import pytest
import torch

from decomp.engine import BetaNMFObjective, Block, initialize_activations, minimize
from decomp.exceptions import NonFiniteLossError


def _problem(n_items=3, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    W = torch.rand(4, 15, generator=generator, dtype=dtype) + 0.05
    H = torch.rand(n_items, 30, 4, generator=generator, dtype=dtype) ** 3
    return H @ W, H, W


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0, 1.5])
def test_multiplicative_updates_decrease_the_loss_monotonically(beta):
    X, _, W = _problem()
    H0 = initialize_activations(X, W)
    result = minimize(BetaNMFObjective(X, beta), [Block("W", W, trainable=False, per_item=False),
                                                  Block("H", H0)],
                      max_iter=60, tol=0, check_every=1)
    history = result.history
    assert np.all(np.diff(history, axis=0) <= 1e-9 * np.abs(history[:-1]) + 1e-12)
    assert np.all(history[-1] < 0.2 * history[0])


def test_fixed_dictionary_recovers_planted_activations():
    X, H, W = _problem(n_items=2)
    H0 = initialize_activations(X, W)
    result = minimize(BetaNMFObjective(X, 1.0),
                      [Block("W", W, trainable=False, per_item=False), Block("H", H0)],
                      max_iter=2000, tol=1e-10)
    recovered = result.blocks["H"]
    assert torch.allclose(recovered @ W, X, atol=1e-3 * float(X.max()))
    assert float((recovered - H).abs().mean()) < 0.02


def test_items_stop_independently():
    X, _, W = _problem(n_items=2)
    X = X.clone()
    # Item 1 is exactly the constant start, so it converges at the first check.
    X[1] = 0.3 * torch.ones(30, 4, dtype=X.dtype) @ W
    H0 = initialize_activations(X, W)
    result = minimize(BetaNMFObjective(X, 1.0),
                      [Block("W", W, trainable=False, per_item=False), Block("H", H0)],
                      max_iter=500, tol=1e-4)
    assert result.converged.all()
    assert result.n_iter[1] == 10
    assert result.n_iter[0] > 10


def test_batched_equals_one_by_one():
    X, _, W = _problem(n_items=3)
    H0 = initialize_activations(X, W)
    fixed = Block("W", W, trainable=False, per_item=False)
    batched = minimize(BetaNMFObjective(X, 1.0), [fixed, Block("H", H0)], max_iter=80, tol=1e-5)
    for item in range(3):
        alone = minimize(BetaNMFObjective(X[item:item + 1], 1.0),
                         [fixed, Block("H", H0[item:item + 1])], max_iter=80, tol=1e-5)
        assert alone.n_iter[0] == batched.n_iter[item]
        assert torch.allclose(alone.blocks["H"][0], batched.blocks["H"][item], rtol=1e-6)


def test_adam_solver_with_projection_and_plateau():
    X, _, W = _problem(n_items=2)
    H0 = initialize_activations(X, W)
    level = H0.mean(dim=(1, 2))
    result = minimize(BetaNMFObjective(X, 2.0),
                      [Block("W", W, trainable=False, per_item=False),
                       Block("H", H0, nonnegative=True, learning_rate=0.1 * level)],
                      solver="adam", max_iter=3000, tol=1e-6, patience=20)
    assert float(result.blocks["H"].min()) >= 0
    assert np.all(result.history[-1] < 0.05 * result.history[0])
    # Each stopped item had its step size halved max_lr_reductions (4) times.
    stopped = result.converged
    assert stopped.any()
    final_rates = result.learning_rates["H"].numpy()
    np.testing.assert_allclose(final_rates[stopped], (0.1 * level.numpy() / 16)[stopped])


def test_learned_dictionary_both_solvers_reduce_loss():
    X, _, W = _problem(n_items=1)
    generator = torch.Generator().manual_seed(3)
    W0 = torch.rand(W.shape, generator=generator, dtype=W.dtype) + 0.1
    H0 = initialize_activations(X, W0)
    for solver in ("mu", "adam"):
        result = minimize(BetaNMFObjective(X, 1.0),
                          [Block("W", W0, per_item=False, nonnegative=True, learning_rate=0.02),
                           Block("H", H0, nonnegative=True, learning_rate=0.02)],
                          schedule=("W", "H"), solver=solver, max_iter=300, tol=0)
        assert result.history[-1, 0] < 0.1 * result.history[0, 0], solver


def test_non_finite_raises_with_iteration_and_items():
    class Exploding(BetaNMFObjective):
        calls = 0

        def loss(self, blocks):
            loss = super().loss(blocks)
            Exploding.calls += 1
            if Exploding.calls > 3:
                loss = loss.clone()
                loss[1] = float("nan")
            return loss

    X, _, W = _problem(n_items=2)
    H0 = initialize_activations(X, W)
    with pytest.raises(NonFiniteLossError, match=r"at iteration \d+ for item\(s\) \[1\]"):
        minimize(Exploding(X, 2.0), [Block("W", W, trainable=False, per_item=False),
                                     Block("H", H0, learning_rate=0.01)],
                 solver="adam", max_iter=50, check_every=1)


def test_non_finite_recovery_restores_and_halves_step():
    X, _, W = _problem(n_items=1)
    H0 = initialize_activations(X, W)
    limit = 1.5 * float(H0.max())

    class Unstable(BetaNMFObjective):
        def loss(self, blocks):
            loss = super().loss(blocks)
            if float(blocks["H"].detach().max()) > limit:
                loss = loss + float("inf")
            return loss

    result = minimize(Unstable(X, 2.0), [Block("W", W, trainable=False, per_item=False),
                                         Block("H", H0, nonnegative=True, learning_rate=0.3)],
                      solver="adam", max_iter=30, check_every=1, on_non_finite="recover")
    assert torch.isfinite(result.loss).all()
    assert float(result.learning_rates["H"][0]) < 0.3


def test_configuration_errors():
    X, _, W = _problem(n_items=1)
    H0 = initialize_activations(X, W)
    fixed = Block("W", W, trainable=False, per_item=False)
    with pytest.raises(ValueError, match="not a trainable block"):
        minimize(BetaNMFObjective(X, 1.0), [fixed, Block("H", H0)], schedule=("W",))
    with pytest.raises(ValueError, match="needs a learning_rate"):
        minimize(BetaNMFObjective(X, 1.0), [fixed, Block("H", H0)], solver="adam")
    with pytest.raises(ValueError, match="solver must be"):
        minimize(BetaNMFObjective(X, 1.0), [fixed, Block("H", H0)], solver="lbfgs")

    penalised = BetaNMFObjective(X, 1.0, penalties=[lambda blocks: blocks["H"].sum((1, 2))])
    with pytest.raises(ValueError, match="use solver='adam'"):
        minimize(penalised, [fixed, Block("H", H0)])


def test_callback_sees_every_check():
    X, _, W = _problem(n_items=1)
    H0 = initialize_activations(X, W)
    seen = []
    minimize(BetaNMFObjective(X, 1.0), [Block("W", W, trainable=False, per_item=False),
                                        Block("H", H0)],
             max_iter=30, tol=0, check_every=10,
             callback=lambda iteration, blocks, loss: seen.append(iteration))
    assert seen == [0, 10, 20, 30]


def test_float32_and_progress_bar(capsys):
    X, _, W = _problem(n_items=1, dtype=torch.float32)
    H0 = initialize_activations(X, W)
    result = minimize(BetaNMFObjective(X, 1.0), [Block("W", W, trainable=False, per_item=False),
                                                 Block("H", H0)],
                      max_iter=20, progress=True, desc="testing")
    assert result.blocks["H"].dtype == torch.float32
    assert "testing" in capsys.readouterr().err


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_exact_zeros_in_the_start_can_recover(beta):
    # Multiplicative updates cannot move an exact zero; the floor at the smallest normal
    # float lets a needed component come back (scikit-learn's pain point).
    X, H, W = _problem(n_items=1)
    H0 = initialize_activations(X, W)
    H0[..., 2] = 0.0
    result = minimize(BetaNMFObjective(X, beta),
                      [Block("W", W, trainable=False, per_item=False), Block("H", H0)],
                      max_iter=1500, tol=0)
    recovered = result.blocks["H"][0, :, 2]
    assert float(recovered.max()) > 0.5 * float(H[0, :, 2].max())
    assert float(result.loss[0]) < 1e-2 * float(result.history[0, 0])


def test_softplus_parameterisation_keeps_blocks_positive():
    X, _, W = _problem(n_items=2)
    H0 = initialize_activations(X, W)
    result = minimize(BetaNMFObjective(X, 1.0),
                      [Block("W", W, trainable=False, per_item=False),
                       Block("H", H0, parameterization="softplus", learning_rate=0.05)],
                      solver="adam", max_iter=400, tol=0)
    assert float(result.blocks["H"].min()) > 0
    assert np.all(result.history[-1] < 0.1 * result.history[0])
    # The start is the given value, not its softplus.
    start = minimize(BetaNMFObjective(X, 1.0),
                     [Block("W", W, trainable=False, per_item=False),
                      Block("H", H0, parameterization="softplus", learning_rate=0.05)],
                     solver="adam", max_iter=0)
    assert torch.allclose(start.blocks["H"], H0, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="needs solver='adam'"):
        minimize(BetaNMFObjective(X, 1.0), [Block("W", W, trainable=False, per_item=False),
                                            Block("H", H0, parameterization="softplus")])
    with pytest.raises(ValueError, match="must be 'identity' or 'softplus'"):
        minimize(BetaNMFObjective(X, 1.0), [Block("W", W, trainable=False, per_item=False),
                                            Block("H", H0, parameterization="exp")])


def test_solver_per_block_mixes_adam_and_multiplicative_updates():
    X, _, W = _problem(n_items=2)
    generator = torch.Generator().manual_seed(1)
    W_start = (W + 0.3 * torch.rand(W.shape, generator=generator, dtype=W.dtype)).clone()
    H0 = initialize_activations(X, W_start)
    result = minimize(
        BetaNMFObjective(X, 2.0),
        [Block("W", W_start, per_item=False, nonnegative=True, learning_rate=0.01),
         Block("H", H0)],
        solver={"W": "adam", "H": "mu"}, max_iter=200, tol=0,
    )
    assert result.history[-1].max() < 0.5 * result.history[0].min()
    # Only the Adam block gets a step size; the multiplicative one needs none.
    assert set(result.learning_rates) == {"W"}
    assert (result.blocks["W"] >= 0).all()


def test_solver_per_block_is_checked():
    X, H, W = _problem(n_items=1)
    blocks = [Block("W", W, trainable=False, per_item=False), Block("H", H)]
    with pytest.raises(ValueError, match="solver must be 'mu' or 'adam'; got 'sgd' for 'H'"):
        minimize(BetaNMFObjective(X, 2.0), blocks, solver={"H": "sgd"})
    with pytest.raises(ValueError, match="solver names no method for trainable block 'H'"):
        minimize(BetaNMFObjective(X, 2.0), blocks, solver={"W": "mu"})
