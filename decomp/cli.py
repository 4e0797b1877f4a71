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
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from decomp.exceptions import DecompError, describe_error

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
_fraction = _argument_type(float, lambda value: 0 <= value < 1, "a number in [0, 1)",
                           "fraction")
_seconds = _argument_type(float, lambda value: math.isfinite(value) and value >= 0,
                          "seconds >= 0", "seconds")
_midi_number = _argument_type(int, lambda value: 0 <= value <= 127,
                              "a MIDI number from 0 to 127", "MIDI number")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


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
        raise _Refusal(f"{out}: cannot create the output folder: {describe_error(error, out)}") \
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


def _add_corpus_options(parser: argparse.ArgumentParser) -> None:
    corpus = parser.add_argument_group(
        "corpus runs", "AUDIO may be files, folders (searched recursively for .wav, .flac, "
        ".ogg, .oga, .aif, .aiff) and glob patterns (quote them: 'dir/**/*.wav'). Every run "
        "keeps DIR/manifest.jsonl (per input: path, outputs, settings hash, status, "
        "seconds, error); running the same command again skips the inputs done with the "
        "same settings and retries the failed ones.")
    corpus.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="files processed in parallel: 1 (the default) works in this "
                        "process; more start a local Ray with N CPUs, one model per worker "
                        "(needs `pip install ray`)")
    corpus.add_argument("--address", default=None,
                        help="join this Ray cluster instead of a local one (e.g. auto, "
                        "ray://head:10001); RAY_ADDRESS works too, with --jobs > 1")
    corpus.add_argument("--force", action="store_true",
                        help="redo every input, even those done before with the same "
                        "settings")


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
    transcribe.add_argument("audio", nargs="+",
                            help="audio files, folders or glob patterns (WAV, FLAC, OGG, AIFF)")
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
    transcribe.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                            help="torch threads per transcription (default 1, which keeps "
                            "runs side by side from slowing each other down; give the "
                            "number of cores when one run has the machine to itself)")
    notes = transcribe.add_argument_group(
        "note decisions", "Override the model's own settings (see PianoTranscriber). A note "
        "starts where the pitch's smoothed activity, divided by the recording's largest "
        "(or by the quantile a model's normalization names), "
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
    _add_corpus_options(transcribe)
    _add_output_options(transcribe)

    separate = commands.add_parser(
        "separate", help="separate recordings into sources with a trained separator",
        description="Separate audio files with a shipped separator (--model "
        f"{' or '.join(SHIPPED_SEPARATORS)}) or a saved one (AudioSlots, BlockVAE, MHUNet, "
        "SoundOfPixels, NMFSeparator or SeparatorEnsemble; see "
        "benchmarks/separation_table.py --save-dir). "
        "Writes <name>-<k>.wav per source (or <name>-<label>.wav with --labels) into "
        "--out, at the model's sample rate; an input at another rate is resampled to it, "
        "with one warning line. " + _SAFETY,
    )
    separate.add_argument("audio", nargs="+",
                          help="audio files, folders or glob patterns (WAV, FLAC, OGG, AIFF)")
    separate.add_argument("--model", required=True,
                          help="a shipped separator by name ("
                          f"{', '.join(SHIPPED_SEPARATORS)}; see decomp.pretrained) or the "
                          "path of a saved separator (.decomp)")
    separate.add_argument("--out", required=True, help="output directory")
    separate.add_argument("--labels", nargs="+", default=None,
                          help="classes to extract, for models that take labels "
                          "(SoundOfPixels, MHUNet trained with labels, NMFSeparator)")
    separate.add_argument("--overlap", type=_fraction, default=None, metavar="FRACTION",
                          help="share of each inference window that the next one repeats, "
                          "in [0, 1): 0 runs consecutive windows in about half the time, "
                          "a little less accurately (default: the model's "
                          "inference_overlap: 0.625 for the shipped 'instruments-slots', also "
                          "in the ensembles 'instruments' and 'instruments-ensemble', 0.5 "
                          "for the other shipped separators; an ensemble gives it to its "
                          "members that run in windows)")
    separate.add_argument("--sources", type=_positive_int, default=None, metavar="N",
                          help="how many sources every input holds, for a separator that "
                          "counts them (instruments, instruments-slots, instruments-count, "
                          "instruments-ensemble): N stems sound, the "
                          "others are silent (default: it counts them itself)")
    separate.add_argument("--refine", type=_positive_int, default=None, metavar="PASSES",
                          help="on an AudioSlots separator (instruments-slots, or an "
                          "ensemble's such as instruments): that many passes that subtract "
                          "one separated source and separate the rest again, one separation "
                          "more each, with "
                          "--sources 3 or more, or without --sources where it counts three "
                          "or more (2, told 3: +0.34 dB SI-SDRi on held-out trios, in about "
                          "three times the time)")
    _add_device_option(separate)
    separate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_corpus_options(separate)
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


def _model_file(model: str) -> Path:
    """The file a --model argument stands for (a shipped name or a path), not yet read.

    An unknown name is refused before any work (one line naming the shipped models).
    """
    from decomp.pretrained import pretrained_file

    try:
        return pretrained_file(model)
    except ValueError as error:
        raise _Refusal(str(error)) from None


def _check_device(device: str) -> None:
    """Refuse --device cuda where no GPU is visible, before any work (one line)."""
    from decomp._backend import resolve_device

    try:
        resolve_device(device, name="--device")
    except ValueError as error:
        raise _Refusal(_first_line(str(error)).replace("The '--device' parameter", "--device")
                       ) from None


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The audio files named by the arguments (files, folders, patterns), or a refusal."""
    from decomp.batch import find_audio

    try:
        return find_audio(args.audio)
    except FileNotFoundError as error:
        raise _Refusal(str(error)) from None


def _run_batch(job: Any, inputs: Sequence[Path], out: Path, args: argparse.Namespace) -> int:
    """Load the model here (a bad one is refused before any work), run the batch, report.

    Each failure is reported as it happens (``error: <file>: <why>``); the summary names
    the manifest; the exit status is 1 when any input failed.
    """
    from decomp import batch
    from decomp.exceptions import ModelFileError

    debug = getattr(args, "debug", False)
    try:
        batch.preload(job)
    except (ValueError, ModelFileError, FileNotFoundError) as error:
        if debug:
            raise
        reason = error.reason if isinstance(error, ModelFileError) else describe_error(error)
        model = getattr(job, "model", None)
        if model and not reason.startswith(f"{model}:"):
            reason = f"{model}: {reason}"
        raise _Refusal(reason) from None
    _make_output_directory(out)

    def report(record: dict[str, Any]) -> None:
        for message in record.get("warnings", []):
            logger.warning("%s", _first_line(message))  # through logging: -q hides it
        if record["status"] != "done":
            if debug and record.get("traceback"):
                print(record["traceback"], file=sys.stderr, end="")
            print(f"error: {record['path']}: {record['error']}", file=sys.stderr)

    try:
        result = batch.run(job, inputs, out, jobs=args.jobs, address=args.address,
                           force=args.force, progress=not args.no_progress, on_record=report)
    except ImportError as error:
        raise _Refusal(str(error)) from None
    if result.failed:
        print(result.summary(), file=sys.stderr)
    elif result.skipped or len(inputs) > 1:
        logger.info("%s", result.summary())  # a status line: -q hides it
    return 1 if result.failed else 0


def _transcribe(args: argparse.Namespace) -> int:
    from decomp.batch import MANIFEST_NAME, TranscriptionJob

    inputs = _inputs(args)
    if args.reference is not None and len(args.reference) != len(inputs):
        raise _Refusal(f"--reference needs one MIDI file per audio file ({len(inputs)}), "
                       f"given once each in the same order; got {len(args.reference)}.")
    if args.pitch_range is not None and args.pitch_range[0] > args.pitch_range[1]:
        raise _Refusal(f"--pitch-range LOW HIGH needs LOW <= HIGH; got {args.pitch_range[0]} "
                       f"{args.pitch_range[1]}.")
    # Every check below runs before a model is loaded or fitted.
    _check_device(args.device)
    out = Path(args.out)
    references = tuple(zip((os.fspath(path) for path in inputs), args.reference or (),
                           strict=False))
    job = TranscriptionJob(
        method=args.method, model=args.model, threshold=args.threshold,
        sustain_ratio=args.sustain_ratio, min_note_length=args.min_note_length,
        pitch_range=tuple(args.pitch_range) if args.pitch_range else None,
        save_notes=args.save_notes, sonify=args.sonify, plot=args.plot,
        references=references, device=args.device, threads=args.threads)
    outputs = [(os.fspath(path), job.outputs(path, out)) for path in inputs]
    protected = [(f"the input {path}", path) for path in inputs]
    truths = [(path, path.with_suffix(".mid")) for path in inputs
              if path.name not in ("", ".", "..")]
    protected += [(f"the ground truth {truth} beside {path}", truth)
                  for path, truth in truths if truth.is_file()]
    protected += [(f"the --reference file {reference}", Path(reference))
                  for reference in args.reference or []]
    protected.append((f"the {MANIFEST_NAME}", out / MANIFEST_NAME))
    if args.model:
        protected.append((f"the --model file {args.model}", _model_file(args.model)))
    _check_outputs(outputs, protected)
    _check_output_directory(out)
    if args.model:
        logger.info("loading %s …", args.model)
    else:
        logger.info("loading the shipped %s transcriber …", args.method)
    return _run_batch(job, inputs, out, args)


def _separate(args: argparse.Namespace) -> int:
    from decomp.batch import MANIFEST_NAME, SeparationJob

    inputs = _inputs(args)
    # Every check below runs before the model is loaded. Without --labels the number of
    # stems is known only from the model: <stem>-<k>.wav stands for all of them.
    out = Path(args.out)
    names = args.labels or ["<k>"]
    outputs = [(os.fspath(path), [out / f"{path.stem}-{name}.wav" for name in names])
               for path in inputs]
    protected = [(f"the input {path}", path) for path in inputs]
    protected.append((f"the --model file {args.model}", _model_file(args.model)))
    protected.append((f"the {MANIFEST_NAME}", out / MANIFEST_NAME))
    writers = {path.stem: os.fspath(path) for path in inputs}
    resolved_out = out.resolve()

    def overwrites(path: Path) -> str | None:
        match = re.fullmatch(r"(.*)-\d+\.wav", path.name)
        if args.labels or match is None or path.parent.resolve() != resolved_out:
            return None
        return writers.get(match.group(1))

    _check_outputs(outputs, protected, overwrites)
    _check_output_directory(out)
    _check_device(args.device)
    job = SeparationJob(model=args.model, labels=tuple(args.labels) if args.labels else None,
                        device=args.device, inference_overlap=args.overlap,
                        n_sources=args.sources, refine_passes=args.refine)
    return _run_batch(job, inputs, out, args)


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
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        print(f"error: {describe_error(error)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        library.removeHandler(handler)
        library.setLevel(saved[0])
        library.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
