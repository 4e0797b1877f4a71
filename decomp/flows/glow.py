"""Conditional Glow dictionary (DDS-3): one flow for every source, conditioned by its latent.

A single bijection ``g`` maps a full latent ``u = (u_s, u_n)`` of ``n_features`` dims to a
dictionary row. Its first ``n_sources`` dims ``u_s`` are *semantic* (trained towards the
one-hot source label), the rest ``u_n`` are *nuisance* (trained to be a standard normal
that carries no label information), following Jacobsen et al. (2019) as adapted by the
DDS paper (Sec. III-D). Conditional generation fixes ``u_s`` to the one-hot label, so
the code DDS searches is the nuisance part alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import torch
from sklearn.utils._param_validation import StrOptions
from torch import nn
from torch.nn import functional

from decomp._validation import StrictInterval, check_params
from decomp.flows.base import DictionaryFlow, bounded_log_scale, standard_normal_log_prob

__all__ = ["PAPER_GLOW_CONFIG", "ConditionalGlow"]

#: The DDS paper's DDS-3 architecture (Sec. IV-B2): "32 flow steps, each ActNorm, a
#: trainable mixing layer parameterised in its LU decomposition and an affine coupling
#: parameterised as an MLP with 3 dense layers of 1024 units and Leaky ReLU". We read
#: "3 dense layers" as two hidden layers of 1024 units plus the output layer; at the
#: paper's 1025 bins that output layer has 2 * 513 = 1026 units, i.e. about 1024 too.
PAPER_GLOW_CONFIG: dict[str, Any] = {
    "n_steps": 32,
    "hidden_features": 1024,
    "n_hidden_layers": 2,
    "activation": "leaky_relu",
}

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}

# ActNorm's data-dependent init divides by the batch standard deviation; a dimension that
# is constant in the batch would divide by zero, so the deviation is floored here.
_ACTNORM_MIN_STD = 1e-6


_POSITIVE_INT = StrictInterval(Integral, 1, None, closed="left")
_NON_NEGATIVE_FLOAT = StrictInterval(Real, 0, None, closed="left")  # finite, >= 0
_PARAMETER_CONSTRAINTS: dict[str, list] = {
    "n_sources": [_POSITIVE_INT],
    "n_features": [StrictInterval(Integral, 2, None, closed="left")],
    "n_steps": [_POSITIVE_INT],
    "hidden_features": [_POSITIVE_INT],
    "n_hidden_layers": [_POSITIVE_INT],
    "activation": [StrOptions(set(_ACTIVATIONS))],
    "log_scale_bound": [StrictInterval(Real, 0, None, closed="neither")],
    "semantic_weight": [_NON_NEGATIVE_FLOAT],
    "adversary_weight": [_NON_NEGATIVE_FLOAT],
    "adversary_hidden_features": [_POSITIVE_INT],
    "random_state": [StrictInterval(Integral, None, None, closed="neither"), torch.Generator,
                     None],
}


def _linear(
    fan_in: int, fan_out: int, generator: torch.Generator | None, *, zero: bool = False
) -> nn.Linear:
    """A dense layer with torch's default init (U(±1/sqrt(fan_in))) drawn from ``generator``.

    ``zero=True`` zeroes it instead: the last layer of every coupling net, so each coupling
    starts as the identity.
    """
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            layer.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(fan_in)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def _mlp(
    sizes: list[int], activation: str, generator: torch.Generator | None, *, zero_last: bool
) -> nn.Sequential:
    """Dense layers of widths ``sizes`` with ``activation`` between them (not after the last)."""
    layers: list[nn.Module] = []
    n_layers = len(sizes) - 1
    for position, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = position == n_layers - 1
        layers.append(_linear(fan_in, fan_out, generator, zero=zero_last and last))
        if not last:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class _GlowStep(nn.Module):
    """One Glow step on rows of F dims: ActNorm, LU-parameterised mixing, affine coupling.

    The step is written in the normalising direction (data -> latent), the order of Glow:

        h = x * exp(actnorm_log_scale) + actnorm_bias              ActNorm
        h = P L (U + diag(sign * exp(log_abs_diag))) h             invertible mixing
        h_b = h_b * exp(log_scale(h_a)) + shift(h_a)               affine coupling

    with ``h_a`` the first ``F // 2`` dims, ``h_b`` the rest. ``lower_upper`` packs the
    strictly lower part of L (unit diagonal) and the strictly upper part of U in one
    (F, F) matrix, like LAPACK; its diagonal is unused. ``permutation`` is P as an index:
    ``(P v)[i] = v[permutation[i]]``.
    """

    def __init__(
        self,
        n_features: int,
        hidden_features: int,
        n_hidden_layers: int,
        activation: str,
        log_scale_bound: float,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.log_scale_bound = log_scale_bound
        self.n_conditioning = n_features // 2
        n_transformed = n_features - self.n_conditioning

        self.actnorm_log_scale = nn.Parameter(torch.zeros(n_features))
        self.actnorm_bias = nn.Parameter(torch.zeros(n_features))

        # Glow's init: a random rotation, LU-factorised (in float64, then cast).
        gaussian = torch.randn(n_features, n_features, generator=generator, dtype=torch.float64)
        rotation = torch.linalg.qr(gaussian).Q
        pivots, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        packed = torch.tril(lower, -1) + torch.triu(upper, 1)
        self.lower_upper = nn.Parameter(packed.to(dtype))
        self.log_abs_diag = nn.Parameter(diagonal.abs().log().to(dtype))
        permutation = pivots.argmax(dim=1)
        self.register_buffer("sign", torch.sign(diagonal).to(dtype))
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

        sizes = [self.n_conditioning] + [hidden_features] * n_hidden_layers + [2 * n_transformed]
        self.coupling = _mlp(sizes, activation, generator, zero_last=True)
        # (parameter versions, (matrix, bias)): see _frozen_generate_map
        self._frozen_map_cache: tuple | None = None

    # ------------------------------------------------------------------ pieces
    def _triangles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The strictly lower part of L and the full U (with its diagonal), each (F, F)."""
        strict_lower = torch.tril(self.lower_upper, -1)
        upper = torch.triu(self.lower_upper, 1) + torch.diag(
            self.sign * torch.exp(self.log_abs_diag)
        )
        return strict_lower, upper

    def _coupling_parameters(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw_scale, shift = self.coupling(conditioning).chunk(2, dim=-1)
        return bounded_log_scale(raw_scale, self.log_scale_bound)[0], shift

    def constant_log_det(self) -> torch.Tensor:
        """Log-det of ActNorm and mixing (data -> latent), the same for every row: ()."""
        return self.actnorm_log_scale.sum() + self.log_abs_diag.sum()

    # -------------------------------------------------------------- directions
    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent on (n, F) rows; returns the rows and their coupling log-det (n,).

        The constant part of the log-det is :meth:`constant_log_det`.
        """
        x = x * torch.exp(self.actnorm_log_scale) + self.actnorm_bias
        strict_lower, upper = self._triangles()
        # rows: x W^T = ((x U^T) L^T) P^T; L = strict_lower + I, and P^T on rows is a gather
        x = x @ upper.T
        x = x + x @ strict_lower.T
        x = x[:, self.permutation]
        conditioning, transformed = x[:, : self.n_conditioning], x[:, self.n_conditioning :]
        log_scale, shift = self._coupling_parameters(conditioning)
        transformed = transformed * torch.exp(log_scale) + shift
        return torch.cat([conditioning, transformed], dim=-1), log_scale.sum(-1)

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> data on (n, F) rows (inverse of :meth:`normalize`); coupling log-det (n,).

        The log-det returned is that of this direction (the negative of :meth:`normalize`'s
        at the corresponding point); the constant part is ``-constant_log_det()``.
        """
        conditioning, transformed = x[:, : self.n_conditioning], x[:, self.n_conditioning :]
        log_scale, shift = self._coupling_parameters(conditioning)
        transformed = (transformed - shift) * torch.exp(-log_scale)
        x = torch.cat([conditioning, transformed], dim=-1)
        frozen_map = self._frozen_generate_map()
        if frozen_map is not None:
            matrix, bias = frozen_map
            return torch.addmm(bias, x, matrix), -log_scale.sum(-1)
        strict_lower, upper = self._triangles()
        # undo P^T, then solve X L^T = B and X U^T = B: triangular solves, no dense inverse
        x = x[:, self.inverse_permutation]
        x = torch.linalg.solve_triangular(
            strict_lower.T, x, upper=True, left=False, unitriangular=True
        )
        x = torch.linalg.solve_triangular(upper.T, x, upper=False, left=False)
        x = (x - self.actnorm_bias) * torch.exp(-self.actnorm_log_scale)
        return x, -log_scale.sum(-1)

    def _frozen_generate_map(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Generate's mixing and ActNorm as one affine map ``x @ matrix + bias``, or None.

        Only while the mixing and ActNorm parameters are frozen (a DDS search): the
        (F, F) inverse is then computed once, in float64, and reused until a parameter
        changes. Two triangular solves per step were a fifth of a DDS-3 transcription's
        time; one matrix product takes a third of theirs, and its backward is a product too.
        """
        parameters = (self.lower_upper, self.log_abs_diag, self.actnorm_log_scale,
                      self.actnorm_bias)
        if any(parameter.requires_grad for parameter in parameters):
            return None
        key = tuple((parameter.data_ptr(), parameter._version, parameter.dtype)
                    for parameter in parameters)
        if self._frozen_map_cache is not None and self._frozen_map_cache[0] == key:
            return self._frozen_map_cache[1]
        with torch.no_grad():
            strict_lower, upper = (t.double() for t in self._triangles())
            # normalize maps rows by x -> (x * exp(a) + b) @ mixing
            lower = strict_lower + torch.eye(strict_lower.shape[0], dtype=torch.float64)
            mixing = (upper.T @ lower.T)[:, self.permutation]
            inverse_scale = torch.exp(-self.actnorm_log_scale.double())
            matrix = torch.linalg.inv(mixing) * inverse_scale
            bias = -self.actnorm_bias.double() * inverse_scale
            frozen_map = (matrix.to(self.lower_upper.dtype), bias.to(self.lower_upper.dtype))
        self._frozen_map_cache = (key, frozen_map)
        return frozen_map

    @torch.no_grad()
    def initialize_actnorm(self, x: torch.Tensor) -> None:
        """Set ActNorm so that its output on the (n, F) rows ``x`` has zero mean, unit variance."""
        mean = x.mean(0)
        std = x.std(0, unbiased=False).clamp_min(_ACTNORM_MIN_STD)
        self.actnorm_log_scale.copy_(-torch.log(std))
        self.actnorm_bias.copy_(-mean / std)


class ConditionalGlow(DictionaryFlow):
    """One Glow for all sources, conditioned through a semantic latent split (DDS-3).

    An unconditional bijection ``g: R^F -> R^F`` (F = ``n_features``) of ``n_steps`` Glow
    steps (ActNorm, LU-parameterised invertible mixing, affine coupling) maps a full
    latent ``u`` to a dictionary row ``w = g(u)``. Following Jacobsen et al. (2019) as
    adapted by the DDS paper, the first C = ``n_sources`` latent dims are the semantic
    part ``u_s``, the other F - C the nuisance part ``u_n``:

    - conditional generation: ``w = g(cat(one_hot(label), z))`` with the nuisance code
      ``z`` of ``n_latent = F - C`` dims; :meth:`sample` takes only ``z``, the one-hot is
      exact because training pulls ``u_s`` to it (see below);
    - ``inverse(W)`` returns ``u_n``; ``log_prob(W, labels)`` is the nuisance likelihood
      ``log N(u_n; 0, I) + log |det J_{g^{-1}}(W)|``; :meth:`semantic` returns ``u_s``
      and :meth:`predict` its argmax.

    Training (:meth:`training_losses`, :meth:`adversary_loss`) is the DDS variant of the
    independence cross-entropy (iCE); see :meth:`training_losses` for the terms, their
    scale and sign.

    Parameters
    ----------
    n_sources : int
        Number of sources C (semantic latent dims), >= 1.
    n_features : int
        Dimension F of a dictionary row, > n_sources (at least one nuisance dim).
    n_steps : int, default=8
        Glow steps (the paper: 32).
    hidden_features : int, default=256
        Width of the coupling MLPs (the paper: 1024).
    n_hidden_layers : int, default=2
        Hidden dense layers per coupling MLP, plus one output layer (the paper's "3 dense
        layers" are 2 hidden + output).
    activation : {"selu", "relu", "elu", "leaky_relu", "tanh"}, default="leaky_relu"
        Of the coupling MLPs and of the adversary.
    log_scale_bound : float, default=2.0
        Soft bound on each coupling's log-scale: ``bound * tanh(raw / bound)``.
    semantic_weight : float, default=10.0
        Weight of the semantic squared error; with weight λ, the semantic part is
        trained as a Gaussian ``N(one_hot, I / (2 λ))`` (see :meth:`training_losses`).
        The paper's unweighted sum is 1. Measured on 60 piano notes (log-CQT, trained on
        fluidr3): with 1 the semantic part classified only 70 % of the training frames
        and DDS-3 reached PSA 0.56 on chords from another font; with 10, 98 % and 0.66.
    adversary_weight : float, default=1.0
        Weight of the adversarial term (0 turns it off).
    adversary_hidden_features : int, default=128
        Width of the two hidden layers of the nuisance classifier.
    random_state : int, torch.Generator or None, default=None
        Seeds the mixing layers' initial rotations (hence the permutations P) and all
        initial weights; None uses torch's global RNG.

    Attributes
    ----------
    steps : ModuleList of n_steps Glow steps
        Step ``k`` holds ``actnorm_log_scale``/``actnorm_bias`` (F,), ``lower_upper``
        (F, F), ``log_abs_diag`` (F,), buffers ``sign`` (F,), ``permutation`` and
        ``inverse_permutation`` (F,), and ``coupling``, an MLP from F // 2 to
        2 * (F - F // 2) units whose last layer starts at zero.
    adversary : Sequential
        The nuisance classifier, an MLP n_latent -> hidden -> hidden -> n_sources
        (logits), trained by :meth:`adversary_loss`; not part of :meth:`flow_parameters`.

    Notes
    -----
    Step order. Each step is written data -> latent as in Glow (ActNorm, mixing,
    coupling), step 0 next to the data; :meth:`sample` runs the inverses from the last
    step to the first. ActNorm's data-dependent initialisation therefore walks from the
    data end (:meth:`initialize_from_data`). The mixing ``W = P L (U + diag(s))`` costs
    two triangular matmuls per row batch data -> latent and two triangular solves
    latent -> data; no dense inverse is ever formed, and its log-det is ``sum log|s|``.

    Everything is batched over rows: no Python loop over rows or sources, only over the
    (sequential) steps.

    References
    ----------
    Kingma & Dhariwal (2018), Glow. Jacobsen, Behrmann, Zemel & Bethge (2019),
    Excessive invariance causes adversarial vulnerability. Differentiable Dictionary
    Search, Sec. III-D and IV-B2.

    Examples
    --------
    >>> flow = ConditionalGlow(3, 8, n_steps=2, hidden_features=16, random_state=0)
    >>> flow.n_latent
    5
    >>> W = flow.sample(torch.zeros(4, 5), [0, 2, 2, 1])
    >>> W.shape, flow.predict(W).tolist()
    (torch.Size([4, 8]), [0, 2, 2, 1])
    """

    def __init__(
        self,
        n_sources: int,
        n_features: int,
        n_steps: int = 8,
        hidden_features: int = 256,
        n_hidden_layers: int = 2,
        activation: str = "leaky_relu",
        *,
        log_scale_bound: float = 2.0,
        semantic_weight: float = 10.0,
        adversary_weight: float = 1.0,
        adversary_hidden_features: int = 128,
        random_state: int | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_params(_PARAMETER_CONSTRAINTS, {
            "n_sources": n_sources, "n_features": n_features, "n_steps": n_steps,
            "hidden_features": hidden_features, "n_hidden_layers": n_hidden_layers,
            "activation": activation, "log_scale_bound": log_scale_bound,
            "semantic_weight": semantic_weight, "adversary_weight": adversary_weight,
            "adversary_hidden_features": adversary_hidden_features,
            "random_state": random_state,
        }, "ConditionalGlow")
        n_sources, n_features, n_steps = int(n_sources), int(n_features), int(n_steps)
        hidden_features, n_hidden_layers = int(hidden_features), int(n_hidden_layers)
        adversary_hidden_features = int(adversary_hidden_features)
        if n_features <= n_sources:
            raise ValueError(
                "The 'n_features' parameter of ConditionalGlow must be an int > "
                f"n_sources={n_sources} (the latent holds n_sources semantic dims and at "
                f"least one nuisance dim). Got {n_features!r} instead."
            )
        self.n_sources = n_sources
        self.n_features = n_features
        self.n_steps = n_steps
        self.hidden_features = hidden_features
        self.n_hidden_layers = n_hidden_layers
        self.activation = activation
        self.log_scale_bound = float(log_scale_bound)
        self.semantic_weight = float(semantic_weight)
        self.adversary_weight = float(adversary_weight)
        self.adversary_hidden_features = adversary_hidden_features
        if isinstance(random_state, torch.Generator):
            generator: torch.Generator | None = random_state
        elif random_state is None:
            generator = None
        else:
            generator = torch.Generator().manual_seed(int(random_state))

        self.steps = nn.ModuleList(
            _GlowStep(n_features, hidden_features, n_hidden_layers, activation,
                      self.log_scale_bound, generator)
            for _ in range(n_steps)
        )
        # Registered through nn.Module.__setattr__ (into _modules) and read through the
        # base class's ``adversary`` property.
        width = adversary_hidden_features
        self.adversary = _mlp(
            [n_features - n_sources, width, width, n_sources], activation, generator,
            zero_last=False,
        )

    @classmethod
    def from_paper(
        cls, n_sources: int, n_features: int, **kwargs: Any
    ) -> ConditionalGlow:
        """The DDS paper's DDS-3 architecture (:data:`PAPER_GLOW_CONFIG`); ``kwargs`` override."""
        return cls(n_sources, n_features, **(PAPER_GLOW_CONFIG | kwargs))

    @property
    def n_latent(self) -> int:
        """Dimension of the nuisance codes DDS searches: ``n_features - n_sources``."""
        return self.n_features - self.n_sources

    def config(self) -> dict[str, Any]:
        """Constructor arguments (weights and permutations live in the state dict)."""
        return {
            "n_sources": self.n_sources,
            "n_features": self.n_features,
            "n_steps": self.n_steps,
            "hidden_features": self.hidden_features,
            "n_hidden_layers": self.n_hidden_layers,
            "activation": self.activation,
            "log_scale_bound": self.log_scale_bound,
            "semantic_weight": self.semantic_weight,
            "adversary_weight": self.adversary_weight,
            "adversary_hidden_features": self.adversary_hidden_features,
        }

    def extra_repr(self) -> str:
        return (
            f"n_sources={self.n_sources}, n_features={self.n_features}, "
            f"n_steps={self.n_steps}, hidden_features={self.hidden_features}, "
            f"n_hidden_layers={self.n_hidden_layers}, activation={self.activation!r}"
        )

    def flow_parameters(self) -> Iterator[nn.Parameter]:
        """The bijection's parameters, without the adversary's (for the flow's optimiser)."""
        adversary = {id(parameter) for parameter in self.adversary.parameters()}
        return (p for p in self.parameters() if id(p) not in adversary)

    # --------------------------------------------------------- the full bijection
    def _normalize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u = g^{-1}(w) on (n, F) rows and log |det J_{g^{-1}}(w)|, shape (n,)."""
        log_det = w.new_zeros(w.shape[0])
        constant = w.new_zeros(())
        x = w
        for step in self.steps:
            x, step_log_det = step.normalize(x)
            log_det = log_det + step_log_det
            constant = constant + step.constant_log_det()
        return x, log_det + constant

    def _generate(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w = g(u) on (n, F) rows and log |det J_g(u)|, shape (n,)."""
        log_det = u.new_zeros(u.shape[0])
        constant = u.new_zeros(())
        x = u
        for step in reversed(self.steps):
            x, step_log_det = step.generate(x)
            log_det = log_det + step_log_det
            constant = constant - step.constant_log_det()
        return x, log_det + constant

    def full_forward_and_log_det(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bijection on full latents: ``w = g(u)`` and ``log |det J_g(u)|``.

        Parameters
        ----------
        u : Tensor of shape (n, n_features)
            Full latents ``cat(u_s, u_n)``, with the flow's dtype.

        Returns
        -------
        w : Tensor of shape (n, n_features)
        log_det : Tensor of shape (n,)
        """
        return self._generate(self._check_rows(u, "u", self.n_features))

    def full_inverse_and_log_det(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse bijection: full latents ``u = g^{-1}(W)`` and ``log |det J_{g^{-1}}(W)|``.

        Parameters
        ----------
        W : Tensor of shape (n, n_features)

        Returns
        -------
        u : Tensor of shape (n, n_features)
            Semantic part ``u[:, :n_sources]``, nuisance part ``u[:, n_sources:]``.
        log_det : Tensor of shape (n,)
        """
        return self._normalize(self._check_rows(W, "W", self.n_features))

    # ------------------------------------------------------ DictionaryFlow maps
    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return functional.one_hot(labels, self.n_sources).to(like.dtype)

    def _forward_and_log_det(
        self, z: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The semantic part is exactly the one-hot label: training pulls u_s to it.
        return self._generate(torch.cat([self._one_hot(labels, z), z], dim=-1))

    def _inverse_and_log_det(
        self, w: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # labels are not needed: g^{-1} is unconditional; the label lives in u_s.
        u, log_det = self._normalize(w)
        return u[:, self.n_sources :], log_det

    def semantic(self, W: torch.Tensor) -> torch.Tensor:
        """Semantic part ``u_s`` of ``g^{-1}(W)``, shape (n, n_sources); ~one-hot when trained."""
        return self.full_inverse_and_log_det(W)[0][:, : self.n_sources]

    def predict(self, W: torch.Tensor) -> torch.Tensor:
        """The source each row of ``W`` (n, n_features) looks like: argmax of ``u_s``, (n,)."""
        return self.semantic(W).argmax(dim=-1)

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def initialize_from_data(self, W: torch.Tensor, labels: torch.Tensor) -> None:
        """Glow's data-dependent ActNorm init from a batch of training rows.

        Walking from the data end, each step's ActNorm is set so that the rows pushed
        through the steps before it (data -> latent) leave it with zero mean and unit
        variance per dim; the rows then go through the whole step before the next one is
        set. Call it on a fresh flow (couplings at identity, mixings at rotations): the
        latent then has zero mean and about unit variance per dim.

        Parameters
        ----------
        W : Tensor of shape (n, n_features), n >= 2
        labels : Tensor or array-like of int, shape (n,)
            Checked but unused (the init is unconditional).
        """
        W = self._check_rows(W, "W", self.n_features)
        self._check_labels(labels, W, "labels")
        if W.shape[0] < 2:
            raise ValueError(
                "initialize_from_data needs at least 2 rows of W to estimate a variance; "
                f"got {W.shape[0]}."
            )
        x = W
        for step in self.steps:
            step.initialize_actnorm(x)
            x, _ = step.normalize(x)

    def _terms(
        self, W: torch.Tensor, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row nuisance NLL and semantic squared error (n,), the nuisance u_n, labels."""
        W = self._check_rows(W, "W", self.n_features)
        labels = self._check_labels(labels, W, "labels")
        u, log_det = self._normalize(W)
        semantic, nuisance = u[:, : self.n_sources], u[:, self.n_sources :]
        nuisance_nll = -(standard_normal_log_prob(nuisance) + log_det)
        semantic_error = (semantic - self._one_hot(labels, u)).pow(2).sum(-1)
        return nuisance_nll, semantic_error, nuisance, labels

    def training_losses(self, W: torch.Tensor, labels: Any) -> dict[str, torch.Tensor]:
        """The flow's side of the DDS variant of iCE on a training batch.

        Jacobsen et al. (2019) train the bijection and a nuisance classifier ``D`` by

            min_flow max_D  L_sCE + L_nMLE - L_nCE(D),

        where ``L_nCE`` is ``D``'s cross-entropy on the nuisance part: ``D`` minimises its
        cross-entropy, the flow maximises it (minimising a variational bound on the
        mutual information between ``u_n`` and the label), so the flow's loss carries
        ``- L_nCE``. DDS replaces the semantic cross-entropy ``L_sCE`` by a squared error
        to the one-hot label, so that the one-hot is an exact conditional code.

        Per row (nats), with ``u = g^{-1}(w)``:

        - ``nll = -log N(u_n; 0, I) - log |det J_{g^{-1}}(w)|`` (L_nMLE);
        - ``semantic = sum_C (u_s - one_hot)^2``, summed (not averaged) over the C dims:
          then ``nll + semantic`` is, up to a constant, the exact negative log-density of
          ``w`` when ``u_s ~ N(one_hot, I / 2)`` — a proper class-conditional density, so
          the two terms are in the same units (with ``semantic_weight`` λ the variance
          is ``1 / (2 λ)``);
        - ``ce``: the adversary's cross-entropy on ``u_n`` (nats per row, log C at chance).

        ``loss = (mean nll + λ_s mean semantic - λ_a min(mean ce, log C)) / n_features``.

        The division by F only makes it nats per dimension, the base class's convention
        (learning rates carry over between sizes); the relative weights are the paper's
        unweighted sum for ``semantic_weight = adversary_weight = 1``. The adversary is
        evaluated with detached parameters, so this loss has gradients for the flow only.

        Bound on the adversarial term: ``-ce`` is unbounded below, and a flow step
        against a stale classifier can make it confidently *wrong* (cross-entropy far
        above chance) instead of uninformative, which makes training oscillate or blow
        up. Cross-entropy above ``log C`` means "worse than guessing", which carries no
        less label information than chance, so the term is clamped there (zero gradient
        beyond). A Bayes-optimal classifier always has mean cross-entropy
        ``H(y | u_n) <= H(y) <= log C``, so the clamp never binds at the min-max
        solution; it only stops the flow from overshooting between adversary updates.

        Parameters
        ----------
        W : Tensor of shape (n, n_features)
        labels : Tensor or array-like of int, shape (n,)

        Returns
        -------
        dict of scalar Tensors
            ``"loss"`` (minimised over :meth:`flow_parameters`), and diagnostics
            ``"nll"`` (mean nuisance NLL per row, nats), ``"semantic_mse"`` (mean over
            rows and the C dims of the squared error) and ``"adversary_ce"`` (the
            adversary's mean cross-entropy, unclamped).
        """
        nuisance_nll, semantic_error, nuisance, labels = self._terms(W, labels)
        frozen = {name: p.detach() for name, p in self.adversary.named_parameters()}
        logits = torch.func.functional_call(self.adversary, frozen, (nuisance,))
        adversary_ce = functional.cross_entropy(logits, labels)
        bounded_ce = torch.clamp(adversary_ce, max=math.log(self.n_sources))
        nll = nuisance_nll.mean()
        semantic = semantic_error.mean()
        loss = (
            nll + self.semantic_weight * semantic - self.adversary_weight * bounded_ce
        ) / self.n_features
        return {
            "loss": loss,
            "nll": nll.detach(),
            "semantic_mse": semantic.detach() / self.n_sources,
            "adversary_ce": adversary_ce.detach(),
        }

    def validation_loss(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """Per-row model-selection criterion (n,), nats: ``nll + semantic_weight * semantic``.

        The terms of :meth:`training_losses` without the adversarial one (which depends
        on the adversary's state, not only on the flow).
        """
        nuisance_nll, semantic_error, _, _ = self._terms(W, labels)
        return nuisance_nll + self.semantic_weight * semantic_error

    def adversary_loss(self, W: torch.Tensor, labels: Any) -> torch.Tensor:
        """The adversary's mean cross-entropy on detached nuisance codes (scalar).

        Minimised over :attr:`adversary`'s parameters only: ``u_n`` is computed without a
        graph, so no gradient reaches the flow.
        """
        W = self._check_rows(W, "W", self.n_features)
        labels = self._check_labels(labels, W, "labels")
        with torch.no_grad():
            nuisance = self._normalize(W)[0][:, self.n_sources :]
        return functional.cross_entropy(self.adversary(nuisance), labels)
