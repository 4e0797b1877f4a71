"""Training data of the amortized separators, as batches for the training loop.

Checks fixed training data (spectrograms, waveforms or a MixtureSet), encodes labels,
packs each item's present sources into the model's slots, and makes the two training
plans :meth:`~decomp.estimators.amortized.base.AmortizedSeparator.fit` hands to
:func:`decomp._training.train`: one random crop per item and epoch of fixed mixtures
(:func:`array_plan`), or fresh batches of a :class:`decomp.data.MixtureStream`
(:func:`stream_plan`), each with its fixed validation chunks and its checkpoint
fingerprint.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from decomp._validation import check_audio, check_spectrogram

if TYPE_CHECKING:
    from decomp.estimators.amortized.base import AmortizedSeparator

# Parameters that may change between a run and its resumption.
RESUMABLE_PARAMS = ("progress", "checkpoint", "max_seconds", "max_epochs", "patience",
                    "device", "learning_rate_decay", "inference_overlap",
                    "n_sources")


def as_float32(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float32), device=device)


def check_training_data(
    estimator: AmortizedSeparator, mixtures: Any, sources: Any, labels: Any
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
    """-> mixtures (N, T, F), sources (N, S, T, F) as float32 CPU tensors, labels."""
    from decomp.data.mixtures import MixtureSet

    owner = type(estimator).__name__
    if isinstance(mixtures, MixtureSet):
        if sources is not None:
            raise ValueError(f"{owner}.fit takes a MixtureSet alone or mixtures and "
                             "sources; got a MixtureSet and sources.")
        if labels is None:
            labels = mixtures.instruments
        mixtures, sources = mixtures.mixtures, mixtures.sources
    if sources is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None: "
                         "fit(mixtures, sources) needs the sources of every mixture.")
    ndim = getattr(mixtures, "ndim", np.ndim(mixtures))
    if ndim == 2:  # waveforms (n_items, n_samples)
        mixture_audio = check_audio(mixtures, name="mixtures", allow_batch=True)
        source_audio = sources if isinstance(sources, torch.Tensor) else np.asarray(sources)
        if source_audio.ndim == 3:  # the audio check takes at most (n_items, n_samples)
            check_audio(source_audio.reshape(-1, source_audio.shape[-1]), name="sources",
                         allow_batch=True)
        if source_audio.ndim != 3 or source_audio.shape[0] != mixture_audio.shape[0] \
                or source_audio.shape[-1] != mixture_audio.shape[-1]:
            raise ValueError(
                "with waveform mixtures of shape (n_items, n_samples) = "
                f"{tuple(mixture_audio.shape)}, sources must have shape (n_items, "
                f"n_sources, n_samples); got {tuple(source_audio.shape)}.")
        front_end = estimator.front_end_
        mixtures = front_end(as_float32(mixture_audio, torch.device("cpu")))
        flat = as_float32(source_audio, torch.device("cpu")).flatten(0, 1)
        sources = front_end(flat).unflatten(0, tuple(source_audio.shape[:2]))
    elif ndim == 3:
        mixtures = check_spectrogram(mixtures, name="mixtures", owner=owner)
        sources = check_source_spectrograms(sources, owner)
    else:
        raise ValueError(
            f"mixtures must be spectrograms of shape (n_items, n_frames, n_bins) or "
            f"waveforms of shape (n_items, n_samples); got an array of shape "
            f"{tuple(np.shape(mixtures))}.")
    mixtures = as_float32(mixtures, torch.device("cpu"))
    sources = as_float32(sources, torch.device("cpu"))
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
    elif estimator._requires_labels:
        raise ValueError(f"{owner}.fit needs labels: the class of every source, shape "
                         "(n_items, n_sources) ('' for an unused slot).")
    return mixtures, sources, labels


def array_plan(estimator: AmortizedSeparator, mixtures: Any, sources: Any, labels: Any,
               seed: int, device: torch.device) -> dict[str, Any]:
    """Training on fixed mixtures: an item-level split, one random crop per item."""
    mixtures, sources, labels = check_training_data(estimator, mixtures, sources, labels)
    present = sources.flatten(2).amax(dim=2) > 0  # (N, S)
    classes, label_index = encode_labels(labels, present)
    estimator._set_shapes(mixtures.shape[-1], int(present.sum(dim=1).max()), classes)
    if estimator.classes_ is None:
        label_index = None
    if sources.shape[1] > estimator.n_slots_:
        # Zero-padded source slots beyond the model's outputs are dropped (labels move
        # with their sources); a mixture with more real sources than slots is refused.
        sources, present, label_index = drop_empty_slots(sources, present, label_index,
                                                          estimator.n_slots_)
    n_items = mixtures.shape[0]
    order = np.random.default_rng(seed).permutation(n_items)
    n_validation = (0 if estimator.validation_fraction == 0 or n_items < 2
                    else min(n_items - 1, max(1, round(estimator.validation_fraction * n_items))))
    validation_items, train_items = np.sort(order[:n_validation]), np.sort(order[n_validation:])
    n_sources_per_item = present.sum(dim=1).numpy()

    def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        allowed = estimator._curriculum(epoch, estimator.max_sources_)
        items = train_items[n_sources_per_item[train_items] <= allowed]
        if items.size == 0:
            items = train_items
        epoch_rng = np.random.default_rng([seed, epoch])
        items = epoch_rng.permutation(items)
        return (random_crops(mixtures, sources, present, label_index,
                              items[start:start + estimator.batch_size],
                              estimator._training_frames,
                              epoch_rng, device)
                for start in range(0, items.size, estimator.batch_size))

    return {
        "epoch_batches": epoch_batches,
        "validation": tile_chunks(mixtures, sources, present, label_index,
                                   validation_items if n_validation else train_items,
                                   estimator._training_frames),
        "fingerprint": fixed_data_fingerprint(estimator, mixtures, sources, seed),
        "n_train": int(train_items.size), "n_validation": int(n_validation),
    }


def stream_plan(estimator: AmortizedSeparator, stream: Any, seed: int,
                device: torch.device, validation_stream: Any = None) -> dict[str, Any]:
    """Training on a MixtureStream: ``steps_per_epoch`` fresh batches per epoch.

    The validation mixtures are drawn once from ``validation_stream`` when given (e.g.
    stems of another font, for cross-font validation), else from a copy of ``stream``
    under another seed.
    """
    front_end = estimator.front_end_
    if stream.sample_rate != front_end.sample_rate:
        raise ValueError(f"the MixtureStream's sample rate ({stream.sample_rate} Hz) must "
                         f"equal the front end's ({front_end.sample_rate} Hz).")
    if validation_stream is not None:
        _check_validation_stream(validation_stream, stream, type(estimator).__name__)
    n_bins = front_end(torch.zeros(1, stream.crop_samples)).shape[-1]
    estimator._set_shapes(n_bins, stream.max_sources, np.asarray(stream.classes))
    # Models with a waveform loss train on crops of exactly one training crop (a chunk,
    # or AudioSlots' training windows), cut from the waveforms so that the crop's audio
    # and spectrogram agree.
    training_frames = estimator._training_frames
    audio_samples = (training_frames - 1) * front_end.hop_length
    if estimator._needs_audio and stream.crop_samples < audio_samples:
        lower = " or ".join(estimator._training_frames_parameters)
        raise ValueError(
            f"the MixtureStream's crops ({stream.crop_samples} samples) are shorter than "
            f"one training crop of {training_frames} frames ({audio_samples} samples at hop "
            f"{front_end.hop_length}); raise crop_samples or lower {lower}.")

    def features(examples: Any, allowed: int, rng: np.random.Generator | None
                 ) -> tuple[Any, ...]:
        """A collated batch of examples -> spectrograms, presence, class indices and,
        for a waveform loss, the waveforms (cropped at random offsets; None: at 0)."""
        n_sources = torch.as_tensor(examples.n_sources)
        keep = n_sources <= allowed
        keep = keep if bool(keep.any()) else torch.ones_like(keep)
        waveforms = torch.as_tensor(examples.mixture, dtype=torch.float32)[keep]
        source_waveforms = torch.as_tensor(examples.sources, dtype=torch.float32)[keep]
        label_index = torch.as_tensor(examples.labels)[keep]
        if estimator._needs_audio:
            free = (waveforms.shape[-1] - audio_samples) // front_end.hop_length
            starts = (np.zeros(waveforms.shape[0], dtype=np.int64) if rng is None
                      else rng.integers(0, free + 1, size=waveforms.shape[0]))
            samples = torch.as_tensor(starts[:, None] * front_end.hop_length
                                      + np.arange(audio_samples))  # (B, N)
            waveforms = torch.gather(waveforms, 1, samples)
            source_waveforms = torch.gather(
                source_waveforms, 2,
                samples[:, None].expand(-1, source_waveforms.shape[1], -1))
        present = source_waveforms.abs().amax(dim=2) > 0  # (B, S)
        label_index = torch.where(present, label_index, -1)
        if source_waveforms.shape[1] > estimator.n_slots_:
            source_waveforms, present, label_index = drop_empty_slots(
                source_waveforms, present, label_index, estimator.n_slots_)
        mixture = front_end(waveforms)  # (B, T, F)
        sources = front_end(source_waveforms.flatten(0, 1)).unflatten(
            0, tuple(source_waveforms.shape[:2]))  # (B, S, T, F)
        present = present & (sources.flatten(2).amax(dim=2) > 0)
        label_index = None if estimator.classes_ is None else torch.where(present, label_index, -1)
        audio = (waveforms, source_waveforms) if estimator._needs_audio else None
        return mixture, sources, present, label_index, audio

    def epoch_batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        allowed = estimator._curriculum(epoch, estimator.max_sources_)
        epoch_stream = copy.copy(stream)  # the caller's stream keeps its epoch
        epoch_stream.set_epoch(stream.epoch + epoch)
        # The loader's own seed comes from this generator, not from the global one.
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
        loader = torch.utils.data.DataLoader(epoch_stream, batch_size=estimator.batch_size,
                                             num_workers=estimator.num_workers,
                                             generator=generator)
        epoch_rng = np.random.default_rng([seed, epoch])
        for examples in itertools.islice(loader, estimator.steps_per_epoch):
            mixture, sources, present, label_index, audio = features(examples, allowed,
                                                                     epoch_rng)
            if audio is not None:  # already one chunk, cropped with its waveforms
                yield with_audio(batch_dict(mixture, sources, present, label_index),
                                  audio, device)
                continue
            yield random_crops(mixture, sources, present, label_index,
                                np.arange(mixture.shape[0]), training_frames, epoch_rng,
                                device)

    n_validation = 0
    if estimator.validation_fraction > 0:
        n_validation = max(1, round(estimator.validation_fraction * estimator.steps_per_epoch
                                    * estimator.batch_size))
    validation = None
    if n_validation:
        if validation_stream is not None:
            held_out = copy.copy(validation_stream)  # the caller's stream keeps its epoch
        else:
            held_out = copy.copy(stream)
            held_out.random_state = int(np.random.SeedSequence(
                [stream.random_state, 0x7E57]).generate_state(1)[0])  # another seed
        held_out.set_epoch(0)
        examples = list(itertools.islice(iter(held_out), n_validation))
        collated = torch.utils.data.default_collate(examples)
        mixture, sources, present, label_index, audio = features(
            collated, estimator.max_sources_, None)
        if audio is not None:
            validation = with_audio(batch_dict(mixture, sources, present, label_index),
                                     audio, torch.device("cpu"))
        else:
            validation = tile_chunks(mixture, sources, present, label_index,
                                      np.arange(mixture.shape[0]), training_frames)
    described: tuple = _describe_stream(stream)
    if validation_stream is not None:
        described = (described, _describe_stream(validation_stream))
    params = {key: repr(value) for key, value in estimator.get_params(deep=False).items()
              if key not in RESUMABLE_PARAMS}
    return {
        "epoch_batches": epoch_batches, "validation": validation,
        "fingerprint": {"class": type(estimator).__name__, "params": repr(sorted(params.items())),
                        "seed": seed, "stream": repr(described)},
        "n_train": estimator.steps_per_epoch * estimator.batch_size, "n_validation": n_validation,
    }


def _describe_stream(stream: Any) -> tuple:
    """What identifies a stream's mixtures, for a checkpoint's fingerprint."""
    stems_sum = sum(float(np.sum(row, dtype=np.float64)) for row in stream._stems)
    return (stream.random_state, stream.epoch, stream.classes, stream.sample_rate,
            stream.crop_samples, stream.min_sources, stream.max_sources,
            stream.level_range, stream.augmentation, len(stream._stems), stems_sum)


def fixed_data_fingerprint(estimator: AmortizedSeparator, mixtures: torch.Tensor,
                           sources: torch.Tensor, seed: int) -> dict:
    # The stream settings do not act on fixed mixtures, so they may change too.
    params = {key: repr(value) for key, value in estimator.get_params(deep=False).items()
              if key not in (*RESUMABLE_PARAMS, "steps_per_epoch", "num_workers")}
    return {
        "class": type(estimator).__name__, "params": repr(sorted(params.items())),
        "shape": list(sources.shape), "seed": seed,
        "mixture_sum": float(mixtures.double().sum()),
        "sources_sum": float(sources.double().sum()),
    }


def check_source_spectrograms(sources: Any, owner: str) -> Any:
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


def encode_labels(labels: np.ndarray | None, present: torch.Tensor
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


def drop_empty_slots(sources: torch.Tensor, present: torch.Tensor,
                      label_index: torch.Tensor | None, n_slots: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Move each item's present sources to the front and keep the first ``n_slots``."""
    if int(present.sum(dim=1).max()) > n_slots:
        raise ValueError(f"a mixture has {int(present.sum(dim=1).max())} sources but the model "
                         f"has {n_slots} slots.")
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :n_slots]
    trailing = (None,) * (sources.ndim - 2)
    sources = torch.gather(sources, 1, order[(..., *trailing)].expand(-1, -1, *sources.shape[2:]))
    present = torch.gather(present, 1, order)
    if label_index is not None:
        label_index = torch.gather(label_index, 1, order)
    return sources, present, label_index


def batch_dict(mixture: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
                labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    batch = {"mixture": mixture, "sources": sources, "present": present}
    if labels is not None:
        batch["labels"] = labels
    return batch


def with_audio(batch: dict[str, torch.Tensor], audio: tuple[torch.Tensor, torch.Tensor],
                device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` with the mixture (B, N) and source (B, S, N) waveforms."""
    batch = {key: value.to(device) for key, value in batch.items()}
    batch["mixture_audio"], batch["source_audio"] = (value.to(device) for value in audio)
    return batch


def random_crops(mixtures: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
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
    return batch_dict(mixture.to(device), source.to(device), crop_present.to(device), labels)


def tile_chunks(mixtures: torch.Tensor, sources: torch.Tensor, present: torch.Tensor,
                 label_index: torch.Tensor | None, items: np.ndarray, chunk: int
                 ) -> dict[str, torch.Tensor]:
    """The ``chunk``-frame tiles of the items that inference runs on.

    Tiles start every ``chunk`` frames and the last one ends at the last frame,
    overlapping its predecessor, as in :func:`decomp._chunks.run_in_chunks` (so a
    validation loss sees the inputs inference sees: real frames, not padding). Items
    shorter than one chunk are zero-padded.
    """
    n_frames = mixtures.shape[1]
    n_chunks = -(-n_frames // chunk)
    starts = [min(tile * chunk, max(n_frames - chunk, 0)) for tile in range(n_chunks)]
    frames = torch.as_tensor(np.add.outer(starts, np.arange(chunk)))  # (n_chunks, chunk)
    index = torch.as_tensor(items)
    pad = max(chunk - n_frames, 0)
    mixture = torch.nn.functional.pad(mixtures[index], (0, 0, 0, pad))[:, frames]
    source = torch.nn.functional.pad(sources[index], (0, 0, 0, pad))[:, :, frames]
    mixture = mixture.flatten(0, 1)  # (n_items * n_chunks, chunk, F)
    source = source.transpose(1, 2).flatten(0, 1)  # (n_items * n_chunks, S, chunk, F)
    crop_present = (source.flatten(2).amax(dim=2) > 0) & \
        present[index].repeat_interleave(n_chunks, dim=0)
    labels = None
    if label_index is not None:
        labels = torch.where(crop_present, label_index[index].repeat_interleave(n_chunks, 0), -1)
    return batch_dict(mixture, source, crop_present, labels)



def _check_validation_stream(validation: Any, stream: Any, owner: str) -> None:
    from decomp.data.stems import MixtureStream

    if not isinstance(validation, MixtureStream):
        raise TypeError(f"{owner}.fit's validation must be a decomp.data.MixtureStream; got "
                        f"{type(validation).__name__}.")
    if tuple(validation.classes) != tuple(stream.classes) \
            or validation.sample_rate != stream.sample_rate:
        raise ValueError(
            f"the validation stream must have the training stream's classes and sample rate "
            f"({list(stream.classes)} at {stream.sample_rate} Hz); got "
            f"{list(validation.classes)} at {validation.sample_rate} Hz.")
