"""Which augmentations help a blind separator generalise to a new SoundFont: an ablation.

    python benchmarks/augmentation_ablation.py --work-dir runs/ablation --jobs 2 \\
        [--max-epochs 24] [--learning-rate-decay 8] [--variants all none no-pitch ...] \\
        [--seeds 0 1]

Each variant trains the shipped ``instruments`` architecture (a blind MHUNet: 4 levels,
24 base channels, unordered heads, negative SI-SDR with PIT, learning rate 1e-3) with
``benchmarks/train_separators.py`` for the same number of epochs, on 2-instrument
mixtures of **one** training font (fluidr3), and differs only in its
:class:`decomp.data.Augmentation`:

- ``all``: every augmentation at its default probability (what the shipped models use);
- ``none``: no augmentation;
- ``no-gain``, ``no-tilt``, ``no-pitch``, ``no-reverb``: all but the one named.

Two scores decide what to keep, as DESIGN.md's data policy asks (settings are chosen on
training fonts, never on the test font):

- the **cross-font validation loss**: the best negative SI-SDR (dB, lower is better) on a
  fixed draw of unaugmented 2-instrument mixtures of the other training font, timgm6mb,
  which no variant trains on (``--validation-font timgm6mb``);
- for reference, SI-SDRi on the separation table's held-out musescore-lite test set
  (``--n-test`` 2-instrument mixtures of 4 s), beside NMF and the ideal ratio mask.

Each variant runs once per seed of ``--seeds`` (weights, stream and validation draw;
one run's noise is not a finding). Runs are separate processes, ``--jobs`` at a time,
each on one torch thread, in ``<work-dir>/seed<k>/<variant>/`` (a checkpoint per epoch:
re-running the command resumes unfinished runs and reuses finished ones'
``results.json``). Prints a Markdown table (a row per run, and the mean over seeds of
each variant run with more than one) and writes the JSON (``--json``): the settings, per
variant and seed the training (minutes, epochs, best epoch, validation loss per epoch)
and the scores, and those means.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _results import json_settings
from train_separators import AUGMENTATIONS

VARIANTS = ("all", "none", *(f"no-{kind}" for kind in AUGMENTATIONS))
HERE = Path(__file__).resolve().parent


def variant_arguments(variant: str) -> list[str]:
    """The ``train_separators.py`` options that make ``variant``'s augmentation."""
    if variant == "all":
        return []
    if variant == "none":
        return ["--no-augment"]
    return ["--without", variant.removeprefix("no-")]


def run_directory(args: argparse.Namespace, variant: str, seed: int | str) -> Path:
    return args.work_dir / f"seed{seed}" / variant


def command(args: argparse.Namespace, variant: str, seed: int | str) -> list[str]:
    directory = run_directory(args, variant, seed)
    return [sys.executable, str(HERE / "train_separators.py"), "--model", "mhunet",
            "--heads", "sources", "--loss", "si_sdr", "--sources", "2",
            "--base-channels", "24", "--n-levels", "4", "--learning-rate", "1e-3",
            "--learning-rate-decay", str(args.learning_rate_decay),
            "--max-epochs", str(args.max_epochs), "--minutes", "100000",
            "--validation-font", "timgm6mb", "--seed", str(seed),
            "--n-test", str(args.n_test), "--threads", "1",
            "--checkpoint-dir", str(directory), "--json", str(directory / "results.json"),
            *variant_arguments(variant)]


def run_variants(args: argparse.Namespace) -> None:
    """Train and score every run without a ``results.json``, ``--jobs`` at a time."""
    pending = [(variant, seed) for seed in args.seeds for variant in args.variants
               if not (run_directory(args, variant, seed) / "results.json").exists()]
    running: dict[tuple[str, int], subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            variant, seed = pending.pop(0)
            directory = run_directory(args, variant, seed)
            directory.mkdir(parents=True, exist_ok=True)
            log = (directory.parent / f"{variant}.log").open("a")
            print(f"starting {variant}, seed {seed}", flush=True)
            running[variant, seed] = subprocess.Popen(
                command(args, variant, seed), stdout=log, stderr=subprocess.STDOUT,
                cwd=HERE.parent)
        time.sleep(5)
        for (variant, seed), process in list(running.items()):
            if process.poll() is None:
                continue
            del running[variant, seed]
            if process.returncode != 0:
                raise SystemExit(f"{variant}, seed {seed} failed (exit {process.returncode}): "
                                 f"see {run_directory(args, variant, seed).parent}/{variant}.log")
            print(f"finished {variant}, seed {seed}", flush=True)


SCORES = ("si_sdr_improvement", "sdr", "sir", "sar")


def summarise(args: argparse.Namespace) -> dict[str, Any]:
    """Read every run's ``results.json``; print the table; return the JSON to write."""
    variants: dict[str, dict[str, Any]] = {}
    reference: dict[str, Any] = {}
    machine: dict[str, Any] = {}
    for variant in args.variants:
        for seed in args.seeds:
            path = run_directory(args, variant, seed) / "results.json"
            if not path.exists():  # only with --summary-only: a run not made (yet)
                continue
            result = json.loads(path.read_text())
            scores = result["results"]["instruments-2"]
            reference, machine = {"nmf": scores["nmf"], "irm": scores["irm"]}, result["machine"]
            variants.setdefault(variant, {})[str(seed)] = {
                "training": result["training"], "scores": scores["mhunet"]}
    means = {variant: mean_run(runs) for variant, runs in variants.items() if len(runs) > 1}
    print("\n| augmentation | seed | best cross-font validation loss (dB) | best epoch | "
          "SI-SDRi musescore-lite (dB) | SDR | SIR | SAR | minutes |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant, runs in variants.items():
        for seed, run in runs.items():
            training, scores = run["training"], run["scores"]
            print(f"| {variant} | {seed} | {training['best_validation_loss']:.2f} | "
                  f"{training['best_epoch']} | "
                  + " | ".join(f"{scores[key]:.2f}" for key in SCORES)
                  + f" | {training['minutes']:.0f} |")
        if variant in means:
            mean = means[variant]
            print(f"| {variant} | mean | {mean['best_validation_loss']:.2f} | | "
                  + " | ".join(f"{mean[key]:.2f}" for key in SCORES) + " | |")
    for method, scores in reference.items():
        print(f"| ({method.upper()}) | | | | "
              + " | ".join(f"{scores[key]:.2f}" for key in SCORES) + " | |")
    return {"benchmark": "augmentation_ablation", "machine": machine,
            "settings": json_settings(args),
            "command": " ".join(command(args, "<variant>", "<seed>")[1:]),
            "variants": variants, "means": means, "reference": reference}


def mean_run(runs: dict[str, Any]) -> dict[str, float]:
    """The mean over a variant's seeds of its validation loss and scores."""
    values = {"best_validation_loss": [run["training"]["best_validation_loss"]
                                       for run in runs.values()]}
    for key in SCORES:
        values[key] = [run["scores"][key] for run in runs.values()]
    return {key: sum(column) / len(column) for key, column in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("augmentation-ablation"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--max-epochs", type=int, default=24)
    parser.add_argument("--learning-rate-decay", type=int, default=8,
                        help="final epochs over which the learning rate falls (as the "
                        "shipped recipes do), so that every variant ends settled")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1,
                        help="variants trained at once, one core each")
    parser.add_argument("--json", type=Path, help="default: <work-dir>/ablation.json")
    parser.add_argument("--summary-only", action="store_true",
                        help="train nothing: summarise the runs already finished (e.g. a "
                        "second seed made for some variants only)")
    args = parser.parse_args()
    if not args.summary_only:
        run_variants(args)
    output = summarise(args)
    path = args.json or args.work_dir / "ablation.json"
    path.write_text(json.dumps(output, indent=2, default=float) + "\n")
    print(f"results written to {path}")


if __name__ == "__main__":
    main()
