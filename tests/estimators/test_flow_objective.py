"""The DDS objective's flow pass: one pass per set of codes, reused with its graph."""

from __future__ import annotations

import pytest
import torch

from decomp.engine import Block, minimize
from decomp.estimators.flow_objective import FlowDictionaryObjective
from decomp.flows import ConditionalGlow, StackedRealNVP

N_SOURCES, N_BINS, N_COMPONENTS = 3, 12, 2


def _flow(kind: str) -> torch.nn.Module:
    if kind == "realnvp":
        flow = StackedRealNVP(N_SOURCES, N_BINS, n_blocks=3, hidden_features=16,
                              n_hidden_layers=1, random_state=0)
    else:
        flow = ConditionalGlow(N_SOURCES, N_BINS, n_steps=3, hidden_features=16,
                               random_state=0)
    for parameter in flow.parameters():
        parameter.requires_grad_(False)
    return flow.eval()


class _CountingObjective(FlowDictionaryObjective):
    """Counts flow passes; ``reuse=False`` never keeps a graph (every latent step runs
    its own pass, as before the reuse)."""

    def __init__(self, *args, reuse: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reuse, self.passes = reuse, 0

    def dictionary_and_nll(self, Z):
        if not self.reuse:
            self._latent_gradients = False
        return super().dictionary_and_nll(Z)

    def _flow_pass(self, Z):
        self.passes += 1
        return super()._flow_pass(Z)


def _problem(kind: str, per_frame: bool = False, **kwargs):
    generator = torch.Generator().manual_seed(1)
    flow = _flow(kind)
    labels = torch.arange(N_SOURCES).repeat_interleave(N_COMPONENTS)
    n_frames = 7
    X = torch.rand(2, n_frames, N_BINS, generator=generator) + 0.1
    objective = _CountingObjective(X, flow=flow, labels=labels, per_frame=per_frame,
                                   likelihood_weight=0.5, **kwargs)
    # DDS-1: a code per frame and entry; DDS-2/3: codes shared by the item's frames.
    codes_shape = (2, n_frames, labels.numel()) if per_frame else (2, labels.numel())
    Z = 0.3 * torch.randn(*codes_shape, flow.n_latent, generator=generator)
    H = torch.rand(2, n_frames, labels.numel(), generator=generator)
    return objective, Z, H


def _gradient(objective, Z, H):
    leaf = Z.detach().requires_grad_(True)
    loss = objective.loss({"Z": leaf, "H": H}).sum()
    (gradient,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), gradient


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
@pytest.mark.parametrize("per_frame", [False, True])
def test_a_reused_pass_gives_the_values_and_gradients_of_a_fresh_one(kind, per_frame):
    objective, Z, H = _problem(kind, per_frame)
    fresh, _, _ = _problem(kind, per_frame)
    _gradient(objective, Z, H)  # a latent step: passes after it keep their graph
    Z = Z + 0.1  # new codes, as after the step
    H_next = objective.multiplicative_update("H", {"Z": Z, "H": H})  # runs the pass
    assert objective.passes == 2
    loss, gradient = _gradient(objective, Z, H_next)  # reuses it
    assert objective.passes == 2
    expected_loss, expected_gradient = _gradient(fresh, Z, H_next)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_the_search_runs_one_flow_pass_per_iteration_with_the_same_result(kind):
    results, passes = [], []
    for reuse in (True, False):
        objective, Z, H = _problem(kind, reuse=reuse)
        result = minimize(objective, [Block("Z", Z, learning_rate=0.02),
                                      Block("H", H, nonnegative=True, learning_rate=0.01)],
                          schedule=("Z", "H"), solver={"Z": "adam", "H": "mu"},
                          max_iter=20, check_every=5)
        results.append(result)
        passes.append(objective.passes)
    # The initial loss and the first latent step run a pass each; after them, one pass
    # per iteration (the activation step's, reused by the next latent step) instead of two.
    assert passes[0] == 2 + 20
    assert passes[1] == 1 + 2 * 20
    for name in ("Z", "H"):
        torch.testing.assert_close(results[0].blocks[name], results[1].blocks[name],
                                   rtol=0, atol=0)
    torch.testing.assert_close(torch.as_tensor(results[0].history),
                               torch.as_tensor(results[1].history), rtol=0, atol=0)


def test_the_dictionary_given_outside_a_latent_step_carries_no_graph():
    objective, Z, H = _problem("glow")
    _gradient(objective, Z, H)
    W = objective.dictionary({"Z": Z, "H": H})  # kept with a graph for the next step
    assert not W.requires_grad
    with torch.no_grad():
        assert not objective.dictionary({"Z": Z, "H": H}).requires_grad


def test_changing_the_codes_in_place_invalidates_the_cached_pass():
    objective, Z, H = _problem("realnvp")
    before = objective.dictionary({"Z": Z, "H": H}).clone()
    with torch.no_grad():
        Z.add_(0.5)
    after = objective.dictionary({"Z": Z, "H": H})
    assert objective.passes == 2
    assert not torch.equal(before, after)
    fresh, _, _ = _problem("realnvp")
    torch.testing.assert_close(after, fresh.dictionary({"Z": Z, "H": H}), rtol=0, atol=0)


def test_shared_codes_act_as_each_entrys_own_copy_of_its_code():
    # Entry k of every source from code k (DDS-3's shared_codes).
    code_index = torch.arange(N_COMPONENTS).repeat(N_SOURCES)
    objective, Z, H = _problem("glow")
    shared_objective, _, _ = _problem("glow", code_index=code_index)
    shared = Z[:, :N_COMPONENTS]
    copies = shared.index_select(-2, code_index)
    torch.testing.assert_close(shared_objective.dictionary({"Z": shared, "H": H}),
                               objective.dictionary({"Z": copies, "H": H}), rtol=0, atol=0)
    loss, gradient = _gradient(shared_objective, shared, H)
    expected_loss, per_entry = _gradient(objective, copies, H)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    # A shared code moves with the sum of what its entries' own codes would feel.
    expected = torch.zeros_like(shared).index_add_(-2, code_index, per_entry)
    torch.testing.assert_close(gradient, expected)
