"""AudioSlots: slot-centric source separation (Reddy et al., 2023).

A mixture's magnitude spectrogram is cut into time-frequency patches, encoded by a
Transformer, grouped into ``n_slots`` source embeddings by slot attention, and every
slot is decoded on its own by a spatial broadcast decoder. The encoder is
permutation-equivariant in the slots and the training loss is permutation-invariant, so
the slots form an unordered set of sources.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Iterator
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from decomp._chunks import overlap_add, window_starts
from decomp._validation import StrictInterval, check_params
from decomp.audio._segments import checked_blocks
from decomp.audio.spectrogram import Spectrogram
from decomp.estimators.amortized.base import DEFAULT_FRONT_END, AmortizedSeparator
from decomp.estimators.amortized.objectives import (
    compress_magnitude,
    pit_magnitude_loss,
    pit_waveform_loss,
)
from decomp.estimators.amortized.unet import SOLOS_FRONT_END, UNet, network_input
from decomp.estimators.amortized.unordered import (
    cosine_assignment,
    count_sounding_outputs,
    refine_by_rest,
)

__all__ = ["AudioSlots", "AudioSlotsNetwork", "AudioSlotsUNetNetwork", "SlotAttention"]


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al., 2020): inputs (B, N, D) -> slots (B, K, D).

    All slots start as samples of one learned Gaussian, so the module is
    permutation-equivariant: permuting the initial slots permutes the output slots. In
    training the samples are fresh; in evaluation they are a fixed draw stored with the
    weights (buffer ``eval_noise``), which makes inference deterministic. (Starting every
    slot at the mean would not: identical slots receive identical updates and never
    separate.)

    Parameters
    ----------
    n_slots : int
        Number of slots K.
    dim : int
        Size D of the inputs and the slots.
    n_iterations : int
        Rounds of attention + GRU update.
    hidden_dim : int
        Width of the residual MLP after each update.
    """

    def __init__(self, n_slots: int, dim: int, n_iterations: int, hidden_dim: int) -> None:
        super().__init__()
        self.n_slots = n_slots
        self.n_iterations = n_iterations
        self.scale = dim**-0.5
        self.slots_mu = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.slots_log_sigma = nn.Parameter(torch.full((1, 1, dim), math.log(dim**-0.5)))
        self.register_buffer("eval_noise", torch.randn(n_slots, dim))
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, dim))

    def initial_slots(self, batch_size: int) -> torch.Tensor:
        """Initial slots (batch_size, K, D): fresh samples in training, fixed in eval."""
        mu = self.slots_mu.expand(batch_size, self.n_slots, -1)
        if self.training:
            noise = torch.randn_like(mu)
        else:
            noise = self.eval_noise.unsqueeze(0).expand(batch_size, -1, -1)
        return mu + self.slots_log_sigma.exp() * noise

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, N, D), optional initial slots (B, K, D) -> slots (B, K, D) and the
        last attention (B, K, N) (each input's weights sum to one over the slots)."""
        batch_size, _, dim = inputs.shape
        if slots is None:
            slots = self.initial_slots(batch_size)
        inputs = self.norm_inputs(inputs)
        keys, values = self.to_k(inputs), self.to_v(inputs)
        attention = inputs.new_zeros(batch_size, slots.shape[1], inputs.shape[1])
        for _ in range(self.n_iterations):
            previous = slots
            queries = self.to_q(self.norm_slots(slots))
            logits = torch.einsum("bkd,bnd->bkn", queries, keys) * self.scale
            # Softmax over the slots: the slots compete for every input token.
            attention = logits.softmax(dim=1) + 1e-8
            weights = attention / attention.sum(dim=-1, keepdim=True)
            updates = torch.einsum("bkn,bnd->bkd", weights, values)
            slots = self.gru(updates.reshape(-1, dim), previous.reshape(-1, dim))
            slots = slots.reshape(batch_size, -1, dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attention


class AudioSlotsNetwork(nn.Module):
    """The AudioSlots network: mixture magnitudes -> per-slot masks and generated spectra.

    Parameters
    ----------
    n_bins : int
        Frequency bins F of the input.
    chunk_frames : int
        Longest input (frames) the positional embeddings cover.
    n_slots, patch_frames, patch_bins, embed_dim, n_layers, n_heads, n_iterations, decoder_hidden
        As in :class:`AudioSlots`.
    """

    #: Feature maps per slot between the patch decoder and the 3x3 output convolution.
    decoder_channels = 8

    def __init__(self, *, n_bins: int, chunk_frames: int, n_slots: int, patch_frames: int,
                 patch_bins: int, embed_dim: int, n_layers: int, n_heads: int,
                 n_iterations: int, decoder_hidden: int, feature_channels: int = 0) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.chunk_frames = chunk_frames
        self.patch_frames = patch_frames
        self.patch_bins = patch_bins
        self.grid = (-(-chunk_frames // patch_frames), -(-n_bins // patch_bins))
        patch_size = patch_frames * patch_bins
        self.patch_embedding = nn.Linear(patch_size, embed_dim)
        self.encoder_position = nn.Parameter(0.02 * torch.randn(*self.grid, embed_dim))
        self.encoder = _transformer(embed_dim, n_layers, n_heads)
        self.slot_attention = SlotAttention(n_slots, embed_dim, n_iterations, decoder_hidden)
        self.decoder_position = nn.Parameter(0.02 * torch.randn(*self.grid, embed_dim))
        channels = self.decoder_channels
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, decoder_hidden), nn.GELU(),
            nn.Linear(decoder_hidden, decoder_hidden), nn.GELU(),
            nn.Linear(decoder_hidden, channels * patch_size),
        )
        # A 3x3 convolution at full resolution smooths the seams between decoded patches.
        self.output = nn.Sequential(nn.GELU(), nn.Conv2d(channels, 2, 3, padding=1))
        self.feature_channels = feature_channels
        if feature_channels > 0:
            # Full-resolution features of the mixture, read out by each slot (see AudioSlots).
            self.mixture_features = nn.Sequential(
                nn.Conv2d(1, feature_channels, 3, padding=1), nn.GELU(),
                nn.Conv2d(feature_channels, feature_channels, 3, padding=1))
            self.slot_readout = nn.Linear(embed_dim, feature_channels)

    def forward(self, mixture: torch.Tensor, slots: torch.Tensor | None = None, *,
                return_slots: bool = False) -> tuple[torch.Tensor, ...]:
        """Separate a batch of chunks.

        Parameters
        ----------
        mixture : Tensor of shape (batch, n_frames, n_bins)
            Magnitudes, ``n_frames <= chunk_frames``.
        slots : Tensor of shape (batch, n_slots, embed_dim), optional
            Initial slots (default: :meth:`SlotAttention.initial_slots`), e.g. the final
            slots of the previous window.
        return_slots : bool, default=False
            Also return the final slots.

        Returns
        -------
        masks : Tensor of shape (batch, n_slots, n_frames, n_bins)
            Softmax over the slots of the mask logits: non-negative, summing to one.
        generated : Tensor of shape (batch, n_slots, n_frames, n_bins)
            Each slot's directly generated spectrogram in the compressed units of
            :func:`~decomp.estimators.amortized.objectives.compress_magnitude` (>= 0).
        slots : Tensor of shape (batch, n_slots, embed_dim)
            With ``return_slots`` only: the slots after slot attention.
        """
        batch_size, n_frames, n_bins = mixture.shape
        if n_bins != self.n_bins or n_frames > self.chunk_frames:
            raise ValueError(
                f"the AudioSlots network takes chunks of at most {self.chunk_frames} frames "
                f"of {self.n_bins} bins; got shape {tuple(mixture.shape)}.")
        pt, pf = self.patch_frames, self.patch_bins
        rows, columns = -(-n_frames // pt), -(-n_bins // pf)
        features = compress_magnitude(mixture, mixture)
        features = nn.functional.pad(features, (0, columns * pf - n_bins,
                                                0, rows * pt - n_frames))
        patches = features.reshape(batch_size, rows, pt, columns, pf).permute(0, 1, 3, 2, 4)
        tokens = self.patch_embedding(patches.reshape(batch_size, rows, columns, pt * pf))
        tokens = tokens + self.encoder_position[:rows, :columns]
        tokens = self.encoder(tokens.flatten(1, 2))  # (B, rows * columns, D)
        slots, _ = self.slot_attention(tokens, slots)  # (B, K, D)
        n_slots = slots.shape[1]

        # Spatial broadcast: every slot is decoded alone, on the whole patch grid.
        grid = slots[:, :, None, None, :] + self.decoder_position[:rows, :columns]
        decoded = self.decoder(grid)  # (B, K, rows, columns, C * pt * pf)
        channels = self.decoder_channels
        decoded = decoded.reshape(batch_size * n_slots, rows, columns, channels, pt, pf)
        decoded = decoded.permute(0, 3, 1, 4, 2, 5).reshape(
            batch_size * n_slots, channels, rows * pt, columns * pf)
        output = self.output(decoded)[:, :, :n_frames, :n_bins]
        output = output.reshape(batch_size, n_slots, 2, n_frames, n_bins)
        if self.feature_channels > 0:
            maps = self.mixture_features(features[:, None, :n_frames, :n_bins])  # (B, C, T, F)
            readout = torch.einsum("bkc,bctf->bktf", self.slot_readout(slots), maps)
            output = torch.cat([output[:, :, :1], (output[:, :, 1] + readout)[:, :, None]], 2)
        masks, generated = _split_outputs(output)
        return (masks, generated, slots) if return_slots else (masks, generated)


def _stretch_rows(position: torch.Tensor, n_rows: int) -> torch.Tensor:
    """A positional embedding ``(rows, columns, embed_dim)`` resampled linearly along its
    first axis (time) to ``n_rows`` rows, ends kept: how a fine-tune to another
    ``chunk_frames`` starts. Returned in ``position``'s dtype."""
    resampled = nn.functional.interpolate(position.float().permute(1, 2, 0), size=n_rows,
                                          mode="linear", align_corners=True)
    return resampled.permute(2, 0, 1).to(position.dtype)


def _transformer(embed_dim: int, n_layers: int, n_heads: int) -> nn.Module:
    """Pre-norm Transformer encoder on (B, N, embed_dim) tokens (identity for 0 layers)."""
    if n_layers == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(
        embed_dim, n_heads, dim_feedforward=2 * embed_dim, dropout=0.0,
        activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(embed_dim),
                                 enable_nested_tensor=False)


def _split_outputs(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, 2, T, F) decoder outputs -> masks (softmax over K of channel 1) and the
    generated magnitudes (softplus of channel 0)."""
    return output[:, :, 1].softmax(dim=1), nn.functional.softplus(output[:, :, 0])


class AudioSlotsUNetNetwork(nn.Module):
    """AudioSlots on a U-Net (``decoder="unet"``): mixture magnitudes -> per-slot masks
    and generated spectra.

    The patch tokens are the cells of the deepest map of
    :class:`~decomp.estimators.amortized.unet.UNet`'s encoder (learned, overlapping
    ``2**n_levels``-wide patches instead of linear ones), projected to ``embed_dim`` with
    a learned positional embedding, encoded by the Transformer and grouped by slot
    attention as in :class:`AudioSlotsNetwork`. Each slot is broadcast to every cell of
    the deepest grid (plus a positional embedding), projected back to the deepest width
    and decoded alone by the U-Net's decoder with the *mixture's* encoder outputs as
    skip connections: the slot says which source, the skips give the detail.

    With ``attention_skip`` each slot's deepest map also receives the mixture's deepest
    encoder map weighted, cell by cell, by that slot's share of the last slot-attention
    round (the shares sum to one over the slots, so the slots' gated maps add up to the
    mixture's): a broadcast slot is the same vector in every cell and cannot say *where*
    in time and frequency its source sounds; the attention it won can.

    Parameters
    ----------
    n_bins : int
        Frequency bins F of the input.
    chunk_frames : int
        Longest input (frames) the positional embeddings cover.
    n_slots, embed_dim, n_layers, n_heads, n_iterations, decoder_hidden, n_levels, \
base_channels, attention_skip
        As in :class:`AudioSlots`.
    """

    def __init__(self, *, n_bins: int, chunk_frames: int, n_slots: int, embed_dim: int,
                 n_layers: int, n_heads: int, n_iterations: int, decoder_hidden: int,
                 n_levels: int, base_channels: int, attention_skip: bool = True) -> None:
        super().__init__()
        self.attention_skip = attention_skip
        self.n_bins = n_bins
        self.chunk_frames = chunk_frames
        multiple = 2**n_levels
        self.grid = (-(-chunk_frames // multiple), -(-n_bins // multiple))
        self.unet = UNet(1, 2, n_levels=n_levels, base_channels=base_channels)
        deepest = base_channels * 2 ** (n_levels - 1)
        self.to_tokens = nn.Linear(deepest, embed_dim)
        self.encoder_position = nn.Parameter(0.02 * torch.randn(*self.grid, embed_dim))
        self.encoder = _transformer(embed_dim, n_layers, n_heads)
        self.slot_attention = SlotAttention(n_slots, embed_dim, n_iterations, decoder_hidden)
        self.decoder_position = nn.Parameter(0.02 * torch.randn(*self.grid, embed_dim))
        self.from_slots = nn.Linear(embed_dim, deepest)

    def forward(self, mixture: torch.Tensor, slots: torch.Tensor | None = None, *,
                return_slots: bool = False) -> tuple[torch.Tensor, ...]:
        """(batch, n_frames, n_bins) magnitudes -> masks and generated spectra, each
        (batch, n_slots, n_frames, n_bins), and with ``return_slots`` the final slots
        (batch, n_slots, embed_dim), as :meth:`AudioSlotsNetwork.forward`."""
        _, n_frames, n_bins = mixture.shape
        if n_bins != self.n_bins or n_frames > self.chunk_frames:
            raise ValueError(
                f"the AudioSlots network takes chunks of at most {self.chunk_frames} frames "
                f"of {self.n_bins} bins; got shape {tuple(mixture.shape)}.")
        features = self.unet.encode(network_input(mixture))
        rows, columns = features[-1].shape[-2:]
        tokens = self.to_tokens(features[-1].permute(0, 2, 3, 1))  # (B, rows, columns, D)
        tokens = self.encoder((tokens + self.encoder_position[:rows, :columns]).flatten(1, 2))
        slots, attention = self.slot_attention(tokens, slots)  # (B, K, D), (B, K, N)
        grid = slots[:, :, None, None, :] + self.decoder_position[:rows, :columns]
        deepest = self.from_slots(grid).permute(0, 1, 4, 2, 3)  # (B, K, C, rows, columns)
        if self.attention_skip:
            shares = attention.unflatten(2, (rows, columns))[:, :, None]  # (B, K, 1, r, c)
            deepest = deepest + shares * features[-1][:, None]
        masks, generated = _split_outputs(
            self.unet.decode_each(features[:-1], deepest, n_frames, n_bins))
        return (masks, generated, slots) if return_slots else (masks, generated)


class AudioSlots(AmortizedSeparator):
    """AudioSlots: a slot-centric, permutation-invariant source separator.

    The mixture's magnitude spectrogram (compressed with
    :func:`~decomp.estimators.amortized.objectives.compress_magnitude`) is split into patches of
    ``patch_frames x patch_bins``, embedded linearly with a learned 2-D positional
    embedding and encoded by a Transformer. Slot attention (Locatello et al., 2020) then
    gathers the patch tokens into ``n_slots`` slot embeddings: every slot starts as a
    sample of the same learned Gaussian and the slots compete for tokens (softmax over the
    slots), so the encoder is permutation-equivariant. A spatial broadcast decoder
    decodes each slot on its own: the slot embedding is copied to every cell of the patch
    grid, a positional embedding is added, an MLP maps each cell to a patch of feature
    maps and a 3x3 convolution gives two channels per bin: a mask logit and a generated
    (compressed) magnitude.

    **Masks instead of direct generation.** The paper generates each source's spectrogram
    directly from its slot. Here the separated sources are ``masks * mixture`` with
    ``masks`` the softmax over the slots of the mask logits, as the alpha masks of
    slot-attention autoencoders: the masks sum to one in every bin, so the sources sum to
    the mixture exactly, no slot can put energy where the mixture has none, and the
    sources inherit the mixture's fine structure that a small decoder would blur. It also
    makes :meth:`separate` exact (masking the mixture's STFT). The paper's route is kept
    as a second output channel, trained with the same loss on the same slot assignment
    (weight ``generation_weight``); it shapes the slot embeddings (each slot must describe
    its source well enough to draw it) but is not used to separate. Slots without a source
    are trained towards silence (the loss scores them against all-zero targets).

    **Reading the mixture at full resolution.** A slot is one vector (``embed_dim``
    numbers) and the broadcast decoder sees nothing else, so it can only draw a smooth
    mask: it cannot say which harmonic of which frame belongs to its source. In the
    separation table's instrument runs (480 s of training on this 2-core CPU) the pure
    broadcast decoder never left the trivial solution of one slot holding the whole
    mixture (SIR 0.9 dB, SI-SDR improvement 0.4 dB). With ``feature_channels > 0`` a
    small convolutional network computes ``feature_channels`` feature maps of the
    compressed mixture at full resolution, and each slot adds to its mask logits the
    dot product of a linear read-out of the slot with these maps (as Sound of Pixels
    combines its spectral components with weights from the video). The slots still decide
    everything; the maps only give them the detail to decide with (in the same 480 s run
    this raised SDR only from 0.8 to 1.2 dB: the slots still mostly collapse on that
    budget). ``feature_channels=0`` is the pure spatial broadcast decoder.

    **On a U-Net** (``decoder="unet"``, :class:`AudioSlotsUNetNetwork`). The patches are
    the cells of the deepest map of a 2-D U-Net encoder (learned overlapping patches of
    ``2**n_levels`` frames and bins, on MHUNet's dB-normalised log-frequency input; the
    front end defaults to :data:`~decomp.estimators.amortized.unet.SOLOS_FRONT_END`), and
    each slot, broadcast over that grid, is decoded alone by the U-Net's decoder with the
    mixture's encoder outputs as skip connections: the slot decides which source, the
    skips give the detail. With ``attention_skip`` (default) the slot's deepest map also
    gets the mixture's, weighted cell by cell by the attention the slot won, which tells
    its decoder where the source lies. It replaces the patch embedding, the broadcast MLP and the
    feature read-out (``patch_frames``, ``patch_bins`` and ``feature_channels`` are then
    unused); the Transformer, slot attention, the losses and the two output channels are
    the same.

    **Loss.** Permutation-invariant MSE between compressed magnitudes
    (:func:`~decomp.estimators.amortized.objectives.pit_magnitude_loss`: the best assignment of
    slots to sources, unmatched slots against silence), plus ``generation_weight`` times
    the MSE of the generated spectrograms under that assignment.

    Inference runs on windows of ``chunk_frames`` frames (the positional embeddings cover
    one window), overlapping by ``inference_overlap``; slots are re-ordered from window
    to window so that slot ``k`` follows one source (see
    :class:`~decomp.estimators.amortized.base.AmortizedSeparator`).

    Parameters
    ----------
    n_slots : int, default=4
        Number of slots (outputs); at least the largest number of sources of a training
        mixture.
    patch_frames : int, default=4
        Frames per patch (the input is zero-padded to a multiple and cropped back).
    patch_bins : int, default=16
        Frequency bins per patch (likewise padded).
    embed_dim : int, default=64
        Size of the patch tokens and the slots; a multiple of ``n_heads``.
    n_layers : int, default=2
        Transformer encoder layers (pre-norm; 0: slot attention on the patch embeddings).
    n_heads : int, default=4
        Attention heads per Transformer layer.
    n_iterations : int, default=3
        Slot-attention rounds.
    decoder_hidden : int, default=64
        Width of the decoder MLP and of the slot-attention MLP.
    generation_weight : float, default=0.1
        Weight of the loss on the directly generated spectrograms (0: train the masks
        only).
    feature_channels : int, default=16
        Full-resolution mixture feature maps read out by every slot into its mask
        logits (see above; 0: the pure spatial broadcast decoder).
    separation_loss : {"magnitude", "si_sdr"}, default="magnitude"
        ``"magnitude"``: the permutation-invariant MSE of compressed magnitudes above.
        ``"si_sdr"``: the masks are applied to the mixture's STFT, inverted with its
        phase and scored by permutation-invariant negative SI-SDR against the source
        waveforms, slots without a source by their level
        (:func:`~decomp.estimators.amortized.objectives.pit_waveform_loss`; the generation
        term keeps its magnitude loss on that assignment). It trains on waveforms, so
        only on a :class:`decomp.data.MixtureStream`. A departure from the paper's
        spectrogram loss: on MHUNet it is what made the masks separate (see the model
        card).
    decoder : {"broadcast", "unet"}, default="broadcast"
        The paper's patch embedding and spatial broadcast decoder, or the U-Net encoder
        and decoder above.
    n_levels : int, default=4
        U-Net levels (``"unet"``).
    base_channels : int, default=24
        Channels of the U-Net's first level, doubled at every level (``"unet"``).
    attention_skip : bool, default=True
        ``"unet"`` only: add to each slot's deepest map the mixture's deepest encoder
        map weighted by that slot's share of the slot attention, so that the slot's
        decoder knows where in time and frequency the tokens it won lie (a departure;
        see :class:`AudioSlotsUNetNetwork`). ``False``: the slot alone, broadcast.
    front_end : Spectrogram, optional
        Magnitude front end for waveforms (default
        :data:`~decomp.estimators.amortized.base.DEFAULT_FRONT_END`, or
        :data:`~decomp.estimators.amortized.unet.SOLOS_FRONT_END` with ``decoder="unet"``).
    chunk_frames : int, default=64
        Frames per training crop and per inference chunk. A fine-tune (``fit``'s
        ``init_from``) may change it: the positional embeddings, the only weights that
        depend on it, start stretched linearly along time to the new length.
    max_epochs : int, default=100
        Passes over the training mixtures.
    batch_size : int, default=16
        Crops per optimisation step.
    learning_rate : float, default=1e-3
        Adam step size.
    validation_fraction : float, default=0.1
        Share of the mixtures held out for model selection and early stopping.
    patience : int, default=20
        Epochs without a lower validation loss before stopping.
    max_grad_norm : float or None, default=5.0
        Gradient-norm clipping (None: none).
    max_seconds : float, optional
        Training time limit in seconds.
    checkpoint : path, optional
        Per-epoch checkpoint that a later ``fit`` resumes.
    device : str or torch.device, default="auto"
        Where the network trains and runs.
    random_state : int, RandomState or None
        Seeds the weights, the slot noise, the split, the crops and the batch order.
    progress : bool, default=False
        Show a progress bar.
    steps_per_epoch : int, default=100
        Batches per epoch when fitting on a :class:`decomp.data.MixtureStream`.
    num_workers : int, default=0
        DataLoader workers that mix a stream's batches (0: in this process).
    learning_rate_decay : int, default=0
        Final epochs over which the learning rate falls along a half cosine to 1 %
        (0: constant).
    inference_overlap : float, default=0.5
        Share of each inference window that the next one also covers (0: consecutive
        chunks); see :class:`~decomp.estimators.amortized.base.AmortizedSeparator`.
    silence_floor_db : float, default=-30.0
        Waveform loss only: the soft floor (dB) of the cost of an output without a
        source, i.e. the reward for its silence; see
        :class:`~decomp.estimators.amortized.base.AmortizedSeparator`.
    n_sources : int, optional
        At inference, when it is known: how many sources the mixture holds. A model with
        more slots than sources often splits one source over two slots, and which slot
        takes which part changes from window to window, so the joined stems mix parts of
        sources; with ``n_sources`` each window's slots are merged first
        (:func:`~decomp.estimators.amortized.unordered.merge_slots`: the two slots whose masks,
        weighted by the square root of the mixture, are most alike, until ``n_sources``
        remain), and the outputs after the ``n_sources``-th are silent. None (default)
        keeps every slot. An inference setting, at most ``n_slots``; training ignores it.
    refine_passes : int, default=0
        With ``n_sources`` of 3 or more, at inference on waveforms (:meth:`separate`,
        :meth:`separate_stream`, :meth:`separate_file`; not :meth:`transform`): passes
        that each subtract one separated source (the loudest not yet taken) from the
        mixture and separate the rest again, told one source fewer; each source becomes
        the mean of its estimates (:func:`~decomp.estimators.amortized.unordered.refine_by_rest`).
        The rest of a trio is a duet, whose two outputs the joining of windows keeps apart
        more consistently. Each pass costs one more separation of the recording;
        :meth:`separate_stream` refines a segment at a time, with one inference window of
        context on either side, so its memory stays bounded. At most
        ``n_sources``; 0 (default) separates once. Without ``n_sources`` (blind), each
        recording is separated once and its sources counted
        (:func:`~decomp.estimators.amortized.unordered.count_sounding_outputs`: the
        outputs with at least 1 % of the energy); where three or more sound, it is
        separated as if told that count and refined with at most that many passes, and
        elsewhere left as it was. At most ``n_slots`` then.
    training_windows : int, default=1
        Inference windows per training crop. Above 1, a crop spans that many windows of
        ``chunk_frames`` frames, each starting half a window after the last (``1 +
        (training_windows - 1) / 2`` windows long); each window's slot attention starts
        from the previous window's final slots (as SAVi, Kipf et al. 2022, carries slots
        from frame to frame of a video), the windows are cross-faded in slot order, and
        the loss is taken on the joined crop, so a slot must keep its source from window
        to window. Inference is unchanged: windows still start from the learned initial
        slots and are matched. A MixtureStream's crops must then be that long.

    Attributes
    ----------
    front_end_ : Spectrogram
        The front end used.
    n_features_in_ : int
        Frequency bins F of the training spectrograms.
    n_slots_ : int
        Number of outputs (``n_slots``).
    max_sources_ : int
        Largest number of sources in a training mixture.
    classes_ : ndarray of str or None
        Source labels seen in ``fit`` (recorded only; the slots are unordered).
    network_state_ : dict of str to Tensor
        The weights of the selected epoch (an :class:`AudioSlotsNetwork`).
    history_ : dict of str to ndarray
        Per-epoch ``train_loss`` and ``validation_loss`` and, when
        ``generation_weight > 0``, the parts of the training loss, ``train_separation``
        and ``train_generation``.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        Epoch whose weights were kept (0: the initial weights).
    best_validation_loss_ : float
        Its validation loss.
    n_train_items_, n_validation_items_ : int
        Sizes of the split.
    training_seconds_ : float
        Duration of ``fit``, plus the training time of the earlier runs of a checkpoint it
        resumed.

    See Also
    --------
    AudioSlotsNetwork : the network, usable alone.
    AudioSlotsUNetNetwork : the U-Net network (``decoder="unet"``).
    decomp.losses.permutation_invariant_loss : the assignment search behind the loss.

    Notes
    -----
    Shapes: ``transform`` takes (n_frames, n_bins) or (n_items, n_frames, n_bins)
    magnitudes and returns (n_slots, n_frames, n_bins) or (n_items, n_slots, n_frames,
    n_bins); ``separate`` takes (n_samples,) or (n_items, n_samples) waveforms and returns
    (n_slots, n_samples) or (n_items, n_slots, n_samples).

    References
    ----------
    P. Reddy, S. Wisdom, K. Greff, J. R. Hershey and T. Kipf, "AudioSlots: A slot-centric
    generative model for audio separation", ICASSP 2023 workshops, arXiv:2305.05591.

    F. Locatello et al., "Object-centric learning with slot attention", NeurIPS 2020.

    T. Kipf et al., "Conditional object-centric learning from video", ICLR 2022 (SAVi:
    the slots carried from frame to frame that ``training_windows`` follows).

    Examples
    --------
    >>> import torch
    >>> from decomp.estimators.amortized.audioslots import AudioSlots
    >>> generator = torch.Generator().manual_seed(0)
    >>> sources = torch.rand(8, 2, 16, 33, generator=generator)  # (items, sources, T, F)
    >>> mixtures = sources.sum(dim=1)
    >>> model = AudioSlots(n_slots=3, embed_dim=16, n_heads=2, decoder_hidden=16,
    ...                    chunk_frames=8, max_epochs=2, device="cpu", random_state=0)
    >>> model = model.fit(mixtures, sources)
    >>> model.transform(mixtures[0]).shape
    torch.Size([3, 16, 33])
    """

    _parameter_constraints: dict = {
        **AmortizedSeparator._parameter_constraints,
        "n_slots": [StrictInterval(Integral, 1, None, closed="left")],
        "patch_frames": [StrictInterval(Integral, 1, None, closed="left")],
        "patch_bins": [StrictInterval(Integral, 1, None, closed="left")],
        "embed_dim": [StrictInterval(Integral, 1, None, closed="left")],
        "n_layers": [StrictInterval(Integral, 0, None, closed="left")],
        "n_heads": [StrictInterval(Integral, 1, None, closed="left")],
        "n_iterations": [StrictInterval(Integral, 1, None, closed="left")],
        "decoder_hidden": [StrictInterval(Integral, 1, None, closed="left")],
        "generation_weight": [StrictInterval(Real, 0, None, closed="left")],
        "feature_channels": [StrictInterval(Integral, 0, None, closed="left")],
        "separation_loss": [StrOptions({"magnitude", "si_sdr"})],
        "decoder": [StrOptions({"broadcast", "unet"})],
        "n_levels": [StrictInterval(Integral, 1, None, closed="left")],
        "base_channels": [StrictInterval(Integral, 1, None, closed="left")],
        "attention_skip": ["boolean"],
        "n_sources": [StrictInterval(Integral, 1, None, closed="left"), None],
        "training_windows": [StrictInterval(Integral, 1, None, closed="left")],
        "refine_passes": [StrictInterval(Integral, 0, None, closed="left")],
    }
    # Files written before the attention skip existed decoded each slot alone.
    _absent_params: ClassVar[dict[str, Any]] = {"attention_skip": False}
    # A stream's labels are recorded in classes_, but no slot has a class.
    _outputs_have_classes = False

    def __init__(
        self,
        *,
        n_slots: int = 4,
        patch_frames: int = 4,
        patch_bins: int = 16,
        embed_dim: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        n_iterations: int = 3,
        decoder_hidden: int = 64,
        generation_weight: float = 0.1,
        feature_channels: int = 16,
        separation_loss: str = "magnitude",
        decoder: str = "broadcast",
        n_levels: int = 4,
        base_channels: int = 24,
        attention_skip: bool = True,
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
        n_sources: int | None = None,
        training_windows: int = 1,
        refine_passes: int = 0,
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
        self.n_slots = n_slots
        self.patch_frames = patch_frames
        self.patch_bins = patch_bins
        self.embed_dim = embed_dim
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_iterations = n_iterations
        self.decoder_hidden = decoder_hidden
        self.generation_weight = generation_weight
        self.feature_channels = feature_channels
        self.separation_loss = separation_loss
        self.decoder = decoder
        self.n_levels = n_levels
        self.base_channels = base_channels
        self.attention_skip = attention_skip
        self.n_sources = n_sources
        self.training_windows = training_windows
        self.refine_passes = refine_passes

    def _check_n_sources(self) -> None:
        """Refuse an ``n_sources`` that is not a count, or one larger than the fitted
        model's number of slots (set_params does not validate)."""
        check_params({"n_sources": self._parameter_constraints["n_sources"]},
                     {"n_sources": self.n_sources}, "AudioSlots")
        if isinstance(self.n_sources, Integral) and self.n_sources > self.n_slots_:
            raise ValueError(f"AudioSlots(n_sources={self.n_sources}) merges its slots into "
                             f"that many sources: it needs at most n_slots_ ({self.n_slots_}).")

    def _merged_count(self) -> int | None:
        self._check_n_sources()
        return self.n_sources

    def _check_refine_passes(self) -> None:
        """Refuse more passes than sources (told the count) or than slots (blind)."""
        check_params({"refine_passes": self._parameter_constraints["refine_passes"]},
                     {"refine_passes": self.refine_passes}, "AudioSlots")
        if self.n_sources is not None and self.refine_passes > self.n_sources:
            raise ValueError(f"AudioSlots(refine_passes={self.refine_passes}) anchors each "
                             f"source at most once: it needs at most n_sources "
                             f"({self.n_sources}) passes.")
        if self.n_sources is None and self.refine_passes > self.n_slots_:
            raise ValueError(f"AudioSlots(refine_passes={self.refine_passes}) anchors each "
                             f"source at most once: it needs at most n_slots_ "
                             f"({self.n_slots_}) passes.")

    def _separate_waveforms(self, waveforms: torch.Tensor,
                            labels: torch.Tensor | None) -> torch.Tensor:
        self._check_refine_passes()
        return self._refine(waveforms, super()._separate_waveforms(waveforms, labels))

    def _refine(self, waveforms: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Mixtures (N, n_samples) and their sources (N, n_slots, n_samples), separated
        once with this model's ``n_sources`` -> refined by ``refine_passes``."""
        if not self.refine_passes:
            return sources
        if self.n_sources is not None:
            return self._refined(waveforms, sources, self.n_sources)
        # Blind: refine the recordings where three or more sources sound, as if told that
        # count (told the number of slots, the separation is the blind one already).
        counts = count_sounding_outputs(sources.detach().double().square().sum(-1).cpu().numpy())
        for count in sorted({int(count) for count in counts if count >= 3}):
            items = torch.as_tensor((counts == count).nonzero()[0], device=sources.device)
            told = sources[items]
            if count < self.n_slots_:
                told_model = copy.copy(self)  # shares the built network
                told_model.n_sources, told_model.refine_passes = count, 0
                told = told_model._separate_waveforms(waveforms[items], None)
            sources[items] = self._refined(waveforms[items], told, count)
        return sources

    def _refined(self, waveforms: torch.Tensor, sources: torch.Tensor,
                 n_sources: int) -> torch.Tensor:
        """Sources (n_items, n_slots, n_samples) separated as told ``n_sources`` -> refined
        by at most ``n_sources`` passes (:func:`refine_by_rest`); unchanged below three."""
        if n_sources < 3:
            return sources
        rest_model = copy.copy(self)  # shares the built network
        rest_model.n_sources, rest_model.refine_passes = n_sources - 1, 0
        refined = refine_by_rest(
            waveforms, sources[:, :n_sources], min(self.refine_passes, n_sources),
            lambda residuals: rest_model._separate_waveforms(residuals, None))
        return torch.cat([refined, sources[:, n_sources:]], dim=1)

    def separate_stream(self, blocks: Iterable[Any], labels: Any = None, *,
                        segment_frames: int | None = None) -> Iterator[np.ndarray]:
        """Separate a long mixture given block by block, in bounded memory.

        As :meth:`AmortizedSeparator.separate_stream`; with ``refine_passes``, the
        separation streamed once is refined segment by segment: each segment with one
        inference window (``chunk_frames`` hops) of the stream's sources and mixture on
        either side as context, counted and refined as :meth:`separate` refines a
        recording (a segment's margins are dropped), its outputs kept in the stream's
        order. Only a segment and its margins are refined at a time, so memory does not
        grow with the recording; a recording of at most one segment is refined whole,
        equal to :meth:`separate` up to float round-off.
        """
        check_is_fitted(self, "network_state_")
        self._check_refine_passes()
        if not self.refine_passes:
            yield from super().separate_stream(blocks, labels, segment_frames=segment_frames)
            return
        plain = copy.copy(self)  # shares the built network
        plain.refine_passes = 0
        audio_blocks, stream_blocks = itertools.tee(checked_blocks(blocks))
        margin = self.chunk_frames * self.front_end_.hop_length
        mixture = np.zeros(0, np.float32)
        sources = np.zeros((0, 0), np.float32)
        start, end = 0, 0  # global samples held in sources; mixture starts at start too
        owned: list[tuple[int, int]] = []  # segments not yet yielded
        segments = plain.separate_stream(stream_blocks, labels, segment_frames=segment_frames)
        for segment in itertools.chain(segments, [None]):
            if segment is not None:
                sources = segment if not end else np.concatenate([sources, segment], axis=1)
                owned.append((end, end + segment.shape[1]))
                end += segment.shape[1]
                while start + mixture.size < end:
                    mixture = np.concatenate([mixture, next(audio_blocks)])
            while owned and (segment is None or owned[0][1] + margin <= end):
                first, stop = owned.pop(0)
                low, high = max(start, first - margin), min(end, stop + margin)
                refined = self._refined_span(mixture[low - start:high - start],
                                             sources[:, low - start:high - start])
                yield refined[:, first - low:stop - low]
                keep = max(start, stop - margin)
                mixture, sources, start = mixture[keep - start:], sources[:, keep - start:], keep

    def _refined_span(self, mixture: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """A stretch of a streamed recording, (n,) and its sources (n_slots, n) separated
        once -> refined, (n_slots, n) float32 in the order of ``sources``."""
        waveforms = torch.as_tensor(mixture)[None]
        plain = torch.as_tensor(sources)[None]
        refined = self._refine(waveforms, plain.clone())[0]
        # A blind recording separated again as told its count comes back in another order.
        order = cosine_assignment(plain[0] @ refined.T, plain[0].square().sum(1),
                                  refined.square().sum(1))
        return refined[torch.as_tensor(order)].numpy().astype(np.float32, copy=False)

    def fit(self, mixtures: Any, sources: Any = None, labels: Any = None, *,
            validation: Any = None, init_from: AudioSlots | None = None) -> AudioSlots:
        """Train the network on mixtures and their sources.

        See :meth:`AmortizedSeparator.fit`; additionally raises ``ValueError`` if
        ``embed_dim`` is not a multiple of ``n_heads`` or a training mixture has more
        sources than ``n_slots``.
        """
        self._validate_params()
        self._check_architecture()
        return super().fit(mixtures, sources, labels, validation=validation,
                           init_from=init_from)

    def _check_architecture(self) -> None:
        if self.n_layers > 0 and self.embed_dim % self.n_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be a multiple of n_heads "
                f"({self.n_heads}): each attention head gets embed_dim / n_heads features.")

    # ------------------------------------------------------------- subclass hooks
    def _n_slots(self, max_sources: int, n_classes: int | None) -> int:
        if max_sources > self.n_slots:
            raise ValueError(
                f"a training mixture has {max_sources} sources but AudioSlots has n_slots="
                f"{self.n_slots}; set n_slots >= {max_sources}.")
        return self.n_slots

    def _initial_state(self, state: dict[str, torch.Tensor],
                       current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # No weight depends on the number of slots (they all start from one Gaussian),
        # so a fine-tune may change n_slots: only the fixed evaluation noise, one row per
        # slot, is drawn afresh for the new count. Nor on chunk_frames but for the
        # positional embeddings' rows (time), which are stretched to the new grid.
        initial = {}
        for key, value in state.items():
            target = current.get(key)
            if target is not None and value.shape != target.shape:
                if key.endswith("eval_noise"):
                    value = target
                elif key.endswith("_position") and value.shape[1:] == target.shape[1:]:
                    value = _stretch_rows(value, target.shape[0])
            initial[key] = value
        return initial

    @property
    def _default_front_end(self) -> Spectrogram:  # type: ignore[override]
        # The U-Net reads MHUNet's log-frequency front end.
        return SOLOS_FRONT_END if self.decoder == "unet" else DEFAULT_FRONT_END

    def _build_network(self) -> AudioSlotsNetwork | AudioSlotsUNetNetwork:
        if self.decoder == "unet":
            return AudioSlotsUNetNetwork(
                n_bins=self.n_features_in_, chunk_frames=self.chunk_frames,
                n_slots=self.n_slots_, embed_dim=self.embed_dim, n_layers=self.n_layers,
                n_heads=self.n_heads, n_iterations=self.n_iterations,
                decoder_hidden=self.decoder_hidden, n_levels=self.n_levels,
                base_channels=self.base_channels, attention_skip=self.attention_skip)
        return AudioSlotsNetwork(
            n_bins=self.n_features_in_, chunk_frames=self.chunk_frames,
            n_slots=self.n_slots_, patch_frames=self.patch_frames,
            patch_bins=self.patch_bins, embed_dim=self.embed_dim, n_layers=self.n_layers,
            n_heads=self.n_heads, n_iterations=self.n_iterations,
            decoder_hidden=self.decoder_hidden, feature_channels=self.feature_channels,
        )

    @property
    def _training_hop(self) -> int:
        """Frames from one training window to the next: half a window."""
        return max(1, self.chunk_frames // 2)

    _training_frames_parameters = ("chunk_frames", "training_windows")

    @property
    def _training_frames(self) -> int:  # type: ignore[override]
        return self.chunk_frames + (self.training_windows - 1) * self._training_hop

    def _carried_windows(self, network: torch.nn.Module, mixture: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) magnitudes -> masks and generated spectra (B, K, T, F).

        A crop of at most ``chunk_frames`` frames is one forward pass. A longer one is
        cut into windows of ``chunk_frames`` every :attr:`_training_hop` frames (a last
        one ending at the crop's end); each window's slot attention starts from the
        previous window's final slots, and the windows are cross-faded in slot order
        (:func:`decomp._chunks.overlap_add`, no matching), so one assignment of slots to
        sources must hold for the whole crop.
        """
        n_frames, chunk = mixture.shape[1], self.chunk_frames
        if n_frames <= chunk:
            return network(mixture)
        slots, windows = None, []
        for start in window_starts(n_frames, chunk, self._training_hop):
            masks, generated, slots = network(mixture[:, start:start + chunk], slots,
                                              return_slots=True)
            # overlap_add takes (n_outputs, frames, ...): batch and slots flattened.
            windows.append((torch.cat([masks, generated], dim=-1).flatten(0, 1), start, chunk))
        joined = torch.cat(list(overlap_add(windows, chunk)), dim=1)
        joined = joined.unflatten(0, (mixture.shape[0], -1))  # (B, K, T, 2F)
        n_bins = mixture.shape[-1]
        return joined[..., :n_bins], joined[..., n_bins:]

    def _training_losses(self, network: torch.nn.Module, batch: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        mixture, sources = batch["mixture"], batch["sources"]
        masks, generated = self._carried_windows(network, mixture)
        if self.separation_loss == "si_sdr":
            separation, permutation = pit_waveform_loss(
                masks, batch["mixture_audio"], batch["source_audio"], self.front_end_,
                silence_floor_db=self.silence_floor_db)
            permutation = permutation[:, :sources.shape[1]]  # the real sources' slots
        else:
            separation, permutation = pit_magnitude_loss(masks * mixture.unsqueeze(1),
                                                         sources, mixture)
        if self.generation_weight == 0:
            return {"loss": separation}
        # Targets in slot order under the masks' assignment; unmatched slots stay silent.
        targets = torch.zeros_like(generated)
        index = permutation[:, :, None, None].expand(-1, -1, *generated.shape[2:])
        targets = targets.scatter(1, index, compress_magnitude(sources, mixture))
        generation = (generated - targets).square().mean()
        return {"loss": separation + self.generation_weight * generation,
                "separation": separation.detach(), "generation": generation.detach()}

    @property
    def _needs_audio(self) -> bool:  # type: ignore[override]
        return self.separation_loss == "si_sdr"

    def _forward(self, network: torch.nn.Module, mixture: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        masks, _ = network(mixture)
        return masks * mixture.unsqueeze(1), masks
