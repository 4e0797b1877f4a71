"""Corpus runs: many recordings in one process or on Ray, resumable through a manifest.

:func:`transcribe` and :func:`separate` take files, folders (searched recursively for
audio) and glob patterns, write their outputs into one folder, and keep an account of
every input in ``<out_dir>/manifest.jsonl`` (JSON lines, one record per processed
input: path, outputs, settings hash, status, seconds, error). Running the same call
again skips the inputs whose outputs exist for the same settings and retries the failed
ones; ``force=True`` redoes all.

``jobs=1`` (the default) works in this process, without Ray. ``jobs > 1`` starts a local
Ray with that many CPUs (nothing to start by hand), and ``address`` (or the
``RAY_ADDRESS`` environment variable, with ``jobs > 1``) joins an existing cluster. Each
input is one Ray task on one CPU with one torch thread; a worker process loads the model
once (cached by the settings) and keeps it for every later input it gets. A worker that
crashes or is killed marks its input failed, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from decomp._version import __version__
from decomp.exceptions import describe_error
from decomp.pretrained import with_article

__all__ = [
    "AUDIO_EXTENSIONS",
    "BatchResult",
    "SeparationJob",
    "TranscriptionJob",
    "find_audio",
    "preload",
    "read_manifest",
    "run",
    "separate",
    "transcribe",
]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3")
"""Extensions searched for in folders (any case); a file named explicitly is always taken."""

MANIFEST_NAME = "manifest.jsonl"


# --- inputs ------------------------------------------------------------------------------
def find_audio(specs: Iterable[str | os.PathLike], *, missing: str = "keep") -> list[Path]:
    """Expand files, folders and glob patterns into a list of audio files.

    Parameters
    ----------
    specs : iterable of str or path
        A file (taken whatever its extension), a folder (searched recursively for
        :data:`AUDIO_EXTENSIONS`, in sorted order) or a glob pattern (``*``, ``?``, ``[``;
        ``**`` spans folders; matching folders are searched as folders).
    missing : {"keep", "raise"}
        What to do with a name that is neither a file, a folder nor a pattern: keep it
        (its run then fails with the reason, like any unreadable input, and the others go
        on) or raise.

    Returns
    -------
    list of Path
        In the order given, each file once (a file reached twice is kept at its first
        place).

    Raises
    ------
    FileNotFoundError
        For a folder or a pattern that holds no audio file, and with ``missing="raise"``
        for a name that is nothing: the message names it.
    """
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    def audio_in(folder: Path) -> list[Path]:
        return sorted(path for path in folder.rglob("*")
                      if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file())

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            files = audio_in(path)
            if not files:
                raise FileNotFoundError(f"{text}: the folder holds no audio file "
                                        f"({', '.join(AUDIO_EXTENSIONS)}).")
        elif path.exists():
            files = [path]
        elif glob.has_magic(text):
            files = []
            for match in sorted(glob.glob(text, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    files.extend(audio_in(match_path))
                elif match_path.suffix.lower() in AUDIO_EXTENSIONS:
                    files.append(match_path)
            if not files:
                raise FileNotFoundError(f"{text}: the pattern matches no audio file.")
        elif missing == "keep":
            files = [path]
        else:
            raise FileNotFoundError(f"{text}: no such file or folder.")
        for file in files:
            add(file)
    return found


# --- jobs: what to do with one input -------------------------------------------------------
def _sonify(path: Path, midi: Any, sample_rate: int, duration: float) -> None:
    """Render ``midi`` as sine tones (pretty_midi's ``synthesize``) into a WAV file.

    As long as the recording (``duration`` seconds; pretty_midi's extra second of tail is
    cut), so it lines up with the input; scaled so that the loudest sample is at most 0.9.
    """
    from decomp.audio import write_audio

    audio = midi.synthesize(fs=sample_rate) if midi.instruments else np.zeros(0)
    length = round(duration * sample_rate)
    audio = np.pad(audio[:length], (0, max(0, length - len(audio))))
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.9:
        audio = audio * (0.9 / peak)
    write_audio(path, audio.astype(np.float32), sample_rate)


def _write_notes(path: Path, midi: Any) -> None:
    """Write the notes of ``midi`` as CSV (onset_s, offset_s, pitch, velocity), atomically."""
    from decomp._files import atomic_write

    notes = sorted((note.start, note.end, note.pitch, note.velocity)
                   for instrument in midi.instruments for note in instrument.notes)
    with atomic_write(path, "w") as file:
        file.write("onset_s,offset_s,pitch,velocity\n")
        for start, end, pitch, velocity in notes:
            file.write(f"{start:.6f},{end:.6f},{pitch},{velocity}\n")


def keep_pitches(transcription: Any, pitch_range: Sequence[int] | None) -> Any:
    """``transcription`` without the pitches outside ``pitch_range`` (columns and notes)."""
    import copy

    if pitch_range is None:
        return transcription
    low, high = pitch_range
    keep = (transcription.pitches >= low) & (transcription.pitches <= high)
    midi = copy.deepcopy(transcription.midi)
    for instrument in midi.instruments:
        instrument.notes = [note for note in instrument.notes if low <= note.pitch <= high]
    return dataclasses.replace(transcription, pitches=transcription.pitches[keep],
                               activations=transcription.activations[:, keep],
                               roll=transcription.roll[:, keep], midi=midi)


def _model_identity(model: str | None) -> str:
    """What identifies a model in the settings hash: a file's content, or a shipped name."""
    if model is None:
        return "none"
    path = Path(model)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return f"file:{digest.hexdigest()}"
    return f"shipped:{model}"


@dataclasses.dataclass(frozen=True)
class TranscriptionJob:
    """Transcribe piano recordings: ``<stem>.mid`` and ``<stem>.npz`` per input, and more.

    Parameters
    ----------
    method : str
        A shipped transcriber (:func:`decomp.transcription.default_transcriber`).
    model : str, optional
        A saved transcriber (path) or a shipped one by name; overrides ``method``.
    threshold, sustain_ratio : float, optional
        Override the transcriber's note threshold and hysteresis.
    min_note_length : float, optional
        Shortest note kept, in seconds.
    pitch_range : (int, int), optional
        Keep only MIDI pitches in ``[low, high]``.
    save_notes, sonify, plot : bool
        Also write ``<stem>.csv`` (onset_s, offset_s, pitch, velocity),
        ``<stem>-sonified.wav`` and ``<stem>.png`` (with the ground truth when a
        ``references`` entry or a ``<stem>.mid`` beside the input exists).
    references : tuple of (input, MIDI file) pairs
        Ground truth for the plots, by input path.
    device : str
        Where to compute.
    threads : int, optional
        Torch threads per transcription (``PianoTranscriber.n_threads``; its default is
        1). Outputs do not depend on it beyond the last bits of float sums, so it is not
        part of the settings hash.
    """

    method: str = "nmf"
    model: str | None = None
    threshold: float | None = None
    sustain_ratio: float | None = None
    min_note_length: float | None = None
    pitch_range: tuple[int, int] | None = None
    save_notes: bool = False
    sonify: bool = False
    plot: bool = False
    references: tuple[tuple[str, str], ...] = ()
    device: str = "auto"
    threads: int | None = None

    def settings(self) -> dict[str, Any]:
        """What the outputs depend on (the settings hash): not references, device, threads."""
        fields = dataclasses.asdict(self)
        fields.pop("references")
        fields.pop("device")
        fields.pop("threads")
        fields["model"] = _model_identity(self.model)
        return {"kind": "transcribe", **fields}

    def outputs(self, path: Path, out_dir: Path) -> list[Path]:
        suffixes = [".mid", ".npz"]
        suffixes += [".png"] if self.plot else []
        suffixes += [".csv"] if self.save_notes else []
        suffixes += ["-sonified.wav"] if self.sonify else []
        return [out_dir / f"{path.stem}{suffix}" for suffix in suffixes]

    def load(self) -> Any:
        """The transcriber with this job's settings applied.

        Raises
        ------
        ValueError
            For settings the model cannot take (a non-PianoTranscriber with note
            settings, a pitch range holding none of its pitches).
        """
        from decomp.pretrained import pretrained
        from decomp.transcription import PianoTranscriber, default_transcriber

        if self.model is not None:
            transcriber = pretrained(self.model)
            name = self.model
            if not (isinstance(transcriber, PianoTranscriber)
                    or hasattr(transcriber, "transcribe")):
                kind = with_article(type(transcriber).__name__)
                raise ValueError(f"{self.model}: holds {kind}, not a piano transcriber (use "
                                 "`decomp separate` for separators).")
        else:
            transcriber = default_transcriber(self.method)
            name = f"the {self.method} transcriber"
        set_device(transcriber, self.device)
        if self.threads is not None:
            if not isinstance(transcriber, PianoTranscriber):
                raise ValueError(f"{name}: threads need a PianoTranscriber; it holds "
                                 f"{with_article(type(transcriber).__name__)}.")
            transcriber.set_params(n_threads=self.threads)
        given = [option for option, value in (("threshold", self.threshold),
                                              ("sustain_ratio", self.sustain_ratio),
                                              ("min_note_length", self.min_note_length),
                                              ("pitch_range", self.pitch_range))
                 if value is not None]
        if not given:
            return transcriber
        if not isinstance(transcriber, PianoTranscriber):
            raise ValueError(f"{name}: {', '.join(given)} need a PianoTranscriber; it holds "
                             f"{with_article(type(transcriber).__name__)}.")
        if self.threshold is not None:
            transcriber.set_params(threshold=self.threshold)
            transcriber.threshold_ = self.threshold
        if self.sustain_ratio is not None:
            transcriber.set_params(sustain_ratio=self.sustain_ratio)
        if self.min_note_length is not None:
            front_end = transcriber._front_end()
            hop_seconds = front_end.hop_length / front_end.sample_rate
            frames = max(1, round(self.min_note_length / hop_seconds))
            transcriber.set_params(min_note_frames=frames)
            logger.info("min_note_length %g s: notes of at least %d frame(s) of %.1f ms",
                        self.min_note_length, frames, 1000 * hop_seconds)
        if self.pitch_range is not None:
            low, high = self.pitch_range
            known = np.asarray(transcriber.pitches_)
            if not np.any((known >= low) & (known <= high)):
                raise ValueError(f"pitch range {low}-{high} holds none of the pitches {name} "
                                 f"knows ({known.min()}-{known.max()}).")
        return transcriber

    def run(self, transcriber: Any, path: Path, out_dir: Path) -> list[Path]:
        """Transcribe ``path`` into ``out_dir``; the files written."""
        import pretty_midi

        from decomp.transcription import PianoTranscriber

        transcription = keep_pitches(transcriber.transcribe(path), self.pitch_range)
        written = list(transcription.save(out_dir, path.stem))
        if self.save_notes:
            _write_notes(out_dir / f"{path.stem}.csv", transcription.midi)
            written.append(out_dir / f"{path.stem}.csv")
        if self.sonify:
            front_end = (transcriber._front_end() if isinstance(transcriber, PianoTranscriber)
                         else None)
            sample_rate = front_end.sample_rate if front_end is not None else 16000
            times = transcription.times
            hop = float(times[1] - times[0]) if len(times) > 1 else 0.0
            duration = float(times[-1]) + hop if len(times) else 0.0
            target = out_dir / f"{path.stem}-sonified.wav"
            _sonify(target, transcription.midi, sample_rate, duration)
            written.append(target)
        if self.plot:
            from decomp.audio import midi_to_roll
            from decomp.transcription.plotting import plot_transcription

            references = dict(self.references)
            reference = Path(references.get(os.fspath(path), path.with_suffix(".mid")))
            roll = None
            if reference.exists():
                roll = midi_to_roll(pretty_midi.PrettyMIDI(str(reference)),
                                    transcription.times, transcription.pitches)
            target = out_dir / f"{path.stem}.png"
            plot_transcription(transcription, target, reference_roll=roll, title=path.name)
            written.append(target)
        return written


@dataclasses.dataclass(frozen=True)
class SeparationJob:
    """Separate recordings into stems: ``<stem>-<k or label>.wav`` per input.

    Parameters
    ----------
    model : str
        A saved separator (path) or a shipped one by name (``"instruments"``,
        ``"instruments-slots"``, ``"instruments-count"``, ``"speech"``).
    labels : tuple of str, optional
        Sources to extract (label-conditioned models) and the stems' names.
    device : str
        Where to compute.
    inference_overlap : float, optional
        Sets the separator's ``inference_overlap`` (the share of each inference window
        the next one repeats, in [0, 1)); None keeps the model's. Only separators that
        run in windows have it (AudioSlots, BlockVAE, MHUNet, SoundOfPixels), and a
        ``SeparatorEnsemble``, which gives it to those of its members.
    n_sources : int, optional
        How many sources every recording holds, for a separator that counts its sources
        (an ``MHUNet`` with ``count_sources=True``, e.g. ``"instruments-count"``, or an
        ``AudioSlots``, e.g. ``"instruments-slots"``, or a ``SeparatorEnsemble`` of them,
        e.g. ``"instruments"``): sets its ``n_sources``, so that many stems sound and
        the others are silent; an ``NMFSeparator`` (e.g. ``"instruments-nmf"``) then
        separates that many instruments, chosen blind. None keeps the model's setting
        (the shipped ones: every output; ``"instruments-count"`` counts the sources).
    refine_passes : int, optional
        Sets an ``AudioSlots``' (or an ensemble's) ``refine_passes`` (with ``n_sources`` of
        3 or more: that many passes that subtract one separated source and separate the
        rest again; each costs one more separation, of the file a segment at a time). None
        keeps the model's (the shipped ``"instruments-slots"``: 0, ``"instruments"``: 2,
        blind).
    """

    model: str
    labels: tuple[str, ...] | None = None
    device: str = "auto"
    inference_overlap: float | None = None
    n_sources: int | None = None
    refine_passes: int | None = None

    def settings(self) -> dict[str, Any]:
        settings = {"kind": "separate", "model": _model_identity(self.model),
                    "labels": list(self.labels) if self.labels else None}
        if self.inference_overlap is not None:
            # Only when set, so that runs without it keep their manifests' fingerprints.
            settings["inference_overlap"] = float(self.inference_overlap)
        if self.n_sources is not None:
            settings["n_sources"] = int(self.n_sources)
        if self.refine_passes is not None:
            settings["refine_passes"] = int(self.refine_passes)
        return settings

    def outputs(self, path: Path, out_dir: Path) -> list[Path]:
        """The stems, when ``labels`` name them; otherwise known after the run."""
        if self.labels:
            return [out_dir / f"{path.stem}-{label}.wav" for label in self.labels]
        return []

    def load(self) -> Any:
        from decomp.pretrained import pretrained

        separator = pretrained(self.model)
        if not (hasattr(separator, "separate") and hasattr(separator, "front_end_")):
            kind = with_article(type(separator).__name__)
            raise ValueError(f"{self.model}: holds {kind}, not a separator (use `decomp "
                             "transcribe --model` for transcribers).")
        if self.inference_overlap is not None:
            if "inference_overlap" not in separator.get_params(deep=False):
                kind = with_article(type(separator).__name__)
                raise ValueError(f"{self.model}: holds {kind}, which does not run in "
                                 "inference windows, so an overlap does not apply (it does "
                                 "to AudioSlots, BlockVAE, MHUNet, SoundOfPixels and "
                                 "ensembles of them).")
            separator.set_params(inference_overlap=float(self.inference_overlap))
            separator._validate_params()  # the separator's own constraint on the value
        if self.n_sources is not None:
            if "n_sources" not in separator.get_params(deep=False):
                kind = with_article(type(separator).__name__)
                raise ValueError(f"{self.model}: holds {kind}, which does not count its "
                                 "sources, so a number of sources does not apply (it does to "
                                 "AudioSlots, such as 'instruments-slots', to an MHUNet trained "
                                 "with count_sources=True, such as 'instruments-count', and "
                                 "to an NMFSeparator, such as 'instruments-nmf').")
            separator.set_params(n_sources=int(self.n_sources))
            separator._validate_params()
            try:
                separator._check_n_sources()  # the model's own rule, before any file
            except ValueError as error:
                raise ValueError(f"{self.model}: {error}") from None
        if self.refine_passes is not None:
            if "refine_passes" not in separator.get_params(deep=False):
                kind = with_article(type(separator).__name__)
                raise ValueError(f"{self.model}: holds {kind}, which has no refinement "
                                 "passes (AudioSlots, such as 'instruments-slots', has them).")
            separator.set_params(refine_passes=int(self.refine_passes))
            try:
                separator._validate_params()
                separator._check_refine_passes()
            except ValueError as error:
                raise ValueError(f"{self.model}: {error}") from None
        set_device(separator, self.device)
        return separator

    def run(self, separator: Any, path: Path, out_dir: Path) -> list[Path]:
        """Separate ``path`` into ``out_dir``; the stems written."""
        from decomp.audio import load_audio, write_audio

        labels = list(self.labels) if self.labels else None
        sample_rate = separator.front_end_.sample_rate
        written: list[Path] = []

        def stem_paths(n_sources: int) -> list[Path]:
            names = labels or [str(index) for index in range(n_sources)]
            written[:] = [out_dir / f"{path.stem}-{name}.wav" for name in names]
            return list(written)

        if hasattr(separator, "separate_file"):
            # Streamed: read, separated and written segment by segment (bounded memory);
            # every stem is written atomically, a failure leaves none.
            separator.separate_file(path, stem_paths, labels)
            return written
        mixture, _ = load_audio(path, sample_rate)
        sources = separator.separate(mixture, labels)  # (n_sources, n_samples)
        for target, source in zip(stem_paths(len(sources)), sources, strict=True):
            write_audio(target, source, sample_rate)
        return written


Job = TranscriptionJob | SeparationJob


def set_device(model: Any, device: str) -> None:
    """Set ``device`` on ``model`` and on the fitted estimators it holds (``decomposer_``,
    ``model_``, an ensemble's ``separators_``): every decomp estimator resolves its
    ``device`` when it computes."""
    seen: set[int] = set()

    def visit(estimator: Any) -> None:
        if isinstance(estimator, (list, tuple)):  # an ensemble's members
            for item in estimator:
                visit(item)
            return
        if id(estimator) in seen or not hasattr(estimator, "get_params"):
            return
        seen.add(id(estimator))
        if "device" in estimator.get_params(deep=False):
            estimator.set_params(device=device)
        for name, value in list(vars(estimator).items()):
            if name.endswith("_") and not name.startswith("_"):
                visit(value)

    visit(model)


def settings_hash(job: Job) -> str:
    """A short hash of everything the outputs depend on, with the library version."""
    text = json.dumps({"decomp": __version__, **job.settings()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- one input, in whichever process ----------------------------------------------------------
_LOADED: dict[tuple, Any] = {}
"""Models loaded in this process, by settings hash and the loading options outside it
(device, threads): a worker loads its model once."""


def _cached_model(job: Job, key: str) -> tuple[Any, bool]:
    """``job``'s model for settings ``key``, loaded in this process at most once, and
    whether this call loaded it (one model at a time per process)."""
    # Device and threads change how the model is loaded, not what it writes, so they
    # are outside the settings hash but part of what makes a loaded model reusable.
    loading = (key, getattr(job, "device", None), getattr(job, "threads", None))
    model = _LOADED.get(loading)
    if model is not None:
        return model, False
    _LOADED.clear()
    model = _LOADED[loading] = job.load()
    return model, True


def preload(job: Job) -> Any:
    """Load ``job``'s model in this process, as :func:`process` would, and keep it.

    A command line calls it first, so that a bad model is refused before any input is
    touched; an in-process run then uses this copy.

    Raises
    ------
    ValueError, ModelFileError, FileNotFoundError
        What loading the model raises.
    """
    return _cached_model(job, settings_hash(job))[0]


def _peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def process(job: Job, path: str, out_dir: str, key: str) -> dict[str, Any]:
    """Run ``job`` on one input; the manifest record (never raises for a bad input).

    The model is loaded once per process and settings (``key``); a failure to load it
    fails this input like any other error.
    """
    started = time.perf_counter()
    record: dict[str, Any] = {"input": path, "outputs": [], "settings": key,
                              "status": "failed", "seconds": 0.0, "error": None,
                              "warnings": [], "pid": os.getpid()}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # True for the first input of this process (and settings).
            model, record["loaded_model"] = _cached_model(job, key)
            written = job.run(model, Path(path), Path(out_dir))
        record["outputs"] = [os.fspath(output) for output in written]
        record["warnings"] = sorted({str(warning.message) for warning in caught})
        record["status"] = "done"
    except Exception as error:  # one bad file must not stop the others
        record["error"] = describe_error(error, path)
        record["traceback"] = traceback.format_exc()
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["peak_memory_mb"] = round(_peak_memory_mb(), 1)
    return record


# --- the manifest ----------------------------------------------------------------------------
def read_manifest(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The latest record of each input in ``out_dir/manifest.jsonl`` (empty if none).

    A line that cannot be read (e.g. cut by a crash while it was written) is skipped
    with a warning; the records before and after it count.
    """
    path = Path(out_dir) / MANIFEST_NAME
    latest: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return latest
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                latest[record["input"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                warnings.warn(f"{path}: line {number} is not a manifest record; skipped.",
                              RuntimeWarning, stacklevel=2)
    return latest


class _ManifestWriter:
    """Appends records to the manifest, each line flushed and synced as it is written."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST_NAME
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)

    def append(self, record: dict[str, Any]) -> None:
        stored = {key: value for key, value in record.items() if key != "traceback"}
        self.file.write(json.dumps(stored, sort_keys=True) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


@dataclasses.dataclass
class BatchResult:
    """What a run did.

    Attributes
    ----------
    records : list of dict
        This run's manifest records, in input order (skipped inputs excluded).
    skipped : list of str
        Inputs already done with the same settings (their outputs exist).
    manifest : Path
        ``out_dir/manifest.jsonl``.
    inputs : list of str
        Every input of the run (absolute, the manifest's keys), in order.
    """

    records: list[dict[str, Any]]
    skipped: list[str]
    manifest: Path
    inputs: list[str] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(record["status"] == "done" for record in self.records)

    @property
    def failed(self) -> int:
        return sum(record["status"] != "done" for record in self.records)

    def summary(self) -> str:
        """E.g. ``"998 done, 2 failed: see out/manifest.jsonl"``."""
        parts = [f"{self.done} done"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (done before with the same settings)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        return ", ".join(parts) + f": see {self.manifest}"


def _already_done(record: dict[str, Any] | None, key: str) -> bool:
    return (record is not None and record.get("status") == "done"
            and record.get("settings") == key
            and all(Path(output).exists() for output in record.get("outputs", [])))


def _durations(paths: Sequence[Path]) -> list[float]:
    """Length of each input in seconds from its header (0 where it cannot be read)."""
    import soundfile

    lengths = []
    for path in paths:
        try:
            lengths.append(float(soundfile.info(os.fspath(path)).duration))
        except Exception:  # the run reports an unreadable file; the bar just skips it
            lengths.append(0.0)
    return lengths


def run(
    job: Job,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    jobs: int = 1,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> BatchResult:
    """Run ``job`` over ``inputs`` (files, folders, patterns) into ``out_dir``.

    Parameters
    ----------
    job : TranscriptionJob or SeparationJob
    inputs : iterable of str or path
        Expanded by :func:`find_audio`.
    out_dir : str or path
        Created if missing; holds the outputs and ``manifest.jsonl``.
    jobs : int
        Parallel workers. 1 runs here without Ray; more start a local Ray with that many
        CPUs, or use the cluster at ``address``.
    address : str, optional
        A Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        None uses ``RAY_ADDRESS`` when set and ``jobs > 1``.
    force : bool
        Redo inputs already done with the same settings.
    progress : bool
        One progress bar over the inputs, with the audio hours done.
    on_record : callable, optional
        Called with each record as it arrives (e.g. to report failures at once).

    Returns
    -------
    BatchResult

    Raises
    ------
    FileNotFoundError
        For an input that names nothing.
    ImportError
        For ``jobs > 1`` or ``address`` without Ray installed.
    """
    from tqdm import tqdm

    from decomp._validation import StrictInterval, check_params  # torch: not at import

    check_params({"jobs": [StrictInterval(Integral, 1, None, closed="left")]}, {"jobs": jobs},
                 "run")
    jobs = int(jobs)
    paths = find_audio(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = settings_hash(job)
    previous = {} if force else read_manifest(out)
    todo, skipped = [], []
    for path in paths:
        if _already_done(previous.get(os.fspath(path.resolve())), key):
            skipped.append(os.fspath(path))
        else:
            todo.append(path)
    if skipped:
        logger.info("%d input(s) done before with the same settings: skipped (force "
                    "redoes them)", len(skipped))
    lengths = _durations(todo)
    total_hours = sum(lengths) / 3600
    writer = _ManifestWriter(out)
    results: dict[int, dict[str, Any]] = {}
    done_seconds = 0.0
    bar = tqdm(total=len(todo), desc=type(job).__name__.replace("Job", "").lower() or "run",
               unit="file", disable=not progress)

    def receive(index: int, record: dict[str, Any]) -> None:
        nonlocal done_seconds
        record["input"] = os.fspath(todo[index].resolve())
        record["path"] = os.fspath(todo[index])  # as given or found
        record["duration_s"] = round(lengths[index], 3)
        results[index] = record
        writer.append(record)
        done_seconds += lengths[index]
        bar.update(1)
        bar.set_postfix_str(f"audio {done_seconds / 3600:.2f}/{total_hours:.2f} h")
        if on_record is not None:
            on_record(record)

    try:
        with bar:
            if jobs == 1 and address is None:
                for index, path in enumerate(todo):
                    receive(index, process(job, os.fspath(path), os.fspath(out), key))
            elif todo:
                for index, record in _run_on_ray(job, todo, out, key, jobs, address):
                    receive(index, record)
    finally:
        writer.close()
    return BatchResult(records=[results[index] for index in sorted(results)],
                       skipped=skipped, manifest=writer.path,
                       inputs=[os.fspath(path.resolve()) for path in paths])


def _run_on_ray(job: Job, todo: Sequence[Path], out: Path, key: str, jobs: int,
                address: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(index, record)`` as Ray tasks finish (one task per input, one CPU each)."""
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError:
        raise ImportError("running with jobs > 1 or a cluster address needs Ray: "
                          "pip install 'ray>=2.9' (or decomp-audio[ray]).") from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if address is None:
            options["num_cpus"] = jobs
        ray.init(address=address, **options)

    @ray.remote(num_cpus=1, max_retries=0)
    def task(job: Job, path: str, out_dir: str, key: str) -> dict[str, Any]:
        import torch

        # One CPU per task: one torch thread, so workers never oversubscribe the cores.
        torch.set_num_threads(1)
        return process(job, path, out_dir, key)

    try:
        pending = {task.remote(job, os.fspath(path), os.fspath(out), key): index
                   for index, path in enumerate(todo)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for reference in ready:
                index = pending.pop(reference)
                try:
                    record = ray.get(reference)
                except RayError as error:  # the worker crashed or was killed
                    record = {"input": os.fspath(todo[index]), "outputs": [],
                              "settings": key, "status": "failed", "seconds": 0.0,
                              "error": f"worker lost: {describe_error(error)}",
                              "warnings": []}
                yield index, record
    finally:
        if started_here:
            ray.shutdown()


# --- the Python entry points -----------------------------------------------------------------
def transcribe(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str = "nmf",
    model: str | None = None,
    jobs: int = 1,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Transcribe files, folders and patterns into ``out_dir``; the manifest records.

    ``options`` are those of :class:`TranscriptionJob` (``threshold``, ``sustain_ratio``,
    ``min_note_length``, ``pitch_range``, ``save_notes``, ``sonify``, ``plot``,
    ``device``). See :func:`run` for ``jobs``, ``address`` and ``force``.

    Returns
    -------
    list of dict
        The latest manifest record of every input (done now or before), in input order.
    """
    job = TranscriptionJob(method=method, model=model, **options)
    return _records(run(job, _as_list(paths), out_dir, jobs=jobs, address=address,
                        force=force, progress=progress))


def separate(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str = "instruments",
    labels: Sequence[str] | None = None,
    jobs: int = 1,
    address: str | None = None,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Separate files, folders and patterns into stems in ``out_dir``; the manifest records.

    See :class:`SeparationJob` for ``model`` and ``labels``, :func:`run` for the rest.
    """
    job = SeparationJob(model=model, labels=tuple(labels) if labels else None, device=device)
    return _records(run(job, _as_list(paths), out_dir, jobs=jobs, address=address,
                        force=force, progress=progress))


def _as_list(paths: Any) -> list[Any]:
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def _records(result: BatchResult) -> list[dict[str, Any]]:
    """The latest manifest record of each of the run's inputs (done now or before)."""
    latest = read_manifest(result.manifest.parent)
    return [latest[key] for key in result.inputs if key in latest]
