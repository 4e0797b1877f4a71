"""Per-source RealNVP dictionaries (DDS-1/2), all sources evaluated as one stacked model.

Every dense layer holds ONE parameter tensor with a leading source axis; a batch
of rows with mixed labels is sorted by source once, padded to (n_groups, n_rows_max,
n_features), pushed through every block with ``torch.baddbmm`` over the source axis,
and scattered back. No Python loop over sources runs at evaluation time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import StrOptions
from torch import nn

from decomp._validation import StrictInterval, check_params
from decomp.flows.base import DictionaryFlow, bounded_log_scale, standard_normal_log_prob

__all__ = ["StackedRealNVP", "SingleSourceRealNVP"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "selu": torch.selu,
    "relu": torch.relu,
    "elu": nn.functional.elu,
    "leaky_relu": nn.functional.leaky_relu,
    "tanh": torch.tanh,
}


def _select_features(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(-1, index)`` through a 2-D view.

    On the CPU, ``index_select`` along the last axis of a 3-D tensor took 6x (a DDS-2
    search's (60, 4, 384) codes) to 15x (a training batch's (60, 64, 384)) longer than
    the same selection on its (rows, features) view, and was a quarter of a DDS-2
    search step at 384 bins.
    """
    return x.reshape(-1, x.shape[-1]).index_select(1, index).view(x.shape)


class _Permute(torch.autograd.Function):
    """``x[..., order]`` whose backward gathers by the inverse order.

    Plain indexing back-propagates through a scatter-add (``index_put_`` with
    accumulate), which cost more than the coupling nets' matmuls in a DDS search; a
    permutation's gradient is just the inverse permutation.
    """

    @staticmethod
    def forward(x: torch.Tensor, order: torch.Tensor, inverse_order: torch.Tensor):
        return _select_features(x, order)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.inverse_order = inputs[2]

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        return _select_features(gradient, ctx.inverse_order), None, None


def _permute(x: torch.Tensor, order: torch.Tensor, inverse_order: torch.Tensor) -> torch.Tensor:
    return _Permute.apply(x, order, inverse_order)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
# d activation / d input from the activation's output (what the forward pass keeps).
_ACTIVATION_BACKWARDS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "selu": lambda gradient, output: torch.ops.aten.elu_backward(
        gradient, _SELU_ALPHA, _SELU_SCALE, 1.0, True, output),
    "relu": lambda gradient, output: torch.ops.aten.threshold_backward(gradient, output, 0.0),
    "elu": lambda gradient, output: torch.ops.aten.elu_backward(
        gradient, 1.0, 1.0, 1.0, True, output),
    "leaky_relu": lambda gradient, output: torch.ops.aten.leaky_relu_backward(
        gradient, output, 0.01, True),
    "tanh": lambda gradient, output: torch.ops.aten.tanh_backward(gradient, output),
}


class _FrozenForward(torch.autograd.Function):
    """:meth:`StackedRealNVP._forward_blocks` with a hand-written input-gradient backward.

    For the DDS search: the flow's parameters are frozen, so backward needs the gradient
    with respect to the codes only. The forward pass runs without autograd and keeps
    only what that gradient needs; the backward is about a dozen tensor operations per
    block (two matrix products, the activation's and the bounded scale's derivatives, one
    gather) and computes no weight gradients. With the composed gathers and
    :func:`~decomp.flows.base.bounded_log_scale`, it took a DDS-2 search iteration (60
    notes x 4 codes, 384 bins, 2 threads, ``benchmarks/dds_speed.py``) from 8.8-11.7 ms
    to 7.7 ms.
    """

    @staticmethod
    def forward(ctx, x, flow, layers, loc, log_scale):  # noqa: ANN001, ANN205
        saved: dict = {"blocks": []}
        with torch.no_grad():
            out, log_det = flow._forward_blocks(x, layers, loc, log_scale, saved)
        ctx.flow, ctx.layers, ctx.saved = flow, layers, saved
        return out, log_det

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, out_gradient, log_det_gradient):  # noqa: ANN001, ANN205
        flow, layers = ctx.flow, ctx.layers
        activation_backward = _ACTIVATION_BACKWARDS[flow.activation]
        n_conditioning = flow.conditioning_index.shape[1]
        inverses = ctx.saved["inverses"]
        log_det_gradient = log_det_gradient.unsqueeze(-1)
        gradient = _select_features(out_gradient * ctx.saved["output_scale"], inverses[-1])
        for block in range(len(layers) - 1, -1, -1):
            transformed, activations, gate, scale = ctx.saved["blocks"][block]
            conditioning_gradient = gradient[..., :n_conditioning]
            shift_gradient = gradient[..., n_conditioning:]
            transformed_gradient = shift_gradient * scale
            # y_t = x_t * exp(s) + shift: d/ds = dy_t * x_t * exp(s), plus the log-det's 1.
            log_scale_gradient = torch.addcmul(log_det_gradient, transformed_gradient,
                                               transformed)
            # log_scale = bound * (2 sigmoid(2 raw / bound) - 1): d/d raw = 4 gate (1 - gate).
            raw_gradient = torch.ops.aten.sigmoid_backward(log_scale_gradient, gate).mul_(4)
            hidden_gradient = torch.cat([raw_gradient, shift_gradient], -1)
            for position in range(len(layers[block]) - 1, -1, -1):
                hidden_gradient = torch.bmm(hidden_gradient,
                                            layers[block][position][0].transpose(1, 2))
                if position > 0:
                    hidden_gradient = activation_backward(hidden_gradient,
                                                          activations[position - 1])
            gradient = torch.cat([conditioning_gradient + hidden_gradient,
                                  transformed_gradient], -1)
            gradient = _select_features(gradient, inverses[block])
        return gradient, None, None, None, None


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_PARAMETER_CONSTRAINTS: dict[str, list] = {
    "n_sources": [_POSITIVE_INT],
    "n_features": [StrictInterval(Integral, 2, None, closed="left")],
    "n_blocks": [_POSITIVE_INT],
    "hidden_features": [_POSITIVE_INT],
    "n_hidden_layers": [_POSITIVE_INT],
    "activation": [StrOptions(set(_ACTIVATIONS))],
    "log_scale_bound": [StrictInterval(Real, 0, None, closed="neither")],
    "random_state": [StrictInterval(Integral, None, None, closed="neither"), torch.Generator,
                     None],
}


class StackedRealNVP(DictionaryFlow):
    """``n_sources`` independent RealNVP flows on ``n_features`` dims, stacked on one axis.

    Each source ``s`` owns a flow ``f_s`` of ``n_blocks`` affine coupling blocks, as in
    DDS-1/2 (16 blocks; coupling nets are MLPs with 4 dense layers of 128 SELU units).
    Block ``b`` splits the features by a fixed random permutation into a conditioning
    half ``x_c`` (``n_features // 2`` dims) and a transformed half ``x_t``, and maps

        y_t = x_t * exp(log_scale) + shift,   (log_scale, shift) = net_{b,s}(x_c),
        log_scale = log_scale_bound * tanh(raw / log_scale_bound),

    so each block scales by at most ``exp(±log_scale_bound)`` and training cannot blow
    up. The output is written back in the original feature order; this is the usual
    "permutation between blocks" up to one fixed final permutation, and it keeps the
    flow exactly the identity at initialisation (the last layer of every coupling net is
    zero), where DDS starts its latent codes (z = 0).

    Parameters
    ----------
    n_sources : int
        Number of source models S (e.g. 88 piano notes).
    n_features : int
        Dimension F of a dictionary row (number of frequency bins), >= 2.
    n_blocks : int, default=16
        Affine coupling blocks per flow.
    hidden_features : int, default=128
        Width of the coupling MLPs.
    n_hidden_layers : int, default=4
        Hidden dense layers per coupling MLP (plus one linear output layer).
    activation : {"selu", "relu", "elu", "leaky_relu", "tanh"}, default="selu"
    log_scale_bound : float, default=2.0
        Soft bound on each block's per-dimension log-scale.
    random_state : int, torch.Generator or None, default=None
        Seeds the permutations and the initial weights; None uses torch's global RNG.

    Attributes
    ----------
    weights : ModuleList of n_blocks ParameterList of Tensor of shape (n_sources, in, out)
        ``weights[b][j]``: weight of dense layer ``j`` of block ``b``'s coupling nets,
        one tensor for all sources.
    biases : ModuleList of n_blocks ParameterList of Tensor of shape (n_sources, out)
    conditioning_index : Tensor of shape (n_blocks, n_features // 2)
        Features that condition each block (same for every source).
    transformed_index : Tensor of shape (n_blocks, n_features - n_features // 2)
    restore_order : Tensor of shape (n_blocks, n_features)
        Inverse permutation of ``cat(conditioning_index, transformed_index)``.

    Notes
    -----
    The permutations are shared by all sources: they are fixed and random, so sharing
    them costs no expressiveness and lets all sources run in one batched matmul.

    Rows are grouped by source once per call (argsort + scatter into a zero-padded
    (n_groups, n_rows_max, F) tensor) and every layer is one ``baddbmm`` over groups.
    Gathering each row's weights (``weight[labels]``) would copy a (in, out) matrix per
    row per layer (~250 MB per layer for 1000 rows at F=1025); grouping copies nothing
    when every source is present, and padding costs little when sources have about the
    same number of rows (DDS-2: the same number of components per source).

    Examples
    --------
    >>> flow = StackedRealNVP(3, 8, n_blocks=2, hidden_features=16, random_state=0)
    >>> z = torch.zeros(4, 8, requires_grad=True)
    >>> W = flow.sample(z, torch.tensor([0, 2, 2, 1]))
    >>> W.shape, flow.log_prob(W, [0, 2, 2, 1]).shape
    (torch.Size([4, 8]), torch.Size([4]))
    """

    def __init__(
        self,
        n_sources: int,
        n_features: int,
        n_blocks: int = 16,
        hidden_features: int = 128,
        n_hidden_layers: int = 4,
        activation: str = "selu",
        *,
        log_scale_bound: float = 2.0,
        random_state: int | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_params(_PARAMETER_CONSTRAINTS, {
            "n_sources": n_sources, "n_features": n_features, "n_blocks": n_blocks,
            "hidden_features": hidden_features, "n_hidden_layers": n_hidden_layers,
            "activation": activation, "log_scale_bound": log_scale_bound,
            "random_state": random_state,
        }, "StackedRealNVP")
        n_sources, n_features, n_blocks = int(n_sources), int(n_features), int(n_blocks)
        hidden_features, n_hidden_layers = int(hidden_features), int(n_hidden_layers)
        self.n_sources = n_sources
        self.n_features = n_features
        self.n_blocks = n_blocks
        self.hidden_features = hidden_features
        self.n_hidden_layers = n_hidden_layers
        self.activation = activation
        self.log_scale_bound = float(log_scale_bound)

        if isinstance(random_state, torch.Generator):
            generator: torch.Generator | None = random_state
        elif random_state is None:
            generator = None
        else:
            generator = torch.Generator().manual_seed(int(random_state))

        n_conditioning = n_features // 2
        n_transformed = n_features - n_conditioning
        permutations = torch.stack(
            [torch.randperm(n_features, generator=generator) for _ in range(n_blocks)]
        )
        self.register_buffer("conditioning_index", permutations[:, :n_conditioning].clone())
        self.register_buffer("transformed_index", permutations[:, n_conditioning:].clone())
        self.register_buffer("restore_order", torch.argsort(permutations, dim=1))

        sizes = [n_conditioning] + [hidden_features] * n_hidden_layers + [2 * n_transformed]
        # One ParameterList per block (not one tensor over blocks): indexing a block of
        # a (n_blocks, ...) parameter would make autograd allocate a full-size zero
        # gradient for every block and layer, which made backward ~5x slower.
        weights, biases = [], []
        for _ in range(n_blocks):
            block_weights, block_biases = [], []
            for position, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                weight = torch.empty(n_sources, fan_in, fan_out)
                if position == len(sizes) - 2:
                    # Zero output layer: log_scale = shift = 0, every block is the identity.
                    weight.zero_()
                else:
                    # LeCun normal, the initialisation SELU's self-normalisation assumes.
                    weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
                block_weights.append(nn.Parameter(weight))
                block_biases.append(nn.Parameter(torch.zeros(n_sources, fan_out)))
            weights.append(nn.ParameterList(block_weights))
            biases.append(nn.ParameterList(block_biases))
        self.weights = nn.ModuleList(weights)
        self.biases = nn.ModuleList(biases)
        # A per-source elementwise affine map after the last block, w = loc + exp(s) * x:
        # the identity until `initialize_from_data` sets it to each source's mean and
        # spread, so that the latent mode z = 0 decodes to the source's mean frame, where
        # DDS starts its search, and the coupling blocks only model the residual shape.
        self.output_loc = nn.Parameter(torch.zeros(n_sources, n_features))
        self.output_log_scale = nn.Parameter(torch.zeros(n_sources, n_features))

    def config(self) -> dict:
        """Constructor arguments (the weights and permutations live in the state dict)."""
        return {
            "n_sources": self.n_sources,
            "n_features": self.n_features,
            "n_blocks": self.n_blocks,
            "hidden_features": self.hidden_features,
            "n_hidden_layers": self.n_hidden_layers,
            "activation": self.activation,
            "log_scale_bound": self.log_scale_bound,
        }

    def initialize_from_data(self, W: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the output affine map to each source's per-bin mean and standard deviation.

        Sources without rows in ``W`` get the mean and spread of all rows. Spreads are
        floored at 1e-3 of the overall spread so constant bins stay invertible.
        """
        W = W.detach().to(self.output_loc.dtype)
        labels = self._check_labels(labels, W, "labels")
        overall_mean = W.mean(0)
        overall_std = W.std(0, unbiased=False)
        floor = 1e-3 * overall_std.mean().clamp_min(torch.finfo(W.dtype).tiny)
        counts = torch.bincount(labels, minlength=self.n_sources).to(W.dtype)
        sums = torch.zeros_like(self.output_loc).index_add_(0, labels, W)
        squares = torch.zeros_like(self.output_loc).index_add_(0, labels, W * W)
        present = (counts > 0).unsqueeze(1)
        mean = torch.where(present, sums / counts.clamp_min(1).unsqueeze(1), overall_mean)
        variance = squares / counts.clamp_min(1).unsqueeze(1) - mean * mean
        std = torch.where((counts > 1).unsqueeze(1), variance.clamp_min(0).sqrt(), overall_std)
        with torch.no_grad():
            self.output_loc.copy_(mean)
            self.output_log_scale.copy_(torch.log(std.clamp_min(floor)))

    def extra_repr(self) -> str:
        return (
            f"n_sources={self.n_sources}, n_features={self.n_features}, "
            f"n_blocks={self.n_blocks}, hidden_features={self.hidden_features}, "
            f"n_hidden_layers={self.n_hidden_layers}, activation={self.activation!r}"
        )

    # --------------------------------------------------------------- grouping rows
    @staticmethod
    def _group(
        labels: torch.Tensor, n_sources: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None,
               int]:
        """Where each row goes in the padded (n_groups, n_rows_max, F) layout.

        Returns
        -------
        sources : Tensor of shape (n_groups,)
            The sources present, ascending.
        order : Tensor of shape (n,) or None
            Rows sorted by source (stable).
        group : Tensor of shape (n,) or None
            Group index of ``order``'s rows.
        slot : Tensor of shape (n,) or None
            Position of ``order``'s rows inside their group.
        n_rows_max : int

        ``order``, ``group`` and ``slot`` are None when the rows are already grouped by
        source, as many per source (DDS-2's dictionary: M codes per source, in source
        order): the padded layout is then a view of the rows.
        """
        counts = torch.bincount(labels, minlength=n_sources)
        sources = torch.nonzero(counts, as_tuple=True)[0]
        n_rows_max = int(counts.max()) if labels.numel() else 0
        if sources.numel() * n_rows_max == labels.numel() and bool(
                torch.all(labels[1:] >= labels[:-1])):
            return sources, None, None, None, n_rows_max
        group_of_source = torch.cumsum(counts > 0, 0) - 1
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(labels.shape[0], device=labels.device) - starts[sorted_labels]
        return sources, order, group_of_source[sorted_labels], slot, n_rows_max

    def _layers(
        self, block: int, sources: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Block ``block``'s weights (n_groups, in, out) and biases (n_groups, 1, out)."""
        every_source = sources.numel() == self.n_sources  # then sources == arange: no copy
        layers = []
        for weight, bias in zip(self.weights[block], self.biases[block], strict=True):
            if not every_source:
                weight, bias = weight[sources], bias[sources]
            layers.append((weight, bias.unsqueeze(1)))
        return layers

    def _run(
        self, x: torch.Tensor, labels: torch.Tensor, *, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        if n == 0:
            return x.clone(), x.new_zeros(0)
        sources, order, group, slot, n_rows_max = self._group(labels, self.n_sources)
        # Rows already grouped (no order): a view, without the gather in and the scatter
        # out, which took 40 % of a DDS-2 search step.
        grouped = order is None
        if grouped:
            padded = x.reshape(sources.numel(), n_rows_max, self.n_features)
        else:
            padded = x.new_zeros(sources.numel(), n_rows_max, self.n_features)
            padded = padded.index_put((group, slot), x[order])
        every_source = sources.numel() == self.n_sources
        loc = (self.output_loc if every_source else self.output_loc[sources]).unsqueeze(1)
        log_scale = (self.output_log_scale if every_source
                     else self.output_log_scale[sources]).unsqueeze(1)
        layers = [self._layers(block, sources) for block in range(self.n_blocks)]
        if inverse:
            padded, log_det = self._inverse_blocks(padded, layers, loc, log_scale)
        elif (torch.is_grad_enabled() and padded.requires_grad
              and not any(parameter.requires_grad for parameter in self.parameters())):
            padded, log_det = _FrozenForward.apply(padded, self, layers, loc, log_scale)
        else:
            padded, log_det = self._forward_blocks(padded, layers, loc, log_scale)
        if grouped:
            return padded.reshape(n, self.n_features), log_det.reshape(n)
        out = torch.empty_like(x).index_put((order,), padded[group, slot])
        out_log_det = x.new_empty(n).index_put((order,), log_det[group, slot])
        return out, out_log_det

    def _coupling_net(
        self,
        conditioning: torch.Tensor,
        block_layers: list[tuple[torch.Tensor, torch.Tensor]],
        activations: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A block's coupling MLP on its conditioning half (n_groups, n_rows_max, F // 2).

        Returns the bounded log-scale, its sigmoid gate (see
        :func:`~decomp.flows.base.bounded_log_scale`) and the shift, each (n_groups,
        n_rows_max, F - F // 2); the hidden layers' outputs are appended to ``activations``.
        """
        activation = _ACTIVATIONS[self.activation]
        hidden = conditioning
        for position, (weight, bias) in enumerate(block_layers):
            hidden = torch.baddbmm(bias, hidden, weight)
            if position < len(block_layers) - 1:
                hidden = activation(hidden)
                if activations is not None:
                    activations.append(hidden)
        raw_scale, shift = hidden.chunk(2, dim=-1)
        log_scale, gate = bounded_log_scale(raw_scale, self.log_scale_bound)
        return log_scale, gate, shift

    def _forward_steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature gathers between the forward pass's blocks, and their inverses.

        Row ``k`` of each (n_blocks + 1, F) tensor: step 0 takes the original order to
        block 0's (conditioning half, transformed half) layout; step ``b + 1`` takes block
        ``b``'s layout straight to block ``b + 1``'s (the last one back to the original
        order), so one gather runs between blocks instead of a restore and a permute.
        """
        layouts = torch.cat([self.conditioning_index, self.transformed_index], dim=1)
        restore = self.restore_order
        steps = torch.cat([layouts[:1], restore[:-1].gather(1, layouts[1:]), restore[-1:]])
        inverses = torch.cat([restore[:1], restore[1:].gather(1, layouts[:-1]), layouts[-1:]])
        return steps, inverses

    def _forward_blocks(
        self,
        x: torch.Tensor,
        layers: list[list[tuple[torch.Tensor, torch.Tensor]]],
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        saved: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The coupling blocks and the output affine map on (n_groups, n_rows_max, F).

        Returns the mapped rows and the log-det of the blocks and the affine map,
        (n_groups, n_rows_max). With ``saved`` (a dict with a list under ``"blocks"``,
        under ``torch.no_grad``), what :class:`_FrozenForward`'s backward needs is kept:
        every block's intermediates are appended to ``"blocks"``, and the gathers'
        inverses and the output scale are stored under ``"inverses"`` and
        ``"output_scale"``.
        """
        n_conditioning = self.conditioning_index.shape[1]
        steps, inverses = self._forward_steps()

        def move(y: torch.Tensor, step: int) -> torch.Tensor:
            if saved is not None:  # no autograd: a plain gather
                return _select_features(y, steps[step])
            return _permute(y, steps[step], inverses[step])

        y = move(x, 0)
        log_det = log_scale.sum(-1).expand(y.shape[:-1])
        for block, block_layers in enumerate(layers):
            conditioning, transformed = y[..., :n_conditioning], y[..., n_conditioning:]
            activations: list[torch.Tensor] = []
            block_log_scale, gate, shift = self._coupling_net(conditioning, block_layers,
                                                              activations)
            scale = torch.exp(block_log_scale)
            log_det = log_det + block_log_scale.sum(-1)
            if saved is not None:
                saved["blocks"].append((transformed, activations, gate, scale))
            y = move(torch.cat([conditioning, torch.addcmul(shift, transformed, scale)], -1),
                     block + 1)
        output_scale = torch.exp(log_scale)
        if saved is not None:
            saved["inverses"], saved["output_scale"] = inverses, output_scale
        return torch.addcmul(loc, output_scale, y), log_det

    def _inverse_blocks(
        self,
        w: torch.Tensor,
        layers: list[list[tuple[torch.Tensor, torch.Tensor]]],
        loc: torch.Tensor,
        log_scale: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse of :meth:`_forward_blocks`, with the inverse map's log-det."""
        n_conditioning = self.conditioning_index.shape[1]
        x = (w - loc) * torch.exp(-log_scale)
        log_det = (-log_scale.sum(-1)).expand(x.shape[:-1])
        for block in range(self.n_blocks - 1, -1, -1):
            order = torch.cat([self.conditioning_index[block], self.transformed_index[block]])
            restore = self.restore_order[block]
            permuted = _permute(x, order, restore)
            conditioning = permuted[..., :n_conditioning]
            transformed = permuted[..., n_conditioning:]
            block_log_scale, _, shift = self._coupling_net(conditioning, layers[block])
            transformed = (transformed - shift) * torch.exp(-block_log_scale)
            log_det = log_det - block_log_scale.sum(-1)
            x = _permute(torch.cat([conditioning, transformed], dim=-1), restore, order)
        return x, log_det

    def _forward_and_log_det(
        self, z: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(z, labels, inverse=False)

    def _inverse_and_log_det(
        self, w: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(w, labels, inverse=True)

    # ----------------------------------------------------------- loop reference
    def per_source_module(self, source: int) -> SingleSourceRealNVP:
        """A plain (unstacked) copy of source ``source``'s flow, built from ``nn.Linear``.

        For tests and benchmarks: it holds detached copies of the parameters, so later
        changes to this model do not reach it.
        """
        check_params({"source": [StrictInterval(Integral, 0, self.n_sources - 1, closed="both")]},
                     {"source": source}, "StackedRealNVP.per_source_module")
        return SingleSourceRealNVP(self, int(source))


class SingleSourceRealNVP(nn.Module):
    """One source of a :class:`StackedRealNVP` as an ordinary RealNVP (reference only).

    Parameters
    ----------
    stacked : StackedRealNVP
    source : int
    """

    def __init__(self, stacked: StackedRealNVP, source: int) -> None:
        super().__init__()
        self.n_features = stacked.n_features
        self.log_scale_bound = stacked.log_scale_bound
        self.activation = _ACTIVATIONS[stacked.activation]
        self.register_buffer("conditioning_index", stacked.conditioning_index.clone())
        self.register_buffer("transformed_index", stacked.transformed_index.clone())
        self.register_buffer("restore_order", stacked.restore_order.clone())
        nets = []
        for block in range(stacked.n_blocks):
            linears = []
            for weight, bias in zip(
                stacked.weights[block], stacked.biases[block], strict=True
            ):
                fan_in, fan_out = weight.shape[1:]
                linear = nn.Linear(fan_in, fan_out, dtype=weight.dtype, device=weight.device)
                with torch.no_grad():
                    linear.weight.copy_(weight[source].T)
                    linear.bias.copy_(bias[source])
                linears.append(linear)
            nets.append(nn.ModuleList(linears))
        self.nets = nn.ModuleList(nets)
        self.register_buffer("output_loc", stacked.output_loc.detach()[source].clone())
        self.register_buffer("output_log_scale",
                             stacked.output_log_scale.detach()[source].clone())

    def _net(self, block: int, x: torch.Tensor) -> torch.Tensor:
        linears = self.nets[block]
        for position, linear in enumerate(linears):
            x = linear(x)
            if position < len(linears) - 1:
                x = self.activation(x)
        return x

    def forward_and_log_det(
        self, z: torch.Tensor, *, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (n, F) rows forward (or back with ``inverse=True``); log-det (n,)."""
        x = z
        log_det = z.new_zeros(z.shape[0])
        if inverse:
            x = (x - self.output_loc) * torch.exp(-self.output_log_scale)
            log_det = log_det - self.output_log_scale.sum()
        n_blocks = len(self.nets)
        for block in (range(n_blocks - 1, -1, -1) if inverse else range(n_blocks)):
            conditioning = x[:, self.conditioning_index[block]]
            transformed = x[:, self.transformed_index[block]]
            raw_scale, shift = self._net(block, conditioning).chunk(2, dim=-1)
            bound = self.log_scale_bound
            log_scale = bound * torch.tanh(raw_scale / bound)
            if inverse:
                transformed = (transformed - shift) * torch.exp(-log_scale)
                log_det = log_det - log_scale.sum(-1)
            else:
                transformed = transformed * torch.exp(log_scale) + shift
                log_det = log_det + log_scale.sum(-1)
            x = torch.cat([conditioning, transformed], dim=-1)[:, self.restore_order[block]]
        if not inverse:
            x = self.output_loc + torch.exp(self.output_log_scale) * x
            log_det = log_det + self.output_log_scale.sum()
        return x, log_det

    def inverse_and_log_det(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse map of (n, F) rows; log-det (n,)."""
        return self.forward_and_log_det(w, inverse=True)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """Log-density of (n, F) rows, shape (n,)."""
        z, log_det = self.inverse_and_log_det(w)
        return standard_normal_log_prob(z) + log_det
