"""fit_flow: split, selection, early stopping, checkpoint/resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decomp.flows import StackedRealNVP, fit_flow, stratified_split


def _two_moons_per_source(n_per_source: int = 150, seed: int = 0):
    """Three sources, each a curved (non-Gaussian) cloud in 4 dims."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for source in range(3):
        angle = rng.uniform(0, np.pi, n_per_source)
        base = np.stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), angle / 3], 1)
        rows.append(base * (1 + source) + rng.normal(0, 0.05, (n_per_source, 4)) + 2 * source)
        labels.append(np.full(n_per_source, source))
    return np.concatenate(rows).astype(np.float32), np.concatenate(labels)


def _flow(seed: int = 0) -> StackedRealNVP:
    return StackedRealNVP(3, 4, n_blocks=4, hidden_features=16, n_hidden_layers=1,
                          random_state=seed)


def test_stratified_split_keeps_every_label_in_both_parts():
    labels = np.repeat([0, 1, 2], [10, 5, 1])
    train, validation = stratified_split(labels, 0.2, random_state=0)
    assert np.intersect1d(train, validation).size == 0
    assert np.union1d(train, validation).tolist() == list(range(16))
    assert np.bincount(labels[validation], minlength=3).tolist() == [2, 1, 0]
    again = stratified_split(labels, 0.2, random_state=0)
    assert np.array_equal(again[1], validation)


def test_training_lowers_validation_nll_and_keeps_the_best_epoch():
    X, y = _two_moons_per_source(100)
    flow = _flow()
    result = fit_flow(flow, X, y, max_epochs=12, batch_size=64, learning_rate=3e-3,
                      patience=25)
    assert result.n_train + result.n_validation == X.shape[0]
    assert result.n_validation == 60  # 20 % of each source's 100 frames
    assert result.validation_loss.shape == (12,)
    assert result.best_validation_loss == pytest.approx(result.validation_loss.min())
    assert result.validation_loss.min() < result.validation_loss[0]
    assert result.train_loss[-1] < result.train_loss[0]
    # The flow holds the selected weights: its validation NLL is the best one.
    _, validation = stratified_split(y, 0.2, random_state=0)
    with torch.no_grad():
        nll = -flow.log_prob(torch.as_tensor(X[validation]), y[validation]).mean()
    assert float(nll) == pytest.approx(result.best_validation_loss, rel=1e-4)
    assert not flow.training


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    X, y = _two_moons_per_source(40)
    # A huge learning rate makes validation worse after the first epochs.
    result = fit_flow(_flow(), X, y, max_epochs=200, patience=3, learning_rate=0.3,
                      batch_size=16)
    assert result.stopped_early
    assert result.n_epochs == result.best_epoch + 3


def test_checkpoint_resume_gives_the_same_result_as_one_run(tmp_path):
    X, y = _two_moons_per_source(60)
    straight = _flow()
    fit_flow(straight, X, y, max_epochs=6, batch_size=32, patience=50)

    checkpoint = tmp_path / "run.ckpt"
    interrupted = _flow()
    first = fit_flow(interrupted, X, y, max_epochs=3, batch_size=32, patience=50,
                     checkpoint=checkpoint)
    assert checkpoint.exists() and first.n_epochs == 3
    resumed_flow = _flow(seed=1)  # different start: everything must come from the file
    resumed = fit_flow(resumed_flow, X, y, max_epochs=6, batch_size=32, patience=50,
                       checkpoint=checkpoint)
    assert resumed.n_epochs == 6 and resumed.validation_loss.shape == (6,)
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed_flow.state_dict()[name], tensor)


def test_checkpoint_from_other_data_is_refused(tmp_path):
    X, y = _two_moons_per_source(30)
    checkpoint = tmp_path / "run.ckpt"
    fit_flow(_flow(), X, y, max_epochs=1, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="other data or settings"):
        fit_flow(_flow(), X * 2, y, max_epochs=2, checkpoint=checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        fit_flow(_flow(), X, y, max_epochs=2, checkpoint=checkpoint)


def test_same_seed_same_weights():
    X, y = _two_moons_per_source(30)
    first, second = _flow(), _flow()
    fit_flow(first, X, y, max_epochs=2, random_state=3)
    fit_flow(second, X, y, max_epochs=2, random_state=3)
    for name, tensor in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], tensor)


def test_max_seconds_stops_training():
    X, y = _two_moons_per_source(30)
    result = fit_flow(_flow(), X, y, max_epochs=10_000, max_seconds=0.5, patience=10_000)
    assert result.n_epochs < 10_000


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros((10, 3)), np.zeros(10, dtype=int), "n_features=4"),
        (np.full((10, 4), np.nan), np.zeros(10, dtype=int), "NaN"),
        (np.zeros((10, 4)), np.zeros(9, dtype=int), "one label per frame"),
        (np.zeros((10, 4)), np.full(10, 3), r"\[0, n_sources=3\)"),
        (np.zeros((10, 4)), np.zeros(10), "integer source indices"),
    ],
)
def test_bad_data_is_refused(X, y, message):
    with pytest.raises(ValueError, match=message):
        fit_flow(_flow(), X, y, max_epochs=1)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"patience": 0}, "patience"),
    ],
)
def test_bad_settings_are_refused(setting, message):
    X, y = _two_moons_per_source(10)
    with pytest.raises(ValueError, match=message):
        fit_flow(_flow(), X, y, **setting)


def test_data_initialisation_centres_each_source_at_its_mean():
    X, y = _two_moons_per_source(50)
    flow = _flow()
    fit_flow(flow, X, y, max_epochs=0)
    with torch.no_grad():
        modes = flow.sample(torch.zeros(3, 4), [0, 1, 2]).numpy()
    _, validation = stratified_split(y, 0.2, random_state=0)
    train = np.setdiff1d(np.arange(y.size), validation)
    for source in range(3):
        expected = X[train][y[train] == source].mean(0)
        np.testing.assert_allclose(modes[source], expected, rtol=1e-4, atol=1e-4)
