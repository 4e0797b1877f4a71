"""The ``decomp`` command line: ``decomp transcribe``, ``decomp separate``, ``decomp demo``."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from decomp.exceptions import DecompError

__all__ = ["main", "build_parser"]

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    from decomp._version import __version__
    from decomp.pretrained import SHIPPED_SEPARATORS

    parser = argparse.ArgumentParser(
        prog="decomp",
        description="Probabilistic decomposition of audio: NMF, normalizing-flow "
        "dictionaries, amortized separators.",
    )
    parser.add_argument("--version", action="version", version=f"decomp {__version__}")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    transcribe = commands.add_parser(
        "transcribe", help="transcribe piano recordings to MIDI",
        description="Transcribe piano recordings (WAV/FLAC) to MIDI. Writes <name>.mid and "
        "<name>.npz (times, pitches, activations, roll) per input into --out. " + _SAFETY
        + " <name>.mid beside an input counts as its ground truth and is never overwritten.",
    )
    transcribe.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG)")
    transcribe.add_argument("--method", choices=["nmf", "dds1", "dds2", "dds3"], default="nmf",
                            help="decomposition method of the default model: nmf (fitted "
                            "and cached on first use) or a shipped DDS model (default: nmf)")
    transcribe.add_argument("--model", help="a saved PianoTranscriber (.decomp), or a shipped "
                            "one by name: piano-dds2, piano-dds3 (overrides --method)")
    transcribe.add_argument("--out", required=True, help="output directory")
    transcribe.add_argument("--plot", action="store_true",
                            help="also write <name>.png of activity over the ground truth, "
                            "when <name>.mid lies beside the audio or --reference is given")
    transcribe.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks instead of one-line errors")
    transcribe.add_argument("--reference", nargs="*", default=None,
                            help="ground-truth MIDI files, one per audio file, for --plot")
    transcribe.add_argument("--no-progress", action="store_true", help="hide progress bars")

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
    separate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    separate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show tracebacks instead of one-line errors")

    demo = commands.add_parser(
        "demo", help="render a piece with a held-out SoundFont and transcribe it",
        description="Renders a short test piece with the held-out SoundFont, fits (or loads "
        "from the cache) the default NMF transcriber on the training fonts, loads the "
        "shipped DDS-3 transcriber, transcribes the piece with both, prints frame P/R/F1, "
        "PSA and sparsity side by side, and writes WAV, MIDI and PNG.",
    )
    demo.add_argument("--out", default="demo-output", help="output directory")
    demo.add_argument("--bars", type=_positive_int, default=8,
                      help="length of the piece in bars (>= 1)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the piece")
    demo.add_argument("--methods", nargs="+", default=["nmf", "dds3"],
                      choices=["nmf", "dds1", "dds2", "dds3"],
                      help="transcribers to compare (default: nmf dds3)")
    demo.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                      help="show the traceback of an error instead of one line")
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


def _transcribe(args: argparse.Namespace) -> int:
    import pretty_midi
    from tqdm import tqdm

    from decomp.transcription import PianoTranscriber, default_transcriber
    from decomp.transcription.plotting import plot_transcription

    debug = getattr(args, "debug", False)
    if args.reference is not None and len(args.reference) != len(args.audio):
        raise _Refusal(f"--reference needs one MIDI file per audio file ({len(args.audio)}); "
                       f"got {len(args.reference)}.")
    # Every check below runs before a model is loaded or fitted.
    out = Path(args.out)
    extensions = (".mid", ".npz", ".png") if args.plot else (".mid", ".npz")
    outputs = [(audio, [out / f"{Path(audio).stem}{extension}" for extension in extensions])
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
    else:
        print(f"loading the default {args.method} transcriber (trained and cached on "
              "first use) …", file=sys.stderr)
        transcriber = default_transcriber(args.method)
    _make_output_directory(out)
    failures = 0
    for index, audio in enumerate(tqdm(args.audio, desc="transcribing", unit="file",
                                       disable=args.no_progress)):
        path = Path(audio)
        try:
            transcription = transcriber.transcribe(path)
            transcription.save(out, path.stem)
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
    separator = _load_model(args.model, debug)
    if not (hasattr(separator, "separate") and hasattr(separator, "front_end_")):
        raise _Refusal(f"{args.model}: holds {_a(type(separator).__name__)}, not a separator "
                       "(use `decomp transcribe --model` for transcribers).")
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
    print(f"rendering a {args.bars}-bar test piece with the held-out SoundFont "
          f"{protocol.test_soundfont!r} …")
    piece = protocol.test_piece(random_state=args.seed, n_bars=args.bars)
    _make_output_directory(out)
    write_audio(out / "piece.wav", piece.audio, piece.sample_rate)
    write_atomically(out / "piece-reference.mid", piece.midi.write)
    rows = []
    for method in args.methods:
        if method == "nmf":
            print(f"loading the default NMF transcriber (training fonts: "
                  f"{', '.join(protocol.train_soundfonts)}; fitted once, then cached) …")
        else:
            print(f"loading the shipped {method.upper()} transcriber …")
        transcriber = default_transcriber(method, protocol=protocol)
        print(f"transcribing with {method} …")
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
    first = _first_line(str(message)) or category.__name__
    print(f"warning: {first}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"transcribe": _transcribe, "separate": _separate, "demo": _demo}
    if args.command not in commands:
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False)
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


if __name__ == "__main__":
    sys.exit(main())
