"""Tests for benchmarks/dds_table.py's paired comparison of frame F1 over chords, and for
the experimental flow-recipe flags that dds_budget.py and train_default_models.py share."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from decomp.audio import Spectrogram
from decomp.data import labelled_frames
from decomp.estimators import NMF
from decomp.transcription import (
    DDS_NORMALIZATION,
    DDS_TIMBRE_AUGMENTATION,
    PianoTranscriber,
    default_dds_front_end,
    protocol_features,
)
from tests.conftest import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def dds_table():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # dds_table imports _results
        yield load_benchmark("dds_table")


@pytest.fixture(scope="module")
def crossfont():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield load_benchmark("_crossfont")


def test_chord_counts_split_the_frames_at_each_chords_onset(dds_table):
    times = np.arange(8) * 0.25  # 0.0 .. 1.75 s
    onsets = np.array([0.5, 1.25])
    reference = np.zeros((8, 2), dtype=bool)
    estimate = np.zeros((8, 2), dtype=bool)
    reference[2:4, 0] = True        # chord 0 (0.5-1.25 s): pitch 0 in two frames
    estimate[2, 0] = True           # one hit, one miss
    estimate[0, 1] = True           # before the first onset: counted with chord 0
    reference[5:7, 1] = True        # chord 1 (from 1.25 s): pitch 1 in two frames
    estimate[5:8, 1] = True         # two hits and one false alarm in the silence after
    counts = dds_table.chord_counts(estimate, reference, times, onsets)
    np.testing.assert_array_equal(counts, [[1, 1, 1], [2, 1, 0]])


def test_paired_bootstrap_mean_is_the_difference_of_the_tables_f1s(dds_table):
    counts = np.array([[8, 2, 1], [5, 0, 3], [9, 1, 1]])
    reference = np.array([[7, 3, 2], [5, 1, 3], [6, 2, 4]])
    result = dds_table.paired_f1_bootstrap(counts, reference, n_resamples=500)
    f1 = lambda c: 2 * c[0] / (2 * c[0] + c[1] + c[2])  # noqa: E731
    assert result["mean"] == pytest.approx(f1(counts.sum(0)) - f1(reference.sum(0)))
    assert result["se"] > 0
    # Better on every chord: every resample is above the reference.
    assert result["above"] == 1.0


def test_paired_bootstrap_of_a_method_with_itself_is_zero(dds_table):
    counts = np.array([[8, 2, 1], [5, 0, 3], [0, 0, 0]])
    assert dds_table.paired_f1_bootstrap(counts, counts) == {"mean": 0.0, "se": 0.0,
                                                              "above": 0.0}


def test_paired_bootstrap_refuses_counts_of_different_chords(dds_table):
    with pytest.raises(ValueError, match=r"shape \(n_chords, 3\)"):
        dds_table.paired_f1_bootstrap(np.ones((3, 3)), np.ones((4, 3)))


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, (6, 3), elements=st.integers(0, 20)),
       arrays(np.int64, (6, 3), elements=st.integers(0, 20)))
def test_paired_bootstrap_is_antisymmetric(dds_table, counts, reference):
    paired = dds_table.paired_f1_bootstrap
    forward, backward = paired(counts, reference, 200), paired(reference, counts, 200)
    assert forward["mean"] == pytest.approx(-backward["mean"])
    assert forward["se"] == pytest.approx(backward["se"])
    assert 0.0 <= forward["above"] <= 1.0


def test_recipe_flags_default_to_the_shipped_recipe(crossfont):
    parser = argparse.ArgumentParser()
    crossfont.add_recipe_arguments(parser)
    shipped = parser.parse_args([])
    assert crossfont.recipe_front_end("dds3", shipped) == default_dds_front_end("dds3")
    assert crossfont.recipe_flow_params(shipped) == {}
    for method in ("dds2", "dds3"):
        assert crossfont.recipe_transcriber_params(method, shipped) == {
            "normalization": DDS_NORMALIZATION[method]}
    for method in ("dds2", "dds3"):  # the shipped augmentation, which the flags replace
        assert crossfont.recipe_timbre_arguments(method, shipped) == \
            DDS_TIMBRE_AUGMENTATION[method]
    assert DDS_TIMBRE_AUGMENTATION["dds3"] == {
        "n_timbre_copies": 3, "timbre_options": crossfont.partials_only((-10, 10))}
    copies = parser.parse_args(["--timbre-copies", "2"])  # smooth equalisers
    assert crossfont.recipe_timbre_arguments("dds3", copies) == {"n_timbre_copies": 2,
                                                                 "timbre_options": None}
    unaugmented = parser.parse_args(["--timbre-copies", "0", "--normalization", "1"])
    assert crossfont.recipe_timbre_arguments("dds3", unaugmented)["n_timbre_copies"] == 0
    assert crossfont.recipe_transcriber_params("dds3", unaugmented) == {"normalization": "max"}
    partials = parser.parse_args(["--timbre-copies", "3", "--partial-range", "-5", "5",
                                  "--normalization", "0.99"])
    assert crossfont.recipe_timbre_arguments("dds2", partials) == {
        "n_timbre_copies": 3, "timbre_options": crossfont.partials_only((-5, 5))}
    assert crossfont.recipe_transcriber_params("dds3", partials) == {"normalization": 0.99}
    experiment = parser.parse_args(["--stft-bins", "384", "--flow-learning-rate", "3e-4",
                                    "--flow-noise", "0.1"])
    assert crossfont.recipe_front_end("dds3", experiment) == \
        default_dds_front_end("dds2").replace(n_bins=384)
    assert crossfont.recipe_flow_params(experiment) == {"flow_learning_rate": 3e-4,
                                                        "flow_noise": 0.1}
    assert set(crossfont.RECIPE_FLAGS.values()) <= set(vars(experiment))


def test_validation_scores_normalise_each_recording_as_fit_does(crossfont, tiny_protocol,
                                                                tiny_chords):
    # dds_budget.py and dds_levers.py choose and report thresholds as fit_transcriber
    # does: each validation recording normalised alone, then the frames pooled.
    notes = tiny_protocol.training_notes()[0]
    X, y = labelled_frames(*protocol_features(notes, Spectrogram(), tiny_protocol.pitches),
                           tiny_protocol.pitches)
    loud = protocol_features(tiny_chords, Spectrogram(), tiny_protocol.pitches)
    quiet = (loud[0] * 1e-3, loud[1])  # 60 dB quieter: pooled, its notes would be lost
    decomposer = NMF(dictionary="frames", n_components_per_source=4, max_iter=50,
                     random_state=0)
    fitted = PianoTranscriber(decomposer=decomposer).fit(X, y, validation=[loud, quiet])
    scored = crossfont.validation_scores(fitted, [loud, quiet], [fitted.sustain_ratio])
    threshold, f1 = scored["thresholds"][fitted.sustain_ratio]
    assert threshold == pytest.approx(fitted.threshold_)
    assert f1 == pytest.approx(fitted.validation_f1_)
    assert scored["seconds"] > 0 and 0 < scored["psa"] <= 1 and 0 <= scored["sparsity"] <= 1
    pooled = crossfont.validation_scores(
        fitted, [(np.concatenate([loud[0], quiet[0]]), np.concatenate([loud[1], quiet[1]]))],
        [fitted.sustain_ratio])
    assert pooled["thresholds"][fitted.sustain_ratio][1] < f1 - 0.1


def test_dds_levers_timbre_augmentations_name_their_variants_and_arguments():
    import inspect

    from decomp.audio import timbre_copies
    from decomp.transcription.defaults import training_frames_per_font

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        levers = load_benchmark("dds_levers")
    table = levers.variants()
    accepted = inspect.signature(training_frames_per_font).parameters
    options = inspect.signature(timbre_copies).parameters
    for suffix, (base_names, arguments) in levers.AUGMENTATIONS.items():
        assert set(arguments) <= set(accepted)
        assert set(arguments.get("timbre_options", {})) <= set(options)
        for name in base_names:  # the augmented variant is its base's model
            assert table[f"{name}{suffix}"] is table[name]
            assert levers.augmentation(f"{name}{suffix}") == (suffix, arguments)
    assert levers.augmentation("dds3") == ("", {})
    partials = levers.AUGMENTATIONS["-partials"][1]["timbre_options"]
    assert partials == {"tilt_range": (0.0, 0.0), "band_range": (0.0, 0.0),
                        "partial_range": (-10.0, 10.0)}


def test_best_at_budget_takes_the_most_psa_among_the_best_f1_at_that_budget():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        best_at_budget = load_benchmark("dds_budget").best_at_budget

    def row(iterations, rate, f1, psa, reference=False):
        return {"method": "dds3", "iterations": iterations, "latent_learning_rate": rate,
                "warm_start_iterations": 40, "sustain_ratio": 0.7, "validation_f1": f1,
                "psa": psa, "reference": reference}

    rows = [row(300, 0.002, 0.83, 0.90, reference=True),  # the reference never counts
            row(100, 0.1, 0.84, 0.80),  # another budget
            row(50, 0.02, 0.800, 0.70),
            row(50, 0.1, 0.8200, 0.60),
            row(50, 0.2, 0.8192, 0.65),  # within the tie of 0.001, more PSA: chosen
            row(50, 0.05, 0.8185, 0.69)]  # just outside the tie
    assert best_at_budget(rows, 50) == {"dds3": {
        "iterations": 50, "latent_learning_rate": 0.2, "warm_start_iterations": 40,
        "sustain_ratio": 0.7}}
    assert best_at_budget(rows, 25) == {}


def test_budget_rows_with_components_per_source_choose_it_and_prefer_fewer_at_a_tie():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        budget = load_benchmark("dds_budget")

    def row(iterations, components, f1, psa, reference=False):
        return {"method": "dds3", "iterations": iterations, "latent_learning_rate": 0.1,
                "n_components_per_source": components, "warm_start_iterations": 480,
                "sustain_ratio": 0.7, "validation_f1": f1, "psa": psa,
                "reference": reference}

    rows = [row(300, 4, 0.80, 0.60, reference=True),
            row(50, 4, 0.8200, 0.70),
            row(50, 2, 0.8195, 0.70),  # tied with 4 components (within 0.001): cheaper
            row(50, 1, 0.8100, 0.80)]
    chosen = {"iterations": 50, "latent_learning_rate": 0.1, "n_components_per_source": 2,
              "warm_start_iterations": 480, "sustain_ratio": 0.7}
    assert budget.best_settings(rows) == {"dds3": chosen}
    # At the budget the most PSA among the tied rows wins; here 4 and 2 components tie on
    # PSA too, so the higher F1 decides.
    assert budget.best_at_budget(rows, 50)["dds3"]["n_components_per_source"] == 4
    assert budget.describe(chosen) == ("50 iterations, step 0.1, 2 components per source, "
                                       "warm start 480, sustain ratio 0.70")
    # Rows written before the option record no components: their settings have none.
    old = {key: value for key, value in rows[1].items() if key != "n_components_per_source"}
    assert "n_components_per_source" not in budget.row_settings(old)
    assert budget.describe(budget.row_settings(old)) == (
        "50 iterations, step 0.1, warm start 480, sustain ratio 0.70")


def test_the_piece_verdict_needs_dds3_above_nmf_on_every_piece(dds_table):
    def row(method, seed, f1):
        return {"method": method, "bars": 8, "seed": seed, "f1": f1}

    pieces = [row("nmf", 0, 0.80), row("dds3", 0, 0.82), row("dds2", 0, 0.90),
              row("nmf", 1, 0.85), row("dds3", 1, 0.84)]
    assert dds_table.piece_verdict(pieces) == (
        "FAIL: DDS-3 above NMF in frame F1 on 1 of 2 pieces (mean difference +0.005)")
    assert dds_table.piece_verdict(pieces[:3]).startswith(
        "PASS: DDS-3 above NMF in frame F1 on 1 of 1 pieces")
