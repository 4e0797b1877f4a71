"""Train one amortized separator on an endless mixture stream, then score it on the test font.

    python benchmarks/train_separators.py --model mhunet --minutes 20 \\
        --checkpoint-dir runs/mhunet [--seed 0] [--no-augment] [--sources 2 3] \\
        [--corpus speech] [--loss si_sdr] [--heads sources] [--max-epochs N] \\
        [--base-channels 8] [--learning-rate 3e-3] [--evaluate-only] [--curve]

Training: the chosen separator (``mhunet``: MHUNet, one head per instrument by default,
as a stream always carries labels, or with ``--heads sources`` one unordered head per
source; ``--loss si_sdr`` trains it on the resynthesised waveforms; ``sop``:
SoundOfPixels; ``audioslots``; ``blockvae``, with ``--loss si_sdr`` for AudioSlots' and
BlockVAE's waveform loss, ``--hidden-size`` / ``--block-size`` for BlockVAE's sizes and
``--permutation-temperature`` for its Sinkhorn matching, ``--architecture unet`` (with
``--base-channels`` / ``--n-levels``) for its U-Net and ``--n-blocks`` for its block count) is
fitted on a
:class:`decomp.data.MixtureStream` of the default instrument stem bank
(:func:`decomp.data.instrument_stems`: the training fonts fluidr3 and timgm6mb only, as the
data policy requires) or, with ``--corpus speech``, of :func:`decomp.data.speech_stems`
(espeak-ng voices), 2-source mixtures by default (``--sources 2 3`` for 2 or 3), with
every :class:`decomp.data.Augmentation` on (``--no-augment`` turns them all off,
``--without pitch reverb`` those named). Each epoch is
``--steps-per-epoch`` fresh batches; the model's own validation set is a fixed draw of the
same stream under another seed (training fonts, so it measures fitting, not
generalisation to a new timbre); ``--validation-font F`` trains on the other training
font only and validates on F's stems (cross-font validation, as DESIGN.md's data policy
asks for choosing settings). Each crop is mixed exactly one training crop long (a chunk;
for AudioSlots with ``--training-windows N``, N windows each half a chunk after the last),
so no mixing is wasted and every validation crop is whole.

Resumption: everything lives in ``--checkpoint-dir``: ``checkpoint.pt`` (written after
every epoch by the estimator's ``checkpoint`` parameter: weights, optimiser, random
states, the training time so far) and, once a run ends, ``model.decomp``. Re-running the
same command continues where the last run stopped until ``--minutes`` of training in all
are spent (raise ``--minutes`` to train on); a run killed mid-epoch loses that epoch and
the time it took. Any change of a setting that shapes training (sizes, stream, seed, ...)
is refused by the checkpoint.
``--init-from MODEL`` (a ``.decomp`` file or a shipped model's name) fine-tunes: training
starts from that model's weights (layers it lacks, e.g. the count layer of
``--count-sources``, at random; an AudioSlots model may change ``--n-slots``:
:meth:`AmortizedSeparator.fit`'s ``init_from``), and
``--restart-heads 2`` first replaces the decoder of its blind head 2 by a perturbed copy
of head 0's (:func:`restart_heads`: how the multi-head U-Net's silent third head
is revived).
Once a run ends, ``training.json`` records its training (minutes, epochs, the validation
loss per epoch, the best epoch) and the settings that shaped its weights
(:func:`training_settings`). ``--evaluate-only`` loads ``model.decomp`` and only
evaluates. ``--max-epochs`` bounds the run by epochs rather than minutes (the shipped
models' recipes use it, so that a rebuild does not depend on the machine's speed).

Evaluation: the test sets of ``benchmarks/separation_table.py`` (``--n-test``, default
100, mixtures of 2 (and, with ``--test-sources 2 3``, 3) instruments rendered with the held-out font
musescore-lite, 4 s, seeds 102 / 103), its semi-supervised NMF baseline (dictionaries from
the stems of its 400 fixed training-font mixtures) and the oracle ideal ratio mask. Models
that take labels (MHUNet with class heads, SoundOfPixels, NMF) get each test mixture's
true instruments. Speech (``--corpus speech``): two-speaker mixtures of 3 s at seed 100
(the test set of ``separation_table.py``; the voices are the training ones, the
sentences, pitches, speeds and levels are new), NMF with a dictionary per voice. Scores:
:func:`decomp.separation.evaluate_separation`'s bss_eval SDR / SIR / SAR and SI-SDR
improvement (dB, with its standard error over mixtures), side by side. ``--curve`` also
scores the checkpoint copies in ``<checkpoint-dir>/snapshots/`` and plots SI-SDRi against
training time (``curve.png``).

Output: the table, and JSON (``--json``, default ``<checkpoint-dir>/results.json``): the
machine, the settings, the training (minutes, epochs, optimisation steps, the validation
loss per epoch, the best epoch) and per test set the scores of the model, NMF and IRM.
Training uses ``--threads`` torch threads (default 1) and ``--num-workers`` DataLoader
workers (default 0: mixing in the training process, so one core is used in all).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import separation_table
import torch
from _results import json_settings, machine
from separation_table import (
    N_TEST,
    TRAIN_FONTS,
    active_outputs,
    separate,
    stems_by_class,
    summarise,
    told_the_count,
)

import decomp
from decomp import __version__
from decomp.data import (
    Augmentation,
    MixtureStream,
    instrument_stems,
    speech_stems,
)
from decomp.estimators.amortized import (
    DEFAULT_FRONT_END,
    AudioSlots,
    BlockVAE,
    MHUNet,
    SoundOfPixels,
)
from decomp.separation import NMFSeparator, evaluate_separation

MODELS = ("mhunet", "sop", "audioslots", "blockvae")
AUGMENTATIONS = tuple(field.name.removesuffix("_probability") for field in
                      dataclasses.fields(Augmentation) if field.name.endswith("_probability"))
"""The kinds of :class:`decomp.data.Augmentation` (gain, tilt, pitch, reverb)."""


def crop_samples(chunk_frames: int) -> int:
    """The longest crop whose spectrogram is exactly one training chunk.

    Exactly: the validation set is cut into non-overlapping chunks with the last one
    zero-padded, so a crop one frame longer would make half the validation chunks a
    single frame of audio and padding (the first pilot's crop of 16384 samples did).
    """
    samples = (chunk_frames + 1) * DEFAULT_FRONT_END.hop_length
    while DEFAULT_FRONT_END.n_frames(samples) > chunk_frames:
        samples -= 1
    if DEFAULT_FRONT_END.n_frames(samples) != chunk_frames:
        raise ValueError(f"no crop gives exactly {chunk_frames} frames")
    return samples


def augmentation(args: argparse.Namespace) -> Augmentation | None:
    """Every augmentation with its default probability, less those named by ``--without``."""
    if not args.augment:
        return None
    return Augmentation(**{f"{kind}_probability": 0.0 for kind in args.without})


def build(args: argparse.Namespace, checkpoint: Path, max_seconds: float) -> Any:
    common = dict(max_epochs=args.max_epochs, max_seconds=max_seconds, patience=args.patience,
                  batch_size=args.batch_size, chunk_frames=args.chunk_frames,
                  steps_per_epoch=args.steps_per_epoch, num_workers=args.num_workers,
                  checkpoint=str(checkpoint), random_state=args.seed, progress=args.progress,
                  device=args.device, learning_rate_decay=args.learning_rate_decay,
                  silence_floor_db=args.silence_floor_db)
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    # The sizes of benchmarks/separation_table.py unless overridden.
    if args.model == "mhunet":
        common.setdefault("learning_rate", 3e-3)
        return MHUNet(base_channels=args.base_channels or 8, n_levels=args.n_levels or 4,
                      loss=args.loss or "bce", heads=args.heads,
                      **({} if args.curriculum_epochs is None
                         else {"curriculum_epochs": args.curriculum_epochs}),
                      **({} if args.normalize_masks is None
                         else {"normalize_masks": args.normalize_masks}),
                      count_sources=args.count_sources, **common)
    if args.model == "sop":
        extra = {"base_channels": args.base_channels} if args.base_channels else {}
        if args.loss:
            extra["loss"] = args.loss
        if args.normalize_masks is not None:
            extra["normalize_masks"] = args.normalize_masks
        if args.n_levels:
            extra["n_levels"] = args.n_levels
        return SoundOfPixels(**extra, **common)
    if args.model == "audioslots":
        common.setdefault("learning_rate", 3e-3)
        unet = {name: value for name, value in (
            ("base_channels", args.base_channels), ("n_levels", args.n_levels)) if value}
        return AudioSlots(n_slots=args.n_slots or 4, embed_dim=args.embed_dim or 32,
                          n_layers=args.n_layers or 1, patch_bins=32,
                          decoder_hidden=args.embed_dim or 32,
                          decoder=args.decoder or "broadcast", **unet,
                          attention_skip=args.attention_skip,
                          training_windows=args.training_windows,
                          **({} if args.generation_weight is None
                             else {"generation_weight": args.generation_weight}),
                          separation_loss="si_sdr" if args.loss == "si_sdr" else "magnitude",
                          **common)
    if args.model == "blockvae":
        overrides = {name: value for name, value in (
            ("hidden_size", args.hidden_size), ("block_size", args.block_size),
            ("permutation_temperature", args.permutation_temperature),
            ("base_channels", args.base_channels), ("n_levels", args.n_levels)) if value}
        return BlockVAE(n_blocks=args.n_blocks or 4, architecture=args.architecture or "conv",
                        **overrides,
                        separation_loss="si_sdr" if args.loss == "si_sdr" else "magnitude",
                        **common)
    raise ValueError(args.model)


def restart_heads(model: MHUNet, heads: list[int], noise: float = 0.05, seed: int = 0) -> MHUNet:
    """A copy of a fitted blind MHUNet whose heads ``heads`` restart from head 0's decoder.

    Each tensor of the decoder of a head in ``heads`` becomes head 0's plus Gaussian noise
    of ``noise`` times that tensor's standard deviation (at least 1e-3; scalars are
    copied), drawn from a generator seeded by ``seed``. A head whose masks are silent on
    every input (its sigmoids saturated near 0, as the multi-head U-Net's third)
    gets almost no gradient, so training alone does not revive it; a perturbed copy of a
    live head starts where gradients flow and drifts apart from the original under the
    permutation-invariant loss. ``model`` itself is left as it was.
    """
    if model.heads != "sources" or not all(0 < head < model.n_slots_ for head in heads):
        raise SystemExit(f"--restart-heads takes blind heads 1..{model.n_slots_ - 1} of an "
                         "MHUNet with heads='sources'")
    restarted = copy.deepcopy(model)
    state = {key: value.float().clone() for key, value in model.network_state_.items()}
    generator = torch.Generator().manual_seed(seed)
    for head in heads:
        prefix = f"unet.decoders.{head}."
        for key in [key for key in state if key.startswith(prefix)]:
            live = state[key.replace(prefix, "unet.decoders.0.")]
            perturbation = torch.randn(live.shape, generator=generator)  # drawn for scalars too
            state[key] = (live + noise * live.std().clamp_min(1e-3) * perturbation
                          if live.numel() > 1 else live.clone())
    restarted.network_state_ = state
    return restarted


def initial_model(args: argparse.Namespace) -> Any:
    """The fitted model that ``--init-from`` names (with ``--restart-heads`` applied)."""
    if args.init_from is None:
        if args.restart_heads:
            raise SystemExit("--restart-heads needs --init-from")
        return None
    path = Path(args.init_from)
    model = decomp.load(path) if path.exists() else decomp.pretrained(args.init_from)
    print(f"training starts from {args.init_from}", flush=True)
    return restart_heads(model, args.restart_heads) if args.restart_heads else model


def train(args: argparse.Namespace, directory: Path) -> tuple[Any, dict[str, Any]]:
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "checkpoint.pt"
    spent = (torch.load(checkpoint, map_location="cpu", weights_only=True).get(
        "training_seconds", 0.0) if checkpoint.exists() else 0.0)
    remaining = args.minutes * 60.0 - spent
    started = time.perf_counter()
    size = {} if args.stems_per_label is None else {
        "n_utterances" if args.corpus == "speech" else "n_melodies": args.stems_per_label}
    if args.corpus == "speech":
        bank = speech_stems(random_state=args.bank_seed, **size)
        print(f"stem bank: {bank.n_stems} utterances of {len(bank.classes)} espeak-ng voices "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
    else:
        bank = instrument_stems(random_state=args.bank_seed, **size)
        print(f"stem bank: {bank.n_stems} stems ({len(bank.classes)} instruments x fonts "
              f"{sorted(set(bank.fonts.tolist()))}) in {time.perf_counter() - started:.1f} s",
              flush=True)
    # The streams crop one training crop (longer than a chunk with --training-windows).
    model = build(args, checkpoint, max(remaining, 1e-3))
    validation = None
    if args.validation_font:  # cross-font: train on the other font, validate on this one
        if args.corpus != "instruments" or args.validation_font not in TRAIN_FONTS:
            raise SystemExit(f"--validation-font takes one of {TRAIN_FONTS} (instruments)")
        validation = MixtureStream(bank.select(fonts=[args.validation_font]),
                                   crop_samples=crop_samples(model._training_frames),
                                   min_sources=args.sources[0], max_sources=args.sources[-1],
                                   random_state=args.seed + 1)
        bank = bank.select(fonts=[font for font in TRAIN_FONTS if font != args.validation_font])
    stream = MixtureStream(bank, crop_samples=crop_samples(model._training_frames),
                           min_sources=args.sources[0], max_sources=args.sources[-1],
                           augmentation=augmentation(args),
                           random_state=args.seed)
    init_from = initial_model(args)
    print(f"{'resuming' if checkpoint.exists() else 'starting'} {type(model).__name__}: "
          f"{spent / 60:.1f} of {args.minutes:g} min spent, "
          f"{max(remaining, 0.0) / 60:.1f} min left", flush=True)
    model.fit(stream, validation=validation, init_from=init_from)
    model.set_params(checkpoint=None)  # the saved model does not point at the run's files
    model.save(directory / "model.decomp")
    history = {key: np.asarray(value).tolist() for key, value in model.history_.items()}
    training = {
        "minutes": model.training_seconds_ / 60.0,
        "epochs": int(model.n_epochs_), "steps": int(model.n_epochs_ * args.steps_per_epoch),
        "mixtures_seen": int(model.n_epochs_ * args.steps_per_epoch * args.batch_size),
        "best_epoch": int(model.best_epoch_),
        "best_validation_loss": float(model.best_validation_loss_),
        "validation_items": int(model.n_validation_items_), "history": history,
        "settings": training_settings(args),
    }
    (directory / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    return model, training


RUN_SETTINGS = ("minutes", "checkpoint_dir", "init_from", "threads", "device", "progress",
                "evaluate_only", "curve", "n_test", "test_sources", "duration", "nmf_train",
                "json")
"""Settings that do not shape the weights a run trains: where and how long it runs and how
it is scored (``--init-from`` names the starting weights, whose own settings are another
run's; ``--minutes`` only stops a run early, so ``max_epochs`` tells how far it went)."""


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of ``args`` that shape the trained weights (all but :data:`RUN_SETTINGS`),
    as JSON values, by name: what ``training.json`` records to compare a finished run with a
    recipe."""
    return dict(sorted(json_settings(args, leave_out=RUN_SETTINGS).items()))


def test_sets(args: argparse.Namespace) -> dict[str, Any]:
    """The held-out test sets of benchmarks/separation_table.py for ``args.corpus``."""
    return separation_table.test_sets(args.corpus, args.n_test, duration=args.duration,
                                      speech_duration=args.speech_duration,
                                      counts=tuple(args.test_sources))


def nmf_baseline(args: argparse.Namespace) -> NMFSeparator:
    """The NMF of benchmarks/separation_table.py (its default 400 training mixtures)."""
    train_set = separation_table.training_set(args.corpus, args.nmf_train,
                                              duration=args.duration,
                                              speech_duration=args.speech_duration)
    return NMFSeparator(n_components_per_source=16, random_state=0).fit(
        stems_by_class(train_set, per_class=20))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="mhunet")
    parser.add_argument("--corpus", choices=["instruments", "speech"], default="instruments",
                        help="training stems and test set")
    parser.add_argument("--loss", choices=["bce", "l1", "si_sdr"],
                        help="MHUNet's or SoundOfPixels' loss (bce, si_sdr); si_sdr also "
                        "for AudioSlots' and BlockVAE's separation loss")
    parser.add_argument("--heads", choices=["auto", "classes", "sources"], default="auto",
                        help="MHUNet: one head per class or per source (PIT)")
    parser.add_argument("--curriculum-epochs", type=int, default=None,
                        help="MHUNet: epochs of Solos' source-count curriculum (2 sources "
                        "first; default the model's, 20; 0: none)")
    parser.add_argument("--speech-duration", type=float, default=3.0)
    parser.add_argument("--validation-font", choices=TRAIN_FONTS,
                        help="cross-font validation: train on the other training font's "
                        "stems, validate (select the epoch kept) on this one's, unaugmented")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training budget in all runs of this checkpoint directory")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="default: train-separators/<model>")
    parser.add_argument("--seed", type=int, default=0, help="weights and stream")
    parser.add_argument("--bank-seed", type=int, default=0, help="melodies of the stem bank")
    parser.add_argument("--stems-per-label", type=int,
                        help="stem bank size: utterances per voice (speech; default 8) or "
                             "melodies per instrument and font (instruments; default 32)")
    parser.add_argument("--sources", type=int, nargs="+", default=[2], choices=[2, 3],
                        help="source counts of training mixtures (min [max])")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--without", nargs="+", default=[], choices=AUGMENTATIONS,
                        help="augmentations to turn off (the others keep their defaults)")
    parser.add_argument("--base-channels", type=int,
                        help="U-Net width (mhunet, sop, blockvae --architecture unet, "
                        "audioslots --decoder unet)")
    parser.add_argument("--n-levels", type=int,
                        help="U-Net depth (mhunet, sop, blockvae --architecture unet, "
                        "audioslots --decoder unet)")
    parser.add_argument("--embed-dim", type=int, help="AudioSlots width")
    parser.add_argument("--decoder", choices=["broadcast", "unet"],
                        help="AudioSlots' decoder (default broadcast; unet: also its "
                        "encoder's patches)")
    parser.add_argument("--attention-skip", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="AudioSlots --decoder unet: gate the mixture's deepest map "
                        "by each slot's attention into that slot's decoder (default on)")
    parser.add_argument("--n-slots", type=int, help="AudioSlots slots (default 4)")
    parser.add_argument("--training-windows", type=int, default=1,
                        help="AudioSlots: inference windows per training crop, each window's "
                        "slot attention started from the previous one's slots (default 1)")
    parser.add_argument("--generation-weight", type=float,
                        help="AudioSlots: weight of the generated spectra's loss (default 0.1)")
    parser.add_argument("--n-layers", type=int, help="AudioSlots Transformer layers")
    parser.add_argument("--architecture", choices=["conv", "unet"],
                        help="BlockVAE's encoder and decoder (default conv)")
    parser.add_argument("--n-blocks", type=int, help="BlockVAE latent blocks (default 4)")
    parser.add_argument("--hidden-size", type=int, help="BlockVAE width (conv)")
    parser.add_argument("--block-size", type=int, help="BlockVAE latent block size")
    parser.add_argument("--permutation-temperature", type=float,
                        help="BlockVAE's Sinkhorn temperature (relative to the mean cost)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--learning-rate-decay", type=int, default=0,
                        help="final epochs of --max-epochs over which the learning rate "
                        "falls along a half cosine to 1%% (0: constant)")
    parser.add_argument("--silence-floor-db", type=float, default=-30.0,
                        help="waveform losses: the soft floor (dB) of the cost of an output "
                             "without a source (the reward for its silence)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-frames", type=int, default=64)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--patience", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="score <checkpoint-dir>/model.decomp without training")
    parser.add_argument("--count-sources", action="store_true",
                        help="MHUNet(count_sources=True): source heads chosen by a "
                        "predicted source count")
    parser.add_argument("--init-from",
                        help="fine-tune: start from this model's weights (a .decomp file or a "
                        "shipped model's name)")
    parser.add_argument("--restart-heads", type=int, nargs="+", default=[],
                        help="with --init-from (blind MHUNet): restart these heads' decoders "
                        "as perturbed copies of head 0's")
    parser.add_argument("--normalize-masks", action=argparse.BooleanOptionalAction,
                        help="MHUNet's or SoundOfPixels' normalize_masks (default: the "
                        "model's); with --evaluate-only it changes the trained model's")
    parser.add_argument("--curve", action="store_true",
                        help="also score the checkpoint copies in <checkpoint-dir>/snapshots "
                        "and plot SI-SDRi against training time (curve.png)")
    parser.add_argument("--n-test", type=int, default=N_TEST)
    parser.add_argument("--test-sources", type=int, nargs="+", default=[2], choices=[2, 3])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--nmf-train", type=int, default=400,
                        help="training mixtures whose stems build the NMF dictionaries")
    parser.add_argument("--json", type=Path, help="default: <checkpoint-dir>/results.json")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--max-epochs", type=int, default=10**6,
                        help="stop after this many epochs in all (a budget that does not "
                        "depend on the machine's speed)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    torch.set_num_threads(args.threads)
    directory = args.checkpoint_dir or Path("train-separators") / args.model

    if args.evaluate_only:
        model = decomp.load(directory / "model.decomp")
        if args.normalize_masks is not None:  # an inference setting: no retraining needed
            model.set_params(normalize_masks=args.normalize_masks)
        training_path = directory / "training.json"
        training = json.loads(training_path.read_text()) if training_path.exists() else {}
    else:
        model, training = train(args, directory)
    evaluate(args, model, training, directory)


def evaluate(args: argparse.Namespace, model: Any, training: dict[str, Any],
             directory: Path) -> dict[str, Any]:
    """Score ``model`` beside NMF and the IRM on the test sets; print and write the JSON."""
    print(f"trained {training.get('minutes', float('nan')):.1f} min, "
          f"{training.get('epochs', 0)} epochs, {training.get('steps', 0)} steps, best epoch "
          f"{training.get('best_epoch', 0)}", flush=True)
    history = training.get("history", {})
    validation = history.get("validation_loss", [])
    if validation:
        initial = history.get("initial_validation_loss", [float("nan")])[0]
        marks = sorted({0, len(validation) // 4, len(validation) // 2,
                        3 * len(validation) // 4, len(validation) - 1})
        trend = ", ".join(f"e{i + 1} {validation[i]:.4f}" for i in marks)
        print(f"validation loss: initial {initial:.4f}, {trend}", flush=True)

    nmf = nmf_baseline(args)
    results: dict[str, dict[str, dict[str, float]]] = {}
    print("\n| test set | method | SDR | SIR | SAR | SI-SDRi | outputs used |\n"
          "|---|---|---|---|---|---|---|")
    for test_name, test in test_sets(args).items():
        results[test_name] = {}
        methods = [(args.model, model), ("nmf", nmf), ("irm", None)]
        known = np.unique(test.n_sources)
        if getattr(model, "count_sources", False) and known.size == 1:
            # A counting model is also told how many sources sound (MHUNet's n_sources).
            methods.insert(1, (f"{args.model}, count given", model))
        for method, estimator in methods:
            estimates = (told_the_count(estimator, test) if method.endswith(", count given")
                         else separate(method, estimator, test))
            scores = evaluate_separation(estimates, test.sources, test.mixtures,
                                         test.sample_rate, n_sources=test.n_sources)
            row = summarise(scores)
            row["active_outputs"] = active_outputs(estimates)
            results[test_name][method] = row
            print(f"| {test_name} | {method} | {row['sdr']:.2f} | {row['sir']:.2f} | "
                  f"{row['sar']:.2f} | {row['si_sdr_improvement']:.2f} "
                  f"+- {row['si_sdr_improvement_se']:.2f} | {row['active_outputs']:.2f} |",
                  flush=True)
        gap = (results[test_name][args.model]["si_sdr_improvement"]
               - results[test_name]["nmf"]["si_sdr_improvement"])
        print(f"{test_name}: {args.model} {gap:+.2f} dB SI-SDRi against NMF", flush=True)

    curve = learning_curve(args, model, training, directory, results) if args.curve else None
    output = {
        "benchmark": "train_separators",
        "decomp_version": __version__,
        "machine": machine(),
        "settings": json_settings(args),
        "training": training,
        "results": results,
        "curve": curve,
    }
    path = args.json or directory / "results.json"
    path.write_text(json.dumps(output, indent=2, default=float) + "\n")
    print(f"results written to {path}")
    return output


def learning_curve(args: argparse.Namespace, model: Any, training: dict[str, Any],
                   directory: Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    """SI-SDRi of the snapshots in ``<directory>/snapshots/*.pt`` against training time.

    A snapshot is a copy of the run's checkpoint taken during training (any file with
    the checkpoint's ``epoch`` and ``best_model``); its weights are the best epoch's up
    to then, i.e. what a run stopped at that moment would keep. The training time of a
    snapshot is its epoch count times the run's mean epoch time. Writes
    ``<directory>/curve.png`` with NMF and the IRM as horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes_per_epoch = training["minutes"] / max(training["epochs"], 1)
    snapshots = []
    for path in sorted((directory / "snapshots").glob("*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        snapshots.append((int(state["epoch"]), state["best_model"]))
    points = []
    for epoch, weights in sorted(snapshots, key=lambda item: item[0]):
        snapshot = copy.deepcopy(model)
        snapshot.network_state_ = weights
        snapshot.__dict__.pop("_network", None)
        point = {"epoch": epoch, "minutes": epoch * minutes_per_epoch}
        for test_name, test in test_sets(args).items():
            scores = evaluate_separation(separate(args.model, snapshot, test), test.sources,
                                         test.mixtures, test.sample_rate,
                                         n_sources=test.n_sources)
            point[test_name] = float(scores.summary()["si_sdr_improvement"])
        print(f"snapshot epoch {epoch} ({point['minutes']:.0f} min): " + ", ".join(
            f"{name} {value:.2f} dB" for name, value in point.items()
            if name not in ("epoch", "minutes")), flush=True)
        points.append(point)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for index, test_name in enumerate(results):
        color = f"C{index}"
        axis.plot([point["minutes"] for point in points], [point[test_name] for point in points],
                  "o-", color=color, label=f"{args.model}, {test_name}")
        for method, style in (("nmf", "--"), ("irm", ":")):
            axis.axhline(results[test_name][method]["si_sdr_improvement"], color=color,
                         linestyle=style, linewidth=1,
                         label=f"{method.upper()}, {test_name}")
    axis.set_xlabel("training time (minutes, 1 CPU thread)")
    axis.set_ylabel("SI-SDRi (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(directory / "curve.png", dpi=120)
    plt.close(figure)
    return points


if __name__ == "__main__":
    main()
