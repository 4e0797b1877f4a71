"""The ``decomp`` command line: ``decomp transcribe``, ``decomp separate``, ``decomp demo``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from decomp._version import __version__

    parser = argparse.ArgumentParser(
        prog="decomp",
        description="Probabilistic decomposition of audio: NMF, normalizing-flow "
        "dictionaries, amortized separators.",
    )
    parser.add_argument("--version", action="version", version=f"decomp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    transcribe = commands.add_parser(
        "transcribe", help="transcribe piano recordings to MIDI",
        description="Transcribe piano recordings (WAV/FLAC) to MIDI. Writes <name>.mid and "
        "<name>.npz (times, pitches, activations, roll) per input into --out.",
    )
    transcribe.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG)")
    transcribe.add_argument("--method", choices=["nmf", "dds1", "dds2", "dds3"], default="nmf",
                            help="decomposition method of the default model: nmf (fitted "
                            "and cached on first use) or a shipped DDS model (default: nmf)")
    transcribe.add_argument("--model", help="a saved PianoTranscriber (overrides --method)")
    transcribe.add_argument("--out", required=True, help="output directory")
    transcribe.add_argument("--plot", action="store_true",
                            help="also write <name>.png of activity over the ground truth, "
                            "when <name>.mid lies beside the audio or --reference is given")
    transcribe.add_argument("--reference", nargs="*", default=None,
                            help="ground-truth MIDI files, one per audio file, for --plot")
    transcribe.add_argument("--no-progress", action="store_true", help="hide progress bars")

    separate = commands.add_parser(
        "separate", help="separate recordings into sources with a trained separator",
        description="Separate audio files with a saved separator (AudioSlots, BlockVAE, "
        "MHUNet, SoundOfPixels or NMFSeparator; see benchmarks/separation_table.py "
        "--save-dir). Writes <name>-<k>.wav per source (or <name>-<label>.wav with "
        "--labels) into --out, at the model's sample rate.",
    )
    separate.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG)")
    separate.add_argument("--model", required=True, help="a saved separator (.decomp)")
    separate.add_argument("--out", required=True, help="output directory")
    separate.add_argument("--labels", nargs="+", default=None,
                          help="classes to extract, for models that take labels "
                          "(SoundOfPixels, MHUNet trained with labels, NMFSeparator)")
    separate.add_argument("--no-progress", action="store_true", help="hide progress bars")

    demo = commands.add_parser(
        "demo", help="render a piece with a held-out SoundFont and transcribe it",
        description="Renders a short test piece with the held-out SoundFont, fits (or loads "
        "from the cache) the default NMF transcriber on the training fonts, loads the "
        "shipped DDS-3 transcriber, transcribes the piece with both, prints frame P/R/F1, "
        "PSA and sparsity side by side, and writes WAV, MIDI and PNG.",
    )
    demo.add_argument("--out", default="demo-output", help="output directory")
    demo.add_argument("--bars", type=int, default=8, help="length of the piece in bars")
    demo.add_argument("--seed", type=int, default=0, help="seed of the piece")
    demo.add_argument("--methods", nargs="+", default=["nmf", "dds3"],
                      choices=["nmf", "dds1", "dds2", "dds3"],
                      help="transcribers to compare (default: nmf dds3)")
    return parser


def _transcribe(args: argparse.Namespace) -> int:
    import pretty_midi
    from tqdm import tqdm

    from decomp.persistence import load
    from decomp.transcription import default_transcriber
    from decomp.transcription.plotting import plot_transcription

    if args.reference is not None and len(args.reference) != len(args.audio):
        print(f"error: --reference needs one MIDI file per audio file ({len(args.audio)}); got "
              f"{len(args.reference)}.", file=sys.stderr)
        return 2
    try:
        if args.model:
            transcriber = load(args.model)
        else:
            print(f"loading the default {args.method} transcriber (trained and cached on "
                  "first use) …", file=sys.stderr)
            transcriber = default_transcriber(args.method)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
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
            print(f"error: {audio}: {error}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(args.audio)} file(s) failed.", file=sys.stderr)
    return 1 if failures else 0


def _separate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from decomp.audio import load_audio, write_audio
    from decomp.persistence import load

    try:
        separator = load(args.model)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not (hasattr(separator, "separate") and hasattr(separator, "front_end_")):
        print(f"error: {args.model} holds a {type(separator).__name__}, not a separator.",
              file=sys.stderr)
        return 2
    sample_rate = separator.front_end_.sample_rate
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for audio in tqdm(args.audio, desc="separating", unit="file", disable=args.no_progress):
        path = Path(audio)
        try:
            mixture, _ = load_audio(path, sample_rate)
            sources = separator.separate(mixture, args.labels)  # (n_sources, n_samples)
            names = args.labels or [str(index) for index in range(len(sources))]
            for name, source in zip(names, sources, strict=True):
                write_audio(out / f"{path.stem}-{name}.wav", source, sample_rate)
        except Exception as error:  # one bad file must not stop the others
            failures += 1
            print(f"error: {audio}: {error}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(args.audio)} file(s) failed.", file=sys.stderr)
    return 1 if failures else 0


def _demo(args: argparse.Namespace) -> int:
    from decomp.audio import write_audio
    from decomp.data import DEFAULT_PROTOCOL
    from decomp.transcription import default_transcriber, evaluate_transcriber
    from decomp.transcription.plotting import plot_transcription

    out = Path(args.out)
    protocol = DEFAULT_PROTOCOL
    started = time.perf_counter()
    print(f"rendering a {args.bars}-bar test piece with the held-out SoundFont "
          f"{protocol.test_soundfont!r} …")
    piece = protocol.test_piece(random_state=args.seed, n_bars=args.bars)
    out.mkdir(parents=True, exist_ok=True)
    write_audio(out / "piece.wav", piece.audio, piece.sample_rate)
    piece.midi.write(str(out / "piece-reference.mid"))
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
    print(f"{'method':<8}{'precision':>10}{'recall':>8}{'F1':>7}{'PSA':>7}"
          f"{'ε-sparsity':>12}{'RTF':>7}")
    for method, scores in rows:
        print(f"{method:<8}{scores.precision:>10.3f}{scores.recall:>8.3f}{scores.f1:>7.3f}"
              f"{scores.psa:>7.3f}{scores.sparsity:>12.3f}{scores.real_time_factor:>7.3f}")
    names = ", ".join(f"piece-{method}.mid/.npz/.png" for method, _ in rows)
    print(f"wrote {out}/piece.wav, piece-reference.mid, {names} "
          f"({time.perf_counter() - started:.0f} s in all)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "transcribe":
        return _transcribe(args)
    if args.command == "separate":
        return _separate(args)
    if args.command == "demo":
        return _demo(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
