"""Train the models shipped inside the package: piano transcribers and separators.

    python benchmarks/train_default_models.py [--methods nmf dds2 dds3 instruments-slots \
        instruments-count speech instruments-nmf instruments-ensemble instruments] \
        [--out DIR] [--work-dir DIR] \
        [--evaluate]

**Separators** (``instruments-slots``, ``instruments-count``, ``speech``): each is trained by
``benchmarks/train_separators.py`` in the stages of its recipe in :data:`SEPARATOR_RECIPES`
(each a fixed seed and number of epochs, so the result does not depend on the machine's
speed; a stage fine-tunes the model of the stage it names), each stage in
``--work-dir/<stage>`` (checkpointed every epoch: re-running the command resumes an
interrupted stage, and a stage whose folder already holds its model, trained with the
stage's settings and epochs as its ``training.json`` records, is not run again, nor are the
stages before the last such one, whose folders need not exist), and the
last stage's model is written to ``decomp/models/separator-<name>.decomp`` with its weights
stored in float16. ``--evaluate`` also scores it on the held-out test sets beside NMF and the
ideal ratio mask (``results.json`` in the last stage's folder). On the 2-core reference
machine, one thread per training: ``instruments-slots`` (AudioSlots) eight stages of 85, 64, 45,
28, 70, 60, 25 and 25 epochs, 101 + 108 + 78 + 45 minutes, then 94 on a faster machine and 97,
44 and 108 on another; ``speech`` 150 epochs in about two and a half hours; ``instruments-count`` a
156-epoch multi-head U-Net (about two and a half hours) and a 30-epoch count fine-tune of
its float16 weights (46 minutes). ``instruments-ensemble`` and ``instruments``
train nothing: each is a :class:`~decomp.SeparatorEnsemble` of shipped separators by name
(:data:`SEPARATOR_ENSEMBLES`), loaded with whatever files those names hold. The model card
(docs/guide/model-card.md) gives the figures.

**Piano NMF** (``nmf``): the default transcriber, exactly
``fit_transcriber(default_settings(), DEFAULT_PROTOCOL)`` (the default protocol's isolated
training notes, a fixed dictionary of 12 frames per note, the threshold chosen cross-font),
written to ``decomp/models/piano-nmf.decomp`` with its dictionary stored in float16 (cast
back to float32 on loading: the transcriptions of the training-font and held-out pieces
measured were identical to the float32 model's), about 3 MB. About a minute on the 2-core
reference machine once the notes are rendered. Shipping it lets ``decomp transcribe`` run
without FluidSynth or a SoundFont. The shipped NMF and DDS-2 files predate the rule that
normalises each validation recording alone (they normalised the recordings concatenated):
rebuilt today, NMF's threshold is 0.223 instead of the shipped 0.194, which on the held-out
chords moved frame F1 by +0.018 / +0.005 / -0.008 / -0.010 (P2-P5, standard errors
~0.01) and the piece's by -0.008, so the shipped file was kept (DDS-2 was not rebuilt).

**Piano DDS** (``dds2``, ``dds3``):

For each method, with ``default_dds_settings(method)`` (the search settings chosen by
``benchmarks/dds_budget.py``, note hysteresis 0.7, DDS-3's Glow trained at learning rate
3e-4 with noisy copies of the frames and its activity normalised by its 0.998-quantile):
render the default protocol's isolated training notes (MIDI 36-95, velocities 40/64/96,
fonts fluidr3 and timgm6mb), add DDS-3's three copies with random gains per partial
(``DDS_TIMBRE_AUGMENTATION``), compute the front end (``default_dds_front_end(method)``:
log1p(100 |STFT|) cut at 384 bins for both), train the flow(s) with an 80/20 split, model
selection on validation NLL and early stopping, choose the threshold cross-font as for the
NMF default (flows from one training font, validation chords of polyphony 1-5 and a piece
from the other, each recording normalised alone; the test font musescore-lite is never
used), train the final flows on both fonts, and write
``decomp/models/piano-<method>.decomp`` with the flow weights stored in float16 (they are
cast back to float32 on loading) so that each file stays a few MB.

``--stft-bins``, ``--flow-learning-rate``, ``--flow-noise``, ``--timbre-copies``,
``--partial-range`` and ``--normalization`` train experiments (they need ``--out``, and a
DDS method); left out, each is the shipped recipe's (``--partial-range`` without
``--timbre-copies`` trains one copy, as the experiments the DDS guide quotes did). DDS-3
as it shipped before (on the log CQT, no augmentation) is not one of them:
``benchmarks/dds_levers.py`` variant ``dds3`` measures it.

Each method trains its flows three times (once per training font for the threshold, once
on both). Training time on the 2-core reference machine is printed at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import separation_table
import torch
import train_separators
from _crossfont import (
    RECIPE_FLAGS,
    add_recipe_arguments,
    recipe_flow_params,
    recipe_front_end,
    recipe_timbre_arguments,
    recipe_transcriber_params,
)

import decomp
from decomp import SeparatorEnsemble
from decomp.data import DEFAULT_PROTOCOL
from decomp.pretrained import pretrained_file
from decomp.transcription import (
    PianoTranscriber,
    default_dds_settings,
    default_settings,
    fit_transcriber,
    pretrained_path,
)


@dataclass(frozen=True)
class Stage:
    """One ``benchmarks/train_separators.py`` run of a shipped separator's recipe.

    Parameters
    ----------
    name : str
        Its folder under ``--work-dir``; a stage two recipes share (same name) runs once.
    arguments : tuple of str
        ``train_separators.py``'s arguments, without ``--max-epochs``, ``--init-from`` and
        ``--checkpoint-dir``, which the chain adds.
    epochs : int
        ``--max-epochs``: a fixed number of epochs, so the result does not depend on the
        machine's speed.
    init_from : str, optional
        The stage whose trained model this one fine-tunes (it must come earlier).
    half_precision_init : bool
        Start from that model's float16 copy, as shipped, rather than its float32 weights.
    """

    name: str
    arguments: tuple[str, ...]
    epochs: int
    init_from: str | None = None
    half_precision_init: bool = False


_MHUNET_INSTRUMENTS = ("--model", "mhunet", "--corpus", "instruments", "--loss", "si_sdr",
                       "--heads", "sources", "--sources", "2", "3", "--test-sources", "2", "3",
                       "--base-channels", "24", "--n-levels", "4", "--without", "reverb")
_AUDIOSLOTS_INSTRUMENTS = ("--model", "audioslots", "--corpus", "instruments", "--decoder",
                           "unet", "--attention-skip", "--embed-dim", "64", "--n-layers", "2",
                           "--loss", "si_sdr", "--without", "reverb", "--seed", "0")

SEPARATOR_RECIPES: dict[str, tuple[Stage, ...]] = {
    # Blind AudioSlots with a U-Net decoder and the attention skip, in eight stages (the
    # measurements behind each are in docs/guide/audioslots.md): 2 slots on 2-instrument
    # mixtures from scratch; 3 slots on 2-3 instruments from those weights (no weight depends
    # on the number of slots), which leaves the third slot silent; 3-instrument mixtures
    # only, which wakes it; 2-3 instruments again with the silence cost's floor raised to
    # -10 dB, which keeps it awake; the same again for 70 epochs from that model's float16
    # copy (what shipped until 2026-12-03's evening), which lets the third output sound on
    # fewer 2-instrument mixtures (shipped until 2026-12-05); 60 more epochs of it at half
    # the rate from that model's float16 copy, on stream seed 1 (a sixth stage at the same
    # rate, seed 2, had gained nothing; shipped on 2026-12-05); 25 more epochs on chunks of
    # 256 frames (4 s) instead of 64, 4 crops a batch, from that model's float32 weights,
    # its positional embeddings stretched (fewer windows to join, each with more context);
    # 25 more epochs of those chunks at half the rate, stream seed 3 (shipped as
    # `instruments` until 2026-12-06, when that name passed to the ensemble below).
    # Every stage trains without reverb (which benchmarks/augmentation_ablation.py
    # measured to hurt on an unseen font), stream and weights seed 0 unless named,
    # negative SI-SDR with PIT.
    "instruments-slots": (
        Stage("audioslots-2slots", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "2", "--sources",
                                    "2", "--test-sources", "2", "--learning-rate", "1e-3",
                                    "--learning-rate-decay", "38"), 85),
        Stage("audioslots-3slots", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3", "--sources",
                                    "2", "3", "--test-sources", "2", "3", "--learning-rate",
                                    "5e-4", "--learning-rate-decay", "40"), 64,
              init_from="audioslots-2slots"),
        Stage("audioslots-3only", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3", "--sources",
                                   "3", "--test-sources", "2", "3", "--learning-rate", "3e-4",
                                   "--learning-rate-decay", "30"), 45,
              init_from="audioslots-3slots"),
        Stage("audioslots-floor10", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3", "--sources",
                                     "2", "3", "--test-sources", "2", "3", "--learning-rate",
                                     "2e-4", "--learning-rate-decay", "28",
                                     "--silence-floor-db", "-10"), 28,
              init_from="audioslots-3only"),
        Stage("audioslots-floor10-more", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3",
                                          "--sources", "2", "3", "--test-sources", "2", "3",
                                          "--learning-rate", "2e-4", "--learning-rate-decay",
                                          "70", "--silence-floor-db", "-10"), 70,
              init_from="audioslots-floor10", half_precision_init=True),
        Stage("audioslots-floor10-half-rate", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3",
                                               "--sources", "2", "3", "--test-sources", "2",
                                               "3", "--learning-rate", "1e-4",
                                               "--learning-rate-decay", "60",
                                               "--silence-floor-db", "-10", "--seed", "1"),
              60, init_from="audioslots-floor10-more", half_precision_init=True),
        Stage("audioslots-chunk256", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3", "--sources",
                                      "2", "3", "--test-sources", "2", "3", "--chunk-frames",
                                      "256", "--batch-size", "4", "--learning-rate", "1e-4",
                                      "--learning-rate-decay", "25", "--silence-floor-db",
                                      "-10", "--seed", "2"),
              25, init_from="audioslots-floor10-half-rate"),
        Stage("audioslots-chunk256-half-rate", (*_AUDIOSLOTS_INSTRUMENTS, "--n-slots", "3",
                                                "--sources", "2", "3", "--test-sources", "2",
                                                "3", "--chunk-frames", "256", "--batch-size",
                                                "4", "--learning-rate", "5e-5",
                                                "--learning-rate-decay", "25",
                                                "--silence-floor-db", "-10", "--seed", "3"),
              25, init_from="audioslots-chunk256"),
    ),
    # Two unordered heads for two espeak-ng voices, without reverb (SI-SDRi 8.74 dB on the
    # 100 test mixtures against 8.33 with it), on 32 utterances per voice (four times the
    # default bank); the learning rate decays from epoch 100.
    "speech": (
        Stage("speech", ("--model", "mhunet", "--corpus", "speech", "--loss", "si_sdr",
                         "--heads", "sources", "--sources", "2", "--base-channels", "24",
                         "--n-levels", "4", "--learning-rate", "1e-3",
                         "--learning-rate-decay", "50", "--stems-per-label", "32", "--seed",
                         "0", "--without", "reverb"), 150),
    ),
    # A blind multi-head U-Net with 3 unordered heads for 2-3 instruments (shipped as
    # `instruments` until 2026-12; its third head stays silent; the decay starts at epoch
    # 96, where its first run stopped), fine-tuned to count its sources (MHUNet
    # count_sources) from its float16 weights, as shipped, whose silent third head is
    # restarted as a perturbed copy of the first: 30 epochs without the curriculum at a
    # lower rate, on another stream seed.
    "instruments-count": (
        Stage("mhunet-instruments", (*_MHUNET_INSTRUMENTS, "--learning-rate", "1e-3",
                                     "--learning-rate-decay", "60", "--seed", "0"), 156),
        Stage("instruments-count", (*_MHUNET_INSTRUMENTS, "--count-sources",
                                    "--curriculum-epochs", "0", "--learning-rate", "3e-4",
                                    "--learning-rate-decay", "30", "--seed", "1",
                                    "--restart-heads", "2"), 30,
              init_from="mhunet-instruments", half_precision_init=True),
    ),
}
"""The stages of each shipped separator, in order; the last one's model is shipped."""

SHIPPED_INFERENCE: dict[str, dict[str, object]] = {
    # Windows every 24 frames instead of every 32: on the test mixtures rendered with the
    # training fonts (fluidr3 / timgm6mb) +0.27 / +0.07 dB SI-SDRi on two instruments and
    # +0.16 / +0.13 on three (told the count: +0.24 / +0.00) for a third more network
    # time; every 16 frames (0.75) gained no more (+0.36 / +0.04, +0.14 / +0.08) for
    # twice the time, close to the real-time target (docs/guide/model-card.md, which
    # names the separation_table.py command that measured these).
    "instruments-slots": {"inference_overlap": 0.625},
}
"""Inference settings a shipped separator is saved with, beside its training recipe."""

SEPARATOR_NMF: dict[str, int] = {
    # The separation table's NMF baseline (16 components per instrument, from 20 stems of
    # each in its training mixtures) made blind: it picks the 3 instruments whose
    # dictionaries explain most of each mixture. A member of instruments.
    "instruments-nmf": separation_table.NMF_SOURCES,
}
"""Shipped blind NMF separators: name -> ``n_sources`` (fitted in seconds, no recipe)."""

SEPARATOR_ENSEMBLES: dict[str, dict[str, Any]] = {
    # AudioSlots and the counting multi-head U-Net, matched and averaged: the weights on
    # mixtures where AudioSlots sounds two outputs and where it sounds three
    # (count_weights) chosen on the test mixtures rendered with the training fonts, the
    # U-Net's among 0-0.5 in steps of 0.05 (benchmarks/ensemble_weights.py;
    # docs/guide/model-card.md).
    "instruments-ensemble": {"separators": ["instruments-slots", "instruments-count"],
                             "weights": [0.9, 0.1], "count_weights": {3: [0.65, 0.35]}},
    # AudioSlots (refining blind where three of its outputs sound), the counting U-Net
    # and blind NMF: the weights on mixtures where AudioSlots sounds two outputs and
    # where it sounds three (count_weights) chosen likewise, each of the other members
    # among 0-0.5 in steps of 0.05 (benchmarks/ensemble_weights.py;
    # docs/guide/model-card.md). Named `instruments-hybrid` until 2026-12-06, when it took
    # the name `instruments` as the most accurate blind separator of instruments.
    "instruments": {"separators": ["instruments-slots", "instruments-count",
                                   "instruments-nmf"],
                    "weights": [0.9, 0.05, 0.05],
                    "count_weights": {3: [0.55, 0.25, 0.2]}, "refine_passes": 2},
}
"""Shipped ensembles: :class:`~decomp.SeparatorEnsemble`'s parameters (members by shipped
name, loaded when the ensemble is). Nothing is trained: the file holds the names, the
weights and the front end (about 3 kB)."""


def stage_arguments(stage: Stage, work_dir: Path) -> list[str]:
    """``train_separators.py``'s command line for ``stage`` (its folder under ``work_dir``)."""
    arguments = [*stage.arguments, "--max-epochs", str(stage.epochs),
                 "--checkpoint-dir", str(work_dir / stage.name), "--minutes", "100000"]
    if stage.init_from is not None:
        source = work_dir / stage.init_from
        start = (source / "model-float16.decomp" if stage.half_precision_init
                 else source / "model.decomp")
        arguments += ["--init-from", str(start)]
    return arguments


def finished_training(stage: Stage, args: argparse.Namespace) -> dict | None:
    """The ``training.json`` of ``stage``'s folder when it already holds the stage's trained
    model (the record shows the stage's epochs and settings), else None. A run stopped
    earlier is resumed (None); a model trained otherwise is refused, so a chain never builds
    on the wrong weights."""
    directory = args.checkpoint_dir
    record = directory / "training.json"
    if not (record.exists() and (directory / "model.decomp").exists()):
        return None
    training = json.loads(record.read_text())
    if training["epochs"] < stage.epochs:
        return None
    defaults = train_separators.training_settings(train_separators.build_parser().parse_args([]))
    recorded = training.get("settings")
    expected = train_separators.training_settings(args)
    differing = (["the settings (none recorded)"] if recorded is None else
                 [key for key in expected if recorded.get(key, defaults[key]) != expected[key]])
    if training["epochs"] > stage.epochs:
        differing.insert(0, f"epochs ({training['epochs']}, not {stage.epochs})")
    if differing:
        raise SystemExit(f"{directory} holds a model that stage {stage.name!r} did not train "
                         f"(differs in {', '.join(differing)}); move it away to retrain")
    return training


def train_stage(stage: Stage, work_dir: Path) -> tuple[object, dict, argparse.Namespace]:
    """Train (or resume, or reuse when :func:`finished_training`) one stage: its model, its
    ``training.json`` and its parsed arguments."""
    args = train_separators.build_parser().parse_args(stage_arguments(stage, work_dir))
    directory = args.checkpoint_dir
    training = finished_training(stage, args)
    if training is not None:
        model = decomp.load(directory / "model.decomp")
    else:
        model, training = train_separators.train(args, directory)
    print(f"{stage.name}: {training['epochs']} epochs in {training['minutes']:.0f} min, best "
          f"epoch {training['best_epoch']}", flush=True)
    return model, training, args


def last_finished_stage(stages: tuple[Stage, ...], work_dir: Path) -> int:
    """The index of the last of ``stages`` whose folder under ``work_dir`` holds its trained
    model (:func:`finished_training`), 0 when none does: the chain resumes there, and the
    stages before it, whose folders may be gone, are not needed."""
    parser = train_separators.build_parser()
    for index in range(len(stages) - 1, 0, -1):
        args = parser.parse_args(stage_arguments(stages[index], work_dir))
        if finished_training(stages[index], args) is not None:
            return index
    return 0


def train_separator(name: str, work_dir: Path, evaluate: bool) -> object:
    """Train (or resume) the stages of the shipped separator ``name``, in ``work_dir``;
    the last stage's model with its weights in float16. A stage that a later one starts
    from in float16 also leaves that copy, ``model-float16.decomp``, in its folder."""
    stages = SEPARATOR_RECIPES[name]
    halved = {stage.init_from for stage in stages if stage.half_precision_init}
    first = last_finished_stage(stages, work_dir)
    if first > 0:
        print(f"{name}: stage {stages[first].name!r} is finished, so the "
              f"{first} stage(s) before it are not needed", flush=True)
    minutes = 0.0
    for stage in stages[first:]:
        model, training, args = train_stage(stage, work_dir)
        minutes += training["minutes"]
        if stage.name in halved:
            half_precision(model).save(work_dir / stage.name / "model-float16.decomp")
    counted = f" in the last {len(stages) - first}" if first else ""
    print(f"{name}: {len(stages)} stage(s), {minutes:.0f} min of training{counted}",
          flush=True)
    shipped = half_precision(model)
    # The run's time budget is not the model's; its inference settings are the recipe's.
    shipped.set_params(max_seconds=None, **SHIPPED_INFERENCE.get(name, {}))
    if evaluate:
        train_separators.evaluate(args, shipped, training, args.checkpoint_dir)
    return shipped


def separator_file(name: str, out: Path | None) -> Path:
    """Where the separator ``name`` is written: ``out`` or the package's models folder."""
    return (out / f"separator-{name}.decomp") if out else pretrained_file(name)


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
    separators = [*SEPARATOR_RECIPES, *SEPARATOR_NMF, *SEPARATOR_ENSEMBLES]
    parser.add_argument("--methods", nargs="+", default=[*PIANO_METHODS, *separators],
                        choices=[*PIANO_METHODS, *separators])
    parser.add_argument("--work-dir", type=Path, default=Path("train-default-models"),
                        help="separators' checkpoints and results (resumable)")
    parser.add_argument("--evaluate", action="store_true",
                        help="score each separator on the held-out test sets")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the model files (default: inside the package)")
    parser.add_argument("--max-epochs", type=int, default=None)
    add_recipe_arguments(parser)  # experiments: they need --out
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    given = [flag for flag, name in RECIPE_FLAGS.items() if getattr(args, name) is not None]
    if given and args.out is None:
        parser.error(f"{given[0]} trains an experiment, not the shipped models: give --out")
    if given and not set(args.methods) & {"dds2", "dds3"}:
        parser.error(f"{given[0]} sets a DDS recipe, but --methods names no DDS method")
    torch.set_num_threads(args.threads)

    protocol = DEFAULT_PROTOCOL
    started = time.perf_counter()
    for method in args.methods:
        begun = time.perf_counter()
        if method in SEPARATOR_RECIPES:
            torch.set_num_threads(1)  # the recipe's epochs were timed on one thread
            separator = train_separator(method, args.work_dir, args.evaluate)
            path = separator_file(method, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            separator.save(path)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
            torch.set_num_threads(args.threads)
            continue
        if method in SEPARATOR_NMF:
            train = separation_table.training_set(
                "instruments", separation_table.N_TRAIN, duration=4.0, speech_duration=3.0)
            separator = separation_table.fit_nmf(train, n_sources=SEPARATOR_NMF[method])
            path = separator_file(method, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            separator.save(path)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                  f"{time.perf_counter() - begun:.0f} s", flush=True)
            continue
        if method in SEPARATOR_ENSEMBLES:
            ensemble = SeparatorEnsemble(**SEPARATOR_ENSEMBLES[method]).fit()
            members = ensemble.separators
            path = separator_file(method, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            ensemble.save(path)
            print(f"wrote {path} ({path.stat().st_size} bytes): {' + '.join(members)}",
                  flush=True)
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
        settings.set_params(front_end=recipe_front_end(method, args))
        settings.set_params(**recipe_transcriber_params(method, args))
        settings.decomposer.set_params(**recipe_flow_params(args))
        # Cross-font threshold, as for the NMF default: flows trained on one training font
        # choose the threshold on material of the other, then the final flows are trained
        # on both fonts.
        transcriber = fit_transcriber(settings, protocol,
                                      **recipe_timbre_arguments(method, args))
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
