"""Ensemble weights by count: a screen of SeparatorEnsemble weights over fitted members.

    python benchmarks/ensemble_weights.py --members instruments-slots instruments-count \
        instruments-nmf [--refine-passes 2] [--step 0.05] [--max-weight 0.5] [--json PATH]

Every member (a shipped name or a model file) separates separation_table.py's instrument
test mixtures once: the held-out font's and both training fonts' renderings of the same
100 two- and 100 three-instrument mixtures. The members after the first are matched to the
first by :class:`decomp.SeparatorEnsemble`'s own matching, so a weighted sum of the matched
outputs is exactly what the ensemble returns with those weights. Every weight vector of a
grid (each member after the first ``0, step, ..., max_weight``; the first gets the rest) is
scored on every mixture: SI-SDRi averaged over the mixture's sources after the permutation
that maximises their mean SI-SDR (as :func:`decomp.separation.evaluate_separation`
matches).

The rule behind the shipped ensembles: for each count of sources (how many of the first
member's outputs sound, :func:`~decomp.estimators.amortized.unordered.count_sounding_outputs`,
which is how :attr:`SeparatorEnsemble.count_weights` picks), the weights with the largest
sum of SI-SDRi over the four training-font test sets are chosen. The held-out font's
figures are printed beside them and never used to choose. ``--refine-passes`` gives the
first member (AudioSlots) that many blind refinement passes, as the ensemble's
``refine_passes`` does.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import command_line, json_settings, machine, write_results
from separation_table import N_TEST, TRAIN_FONTS, test_sets

import decomp
from decomp import SeparatorEnsemble
from decomp.data import MixtureSet
from decomp.estimators.amortized.ensemble import _Evidence
from decomp.estimators.amortized.unordered import count_sounding_outputs
from decomp.losses import permutation_invariant_loss
from decomp.metrics import si_sdr

COUNTS = (2, 3)
"""The counts of sounding outputs whose weights are chosen (the others use the first)."""


def weight_grid(n_members: int, step: float, max_weight: float) -> np.ndarray:
    """(n_weights, n_members) weight vectors: each member after the first takes ``0, step,
    ..., max_weight``, the first the rest (kept above zero)."""
    levels = np.round(np.arange(0.0, max_weight + step / 2, step), 10)
    others = np.array(list(itertools.product(levels, repeat=n_members - 1)))
    others = others[others.sum(axis=1) < 1.0 - step / 2]
    return np.column_stack([1.0 - others.sum(axis=1), others])


def matched_outputs(ensemble: SeparatorEnsemble, test: MixtureSet) -> list[torch.Tensor]:
    """Every member's outputs on ``test``, (n_items, n_slots, n_samples) each, matched to
    the first member's order as the ensemble matches them."""
    members = ensemble._members_for(None)
    outputs = [torch.as_tensor(np.asarray(member.separate(test.mixtures))).float()
               for member in members]
    per_item = [ensemble._matched([values[item] for values in outputs],
                                  _Evidence.none(len(members)))
                for item in range(test.n_mixtures)]
    return [torch.stack([item[index] for item in per_item]) for index in range(len(members))]


def item_scores(matched: list[torch.Tensor], test: MixtureSet, grid: np.ndarray) -> np.ndarray:
    """(n_weights, n_items) mean SI-SDRi of each mixture's sources for each weight vector."""
    count = int(test.n_sources.max())
    references = torch.as_tensor(test.sources[:, :count], dtype=torch.float64)
    mixtures = torch.as_tensor(test.mixtures, dtype=torch.float64)[:, None].expand_as(references)
    mixture_si_sdr = si_sdr(mixtures, references).mean(dim=1)
    stacked = torch.stack(matched).double()  # (n_members, n_items, n_slots, n_samples)
    scores = []
    for weights in grid:
        estimates = torch.einsum("m,mist->ist", torch.as_tensor(weights), stacked)
        loss, _ = permutation_invariant_loss(estimates, references, pairwise="neg_si_sdr",
                                             reduction="none")
        scores.append((-loss - mixture_si_sdr).numpy())
    return np.stack(scores)


def training_totals(scores: dict[str, np.ndarray], counts: dict[str, np.ndarray],
                    count: int, training: list[str]) -> np.ndarray:
    """(n_weights,) each grid row's sum over the ``training`` sets of the share of their
    mean SI-SDRi that the mixtures of ``count`` sounding outputs contribute."""
    return sum(np.where(counts[name] == count, scores[name], 0.0).mean(axis=1)
               for name in training)


def choose(scores: dict[str, np.ndarray], counts: dict[str, np.ndarray],
           training: list[str]) -> dict[int, int]:
    """{count: index of the grid row with the largest training-font sum on the mixtures
    of that count}."""
    return {count: int(np.argmax(training_totals(scores, counts, count, training)))
            for count in COUNTS}


def by_count(scores: dict[str, np.ndarray], counts: dict[str, np.ndarray],
             rows: dict[int, int], default: int) -> dict[str, float]:
    """{test set: mean SI-SDRi} with each mixture scored by the grid row of its count
    (``rows``; ``default`` for the other counts), as the ensemble weighs it."""
    return {name: float(np.mean([values[rows.get(int(count), default), item]
                                 for item, count in enumerate(counts[name])]))
            for name, values in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", required=True,
                        help="shipped names or model files; the first sets the order and "
                        "counts the sources")
    parser.add_argument("--refine-passes", type=int,
                        help="the ensemble's refine_passes (blind refinement of AudioSlots)")
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--max-weight", type=float, default=0.5,
                        help="the largest weight tried for each member after the first")
    parser.add_argument("--n-test", type=int, default=N_TEST)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="rows printed per count")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.members) < 2:
        parser.error("--members needs at least two separators")
    if not 0.0 < args.step <= args.max_weight < 1.0:
        parser.error("expected 0 < --step <= --max-weight < 1")
    torch.set_num_threads(args.threads)

    ensemble = SeparatorEnsemble(args.members, refine_passes=args.refine_passes).fit()
    grid = weight_grid(len(args.members), args.step, args.max_weight)
    tests = test_sets("instruments", args.n_test, duration=4.0, speech_duration=3.0,
                      training_fonts=True)
    training = [name for name in tests if name.startswith(TRAIN_FONTS)]
    scores, counts, seconds = {}, {}, {}
    for name, test in tests.items():
        started = time.perf_counter()
        matched = matched_outputs(ensemble, test)
        seconds[name] = time.perf_counter() - started
        counts[name] = count_sounding_outputs(matched[0].double().square().sum(-1).numpy())
        scores[name] = item_scores(matched, test, grid)
        print(f"{name:<24} separated in {seconds[name]:.0f} s; first member's counts "
              f"{np.bincount(counts[name], minlength=4).tolist()}", flush=True)

    alone = int(np.flatnonzero(grid[:, 0] == 1.0)[0])
    chosen = choose(scores, counts, training)
    results = {"first member alone": by_count(scores, counts, {}, alone),
               "chosen": by_count(scores, counts, chosen, alone)}
    screens = {}
    for count in COUNTS:
        totals = training_totals(scores, counts, count, training)
        order = np.argsort(-totals)[: args.top]
        print(f"\nmixtures whose first member sounds {count} outputs: the best weights by "
              f"the training-font sum (their share of each set's mean SI-SDRi)")
        screens[count] = []
        for index in order:
            shares = {name: float(np.where(counts[name] == count, scores[name][index],
                                           0.0).mean()) for name in tests}
            screens[count].append({"weights": grid[index].round(4).tolist(),
                                   "training_sum": float(totals[index]), "sets": shares})
            print(f"  weights {np.array2string(grid[index], precision=2)}  training sum "
                  f"{totals[index]:7.3f}  held out " + " / ".join(
                      f"{shares[name]:.3f}" for name in tests if name not in training))
    print("\nmean SI-SDRi (dB) per test set; chosen weights "
          + ", ".join(f"{count}: {grid[chosen[count]].round(4).tolist()}" for count in COUNTS))
    for label, values in results.items():
        print(f"  {label:<20} " + "  ".join(f"{name} {value:.2f}"
                                            for name, value in values.items())
              + f"  training sum {sum(values[name] for name in training):.2f}")
    if args.json:
        result: dict[str, Any] = {
            "benchmark": "ensemble_weights", "decomp_version": decomp.__version__,
            "machine": machine(args.threads),
            "settings": {**json_settings(args),
                         "command": command_line("ensemble_weights.py", None)},
            "grid_size": len(grid),
            "chosen": {str(count): grid[chosen[count]].round(4).tolist() for count in COUNTS},
            "results": results, "screens": {str(key): value for key, value in screens.items()},
            "separation_seconds": seconds,
        }
        write_results(args.json, result)


if __name__ == "__main__":
    main()
