"""The amortized separators' shared estimator: data checks, one training loop, inference.

An amortized separator learns a network that maps a mixture's magnitude spectrogram to
its sources in one forward pass. :class:`AmortizedSeparator` holds everything the models
share, so that a model only says how its network is built, what it minimises and how
its outputs become source spectrograms:

- ``fit(mixtures, sources[, labels])`` on spectrograms or waveforms (converted by the
  front end), with an item-level train/validation split, random crops of
  ``chunk_frames`` frames and an optional curriculum on the number of sources, or
  ``fit(stream)`` on a :class:`decomp.data.MixtureStream` (epochs of ``steps_per_epoch``
  batches through a DataLoader, a fixed validation set drawn with another seed); both
  hand their batches, loss and validation to the library's one training loop
  (:func:`decomp._training.train`: Adam, gradient clipping, model selection on the
  validation loss, early stopping, ``max_seconds``, a progress bar and an atomic
  per-epoch checkpoint, random states included, that a restarted ``fit`` resumes);
- ``transform(mixtures)`` -> source magnitudes ``(n_items, n_slots, n_frames, n_bins)``,
  computed chunk by chunk; slots of permutation-invariant models are re-ordered from
  chunk to chunk so that slot ``k`` stays the same source;
- ``separate(audio)`` -> waveforms, by masking the mixture's STFT and inverting it with
  the mixture's phase (:meth:`decomp.audio.Spectrogram.separate`);
- ``separate_stream(blocks)`` / ``separate_file(path, out_paths)``: the same separation of
  a waveform given block by block, in bounded memory (the same chunks, batches and slot
  alignment, the iSTFT segment by segment), written stem by stem atomically;
- ``save``/``decomp.load`` (the network's weights are fitted state).

Subclasses implement :meth:`_build_network`, :meth:`_training_losses` and
:meth:`_forward`, and may override :meth:`_n_slots`, :meth:`_curriculum` and
:meth:`_align_chunks`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from decomp._backend import resolve_device
from decomp._files import atomic_write, suffix_format
from decomp._training import train
from decomp._validation import DEVICE, RANDOM_STATE, StrictInterval, check_spectrogram
from decomp.audio.io import _check_audio
from decomp.audio.spectrogram import Spectrogram
from decomp.losses import permutation_invariant_loss
from decomp.persistence import Persistent

__all__ = [
    "AmortizedSeparator",
    "DEFAULT_FRONT_END",
    "compress_magnitude",
    "pit_magnitude_loss",
]

DEFAULT_FRONT_END = Spectrogram(sample_rate=16000, n_fft=512, hop_length=256, kind="linear")
"""The separators' default front end: 16 kHz, 32 ms Hann frames, 16 ms hop, 257 linear
magnitude bins (small enough to train on a 2-core CPU)."""

_CHECKPOINT_FORMAT = "decomp-separator-checkpoint"
# Parameters that may change between a run and its resumption.
_RESUMABLE_PARAMS = ("progress", "checkpoint", "max_seconds", "max_epochs", "patience",
                     "device")


# ----------------------------------------------------------------------- shared helpers
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


def _as_float32(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
    return int(value)


# ------------------------------------------------------------------- streaming helpers
#: Frames owned by one synthesis segment of a streamed separation (about 33 s at a hop of
#: 256 samples, 65 s at 512).
STREAM_SEGMENT_FRAMES = 2048


def _checked_blocks(blocks: Iterable[Any]) -> Iterator[np.ndarray]:
    """Blocks of samples -> 1-d float32 NumPy blocks; NaN/inf is refused."""
    for index, block in enumerate(blocks):
        if isinstance(block, torch.Tensor):
            block = block.detach().cpu().numpy()
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"blocks must be 1-d arrays of samples; block {index} has shape "
                             f"{block.shape}.")
        if not np.isfinite(block).all():
            raise ValueError(f"block {index} of the audio holds NaN or inf samples.")
        yield block


def _stream_segments(blocks: Iterable[Any], separate: Callable[[np.ndarray, int], np.ndarray],
                     front_end: Spectrogram, segment_frames: int | None = None
                     ) -> Iterator[np.ndarray]:
    """Separate a waveform given block by block, one segment at a time.

    Each segment owns ``segment_frames`` hops of samples and is passed to ``separate``
    (``(samples, first) -> (n_outputs, n)``, ``first`` the global index of the first
    sample, always a whole number of hops) with a margin of more than one window on both
    sides, so every STFT frame whose window touches the samples it owns lies wholly
    inside it. A waveform of at most one segment is passed whole. Only a segment and its
    margins are held, so memory does not grow with the recording.

    Yields (n_outputs, n_owned) float32 arrays whose concatenation covers every sample.
    """
    hop = front_end.hop_length
    step = (segment_frames or STREAM_SEGMENT_FRAMES) * hop
    margin = (-(-front_end.n_fft // hop) + 1) * hop  # samples of context, whole hops
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start, start = 0, 0  # global index of buffer[0]; first sample not yet yielded
    pending: list[np.ndarray] = []
    n_samples = 0

    def segment(stop: int, last: int) -> np.ndarray:
        nonlocal buffer, buffer_start
        first = max(0, start - margin)
        samples = buffer[first - buffer_start:last - buffer_start]
        output = np.asarray(separate(samples, first), dtype=np.float32)
        return output[:, start - first:stop - first]

    def drop() -> None:  # keep only the samples the next segment's left margin needs
        nonlocal buffer, buffer_start
        keep = max(0, start - margin)
        buffer, buffer_start = buffer[keep - buffer_start:], keep

    for block in _checked_blocks(blocks):
        pending.append(block)
        n_samples += block.size
        if n_samples < start + step + margin:
            continue
        buffer = np.concatenate([buffer, *pending])
        pending = []
        while n_samples >= start + step + margin:
            yield segment(start + step, start + step + margin)
            start += step
            drop()
    if n_samples == 0:
        raise ValueError("blocks holds no samples; there is nothing to separate.")
    buffer = np.concatenate([buffer, *pending])
    if start == 0 and n_samples <= step:
        yield np.asarray(separate(buffer, 0), dtype=np.float32)
        return
    while start < n_samples:
        stop = min(start + step, n_samples)
        yield segment(stop, min(n_samples, stop + margin))
        start = stop
        drop()


def _write_stems(segments: Iterable[np.ndarray],
                 out_paths: Sequence[str | Path] | Callable[[int], Sequence[str | Path]],
                 sample_rate: int) -> list[Path]:
    """Write streamed (n_sources, n) segments to one audio file per source, atomically.

    Every file is opened through :func:`decomp._files.atomic_write` (nested, one per
    stem), so an error at any point leaves none of the new stems (earlier files keep
    their old content). ``out_paths`` is a sequence of paths, or a function of the number
    of sources that returns them (when that number is known only from the first segment).
    WAV files are written as 32-bit float, like :func:`decomp.audio.write_audio`.
    """
    import soundfile

    with contextlib.ExitStack() as stack:
        files: list[Any] = []
        paths: list[Path] = []
        for segment in segments:
            if not files:
                paths = [Path(path) for path in
                         (out_paths(segment.shape[0]) if callable(out_paths) else out_paths)]
                if len(paths) != segment.shape[0]:
                    raise ValueError(f"{len(paths)} output paths given for "
                                     f"{segment.shape[0]} separated sources.")
                for path in paths:
                    raw = stack.enter_context(atomic_write(path))
                    file_format = (suffix_format(path, upper=True) or "WAV")
                    subtype = "FLOAT" if file_format == "WAV" else None
                    files.append(stack.enter_context(soundfile.SoundFile(
                        raw, "w", samplerate=int(sample_rate), channels=1,
                        format=file_format, subtype=subtype)))
            for file, source in zip(files, segment, strict=True):
                file.write(np.ascontiguousarray(source, dtype=np.float32))
        if not files:
            raise ValueError("the separation yielded no samples.")
    return paths


# ------------------------------------------------------------------------- estimator
class AmortizedSeparator(Persistent, BaseEstimator):
    """Base of the amortized separators (AudioSlots, BlockVAE, MHUNet, SoundOfPixels).

    Not used directly: subclasses add their architecture's parameters. Parameters below
    are shared by all.

    Parameters
    ----------
    front_end : Spectrogram, optional
        Turns waveforms into magnitude spectrograms (``fit`` on waveforms, ``separate``)
        and masks back into waveforms. Must give magnitudes: ``kind="linear"``, with any
        ``frequency_scale``, and ``db_normalization=False`` (a network may normalise its
        input itself). Default :data:`DEFAULT_FRONT_END`.
    chunk_frames : int, default=64
        Frames per training crop and per inference chunk (about 1 s at the default hop).
    max_epochs : int, default=100
        Passes over the training mixtures (one random crop of each per pass), or epochs
        of ``steps_per_epoch`` batches of a stream.
    batch_size : int, default=16
        Crops per optimisation step.
    learning_rate : float, default=1e-3
        Adam step size.
    validation_fraction : float, default=0.1
        Share of the mixtures held out to select the epoch kept and to stop early; 0
        selects on the training loss.
    patience : int, default=20
        Stop after this many epochs without a lower validation loss.
    max_grad_norm : float or None, default=5.0
        Gradient-norm clipping (None: none).
    max_seconds : float, optional
        Stop training (keeping the best epoch) after this many seconds.
    checkpoint : path, optional
        File written after every epoch; a later ``fit`` with the same data and settings
        resumes from it (``max_epochs`` and ``patience`` may grow).
    device : str or torch.device, default="auto"
        Where the network trains and runs (``"auto"``: CUDA when available).
    random_state : int, RandomState or None
        Seeds the weights, the split, the crops and the batch order.
    progress : bool, default=False
        Show a progress bar over epochs with the training and validation losses.
    steps_per_epoch : int, default=100
        Batches per epoch when fitting on a :class:`decomp.data.MixtureStream` (fixed
        mixtures make an epoch of one crop per training item instead).
    num_workers : int, default=0
        DataLoader worker processes that mix a stream's batches (0: in this process).
        The batches depend on it, except that 0 and 1 give the same ones (see the
        streams guide).
    """

    _parameter_constraints: dict = {
        "front_end": [Spectrogram, None],
        "chunk_frames": [StrictInterval(Integral, 4, None, closed="left")],
        "max_epochs": [StrictInterval(Integral, 0, None, closed="left")],
        "batch_size": [StrictInterval(Integral, 1, None, closed="left")],
        "learning_rate": [StrictInterval(Real, 0, None, closed="neither")],
        "validation_fraction": [StrictInterval(Real, 0, 1, closed="left")],
        "patience": [StrictInterval(Integral, 1, None, closed="left")],
        "max_grad_norm": [StrictInterval(Real, 0, None, closed="neither"), None],
        "max_seconds": [StrictInterval(Real, 0, None, closed="neither"), None],
        "checkpoint": [str, Path, None],
        "device": DEVICE,
        "random_state": RANDOM_STATE,
        "progress": ["boolean"],
        "steps_per_epoch": [StrictInterval(Integral, 1, None, closed="left")],
        "num_workers": [StrictInterval(Integral, 0, None, closed="left")],
    }

    #: Whether the outputs are unordered, so the base re-orders them from one inference
    #: chunk to the next (:meth:`_align_chunks`); False for per-class outputs or models
    #: that order their outputs themselves. A subclass may make it a property.
    _permutation_invariant: bool = True
    #: The front end used when ``front_end`` is None.
    _default_front_end: Spectrogram = DEFAULT_FRONT_END
    #: Whether the model needs source labels in ``fit`` (and takes them in ``transform``).
    _requires_labels: bool = False

    def __init__(
        self,
        *,
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
    ) -> None:
        self.front_end = front_end
        self.chunk_frames = chunk_frames
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_grad_norm = max_grad_norm
        self.max_seconds = max_seconds
        self.checkpoint = checkpoint
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.steps_per_epoch = steps_per_epoch
        self.num_workers = num_workers

    # ------------------------------------------------------------- subclass hooks
    def _build_network(self) -> torch.nn.Module:
        """A fresh network for ``n_features_in_`` bins, ``n_slots_`` slots, ``classes_``."""
        raise NotImplementedError

    def _training_losses(
        self, network: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch; ``"loss"`` is minimised, other entries are logged.

        ``batch`` holds ``"mixture"`` (B, T, F), ``"sources"`` (B, S, T, F) (zero
        slots where an item has fewer sources), ``"present"`` (B, S) bool and, when
        labels were given, ``"labels"`` (B, S) int64 class indices (-1 where absent).
        """
        raise NotImplementedError

    def _forward(
        self, network: torch.nn.Module, mixture: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference on chunks: mixture (B, T, F) -> (source magnitudes (B, n_out, T, F),
        masks (B, n_out, T, F) on the front end's bins, or None to use ratio masks of the
        magnitudes). ``labels`` (B, n_out) are requested class indices, or None."""
        raise NotImplementedError

    def _n_slots(self, max_sources: int, n_classes: int | None) -> int:
        """Number of output slots, given the largest number of (non-silent) sources in one
        training mixture and the number of classes (None without labels)."""
        return max_sources

    def _curriculum(self, epoch: int, max_sources: int) -> int:
        """Largest source count trained on in ``epoch`` (1-based); default: all."""
        return max_sources

    # ---------------------------------------------------------------- validation
    def _front_end(self) -> Spectrogram:
        front_end = self._default_front_end if self.front_end is None else self.front_end
        if front_end.kind != "linear" or front_end.db_normalization:
            raise ValueError(
                f"{type(self).__name__} needs a front end that gives magnitudes "
                f"(kind='linear', db_normalization=False); got {front_end!r}. The networks "
                "compress and normalise their input themselves."
            )
        return front_end

    def _check_training_data(
        self, mixtures: Any, sources: Any, labels: Any
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """-> mixtures (N, T, F), sources (N, S, T, F) as float32 CPU tensors, labels."""
        from decomp.data.mixtures import MixtureSet

        owner = type(self).__name__
        if isinstance(mixtures, MixtureSet):
            if sources is not None:
                raise ValueError(f"{owner}.fit takes a MixtureSet alone or mixtures and "
                                 "sources; got a MixtureSet and sources.")
            if labels is None:
                labels = mixtures.instruments
            mixtures, sources = mixtures.mixtures, mixtures.sources
        if sources is None:
            raise ValueError(f"{owner}.fit needs the sources of every mixture: "
                             "fit(mixtures, sources).")
        ndim = getattr(mixtures, "ndim", np.ndim(mixtures))
        if ndim == 2:  # waveforms (n_items, n_samples)
            mixture_audio = _check_audio(mixtures, name="mixtures", allow_batch=True)
            source_audio = sources if isinstance(sources, torch.Tensor) else np.asarray(sources)
            if source_audio.ndim == 3:  # the audio check takes at most (n_items, n_samples)
                _check_audio(source_audio.reshape(-1, source_audio.shape[-1]), name="sources",
                             allow_batch=True)
            if source_audio.ndim != 3 or source_audio.shape[0] != mixture_audio.shape[0] \
                    or source_audio.shape[-1] != mixture_audio.shape[-1]:
                raise ValueError(
                    "with waveform mixtures of shape (n_items, n_samples) = "
                    f"{tuple(mixture_audio.shape)}, sources must have shape (n_items, "
                    f"n_sources, n_samples); got {tuple(source_audio.shape)}.")
            front_end = self.front_end_
            mixtures = front_end(_as_float32(mixture_audio, torch.device("cpu")))
            flat = _as_float32(source_audio, torch.device("cpu")).flatten(0, 1)
            sources = front_end(flat).unflatten(0, tuple(source_audio.shape[:2]))
        elif ndim == 3:
            mixtures = check_spectrogram(mixtures, name="mixtures", owner=owner)
            sources = _check_source_spectrograms(sources, owner)
        else:
            raise ValueError(
                f"mixtures must be spectrograms of shape (n_items, n_frames, n_bins) or "
                f"waveforms of shape (n_items, n_samples); got an array of shape "
                f"{tuple(np.shape(mixtures))}.")
        mixtures = _as_float32(mixtures, torch.device("cpu"))
        sources = _as_float32(sources, torch.device("cpu"))
        if sources.ndim != 4 or sources.shape[0] != mixtures.shape[0] \
                or sources.shape[2:] != mixtures.shape[1:]:
            raise ValueError(
                f"sources must have shape (n_items, n_sources, n_frames, n_bins) = "
                f"({mixtures.shape[0]}, n_sources, {mixtures.shape[1]}, {mixtures.shape[2]}) "
                f"to match mixtures of shape {tuple(mixtures.shape)}; got "
                f"{tuple(sources.shape)}.")
        if mixtures.shape[0] < 1 or sources.shape[1] < 1:
            raise ValueError("fit needs at least one mixture with at least one source.")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != tuple(sources.shape[:2]):
                raise ValueError(
                    f"labels must have shape (n_items, n_sources) = {tuple(sources.shape[:2])}, "
                    f"one class per source ('' for an unused slot); got {labels.shape}.")
        elif self._requires_labels:
            raise ValueError(f"{owner}.fit needs labels: the class of every source, shape "
                             "(n_items, n_sources) ('' for an unused slot).")
        return mixtures, sources, labels

    # ----------------------------------------------------------------------- fit
    def fit(self, mixtures: Any, sources: Any = None, labels: Any = None) -> AmortizedSeparator:
        """Train the network on mixtures and their sources, or on a mixture stream.

        Parameters
        ----------
        mixtures : array-like, MixtureSet or MixtureStream
            Magnitude spectrograms from ``front_end``, shape (n_items, n_frames,
            n_bins), or waveforms at its sample rate, shape (n_items, n_samples)
            (converted here). A :class:`decomp.data.MixtureSet` supplies mixtures,
            sources and labels (its ``instruments``) at once. A
            :class:`decomp.data.MixtureStream` (at the front end's sample rate) is mixed
            on the fly: an epoch is then ``steps_per_epoch`` batches drawn through a
            ``torch.utils.data.DataLoader`` with ``num_workers`` workers (epoch ``e``
            draws the stream's sequence ``stream.epoch + e``), and validation uses a
            fixed set of ``round(validation_fraction * steps_per_epoch * batch_size)``
            mixtures drawn once from a copy of the stream with another seed (with
            ``validation_fraction=0``, the epoch's training loss selects). The stream's
            labels (indices into ``stream.classes``) become the model's classes.
        sources : array-like
            The isolated sources in the same form as ``mixtures``: shape (n_items,
            n_sources, n_frames, n_bins) or (n_items, n_sources, n_samples); all-zero
            slots mark mixtures with fewer sources. Not given with a stream.
        labels : array-like of str or int, shape (n_items, n_sources), optional
            Class of each source (``""`` or ``-1`` for an unused slot). Required by
            label-conditioned models; models with one output per class use them to
            assign sources to outputs; permutation-invariant models record them only.
            Not given with a stream.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            If an input has the wrong rank or shapes disagree, holds NaN/inf or negative
            magnitudes, labels are missing where needed, a stream's sample rate differs
            from the front end's, a checkpoint belongs to another run, or a parameter is
            invalid.
        NonFiniteLossError
            If every batch of an epoch gives a non-finite loss.
        """
        from decomp.data.stems import MixtureStream

        self._validate_params()
        started = time.perf_counter()
        self.front_end_ = self._front_end()
        device = resolve_device(self.device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if isinstance(mixtures, MixtureStream):
            if sources is not None or labels is not None:
                raise ValueError(f"{type(self).__name__}.fit takes a MixtureStream alone (it "
                                 "yields sources and labels); got sources or labels too.")
            plan = self._stream_plan(mixtures, seed, device)
        else:
            plan = self._array_plan(mixtures, sources, labels, seed, device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            network = self._build_network().to(device)
            self._train(network, plan, device, started)
        self._network = network.eval()
        self.network_state_ = {key: value.detach().cpu().clone()
                               for key, value in network.state_dict().items()}
        self.training_seconds_ = time.perf_counter() - started
        return self

    def _set_shapes(self, n_bins: int, max_sources: int, classes: np.ndarray | None) -> None:
        """Record the fitted sizes that ``_build_network`` reads."""
        self.classes_ = classes
        self.n_features_in_ = int(n_bins)
        self.max_sources_ = int(max_sources)
        self.n_slots_ = int(self._n_slots(self.max_sources_,
                                          None if classes is None else len(classes)))

    def _array_plan(self, mixtures: Any, sources: Any, labels: Any, seed: int,
                    device: torch.device) -> dict[str, Any]:
        """Training on fixed mixtures: an item-level split, one random crop per item."""
        mixtures, sources, labels = self._check_training_data(mixtures, sources, labels)
        present = sources.flatten(2).amax(dim=2) > 0  # (N, S)
        classes, label_index = _encode_labels(labels, present)
        self._set_shapes(mixtures.shape[-1], int(present.sum(dim=1).max()), classes)
        if sources.shape[1] > self.n_slots_:
            # Zero-padded source slots beyond the model's outputs are dropped (labels move
            # with their sources); a mixture with more real sources than slots is refused.
            sources, present, label_index = _drop_empty_slots(sources, present, label_index,
                                                              self.n_slots_)
        n_items = mixtures.shape[0]
        order = np.random.default_rng(seed).permutation(n_items)
        n_validation = (0 if self.validation_fraction == 0 or n_items < 2
                        else min(n_items - 1, max(1, round(self.validation_fraction * n_items))))
        validation_items, train_items = np.sort(order[:n_validation]), np.sort(order[n_validation:])
        n_sources_per_item = present.sum(dim=1).numpy()

        def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            allowed = self._curriculum(epoch, self.max_sources_)
            items = train_items[n_sources_per_item[train_items] <= allowed]
            if items.size == 0:
                items = train_items
            epoch_rng = np.random.default_rng([seed, epoch])
            items = epoch_rng.permutation(items)
            return (_random_crops(mixtures, sources, present, label_index,
                                  items[start:start + self.batch_size], self.chunk_frames,
                                  epoch_rng, device)
                    for start in range(0, items.size, self.batch_size))

        return {
            "epoch_batches": epoch_batches,
            "validation": _tile_chunks(mixtures, sources, present, label_index,
                                       validation_items if n_validation else train_items,
                                       self.chunk_frames),
            "fingerprint": self._fingerprint(mixtures, sources, seed),
            "n_train": int(train_items.size), "n_validation": int(n_validation),
        }

    def _stream_plan(self, stream: Any, seed: int, device: torch.device) -> dict[str, Any]:
        """Training on a MixtureStream: ``steps_per_epoch`` fresh batches per epoch."""
        front_end = self.front_end_
        if stream.sample_rate != front_end.sample_rate:
            raise ValueError(f"the MixtureStream's sample rate ({stream.sample_rate} Hz) must "
                             f"equal the front end's ({front_end.sample_rate} Hz).")
        n_bins = front_end(torch.zeros(1, stream.crop_samples)).shape[-1]
        self._set_shapes(n_bins, stream.max_sources, np.asarray(stream.classes))

        def features(examples: Any, allowed: int) -> tuple[torch.Tensor, ...]:
            """A collated batch of examples -> spectrograms, presence and class indices."""
            n_sources = torch.as_tensor(examples.n_sources)
            keep = n_sources <= allowed
            keep = keep if bool(keep.any()) else torch.ones_like(keep)
            waveforms = torch.as_tensor(examples.mixture, dtype=torch.float32)[keep]
            source_waveforms = torch.as_tensor(examples.sources, dtype=torch.float32)[keep]
            mixture = front_end(waveforms)  # (B, T, F)
            sources = front_end(source_waveforms.flatten(0, 1)).unflatten(
                0, tuple(source_waveforms.shape[:2]))  # (B, S, T, F)
            present = sources.flatten(2).amax(dim=2) > 0
            label_index = torch.where(present, torch.as_tensor(examples.labels)[keep], -1)
            if sources.shape[1] > self.n_slots_:
                sources, present, label_index = _drop_empty_slots(sources, present,
                                                                  label_index, self.n_slots_)
            return mixture, sources, present, label_index

        def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
            allowed = self._curriculum(epoch, self.max_sources_)
            epoch_stream = copy.copy(stream)  # the caller's stream keeps its epoch
            epoch_stream.set_epoch(stream.epoch + epoch)
            # The loader's own seed comes from this generator, not from the global one.
            generator = torch.Generator().manual_seed(
                int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
            loader = torch.utils.data.DataLoader(epoch_stream, batch_size=self.batch_size,
                                                 num_workers=self.num_workers,
                                                 generator=generator)
            epoch_rng = np.random.default_rng([seed, epoch])
            for examples in itertools.islice(loader, self.steps_per_epoch):
                mixture, sources, present, label_index = features(examples, allowed)
                yield _random_crops(mixture, sources, present, label_index,
                                    np.arange(mixture.shape[0]), self.chunk_frames, epoch_rng,
                                    device)

        n_validation = 0
        if self.validation_fraction > 0:
            n_validation = max(1, round(self.validation_fraction * self.steps_per_epoch
                                        * self.batch_size))
        validation = None
        if n_validation:
            held_out = copy.copy(stream)
            held_out.random_state = int(np.random.SeedSequence(
                [stream.random_state, 0x7E57]).generate_state(1)[0])  # another seed
            held_out.set_epoch(0)
            examples = list(itertools.islice(iter(held_out), n_validation))
            collated = torch.utils.data.default_collate(examples)
            mixture, sources, present, label_index = features(collated, self.max_sources_)
            validation = _tile_chunks(mixture, sources, present, label_index,
                                      np.arange(mixture.shape[0]), self.chunk_frames)
        stems_sum = sum(float(np.sum(row, dtype=np.float64)) for row in stream._stems)
        described = (stream.random_state, stream.epoch, stream.classes, stream.sample_rate,
                     stream.crop_samples, stream.min_sources, stream.max_sources,
                     stream.level_range, stream.augmentation, len(stream._stems), stems_sum)
        params = {key: repr(value) for key, value in self.get_params(deep=False).items()
                  if key not in _RESUMABLE_PARAMS}
        return {
            "epoch_batches": epoch_batches, "validation": validation,
            "fingerprint": {"class": type(self).__name__, "params": repr(sorted(params.items())),
                            "seed": seed, "stream": repr(described)},
            "n_train": self.steps_per_epoch * self.batch_size, "n_validation": n_validation,
        }

    def _train(self, network: torch.nn.Module, plan: dict[str, Any], device: torch.device,
               started: float) -> None:
        """Hand the network, its loss, its validation and its batches to the one loop."""
        validation = plan["validation"]
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        epoch_loss = [0.0, 0]  # without validation data: the epoch's training loss selects

        def losses_of(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            losses = self._training_losses(network, batch)
            if validation is None and torch.isfinite(losses["loss"]):
                epoch_loss[0] += float(losses["loss"].detach())
                epoch_loss[1] += 1
            return losses

        def epoch_batches(epoch: int) -> Iterable[dict[str, torch.Tensor]]:
            epoch_loss[:] = [0.0, 0]
            return plan["epoch_batches"](epoch)

        def validate() -> float:
            if validation is not None:
                return self._validation_loss(network, validation, device)
            return epoch_loss[0] / epoch_loss[1] if epoch_loss[1] else float("nan")

        result = train(
            network, losses_of, validate, epoch_batches, optimizer,
            max_epochs=self.max_epochs, patience=self.patience, max_seconds=self.max_seconds,
            started=started, max_grad_norm=self.max_grad_norm, checkpoint=self.checkpoint,
            checkpoint_format=_CHECKPOINT_FORMAT, fingerprint=plan["fingerprint"],
            what="separator-training",
            non_finite_hint=f"lower learning_rate (now {self.learning_rate}) or check the data.",
            progress=self.progress, desc=f"training {type(self).__name__}",
        )
        self.history_ = {**result.history,
                         "initial_validation_loss": np.asarray([result.initial_validation_loss])}
        self.n_epochs_ = result.n_epochs
        self.best_epoch_ = result.best_epoch
        self.best_validation_loss_ = result.best_validation_loss
        self.n_train_items_ = plan["n_train"]
        self.n_validation_items_ = plan["n_validation"]

    def _fingerprint(self, mixtures: torch.Tensor, sources: torch.Tensor, seed: int) -> dict:
        # The stream settings do not act on fixed mixtures, so they may change too.
        params = {key: repr(value) for key, value in self.get_params(deep=False).items()
                  if key not in (*_RESUMABLE_PARAMS, "steps_per_epoch", "num_workers")}
        return {
            "class": type(self).__name__, "params": repr(sorted(params.items())),
            "shape": list(sources.shape), "seed": seed,
            "mixture_sum": float(mixtures.double().sum()),
            "sources_sum": float(sources.double().sum()),
        }

    def _validation_loss(self, network: torch.nn.Module, chunks: dict[str, torch.Tensor],
                         device: torch.device) -> float:
        network.eval()
        total, count = 0.0, 0
        n_chunks = chunks["mixture"].shape[0]
        with torch.no_grad():
            for start in range(0, n_chunks, self.batch_size):
                batch = {key: value[start:start + self.batch_size].to(device)
                         for key, value in chunks.items()}
                size = batch["mixture"].shape[0]
                total += float(self._training_losses(network, batch)["loss"]) * size
                count += size
        return total / count

    # ------------------------------------------------------------------ inference
    def _get_network(self) -> torch.nn.Module:
        check_is_fitted(self, "network_state_")
        network = getattr(self, "_network", None)
        if network is None:
            # The network is rebuilt only to receive the fitted weights; fork_rng keeps its
            # random initialisation from moving the caller's global generator.
            with torch.random.fork_rng(devices=[]):
                network = self._build_network()
            try:
                network.load_state_dict(self.network_state_)
            except RuntimeError:
                raise ValueError(
                    f"the fitted weights do not fit the network that {type(self).__name__}'s "
                    "current parameters describe (were they changed with set_params after "
                    "fit?); fit again or restore the parameters.") from None
            self._network = network.eval()
        return network.to(resolve_device(self.device))

    def _label_indices(self, labels: Any, n_items: int) -> torch.Tensor | None:
        """Requested labels -> (n_items, n_requested) class indices (None: no request)."""
        if labels is None:
            if self._requires_labels:
                raise ValueError(f"{type(self).__name__} separates the sources it is asked "
                                 "for: pass labels, the classes to extract "
                                 f"(known: {list(self.classes_)}).")
            return None
        if self.classes_ is None:
            raise ValueError(f"{type(self).__name__} was fitted without labels, so its outputs "
                             "have no classes; call it without labels.")
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = np.broadcast_to(labels, (n_items, labels.size))
        if labels.ndim != 2 or labels.shape[0] != n_items or labels.shape[1] == 0:
            raise ValueError(f"labels must be a sequence of classes or an array of shape "
                             f"(n_items={n_items}, n_requested); got shape {labels.shape}.")
        known = {value: index for index, value in enumerate(self.classes_.tolist())}
        unknown = sorted({str(value) for value in labels.ravel().tolist() if value not in known})
        if unknown:
            raise ValueError(f"unknown labels {unknown}; {type(self).__name__} knows "
                             f"{list(self.classes_)}.")
        return torch.as_tensor(np.vectorize(known.__getitem__, otypes=[np.int64])(labels))

    def _infer(self, mixtures: torch.Tensor, labels: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, T, F) mixtures -> source magnitudes and masks (N, n_out, T, F), chunk by chunk."""
        network = self._get_network()
        device = next(network.parameters()).device
        n_items, n_frames, _ = mixtures.shape
        chunk = self.chunk_frames
        n_chunks = -(-n_frames // chunk)
        # Chunks start every `chunk` frames; the last one ends at the last frame (it overlaps
        # its neighbour rather than being zero-padded, which would change the statistics a
        # network normalises its input with). Only an input shorter than a chunk is padded.
        starts = [min(index * chunk, max(n_frames - chunk, 0)) for index in range(n_chunks)]
        padded = torch.nn.functional.pad(mixtures, (0, 0, 0, max(chunk - n_frames, 0)))
        pieces = torch.stack([padded[:, start:start + chunk] for start in starts], dim=1)
        pieces = pieces.flatten(0, 1)  # (N * n_chunks, chunk, F)
        piece_labels = (None if labels is None
                        else labels.repeat_interleave(n_chunks, dim=0).to(device))
        estimates, masks = [], []
        with torch.no_grad():
            for start in range(0, pieces.shape[0], self.batch_size):
                batch_labels = (None if piece_labels is None
                                else piece_labels[start:start + self.batch_size])
                estimate, mask = self._forward(
                    network, pieces[start:start + self.batch_size].to(device), batch_labels)
                estimates.append(estimate.cpu())
                masks.append(None if mask is None else mask.cpu())
        estimate = torch.cat(estimates).unflatten(0, (n_items, n_chunks))  # (N, C, S, chunk, F)
        mask = None if masks[0] is None else torch.cat(masks).unflatten(0, (n_items, n_chunks))
        if self._permutation_invariant and labels is None and n_chunks > 1:
            estimate, mask = self._align_chunks(estimate, mask)

        # The overlapping last chunk contributes only the frames after its predecessor's.
        keep = [slice(index * chunk - start, chunk) for index, start in enumerate(starts)]

        def join(value: torch.Tensor) -> torch.Tensor:  # (N, C, S, chunk, F) -> (N, S, T, F)
            parts = [value[:, index, :, frames] for index, frames in enumerate(keep)]
            return torch.cat(parts, dim=2)[:, :, :n_frames]

        return join(estimate), None if mask is None else join(mask)

    def _align_chunks(self, estimate: torch.Tensor, mask: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Re-order each chunk's slots to follow the previous chunk's.

        Slots are matched (Hungarian) by the cosine similarity of their mean spectra
        (a source keeps its timbre from one second to the next).

        estimate, mask : (N, n_chunks, n_slots, chunk_frames, n_bins)
        """
        estimate, mask = estimate.clone(), None if mask is None else mask.clone()
        for item in range(estimate.shape[0]):
            previous = estimate[item, 0].mean(dim=1)  # (S, F)
            for index in range(1, estimate.shape[1]):
                current = estimate[item, index].mean(dim=1)
                similarity = torch.nn.functional.normalize(previous, dim=1, eps=1e-12) \
                    @ torch.nn.functional.normalize(current, dim=1, eps=1e-12).T
                _, order = scipy.optimize.linear_sum_assignment(similarity.numpy(), maximize=True)
                order = torch.as_tensor(order)
                estimate[item, index] = estimate[item, index, order]
                if mask is not None:
                    mask[item, index] = mask[item, index, order]
                # A running profile, so a slot silent in one chunk keeps its identity.
                previous = 0.5 * previous + 0.5 * estimate[item, index].mean(dim=1)
        return estimate, mask

    def transform(self, mixtures: Any, labels: Any = None) -> Any:
        """Estimate the sources' magnitude spectrograms.

        Parameters
        ----------
        mixtures : ndarray or Tensor of shape (n_frames, n_bins) or (n_items, n_frames, n_bins)
            Magnitude spectrograms from ``front_end_`` with ``n_features_in_`` bins.
        labels : sequence of classes, or array of shape (n_items, n_requested), optional
            Classes to extract (label-conditioned models require it; models with one
            output per class return those outputs, in this order).

        Returns
        -------
        sources : ndarray or Tensor of shape ([n_items,] n_slots, n_frames, n_bins)
            One magnitude spectrogram per slot (or requested class); like the input
            (NumPy float32 for NumPy input).

        Raises
        ------
        NotFittedError
            If the model is not fitted.
        ValueError
            If the input has the wrong rank or bin count, holds NaN/inf or negative
            values, or labels are missing, unexpected or unknown.
        """
        check_is_fitted(self, "network_state_")
        checked = check_spectrogram(mixtures, name="mixtures", n_bins=self.n_features_in_,
                                    owner=type(self).__name__)
        single = checked.ndim == 2
        batch = _as_float32(checked, torch.device("cpu"))
        batch = batch.unsqueeze(0) if single else batch
        estimate, _ = self._infer(batch, self._label_indices(labels, batch.shape[0]))
        estimate = estimate[0] if single else estimate
        if isinstance(mixtures, torch.Tensor):
            return estimate.to(mixtures.device)
        return estimate.numpy()

    def separate(self, audio: Any, labels: Any = None) -> Any:
        """Separate waveforms: masks applied to the mixture's STFT, inverted with its phase.

        Parameters
        ----------
        audio : ndarray or Tensor of shape (n_samples,) or (n_items, n_samples)
            Mixture(s) at ``front_end_.sample_rate``.
        labels : sequence of classes, or array of shape (n_items, n_requested), optional
            As in :meth:`transform`.

        Returns
        -------
        sources : ndarray or Tensor of shape ([n_items,] n_slots, n_samples)
            The masks sum to one over the slots for every model but the label-conditioned
            ones, so the sources then sum to the mixture.
        """
        check_is_fitted(self, "network_state_")
        checked = _check_audio(audio, name="audio", allow_batch=True)
        single = checked.ndim == 1
        waveforms = _as_float32(checked, torch.device("cpu"))
        waveforms = waveforms.unsqueeze(0) if single else waveforms
        features = self.front_end_(waveforms)  # (N, T, F)
        estimate, masks = self._infer(features, self._label_indices(labels, waveforms.shape[0]))
        outputs = []
        for index in range(waveforms.shape[0]):
            if masks is None:
                outputs.append(self.front_end_.separate(waveforms[index], estimate[index]))
            else:
                outputs.append(self.front_end_.separate(waveforms[index], masks=masks[index]))
        result = outputs[0] if single else torch.stack(outputs)
        if isinstance(audio, torch.Tensor):
            return result.to(audio.device)
        return result.numpy()

    def _stream_outputs(self, features: Iterable[np.ndarray], labels: torch.Tensor | None
                        ) -> Iterator[tuple[torch.Tensor, bool]]:
        """Feature chunks (n, F) in order -> per-frame outputs ``(values (S, n, F), is_mask)``.

        The chunks, batches, overlapping last chunk and slot alignment of :meth:`_infer`
        on the whole spectrogram, computed as the frames arrive: the alignment's running
        profile is carried from chunk to chunk.
        """
        network = self._get_network()
        device = next(network.parameters()).device
        chunk = self.chunk_frames
        align = self._permutation_invariant and labels is None
        previous: torch.Tensor | None = None
        pieces: list[tuple[torch.Tensor, slice]] = []  # (chunk, F) inputs, frames to keep

        def run() -> Iterator[tuple[torch.Tensor, bool]]:
            nonlocal previous
            batch = torch.stack([piece for piece, _ in pieces]).to(device)
            batch_labels = None if labels is None else labels.expand(len(pieces), -1).to(device)
            with torch.no_grad():
                estimate, mask = self._forward(network, batch, batch_labels)
            estimate = estimate.cpu()
            mask = None if mask is None else mask.cpu()
            for index, (_, keep) in enumerate(pieces):
                current = estimate[index]
                current_mask = None if mask is None else mask[index]
                if align:
                    if previous is None:
                        previous = current.mean(dim=1)
                    else:
                        profile = current.mean(dim=1)
                        similarity = torch.nn.functional.normalize(previous, dim=1, eps=1e-12) \
                            @ torch.nn.functional.normalize(profile, dim=1, eps=1e-12).T
                        _, order = scipy.optimize.linear_sum_assignment(similarity.numpy(),
                                                                        maximize=True)
                        order = torch.as_tensor(order)
                        current = current[order]
                        current_mask = None if current_mask is None else current_mask[order]
                        previous = 0.5 * previous + 0.5 * current.mean(dim=1)
                if current_mask is None:
                    yield current[:, keep], False
                else:
                    yield current_mask[:, keep], True
            pieces.clear()

        last_full: torch.Tensor | None = None
        for features_chunk in features:
            frames = torch.as_tensor(np.asarray(features_chunk, dtype=np.float32))
            count = frames.shape[0]
            if count == chunk:
                pieces.append((frames, slice(0, chunk)))
                last_full = frames
            elif last_full is not None:  # the last chunk overlaps its predecessor
                pieces.append((torch.cat([last_full[count:], frames]), slice(chunk - count, chunk)))
            else:  # shorter than one chunk: zero-padded
                pieces.append((torch.nn.functional.pad(frames, (0, 0, 0, chunk - count)),
                               slice(0, count)))
            if len(pieces) == self.batch_size:
                yield from run()
        if pieces:
            yield from run()

    def separate_stream(self, blocks: Iterable[Any], labels: Any = None, *,
                        segment_frames: int | None = None) -> Iterator[np.ndarray]:
        """Separate a long mixture given block by block, in bounded memory.

        The mixture's features are computed chunk by chunk
        (:meth:`decomp.audio.Spectrogram.stream`), the network runs on the inference
        chunks of :meth:`transform` (the same chunks and batches, with the slot
        alignment's state carried from chunk to chunk), and the masked STFT is inverted
        segment by segment, each with more than a window of context on both sides. Only
        a segment, a batch of chunks and their margins are held at a time, so memory
        does not grow with the recording, and the concatenated output equals
        :meth:`separate` of the whole mixture up to float round-off.

        Parameters
        ----------
        blocks : iterable of array-like of shape (n_block_samples,)
            Consecutive samples at ``front_end_.sample_rate`` (e.g. a
            :class:`decomp.audio.AudioStream`).
        labels : sequence of classes, optional
            As in :meth:`separate`, for one mixture.
        segment_frames : int, optional
            Hops of samples per output segment (default 2048).

        Yields
        ------
        sources : ndarray of shape (n_slots, n_segment_samples), float32
            Consecutive segments of the separated sources.
        """
        check_is_fitted(self, "network_state_")
        if segment_frames is not None:
            segment_frames = _positive_int(segment_frames, "segment_frames")
        front_end = self.front_end_
        hop = front_end.hop_length
        label_index = self._label_indices(labels, 1)
        audio_blocks, feature_blocks = itertools.tee(_checked_blocks(blocks))
        outputs = self._stream_outputs(
            front_end.stream(feature_blocks, chunk_frames=self.chunk_frames), label_index)
        buffered: list[torch.Tensor] = []
        buffer_start, buffer_end, is_mask = 0, 0, False  # global frames held

        def separate_segment(samples: np.ndarray, first: int) -> np.ndarray:
            nonlocal buffered, buffer_start, buffer_end, is_mask
            first_frame = first // hop
            stop_frame = first_frame + front_end.n_frames(samples.size)
            while buffer_end < stop_frame:
                values, is_mask = next(outputs)
                buffered.append(values)
                buffer_end += values.shape[1]
            held = torch.cat(buffered, dim=1)[:, first_frame - buffer_start:]
            buffered, buffer_start = [held], first_frame  # earlier frames are done
            values = held[:, :stop_frame - first_frame]
            if is_mask:
                return front_end.separate(samples, masks=values.numpy())
            return front_end.separate(samples, values.numpy())

        yield from _stream_segments(audio_blocks, separate_segment, front_end, segment_frames)

    def separate_file(self, path: str | Path,
                      out_paths: Sequence[str | Path] | Callable[[int], Sequence[str | Path]],
                      labels: Any = None, *, segment_frames: int | None = None,
                      block_frames: int = 65536) -> list[Path]:
        """Separate an audio file into one file per source, streaming (bounded memory).

        The file is read block by block (:class:`decomp.audio.AudioStream`, resampled to
        ``front_end_.sample_rate``), separated by :meth:`separate_stream` and written
        incrementally; every stem is written atomically and an error leaves none of them.

        Parameters
        ----------
        path : path-like
            The mixture.
        out_paths : sequence of path-like, or callable
            One path per output source, or a function of the number of sources that
            returns them. WAV files are written as 32-bit float.
        labels : sequence of classes, optional
            As in :meth:`separate`.
        segment_frames, block_frames : int
            Output segment size (hops) and file frames read per block.

        Returns
        -------
        paths : list of Path
            The written stems.
        """
        from decomp.audio.io import AudioStream

        front_end = self.front_end_
        stream = AudioStream(path, front_end.sample_rate, block_frames=block_frames)
        return _write_stems(self.separate_stream(stream, labels, segment_frames=segment_frames),
                            out_paths, front_end.sample_rate)

    def set_params(self, **params: Any) -> AmortizedSeparator:
        """Set parameters; the network is rebuilt from them at the next inference."""
        self._network = None
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags


# ---------------------------------------------------------------------- data helpers
def _check_source_spectrograms(sources: Any, owner: str) -> Any:
    if isinstance(sources, torch.Tensor):
        value = sources
    else:
        value = np.asarray(sources)
    if value.ndim != 4:
        raise ValueError(f"sources must have shape (n_items, n_sources, n_frames, n_bins) for "
                         f"spectrogram mixtures; got an array of shape {tuple(value.shape)}.")
    flat = value.reshape(-1, *value.shape[2:]) if value.shape[0] * value.shape[1] else value
    check_spectrogram(flat, name="sources", owner=owner)
    return value


def _encode_labels(labels: np.ndarray | None, present: torch.Tensor
                   ) -> tuple[np.ndarray | None, torch.Tensor | None]:
    """Labels -> (sorted classes, (N, S) int64 class indices with -1 for unused slots)."""
    if labels is None:
        return None, None
    unused = np.zeros(labels.shape, dtype=bool)
    if labels.dtype.kind in "US":
        unused = labels == ""
    elif labels.dtype.kind in "iu":
        unused = labels < 0
    elif labels.dtype.kind == "O":
        unused = np.vectorize(lambda value: value in ("", None), otypes=[bool])(labels)
    classes = np.unique(labels[~unused])
    if classes.size == 0:
        raise ValueError("labels mark every source as unused.")
    index = np.full(labels.shape, -1, dtype=np.int64)
    index[~unused] = np.searchsorted(classes, labels[~unused])
    silent_labelled = (~unused) & ~present.numpy()
    index[silent_labelled] = -1  # a labelled but silent stem is absent
    return classes, torch.as_tensor(index)


def _drop_empty_slots(sources: torch.Tensor, present: torch.Tensor,
                      label_index: torch.Tensor | None, n_slots: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Move each item's present sources to the front and keep the first ``n_slots``."""
    if int(present.sum(dim=1).max()) > n_slots:
        raise ValueError(f"a mixture has {int(present.sum(dim=1).max())} sources but the model "
                         f"has {n_slots} slots.")
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :n_slots]
    sources = torch.gather(sources, 1, order[:, :, None, None].expand(-1, -1, *sources.shape[2:]))
    present = torch.gather(present, 1, order)
    if label_index is not None:
        label_index = torch.gather(label_index, 1, order)
    return sources, present, label_index


def _batch_dict(mixture: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
                labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    batch = {"mixture": mixture, "sources": sources, "present": present}
    if labels is not None:
        batch["labels"] = labels
    return batch


def _random_crops(mixtures: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
                  label_index: torch.Tensor | None, items: np.ndarray, chunk: int,
                  rng: np.random.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """One random ``chunk``-frame crop of each item (zero-padded if the item is shorter)."""
    n_frames = mixtures.shape[1]
    if n_frames < chunk:
        pad = chunk - n_frames
        mixture = torch.nn.functional.pad(mixtures[items], (0, 0, 0, pad))
        source = torch.nn.functional.pad(sources[items], (0, 0, 0, pad))
    else:
        starts = rng.integers(0, n_frames - chunk + 1, size=items.size)
        frames = torch.as_tensor(starts[:, None] + np.arange(chunk))  # (B, chunk)
        index = torch.as_tensor(items)
        mixture = mixtures[index[:, None], frames]
        source = sources[index[:, None, None], torch.arange(sources.shape[1])[None, :, None],
                         frames[:, None, :]]
    labels = None if label_index is None else label_index[items].to(device)
    # A source silent within its crop is absent from that crop.
    crop_present = (source.flatten(2).amax(dim=2) > 0) & present[items]
    if labels is not None:
        labels = torch.where(crop_present.to(device), labels, -1)
    return _batch_dict(mixture.to(device), source.to(device), crop_present.to(device), labels)


def _tile_chunks(mixtures: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
                 label_index: torch.Tensor | None, items: np.ndarray, chunk: int
                 ) -> dict[str, torch.Tensor]:
    """Every non-overlapping ``chunk``-frame tile of the items (the last one zero-padded)."""
    n_frames = mixtures.shape[1]
    n_chunks = -(-n_frames // chunk)
    pad = n_chunks * chunk - n_frames
    index = torch.as_tensor(items)
    mixture = torch.nn.functional.pad(mixtures[index], (0, 0, 0, pad))
    source = torch.nn.functional.pad(sources[index], (0, 0, 0, pad))
    mixture = mixture.unflatten(1, (n_chunks, chunk)).flatten(0, 1)
    source = source.unflatten(2, (n_chunks, chunk)).transpose(1, 2).flatten(0, 1)
    crop_present = (source.flatten(2).amax(dim=2) > 0) & \
        present[index].repeat_interleave(n_chunks, dim=0)
    labels = None
    if label_index is not None:
        labels = torch.where(crop_present, label_index[index].repeat_interleave(n_chunks, 0), -1)
    return _batch_dict(mixture, source, crop_present, labels)

