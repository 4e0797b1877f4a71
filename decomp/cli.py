"""The ``decomp`` command line: ``decomp transcribe``, ``decomp separate``, ``decomp demo``.

Also run as ``python -m decomp``. The library reports through :mod:`logging` (loggers
under ``"decomp"``); this module is the one place that prints, and ``-v``/``-q`` set the
level of what it shows.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decomp.exceptions import DecompError

__all__ = ["main", "build_parser"]

logger = logging.getLogger(__name__)

_DEVICES = ("auto", "cpu", "cuda")

_SAFETY = (
    "Before any work, the command refuses (exit status 2, one line on stderr) a batch in "
    "which two inputs would write the same output (for example s.ogg and sub/s.wav: "
    "rename one or run them separately), an output that would overwrite an input, a "
    "--reference or --model file, and an --out that is a file or cannot be written. "
    "Every error is one line 'error: <file>: <cause>'; --debug shows the traceback."
)


class _Refusal(Exception):
    """A check failed: ``main`` prints ``error: <message>`` and exits with ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _argument_type(convert: Callable[[str], Any], accept: Callable[[Any], bool],
                   expected: str, name: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert`` the text, refuse what ``accept`` rejects."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


_positive_int = _argument_type(int, lambda value: value >= 1, "an integer >= 1",
                               "positive integer")
_positive_float = _argument_type(float, lambda value: math.isfinite(value) and value > 0,
                                 "a number > 0", "positive number")
_ratio = _argument_type(float, lambda value: 0 < value <= 1, "a number in (0, 1]", "ratio")
_seconds = _argument_type(float, lambda value: math.isfinite(value) and value >= 0,
                          "seconds >= 0", "seconds")
_midi_number = _argument_type(int, lambda value: 0 <= value <= 127,
                              "a MIDI number from 0 to 127", "MIDI number")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _describe(error: BaseException, file: str | os.PathLike | None = None) -> str:
    """One line for ``error``: its message, with its type when it is an unexpected one.

    ``OSError`` gives its file (unless that is ``file``, which the caller names) and its
    ``strerror``; decomp's own errors, ``ValueError`` and other ``OSError`` give the first
    line of their message; anything else gives ``<ExceptionType>: <first line>``.
    """
    if isinstance(error, OSError) and error.strerror:
        filename = error.filename
        if filename is not None and (file is None or str(filename) != str(file)):
            return f"{filename}: {error.strerror}"
        return error.strerror
    message = _first_line(str(error))
    if isinstance(error, (DecompError, ValueError, OSError)) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _report_failure(file: str, error: Exception, debug: bool) -> None:
    """Print one line for a file that failed (the traceback too with --debug)."""
    if debug:
        traceback.print_exc()
    print(f"error: {file}: {_describe(error, file)}", file=sys.stderr)


def _check_output_directory(out: Path) -> None:
    """Refuse an --out that is a file, lies under a file, or cannot be written.

    Nothing is created: the nearest existing folder must allow creating entries.
    """
    if out.exists() and not out.is_dir():
        raise _Refusal(f"{out}: --out exists and is not a folder.")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _Refusal(f"{out}: cannot create the output folder: {existing} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "the output folder is" if existing == out else f"cannot create it: {existing} is"
        raise _Refusal(f"{out}: {what} not writable.")


def _make_output_directory(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _Refusal(f"{out}: cannot create the output folder: {_describe(error, out)}") \
            from None


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _check_outputs(
    outputs: Sequence[tuple[str, Sequence[Path]]],
    protected: Iterable[tuple[str, Path]],
    overwrites: Callable[[Path], str | None] | None = None,
) -> None:
    """Refuse a batch whose outputs collide or would overwrite a file that it reads.

    Parameters
    ----------
    outputs : sequence of (input, output paths)
        One entry per input argument: the files it will write.
    protected : iterable of (description, path)
        Files the batch reads (inputs, references, the model), described for the message.
    overwrites : callable, optional
        For outputs known only by pattern (separated stems without --labels): given a
        protected path, the input that would overwrite it, or None.
    """
    guarded: dict[Path, str] = {}
    guarded_files: dict[tuple[int, int], str] = {}
    for description, path in protected:
        guarded.setdefault(path.resolve(), description)
        key = _file_key(path)
        if key is not None:
            guarded_files.setdefault(key, description)
        writer = overwrites(path) if overwrites is not None else None
        if writer is not None:
            raise _Refusal(f"{writer}: an output would overwrite {description}; choose "
                           "another --out.")
    claimed: dict[Path, int] = {}
    for index, (source, paths) in enumerate(outputs):
        for output in paths:
            resolved = output.resolve()
            previous = claimed.setdefault(resolved, index)
            if previous != index:
                other = outputs[previous][0]
                if Path(other).resolve() == Path(source).resolve():
                    raise _Refusal(f"{source}: given twice; give each input once.")
                raise _Refusal(f"{other} and {source} would both write {output}; rename one "
                               "or run them separately.")
            victim = guarded.get(resolved)
            if victim is None and output.exists():
                victim = guarded_files.get(_file_key(output))  # a hard link, another spelling
            if victim is not None:
                raise _Refusal(f"{source}: its output {output} would overwrite {victim}; "
                               "choose another --out.")


def _add_output_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """--debug, -v/--verbose and -q/--quiet, accepted before or after the command.

    On a command they default to "not given" (SUPPRESS), so that one given before the
    command is not reset by the command's parser.
    """
    unset = {} if top_level else {"default": argparse.SUPPRESS}
    parser.add_argument("--debug", action="store_true",
                        **({"default": False} if top_level else unset),
                        help="show the traceback of an error instead of one line")
    parser.add_argument("-v", "--verbose", action="count", **({"default": 0} if top_level
                                                               else unset),
                        help="show more: -v adds the library's debug messages (logging "
                        "level DEBUG)")
    parser.add_argument("-q", "--quiet", action="count", **({"default": 0} if top_level
                                                             else unset),
                        help="show less: -q shows only errors (no status lines, warnings or "
                        "progress bars)")


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=_DEVICES, default="auto",
                        help="where to compute: auto (a CUDA GPU when one is available, "
                        "else the CPU; the default), cpu, or cuda (refused when no GPU is "
                        "visible)")


def build_parser() -> argparse.ArgumentParser:
    from decomp._version import __version__
    from decomp.pretrained import SHIPPED_SEPARATORS

    parser = argparse.ArgumentParser(
        prog="decomp",
        description="Probabilistic decomposition of audio: NMF, normalizing-flow "
        "dictionaries, amortized separators. Also runs as `python -m decomp`.",
    )
    parser.add_argument("--version", action="version", version=f"decomp {__version__}")
    _add_output_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    transcribe = commands.add_parser(
        "transcribe", help="transcribe piano recordings to MIDI",
        description="Transcribe piano recordings (WAV/FLAC) to MIDI. Writes <name>.mid and "
        "<name>.npz (times, pitches, activations, roll) per input into --out; the shipped "
        "models need neither FluidSynth nor a SoundFont. " + _SAFETY
        + " <name>.mid beside an input counts as its ground truth and is never overwritten.",
    )
    transcribe.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG)")
    transcribe.add_argument("--method", choices=["nmf", "bayes-nmf", "dds1", "dds2", "dds3"],
                            default="nmf",
                            help="the shipped transcriber to use: nmf (the default, "
                            "piano-nmf), bayes-nmf (Bayesian NMF on the nmf dictionary: "
                            "notes whose posterior probability of sounding reaches 0.5), "
                            "or a DDS one (dds2, dds3; dds1 searches the dds2 flows frame by "
                            "frame)")
    transcribe.add_argument("--model", help="a saved PianoTranscriber (.decomp), or a shipped "
                            "one by name: piano-nmf, piano-dds2, piano-dds3 (overrides "
                            "--method)")
    transcribe.add_argument("--out", required=True, help="output directory")
    _add_device_option(transcribe)
    notes = transcribe.add_argument_group(
        "note decisions", "Override the model's own settings (see PianoTranscriber). A note "
        "starts where the pitch's smoothed activity, divided by the recording's largest, "
        "reaches --threshold, and lasts while it stays at or above --threshold x "
        "--sustain-ratio.")
    notes.add_argument("--threshold", type=_positive_float, default=None, metavar="LEVEL",
                       help="onset level on the normalised activity (> 0; the model's "
                       "chosen threshold_ by default, e.g. 0.18 for piano-nmf): lower finds "
                       "more notes, higher fewer")
    notes.add_argument("--sustain-ratio", type=_ratio, default=None, metavar="RATIO",
                       help="a started note continues down to threshold x RATIO, in (0, 1]; "
                       "1 is a single threshold (piano-nmf: 0.7)")
    notes.add_argument("--min-note-length", type=_seconds, default=None, metavar="SECONDS",
                       help="drop notes shorter than this, converted to frames of the front "
                       "end's hop (32 ms for piano-nmf) and rounded, at least one frame "
                       "(default: the model's min_note_frames, 2 frames)")
    notes.add_argument("--pitch-range", type=_midi_number, nargs=2, default=None,
                       metavar=("LOW", "HIGH"),
                       help="keep only pitches LOW..HIGH (MIDI numbers, inclusive; 60 is "
                       "middle C) in every output; the models know 36-95")
    outputs = transcribe.add_argument_group("extra outputs")
    outputs.add_argument("--save-notes", action="store_true",
                         help="also write <name>.csv: one note per line, columns onset_s, "
                         "offset_s (seconds), pitch (MIDI number), velocity (1-127)")
    outputs.add_argument("--sonify", action="store_true",
                         help="also write <name>-sonified.wav: the transcribed notes as sine "
                         "tones (pretty_midi's synthesizer; needs no FluidSynth) at the "
                         "model's sample rate, as long as the recording")
    outputs.add_argument("--plot", action="store_true",
                         help="also write <name>.png of activity over the ground truth, "
                         "when <name>.mid lies beside the audio or --reference is given")
    outputs.add_argument("--reference", action="append", default=None, metavar="MIDI",
                         help="ground-truth MIDI file for --plot; repeat it once per audio "
                         "file, in the same order (--reference a.mid --reference b.mid)")
    transcribe.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_output_options(transcribe)

    separate = commands.add_parser(
        "separate", help="separate recordings into sources with a trained separator",
        description="Separate audio files with a shipped separator (--model "
        f"{' or '.join(SHIPPED_SEPARATORS)}) or a saved one (AudioSlots, BlockVAE, MHUNet, "
        "SoundOfPixels or NMFSeparator; see benchmarks/separation_table.py --save-dir). "
        "Writes <name>-<k>.wav per source (or <name>-<label>.wav with --labels) into "
        "--out, at the model's sample rate; an input at another rate is resampled to it, "
        "with one warning line. " + _SAFETY,
    )
    separate.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG)")
    separate.add_argument("--model", required=True,
                          help="a shipped separator by name ("
                          f"{', '.join(SHIPPED_SEPARATORS)}; see decomp.pretrained) or the "
                          "path of a saved separator (.decomp)")
    separate.add_argument("--out", required=True, help="output directory")
    separate.add_argument("--labels", nargs="+", default=None,
                          help="classes to extract, for models that take labels "
                          "(SoundOfPixels, MHUNet trained with labels, NMFSeparator)")
    _add_device_option(separate)
    separate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_output_options(separate)

    demo = commands.add_parser(
        "demo", help="render a piece with a held-out SoundFont and transcribe it",
        description="Renders a short test piece with the held-out SoundFont (needs "
        "FluidSynth), loads the shipped default NMF and DDS-3 transcribers, transcribes the "
        "piece with both, prints frame P/R/F1, note F1, PSA and sparsity side by side, and "
        "writes WAV, MIDI and PNG.",
    )
    demo.add_argument("--out", default="demo-output", help="output directory")
    demo.add_argument("--bars", type=_positive_int, default=8,
                      help="length of the piece in bars (>= 1)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the piece")
    demo.add_argument("--methods", nargs="+", default=["nmf", "dds3"],
                      choices=["nmf", "dds1", "dds2", "dds3"],
                      help="transcribers to compare (default: nmf dds3)")
    _add_output_options(demo)
    return parser


def _a(name: str) -> str:
    from decomp.pretrained import _with_article

    return _with_article(name)


def _model_file(model: str) -> Path:
    """The file a --model argument stands for (a shipped name or a path), not yet read.

    An unknown name is refused before any work (one line naming the shipped models).
    """
    from decomp.pretrained import pretrained_file

    try:
        return pretrained_file(model)
    except ValueError as error:
        raise _Refusal(str(error)) from None


def _load_model(path: str, debug: bool) -> object:
    """Load a --model (a shipped name or a path) with ``decomp.pretrained``; any failure
    becomes a one-line refusal."""
    from decomp.exceptions import ModelFileError
    from decomp.pretrained import pretrained

    try:
        return pretrained(path)
    except Exception as error:  # a crafted file may fail in ways load does not foresee
        if debug:
            raise
        cause = error.reason if isinstance(error, ModelFileError) else _describe(error, path)
        raise _Refusal(f"{path}: {cause}") from None


def _check_device(device: str) -> None:
    """Refuse --device cuda where no GPU is visible, before any work (one line)."""
    from decomp._backend import resolve_device

    try:
        resolve_device(device, name="--device")
    except ValueError as error:
        raise _Refusal(_first_line(str(error)).replace("The '--device' parameter", "--device")
                       ) from None


def _set_device(model: Any, device: str) -> None:
    """Set ``device`` on ``model`` and on the fitted estimators it holds (``decomposer_``,
    ``model_``): every decomp estimator resolves its ``device`` when it computes."""
    seen: set[int] = set()

    def visit(estimator: Any) -> None:
        if id(estimator) in seen or not hasattr(estimator, "get_params"):
            return
        seen.add(id(estimator))
        if "device" in estimator.get_params(deep=False):
            estimator.set_params(device=device)
        for name, value in list(vars(estimator).items()):
            if name.endswith("_") and not name.startswith("_"):
                visit(value)

    visit(model)


def _note_settings(transcriber: Any, args: argparse.Namespace, name: str) -> None:
    """Apply --threshold, --sustain-ratio and --min-note-length to a PianoTranscriber."""
    from decomp.transcription import PianoTranscriber

    given = [option for option, value in (("--threshold", args.threshold),
                                          ("--sustain-ratio", args.sustain_ratio),
                                          ("--min-note-length", args.min_note_length),
                                          ("--pitch-range", args.pitch_range))
             if value is not None]
    if not given:
        return
    if not isinstance(transcriber, PianoTranscriber):
        raise _Refusal(f"{name}: {', '.join(given)} need a PianoTranscriber; it holds "
                       f"{_a(type(transcriber).__name__)}.")
    if args.threshold is not None:
        transcriber.set_params(threshold=args.threshold)
        transcriber.threshold_ = args.threshold
    if args.sustain_ratio is not None:
        transcriber.set_params(sustain_ratio=args.sustain_ratio)
    if args.min_note_length is not None:
        front_end = transcriber._front_end()
        hop_seconds = front_end.hop_length / front_end.sample_rate
        frames = max(1, round(args.min_note_length / hop_seconds))
        transcriber.set_params(min_note_frames=frames)
        logger.info("--min-note-length %g s: notes of at least %d frame(s) of %.1f ms",
                    args.min_note_length, frames, 1000 * hop_seconds)
    if args.pitch_range is not None:
        low, high = args.pitch_range
        known = np.asarray(transcriber.pitches_)
        if not np.any((known >= low) & (known <= high)):
            raise _Refusal(f"--pitch-range {low} {high} holds none of the pitches {name} "
                           f"knows ({known.min()}-{known.max()}).")


def _keep_pitches(transcription: Any, pitch_range: Sequence[int] | None) -> Any:
    """``transcription`` without the pitches outside ``pitch_range`` (columns and notes)."""
    import copy
    import dataclasses

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


def _write_notes(path: Path, midi: Any) -> None:
    """Write the notes of ``midi`` as CSV (onset_s, offset_s, pitch, velocity), atomically."""
    from decomp._files import atomic_write

    notes = sorted((note.start, note.end, note.pitch, note.velocity)
                   for instrument in midi.instruments for note in instrument.notes)
    with atomic_write(path, "w") as file:
        file.write("onset_s,offset_s,pitch,velocity\n")
        for start, end, pitch, velocity in notes:
            file.write(f"{start:.6f},{end:.6f},{pitch},{velocity}\n")


def _write_sonified(path: Path, midi: Any, sample_rate: int, duration: float) -> None:
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


def _transcribe(args: argparse.Namespace) -> int:
    import pretty_midi
    from tqdm import tqdm

    from decomp.transcription import PianoTranscriber, default_transcriber
    from decomp.transcription.plotting import plot_transcription

    debug = getattr(args, "debug", False)
    if args.reference is not None and len(args.reference) != len(args.audio):
        raise _Refusal(f"--reference needs one MIDI file per audio file ({len(args.audio)}), "
                       f"given once each in the same order; got {len(args.reference)}.")
    if args.pitch_range is not None and args.pitch_range[0] > args.pitch_range[1]:
        raise _Refusal(f"--pitch-range LOW HIGH needs LOW <= HIGH; got {args.pitch_range[0]} "
                       f"{args.pitch_range[1]}.")
    # Every check below runs before a model is loaded or fitted.
    _check_device(args.device)
    out = Path(args.out)
    suffixes = [".mid", ".npz"]
    suffixes += [".png"] if args.plot else []
    suffixes += [".csv"] if args.save_notes else []
    suffixes += ["-sonified.wav"] if args.sonify else []
    outputs = [(audio, [out / f"{Path(audio).stem}{suffix}" for suffix in suffixes])
               for audio in args.audio]
    protected = [(f"the input {audio}", Path(audio)) for audio in args.audio]
    truths = [(audio, Path(audio).with_suffix(".mid")) for audio in args.audio
              if Path(audio).name not in ("", ".", "..")]
    protected += [(f"the ground truth {truth} beside {audio}", truth)
                  for audio, truth in truths if truth.is_file()]
    protected += [(f"the --reference file {reference}", Path(reference))
                  for reference in args.reference or []]
    if args.model:
        protected.append((f"the --model file {args.model}", _model_file(args.model)))
    _check_outputs(outputs, protected)
    _check_output_directory(out)
    if args.model:
        transcriber = _load_model(args.model, debug)
        if not (isinstance(transcriber, PianoTranscriber) or hasattr(transcriber, "transcribe")):
            raise _Refusal(f"{args.model}: holds {_a(type(transcriber).__name__)}, not a piano "
                           "transcriber (use `decomp separate` for separators).")
        name = args.model
    else:
        logger.info("loading the shipped %s transcriber …", args.method)
        transcriber = default_transcriber(args.method)
        name = f"the {args.method} transcriber"
    _note_settings(transcriber, args, name)
    _set_device(transcriber, args.device)
    front_end = transcriber._front_end() if isinstance(transcriber, PianoTranscriber) else None
    sample_rate = front_end.sample_rate if front_end is not None else 16000
    _make_output_directory(out)
    failures = 0
    for index, audio in enumerate(tqdm(args.audio, desc="transcribing", unit="file",
                                       disable=args.no_progress)):
        path = Path(audio)
        try:
            transcription = _keep_pitches(transcriber.transcribe(path), args.pitch_range)
            transcription.save(out, path.stem)
            if args.save_notes:
                _write_notes(out / f"{path.stem}.csv", transcription.midi)
            if args.sonify:
                times = transcription.times
                hop = float(times[1] - times[0]) if len(times) > 1 else 0.0
                duration = float(times[-1]) + hop if len(times) else 0.0
                _write_sonified(out / f"{path.stem}-sonified.wav", transcription.midi,
                                sample_rate, duration)
            if args.plot:
                reference = Path(args.reference[index]) if args.reference else (
                    path.with_suffix(".mid"))
                roll = None
                if reference.exists():
                    from decomp.audio import midi_to_roll

                    roll = midi_to_roll(pretty_midi.PrettyMIDI(str(reference)),
                                        transcription.times, transcription.pitches)
                plot_transcription(transcription, out / f"{path.stem}.png", reference_roll=roll,
                                   title=path.name)
        except Exception as error:  # one bad file must not stop the others
            failures += 1
            _report_failure(audio, error, debug)
    if failures:
        print(f"{failures} of {len(args.audio)} file(s) failed.", file=sys.stderr)
    return 1 if failures else 0


def _announce_resampling(path: Path, sample_rate: int) -> str | None:
    """Warn (once) when ``path`` is not at the model's rate; the warning's text, or None.

    Reads only the file's header. The caller filters the library's own copy of the
    warning (the same text) while it separates the file.
    """
    from decomp.audio.io import AudioStream, resampling_message
    from decomp.exceptions import AudioWarning

    file_rate = AudioStream(path, sample_rate).file_sample_rate
    if file_rate == sample_rate:
        return None
    message = resampling_message(path, file_rate, sample_rate)
    warnings.warn(message, AudioWarning, stacklevel=2)
    return message


def _separate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    debug = getattr(args, "debug", False)
    # Every check below runs before the model is loaded. Without --labels the number of
    # stems is known only from the model: <stem>-<k>.wav stands for all of them.
    out = Path(args.out)
    names = args.labels or ["<k>"]
    outputs = [(audio, [out / f"{Path(audio).stem}-{name}.wav" for name in names])
               for audio in args.audio]
    protected = [(f"the input {audio}", Path(audio)) for audio in args.audio]
    protected.append((f"the --model file {args.model}", _model_file(args.model)))
    writers = {Path(audio).stem: audio for audio in args.audio}
    resolved_out = out.resolve()

    def overwrites(path: Path) -> str | None:
        match = re.fullmatch(r"(.*)-\d+\.wav", path.name)
        if args.labels or match is None or path.parent.resolve() != resolved_out:
            return None
        return writers.get(match.group(1))

    _check_outputs(outputs, protected, overwrites)
    _check_output_directory(out)
    _check_device(args.device)
    separator = _load_model(args.model, debug)
    if not (hasattr(separator, "separate") and hasattr(separator, "front_end_")):
        raise _Refusal(f"{args.model}: holds {_a(type(separator).__name__)}, not a separator "
                       "(use `decomp transcribe --model` for transcribers).")
    _set_device(separator, args.device)
    sample_rate = separator.front_end_.sample_rate
    _make_output_directory(out)
    failures = 0
    for audio in tqdm(args.audio, desc="separating", unit="file", disable=args.no_progress):
        path = Path(audio)
        try:
            resampled = _announce_resampling(path, sample_rate)
            with warnings.catch_warnings():
                if resampled is not None:  # told once: not again by the library
                    warnings.filterwarnings("ignore", message=re.escape(resampled))
                _separate_one(separator, path, out, args.labels, sample_rate)
        except Exception as error:  # one bad file must not stop the others
            failures += 1
            _report_failure(audio, error, debug)
    if failures:
        print(f"{failures} of {len(args.audio)} file(s) failed.", file=sys.stderr)
    return 1 if failures else 0


def _separate_one(separator: Any, path: Path, out: Path, labels: Sequence[str] | None,
                  sample_rate: int) -> None:
    """Separate one file into ``out/<stem>-<k or label>.wav``."""
    from decomp.audio import load_audio, write_audio

    if hasattr(separator, "separate_file"):
        # Streamed: read, separated and written segment by segment (bounded memory);
        # every stem is written atomically, a failure leaves none.
        def stem_paths(n_sources: int) -> list[Path]:
            names = labels or [str(index) for index in range(n_sources)]
            return [out / f"{path.stem}-{name}.wav" for name in names]

        separator.separate_file(path, stem_paths, labels)
        return
    mixture, _ = load_audio(path, sample_rate)
    sources = separator.separate(mixture, labels)  # (n_sources, n_samples)
    names = labels or [str(index) for index in range(len(sources))]
    for name, source in zip(names, sources, strict=True):
        write_audio(out / f"{path.stem}-{name}.wav", source, sample_rate)


def _demo(args: argparse.Namespace) -> int:
    from decomp._files import write_atomically
    from decomp.audio import write_audio
    from decomp.data import DEFAULT_PROTOCOL
    from decomp.transcription import default_transcriber, evaluate_transcriber
    from decomp.transcription.plotting import plot_transcription

    out = Path(args.out)
    _check_output_directory(out)
    protocol = DEFAULT_PROTOCOL
    started = time.perf_counter()
    logger.info("rendering a %d-bar test piece with the held-out SoundFont %r …", args.bars,
                protocol.test_soundfont)
    piece = protocol.test_piece(random_state=args.seed, n_bars=args.bars)
    _make_output_directory(out)
    write_audio(out / "piece.wav", piece.audio, piece.sample_rate)
    write_atomically(out / "piece-reference.mid", piece.midi.write)
    rows = []
    for method in args.methods:
        logger.info("loading the %s transcriber (training fonts: %s) …", method.upper(),
                    ", ".join(protocol.train_soundfonts))
        transcriber = default_transcriber(method, protocol=protocol)
        logger.info("transcribing with %s …", method)
        scores = evaluate_transcriber(transcriber, piece)
        transcription = scores.transcription
        transcription.save(out, f"piece-{method}")
        plot_transcription(transcription, out / f"piece-{method}.png",
                           reference_roll=scores.reference_roll,
                           title=f"{method.upper()} transcription, held-out font "
                           f"{protocol.test_soundfont}")
        rows.append((method, scores))
    print(f"\npiece: {piece.duration:.1f} s, {len(transcription.pitches)} pitches, held-out "
          f"font {protocol.test_soundfont!r}")
    print("precision, recall, F1: frames; onset-F1: notes with the right pitch and onset "
          "(±50 ms); on+off-F1: and offset")
    print(f"{'method':<8}{'precision':>10}{'recall':>8}{'F1':>7}{'onset-F1':>10}"
          f"{'on+off-F1':>11}{'PSA':>7}{'ε-sparsity':>12}{'RTF':>7}")
    for method, scores in rows:
        print(f"{method:<8}{scores.precision:>10.3f}{scores.recall:>8.3f}{scores.f1:>7.3f}"
              f"{scores.note_onset_f1:>10.3f}{scores.note_onset_offset_f1:>11.3f}"
              f"{scores.psa:>7.3f}{scores.sparsity:>12.3f}{scores.real_time_factor:>7.3f}")
    names = ", ".join(f"piece-{method}.mid/.npz/.png" for method, _ in rows)
    print(f"wrote {out}/piece.wav, piece-reference.mid, {names} "
          f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """One line per warning, through logging (so -q hides it), without the source line."""
    logger.warning("%s", _first_line(str(message)) or category.__name__)


class _StderrHandler(logging.Handler):
    """Write log records to the *current* ``sys.stderr``: ``warning: <message>`` (one line
    per record; ``info`` records as they are)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno != logging.INFO:
                message = f"{record.levelname.lower()}: {message}"
            print(message, file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def _log_level(args: argparse.Namespace) -> int:
    """INFO by default (status lines, warnings); -v: DEBUG; -q: ERROR (errors only)."""
    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    return logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.ERROR


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, audio files allowed between options.

    argparse takes one run of positionals for ``audio``; later ones (``--reference
    a.mid a.wav --reference b.mid b.wav``) come back unrecognised and are appended to it,
    in order. Unknown options are still refused.
    """
    args, extras = parser.parse_known_args(argv)
    unknown = [extra for extra in extras if extra.startswith("-") and extra != "-"]
    if unknown or (extras and not hasattr(args, "audio")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extras)}")
    if extras:
        args.audio = [*args.audio, *extras]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = _parse(parser, argv)
    commands = {"transcribe": _transcribe, "separate": _separate, "demo": _demo}
    if args.command not in commands:
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False)
    level = _log_level(args)
    if level > logging.INFO and hasattr(args, "no_progress"):
        args.no_progress = True  # -q: no progress bars either
    library = logging.getLogger("decomp")
    handler = _StderrHandler()
    saved = library.level, library.propagate
    library.addHandler(handler)
    library.setLevel(level)
    library.propagate = False  # shown once, by this handler
    try:
        with warnings.catch_warnings():
            if not debug:  # one line per warning, without Python's source-line echo
                warnings.showwarning = _show_warning
            return commands[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except _Refusal as refusal:  # a check that failed before (or instead of) any work
        print(f"error: {refusal}", file=sys.stderr)
        return refusal.status
    except (DecompError, OSError) as error:  # e.g. FluidSynth missing, the disk full
        if debug:
            raise
        print(f"error: {_describe(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        print(f"error: {_describe(error)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        library.removeHandler(handler)
        library.setLevel(saved[0])
        library.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
