"""Levers for the DDS transcribers' accuracy on unheard timbres, measured cross-font.

    python benchmarks/dds_levers.py [--variants NAME ...] [--threads 1] [--json PATH [--update]]

Each variant is a transcriber (front end and decomposer; the search settings of the
shipped models, :data:`~decomp.transcription.DDS_SEARCH_SETTINGS`, note hysteresis 0.7)
whose dictionary or flows are fitted on the isolated notes of one training font and
which transcribes the validation recordings of the *other* training font (chords of
polyphony 1-5 and an 8-bar piece, each recording normalised alone,
:func:`~decomp.transcription.defaults.validation_features`), both directions, as
``benchmarks/dds_budget.py`` does; the held-out font is never used. (Until 2026-12-05 the
recordings of polyphony 1-4 were pooled under one normalisation: the variants in
``docs/results/dds-levers.json`` measured before then say ``"validation": "pooled"``.)
Printed per variant and direction: frame F1 at the F1-maximising threshold, PSA of the
raw activity on the sounding frames, the flow-training epochs and the seconds of the
fit and of the transcription (``--threads`` torch threads).

The variants (``--variants`` picks some; default all):

- ``nmf``, ``nmf-dds-front-end``: the default NMF transcriber on its own front end
  (log STFT, 1025 bins) and on DDS-3's front end (log CQT, 172 bins): what the front end
  alone costs.
- ``dds2``, ``dds3``: the shipped decomposers' sizes and search on the log CQT, each flow
  trained with the estimator's defaults (learning rate 1e-3, no noise): DDS-2 until
  ``dds2-stft384`` below won and shipped, DDS-3 until
  ``dds3-stft384-flow-lr-noise-0.1-partials`` did.
- ``dds2-epochs-E``, ``dds3-epochs-E``: flows trained for exactly E epochs (0: the
  data-dependent initialisation only, i.e. for DDS-2 a diagonal Gaussian per note at its
  frames' mean and spread), against early stopping on the same-font 80/20 split.
- ``dds3-likelihood-L``: likelihood weight L (the default is 1).
- ``dds3-kl``: Kullback-Leibler instead of Euclidean reconstruction.
- ``dds3-large``: a larger Glow (12 steps, 512 hidden units; the default 8 and 256).
- ``dds3-noise-S``: the flows' training frames plus two copies with Gaussian noise of
  standard deviation S (feature units; features span about 0-5), floored at 0: a
  timbre-agnostic augmentation.
- ``dds3-stft256``, ``dds2-stft256``, ``dds2-epochs-0-stft256``, ``dds2-stft384``: DDS on
  the log STFT cut at 256 bins (0-2 kHz) or 384 (0-3 kHz), beside NMF on the same
  (``nmf-stft256``, ``nmf-stft384``). ``dds2-stft384`` is the shipped DDS-2
  (:data:`~decomp.transcription.DDS_FRONT_ENDS`).
- ``dds3-stft384``, ``dds3-stft384-flow-lr``, ``dds3-stft384-flow-lr-step-0.1``: DDS-3 on
  the log STFT cut at 384 bins as shipped, with the Glow trained at learning rate 3e-4
  (the default 1e-3 diverges on these frames), and with that Glow searched at latent
  step 0.1 (the shipped 0.02).
- ``dds3-stft384-flow-lr-noise-S``: that Glow trained with ``flow_noise=S`` (the frames
  plus two noisy copies, as ``dds3-noise-S``), and with 0.1 searching 2 codes per note
  instead of 4 (``-m2``: half the rows through the Glow), also in 25 search iterations
  instead of 50 (``-m2-iter25``), and with likelihood weight 0.3 or 3 (``-likelihood-L``:
  the NLL of a 384-bin frame is on another scale than a 172-bin one's, so the weight
  chosen on the log CQT need not suit it). With gains per partial (below,
  ``-partials``) and quantile normalisation it is the shipped DDS-3.
- ``dds3-stft256-flow-lr-noise-0.1``: that recipe on the log STFT cut at 256 bins, whose
  mixing layers cost less than half of the 384-bin ones.
- ``dds2-stft384-inverse-start``: the shipped DDS-2 with an amortized start through the
  flows' inverse (``inverse_start_iterations=10``: 10 NMF updates of a free dictionary,
  codes halfway to the inverse of its rows); ``-iter10`` also searches 10 iterations
  instead of 25, beside ``dds2-stft384-iter10`` (10 iterations without the start);
  ``dds3-inverse-start``: the same start for the DDS-3 then shipped (log CQT).
- ``<variant>-timbre`` for the variants in ``AUGMENTATIONS``: the training frames plus one
  copy of each under a random smooth equaliser (``training_frames_per_font(...,
  n_timbre_copies=1)``, i.e. :func:`decomp.audio.timbre_copies`: a tilt of +-3 dB per
  octave around 1 kHz plus +-3 dB at every octave, a curve per frame, seeded by the
  font), made before the fit (and so before a flow's 80/20
  split and its noise copies): a timbre augmentation.
- ``<variant>-partials``: the same with random gains per partial of each frame's note
  instead (``timbre_options`` with ``partial_range=(-10, 10)`` and no smooth curve,
  :func:`decomp.audio.partial_gains`): the two training fonts differ in how each note's
  partials are balanced by 8-9 dB, far more than in smooth envelopes; ``-partials-5``
  and ``-partials-15`` the same within +-5 and +-15 dB.

The ``dds3-noise-S`` rows were measured when the copies were made here (seeded by the
direction) rather than by the estimator's ``flow_noise`` (seeded by its
``random_state``): the same augmentation with other draws.

``--update`` merges the variants run into an existing ``--json`` file (rows of the same
name replaced, the others kept), so that added variants need not rerun the rest.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _crossfont import VALIDATION_SCORING, partials_only, validation_scores
from _results import machine, write_results

from decomp.audio import Spectrogram
from decomp.data import DEFAULT_PROTOCOL
from decomp.estimators.dds import NOISE_COPIES
from decomp.transcription import (
    DDS_FLOW_TRAINING,
    PianoTranscriber,
    default_dds_decomposer,
    default_dds_front_end,
    default_decomposer,
    default_front_end,
)
from decomp.transcription.defaults import (
    VALIDATION_POLYPHONIES,
    training_frames_per_font,
    validation_features,
)

SUSTAIN_RATIO = 0.7


def _cqt() -> Spectrogram:
    """DDS-3's front end before the levers moved it to the STFT: log1p(100 |CQT|), 24 bins
    per octave from 55 Hz."""
    return Spectrogram(kind="log-cqt", compression=100.0, bins_per_octave=24, fmin=55.0)


def _stft256() -> Spectrogram:
    return default_dds_front_end("dds2").replace(n_bins=256)


def _stft384() -> Spectrogram:
    return default_dds_front_end("dds2").replace(n_bins=384)


def variants() -> dict[str, tuple[Callable[[], Spectrogram], Callable[[], Any]]]:
    """name -> (front end, unfitted decomposer)."""
    def dds(method: str, **params: Any) -> Callable[[], Any]:
        # Every lever starts from the estimator's own flow training (the shipped DDS-3's,
        # DDS_FLOW_TRAINING, is the variant dds3-stft384-flow-lr-noise-0.1), so a variant
        # names the same model before and after a shipped setting changes.
        def make() -> Any:
            decomposer = default_dds_decomposer(method)
            estimator_defaults = type(decomposer)().get_params()
            return decomposer.set_params(**{**{name: estimator_defaults[name]
                                               for name in DDS_FLOW_TRAINING[method]},
                                            **params})
        return make

    table: dict[str, tuple[Callable[[], Spectrogram], Callable[[], Any]]] = {
        "nmf": (default_front_end, default_decomposer),
        "nmf-dds-front-end": (_cqt, default_decomposer),
        "nmf-stft256": (_stft256, default_decomposer),
        "nmf-stft384": (_stft384, default_decomposer),
        "dds2": (_cqt, dds("dds2")),
        "dds3": (_cqt, dds("dds3")),
    }
    for epochs in (0, 1, 2, 4, 8):
        table[f"dds2-epochs-{epochs}"] = (_cqt,
                                          dds("dds2", max_epochs=epochs))
    for epochs in (16, 24, 32):
        table[f"dds3-epochs-{epochs}"] = (_cqt,
                                          dds("dds3", max_epochs=epochs))
    for weight in (0.3, 3.0):
        table[f"dds3-likelihood-{weight:g}"] = (_cqt,
                                                dds("dds3", likelihood_weight=weight))
    table["dds3-kl"] = (_cqt, dds("dds3", beta_loss="kullback-leibler"))
    table["dds3-large"] = (_cqt,
                           dds("dds3", n_flow_steps=12, hidden_features=512))
    for noise in (0.1, 0.3):
        table[f"dds3-noise-{noise:g}"] = (_cqt, dds("dds3", flow_noise=noise))
    table["dds3-stft256"] = (_stft256, dds("dds3"))
    table["dds2-stft256"] = (_stft256, dds("dds2"))
    table["dds2-epochs-0-stft256"] = (_stft256, dds("dds2", max_epochs=0))
    table["dds2-stft384"] = (_stft384, dds("dds2"))
    table["dds3-stft384"] = (_stft384, dds("dds3"))
    table["dds3-stft384-flow-lr"] = (_stft384, dds("dds3", flow_learning_rate=3e-4))
    table["dds3-stft384-flow-lr-step-0.1"] = (
        _stft384, dds("dds3", flow_learning_rate=3e-4, latent_learning_rate=0.1))
    for noise in (0.1, 0.2):
        table[f"dds3-stft384-flow-lr-noise-{noise:g}"] = (
            _stft384, dds("dds3", flow_learning_rate=3e-4, flow_noise=noise))
    for weight in (0.3, 3.0):
        table[f"dds3-stft384-flow-lr-noise-0.1-likelihood-{weight:g}"] = (
            _stft384, dds("dds3", flow_learning_rate=3e-4, flow_noise=0.1,
                          likelihood_weight=weight))
    table["dds3-stft384-flow-lr-noise-0.1-m2"] = (
        _stft384, dds("dds3", flow_learning_rate=3e-4, flow_noise=0.1,
                      n_components_per_source=2))
    table["dds3-stft384-flow-lr-noise-0.1-m2-iter25"] = (
        _stft384, dds("dds3", flow_learning_rate=3e-4, flow_noise=0.1,
                      n_components_per_source=2, max_iter=25))
    table["dds3-stft256-flow-lr-noise-0.1"] = (
        _stft256, dds("dds3", flow_learning_rate=3e-4, flow_noise=0.1))
    table["dds2-stft384-inverse-start"] = (_stft384, dds("dds2", inverse_start_iterations=10))
    table["dds2-stft384-inverse-start-iter10"] = (
        _stft384, dds("dds2", inverse_start_iterations=10, max_iter=10))
    table["dds2-stft384-iter10"] = (_stft384, dds("dds2", max_iter=10))
    table["dds3-inverse-start"] = (_cqt, dds("dds3", inverse_start_iterations=10))
    for suffix, (base_names, _) in AUGMENTATIONS.items():
        for name in base_names:
            table[f"{name}{suffix}"] = table[name]
    return table


#: Timbre augmentations of the training frames, as ``<variant><suffix>``: suffix ->
#: (the variants measured with it, the ``training_frames_per_font`` arguments).
#: ``-timbre``: one copy under random smooth equalisers (``decomp.audio.timbre_copies``);
#: ``-partials``: one copy with random gains per partial (+-10 dB) and no smooth curve.
AUGMENTATIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "-timbre": (("nmf", "nmf-stft384", "dds2-stft384", "dds3",
                 "dds3-stft384-flow-lr-noise-0.1"),
                {"n_timbre_copies": 1}),
    "-partials": (("nmf", "dds2-stft384", "dds3", "dds3-stft384-flow-lr-noise-0.1"),
                  {"n_timbre_copies": 1, "timbre_options": partials_only((-10.0, 10.0))}),
    "-partials-5": (("dds3-stft384-flow-lr-noise-0.1",),
                    {"n_timbre_copies": 1, "timbre_options": partials_only((-5.0, 5.0))}),
    "-partials-15": (("dds3-stft384-flow-lr-noise-0.1",),
                     {"n_timbre_copies": 1, "timbre_options": partials_only((-15.0, 15.0))}),
}


def augmentation(name: str) -> tuple[str, dict[str, Any]]:
    """The suffix of a variant's timbre augmentation ("" for none) and its arguments."""
    for suffix, (_, arguments) in AUGMENTATIONS.items():
        if name.endswith(suffix):
            return suffix, arguments
    return "", {}


def main(argv: list[str] | None = None) -> dict:
    table = variants()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(table), default=list(table))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--update", action="store_true",
                        help="merge into the existing --json file instead of replacing it")
    args = parser.parse_args(argv)
    if args.update and (args.json is None or not args.json.exists()):
        parser.error("--update needs an existing --json file")
    torch.set_num_threads(args.threads)

    protocol = DEFAULT_PROTOCOL
    fonts = list(protocol.train_soundfonts)
    # Per (front end, augmentation): training frames; per front end: validation sets.
    training: dict[tuple[str, str], list] = {}
    validation_sets: dict[str, dict] = {}
    rows = []
    for name in args.variants:
        make_front_end, make_decomposer = table[name]
        front_end = make_front_end()
        key = repr(front_end)
        suffix, arguments = augmentation(name)
        if (key, suffix) not in training:
            training[key, suffix] = training_frames_per_font(protocol, front_end, **arguments)
        if key not in validation_sets:
            validation_sets[key] = {font: validation_features(
                                        font, protocol, front_end,
                                        polyphonies=VALIDATION_POLYPHONIES)
                                    for font in fonts}
        per_font, validation = training[key, suffix], validation_sets[key]
        directions = []
        for index, font in enumerate(fonts):
            other = fonts[1 - index]
            X, y = per_font[index]
            transcriber = PianoTranscriber(make_decomposer(), front_end=front_end,
                                           threshold=1.0, chunk_frames=4096,
                                           sustain_ratio=SUSTAIN_RATIO,
                                           n_threads=args.threads)
            begun = time.perf_counter()
            transcriber.fit(X, y)
            fit_seconds = time.perf_counter() - begun
            scored = validation_scores(transcriber, validation[other], [SUSTAIN_RATIO])
            seconds, psa = scored["seconds"], scored["psa"]
            threshold, f1 = scored["thresholds"][SUSTAIN_RATIO]
            history = getattr(transcriber.decomposer_, "training_history_", {})
            epochs = history.get("n_epochs")
            directions.append({"train": font, "validate": other, "f1": float(f1),
                               "psa": psa, "threshold": float(threshold),
                               "epochs": None if epochs is None else int(epochs),
                               "best_epoch": history.get("best_epoch"),
                               "fit_seconds": fit_seconds, "transcribe_seconds": seconds})
            print(f"  {name} {font}->{other}: F1 {f1:.4f} (threshold {threshold:.3f}), PSA "
                  f"{psa:.3f}, {epochs if epochs is not None else '-'} epochs, fit "
                  f"{fit_seconds:.0f} s, transcription {seconds:.1f} s", flush=True)
        row = {"variant": name, "front_end": key, "n_bins": int(per_font[0][0].shape[1]),
               "validation": VALIDATION_SCORING,
               "validation_f1": float(np.mean([d["f1"] for d in directions])),
               "psa": float(np.mean([d["psa"] for d in directions])),
               "directions": directions}
        rows.append(row)
        print(f"{name}: validation F1 {row['validation_f1']:.4f}, PSA {row['psa']:.3f}",
              flush=True)
    print("\n| variant | bins | validation F1 | PSA | F1 per direction |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        per_direction = " / ".join(f"{d['f1']:.3f}" for d in row["directions"])
        print(f"| {row['variant']} | {row['n_bins']} | {row['validation_f1']:.4f} | "
              f"{row['psa']:.3f} | {per_direction} |")
    result = {
        "benchmark": "dds_levers",
        "machine": machine(args.threads),
        "settings": {"fonts": fonts, "sustain_ratio": SUSTAIN_RATIO,
                     "noise_copies": NOISE_COPIES},
        "rows": rows,
    }
    if args.update:
        run = {row["variant"]: row for row in rows}
        kept = [row for row in json.loads(args.json.read_text())["rows"]
                if row["variant"] not in run]
        order = list(table)
        result["rows"] = sorted([*kept, *rows], key=lambda row: order.index(row["variant"])
                                if row["variant"] in table else len(order))
    write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
