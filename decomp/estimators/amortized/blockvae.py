"""BlockVAE: separation as a block-wise disentangled variational latent space.

After the abstract of Helwani, Togami, Smaragdis & Goodwin, "Sound source separation
using latent variational block-wise disentanglement" (arXiv:2402.06683, ICASSP
workshops 2024), a hybrid DSP/DNN view of separation: a single-channel, under-determined mixture is
encoded into a latent space with one block per source, which turns separation into an
over-determined "multichannel" problem in that space; each block is a diagonal-Gaussian
posterior, one decoder shared by all blocks turns a block into its source, a
*differentiable* permutation loss (Sinkhorn) scores the unordered blocks, and a memory of
per-source latent statistics keeps the blocks in a fixed order at inference.

Only the abstract of the paper is available; :class:`BlockVAE`'s docstring and
``docs/guide/blockvae.md`` list every choice made where it is silent.
"""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch
from sklearn.utils._param_validation import StrOptions

from decomp._validation import StrictInterval
from decomp.audio.spectrogram import Spectrogram
from decomp.estimators.amortized.base import DEFAULT_FRONT_END, AmortizedSeparator
from decomp.estimators.amortized.objectives import compress_magnitude
from decomp.estimators.amortized.unet import SOLOS_FRONT_END, UNet, network_input
from decomp.losses import pairwise_mse, pairwise_separation_cost

__all__ = [
    "BlockVAE",
    "BlockVAENetwork",
    "BlockVAEUNetNetwork",
    "gaussian_kl",
    "sinkhorn",
    "soft_permutation_loss",
]

# Shrinkage of the memory covariances towards their mean variance before inversion: the
# covariance of block_size dimensions is estimated from chunk statistics and may be close
# to singular (e.g. for a slot that only ever holds silence).
_COVARIANCE_SHRINKAGE = 0.1
_VARIANCE_FLOOR = 1e-6


# ------------------------------------------------------------------ loss helpers
def sinkhorn(log_alpha: torch.Tensor, n_iterations: int = 30) -> torch.Tensor:
    """Sinkhorn normalisation of ``exp(log_alpha)`` into a doubly stochastic matrix.

    Rows and columns are normalised alternately in the log domain (so very peaked
    matrices at low temperatures neither overflow nor underflow). The last step
    normalises the columns, so column sums are exact and row sums converge to one.

    Parameters
    ----------
    log_alpha : Tensor of shape (..., n, n)
        Unnormalised log-scores, e.g. ``-cost / temperature``.
    n_iterations : int, default=30
        Row-then-column normalisation rounds.

    Returns
    -------
    Tensor of shape (..., n, n)
        A (nearly) doubly stochastic matrix; differentiable with respect to ``log_alpha``.
        As the scores are scaled up (the temperature goes to zero) it approaches the
        permutation matrix that maximises ``sum(P * log_alpha)`` (Mena et al., 2018).

    Examples
    --------
    >>> import torch
    >>> P = sinkhorn(torch.tensor([[0.0, -10.0], [-10.0, 0.0]]))
    >>> torch.round(P, decimals=3)
    tensor([[1., 0.],
            [0., 1.]])
    """
    if log_alpha.ndim < 2 or log_alpha.shape[-1] != log_alpha.shape[-2]:
        raise ValueError(f"log_alpha must have shape (..., n, n); got {tuple(log_alpha.shape)}.")
    for _ in range(int(n_iterations)):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
    return log_alpha.exp()


def soft_permutation_loss(
    cost: torch.Tensor, temperature: float = 0.1, n_iterations: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable permutation loss: ``sum(P * cost)`` with ``P`` a Sinkhorn matching.

    ``P = sinkhorn(-cost / (temperature * scale))`` where ``scale`` is each item's
    (detached) mean cost, so that the temperature is relative to the size of the costs
    and needs no retuning when the loss scale changes during training. ``P`` lies
    (nearly) in the Birkhoff polytope, so the loss is an upper bound of the best
    permutation's loss that tends to it as ``temperature -> 0``; the gradient flows
    through both ``cost`` and ``P``.

    Parameters
    ----------
    cost : Tensor of shape (batch, n, n)
        ``cost[b, i, j]``: loss of estimate ``i`` against target ``j``.
    temperature : float, default=0.1
        Relative softness of the matching (> 0).
    n_iterations : int, default=30
        Sinkhorn rounds.

    Returns
    -------
    loss : Tensor of shape (batch,)
        ``sum(P * cost) / n`` per item (the mean over the ``n`` matched pairs).
    P : Tensor of shape (batch, n, n)
        The soft permutation (estimates x targets).

    Examples
    --------
    >>> import torch
    >>> cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    >>> loss, P = soft_permutation_loss(cost, temperature=0.01)
    >>> round(float(loss), 4)
    0.0
    """
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape (batch, n, n); got {tuple(cost.shape)}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    scale = cost.detach().mean(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    permutation = sinkhorn(-cost / (temperature * scale), n_iterations)
    loss = (permutation * cost).sum(dim=(1, 2)) / cost.shape[1]
    return loss, permutation


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, exp(log_variance)) || N(0, I))`` per dimension, elementwise.

    Parameters
    ----------
    mean, log_variance : Tensor of the same shape
        The diagonal Gaussian posterior.

    Returns
    -------
    Tensor of that shape
        ``0.5 * (mean**2 + exp(log_variance) - 1 - log_variance)``; zero for a standard
        normal posterior, positive otherwise.

    Examples
    --------
    >>> import torch
    >>> float(gaussian_kl(torch.zeros(3), torch.zeros(3)).sum())
    0.0
    """
    return 0.5 * (mean.square() + log_variance.exp() - 1.0 - log_variance)


def _posterior_sample(mean: torch.Tensor, log_variance: torch.Tensor, sample: bool
                      ) -> torch.Tensor:
    """The reparameterised posterior sample (training) or the posterior mean."""
    if not sample:
        return mean
    return mean + torch.randn_like(mean) * (0.5 * log_variance).exp()


def _assignment(scores: torch.Tensor, maximize: bool) -> torch.Tensor:
    """Per-item Hungarian assignment: (batch, n, n) -> (batch, n) int64 with
    ``result[b, j]`` the row matched to column ``j``."""
    values = scores.detach().cpu().double().numpy()
    result = np.empty(values.shape[:2], dtype=np.int64)
    for item, matrix in enumerate(values):
        rows, columns = scipy.optimize.linear_sum_assignment(matrix, maximize=maximize)
        result[item, columns] = rows
    return torch.as_tensor(result, device=scores.device)


# ----------------------------------------------------------------------- network
class _LatentMemory(torch.nn.Module):
    """Running per-slot statistics of latent blocks, and the block order they give.

    Attributes
    ----------
    memory_mean : Tensor of shape (n_blocks, block_size)
        Running mean, per memory slot, of the chunk-averaged posterior mean (averaged over
        frames, and bins for a 2-D latent) of the block assigned to that slot's target
        during training.
    memory_covariance : Tensor of shape (n_blocks, block_size, block_size)
        The matching running covariance.
    memory_count : Tensor of shape (n_blocks,)
        Updates received by each slot (0: the memory is empty and is not used).
    """

    def __init__(self, n_blocks: int, block_size: int) -> None:
        super().__init__()
        self.n_blocks, self.block_size = n_blocks, block_size
        self.register_buffer("memory_mean", torch.zeros(n_blocks, block_size))
        self.register_buffer("memory_covariance",
                             torch.eye(block_size).repeat(n_blocks, 1, 1))
        self.register_buffer("memory_count", torch.zeros(n_blocks))

    @torch.no_grad()
    def update_memory(self, statistics: torch.Tensor, weights: torch.Tensor,
                      momentum: float) -> None:
        """Fold one batch into the running per-slot statistics.

        Parameters
        ----------
        statistics : Tensor of shape (B, K, D)
            ``statistics[b, k]``: chunk-mean posterior mean of the block assigned to slot
            ``k`` in item ``b``.
        weights : Tensor of shape (B, K)
            1 where item ``b`` contributes to slot ``k``, else 0.
        momentum : float
            EMA momentum. The first updates of a slot average cumulatively (momentum
            ``min(momentum, n / (n + 1))``), so the memory holds real statistics from the
            first step instead of a bias towards its initial value.
        """
        weights = weights.to(statistics.dtype)
        totals = weights.sum(dim=0)  # (K,)
        for slot in torch.nonzero(totals > 0).flatten().tolist():
            w = weights[:, slot] / totals[slot]  # (B,)
            x = statistics[:, slot]  # (B, D)
            batch_mean = (w[:, None] * x).sum(dim=0)
            centred = x - batch_mean
            batch_covariance = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]
                                ).sum(dim=0)
            count = float(self.memory_count[slot])
            keep = min(momentum, count / (count + 1.0))
            shift = batch_mean - self.memory_mean[slot]
            # Covariance of the two-component mixture (old memory, this batch).
            self.memory_covariance[slot] = (keep * self.memory_covariance[slot]
                                            + (1.0 - keep) * batch_covariance
                                            + keep * (1.0 - keep) * torch.outer(shift, shift))
            self.memory_mean[slot] = keep * self.memory_mean[slot] + (1.0 - keep) * batch_mean
            self.memory_count[slot] += 1.0

    def memory_order(self, statistics: torch.Tensor) -> torch.Tensor:
        """Blocks -> memory slots: (B, K, D) chunk statistics -> (B, K) int64 with
        ``order[b, k]`` the block placed in slot ``k``.

        Matches blocks to slots (Hungarian) by the Gaussian negative log-likelihood of a
        block's statistics under each slot's memory (squared Mahalanobis distance plus
        the log-determinant, so a slot with a wide covariance does not attract every
        block). The identity order while the memory is empty.
        """
        batch, n_blocks, size = statistics.shape
        if float(self.memory_count.min()) == 0:
            return torch.arange(n_blocks, device=statistics.device).expand(batch, -1)
        covariance = self.memory_covariance.double()
        average_variance = covariance.diagonal(dim1=-2, dim2=-1).mean(dim=-1)  # (K,)
        eye = torch.eye(size, dtype=covariance.dtype, device=covariance.device)
        covariance = ((1 - _COVARIANCE_SHRINKAGE) * covariance
                      + (_COVARIANCE_SHRINKAGE * average_variance + _VARIANCE_FLOOR
                         )[:, None, None] * eye)
        precision = torch.linalg.inv(covariance)
        _, log_determinant = torch.linalg.slogdet(covariance)  # (K,)
        difference = statistics.double()[:, :, None, :] - self.memory_mean.double()[None, None]
        distance = torch.einsum("bisd,sde,bise->bis", difference, precision, difference)
        return _assignment(distance + log_determinant[None, None], maximize=False)


class BlockVAENetwork(_LatentMemory):
    """Encoder to ``n_blocks`` Gaussian latent blocks per frame, and one shared decoder
    (``architecture="conv"``).

    Parameters
    ----------
    n_bins : int
        Frequency bins of the input (and of the masks).
    n_blocks : int
        Latent blocks, i.e. output slots.
    block_size : int
        Latent dimensions per block.
    hidden_size : int
        Channels of the hidden convolutions.
    kernel_size : int
        Temporal kernel of the convolutions (odd).

    Attributes
    ----------
    memory_mean, memory_covariance, memory_count : Tensor
        The running per-slot statistics (see :class:`_LatentMemory`).
    """

    def __init__(self, n_bins: int, n_blocks: int, block_size: int, hidden_size: int,
                 kernel_size: int) -> None:
        super().__init__(n_blocks, block_size)
        self.n_bins = n_bins
        padding = kernel_size // 2
        # Conv1d over time on (B, F, T): each frame's latent sees kernel_size + 2 *
        # (kernel_size - 1) frames of context (a dilated second layer), enough to use
        # onsets and continuity without a recurrent layer.
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv1d(n_bins, hidden_size, kernel_size, padding=padding),
            torch.nn.GELU(),
            torch.nn.Conv1d(hidden_size, hidden_size, kernel_size, padding=2 * padding,
                            dilation=2),
            torch.nn.GELU(),
            torch.nn.Conv1d(hidden_size, 2 * n_blocks * block_size, 1),
        )
        # One decoder for every block (blocks folded into the batch): the same map from a
        # latent block to a source, whichever block it is.
        self.decoder = torch.nn.Sequential(
            torch.nn.Conv1d(block_size, hidden_size, kernel_size, padding=padding),
            torch.nn.GELU(),
            torch.nn.Conv1d(hidden_size, n_bins, 1),
        )

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F) -> posterior mean and log-variance, each (B, K, D, T)."""
        batch, n_frames, _ = features.shape
        output = self.encoder(features.transpose(1, 2))
        output = output.reshape(batch, 2, self.n_blocks, self.block_size, n_frames)
        # Bounded log-variance: exp() of an unconstrained output can overflow early on.
        return output[:, 0], output[:, 1].clamp(-10.0, 10.0)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, K, D, T) -> mask logits (B, K, T, F), each block decoded alone."""
        batch, n_blocks, block_size, n_frames = latent.shape
        logits = self.decoder(latent.reshape(batch * n_blocks, block_size, n_frames))
        return logits.reshape(batch, n_blocks, self.n_bins, n_frames).transpose(2, 3)

    def forward(self, mixture: torch.Tensor, sample: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mixture magnitudes (B, T, F) -> (mask logits (B, K, T, F), mean, log-variance
        (B, K, D, T)).

        ``sample``: reparameterised posterior sample (training) or the posterior mean.
        """
        mean, log_variance = self.encode(compress_magnitude(mixture, mixture))
        return self.decode(_posterior_sample(mean, log_variance, sample)), mean, log_variance


class BlockVAEUNetNetwork(_LatentMemory):
    """A 2-D U-Net whose bottleneck is ``n_blocks`` Gaussian latent maps, each decoded
    by the same decoder with the mixture's skip connections (``architecture="unet"``).

    The encoder is :class:`~decomp.estimators.amortized.unet.UNet`'s (4x4 strided
    convolutions, on MHUNet's dB-normalised input). A 1x1 convolution turns its deepest
    map into the mean and log-variance of ``n_blocks`` latent maps of ``block_size``
    channels at the bottleneck's resolution (``T / 2**n_levels`` frames by
    ``F / 2**n_levels`` bins, after padding). Each block alone is mapped back to the
    deepest width by a shared 1x1 convolution and decoded by the U-Net's decoder with the
    *mixture's* encoder outputs as skip connections, so a block only needs to say which
    parts of the mixture are its source; the fine spectral detail comes from the skips.
    Every block goes through the same decoder (blocks folded into the batch), as in the
    paper's shared decoder.

    Parameters
    ----------
    n_blocks : int
        Latent blocks, i.e. output slots.
    block_size : int
        Channels per latent block.
    n_levels : int
        U-Net levels.
    base_channels : int
        Channels of the first level, doubled at every level.
    """

    def __init__(self, n_blocks: int, block_size: int, n_levels: int,
                 base_channels: int) -> None:
        super().__init__(n_blocks, block_size)
        self.unet = UNet(1, 1, n_levels=n_levels, base_channels=base_channels, n_heads=1)
        deepest = base_channels * 2 ** (n_levels - 1)
        self.to_latent = torch.nn.Conv2d(deepest, 2 * n_blocks * block_size, 1)
        self.from_latent = torch.nn.Conv2d(block_size, deepest, 1)

    def encode(self, mixture: torch.Tensor
               ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """mixture magnitudes (B, T, F) -> (the encoder's outputs but the deepest, for the
        skips; posterior mean and log-variance, each (B, K, D, T', F'))."""
        features = self.unet.encode(network_input(mixture))
        output = self.to_latent(features[-1])
        output = output.reshape(output.shape[0], 2, self.n_blocks, self.block_size,
                                *output.shape[-2:])
        # Bounded log-variance: exp() of an unconstrained output can overflow early on.
        return features[:-1], output[:, 0], output[:, 1].clamp(-10.0, 10.0)

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor], n_frames: int,
               n_bins: int) -> torch.Tensor:
        """latent (B, K, D, T', F') and the mixture's skips -> mask logits (B, K, T, F),
        each block decoded alone by the same decoder."""
        deepest = self.from_latent(latent.flatten(0, 1))  # (B * K, C, T', F')
        deepest = deepest.unflatten(0, latent.shape[:2])
        return self.unet.decode_each(skips, deepest, n_frames, n_bins)[:, :, 0]

    def forward(self, mixture: torch.Tensor, sample: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mixture magnitudes (B, T, F) -> (mask logits (B, K, T, F), mean, log-variance
        (B, K, D, T', F')) with ``T'``, ``F'`` the bottleneck's frames and bins.

        ``sample``: reparameterised posterior sample (training) or the posterior mean.
        """
        skips, mean, log_variance = self.encode(mixture)
        latent = _posterior_sample(mean, log_variance, sample)
        return self.decode(latent, skips, *mixture.shape[-2:]), mean, log_variance


# --------------------------------------------------------------------- estimator
class BlockVAE(AmortizedSeparator):
    """Variational block-wise disentanglement separator with a Sinkhorn permutation loss.

    A hybrid DSP/DNN reading of separation (Helwani et al., 2024): the mixture's
    magnitude spectrogram is encoded, frame by frame with temporal context, into
    ``n_blocks`` latent blocks of ``block_size`` dimensions. Each block is a diagonal
    Gaussian posterior ``q(z_k | x) = N(mu_k, diag(sigma_k^2))`` with a standard normal
    prior, and one decoder, **shared by all blocks**, maps each block alone to the mask
    logits of one source. The single-channel, under-determined problem thus becomes an
    over-determined "multichannel" one in latent space: ``n_blocks`` latent channels,
    each demixed by the same map. Because the blocks are exchangeable (the decoder cannot
    tell them apart), the reconstruction is scored under a soft, differentiable matching
    of blocks to sources, and a memory of per-source latent statistics puts the blocks in
    a fixed order at inference.

    **Outputs.** ``masks = softmax(logits, over blocks)`` and ``source_k = masks_k *
    |mixture|``: the sources sum to the mixture by construction (mixture consistency is
    then not a loss term), every estimate is non-negative, and :meth:`separate` can apply
    the masks to the complex STFT directly. A block with no source learns a near-zero
    mask.

    **Loss** (``_training_losses``, per batch of chunks), an ELBO with a permutation:

    - reconstruction: the targets are padded with silent sources up to ``n_blocks``,
      ``cost[b, i, j] = pairwise_mse(compressed estimate i, compressed target j)`` on
      :func:`~decomp.estimators.amortized.objectives.compress_magnitude`-d magnitudes
      (``separation_loss="magnitude"``) or the waveform cost of
      :func:`~decomp.losses.pairwise_separation_cost` (``"si_sdr"``: negative SI-SDR in
      dB of the masked mixture STFT inverted with its phase, a silent target's cost the
      estimate's level), ``P = sinkhorn(-cost / (permutation_temperature * mean(cost)))``
      (dB costs can be negative: they are first taken from each item's smallest one,
      which leaves the loss unchanged since ``P``'s columns sum to one) and the loss is
      ``sum(P * cost) / n_blocks``
      (:func:`soft_permutation_loss`), differentiable through ``P`` as well;
    - ``kl_weight * KL(q(z) || N(0, I))`` averaged over blocks, dimensions and frames.

    The logged entries are ``reconstruction``, ``kl``, ``permutation_entropy`` (mean
    entropy of the rows of ``P``, in nats: 0 for a hard permutation) and ``hungarian``
    (the reconstruction under the best hard permutation, for comparison; the soft loss
    is never below it, up to the Sinkhorn tolerance). The validation loss is the same
    ``loss`` with the posterior mean instead of a sample.

    **Memory.** For every training batch the hard matching (Hungarian on ``P``) tells
    which block holds target ``j``; memory slot ``j`` takes that block's chunk-averaged
    posterior mean into a running mean and covariance (EMA with ``memory_momentum``;
    slots beyond an item's sources take its silent blocks; an absent source leaves its
    slot untouched). At inference each chunk's blocks are matched to the memory slots
    (Hungarian on the Gaussian negative log-likelihood: Mahalanobis distance plus
    log-determinant), so output slot ``k`` holds the block that looks like training
    target ``k``. The base's chunk alignment then matches each window's outputs to the
    output so far on the frames they share (see
    :class:`~decomp.estimators.amortized.base.AmortizedSeparator`), so the first window's
    memory order holds for the whole recording. When the training sources have a
    consistent order (stem ``k`` is always, say, the bass) the two agree; when they do
    not (a blind :class:`decomp.data.MixtureStream`, whose sources come in random
    order), the memory's slots carry no identity and order each chunk arbitrarily, and
    the alignment is what keeps a source in its slot (on the held-out font, one
    U-Net snapshot scored 2.6 dB SI-SDRi on 2 instruments with the memory alone and
    4.4 dB with the alignment after it; see ``docs/guide/blockvae.md``).

    **Architectures.** ``architecture="conv"``: the scale-free compressed magnitudes go
    through 1-D convolutions over time (two layers, a dilated second one, GELU) to
    ``n_blocks x block_size`` latent dimensions per frame, and each block is decoded
    alone by two 1-D convolutions into mask logits over the bins
    (:class:`BlockVAENetwork`). ``architecture="unet"``: a 2-D U-Net on MHUNet's
    dB-normalised log-frequency spectrogram whose bottleneck holds the ``n_blocks``
    Gaussian latent maps (``block_size`` channels each); every block is decoded alone by
    the same U-Net decoder with the mixture's encoder outputs as skip connections, so the
    block says which source and the skips give the detail (:class:`BlockVAEUNetNetwork`;
    the front end defaults to
    :data:`~decomp.estimators.amortized.unet.SOLOS_FRONT_END`). The decoder stays one
    map shared by all blocks; that it also reads the mixture departs from a decoder of
    the latent alone.

    **What the paper leaves open** (only its abstract is available) and the choices made:
    the encoder/decoder architecture (above); the latent layout (``n_blocks x
    block_size`` per frame, or per cell of the U-Net's bottleneck);
    the prior (standard normal per block); that the decoder produces mask logits rather
    than magnitudes (to get mixture consistency for free); the exact form of the
    "differentiable permutation loss" (here Sinkhorn with a relative temperature, no
    annealing); the memory's statistics (chunk-mean posterior means, EMA mean and full
    covariance per slot) and its use (re-ordering blocks at inference only; it does not
    enter the loss).

    Parameters
    ----------
    n_blocks : int, default=4
        Latent blocks = output slots; at least the largest number of sources in a
        training mixture.
    block_size : int, default=16
        Latent dimensions per block.
    hidden_size : int, default=256
        Channels of the encoder's and decoder's hidden convolutions (``"conv"``).
    kernel_size : int, default=5
        Temporal kernel of the convolutions (odd; ``"conv"``).
    kl_weight : float, default=1e-3
        Weight of the KL term (a beta-VAE's beta on per-dimension averages); 0 gives a
        plain (deterministic at inference) autoencoder with noisy training.
    permutation_temperature : float, default=0.1
        Sinkhorn temperature, relative to each item's mean pairwise cost. Lower: closer
        to hard permutation-invariant training; higher: softer, smoother early training,
        but a soft matching also pulls blocks towards the average of the sources.
    sinkhorn_iterations : int, default=30
        Sinkhorn normalisation rounds.
    memory_momentum : float, default=0.99
        EMA momentum of the memory statistics (about ``1 / (1 - momentum)`` batches of
        memory).
    separation_loss : {"magnitude", "si_sdr"}, default="magnitude"
        The reconstruction cost (see **Loss**): compressed magnitudes, or the waveforms'
        SI-SDR, which trains on waveforms and so only on a
        :class:`decomp.data.MixtureStream`. ``"si_sdr"`` departs from the paper's
        (unstated) reconstruction as MHUNet, SoundOfPixels and AudioSlots do; the
        permutation stays the differentiable Sinkhorn matching.
    architecture : {"conv", "unet"}, default="conv"
        The encoder and decoder (see **Architectures**).
    n_levels : int, default=4
        U-Net levels (``"unet"``); the bottleneck has ``T / 2**n_levels`` frames.
    base_channels : int, default=24
        Channels of the U-Net's first level, doubled at every level (``"unet"``).
    front_end, chunk_frames, max_epochs, batch_size, learning_rate, validation_fraction, \
patience, max_grad_norm, max_seconds, checkpoint, device, random_state, progress, \
steps_per_epoch, num_workers, learning_rate_decay, inference_overlap, silence_floor_db
        Shared training and inference parameters; see
        :class:`~decomp.estimators.amortized.base.AmortizedSeparator`.

    Attributes
    ----------
    front_end_ : Spectrogram
        The front end used.
    n_features_in_ : int
        Frequency bins ``F`` of the training spectrograms.
    n_slots_ : int
        Output slots (``n_blocks``).
    max_sources_ : int
        Largest number of sources in a training mixture.
    classes_ : ndarray or None
        Source labels seen in ``fit`` (recorded only; the outputs have no classes).
    network_state_ : dict of str to Tensor
        Weights of the :class:`BlockVAENetwork` and its memory buffers
        (``memory_mean`` (K, D), ``memory_covariance`` (K, D, D), ``memory_count`` (K,)).
    history_ : dict of str to ndarray
        Per-epoch ``train_loss``, ``validation_loss``, ``train_reconstruction``,
        ``train_kl``, ``train_permutation_entropy`` and ``train_hungarian``.
    n_epochs_, best_epoch_, best_validation_loss_, n_train_items_, n_validation_items_, \
training_seconds_
        Training summary.

    Notes
    -----
    Shapes: ``fit`` takes mixtures (N, T, F) and sources (N, S, T, F) with S <=
    ``n_blocks`` (or waveforms); ``transform`` maps (T, F) or (N, T, F) to
    ([N,] n_blocks, T, F); ``separate`` maps (n_samples,) or (N, n_samples) to
    ([N,] n_blocks, n_samples). Internally the posterior is (B, n_blocks, block_size, T)
    (``"unet"``: (B, n_blocks, block_size, T', F') at the bottleneck's resolution) and
    the mask logits (B, n_blocks, T, F).

    References
    ----------
    K. Helwani, M. Togami, P. Smaragdis and M. M. Goodwin, "Sound source separation
    using latent variational block-wise disentanglement", ICASSP Workshops 2024,
    arXiv:2402.06683.

    G. Mena, D. Belanger, S. Linderman and J. Snoek, "Learning latent permutations with
    Gumbel-Sinkhorn networks", ICLR 2018.

    D. P. Kingma and M. Welling, "Auto-encoding variational Bayes", ICLR 2014.

    Examples
    --------
    >>> import numpy as np
    >>> from decomp.estimators.amortized.blockvae import BlockVAE
    >>> rng = np.random.default_rng(0)
    >>> templates = rng.uniform(0, 1, (2, 12)).astype(np.float32)
    >>> activations = rng.uniform(0, 1, (8, 2, 16, 1)).astype(np.float32)
    >>> sources = activations * templates[None, :, None, :]  # (8, 2, 16, 12)
    >>> mixtures = sources.sum(axis=1)  # (8, 16, 12)
    >>> model = BlockVAE(n_blocks=3, hidden_size=16, block_size=4, chunk_frames=8,
    ...                  max_epochs=2, random_state=0).fit(mixtures, sources)
    >>> model.transform(mixtures[0]).shape
    (3, 16, 12)
    >>> bool(np.allclose(model.transform(mixtures[0]).sum(axis=0), mixtures[0], atol=1e-5))
    True
    """

    _parameter_constraints: dict = {
        **AmortizedSeparator._parameter_constraints,
        "n_blocks": [StrictInterval(Integral, 1, None, closed="left")],
        "block_size": [StrictInterval(Integral, 1, None, closed="left")],
        "hidden_size": [StrictInterval(Integral, 1, None, closed="left")],
        "kernel_size": [StrictInterval(Integral, 1, None, closed="left")],
        "kl_weight": [StrictInterval(Real, 0, None, closed="left")],
        "permutation_temperature": [StrictInterval(Real, 0, None, closed="neither")],
        "sinkhorn_iterations": [StrictInterval(Integral, 1, None, closed="left")],
        "memory_momentum": [StrictInterval(Real, 0, 1, closed="left")],
        "separation_loss": [StrOptions({"magnitude", "si_sdr"})],
        "architecture": [StrOptions({"conv", "unet"})],
        "n_levels": [StrictInterval(Integral, 1, None, closed="left")],
        "base_channels": [StrictInterval(Integral, 1, None, closed="left")],
    }
    # A stream's labels are recorded in classes_, but the blocks have none.
    _outputs_have_classes = False

    def __init__(
        self,
        *,
        n_blocks: int = 4,
        block_size: int = 16,
        hidden_size: int = 256,
        kernel_size: int = 5,
        kl_weight: float = 1e-3,
        permutation_temperature: float = 0.1,
        sinkhorn_iterations: int = 30,
        memory_momentum: float = 0.99,
        separation_loss: str = "magnitude",
        architecture: str = "conv",
        n_levels: int = 4,
        base_channels: int = 24,
        front_end: Spectrogram | None = None,
        chunk_frames: int = 64,
        max_epochs: int = 100,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        validation_fraction: float = 0.1,
        patience: int = 20,
        max_grad_norm: float | None = 5.0,
        max_seconds: float | None = None,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        random_state: Any = None,
        progress: bool = False,
        steps_per_epoch: int = 100,
        num_workers: int = 0,
        learning_rate_decay: int = 0,
        inference_overlap: float = 0.5,
        silence_floor_db: float = -30.0,
    ) -> None:
        super().__init__(
            front_end=front_end, chunk_frames=chunk_frames, max_epochs=max_epochs,
            batch_size=batch_size, learning_rate=learning_rate,
            validation_fraction=validation_fraction, patience=patience,
            max_grad_norm=max_grad_norm, max_seconds=max_seconds, checkpoint=checkpoint,
            device=device, random_state=random_state, progress=progress,
            steps_per_epoch=steps_per_epoch, num_workers=num_workers,
            learning_rate_decay=learning_rate_decay, inference_overlap=inference_overlap,
            silence_floor_db=silence_floor_db,
        )
        self.n_blocks = n_blocks
        self.block_size = block_size
        self.hidden_size = hidden_size
        self.kernel_size = kernel_size
        self.kl_weight = kl_weight
        self.permutation_temperature = permutation_temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.memory_momentum = memory_momentum
        self.separation_loss = separation_loss
        self.architecture = architecture
        self.n_levels = n_levels
        self.base_channels = base_channels

    @property
    def _needs_audio(self) -> bool:  # type: ignore[override]
        return self.separation_loss == "si_sdr"

    # ------------------------------------------------------------- subclass hooks
    def _n_slots(self, max_sources: int, n_classes: int | None) -> int:
        needed = int(max_sources)
        if needed > self.n_blocks:
            raise ValueError(
                f"BlockVAE has n_blocks={self.n_blocks} latent blocks (one per source) but a "
                f"training mixture has {needed} sources; set n_blocks >= {needed}.")
        return int(self.n_blocks)

    @property
    def _default_front_end(self) -> Spectrogram:  # type: ignore[override]
        # The U-Net reads MHUNet's log-frequency front end.
        return SOLOS_FRONT_END if self.architecture == "unet" else DEFAULT_FRONT_END

    def _build_network(self) -> BlockVAENetwork | BlockVAEUNetNetwork:
        if self.architecture == "unet":
            return BlockVAEUNetNetwork(self.n_blocks, self.block_size, self.n_levels,
                                       self.base_channels)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convolutions); got "
                             f"{self.kernel_size}.")
        return BlockVAENetwork(self.n_features_in_, self.n_blocks, self.block_size,
                               self.hidden_size, self.kernel_size)

    def _masks(self, network: _LatentMemory, mixture: torch.Tensor, sample: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mixture (B, T, F) -> masks (B, K, T, F) summing to one over K, and the
        posterior mean and log-variance (B, K, D, ...)."""
        logits, mean, log_variance = network(mixture, sample=sample)
        return torch.softmax(logits, dim=1), mean, log_variance

    @staticmethod
    def _chunk_statistics(mean: torch.Tensor) -> torch.Tensor:
        """Posterior means (B, K, D, ...) -> their average over frames (and bins) (B, K, D)."""
        return mean.flatten(3).mean(dim=-1)

    def _training_losses(
        self, network: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        mixture, sources = batch["mixture"], batch["sources"]
        masks, mean, log_variance = self._masks(network, mixture, sample=network.training)
        n_sources = sources.shape[1]
        cost = self._pairwise_costs(masks, batch)  # (B, K blocks, K targets)
        # The Sinkhorn temperature is relative to the mean cost, which must be positive:
        # dB costs are taken from each item's smallest one. P's columns sum to one, so
        # the shift moves the loss by exactly that constant and is added back.
        offset = (cost.detach().amin(dim=(1, 2)) if self.separation_loss == "si_sdr"
                  else cost.new_zeros(cost.shape[0]))  # (B,)
        reconstruction, permutation = soft_permutation_loss(
            cost - offset[:, None, None], float(self.permutation_temperature),
            int(self.sinkhorn_iterations))
        reconstruction = (reconstruction + offset).mean()
        kl = gaussian_kl(mean, log_variance).mean()
        block_of_target = _assignment(permutation, maximize=True)  # (B, K)
        hard = cost.detach().gather(1, block_of_target.unsqueeze(1)).mean()
        entropy = -(permutation * permutation.clamp_min(1e-12).log()).sum(dim=2).mean()
        if network.training:
            statistics = self._chunk_statistics(mean.detach())  # (B, K, D)
            assigned = torch.gather(
                statistics, 1, block_of_target.unsqueeze(-1).expand_as(statistics))
            weights = torch.ones_like(block_of_target, dtype=statistics.dtype)
            # A source slot absent from this crop would teach its memory silence.
            weights[:, :n_sources] = batch["present"].to(statistics.dtype)
            network.update_memory(assigned, weights, float(self.memory_momentum))
        return {
            "loss": reconstruction + self.kl_weight * kl,
            "reconstruction": reconstruction.detach(),
            "kl": kl.detach(),
            "permutation_entropy": entropy.detach(),
            "hungarian": hard,
        }

    def _pairwise_costs(self, masks: torch.Tensor, batch: dict[str, torch.Tensor]
                        ) -> torch.Tensor:
        """(B, K, T, F) masks -> (B, K, K) costs of every block against every target
        (the sources padded with silent ones to ``n_blocks``)."""
        n_blocks = masks.shape[1]
        if self.separation_loss == "si_sdr":
            mixture_audio, source_audio = batch["mixture_audio"], batch["source_audio"]
            estimates = self.front_end_._apply_masks(mixture_audio, masks)  # (B, K, N)
            targets = torch.nn.functional.pad(
                source_audio, (0, 0, 0, n_blocks - source_audio.shape[1]))
            return pairwise_separation_cost(estimates, targets, mixture_audio,
                                            silence_floor_db=self.silence_floor_db)
        mixture, sources = batch["mixture"], batch["sources"]
        estimates = masks * mixture.unsqueeze(1)  # (B, K, T, F)
        targets = torch.nn.functional.pad(sources, (0, 0, 0, 0, 0, n_blocks - sources.shape[1]))
        return pairwise_mse(compress_magnitude(estimates, mixture),
                            compress_magnitude(targets, mixture))

    def _forward(
        self, network: torch.nn.Module, mixture: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        masks, mean, _ = self._masks(network, mixture, sample=False)
        order = network.memory_order(self._chunk_statistics(mean))  # (B, K)
        items = torch.arange(mixture.shape[0], device=mixture.device).unsqueeze(1)
        masks = masks[items, order]
        return masks * mixture.unsqueeze(1), masks
