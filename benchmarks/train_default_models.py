"""Train the models shipped inside the package: piano transcribers and separators.

    python benchmarks/train_default_models.py [--methods nmf dds2 dds3 instruments \
        instruments-count speech] [--out DIR] [--work-dir DIR] [--evaluate]

**Separators** (``instruments``, ``instruments-count``, ``speech``): each is trained by
``benchmarks/train_separators.py`` with the fixed recipe in :data:`SEPARATOR_RECIPES`
(a fixed seed and number of epochs, so the result does not depend on the machine's
speed), in ``--work-dir/<name>`` (checkpointed every epoch: re-running the command
resumes an interrupted training), and written to ``decomp/models/separator-<name>.decomp``
with its weights stored in float16. ``--evaluate`` also scores it on the held-out test
sets beside NMF and the ideal ratio mask (``<work-dir>/<name>/results.json``).
``instruments`` and ``speech`` took about two and a half hours each (156 and 150 epochs)
on the 2-core reference machine, sharing it with other work. ``instruments-count`` is a
fine-tune of the ``instruments`` file just written (or the package's, when it runs
without ``instruments``): 30 epochs, 46 minutes. The model card
(docs/guide/model-card.md) gives the figures.

**Piano NMF** (``nmf``): the default transcriber, exactly
``fit_transcriber(default_settings(), DEFAULT_PROTOCOL)`` (the default protocol's isolated
training notes, a fixed dictionary of 12 frames per note, the threshold chosen cross-font),
written to ``decomp/models/piano-nmf.decomp`` with its dictionary stored in float16 (cast
back to float32 on loading: the transcriptions of the training-font and held-out pieces
measured were identical to the float32 model's), about 3 MB. About a minute on the 2-core
reference machine once the notes are rendered. Shipping it lets ``decomp transcribe`` run
without FluidSynth or a SoundFont.

**Piano DDS** (``dds2``, ``dds3``):

For each method, with ``default_dds_settings(method)`` (the search settings chosen by
``benchmarks/dds_budget.py``, note hysteresis 0.7): render the default protocol's isolated
training notes (MIDI 36-95, velocities 40/64/96, fonts fluidr3 and timgm6mb), compute the
method's front end (``default_dds_front_end(method)``; DDS-2: log1p(100 |STFT|) cut at 384
bins, DDS-3: log1p(100 |CQT|), 24 bins/octave from 55 Hz), train the flow(s) with an
80/20 split, model selection on validation NLL and early stopping, choose the threshold
cross-font as for the NMF default (flows from one training font, validation chords and a
piece from the other; the test font musescore-lite is never used), train the final flows
on both fonts, and write
``decomp/models/piano-<method>.decomp`` with the flow weights stored in float16 (they
are cast back to float32 on loading) so that each file stays a few MB.

``--stft-bins``, ``--flow-learning-rate``, ``--flow-noise`` and ``--timbre-copies`` train
experiments (they need ``--out``): DDS-3 on the 384-bin log STFT of the DDS guide's levers
was ``--methods dds3 --stft-bins 384 --flow-learning-rate 3e-4 --flow-noise 0.1``, with
the timbre augmentation ``--timbre-copies 1`` besides.

Each method trains its flows three times (once per training font for the threshold, once
on both). Training time on the 2-core reference machine is printed at the end.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import train_separators

from decomp.data import DEFAULT_PROTOCOL
from decomp.pretrained import pretrained_file
from decomp.transcription import (
    PianoTranscriber,
    default_dds_front_end,
    default_dds_settings,
    default_settings,
    fit_transcriber,
    pretrained_path,
)

SEPARATOR_RECIPES: dict[str, list[str]] = {
    # A blind multi-head U-Net: 3 unordered heads for mixtures of 2-3 of the 10 training
    # instruments (fonts fluidr3 and timgm6mb, augmented with gain, tilt and pitch shift;
    # not reverb, which benchmarks/augmentation_ablation.py measured to hurt on an unseen
    # font), negative SI-SDR with PIT.
    "instruments": ["--model", "mhunet", "--corpus", "instruments", "--loss", "si_sdr",
                    "--heads", "sources", "--sources", "2", "3", "--test-sources", "2", "3",
                    "--base-channels", "24", "--n-levels", "4", "--learning-rate", "1e-3",
                    "--learning-rate-decay", "60", "--seed", "0", "--max-epochs", "{epochs}",
                    "--without", "reverb"],
    # Two unordered heads for two espeak-ng voices, also without reverb (SI-SDRi 8.74 dB
    # on the 100 test mixtures against 8.33 with it).
    "speech": ["--model", "mhunet", "--corpus", "speech", "--loss", "si_sdr",
               "--heads", "sources", "--sources", "2", "--base-channels", "24",
               "--n-levels", "4", "--learning-rate", "1e-3", "--learning-rate-decay", "50",
               "--stems-per-label", "32", "--seed", "0", "--max-epochs", "{epochs}",
               "--without", "reverb"],
    # instruments fine-tuned to count its sources (MHUNet count_sources): it starts from
    # the shipped instruments file ({instruments}, the float16 weights), whose silent third
    # head is restarted as a perturbed copy of the first, then 30 epochs without the
    # curriculum at a lower rate, on another stream seed.
    "instruments-count": ["--model", "mhunet", "--corpus", "instruments", "--loss", "si_sdr",
                          "--heads", "sources", "--count-sources", "--curriculum-epochs", "0",
                          "--sources", "2", "3", "--test-sources", "2", "3",
                          "--base-channels", "24", "--n-levels", "4", "--learning-rate",
                          "3e-4", "--learning-rate-decay", "30", "--seed", "1",
                          "--max-epochs", "{epochs}", "--without", "reverb",
                          "--init-from", "{instruments}", "--restart-heads", "2"],
}
"""``benchmarks/train_separators.py`` arguments of each shipped separator."""

SEPARATOR_EPOCHS = {"instruments": 156, "instruments-count": 30, "speech": 150}
"""Epochs (of 100 batches of 16 mixtures) each shipped separator trained for: a constant
learning rate, then a cosine decay over the recipe's last ``--learning-rate-decay``
epochs (for instruments the decay starts at epoch 96, where the first shipped model
stopped; speech trains on 32 utterances per voice, four times the default bank, and decays
from epoch 100)."""


def separator_file(name: str, out: Path | None) -> Path:
    """Where the separator ``name`` is written: ``out`` or the package's models folder."""
    return (out / f"separator-{name}.decomp") if out else pretrained_file(name)


def train_separator(name: str, work_dir: Path, evaluate: bool, out: Path | None = None
                    ) -> object:
    """Train (or resume) the shipped separator ``name``; the fitted model. A recipe that
    starts from another shipped separator reads its file in ``out`` where this command
    wrote one (``instruments`` is built before ``instruments-count``), else the package's."""
    base = separator_file("instruments", out)
    if not base.exists():
        base = pretrained_file("instruments")
    recipe = [argument.format(epochs=SEPARATOR_EPOCHS[name], instruments=base)
              for argument in SEPARATOR_RECIPES[name]]
    directory = work_dir / name
    args = train_separators.build_parser().parse_args(
        [*recipe, "--checkpoint-dir", str(directory), "--minutes", "100000"])
    model, training = train_separators.train(args, directory)
    print(f"{name}: {training['epochs']} epochs in {training['minutes']:.0f} min, best epoch "
          f"{training['best_epoch']}", flush=True)
    shipped = half_precision(model)
    shipped.set_params(max_seconds=None)  # the run's time budget is not the model's
    if evaluate:
        train_separators.evaluate(args, shipped, training, directory)
    return shipped


def half_precision(model: object) -> object:
    """A copy whose floating-point weights are stored in float16 (cast back on loading)."""
    shipped = copy.deepcopy(model)
    shipped.network_state_ = {key: value.half() if value.is_floating_point() else value
                              for key, value in model.network_state_.items()}
    shipped.__dict__.pop("_network", None)  # rebuilt from the stored weights
    return shipped


def half_precision_dictionary(transcriber: PianoTranscriber) -> PianoTranscriber:
    """A copy whose NMF dictionary is stored in float16 (cast back to float32 on loading)."""
    shipped = copy.deepcopy(transcriber)
    shipped.decomposer_.components_ = transcriber.decomposer_.components_.astype("float16")
    return shipped


def train_nmf(protocol: object) -> PianoTranscriber:
    """The shipped default NMF transcriber: the default settings fitted on ``protocol``."""
    transcriber = fit_transcriber(default_settings(), protocol)
    print(f"nmf: {transcriber.decomposer_.n_components_} dictionary rows, threshold "
          f"{transcriber.threshold_!r}, cross-font validation F1 "
          f"{transcriber.validation_f1_:.3f}", flush=True)
    return half_precision_dictionary(transcriber)


PIANO_METHODS = ("nmf", "dds2", "dds3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=[*PIANO_METHODS, *SEPARATOR_RECIPES],
                        choices=[*PIANO_METHODS, *SEPARATOR_RECIPES])
    parser.add_argument("--work-dir", type=Path, default=Path("train-default-models"),
                        help="separators' checkpoints and results (resumable)")
    parser.add_argument("--evaluate", action="store_true",
                        help="score each separator on the held-out test sets")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the model files (default: inside the package)")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--stft-bins", type=int, default=None,
                        help="DDS methods on the log STFT cut at this many bins instead of "
                             "their shipped front end (an experiment: needs --out)")
    parser.add_argument("--flow-learning-rate", type=float, default=None,
                        help="train the DDS flows at this learning rate (an experiment: "
                             "needs --out)")
    parser.add_argument("--flow-noise", type=float, default=None,
                        help="train the DDS flows on the frames plus noisy copies of this "
                             "standard deviation (flow_noise; an experiment: needs --out)")
    parser.add_argument("--timbre-copies", type=int, default=None,
                        help="train the DDS flows on the frames plus this many copies under "
                             "random equalisers (n_timbre_copies; an experiment: needs --out)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    experiment = {"--stft-bins": args.stft_bins, "--flow-learning-rate": args.flow_learning_rate,
                  "--flow-noise": args.flow_noise, "--timbre-copies": args.timbre_copies}
    for flag, value in experiment.items():
        if value is not None and args.out is None:
            parser.error(f"{flag} trains an experiment, not the shipped models: give --out")
    torch.set_num_threads(args.threads)

    protocol = DEFAULT_PROTOCOL
    started = time.perf_counter()
    for method in args.methods:
        begun = time.perf_counter()
        if method in SEPARATOR_RECIPES:
            torch.set_num_threads(1)  # the recipe's epochs were timed on one thread
            separator = train_separator(method, args.work_dir, args.evaluate, args.out)
            path = separator_file(method, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            separator.save(path)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
            torch.set_num_threads(args.threads)
            continue
        if method == "nmf":
            transcriber = train_nmf(protocol)
            path = (args.out / "piano-nmf.decomp") if args.out else pretrained_path("nmf")
            path.parent.mkdir(parents=True, exist_ok=True)
            transcriber.save(path)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
            continue
        settings = default_dds_settings(method)
        settings.decomposer.set_params(progress=True)
        if args.max_epochs is not None:
            settings.decomposer.set_params(max_epochs=args.max_epochs)
        if args.stft_bins is not None:
            settings.set_params(front_end=default_dds_front_end("dds2").replace(
                n_bins=args.stft_bins))
        if args.flow_learning_rate is not None:
            settings.decomposer.set_params(flow_learning_rate=args.flow_learning_rate)
        if args.flow_noise is not None:
            settings.decomposer.set_params(flow_noise=args.flow_noise)
        # Cross-font threshold, as for the NMF default: flows trained on one training font
        # choose the threshold on material of the other, then the final flows are trained
        # on both fonts.
        transcriber = fit_transcriber(settings, protocol,
                                      n_timbre_copies=args.timbre_copies or 0)
        history = transcriber.decomposer_.training_history_
        nll = (f"validation NLL {history['validation_loss'][0]:.1f} -> "
               f"{history['best_validation_loss']:.1f} nats/frame"
               if len(history["validation_loss"]) else "no training epoch")
        print(f"{method}: {history['n_epochs']} epochs, best {history['best_epoch']}, "
              f"{nll}, final flow training "
              f"{history['seconds']:.0f} s; threshold {transcriber.threshold_:.3f}, "
              f"cross-font validation F1 {transcriber.validation_f1_:.3f}; total "
              f"{time.perf_counter() - begun:.0f} s", flush=True)
        for model in (transcriber.decomposer, transcriber.decomposer_):
            model.set_params(progress=False)
        transcriber.decomposer_.flow_.half()
        path = (args.out / f"piano-{method}.decomp") if args.out else pretrained_path(method)
        path.parent.mkdir(parents=True, exist_ok=True)
        transcriber.save(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(f"all done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
