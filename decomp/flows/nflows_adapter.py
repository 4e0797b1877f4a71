"""nflows flows as DDS dictionaries: :class:`NflowsDictionary`.

An nflows ``Flow`` pairs a transform that maps *data to noise* with a base
distribution. A dictionary flow maps latent codes to frames, ``W = f(z)``, so the
adapter runs nflows' ``transform.inverse(z, context)`` to sample and
``transform(W, context)`` (or ``Flow.log_prob``) for densities. Two layouts:

- one unconditional ``Flow`` per source (a list): rows are grouped by label once per
  call and each source's rows go through its flow in one batch;
- one conditional ``Flow`` whose context is the one-hot source label (optionally
  embedded by the flow's ``embedding_net``): every row in one batch.

nflows is imported only here, and only when an adapter is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

import torch
from sklearn.utils._param_validation import StrOptions
from torch import nn

from decomp._validation import StrictInterval, check_params
from decomp.exceptions import ModelFileError
from decomp.flows.base import DictionaryFlow

__all__ = ["NflowsDictionary"]

# Activations the builders accept, by name (the name is what a model file records).
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "elu": nn.functional.elu,
    "tanh": torch.tanh,
    "selu": torch.selu,
}


def _import_nflows() -> Any:
    try:
        import nflows.distributions
        import nflows.flows
        import nflows.nn.nets
        import nflows.transforms
        import nflows.utils.torchutils
    except ImportError as error:  # pragma: no cover - nflows is a dependency
        raise ImportError(
            "NflowsDictionary needs the 'nflows' package: pip install nflows."
        ) from error
    return nflows


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_BUILDER_CONSTRAINTS: dict[str, list] = {
    "n_sources": [_POSITIVE_INT],
    "n_features": [StrictInterval(Integral, 2, None, closed="left")],
    "n_layers": [_POSITIVE_INT],
    "hidden_features": [_POSITIVE_INT],
    "n_blocks_per_net": [_POSITIVE_INT],
    "activation": [StrOptions(set(_ACTIVATIONS))],
    "conditional": ["boolean"],
    "embedding_features": [_POSITIVE_INT, None],
    "standardize": ["boolean"],
    "random_state": [StrictInterval(Integral, None, None, closed="neither"), None],
}
_INTEGER_ARGUMENTS = ("n_sources", "n_features", "n_layers", "hidden_features",
                      "n_blocks_per_net", "embedding_features", "random_state")


def _check_builder_arguments(builder: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate a builder's arguments (also those read from a model file)."""
    check_params(_BUILDER_CONSTRAINTS, arguments, f"NflowsDictionary.{builder}")
    checked = dict(arguments)
    for name in _INTEGER_ARGUMENTS:  # NumPy integers become ints (a model file is JSON)
        if checked[name] is not None:
            checked[name] = int(checked[name])
    for name in ("conditional", "standardize"):
        checked[name] = bool(checked[name])
    if checked["embedding_features"] is not None and not checked["conditional"]:
        raise ValueError(
            f"The 'embedding_features' parameter of NflowsDictionary.{builder} needs "
            "conditional=True (only a conditional flow takes the label as context)."
        )
    return checked


def _zero(layer: nn.Module) -> None:
    """Zero a net's output layer: every shift is 0, so each layer maps z = 0 to 0.

    The builders' flows then decode the latent mode to ``output_loc`` (each source's
    mean once :meth:`NflowsDictionary.initialize_from_data` ran), where DDS starts.
    """
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()


def _build(builder: str, arguments: dict[str, Any]) -> list[nn.Module]:
    """The nflows ``Flow``(s) of a named builder: one per source, or one conditional."""
    nflows = _import_nflows()
    transforms = nflows.transforms
    n_sources, n_features = arguments["n_sources"], arguments["n_features"]
    conditional = arguments["conditional"]
    embedding = arguments["embedding_features"]
    context_features = (embedding or n_sources) if conditional else None
    activation = _ACTIVATIONS[arguments["activation"]]

    def layer(index: int) -> list[nn.Module]:
        if builder == "affine_coupling":
            def net(in_features: int, out_features: int) -> nn.Module:
                return nflows.nn.nets.ResidualNet(
                    in_features, out_features, arguments["hidden_features"],
                    context_features=context_features,
                    num_blocks=arguments["n_blocks_per_net"], activation=activation)

            mask = nflows.utils.torchutils.create_alternating_binary_mask(
                n_features, even=index % 2 == 0)
            coupling = transforms.AffineCouplingTransform(mask, net)
            _zero(coupling.transform_net.final_layer)
            return [coupling]
        autoregressive = transforms.MaskedAffineAutoregressiveTransform(
            n_features, arguments["hidden_features"], context_features=context_features,
            num_blocks=arguments["n_blocks_per_net"], activation=activation)
        _zero(autoregressive.autoregressive_net.final_layer)
        return [autoregressive, transforms.ReversePermutation(n_features)]

    def flow() -> nn.Module:
        layers = [module for index in range(arguments["n_layers"]) for module in layer(index)]
        embedding_net = (nn.Linear(n_sources, embedding, bias=False)
                         if conditional and embedding else None)
        return nflows.flows.Flow(
            transforms.CompositeTransform(layers),
            nflows.distributions.StandardNormal([n_features]),
            embedding_net=embedding_net)

    seed = arguments["random_state"]
    scope = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with scope:
        if seed is not None:
            torch.manual_seed(seed)
        return [flow()] if conditional else [flow() for _ in range(n_sources)]


class NflowsDictionary(DictionaryFlow):
    """Any nflows ``Flow`` as a dictionary flow: per source, or conditional on the label.

    ``W = f_s(z)`` is nflows' ``transform.inverse(z, context)`` (nflows' transforms map
    data to noise), optionally followed by a per-source elementwise affine map
    ``W = loc_s + exp(log_scale_s) * f_s(z)`` that :func:`~decomp.flows.fit_flow` sets
    to each source's mean and spread before training (as in
    :class:`~decomp.flows.StackedRealNVP`), so that the latent mode ``z = 0``, where
    DDS starts its search, decodes near the source's mean frame.

    Prefer the builders :meth:`affine_coupling` and :meth:`masked_autoregressive`:
    only a flow made by a builder can be saved, because a model file records the
    builder's name and arguments and :meth:`from_dict` rebuilds through a fixed table
    of builders (loading never imports a class named in a file). A flow built by hand
    works in memory (training, DDS search) but ``save`` refuses it.

    Parameters
    ----------
    flows : nflows Flow or sequence of nflows Flow
        A sequence: one unconditional flow per source, in source order. A single flow:
        conditional, its context the one-hot label of shape (n, n_sources) (the flow's
        ``embedding_net`` may embed it); give ``n_sources`` then.
    n_sources : int, optional
        Number of sources; required for a single conditional flow, else ``len(flows)``.
    standardize : bool, default=True
        Add the per-source output affine map described above (identity until
        ``initialize_from_data``).

    Raises
    ------
    TypeError
        If a flow is not an nflows ``Flow``.
    ValueError
        If a base distribution is not nflows' ``StandardNormal`` on one axis (the
        dictionary interface assumes a standard normal latent, whose mode DDS starts
        from), the flows disagree on the number of features, or ``n_sources`` is wrong.

    Notes
    -----
    A list of per-source flows runs one batch per source present (a Python loop over
    sources, unlike the stacked RealNVP); a conditional flow runs every row at once.
    Masked autoregressive flows sample (``z -> W``, DDS's direction) by ``n_features``
    sequential passes, so for many bins :meth:`affine_coupling` searches faster.

    Examples
    --------
    >>> flow = NflowsDictionary.affine_coupling(3, 8, n_layers=2, hidden_features=16,
    ...                                         random_state=0)
    >>> W = flow.sample(torch.zeros(4, 8), [0, 2, 2, 1])
    >>> W.shape, flow.log_prob(W, [0, 2, 2, 1]).shape
    (torch.Size([4, 8]), torch.Size([4]))
    """

    # Builder name -> its keyword arguments' defaults. A model file may name only these.
    _BUILDER_DEFAULTS: dict[str, dict[str, Any]] = {
        name: {"n_layers": 4, "hidden_features": 64, "n_blocks_per_net": 2,
               "activation": "relu", "conditional": False, "embedding_features": None,
               "standardize": True, "random_state": None}
        for name in ("affine_coupling", "masked_autoregressive")
    }

    def __init__(
        self,
        flows: Any,
        *,
        n_sources: int | None = None,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        nflows = _import_nflows()
        conditional = not isinstance(flows, (Sequence, nn.ModuleList))
        flow_list = [flows] if conditional else list(flows)
        if not flow_list:
            raise ValueError("flows must hold at least one nflows Flow; got none.")
        n_features = None
        for index, flow in enumerate(flow_list):
            if not isinstance(flow, nflows.flows.Flow):
                raise TypeError(
                    f"flows[{index}] must be an nflows.flows.Flow; got {type(flow).__name__}."
                    if not conditional else
                    f"flows must be an nflows.flows.Flow or a sequence of them; got "
                    f"{type(flow).__name__}."
                )
            base = flow._distribution
            shape = tuple(getattr(base, "_shape", ()))
            if not isinstance(base, nflows.distributions.StandardNormal) or len(shape) != 1:
                raise ValueError(
                    "every flow's base distribution must be nflows' StandardNormal([n_features"
                    f"]); got {type(base).__name__} of shape {shape}. The dictionary interface "
                    "assumes a standard normal latent (DDS starts its search at its mode)."
                )
            if n_features is not None and shape[0] != n_features:
                raise ValueError(
                    f"all flows must model the same number of features; flows[{index}] has "
                    f"{shape[0]}, flows[0] has {n_features}."
                )
            n_features = shape[0]
        # A single conditional flow's context is the one-hot label of n_sources entries.
        check_params({"n_sources": [_POSITIVE_INT] if conditional else [_POSITIVE_INT, None],
                      "standardize": ["boolean"]},
                     {"n_sources": n_sources, "standardize": standardize}, "NflowsDictionary")
        if not conditional and n_sources is not None and n_sources != len(flow_list):
            raise ValueError(
                f"n_sources must equal the number of per-source flows ({len(flow_list)}); "
                f"got {n_sources!r}."
            )
        self.flows = nn.ModuleList(flow_list)
        self.conditional = conditional
        self.n_sources = int(n_sources) if conditional else len(flow_list)
        self.n_features = int(n_features)
        self.standardize = bool(standardize)
        if standardize:
            self.output_loc = nn.Parameter(torch.zeros(self.n_sources, self.n_features))
            self.output_log_scale = nn.Parameter(torch.zeros(self.n_sources, self.n_features))
        # (builder name, its arguments) when a builder made this flow: what saving records.
        self._builder: tuple[str, dict[str, Any]] | None = None

    # ---------------------------------------------------------------------- builders
    @classmethod
    def affine_coupling(
        cls,
        n_sources: int,
        n_features: int,
        *,
        n_layers: int = 4,
        hidden_features: int = 64,
        n_blocks_per_net: int = 2,
        activation: str = "relu",
        conditional: bool = False,
        embedding_features: int | None = None,
        standardize: bool = True,
        random_state: int | None = None,
    ) -> NflowsDictionary:
        """RealNVP from nflows: ``n_layers`` ``AffineCouplingTransform`` s, alternating masks.

        Each coupling's net is an nflows ``ResidualNet`` (``n_blocks_per_net`` residual
        blocks of ``hidden_features`` units); the base is ``StandardNormal``.

        Parameters
        ----------
        n_sources : int
        n_features : int
            Dimension of a dictionary row (frequency bins), >= 2.
        n_layers : int, default=4
        hidden_features : int, default=64
        n_blocks_per_net : int, default=2
        activation : {"relu", "elu", "tanh", "selu"}, default="relu"
        conditional : bool, default=False
            One flow whose nets take the one-hot label as context, instead of one flow
            per source.
        embedding_features : int, optional
            With ``conditional``: embed the one-hot label linearly into this many
            features first (the flow's ``embedding_net``).
        standardize : bool, default=True
            See :class:`NflowsDictionary`.
        random_state : int, optional
            Seeds the initial weights (torch's global RNG is left as it was).

        Returns
        -------
        NflowsDictionary
            Saveable: its :meth:`config` records this builder and these arguments.
        """
        return cls._from_builder("affine_coupling", {
            "n_sources": n_sources, "n_features": n_features, "n_layers": n_layers,
            "hidden_features": hidden_features, "n_blocks_per_net": n_blocks_per_net,
            "activation": activation, "conditional": conditional,
            "embedding_features": embedding_features, "standardize": standardize,
            "random_state": random_state})

    @classmethod
    def masked_autoregressive(
        cls,
        n_sources: int,
        n_features: int,
        *,
        n_layers: int = 4,
        hidden_features: int = 64,
        n_blocks_per_net: int = 2,
        activation: str = "relu",
        conditional: bool = False,
        embedding_features: int | None = None,
        standardize: bool = True,
        random_state: int | None = None,
    ) -> NflowsDictionary:
        """MAF from nflows: ``n_layers`` ``MaskedAffineAutoregressiveTransform`` s.

        A ``ReversePermutation`` follows each layer; each MADE has ``n_blocks_per_net``
        residual blocks of ``hidden_features`` units. Densities (training) take one
        pass per layer; sampling ``W = f(z)`` (DDS's search) takes ``n_features``
        passes per layer. Parameters as in :meth:`affine_coupling`.

        Returns
        -------
        NflowsDictionary
        """
        return cls._from_builder("masked_autoregressive", {
            "n_sources": n_sources, "n_features": n_features, "n_layers": n_layers,
            "hidden_features": hidden_features, "n_blocks_per_net": n_blocks_per_net,
            "activation": activation, "conditional": conditional,
            "embedding_features": embedding_features, "standardize": standardize,
            "random_state": random_state})

    @classmethod
    def _from_builder(cls, builder: str, arguments: dict[str, Any]) -> NflowsDictionary:
        arguments = _check_builder_arguments(builder, arguments)
        flows = _build(builder, arguments)
        dictionary = cls(flows[0] if arguments["conditional"] else flows,
                         n_sources=arguments["n_sources"],
                         standardize=arguments["standardize"])
        dictionary._builder = (builder, arguments)
        return dictionary

    # ------------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """The builder's name and arguments; for a hand-built flow, only its sizes.

        A hand-built flow's config (``builder`` None) identifies it for training
        checkpoints but cannot rebuild it: :meth:`to_dict` refuses it.
        """
        if self._builder is not None:
            name, arguments = self._builder
            return {"builder": name, **arguments}
        return {"builder": None, "n_sources": self.n_sources, "n_features": self.n_features,
                "conditional": self.conditional, "standardize": self.standardize}

    def to_dict(self) -> dict[str, Any]:
        """Builder name, arguments and weights, for :func:`decomp.save`.

        Raises
        ------
        TypeError
            If the flow was not made by a builder: nflows modules are arbitrary code,
            and a model file never names code to import.
        """
        if self._builder is None:
            raise TypeError(
                "cannot save an NflowsDictionary built from your own nflows Flow: a model "
                "file records no code, only a builder's name and arguments. Build it with "
                "NflowsDictionary.affine_coupling(...) or "
                "NflowsDictionary.masked_autoregressive(...) to save it, or keep it in "
                "memory (torch.save of its state_dict saves the weights only)."
            )
        return super().to_dict()

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NflowsDictionary:
        """Rebuild a flow saved by :meth:`to_dict` through the fixed table of builders.

        Raises
        ------
        ModelFileError
            If the file names an unknown builder or arguments the builder does not take.
        """
        config = state.get("config") if isinstance(state, dict) else None
        if not isinstance(config, dict):
            raise ModelFileError("an NflowsDictionary entry in the model file has no config.")
        arguments = dict(config)
        builder = arguments.pop("builder", None)
        if builder not in cls._BUILDER_DEFAULTS:
            raise ModelFileError(
                f"the model file names NflowsDictionary builder {builder!r}; known builders "
                f"are {sorted(cls._BUILDER_DEFAULTS)}."
            )
        expected = {"n_sources", "n_features", *cls._BUILDER_DEFAULTS[builder]}
        if set(arguments) != expected:
            raise ModelFileError(
                f"the model file gives NflowsDictionary.{builder} the arguments "
                f"{sorted(arguments)}; it takes {sorted(expected)}."
            )
        try:
            flow = cls._from_builder(builder, arguments)
        except ValueError as error:
            raise ModelFileError(f"bad NflowsDictionary arguments in the model file: {error}") \
                from None
        flow.load_state_dict(state["state"])
        return flow

    def extra_repr(self) -> str:
        builder = self._builder[0] if self._builder is not None else None
        return (f"n_sources={self.n_sources}, n_features={self.n_features}, "
                f"conditional={self.conditional}, builder={builder!r}")

    # ---------------------------------------------------------------------- training
    def initialize_from_data(self, W: torch.Tensor, labels: torch.Tensor) -> None:
        """Set the output affine map to each source's per-bin mean and spread.

        Sources without rows get the statistics of all rows; spreads are floored at
        1e-3 of the mean spread so constant bins stay invertible. Nothing happens
        without ``standardize``.
        """
        if not self.standardize:
            return
        W = W.detach().to(self.output_loc.dtype)
        labels = self._check_labels(labels, W, "labels")
        overall_mean, overall_std = W.mean(0), W.std(0, unbiased=False)
        floor = 1e-3 * overall_std.mean().clamp_min(torch.finfo(W.dtype).tiny)
        counts = torch.bincount(labels, minlength=self.n_sources).to(W.dtype).unsqueeze(1)
        sums = torch.zeros_like(self.output_loc).index_add_(0, labels, W)
        squares = torch.zeros_like(self.output_loc).index_add_(0, labels, W * W)
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), overall_mean)
        variance = squares / counts.clamp_min(1) - mean * mean
        std = torch.where(counts > 1, variance.clamp_min(0).sqrt(), overall_std)
        with torch.no_grad():
            self.output_loc.copy_(mean)
            self.output_log_scale.copy_(torch.log(std.clamp_min(floor)))

    # ------------------------------------------------------------------- computation
    def _context(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The conditional flow's embedded context: one-hot labels (n, n_sources)."""
        one_hot = nn.functional.one_hot(labels, self.n_sources).to(dtype)
        return self.flows[0]._embedding_net(one_hot)

    def _run(
        self, x: torch.Tensor, labels: torch.Tensor, *, to_data: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """nflows' transform (W -> z) or its inverse (z -> W, ``to_data``) on rows of x."""
        def apply(flow: nn.Module, rows: torch.Tensor, context: torch.Tensor | None):
            transform = flow._transform
            return transform.inverse(rows, context=context) if to_data \
                else transform(rows, context=context)

        if self.conditional:
            return apply(self.flows[0], x, self._context(labels, x.dtype))
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.n_sources).tolist()
        outputs, log_dets = [], []
        for source, rows in zip(range(self.n_sources), torch.split(order, counts), strict=True):
            if rows.numel():
                output, log_det = apply(self.flows[source], x[rows], None)
                outputs.append(output)
                log_dets.append(log_det)
        restore = torch.argsort(order)
        return torch.cat(outputs)[restore], torch.cat(log_dets)[restore]

    def _forward_and_log_det(
        self, z: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if z.shape[0] == 0:
            return z.clone(), z.new_zeros(0)
        W, log_det = self._run(z, labels, to_data=True)
        if self.standardize:
            log_scale = self.output_log_scale[labels]
            W = self.output_loc[labels] + torch.exp(log_scale) * W
            log_det = log_det + log_scale.sum(-1)
        return W, log_det

    def _standardized(self, W: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
        """Undo the output affine map: (rows the nflows flow sees, its log-det (n,))."""
        if not self.standardize:
            return W, W.new_zeros(W.shape[0])
        log_scale = self.output_log_scale[labels]
        return (W - self.output_loc[labels]) * torch.exp(-log_scale), -log_scale.sum(-1)

    def _inverse_and_log_det(
        self, w: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if w.shape[0] == 0:
            return w.clone(), w.new_zeros(0)
        inputs, affine_log_det = self._standardized(w, labels)
        z, log_det = self._run(inputs, labels, to_data=False)
        return z, log_det + affine_log_det

    def log_prob(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Log-density of each row of ``W``, shape (n,), by nflows' ``Flow.log_prob``."""
        W = self._check_rows(W, "W", self.n_features)
        labels = self._check_labels(labels, W, "labels")
        if W.shape[0] == 0:
            return W.new_zeros(0)
        inputs, affine_log_det = self._standardized(W, labels)
        if self.conditional:
            one_hot = nn.functional.one_hot(labels, self.n_sources).to(W.dtype)
            return self.flows[0].log_prob(inputs, context=one_hot) + affine_log_det
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.n_sources).tolist()
        parts = [self.flows[source].log_prob(inputs[rows])
                 for source, rows in enumerate(torch.split(order, counts)) if rows.numel()]
        return torch.cat(parts)[torch.argsort(order)] + affine_log_det
