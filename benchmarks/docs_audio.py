"""Listening examples for the documentation, made with the models shipped in the package.

Renders, with fixed seeds, inputs that no shipped model heard in training and runs the
shipped models on them:

- a mixture of 2 and one of 3 General-MIDI instruments rendered with the held-out
  SoundFont (musescore-lite), separated by ``decomp.pretrained("instruments")``;
- a two-speaker espeak-ng mixture (new sentences), separated by
  ``decomp.pretrained("speech")``;
- a piano piece rendered with the held-out SoundFont, transcribed by ``decomp transcribe
  --sonify --plot`` (the shipped NMF transcriber): the transcription as sine tones, the
  ground truth the same way, and the transcription plotted over the ground truth.

Each is the first item drawn with its seed, not a chosen one. Every separated output is
matched to the reference source it scores best against (the separators are blind and
return their sources in any order) and scored by SI-SDR improvement. Clips are mono
16 kHz Ogg Vorbis (all clips of an example scaled by one gain, so the loudest peaks at
-1 dBFS and levels compare); spectrograms are JPEG, the transcription plot PNG. Everything goes to
``docs/results/examples/`` with ``examples.json`` (seeds, files with their SHA-256,
scores, the SHA-256 of the models used); ``benchmarks/docs_results.py`` turns that into
the page ``docs/results/examples/index.md``, and ``tests/test_docs.py`` checks that the
shipped models are still the ones that made the clips.

Needs FluidSynth, the SoundFonts and espeak-ng (``make setup`` installs them) to render
the inputs; the models need neither. About a minute on one thread:

    python benchmarks/docs_audio.py && python benchmarks/docs_results.py

Ogg files carry a random stream serial number, so a clip whose decoded samples did not
change is left as it is (no change for git).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "examples"
SAMPLE_RATE = 16000
PEAK = 10 ** (-1 / 20)  # -1 dBFS
VORBIS_COMPRESSION = 0.6  # libsndfile's compression level (0: best quality, 1: smallest)
SEED = 0
SEPARATION_SECONDS = 6.0
PIANO_BARS = 3
MODELS = ("instruments", "speech", "piano-nmf")
"""The shipped models that make the examples."""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def models_dir() -> Path:
    import decomp

    return Path(decomp.__file__).resolve().parent / "models"


def model_files() -> dict[str, str]:
    """Shipped name -> file of every model whose change would change the examples: those
    of :data:`MODELS` and, for an ensemble (``instruments``), its members by name."""
    from decomp import pretrained
    from decomp.pretrained import SHIPPED_MODELS

    files = {}
    for name in MODELS:
        files[name] = SHIPPED_MODELS[name][0]
        for member in getattr(pretrained(name), "separators", ()):
            files[member] = SHIPPED_MODELS[member][0]
    return files


def write_clip(name: str, audio: np.ndarray, files: list[dict[str, Any]]) -> str:
    """Write ``audio`` as ``OUT/name`` (Ogg Vorbis) unless the file decodes to the same."""
    import soundfile

    path = OUT / name
    audio = np.asarray(audio, dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        candidate = Path(folder) / name
        soundfile.write(candidate, audio, SAMPLE_RATE, format="OGG", subtype="VORBIS",
                        compression_level=VORBIS_COMPRESSION)
        new, _ = soundfile.read(candidate, dtype="float32")
        old = soundfile.read(path, dtype="float32")[0] if path.is_file() else None
        if old is None or old.shape != new.shape or not np.array_equal(old, new):
            path.write_bytes(candidate.read_bytes())
    files.append({"file": name, "bytes": path.stat().st_size, "sha256": sha256(path)})
    return name


def write_figure(name: str, figure: Any, files: list[dict[str, Any]]) -> str:
    """Save a matplotlib figure as JPEG (spectrograms compress badly as PNG)."""
    import matplotlib.pyplot as plt

    path = OUT / name
    figure.savefig(path, dpi=90, bbox_inches="tight", pil_kwargs={"quality": 80,
                                                                  "optimize": True})
    plt.close(figure)
    files.append({"file": name, "bytes": path.stat().st_size, "sha256": sha256(path)})
    return name


def write_png(name: str, png: bytes, files: list[dict[str, Any]]) -> str:
    """Write a PNG reduced to 128 colours (a plot of a few colours loses nothing)."""
    import io

    from PIL import Image

    path = OUT / name
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(128)
    image.save(path, format="PNG", optimize=True)
    files.append({"file": name, "bytes": path.stat().st_size, "sha256": sha256(path)})
    return name


def spectrogram_figure(title: str, mixture: np.ndarray, rows: list[tuple[str, np.ndarray,
                                                                       np.ndarray]]) -> Any:
    """Log spectrograms: the mixture, then per source the reference and the estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scipy.signal

    figure, axes = plt.subplots(len(rows) + 1, 2, figsize=(9, 1.45 * (len(rows) + 1)),
                                sharex=True, sharey=True)
    top = 20 * np.log10(np.abs(mixture).max() + 1e-9) - 20

    def show(ax: Any, audio: np.ndarray, label: str) -> None:
        frequencies, times, power = scipy.signal.spectrogram(
            audio, fs=SAMPLE_RATE, window="hann", nperseg=512, noverlap=384)
        level = 10 * np.log10(np.maximum(power, 1e-20))
        ax.imshow(level, origin="lower", aspect="auto", cmap="magma", vmin=top - 80,
                  vmax=top, extent=(0, len(audio) / SAMPLE_RATE, 0, frequencies[-1]),
                  interpolation="nearest")
        ax.set_title(label, fontsize=8, loc="left")
        ax.set_ylim(0, 6000)
        ax.tick_params(labelsize=7)

    show(axes[0, 0], mixture, "mixture")
    axes[0, 1].axis("off")
    for (label, reference, estimate), (left, right) in zip(rows, axes[1:], strict=True):
        show(left, reference, f"{label} alone (reference)")
        show(right, estimate, f"{label}: separated")
    for ax in axes[:, 0]:
        ax.set_ylabel("Hz", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def separation_example(key: str, title: str, description: str, mixtures: Any, model: str,
                       files: list[dict[str, Any]]) -> dict[str, Any]:
    """Separate the first mixture of ``mixtures`` with the shipped ``model``."""
    import decomp
    from decomp.metrics import si_sdr

    mixture = mixtures.mixtures[0]
    n_sources = int(mixtures.n_sources[0])
    references = mixtures.sources[0, :n_sources]
    labels = [str(label) for label in mixtures.instruments[0, :n_sources]]
    outputs = np.asarray(decomp.pretrained(model).separate(mixture))  # (n_outputs, n)
    shape = (len(outputs), n_sources, len(mixture))
    scores = np.asarray(si_sdr(np.broadcast_to(outputs[:, None, :], shape),
                               np.broadcast_to(references[None, :, :], shape)))  # out x ref
    best = max(itertools.permutations(range(len(outputs)), n_sources),
               key=lambda chosen: sum(scores[output, source]
                                      for source, output in enumerate(chosen)))
    baseline = np.asarray(si_sdr(np.broadcast_to(mixture, references.shape), references))
    clips = [mixture, *references, *outputs]
    gain = PEAK / max(float(np.abs(clip).max()) for clip in clips)
    example: dict[str, Any] = {
        "kind": "separation", "key": key, "title": title, "description": description,
        "model": model, "seed": SEED, "seconds": round(len(mixture) / SAMPLE_RATE, 3),
        "mixture": write_clip(f"{key}-mixture.ogg", gain * mixture, files),
        "sources": [], "leftovers": []}
    rows = []
    for source, output in enumerate(best):
        label = labels[source]
        example["sources"].append({
            "label": label,
            "reference": write_clip(f"{key}-{source + 1}-reference.ogg",
                                    gain * references[source], files),
            "estimate": write_clip(f"{key}-{source + 1}-separated.ogg", gain * outputs[output],
                                   files),
            "output": int(output),
            "si_sdr": round(float(scores[output, source]), 2),
            "si_sdr_improvement": round(float(scores[output, source] - baseline[source]), 2)})
        rows.append((label, references[source], outputs[output]))
    for output in sorted(set(range(len(outputs))) - set(best)):
        level = 20 * np.log10(np.sqrt(np.mean(outputs[output] ** 2)) + 1e-12)
        example["leftovers"].append({
            "label": f"output {output + 1} (no source left; {level:.0f} dBFS before the gain)",
            "file": write_clip(f"{key}-output-{output + 1}.ogg", gain * outputs[output], files)})
    example["figure"] = write_figure(f"{key}.jpg", spectrogram_figure(title, mixture, rows),
                                     files)
    example["figure_alt"] = f"spectrograms of the {key} mixture, references and outputs"
    example["command"] = (f"decomp separate mixture.wav --model {model} --out stems/   "
                          f"# stems/mixture-0.wav, -1{', -2' if len(outputs) > 2 else ''}")
    return example


def piano_example(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Transcribe a held-out-font piece with ``decomp transcribe --sonify --plot``."""
    import soundfile

    from decomp import cli
    from decomp.audio import write_audio
    from decomp.data import DEFAULT_PROTOCOL
    from decomp.transcription import default_transcriber, evaluate_transcriber

    piece = DEFAULT_PROTOCOL.test_piece(random_state=SEED, n_bars=PIANO_BARS)
    if piece.sample_rate != SAMPLE_RATE:
        raise RuntimeError(f"the protocol renders at {piece.sample_rate} Hz, not {SAMPLE_RATE}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        wav = write_audio(folder / "piece.wav", piece.audio, piece.sample_rate)
        piece.midi.write(str(folder / "piece.mid"))  # the ground truth, for --plot
        status = cli.main(["transcribe", str(wav), "--out", str(folder / "out"), "--sonify",
                           "--plot", "--no-progress", "-q"])
        if status != 0:
            raise RuntimeError(f"decomp transcribe exited with status {status}")
        sonified, rate = soundfile.read(folder / "out" / "piece-sonified.wav", dtype="float32")
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"the sonified transcription is at {rate} Hz")
        plot = (folder / "out" / "piece.png").read_bytes()
    reference = piece.midi.synthesize(fs=SAMPLE_RATE)[:len(piece.audio)]
    reference = np.pad(reference, (0, max(0, len(piece.audio) - len(reference))))
    recording = piece.audio
    scores = evaluate_transcriber(default_transcriber("nmf"), piece)
    write_png("piano-transcription.png", plot, files)

    def scaled(audio: np.ndarray) -> np.ndarray:
        return PEAK * audio / max(float(np.abs(audio).max()), 1e-9)

    return {
        "kind": "transcription", "key": "piano", "title": "Piano transcription",
        "description": (
            f"A {PIANO_BARS}-bar piece (seed {SEED}) of the default protocol, rendered with "
            f"the held-out SoundFont `{DEFAULT_PROTOCOL.test_soundfont}`, transcribed by the "
            "shipped NMF transcriber (`decomp transcribe`, the default method). `--sonify` "
            "plays the transcribed notes as sine tones; the ground-truth MIDI is sonified "
            "the same way for comparison. Each clip is scaled to peak at -1 dBFS."),
        "model": "piano-nmf", "seed": SEED, "seconds": round(piece.duration, 3),
        "clips": [
            {"label": "recording (held-out font)",
             "file": write_clip("piano-recording.ogg", scaled(recording), files)},
            {"label": "transcription, sonified (<code>--sonify</code>)",
             "file": write_clip("piano-transcription-sonified.ogg", scaled(sonified), files)},
            {"label": "ground truth, sonified the same way",
             "file": write_clip("piano-reference-sonified.ogg", scaled(reference), files)}],
        "scores": {key: round(float(getattr(scores, key)), 4) for key in (
            "precision", "recall", "f1", "note_onset_f1", "note_onset_offset_f1")},
        "figure": "piano-transcription.png",
        "figure_alt": "per-pitch activity, transcribed notes and the ground truth (outlines)",
        "command": "decomp transcribe piece.wav --out out/ --sonify --plot   "
                   "# out/piece.mid, .npz, -sonified.wav, .png (piece.mid beside the input "
                   "is the ground truth for --plot)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    import torch

    import decomp
    from decomp.data import instrument_mixtures, speech_mixtures

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    examples = []
    for n_sources in (2, 3):
        mixtures = instrument_mixtures("musescore-lite", 1, n_sources=n_sources,
                                       duration=SEPARATION_SECONDS, random_state=SEED)
        names = ", ".join(str(name) for name in mixtures.instruments[0, :n_sources])
        examples.append(separation_example(
            f"instruments-{n_sources}", f"{n_sources} instruments",
            f"{n_sources} instruments ({names}), random melodies rendered with the held-out "
            "SoundFont musescore-lite, separated by the shipped `instruments` separator "
            "(blind: it is not told which instruments play; its members `instruments-slots`, "
            "`instruments-count` and `instruments-nmf`, averaged). It has three outputs; each "
            "separated clip is the output that scores best against that reference.",
            mixtures, "instruments", files))
    mixtures = speech_mixtures(1, duration=SEPARATION_SECONDS, random_state=SEED)
    examples.append(separation_example(
        "speech", "Two speakers",
        "Two espeak-ng voices saying random words (voices of the training set, new "
        "sentences, pitches and speeds), separated by the shipped `speech` separator.",
        mixtures, "speech", files))
    examples.append(piano_example(files))

    folder = models_dir()
    wanted = {entry["file"] for entry in files} | {"index.md", "examples.json"}
    for path in sorted(OUT.iterdir()):
        if path.name not in wanted:
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")
    record = {
        "generator": "benchmarks/docs_audio.py",
        "decomp_version": decomp.__version__,
        "python": platform.python_version(),
        "sample_rate": SAMPLE_RATE,
        "seed": SEED,
        "models": {name: {"file": file, "sha256": sha256(folder / file)}
                   for name, file in model_files().items()},
        "examples": examples,
        "files": sorted(files, key=lambda entry: entry["file"]),
        "total_bytes": sum(entry["bytes"] for entry in files),
    }
    (OUT / "examples.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(files)} files, {record['total_bytes'] / 1e6:.2f} MB, to "
          f"{OUT.relative_to(ROOT)}; now run python benchmarks/docs_results.py")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
