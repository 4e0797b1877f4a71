"""The DDS transcribers' search settings and note hysteresis, chosen cross-font.

    python benchmarks/dds_budget.py [--methods dds2 dds3] [--iterations 25 50 100] \
        [--latent-learning-rates 0.002 0.01 0.02 0.05] [--warm-starts 0 40] \
        [--sustain-ratios 1.0 0.7] [--components-per-source 1 2 4] [--stft-bins N] \
        [--flow-learning-rate R] \
        [--flow-noise S] [--[no-]shared-codes] [--flow-precision float32|bfloat16|auto] \
        [--budget-iterations 50] [--threads 1] [--json PATH]

For each method the shipped decomposer's flow settings (:func:`default_dds_decomposer`)
train flows on the isolated notes of one training font (the method's front end,
:func:`default_dds_front_end`, as ``benchmarks/train_default_models.py`` does); those
flows then transcribe the validation recordings of the *other* training font
(:func:`validation_features`: chords of polyphony 1-5 and an 8-bar piece, each recording
normalised alone, exactly as :func:`fit_transcriber` chooses thresholds; sweeps before
2026-12-05 pooled the recordings of polyphony 1-4 under one normalisation) with every
search setting: the number of search iterations (``max_iter``), the codes' Adam step
(``latent_learning_rate``) and the NMF updates of the activations before the search
(``warm_start_iterations``), and with ``--components-per-source`` the number of codes
searched per note, or for DDS-3 with shared codes the number of nuisance codes every note
shares (``n_components_per_source``: the dictionary has that many rows per note, so the
search's cost grows with it); and for every note hysteresis (``sustain_ratio``) the
F1-maximising threshold is found. The settings of the models shipped before this sweep
(300 iterations, step 0.002, no warm start) are always included as the reference. Both
directions are run; the score of a setting is the mean of the two cross-font frame F1s
(what ``fit_transcriber`` reports as ``validation_f1_``). The flows are trained once per
font and reused for every setting. The held-out font is never used here.

``--stft-bins``, ``--flow-learning-rate``, ``--flow-noise``, ``--timbre-copies``,
``--partial-range`` and ``--normalization`` choose the search settings of an experimental
recipe instead of the shipped one, with the same flags as ``train_default_models.py``
(DDS-3 on the 384-bin log STFT with gains per partial: ``--methods dds3 --stft-bins 384
--flow-learning-rate 3e-4 --flow-noise 0.1 --partial-range -10 10 --normalization
0.998``). Only the training frames are augmented, never the validation recordings.
``--flow-precision`` sets the decomposers' ``flow_precision`` (default float32, what
every sweep before the option used; the JSON records it and the precision it resolved
to on the machine, ``flow_precision_used``). ``--shared-codes`` / ``--no-shared-codes``
search DDS-3 with or without nuisance codes
shared by every note (``DDS3(shared_codes=...)``; default: as shipped; DDS-2 always
searches codes per note). Sweeps written before the option record no ``shared_codes``:
they searched codes per note, so ``--no-shared-codes`` reruns them.

Printed per setting: validation F1, PSA and epsilon-sparsity of the raw activity on the
sounding frames (as ``benchmarks/dds_table.py`` computes them), the threshold, and the
seconds the search took on the validation recordings (``--threads`` torch threads). The
best setting per method is printed at the end: the highest validation F1 among the
settings whose PSA is at least that of the reference settings, since a larger latent step
buys F1 with attribution (the codes wander from their notes' modes), and DDS is used for
its attribution. Settings within :data:`F1_TIE` of that F1 count as tied, and the
cheapest of them wins (fewest search iterations, then fewest components per source,
then fewest warm-start updates): a
difference that small is well inside the spread between the two directions, while the
search time is what the speed targets bound. Also printed (and written as
``best_at_budget``): the best row at ``--budget-iterations`` (default 50, what DDS-3's
speed target allows), the most PSA among the rows within :data:`F1_TIE` of the best F1
there; the shipped DDS-3 searches with it (see :func:`best_at_budget`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _crossfont import (
    VALIDATION_SCORING,
    add_recipe_arguments,
    recipe_flow_params,
    recipe_front_end,
    recipe_timbre_arguments,
    recipe_transcriber_params,
    validation_scores,
)
from _results import command_line, machine, write_results

from decomp._backend import MATMUL_PRECISIONS, resolve_device, resolve_matmul_precision
from decomp.data import DEFAULT_PROTOCOL
from decomp.transcription import PianoTranscriber, default_dds_decomposer
from decomp.transcription.defaults import (
    DDS_SEARCH_SETTINGS,
    VALIDATION_POLYPHONIES,
    training_frames_per_font,
    validation_features,
)

#: Validation F1 differences below this count as ties, won by the cheaper search.
F1_TIE = 0.001

#: The search settings a row records, in the order the tables print them; rows written
#: before ``--components-per-source`` existed searched the shipped 4 and record none.
SETTING_KEYS = ("iterations", "latent_learning_rate", "n_components_per_source",
                "warm_start_iterations", "sustain_ratio")


def row_settings(row: dict) -> dict:
    """The search settings of a sweep row (those it records, in :data:`SETTING_KEYS`)."""
    return {key: row[key] for key in SETTING_KEYS if key in row}


def describe(settings: dict) -> str:
    """``settings`` of :func:`row_settings` as the sweep prints them."""
    components = settings.get("n_components_per_source")
    return (f"{settings['iterations']} iterations, step {settings['latent_learning_rate']:g}"
            + ("" if components is None else f", {components} components per source")
            + f", warm start {settings['warm_start_iterations']}, sustain ratio "
              f"{settings['sustain_ratio']:.2f}")


def best_settings(rows: list[dict]) -> dict[str, dict]:
    """Per method, the settings of the row with the best validation F1 among those whose
    PSA is at least the reference settings'; among rows within :data:`F1_TIE` of that F1,
    the one with the fewest search iterations, then components per source, then
    warm-start updates (printed)."""
    best = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        candidates = [row for row in rows if row["method"] == method]
        floor = min(row["psa"] for row in candidates if row["reference"])
        allowed = [row for row in candidates if row["psa"] >= floor]
        highest = max(row["validation_f1"] for row in allowed)
        top = min((row for row in allowed if row["validation_f1"] >= highest - F1_TIE),
                  key=lambda row: (row["iterations"], row.get("n_components_per_source", 0),
                                   row["warm_start_iterations"], -row["validation_f1"]))
        best[method] = row_settings(top)
        print(f"best {method}: {describe(best[method])} (validation F1 "
              f"{top['validation_f1']:.4f}, PSA {top['psa']:.3f}; the reference's PSA "
              f"{floor:.3f})")
    return best


def best_at_budget(rows: list[dict], iterations: int) -> dict[str, dict]:
    """Per method, among the rows of ``iterations`` search iterations, the settings with
    the most PSA among those within :data:`F1_TIE` of the best validation F1 there
    (printed). The shipped DDS-3 uses this rule at its speed target's 50 iterations: with
    codes shared by every note, the :func:`best_settings` floor (the reference's PSA)
    keeps only small steps, which lost held-out F1 (the DDS guide's search budget)."""
    best = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        candidates = [row for row in rows if row["method"] == method
                      and row["iterations"] == iterations and not row["reference"]]
        if not candidates:
            continue
        highest = max(row["validation_f1"] for row in candidates)
        top = max((row for row in candidates if row["validation_f1"] >= highest - F1_TIE),
                  key=lambda row: (row["psa"], row["validation_f1"]))
        best[method] = row_settings(top)
        print(f"best {method} at {describe(best[method])} (validation F1 "
              f"{top['validation_f1']:.4f}, PSA {top['psa']:.3f})")
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["dds2", "dds3"],
                        choices=["dds2", "dds3"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[25, 50, 100])
    parser.add_argument("--latent-learning-rates", nargs="+", type=float,
                        default=[0.002, 0.01, 0.02, 0.05])
    parser.add_argument("--warm-starts", nargs="+", type=int, default=[0, 40])
    parser.add_argument("--sustain-ratios", nargs="+", type=float, default=[1.0, 0.7])
    parser.add_argument("--components-per-source", nargs="+", type=int,
                        help="codes searched per note (DDS-3 with shared codes: nuisance "
                             "codes every note shares), n_components_per_source (default: "
                             "the shipped decomposers')")
    add_recipe_arguments(parser)
    parser.add_argument("--shared-codes", action=argparse.BooleanOptionalAction,
                        default=None, help="DDS-3: search nuisance codes shared by every "
                                           "note, or codes per note (default: as shipped; "
                                           "DDS-2 always searches codes per note)")
    parser.add_argument("--flow-precision", choices=MATMUL_PRECISIONS, default="float32",
                        help="the decomposers' flow_precision in every search (default "
                             "float32, as every sweep before the option)")
    parser.add_argument("--budget-iterations", type=int, default=50,
                        help="also report the best row at this many search iterations "
                             "(best_at_budget)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    protocol = DEFAULT_PROTOCOL
    fonts = list(protocol.train_soundfonts)
    shared_codes = (DDS_SEARCH_SETTINGS["dds3"]["shared_codes"] if args.shared_codes is None
                    else args.shared_codes)
    rows = []
    for method in args.methods:
        shipped_components = default_dds_decomposer(method).n_components_per_source
        # The search settings shipped before this sweep, at the shipped number of codes.
        reference = (300, 0.002, 0, shipped_components)
        searches = [reference] + [
            (iterations, rate, warm, components) for warm in args.warm_starts
            for components in args.components_per_source or [shipped_components]
            for rate in args.latent_learning_rates for iterations in args.iterations
            if (iterations, rate, warm, components) != reference]
        front_end = recipe_front_end(method, args)
        codes = {"shared_codes": shared_codes} if method == "dds3" else {}
        per_font = training_frames_per_font(protocol, front_end,
                                            **recipe_timbre_arguments(method, args))
        validation = {font: validation_features(font, protocol, front_end,
                                                polyphonies=VALIDATION_POLYPHONIES)
                      for font in fonts}
        # scores[(search, sustain)]: one (f1, threshold, seconds, psa, sparsity) per direction
        scores: dict[tuple, list[tuple[float, ...]]] = {}
        for index, font in enumerate(fonts):
            other = fonts[1 - index] if len(fonts) > 1 else font
            begun = time.perf_counter()
            flows = default_dds_decomposer(method).set_params(
                **recipe_flow_params(args)).fit(*per_font[index])
            print(f"{method}: flows on {font} in {time.perf_counter() - begun:.0f} s; "
                  f"validating on {other}", flush=True)
            for search in searches:
                iterations, rate, warm, components = search
                decomposer = default_dds_decomposer(method).set_params(
                    flow=flows.flow_, max_iter=iterations, latent_learning_rate=rate,
                    warm_start_iterations=warm, n_components_per_source=components,
                    flow_precision=args.flow_precision, **codes)
                transcriber = PianoTranscriber(decomposer, front_end=front_end, threshold=1.0,
                                               chunk_frames=4096, n_threads=args.threads,
                                               **recipe_transcriber_params(method, args))
                transcriber.fit(*per_font[index])  # the given flows, used as they are
                scored = validation_scores(transcriber, validation[other], args.sustain_ratios)
                seconds, psa, sparsity = scored["seconds"], scored["psa"], scored["sparsity"]
                for sustain, (threshold, f1) in scored["thresholds"].items():
                    scores.setdefault((search, sustain), []).append(
                        (f1, threshold, seconds, psa, sparsity))
                    print(f"  {method} {font}->{other}: {iterations:4d} iterations, step "
                          f"{rate:g}, {components} components, warm start {warm}, sustain "
                          f"{sustain:.2f}: F1 {f1:.4f} "
                          f"(threshold {threshold:.3f}), PSA {psa:.3f}, sparsity "
                          f"{sparsity:.3f}, search {seconds:.1f} s", flush=True)
        for ((iterations, rate, warm, components), sustain), directions in scores.items():
            columns = np.asarray(directions)
            rows.append({"method": method, "iterations": iterations,
                         "latent_learning_rate": rate, "n_components_per_source": components,
                         "warm_start_iterations": warm, "sustain_ratio": sustain,
                         "validation_f1": float(columns[:, 0].mean()),
                         "thresholds": columns[:, 1].tolist(),
                         "threshold": float(columns[:, 1].mean()),
                         "search_seconds": float(columns[:, 2].sum()),
                         "psa": float(columns[:, 3].mean()),
                         "sparsity": float(columns[:, 4].mean()),
                         "reference": (iterations, rate, warm, components) == reference})
    print("\n| method | iterations | step | components | warm start | sustain | validation F1 "
          "| PSA | sparsity | threshold | search s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['iterations']} | {row['latent_learning_rate']:g} | "
              f"{row['n_components_per_source']} | {row['warm_start_iterations']} | "
              f"{row['sustain_ratio']:.2f} | "
              f"{row['validation_f1']:.4f} | {row['psa']:.3f} | {row['sparsity']:.3f} | "
              f"{row['threshold']:.3f} | {row['search_seconds']:.1f} |")
    best = best_settings(rows)
    at_budget = best_at_budget(rows, args.budget_iterations)
    result = {
        "benchmark": "dds_budget",
        "machine": machine(args.threads),
        "settings": {"iterations": args.iterations,
                     "latent_learning_rates": args.latent_learning_rates,
                     "warm_starts": args.warm_starts, "sustain_ratios": args.sustain_ratios,
                     "components_per_source": args.components_per_source,
                     "fonts": fonts, "stft_bins": args.stft_bins,
                     "validation": VALIDATION_SCORING,
                     "shared_codes": {method: method == "dds3" and shared_codes
                                      for method in args.methods},
                     "flow_precision": args.flow_precision,
                     # On the device the decomposers search on (their device="auto").
                     "flow_precision_used": str(resolve_matmul_precision(
                         args.flow_precision, resolve_device("auto")) or torch.float32
                     ).removeprefix("torch."),
                     **recipe_flow_params(args),
                     "normalization": {method: recipe_transcriber_params(method, args)
                                       ["normalization"] for method in args.methods},
                     "timbre": {method: recipe_timbre_arguments(method, args)
                                for method in args.methods},
                     "command": command_line("dds_budget.py", argv)},
        "rows": rows,
        "best": best,
        "best_at_budget": at_budget,
    }
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
