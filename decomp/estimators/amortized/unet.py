"""U-Net mask estimators of the Solos experiments: a multi-head U-Net and Sound of Pixels.

Montesinos et al. (2020) trained two mask-estimating U-Nets on Solos, both on Sound of
Pixels' front end (STFT, log re-scaled frequency axis, dB relative to each spectrogram's
minimum scaled to [-1, 1]):

- :class:`MHUNet`, the multi-head U-Net of Doire & Okubadejo (2019): one encoder, one
  decoder per source, each predicting a ratio mask, trained on complementary ratio masks
  with a curriculum from 2 to 7 sources;
- :class:`SoundOfPixels` (Zhao et al., 2018): a U-Net that turns the mixture into
  ``n_components`` spectral component maps, recombined into one binary mask per query by
  weights that the video network predicts. Here the query is a class label, so a label
  embedding replaces the video network.

Both share :class:`UNet` and the training loop of
:class:`~decomp.estimators.amortized.base.AmortizedSeparator`.
"""

from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch
from sklearn.utils._param_validation import StrOptions
from torch import nn
from torch.nn import functional

from decomp._validation import StrictInterval
from decomp.audio.spectrogram import Spectrogram, db_normalize
from decomp.estimators.amortized.base import AmortizedSeparator
from decomp.estimators.amortized.objectives import compress_magnitude, pit_waveform_loss
from decomp.losses import permutation_invariant_loss, separation_cost

__all__ = [
    "MHUNet",
    "SOLOS_FRONT_END",
    "SoundOfPixels",
    "UNet",
    "binary_masks",
    "curriculum_schedule",
    "ratio_masks",
]

SOLOS_FRONT_END = Spectrogram(sample_rate=16000, n_fft=1024, hop_length=256, kind="linear",
                              frequency_scale="log", n_bins=256)
"""The U-Net models' default front end: Solos' STFT with a log re-scaled frequency axis
(256 log-spaced bins from 15.6 Hz to 8 kHz), at the library's 16 kHz and 16 ms hop
rather than Solos' 11025 Hz, so it reads the same audio as the other separators. The dB
normalisation is applied by the networks to their input (the front end must give
magnitudes for masking and for the targets)."""

# Loss weights are clamped as in Sound of Pixels' ``log1p(|mixture|)`` weighting, so that
# silent bins still count a little and no loud bin dominates.
_WEIGHT_RANGE = (1e-3, 10.0)
# Masks are divided by their sum over heads, which is tiny in silent bins.
_MASK_SUM_FLOOR = 1e-8


def _sum_to_one(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, T, F) masks divided by their sum over the H heads (floored)."""
    return masks / masks.sum(dim=1, keepdim=True).clamp_min(_MASK_SUM_FLOOR)
# Weight of the source count's cross-entropy (nats) beside the separation cost (dB).
_COUNT_WEIGHT = 1.0


# --------------------------------------------------------------------------- network
def _encoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # One strided convolution with a 4x4 kernel per level (SoP / Jansson et al.), not two
    # 3x3 convolutions and max-pooling as in the biomedical U-Net.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


def _decoder_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                           bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class _Decoder(nn.Module):
    """Transposed-convolution decoder with skip connections from the encoder's levels."""

    def __init__(self, channels: list[int], out_channels: int) -> None:
        super().__init__()
        n_levels = len(channels)
        # Level i (deepest first) upsamples to channels[i - 1]; its input is the deepest
        # encoder output, or the previous level's output concatenated with its skip.
        self.blocks = nn.ModuleList(
            _decoder_block(channels[i] if i == n_levels - 1 else 2 * channels[i], channels[i - 1])
            for i in range(n_levels - 1, 0, -1)
        )
        top_in = channels[0] if n_levels == 1 else 2 * channels[0]
        # No normalisation or activation on the output: the models apply their own
        # (sigmoid masks, or linear spectral components).
        self.output = nn.ConvTranspose2d(top_in, out_channels, kernel_size=4, stride=2,
                                         padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            x = torch.cat([block(x), skip], dim=1)
        return self.output(x)


class UNet(nn.Module):
    """2-D U-Net on spectrograms, with one shared encoder and one or more decoders.

    Each encoder level halves both axes with one 4x4 convolution of stride 2 followed by
    batch normalisation and LeakyReLU(0.2), doubling the channels from
    ``base_channels``; each decoder level doubles them back with a 4x4 transposed
    convolution (batch normalisation, ReLU) and concatenates the encoder's output of the
    same resolution (skip connection). The last transposed convolution maps to
    ``out_channels`` with no activation. Inputs of any size are zero-padded to multiples
    of ``2 ** n_levels`` and the outputs cropped back.

    Parameters
    ----------
    in_channels : int, default=1
        Input channels.
    out_channels : int, default=1
        Output maps per decoder.
    n_levels : int, default=4
        Encoder (and decoder) levels. Sound of Pixels has 7, the Solos MHU-Net 6.
    base_channels : int, default=16
        Channels of the first level, doubled at every level (Sound of Pixels: 32, capped
        at 512).
    n_heads : int, default=1
        Decoders sharing the encoder (the multi-head U-Net has one per source); the
        forward pass maps ``(batch, in_channels, n_frames, n_bins)`` to
        ``(batch, n_heads, out_channels, n_frames, n_bins)``.

    Examples
    --------
    >>> import torch
    >>> net = UNet(out_channels=2, n_levels=2, base_channels=4, n_heads=3)
    >>> net(torch.zeros(5, 1, 17, 33)).shape
    torch.Size([5, 3, 2, 17, 33])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, n_levels: int = 4,
                 base_channels: int = 16, n_heads: int = 1) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("n_levels", n_levels), ("base_channels", base_channels),
                            ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"UNet's {name} must be an int >= 1; got {value!r}.")
        self.n_levels = int(n_levels)
        channels = [base_channels * 2**level for level in range(n_levels)]
        self.encoder = nn.ModuleList(
            _encoder_block(in_channels if level == 0 else channels[level - 1], width)
            for level, width in enumerate(channels)
        )
        self.decoders = nn.ModuleList(_Decoder(channels, out_channels) for _ in range(n_heads))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(batch, in_channels, n_frames, n_bins) -> every level's encoder output, the
        deepest last (the input zero-padded to multiples of ``2 ** n_levels`` first)."""
        if x.ndim != 4:
            raise ValueError(f"UNet expects input of shape (batch, channels, n_frames, n_bins); "
                             f"got {tuple(x.shape)}.")
        multiple = 2**self.n_levels
        x = functional.pad(x, (0, -x.shape[-1] % multiple, 0, -x.shape[-2] % multiple))
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def decode(self, features: list[torch.Tensor], n_frames: int, n_bins: int) -> torch.Tensor:
        """:meth:`encode`'s features -> (batch, n_heads, out_channels, n_frames, n_bins)."""
        outputs = torch.stack([decoder(features) for decoder in self.decoders], dim=1)
        return outputs[..., :n_frames, :n_bins]

    def decode_each(self, skips: list[torch.Tensor], deepest: torch.Tensor, n_frames: int,
                    n_bins: int) -> torch.Tensor:
        """Decode several deepest maps per item, each alone, with that item's skips.

        Parameters
        ----------
        skips : list of Tensor
            :meth:`encode`'s outputs but the deepest, each (batch, channels, ...).
        deepest : Tensor of shape (batch, n_outputs, channels, rows, columns)
            The maps that replace the deepest encoder output, ``n_outputs`` per item.
        n_frames, n_bins : int
            The input's size, which the outputs are cropped to.

        Returns
        -------
        Tensor of shape (batch, n_outputs, out_channels, n_frames, n_bins)
            The first decoder's output for every map (outputs folded into the batch).
        """
        batch, n_outputs = deepest.shape[:2]
        skips = [level.repeat_interleave(n_outputs, dim=0) for level in skips]
        output = self.decoders[0]([*skips, deepest.flatten(0, 1)])[..., :n_frames, :n_bins]
        return output.reshape(batch, n_outputs, *output.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), *x.shape[-2:])


def network_input(mixture: torch.Tensor) -> torch.Tensor:
    """(B, T, F) magnitudes -> (B, 1, T, F) Solos features: dB above the floor, in [-1, 1]."""
    return db_normalize(mixture).unsqueeze(1)


class _MultiHeadMasks(nn.Module):
    """Mixture magnitudes (B, T, F) -> mask logits (B, n_heads, T, F) and, with
    ``count``, the logits (B, n_heads) of the number of sounding sources, 1 to n_heads,
    from the pooled deepest features (else None)."""

    def __init__(self, n_heads: int, n_levels: int, base_channels: int,
                 count: bool = False) -> None:
        super().__init__()
        self.unet = UNet(1, 1, n_levels=n_levels, base_channels=base_channels, n_heads=n_heads)
        deepest = base_channels * 2 ** (n_levels - 1)
        # Mean and max over the deepest map: how much of each pattern, and whether any.
        self.count = nn.Linear(2 * deepest, n_heads) if count else None

    def forward(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.unet.encode(network_input(mixture))
        logits = self.unet.decode(features, *mixture.shape[-2:])[:, :, 0]
        if self.count is None:
            return logits, None
        pooled = torch.cat([features[-1].mean(dim=(2, 3)), features[-1].amax(dim=(2, 3))], 1)
        return logits, self.count(pooled)


class _LabelConditionedMasks(nn.Module):
    """Sound of Pixels with a label embedding in place of the video network.

    ``logits[q] = sum_k alpha[label_q, k] * S_k + beta[label_q]`` for the U-Net's spectral
    components ``S`` (B, K, T, F).
    """

    def __init__(self, n_classes: int, n_components: int, n_levels: int,
                 base_channels: int) -> None:
        super().__init__()
        self.unet = UNet(1, n_components, n_levels=n_levels, base_channels=base_channels)
        self.alpha = nn.Embedding(n_classes, n_components)
        self.beta = nn.Embedding(n_classes, 1)
        # Unit-variance logits at the start for unit-variance components.
        nn.init.normal_(self.alpha.weight, std=n_components**-0.5)
        nn.init.zeros_(self.beta.weight)

    def components(self, mixture: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> spectral components (B, K, T, F)."""
        return self.unet(network_input(mixture))[:, 0]

    def combine(self, components: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Components (B, K, T, F), labels (B, Q) or None (every class) -> logits (B, Q, T, F)."""
        if labels is None:
            return (torch.einsum("bktf,ck->bctf", components, self.alpha.weight)
                    + self.beta.weight[:, 0][None, :, None, None])
        return (torch.einsum("bktf,bqk->bqtf", components, self.alpha(labels))
                + self.beta(labels)[..., None])

    def forward(self, mixture: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.combine(self.components(mixture), labels)


# ---------------------------------------------------------------------- targets/loss
def ratio_masks(sources: torch.Tensor) -> torch.Tensor:
    """Complementary ratio masks ``|S_k| / sum_j |S_j|`` (Solos' MHU-Net targets).

    Parameters
    ----------
    sources : Tensor of shape (batch, n_sources, n_frames, n_bins)
        Non-negative source magnitudes (zero for absent sources).

    Returns
    -------
    masks : Tensor of the same shape
        In [0, 1]; they sum to 1 over the sources wherever a source has energy and are 0
        in bins where none has (and for absent sources).
    """
    total = sources.sum(dim=1, keepdim=True)
    return (sources / total.clamp_min(torch.finfo(sources.dtype).tiny)).clamp(0, 1)


def binary_masks(sources: torch.Tensor) -> torch.Tensor:
    """Complementary binary masks: 1 where a source is the loudest (Sound of Pixels' targets).

    Parameters
    ----------
    sources : Tensor of shape (batch, n_sources, n_frames, n_bins)
        Non-negative source magnitudes (zero for absent sources).

    Returns
    -------
    masks : Tensor of the same shape
        One-hot over the sources in every bin where a source has energy (the first
        loudest source on ties), all-zero where none has.
    """
    dominant = functional.one_hot(sources.argmax(dim=1), sources.shape[1])  # (B, T, F, S)
    active = sources.amax(dim=1, keepdim=True) > 0
    return dominant.permute(0, 3, 1, 2).to(sources.dtype) * active


def _per_class(sources: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, S, *dims) sources, (B, S) class indices (-1: none) -> (B, n_classes, *dims) sums.

    Sources of the same class in one mixture are summed: a query names a class, so its
    target is the whole class.
    """
    trailing = (None,) * (sources.ndim - 2)
    used = (labels >= 0)[(..., *trailing)]
    index = labels.clamp_min(0)[(..., *trailing)].expand_as(sources)
    classes = sources.new_zeros(sources.shape[0], n_classes, *sources.shape[2:])
    return classes.scatter_add(1, index, sources * used)


def _loss_weights(mixture: torch.Tensor) -> torch.Tensor:
    """(B, T, F) -> SoP's log1p(|mixture|) bin weights, made level-free (see Notes)."""
    return compress_magnitude(mixture, mixture).clamp(*_WEIGHT_RANGE)


def _weighted_mask_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                        kind: str) -> torch.Tensor:
    """Logits (..., T, F) against targets of the same shape, weights broadcastable
    -> weighted mean over (T, F), shape (...)."""
    if kind == "bce":
        error = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    else:
        error = (torch.sigmoid(logits) - targets).abs()
    weights = weights.expand_as(error)
    return (error * weights).sum(dim=(-2, -1)) / weights.sum(dim=(-2, -1))


class _UNetSeparator(AmortizedSeparator):
    """What both U-Net models share: the Solos front end default, the waveform loss."""

    _default_front_end = SOLOS_FRONT_END

    @property
    def _needs_audio(self) -> bool:  # type: ignore[override]
        return self.loss == "si_sdr"

    def _class_waveform_costs(self, masks: torch.Tensor, batch: dict[str, torch.Tensor]
                              ) -> torch.Tensor:
        """Masks (B, C, T, F), one per class -> (B, C) :func:`separation_cost` of each
        class's resynthesised waveform against that class's sources (silence if absent)."""
        mixture_audio = batch["mixture_audio"]
        estimates = self.front_end_._apply_masks(mixture_audio, masks)  # (B, C, N)
        targets = _per_class(batch["source_audio"], batch["labels"], masks.shape[1])
        return separation_cost(estimates, targets, mixture_audio[:, None],
                               silence_floor_db=self.silence_floor_db)


# ---------------------------------------------------------------------------- MHUNet
class MHUNet(_UNetSeparator):
    """Multi-head U-Net: one shared encoder, one mask decoder per source.

    The mixture's magnitude spectrogram, dB-normalised to [-1, 1] as in Solos, goes
    through a :class:`UNet` encoder; each of ``n_slots_`` decoders predicts a sigmoid mask
    for one source. Targets are complementary ratio masks ``|S_k| / sum_j |S_j|``; the
    loss is the L1 (or BCE) distance between predicted and target masks, weighted per bin
    by the mixture's log-compressed magnitude (Sound of Pixels' weighting). The number of
    sources per training mixture grows from 2 to the largest seen over
    ``curriculum_epochs`` epochs (Solos' curriculum).

    Two modes, chosen by ``heads`` and ``fit``:

    - **without labels** the heads are unordered: one head per source slot
      (``n_slots_`` = the source axis of the training data), scored under the best
      assignment of heads to sources (permutation-invariant training; heads without a
      source learn an all-zero mask), and re-ordered from window to window at inference;
    - **with labels** (``fit(..., labels)``, or a ``MixtureSet`` whose ``instruments``
      are used) there is one head per class (``n_slots_ = len(classes_)``): each source
      trains its class's head, classes absent from a mixture train their head towards 0.
      ``transform(X, labels=[...])`` returns the requested classes' heads.

    Parameters
    ----------
    n_levels : int, default=4
        U-Net levels. Solos' MHU-Net has 6 with 32 to 512 channels; 4 levels from 16
        channels keep training feasible on a CPU.
    base_channels : int, default=16
        Channels of the first level, doubled at every level.
    loss : {"bce", "l1", "si_sdr"}, default="bce"
        ``"bce"`` and ``"l1"``: distance between predicted and target ratio masks,
        weighted binary cross-entropy with soft targets, or weighted L1 (Sound of Pixels'
        choice for ratio masks). With one head per class most heads' targets are zero in
        most mixtures, and L1, whose minimiser is the median, first drives every mask
        towards zero (in short pilot runs on the separation table's instrument data the
        heads' masks stayed near zero everywhere and the outputs were worse than the
        mixture); cross-entropy, whose minimiser is the mean, keeps a gradient towards
        the present sources. ``"si_sdr"``: the masks (normalised as at inference) are
        applied to the mixture's STFT, inverted with its phase, and scored by negative
        SI-SDR against the source waveforms; a head without a source pays its level
        relative to the mixture (:func:`decomp.losses.pairwise_separation_cost`). It
        trains on waveforms, so only on a :class:`decomp.data.MixtureStream`; the
        shipped separators use it (see the model card).
    heads : {"auto", "classes", "sources"}, default="auto"
        ``"classes"``: one head per class of the training labels; ``"sources"``: one
        unordered head per source slot, labels ignored (a blind separator);
        ``"auto"``: classes when ``fit`` gets labels (a stream always has them),
        sources otherwise.
    curriculum_epochs : int, default=20
        Epochs over which the largest number of sources per training mixture grows
        linearly from 2 to the largest in the data (epoch 1: 2; epoch
        ``curriculum_epochs`` and later: all); mixtures with more sources wait. 0: no
        curriculum. Meant for class heads (Solos). With ``heads="sources"`` the heads
        beyond the second are matched to silence only for ``curriculum_epochs - 1``
        epochs; the model shipped as ``instruments`` until 2026-12-03 (3 source heads,
        2-3 sources, the default 20) never puts sound in its third head, which a run
        without the curriculum also showed after 7 epochs (see the model card's
        limitations).
    normalize_masks : bool, default=True
        At inference, divide every head's mask by the sum over all heads, so the masks
        sum to one (as the targets do) and the separated sources sum to the mixture.
        Applied before selecting requested classes, so a requested subset keeps its
        share of the full partition.
    count_sources : bool, default=False
        Source heads only (``heads="sources"``, ``loss="si_sdr"``): a linear layer on the
        mean and maximum of the encoder's deepest features predicts how many sources
        sound in each chunk (1 to ``n_slots_``; cross-entropy against the crop's count,
        added to the separation cost). In training, the true count of heads, those whose
        masks take the most of the mixture, keep their masks and the others' are zeroed
        before the normalisation; the kept heads are scored against the sounding sources
        only, so a head is never taught silence. At inference the head ranked r by that
        share is weighted by the predicted probability that more than r sources sound.
        Without it, a blind head beyond the fewest sources per mixture learns silence
        everywhere (see the model card's limitations). Experimental.
    n_sources : int, optional
        With ``count_sources``, at inference: the number of sources the mixture holds,
        when it is known. The heads ranked first to ``n_sources``-th keep their masks in
        every chunk and the others are left out, instead of weighting the heads by the
        predicted count (``None``, the default). An inference setting: training always
        uses each crop's true count.
    front_end : Spectrogram, optional
        Turns waveforms into magnitudes and masks back into waveforms; must give
        magnitudes (``kind="linear"``, ``db_normalization=False``): the network
        dB-normalises its input itself. Default :data:`SOLOS_FRONT_END` (log-frequency
        STFT, 256 bins).
    chunk_frames : int, default=64
        Frames per training crop and inference chunk (about 1 s; Solos uses 6 s).
    max_epochs : int, default=100
        Passes over the training mixtures.
    batch_size : int, default=16
        Crops per optimisation step.
    learning_rate : float, default=1e-3
        Adam step size.
    validation_fraction : float, default=0.1
        Share of the mixtures held out for model selection and early stopping.
    patience : int, default=20
        Stop after this many epochs without a lower validation loss.
    max_grad_norm : float or None, default=5.0
        Gradient-norm clipping (None: none).
    max_seconds : float, optional
        Stop training (keeping the best epoch) after this many seconds.
    checkpoint : path, optional
        Per-epoch checkpoint that a later ``fit`` resumes.
    device : str or torch.device, default="auto"
        Where the network trains and runs.
    random_state : int, RandomState or None
        Seeds the weights, the split, the crops and the batch order.
    progress : bool, default=False
        Show a progress bar over epochs.
    steps_per_epoch : int, default=100
        Batches per epoch when fitting on a :class:`decomp.data.MixtureStream`.
    num_workers : int, default=0
        DataLoader workers that mix a stream's batches (0: in this process). See
        :class:`~decomp.estimators.amortized.base.AmortizedSeparator` for the training
        settings in full.
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

    Attributes
    ----------
    front_end_ : Spectrogram
        The front end used.
    n_features_in_ : int
        Frequency bins of the training spectrograms.
    n_slots_ : int
        Heads: the source slots of the training data, or the number of classes.
    classes_ : ndarray of shape (n_classes,) or None
        The classes (labels mode), sorted; None without labels.
    max_sources_ : int
        The most sources in one training mixture (the curriculum's end point).
    network_state_ : dict
        The network's weights.
    history_ : dict of ndarray
        Per-epoch ``train_loss`` and ``validation_loss``.
    n_epochs_, best_epoch_, best_validation_loss_, training_seconds_ : int, int, float, float
        Training summary.

    Notes
    -----
    Differences from Solos' MHU-Net, and why:

    - smaller network (4 levels, 16..128 channels vs 6 levels, 32..512) and 1 s chunks
      (vs 6 s), for CPU training;
    - the front end runs at 16 kHz with a 1024-point STFT (Solos: 11025 Hz, 1022 points),
      matching the library's other separators; the log frequency axis and the dB input
      normalisation are Solos';
    - the loss weights are ``log1p(|mixture| / mean |mixture|)`` clamped to
      [1e-3, 10] rather than ``log1p(|mixture|)``, so they do not depend on the
      recording level;
    - the curriculum's pace (linear in epochs) is ours: Solos names the range (2 to 7
      sources), not the schedule;
    - Solos' clamping of the spectrograms to the waveform bounds is not reproduced;
    - ``loss="si_sdr"`` (not Solos') trains the masks end to end on the resynthesised
      waveforms. On the held-out font, a pilot with the BCE mask loss (class heads, 8
      base channels) reached 1.5 dB SI-SDR improvement after 5.6 minutes of training;
      the shipped recipe with this loss reached 2.4 dB after 12 minutes and 5.9 dB
      after 130 (``train_separators.py --curve``; see the model card). Sizes and heads
      differ, so this is not a controlled comparison.

    References
    ----------
    J. F. Montesinos, O. Slizovskaia and G. Haro, "Solos: A dataset for audio-visual
    music analysis", IEEE MMSP 2020.
    C. S. J. Doire and O. Okubadejo, "Interleaved multitask learning for audio source
    separation with independent databases", arXiv:1908.05182, 2019 (multi-head U-Net).
    H. Zhao, C. Gan, A. Rouditchenko, C. Vondrick, J. McDermott and A. Torralba, "The
    sound of pixels", ECCV 2018.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sources = rng.gamma(1.0, 1.0, size=(8, 2, 32, 33)).astype(np.float32)
    >>> model = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, max_epochs=2,
    ...                random_state=0).fit(sources.sum(axis=1), sources)
    >>> model.transform(sources[0].sum(axis=0)).shape
    (2, 32, 33)
    >>> labels = np.array([["violin", "flute"]] * 8)
    >>> model = MHUNet(n_levels=2, base_channels=4, chunk_frames=16, max_epochs=2,
    ...                random_state=0).fit(sources.sum(axis=1), sources, labels)
    >>> model.transform(sources[:3].sum(axis=1), labels=["violin"]).shape
    (3, 1, 32, 33)
    """

    _parameter_constraints: dict = {
        **AmortizedSeparator._parameter_constraints,
        "n_levels": [StrictInterval(Integral, 1, None, closed="left")],
        "base_channels": [StrictInterval(Integral, 1, None, closed="left")],
        "loss": [StrOptions({"l1", "bce", "si_sdr"})],
        "heads": [StrOptions({"auto", "classes", "sources"})],
        "curriculum_epochs": [StrictInterval(Integral, 0, None, closed="left")],
        "normalize_masks": ["boolean"],
        "count_sources": ["boolean"],
        "n_sources": [StrictInterval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        n_levels: int = 4,
        base_channels: int = 16,
        loss: str = "bce",
        heads: str = "auto",
        curriculum_epochs: int = 20,
        normalize_masks: bool = True,
        count_sources: bool = False,
        n_sources: int | None = None,
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
        self.n_levels = n_levels
        self.base_channels = base_channels
        self.loss = loss
        self.heads = heads
        self.curriculum_epochs = curriculum_epochs
        self.normalize_masks = normalize_masks
        self.count_sources = count_sources
        self.n_sources = n_sources

    @property
    def _permutation_invariant(self) -> bool:  # type: ignore[override]
        # Per-class heads are ordered; only label-free heads need chunk re-alignment.
        return getattr(self, "classes_", None) is None

    @property
    def _loss_uses_labels(self) -> bool:  # type: ignore[override]
        # Class heads are trained on each class's sources; label-free heads by PIT.
        return getattr(self, "classes_", None) is not None

    def _used_classes(self, classes: Any) -> Any:
        if self.count_sources and (self.heads == "classes"
                                   or (self.heads == "auto" and classes is not None)):
            raise ValueError("MHUNet(count_sources=True) chooses among unordered source "
                             "heads: use heads='sources'.")
        if self.count_sources and self.loss != "si_sdr":
            raise ValueError("MHUNet(count_sources=True) trains on the waveform loss: use "
                             f"loss='si_sdr'; got loss={self.loss!r}.")
        if self.heads == "sources":
            return None
        if self.heads == "classes" and classes is None:
            raise ValueError("MHUNet(heads='classes') needs the sources' labels in fit "
                             "(labels=, a MixtureSet or a MixtureStream).")
        return classes

    def _n_slots(self, max_sources: int, n_classes: int | None) -> int:
        return max_sources if n_classes is None else n_classes

    def _curriculum(self, epoch: int, max_sources: int) -> int:
        return curriculum_schedule(epoch, max_sources, self.curriculum_epochs)

    def _build_network(self) -> nn.Module:
        return _MultiHeadMasks(self.n_slots_, self.n_levels, self.base_channels,
                               count=self.count_sources)

    def _counted_masks(self, network: nn.Module, mixture: torch.Tensor,
                       n_sounding: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, F) mixture magnitudes -> (B, H, T, F) masks (summing to 1 over the heads
        with ``normalize_masks``) and the (B, H) source-count logits (None without
        ``count_sources``). With a count, the heads are ranked by the magnitude their
        masks take (rank 0: the most) and weighted before the normalisation: given
        ``n_sounding`` (B,) (training), the first ``n_sounding`` keep their masks and the
        others are zeroed; otherwise the head of rank r is weighted by the predicted
        probability that more than r sources sound."""
        logits, count_logits = network(mixture)
        masks = torch.sigmoid(logits)
        if count_logits is not None:
            share = (masks * mixture.unsqueeze(1)).sum(dim=(2, 3))  # (B, H)
            rank = share.argsort(dim=1, descending=True).argsort(dim=1)  # 0: the most
            if n_sounding is not None:
                weights = (rank < n_sounding.to(rank.device)[:, None]).to(masks.dtype)
            else:
                # P(count >= r + 1) for rank r: a hard argmax drops a source for a whole
                # chunk whenever the count is wrong.
                at_least = count_logits.softmax(dim=1).flip(1).cumsum(dim=1).flip(1)
                weights = at_least.gather(1, rank)
            masks = masks * weights[:, :, None, None]
        return (_sum_to_one(masks) if self.normalize_masks else masks), count_logits

    def _check_n_sources(self) -> None:
        """Refuse an ``n_sources`` the fitted model cannot keep that many heads for."""
        if self.n_sources is not None and (not self.count_sources
                                           or self.n_sources > self.n_slots_):
            raise ValueError(
                f"MHUNet's n_sources={self.n_sources} keeps that many heads of a model that "
                "counts sources: it needs count_sources=True and at most n_slots_ "
                f"({self.n_slots_}) sources; got count_sources={self.count_sources}.")

    def _masks(self, network: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
        if self.n_sources is None:
            return self._counted_masks(network, mixture)[0]
        self._check_n_sources()
        known = torch.full((mixture.shape[0],), self.n_sources, device=mixture.device)
        return self._counted_masks(network, mixture, known)[0]

    def _waveform_losses(self, network: nn.Module, batch: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """Negative SI-SDR of the resynthesised heads (PIT, or one head per class); when
        counting sources, plus the count's cross-entropy."""
        mixture_audio = batch["mixture_audio"]
        if self.count_sources:  # source heads only: fit refuses it with class heads
            # The true count picks the heads that separate (those that take the most of
            # the mixture); the others are left out, not taught silence.
            n_sounding = (batch["source_audio"].abs().amax(dim=-1) > 0).sum(dim=1).clamp_min(1)
            masks, count_logits = self._counted_masks(network, batch["mixture"], n_sounding)
            separation, _ = pit_waveform_loss(masks, mixture_audio, batch["source_audio"],
                                              self.front_end_, absent="ignore")
            count = functional.cross_entropy(count_logits, n_sounding - 1)
            return {"loss": separation + _COUNT_WEIGHT * count, "separation": separation,
                    "count": count}
        masks = self._masks(network, batch["mixture"])  # (B, H, T, F)
        if "labels" in batch:
            return {"loss": self._class_waveform_costs(masks, batch).mean()}
        loss, _ = pit_waveform_loss(masks, mixture_audio, batch["source_audio"],
                                    self.front_end_, silence_floor_db=self.silence_floor_db)
        return {"loss": loss}

    def _training_losses(self, network: nn.Module, batch: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        if self.loss == "si_sdr":
            return self._waveform_losses(network, batch)
        mixture, sources = batch["mixture"], batch["sources"]
        logits, _ = network(mixture)  # (B, H, T, F)
        weights = _loss_weights(mixture)[:, None, None]  # (B, 1, 1, T, F)
        if "labels" in batch:
            targets = ratio_masks(_per_class(sources, batch["labels"], self.n_slots_))
            loss = _weighted_mask_loss(logits, targets, weights[:, 0], self.loss).mean()
            return {"loss": loss}
        targets = ratio_masks(sources)  # absent (all-zero) sources: all-zero masks

        def pairwise(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
            # (B, E, T, F), (B, N, T, F) -> (B, E, N)
            pairs = torch.broadcast_tensors(estimates[:, :, None], references[:, None])
            return _weighted_mask_loss(*pairs, weights, self.loss)

        loss, _ = permutation_invariant_loss(logits, targets, pairwise=pairwise,
                                             unmatched="silence")
        return {"loss": loss}

    def _forward(self, network: nn.Module, mixture: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        masks = self._masks(network, mixture)  # (B, H, T, F)
        if labels is not None:
            index = labels[:, :, None, None].expand(-1, -1, *masks.shape[2:])
            masks = masks.gather(1, index)
        return masks * mixture.unsqueeze(1), masks


def curriculum_schedule(epoch: int, max_sources: int, curriculum_epochs: int) -> int:
    """Largest number of sources per training mixture in ``epoch`` (Solos' curriculum).

    Grows linearly (rounded down) from 2 at epoch 1 to ``max_sources`` at epoch
    ``curriculum_epochs``; ``max_sources`` from then on, and always when
    ``curriculum_epochs`` is 0 or ``max_sources <= 2``.

    Parameters
    ----------
    epoch : int
        1-based epoch.
    max_sources : int
        The most sources in one training mixture.
    curriculum_epochs : int
        Length of the ramp in epochs (0: no curriculum).

    Returns
    -------
    int

    Examples
    --------
    >>> [curriculum_schedule(epoch, 7, 6) for epoch in range(1, 8)]
    [2, 3, 4, 5, 6, 7, 7]
    """
    if curriculum_epochs <= 0 or max_sources <= 2 or epoch >= curriculum_epochs:
        return max_sources
    return 2 + ((max_sources - 2) * (max(epoch, 1) - 1)) // (curriculum_epochs - 1)


# --------------------------------------------------------------------- SoundOfPixels
class SoundOfPixels(_UNetSeparator):
    """Sound of Pixels with class labels in place of video: label-conditioned binary masks.

    A :class:`UNet` turns the dB-normalised mixture spectrogram (Solos' features) into
    ``n_components`` spectral component maps ``S_k``. In Sound of Pixels a video network
    picks a weight ``alpha_k`` per component for the visible instrument; here a learned
    embedding of the requested class gives the weights and a per-class bias ``beta``, and
    the class's mask is ``sigmoid(sum_k alpha_k S_k + beta)``.

    Training targets are complementary binary masks (Solos, Eq. 2): for each class
    present in a mixture, 1 in the bins where that class (the sum of its sources) is the
    loudest, 0 elsewhere. The loss is the binary cross-entropy weighted per bin by the
    mixture's log-compressed magnitude (Sound of Pixels' weighting). The U-Net runs once
    per mixture and every class is queried from the same components: every present
    class is a query (Sound of Pixels' training), and the classes absent from the
    mixture are queries with an all-zero target, weighted by ``absent_weight``, so that
    asking for a missing instrument returns silence.

    Labels are required: ``fit(mixtures, sources, labels)`` and
    ``transform(mixtures, labels=[...])`` / ``separate(audio, labels=[...])``, which
    return one estimate per requested class. The masks of different classes are not
    normalised to sum to one unless ``normalize_masks`` is set.

    Parameters
    ----------
    n_components : int, default=32
        Spectral component maps (the U-Net's output channels), 32 as in Sound of Pixels.
    n_levels : int, default=4
        U-Net levels (Sound of Pixels: 7 with 32 to 512 channels; fewer and narrower
        here for a CPU).
    base_channels : int, default=16
        Channels of the first level, doubled at every level.
    absent_weight : float, default=0.5
        Weight of the absent classes' loss (mean over absent queries) relative to the
        present classes' (mean over present queries). 0 trains on present classes only,
        as Sound of Pixels does.
    loss : {"bce", "si_sdr"}, default="bce"
        ``"bce"``: the weighted cross-entropy against binary masks above (Sound of
        Pixels'). ``"si_sdr"``: each query's mask is applied to the mixture's STFT,
        inverted with its phase and scored against its class's waveform by negative
        SI-SDR, an absent class's query by its level relative to the mixture
        (:func:`decomp.losses.separation_cost`); it trains on waveforms, so only on a
        :class:`decomp.data.MixtureStream`. A departure from the paper, for the reason
        given at :class:`MHUNet`'s ``loss``.
    normalize_masks : bool, default=False
        At inference, divide each requested class's mask by the sum of the requested
        classes' masks, so that the returned sources share the mixture out among the
        labels asked for (and sum to it). Meant for a query that names every source of
        the mixture; a single label then gets the whole mixture back. Training is
        unchanged. Off by default, as in Sound of Pixels, whose queries are
        independent; the U-Net guide gives its effect on the held-out font.
    front_end : Spectrogram, optional
        Turns waveforms into magnitudes and masks back into waveforms; must give
        magnitudes (``kind="linear"``, ``db_normalization=False``): the network
        dB-normalises its input itself. Default :data:`SOLOS_FRONT_END` (log-frequency
        STFT, 256 bins).
    chunk_frames : int, default=64
        Frames per training crop and inference chunk (about 1 s; Solos uses 6 s).
    max_epochs : int, default=100
        Passes over the training mixtures.
    batch_size : int, default=16
        Crops per optimisation step.
    learning_rate : float, default=1e-3
        Adam step size.
    validation_fraction : float, default=0.1
        Share of the mixtures held out for model selection and early stopping.
    patience : int, default=20
        Stop after this many epochs without a lower validation loss.
    max_grad_norm : float or None, default=5.0
        Gradient-norm clipping (None: none).
    max_seconds : float, optional
        Stop training (keeping the best epoch) after this many seconds.
    checkpoint : path, optional
        Per-epoch checkpoint that a later ``fit`` resumes.
    device : str or torch.device, default="auto"
        Where the network trains and runs.
    random_state : int, RandomState or None
        Seeds the weights, the split, the crops and the batch order.
    progress : bool, default=False
        Show a progress bar over epochs.
    steps_per_epoch : int, default=100
        Batches per epoch when fitting on a :class:`decomp.data.MixtureStream`.
    num_workers : int, default=0
        DataLoader workers that mix a stream's batches (0: in this process). See
        :class:`~decomp.estimators.amortized.base.AmortizedSeparator` for the training
        settings in full.
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

    Attributes
    ----------
    front_end_ : Spectrogram
        The front end used.
    n_features_in_ : int
        Frequency bins of the training spectrograms.
    classes_ : ndarray of shape (n_classes,)
        The classes, sorted.
    n_slots_ : int
        ``len(classes_)``.
    max_sources_ : int
        The most sources in one training mixture.
    network_state_ : dict
        The network's weights.
    history_ : dict of ndarray
        Per-epoch ``train_loss``, ``train_present``, ``train_absent`` and
        ``validation_loss``.
    n_epochs_, best_epoch_, best_validation_loss_, training_seconds_ : int, int, float, float
        Training summary.

    Notes
    -----
    Differences from Sound of Pixels, and why:

    - a class embedding replaces the video network (the conditioning is a label, not a
      frame); the alphas are unconstrained (SoP squashes the visual features with a
      sigmoid and rescales them by learned factors, which an embedding subsumes);
    - absent-class queries (``absent_weight``) are added, since a label query may name
      an instrument that is not playing;
    - smaller U-Net and 1 s chunks for CPU training; the 16 kHz Solos-style front end
      (:data:`SOLOS_FRONT_END`), Solos' dB input normalisation instead of SoP's log
      magnitude;
    - complementary binary targets (Solos) rather than SoP's ``|S| > 0.5 |mixture|``
      (the two agree for two sources);
    - level-free loss weights ``log1p(|mixture| / mean |mixture|)`` clamped to
      [1e-3, 10].

    References
    ----------
    H. Zhao, C. Gan, A. Rouditchenko, C. Vondrick, J. McDermott and A. Torralba, "The
    sound of pixels", ECCV 2018.
    J. F. Montesinos, O. Slizovskaia and G. Haro, "Solos: A dataset for audio-visual
    music analysis", IEEE MMSP 2020.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sources = rng.gamma(1.0, 1.0, size=(8, 2, 32, 33)).astype(np.float32)
    >>> labels = np.array([["violin", "flute"]] * 8)
    >>> model = SoundOfPixels(n_components=8, n_levels=2, base_channels=4, chunk_frames=16,
    ...                       max_epochs=2, random_state=0)
    >>> model = model.fit(sources.sum(axis=1), sources, labels)
    >>> model.transform(sources[0].sum(axis=0), labels=["flute", "violin"]).shape
    (2, 32, 33)
    """

    _parameter_constraints: dict = {
        **AmortizedSeparator._parameter_constraints,
        "n_components": [StrictInterval(Integral, 1, None, closed="left")],
        "n_levels": [StrictInterval(Integral, 1, None, closed="left")],
        "base_channels": [StrictInterval(Integral, 1, None, closed="left")],
        "absent_weight": [StrictInterval(Real, 0, None, closed="left")],
        "loss": [StrOptions({"bce", "si_sdr"})],
        "normalize_masks": ["boolean"],
    }

    _permutation_invariant = False
    _requires_labels = True
    _loss_uses_labels = True

    def __init__(
        self,
        *,
        n_components: int = 32,
        n_levels: int = 4,
        base_channels: int = 16,
        absent_weight: float = 0.5,
        loss: str = "bce",
        normalize_masks: bool = False,
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
        self.n_components = n_components
        self.n_levels = n_levels
        self.base_channels = base_channels
        self.absent_weight = absent_weight
        self.loss = loss
        self.normalize_masks = normalize_masks

    def _n_slots(self, max_sources: int, n_classes: int | None) -> int:
        return int(n_classes)  # fit has refused missing labels already

    def _build_network(self) -> nn.Module:
        return _LabelConditionedMasks(len(self.classes_), self.n_components, self.n_levels,
                                      self.base_channels)

    def _training_losses(self, network: nn.Module, batch: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        mixture = batch["mixture"]
        n_classes = len(self.classes_)
        logits = network(mixture)  # every class queried: (B, C, T, F)
        per_class = _per_class(batch["sources"], batch["labels"], n_classes)
        present = per_class.flatten(2).amax(dim=2) > 0  # (B, C)
        if self.loss == "si_sdr":  # each query's resynthesised waveform against its class
            losses = self._class_waveform_costs(torch.sigmoid(logits), batch)  # (B, C)
        else:
            losses = _weighted_mask_loss(logits, binary_masks(per_class),
                                         _loss_weights(mixture)[:, None], "bce")
        zero = logits.sum() * 0  # keeps the graph when a batch has no query of a kind
        present_loss = losses[present].mean() if present.any() else zero
        absent_loss = losses[~present].mean() if (~present).any() else zero
        return {"loss": present_loss + self.absent_weight * absent_loss,
                "present": present_loss, "absent": absent_loss}

    def _forward(self, network: nn.Module, mixture: torch.Tensor,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        masks = torch.sigmoid(network(mixture, labels))  # (B, n_requested, T, F)
        if self.normalize_masks:
            masks = _sum_to_one(masks)
        return masks * mixture.unsqueeze(1), masks
