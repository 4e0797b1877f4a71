"""NflowsDictionary (nflows flows as dictionaries), and StackedRealNVP against nflows."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from nflows.distributions import ConditionalDiagonalNormal, StandardNormal
from nflows.flows import Flow
from nflows.transforms import (
    AffineCouplingTransform,
    CompositeTransform,
    InverseTransform,
    PointwiseAffineTransform,
    ReversePermutation,
)
from torch import nn

import decomp
from decomp import DDS2
from decomp.exceptions import ModelFileError
from decomp.flows import NflowsDictionary, StackedRealNVP, fit_flow
from decomp.metrics import precision_of_source_attribution
from tests.estimators.test_dds import N_SOURCES, planted, training_frames  # noqa: F401

BUILDERS = ["affine_coupling", "masked_autoregressive"]


def _dictionary(builder: str, conditional: bool, **kwargs) -> NflowsDictionary:
    make = getattr(NflowsDictionary, builder)
    return make(3, 5, n_layers=2, hidden_features=8, conditional=conditional,
                random_state=0, **kwargs)


def _randomize(module: nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Non-trivial weights (nflows nets and the output map start near the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator,
                                              dtype=torch.float64))


LABELS = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1])


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("builder", BUILDERS)
def test_round_trip_and_log_prob_is_change_of_variables(builder, conditional):
    flow = _dictionary(builder, conditional).double()
    _randomize(flow)
    z = torch.randn(8, 5, dtype=torch.float64)
    W, log_det = flow.forward_and_log_det(z, LABELS)
    z_back, inverse_log_det = flow.inverse_and_log_det(W, LABELS)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-10, rtol=0)
    # log p(W) = log N(f^{-1}(W)) + log|det J_{f^{-1}}(W)|, the Jacobian by autograd.
    for row in range(8):
        label = LABELS[row:row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda w, label=label: flow.inverse(w.unsqueeze(0), label)[0], W[row])
        expected = (torch.distributions.Normal(0.0, 1.0).log_prob(z[row]).sum()
                    + torch.linalg.slogdet(jacobian).logabsdet)
        torch.testing.assert_close(flow.log_prob(W[row:row + 1], label)[0], expected,
                                   atol=1e-9, rtol=0)
    # The forward-only density (what DDS's penalty uses) agrees with nflows' log_prob.
    torch.testing.assert_close(flow.sample_and_log_prob(z, LABELS)[1],
                               flow.log_prob(W, LABELS), atol=1e-9, rtol=0)


def test_per_source_rows_go_through_their_own_flow():
    flow = _dictionary("affine_coupling", False).double()
    _randomize(flow)
    z = torch.randn(8, 5, dtype=torch.float64)
    W = flow.sample(z, LABELS)
    for source in range(3):
        rows = LABELS == source
        alone = flow.flows[source]._transform.inverse(z[rows])[0]
        expected = flow.output_loc[source] + torch.exp(flow.output_log_scale[source]) * alone
        torch.testing.assert_close(W[rows], expected)
    assert flow.sample(z[:0], LABELS[:0]).shape == (0, 5)
    assert flow.log_prob(W[:0], LABELS[:0]).shape == (0,)


def test_conditional_flow_sees_the_label_and_embeds_it():
    flow = _dictionary("affine_coupling", True, embedding_features=2).double()
    _randomize(flow)
    assert flow.flows[0]._embedding_net.weight.shape == (2, 3)
    z = torch.randn(1, 5, dtype=torch.float64).expand(3, 5)
    W = flow.sample(z, [0, 1, 2])
    assert not torch.allclose(W[0], W[1]) and not torch.allclose(W[1], W[2])


def test_a_hand_built_flow_works_in_memory_and_refuses_to_save(tmp_path):
    flows = [Flow(CompositeTransform([ReversePermutation(4)]), StandardNormal([4]))
             for _ in range(2)]
    flow = NflowsDictionary(flows, standardize=False)
    W = torch.randn(3, 4)
    torch.testing.assert_close(flow.inverse(W, [0, 1, 1]), W.flip(1))
    assert flow.config()["builder"] is None
    model = DDS2.from_flow(flow, [1, 2])
    with pytest.raises(TypeError, match="NflowsDictionary.affine_coupling"):
        model.save(tmp_path / "custom.decomp")
    assert not (tmp_path / "custom.decomp").exists()


def test_bad_flows_are_refused():
    with pytest.raises(ValueError, match="StandardNormal"):
        NflowsDictionary([Flow(ReversePermutation(4), ConditionalDiagonalNormal([4]))])
    with pytest.raises(ValueError, match="same number of features"):
        NflowsDictionary([Flow(ReversePermutation(4), StandardNormal([4])),
                          Flow(ReversePermutation(3), StandardNormal([3]))])
    with pytest.raises(ValueError, match="'n_sources' parameter of NflowsDictionary must be"):
        NflowsDictionary(Flow(ReversePermutation(4), StandardNormal([4])))
    with pytest.raises(TypeError, match="nflows.flows.Flow"):
        NflowsDictionary([nn.Linear(4, 4)])
    with pytest.raises(ValueError, match="'n_layers' parameter of NflowsDictionary"):
        NflowsDictionary.affine_coupling(2, 4, n_layers=0)
    with pytest.raises(ValueError, match="'activation'"):
        NflowsDictionary.masked_autoregressive(2, 4, activation="gelu")
    with pytest.raises(ValueError, match="needs conditional=True"):
        NflowsDictionary.affine_coupling(2, 4, embedding_features=3)


def test_builders_are_reproducible_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first = _dictionary("affine_coupling", False)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = _dictionary("affine_coupling", False)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("builder", BUILDERS)
def test_save_and_load_rebuild_through_the_builder(builder, conditional, tmp_path):
    flow = _dictionary(builder, conditional)
    _randomize(flow)
    flow = flow.float()
    model = DDS2.from_flow(flow, [10, 20, 30], n_components_per_source=1)
    loaded = decomp.load(model.save(tmp_path / "model.decomp"))
    restored = loaded.flow_
    assert isinstance(restored, NflowsDictionary)
    assert restored.config() == flow.config()
    W = torch.rand(8, 5)
    torch.testing.assert_close(restored.log_prob(W, LABELS), flow.log_prob(W, LABELS))


def test_from_dict_refuses_unknown_builders_and_arguments():
    state = _dictionary("affine_coupling", False).to_dict()
    for config in ({**state["config"], "builder": "os.system"},
                   {**state["config"], "extra": 1},
                   {**state["config"], "n_layers": -1}):
        with pytest.raises(ModelFileError):
            NflowsDictionary.from_dict({"config": config, "state": state["state"]})


def _moons(n_per_source: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    angle = rng.uniform(0, np.pi, 3 * n_per_source)
    labels = np.repeat(np.arange(3), n_per_source)
    X = np.stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), angle / 3, angle], 1)
    X = X * (1 + labels[:, None]) + 2 * labels[:, None] + rng.normal(0, 0.05, X.shape)
    return X.astype(np.float32), labels


@pytest.mark.parametrize("conditional", [False, True])
def test_fit_flow_trains_an_nflows_dictionary(conditional):
    X, y = _moons()
    flow = _dictionary("affine_coupling", conditional)
    result = fit_flow(flow, X, y, max_epochs=8, batch_size=64, learning_rate=3e-3)
    assert result.best_validation_loss < result.validation_loss[0]
    # Before training, the output map is set from the data: the mode z = 0 decodes to
    # each source's mean frame, where DDS starts its search.
    fresh = _dictionary("affine_coupling", conditional)
    fit_flow(fresh, X, y, max_epochs=0, validation_fraction=0)
    means = np.stack([X[y == source].mean(0) for source in range(3)])
    np.testing.assert_allclose(fresh.output_loc.detach().numpy(), means, atol=1e-4)
    np.testing.assert_allclose(fresh.sample(torch.zeros(3, 5), [0, 1, 2]).detach().numpy(),
                               means, atol=1e-4)


@pytest.mark.parametrize("conditional", [False, True])
def test_dds2_with_an_nflows_dictionary_recovers_a_planted_decomposition(
        conditional, training_frames, planted):  # noqa: F811
    X, labels = training_frames
    flow = NflowsDictionary.affine_coupling(
        N_SOURCES, X.shape[1], n_layers=4, hidden_features=32, conditional=conditional,
        random_state=0)
    result = fit_flow(flow, X, labels - labels.min(), max_epochs=20, batch_size=128,
                      learning_rate=1e-3)
    assert result.best_validation_loss < result.validation_loss[0]
    model = DDS2(flow=flow, n_components_per_source=2, max_iter=200,
                 random_state=0).fit(X, labels)
    mixture, roll = planted
    activity = model.source_activations(mixture)
    assert precision_of_source_attribution(activity, roll) > 0.9
    assert roll[np.arange(30), activity.argmax(1)].all()


# ------------------------------------------------------ StackedRealNVP against nflows
class _NflowsCouplingNet(nn.Module):
    """One StackedRealNVP coupling net, speaking nflows' AffineCouplingTransform protocol.

    nflows hands the net the identity features in ascending index order and reads
    ``[shift, unconstrained_scale]`` for the transformed features in ascending order,
    with ``scale = sigmoid(unconstrained_scale + 2) + 1e-3``. StackedRealNVP orders
    both halves by its block permutation and uses ``scale = exp(b * tanh(raw / b))``.
    This net reorders the input, runs the copied MLP, and converts the scale exactly:
    ``unconstrained = logit(scale - 1e-3) - 2``, which needs ``scale < 1 + 1e-3``; the
    test chooses weights that keep every scale below 1 and checks that it did.
    """

    def __init__(self, reference, block: int, conditioning, transformed, bound: float):
        super().__init__()
        self.reference, self.block, self.bound = reference, block, bound
        # Our conditioning order, read from nflows' ascending order.
        self.register_buffer("to_ours", torch.argsort(torch.argsort(conditioning)))
        # nflows' ascending transformed order, read from ours.
        self.register_buffer("to_nflows", torch.argsort(transformed))
        self.max_scale = 0.0

    def forward(self, identity: torch.Tensor, context=None) -> torch.Tensor:
        raw_scale, shift = self.reference._net(self.block, identity[:, self.to_ours]) \
            .chunk(2, dim=-1)
        scale = torch.exp(self.bound * torch.tanh(raw_scale / self.bound))
        self.max_scale = max(self.max_scale, float(scale.detach().max()))
        unconstrained = torch.logit(scale - 1e-3) - 2
        return torch.cat([shift[:, self.to_nflows], unconstrained[:, self.to_nflows]], 1)


def _nflows_copy(stacked: StackedRealNVP, source: int) -> tuple[CompositeTransform, list]:
    """Source ``source`` of ``stacked`` as nflows AffineCouplingTransforms (z -> W)."""
    reference = stacked.per_source_module(source)
    layers, nets = [], []
    for block in range(stacked.n_blocks):
        conditioning = stacked.conditioning_index[block]
        transformed = stacked.transformed_index[block]
        mask = torch.zeros(stacked.n_features)
        mask[transformed] = 1
        net = _NflowsCouplingNet(reference, block, conditioning, transformed,
                                 stacked.log_scale_bound)
        nets.append(net)
        layers.append(AffineCouplingTransform(mask, lambda n_in, n_out, net=net: net))
    layers.append(PointwiseAffineTransform(
        shift=stacked.output_loc.detach()[source],
        scale=torch.exp(stacked.output_log_scale.detach()[source])))
    return CompositeTransform(layers), nets


def test_stacked_realnvp_matches_nflows_affine_coupling_transforms():
    """StackedRealNVP equals a CompositeTransform of nflows AffineCouplingTransforms.

    Every source's coupling nets are copied (via ``per_source_module``) into nflows
    ``AffineCouplingTransform`` s whose masks mark each block's transformed features;
    the scale parametrisations differ (ours ``exp(b tanh(raw / b))``, nflows'
    ``sigmoid(u + 2) + 1e-3``), so the copied net converts its output exactly (see
    :class:`_NflowsCouplingNet`) and the comparison is of the coupling maps. The final
    per-source affine map is nflows' ``PointwiseAffineTransform``. Outputs and log-dets
    agree to 1e-5 both ways, and so do densities (nflows' ``Flow.log_prob`` with the
    inverted transform) and an :class:`NflowsDictionary` over the copies.
    """
    stacked = StackedRealNVP(3, 7, n_blocks=3, hidden_features=12, n_hidden_layers=2,
                             activation="tanh", random_state=0).double()
    generator = torch.Generator().manual_seed(1)
    n_transformed = stacked.transformed_index.shape[1]
    with torch.no_grad():
        for block in range(stacked.n_blocks):
            for weight, bias in zip(stacked.weights[block], stacked.biases[block],
                                    strict=True):
                weight.copy_(0.5 * torch.randn(weight.shape, generator=generator,
                                               dtype=torch.float64))
                bias.copy_(0.3 * torch.randn(bias.shape, generator=generator,
                                             dtype=torch.float64))
            # Raw scales around -3 (scales about 0.15 to 0.2): exactly representable by
            # nflows' sigmoid parametrisation, whose scales stay below 1 + 1e-3.
            stacked.weights[block][-1][..., :n_transformed].mul_(0.1)
            stacked.biases[block][-1][..., :n_transformed].fill_(-3.0)
        stacked.output_loc.copy_(torch.randn(3, 7, generator=generator, dtype=torch.float64))
        stacked.output_log_scale.copy_(0.3 * torch.randn(3, 7, generator=generator,
                                                         dtype=torch.float64))

    z = torch.randn(30, 7, generator=generator, dtype=torch.float64)
    labels = torch.arange(30) % 3
    W, log_det = stacked.forward_and_log_det(z, labels)
    z_back, inverse_log_det = stacked.inverse_and_log_det(W, labels)
    per_source_flows = []
    for source in range(3):
        rows = labels == source
        transform, nets = _nflows_copy(stacked, source)
        W_nflows, log_det_nflows = transform(z[rows])
        z_nflows, inverse_log_det_nflows = transform.inverse(W[rows])
        assert max(net.max_scale for net in nets) < 1.0  # the conversion was exact
        torch.testing.assert_close(W_nflows, W[rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(log_det_nflows, log_det[rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(z_nflows, z_back[rows], atol=1e-5, rtol=0)
        torch.testing.assert_close(inverse_log_det_nflows, inverse_log_det[rows],
                                   atol=1e-5, rtol=0)
        flow = Flow(InverseTransform(transform), StandardNormal([7]))
        torch.testing.assert_close(flow.log_prob(W[rows]), stacked.log_prob(W[rows],
                                   labels[rows]), atol=1e-5, rtol=0)
        per_source_flows.append(flow)
    adapter = NflowsDictionary(per_source_flows, standardize=False).double()
    torch.testing.assert_close(adapter.sample_and_log_prob(z, labels)[0], W, atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(adapter.log_prob(W, labels), stacked.log_prob(W, labels),
                               atol=1e-5, rtol=0)


def test_the_library_imports_nflows_only_when_an_adapter_is_built():
    code = ("import sys, decomp, decomp.flows; assert 'nflows' not in sys.modules; "
            "decomp.flows.NflowsDictionary.affine_coupling(2, 4); "
            "assert 'nflows' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
