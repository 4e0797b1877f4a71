"""The separators' training objectives: scale-free compression and permutation-invariant
losses on magnitudes or on the waveforms that masks resynthesise."""

from __future__ import annotations

import functools

import torch

from decomp.audio.spectrogram import Spectrogram
from decomp.losses import pairwise_separation_cost, permutation_invariant_loss

__all__ = ["compress_magnitude", "pit_magnitude_loss", "pit_waveform_loss"]


def compress_magnitude(magnitude: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Scale-free log compression: ``log1p(magnitude / mean(|mixture|))`` per item.

    Dividing by the mixture's mean magnitude makes network inputs and losses independent
    of the recording level; ``log1p`` keeps quiet partials visible.

    Parameters
    ----------
    magnitude : Tensor of shape (batch, ..., n_frames, n_bins)
        Non-negative magnitudes (the mixture itself or source estimates / targets).
    mixture : Tensor of shape (batch, n_frames, n_bins)
        The mixture magnitudes that set each item's reference level.

    Returns
    -------
    Tensor of the shape of ``magnitude``
    """
    reference = mixture.mean(dim=(-2, -1)).clamp_min(1e-8)  # (batch,)
    reference = reference.reshape(-1, *([1] * (magnitude.ndim - 1)))
    return torch.log1p(magnitude / reference)


def pit_magnitude_loss(
    estimates: torch.Tensor, sources: torch.Tensor, mixture: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant MSE between compressed source magnitudes.

    Targets are padded with silent sources up to the number of estimates and every slot
    is scored (:func:`decomp.losses.permutation_invariant_loss` with
    ``unmatched="silence"``), so slots without a source learn silence.

    Parameters
    ----------
    estimates : Tensor of shape (batch, n_slots, n_frames, n_bins)
    sources : Tensor of shape (batch, n_sources, n_frames, n_bins), n_sources <= n_slots
    mixture : Tensor of shape (batch, n_frames, n_bins)

    Returns
    -------
    loss : Tensor of shape ()
    permutation : Tensor of shape (batch, n_sources), int64
    """
    return permutation_invariant_loss(
        compress_magnitude(estimates, mixture), compress_magnitude(sources, mixture),
        pairwise="mse", unmatched="silence",
    )


def pit_waveform_loss(
    masks: torch.Tensor, mixture_audio: torch.Tensor, source_audio: torch.Tensor,
    front_end: Spectrogram, *, absent: str = "silence", silence_floor_db: float = -30.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant negative SI-SDR of the sources that masks resynthesise.

    Each mask is applied to the mixture's STFT and inverted with its phase
    (differentiably); the estimates are matched to the source waveforms under the best
    assignment, and slots without a source pay their level relative to the mixture
    (:func:`decomp.losses.pairwise_separation_cost`), so they learn silence.

    Parameters
    ----------
    masks : Tensor of shape (batch, n_slots, n_frames, n_bins)
        On ``front_end``'s bins, for the mixture's frames.
    mixture_audio : Tensor of shape (batch, n_samples)
    source_audio : Tensor of shape (batch, n_sources, n_samples), n_sources <= n_slots
        All-zero rows for absent sources.
    front_end : Spectrogram
        The front end the masks were computed on.
    absent : {"silence", "ignore"}, default="silence"
        ``"silence"``: a slot without a source pays its level relative to the mixture.
        ``"ignore"``: it pays nothing (something else must silence it, as MHUNet's
        ``count_sources`` zeroes the masks of the heads beyond the count), and the slots
        are matched to the sounding sources only.
    silence_floor_db : float, default=-30.0
        The soft floor (dB) of a slot's cost without a source (``absent="silence"``).

    Returns
    -------
    loss : Tensor of shape ()
        The mean cost (dB) over every slot of every item (``absent="ignore"``: over
        every sounding source of every item).
    permutation : Tensor of shape (batch, n_slots), int64
        ``permutation[b, j]`` is the slot matched to source ``j`` (the columns past
        ``n_sources`` are the silent targets' slots).
    """
    estimates = front_end._apply_masks(mixture_audio, masks)  # (B, n_slots, n_samples)
    targets = torch.nn.functional.pad(source_audio,
                                      (0, 0, 0, masks.shape[1] - source_audio.shape[1]))
    pairwise = functools.partial(pairwise_separation_cost, mixtures=mixture_audio,
                                 silence_floor_db=silence_floor_db)
    if absent == "silence":
        return permutation_invariant_loss(estimates, targets, pairwise=pairwise)
    if absent != "ignore":
        raise ValueError(f"absent must be 'silence' or 'ignore'; got {absent!r}.")
    sounding = targets.abs().amax(dim=-1) > 0  # (B, n_slots)

    def sounding_only(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        costs = pairwise(estimates, targets)  # (B, n_slots, n_slots)
        return torch.where(sounding[:, None, :], costs, torch.zeros_like(costs))

    per_item, permutation = permutation_invariant_loss(estimates, targets,
                                                       pairwise=sounding_only, reduction="none")
    # per_item is the mean over every slot; the silent targets' zeros are left out.
    n_sounding = sounding.sum(dim=1).clamp_min(1)
    return (per_item * targets.shape[1] / n_sounding).mean(), permutation
