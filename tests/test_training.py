"""The one training loop, its epoch of gradient steps and its checkpoints (decomp._training)."""

import threading

import numpy as np
import pytest
import torch

from decomp._training import cosine_decay, load_checkpoint, run_epoch, save_checkpoint, train
from decomp.exceptions import NonFiniteLossError


def test_run_epoch_steps_on_finite_batches_only_and_averages_their_losses():
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    stepped = []

    def losses_of(batch):
        loss = (weight * batch).square().sum()
        return {"loss": loss if batch.item() != 0 else loss * float("nan"), "twice": 2 * loss}

    means, n_finite = run_epoch([torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0])],
                                losses_of, optimizer, [weight], None, stepped.append)
    assert n_finite == 2 and len(stepped) == 2  # the NaN batch took no step
    # Losses 4 (w=2), then 2.56 (w=2-0.1*4=1.6): their mean, and twice it.
    assert abs(means["loss"] - 3.28) < 1e-6
    assert abs(means["twice"] - 6.56) < 1e-6
    assert abs(weight.item() - 1.28) < 1e-6


def test_run_epoch_clips_the_gradient_norm_and_reports_no_step():
    weight = torch.nn.Parameter(torch.tensor([10.0]))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    run_epoch([None], lambda _: {"loss": weight.square().sum()}, optimizer, [weight], 0.5)
    assert abs(weight.item() - 9.5) < 1e-6  # gradient 20 clipped to norm 0.5
    means, n_finite = run_epoch([None], lambda _: {"loss": weight * float("inf")}, optimizer,
                                [weight], None)
    assert (means, n_finite) == ({}, 0)


def _checkpoint(step: int) -> dict:
    return {"format": "test-checkpoint", "fingerprint": {"n": 1}, "step": step,
            "weights": torch.full((50_000,), float(step))}


def test_checkpoints_from_concurrent_saves_are_complete(tmp_path):
    # Two runs sharing a checkpoint path used to collide on one fixed temporary name.
    path = tmp_path / "run" / "checkpoint.pt"
    errors = []

    def saver(step):
        try:
            for _ in range(10):
                save_checkpoint(path, _checkpoint(step))
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=saver, args=(step,)) for step in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = load_checkpoint(path, "test-checkpoint", {"n": 1}, what="test")
    assert torch.equal(state["weights"], torch.full((50_000,), float(state["step"])))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def test_an_interrupted_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _checkpoint(1))

    def interrupted(state, file):
        file.write(b"PK half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _checkpoint(2))
    monkeypatch.undo()
    assert load_checkpoint(path, "test-checkpoint", {"n": 1}, what="test")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


# ------------------------------------------------------------------- the one loop
def _regression(seed: int = 0):
    """A tiny model with dropout and a noisy loss: it draws from every generator."""
    generator = torch.Generator().manual_seed(0)  # the same data for every seed
    X = torch.randn(64, 3, generator=generator)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=generator)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2),
                                torch.nn.Linear(8, 1))
    return model, X, y


def _run(model, X, y, *, rng, max_epochs, tmp_path=None, patience=100, **options):
    """train() on the regression with batches from (seed, epoch) and noise from ``rng``,
    torch's and Python's generators."""
    import random

    def losses_of(batch):
        index = batch
        noise = float(rng.normal()) * 1e-3 + random.random() * 1e-3
        prediction = model(X[index]).squeeze(1) + 1e-3 * torch.randn(index.numel())
        loss = (prediction - y[index]).square().mean() + noise
        return {"loss": loss, "noise": torch.tensor(noise)}

    def validate():
        with torch.no_grad():
            return float((model(X).squeeze(1) - y).square().mean())

    def epoch_batches(epoch):
        order = torch.as_tensor(np.random.default_rng([0, epoch]).permutation(64))
        return [order[start:start + 16] for start in range(0, 64, 16)]

    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    checkpoint = None if tmp_path is None else tmp_path / "loop.ckpt"
    return train(model, losses_of, validate, epoch_batches, optimizer, max_epochs=max_epochs,
                 patience=patience, generators=[rng], checkpoint=checkpoint,
                 fingerprint={"n": 64}, **options)


def test_train_resumes_exactly_with_every_random_state(tmp_path):
    import random

    random.seed(0)
    model, X, y = _regression()
    straight = _run(model, X, y, rng=np.random.default_rng(1), max_epochs=6)

    random.seed(0)
    first_model, X, y = _regression()
    first = _run(first_model, X, y, rng=np.random.default_rng(1), max_epochs=3,
                 tmp_path=tmp_path)
    assert first.n_epochs == 3 and first.resumed_epoch == 0
    # A fresh process: other weights, other generator states; all must come from the file.
    random.seed(123)
    resumed_model, X, y = _regression(seed=5)
    torch.manual_seed(99)
    resumed = _run(resumed_model, X, y, rng=np.random.default_rng(77), max_epochs=6,
                   tmp_path=tmp_path)
    assert resumed.resumed_epoch == 3 and resumed.n_epochs == 6
    for key in ("train_loss", "train_noise", "validation_loss"):
        np.testing.assert_array_equal(resumed.history[key], straight.history[key])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], tensor, rtol=0, atol=0)
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.initial_validation_loss == straight.initial_validation_loss


def test_the_checkpoint_holds_every_random_state(tmp_path):
    import random

    rng = np.random.default_rng(4)
    model, X, y = _regression()
    _run(model, X, y, rng=rng, max_epochs=2, tmp_path=tmp_path)
    state = load_checkpoint(tmp_path / "loop.ckpt", "decomp-training-checkpoint", {"n": 64},
                            what="test")
    assert torch.equal(state["rng"]["torch"], torch.get_rng_state())
    assert state["rng"]["numpy"] == [rng.bit_generator.state]
    version, internal, gauss = state["rng"]["python"]
    assert (version, tuple(internal), gauss) == random.getstate()
    assert state["epoch"] == 2 and set(state["history"]) == {"train_loss", "train_noise",
                                                              "validation_loss"}


def _scripted(values, *, patience=100, max_epochs=None, **options):
    """train() on a one-weight model whose validation losses are ``values`` in turn; it
    records the weight at each validation."""
    weight = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = torch.optim.SGD([weight], lr=1.0)
    seen = []

    def validate():
        seen.append(float(weight.detach()))
        return values[len(seen) - 1]

    result = train(model, lambda _: {"loss": -weight.sum()}, validate, lambda epoch: [None],
                   optimizer, max_epochs=max_epochs or len(values) - 1, patience=patience,
                   **options)
    return result, seen, float(weight.detach())


def test_train_restores_the_weights_of_the_best_epoch():
    result, seen, final = _scripted([5.0, 3.0, 1.0, 2.0, 4.0])
    assert result.best_epoch == 2 and result.best_validation_loss == 1.0
    assert final == seen[2] == 2.0  # one unit step per epoch; epoch 2's weights
    np.testing.assert_array_equal(result.history["validation_loss"], [3, 1, 2, 4])
    assert result.initial_validation_loss == 5.0 and not result.stopped_early


def test_train_never_selects_a_non_finite_validation_loss():
    result, seen, final = _scripted([float("nan"), float("inf"), 2.0, float("nan")])
    assert result.best_epoch == 2 and final == seen[2]


def test_train_stops_after_patience_epochs_without_improvement():
    result, _, final = _scripted([5.0, 4.0, 4.5, 4.2, 4.1, 3.0], patience=3)
    assert result.stopped_early and result.n_epochs == 4 and result.best_epoch == 1
    assert final == 1.0


def test_patience_may_grow_when_a_run_resumes(tmp_path):
    values = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0]
    first, _, _ = _scripted(values, patience=2, checkpoint=tmp_path / "c.ckpt")
    assert first.stopped_early and first.n_epochs == 3
    again, _, _ = _scripted(values[:1] + values[4:], patience=2, checkpoint=tmp_path / "c.ckpt",
                            max_epochs=5)  # the resumed run validates epochs 4 and 5
    assert again.n_epochs == 3  # same patience: nothing more to do
    more, _, final = _scripted([4.1, 3.0], patience=5, checkpoint=tmp_path / "c.ckpt",
                               max_epochs=5)
    assert more.n_epochs == 5 and more.best_epoch == 5 and final == 5.0


def _slow_run(epoch_seconds, **options):
    """train() on a one-weight model whose epochs each take at least ``epoch_seconds``."""
    import time

    weight = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Module()
    model.weight = weight

    def slow(epoch):
        time.sleep(epoch_seconds)
        return [None]

    return train(model, lambda _: {"loss": weight.square().sum() + 1}, lambda: 1.0, slow,
                 torch.optim.SGD([weight], lr=0.1), **options)


def test_train_keeps_to_its_time_budget():
    result = _slow_run(0.05, max_epochs=10_000, patience=10_000, max_seconds=0.3)
    assert 1 <= result.n_epochs <= 10 and not result.stopped_early


def _timed_run(checkpoint, max_epochs):
    return _slow_run(0.02, max_epochs=max_epochs, patience=100, checkpoint=checkpoint)


def test_the_checkpoint_records_the_training_time_a_resumed_run_adds_to(tmp_path):
    path = tmp_path / "timed.ckpt"
    first = _timed_run(path, 3)
    recorded = torch.load(path, weights_only=True)["training_seconds"]
    assert first.earlier_seconds == 0
    assert 0.06 <= recorded <= first.seconds  # three epochs of 20 ms, up to the last save
    resumed = _timed_run(path, 5)
    assert resumed.resumed_epoch == 3 and resumed.earlier_seconds == recorded
    assert torch.load(path, weights_only=True)["training_seconds"] == pytest.approx(
        recorded + resumed.seconds, abs=0.01)


def test_a_checkpoint_without_the_training_time_resumes_with_a_warning(tmp_path):
    path = tmp_path / "old.ckpt"
    _timed_run(path, 2)
    state = torch.load(path, weights_only=True)
    del state["training_seconds"]  # as written before decomp recorded it
    save_checkpoint(path, state)
    with pytest.warns(RuntimeWarning, match="does not record how long its earlier runs"):
        resumed = _timed_run(path, 3)
    assert resumed.resumed_epoch == 2 and resumed.earlier_seconds == 0


def test_train_reports_an_epoch_of_non_finite_losses_and_keeps_the_best_weights():
    weight = torch.nn.Parameter(torch.ones(1))
    model = torch.nn.Module()
    model.weight = weight
    calls = []

    def losses_of(_):
        calls.append(1)
        return {"loss": weight.sum() * (float("nan") if len(calls) > 1 else 1.0)}

    with pytest.raises(NonFiniteLossError, match="epoch 2 .* try less"):
        train(model, losses_of, lambda: -float(len(calls)), lambda epoch: [None],
              torch.optim.SGD([weight], lr=0.5), max_epochs=5, patience=5,
              non_finite_hint="try less.")
    assert float(weight.detach()) == 0.5  # epoch 1's weights, the best


def test_fit_flow_resumes_exactly_through_the_loop(tmp_path):
    from decomp.flows import StackedRealNVP, fit_flow

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)).astype(np.float32) + np.repeat(np.arange(3), 40)[:, None]
    y = np.repeat(np.arange(3), 40)

    def flow(seed):
        return StackedRealNVP(3, 4, n_blocks=2, hidden_features=8, n_hidden_layers=1,
                              random_state=seed)

    straight = flow(0)
    expected = fit_flow(straight, X, y, max_epochs=4, batch_size=32, patience=50)
    fit_flow(flow(0), X, y, max_epochs=2, batch_size=32, patience=50,
             checkpoint=tmp_path / "flow.ckpt")
    resumed = flow(1)
    result = fit_flow(resumed, X, y, max_epochs=4, batch_size=32, patience=50,
                      checkpoint=tmp_path / "flow.ckpt")
    np.testing.assert_array_equal(result.validation_loss, expected.validation_loss)
    assert result.best_epoch == expected.best_epoch
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_separator_resumes_exactly_through_the_loop(tmp_path):
    from decomp.estimators.amortized import AudioSlots

    rng = np.random.default_rng(0)
    sources = rng.random((8, 2, 24, 17)).astype(np.float32)
    params = dict(n_slots=2, patch_frames=4, patch_bins=17, embed_dim=16, n_layers=1,
                  n_heads=2, decoder_hidden=16, chunk_frames=8, batch_size=4, patience=50,
                  device="cpu", random_state=0)
    straight = AudioSlots(max_epochs=4, **params).fit(sources.sum(1), sources)
    AudioSlots(max_epochs=2, checkpoint=tmp_path / "s.ckpt", **params).fit(sources.sum(1),
                                                                            sources)
    recorded = torch.load(tmp_path / "s.ckpt", weights_only=True)["training_seconds"]
    # Nothing left to train: the fit only loads the checkpoint, yet reports its time, as
    # n_epochs_ reports its epochs.
    loaded = AudioSlots(max_epochs=2, checkpoint=tmp_path / "s.ckpt", **params).fit(
        sources.sum(1), sources)
    assert loaded.n_epochs_ == 2 and loaded.training_seconds_ >= recorded > 0
    resumed = AudioSlots(max_epochs=4, checkpoint=tmp_path / "s.ckpt", **params).fit(
        sources.sum(1), sources)
    assert resumed.n_epochs_ == 4
    assert resumed.training_seconds_ > recorded
    for key, value in straight.history_.items():
        np.testing.assert_array_equal(resumed.history_[key], value)
    for key, value in straight.network_state_.items():
        torch.testing.assert_close(resumed.network_state_[key], value, rtol=0, atol=0)


def test_cosine_decay_holds_then_falls_monotonically_to_its_final_factor():
    factor = cosine_decay(max_epochs=10, decay_epochs=4, final_factor=0.01)
    values = [factor(epoch) for epoch in range(1, 13)]
    assert values[:6] == [1.0] * 6  # epochs 1-6 keep the rate
    assert all(later < earlier for earlier, later in zip(values[5:9], values[6:10], strict=True))
    assert values[7] == pytest.approx(0.505)  # half-way through the decay (epoch 8)
    assert values[9] == pytest.approx(0.01) and values[10:] == [pytest.approx(0.01)] * 2
    assert [cosine_decay(5, 0)(epoch) for epoch in (1, 5, 9)] == [1.0, 1.0, 1.0]


def test_train_sets_each_epochs_learning_rate_from_the_schedule():
    model, X, y = _regression()
    seen = []
    optimizer_rates = []

    def factor(epoch):
        seen.append(epoch)
        return 1.0 / epoch

    class Recording(torch.optim.Adam):
        def step(self, *args, **kwargs):
            optimizer_rates.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    optimizer = Recording(model.parameters(), lr=0.01)
    train(model, lambda batch: {"loss": (model(X[batch]).squeeze(1) - y[batch]).square().mean()},
          lambda: 0.0, lambda epoch: [torch.arange(16)], optimizer, max_epochs=3, patience=10,
          learning_rate_factor=factor)
    assert seen == [1, 2, 3]
    assert optimizer_rates == pytest.approx([0.01, 0.005, 0.01 / 3])


def test_a_scheduled_run_resumes_exactly(tmp_path):
    import random

    schedule = cosine_decay(max_epochs=6, decay_epochs=4)
    random.seed(0)
    model, X, y = _regression()
    straight = _run(model, X, y, rng=np.random.default_rng(1), max_epochs=6,
                    learning_rate_factor=schedule)
    random.seed(0)
    first_model, X, y = _regression()
    _run(first_model, X, y, rng=np.random.default_rng(1), max_epochs=4, tmp_path=tmp_path,
         learning_rate_factor=schedule)
    resumed_model, X, y = _regression(seed=5)
    resumed = _run(resumed_model, X, y, rng=np.random.default_rng(77), max_epochs=6,
                   tmp_path=tmp_path, learning_rate_factor=schedule)
    np.testing.assert_array_equal(resumed.history["train_loss"], straight.history["train_loss"])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_separator_run_at_a_constant_rate_resumes_into_its_decay(tmp_path):
    from decomp.estimators.amortized import AudioSlots

    rng = np.random.default_rng(0)
    sources = rng.random((8, 2, 24, 17)).astype(np.float32)
    params = dict(n_slots=2, patch_frames=4, patch_bins=17, embed_dim=16, n_layers=1,
                  n_heads=2, decoder_hidden=16, chunk_frames=8, batch_size=4, patience=50,
                  device="cpu", random_state=0)
    # The decay starts after epoch 2, so two constant epochs then a resumed decay equal
    # one scheduled run.
    straight = AudioSlots(max_epochs=4, learning_rate_decay=2, **params).fit(
        sources.sum(1), sources)
    AudioSlots(max_epochs=2, checkpoint=tmp_path / "s.ckpt", **params).fit(sources.sum(1),
                                                                            sources)
    resumed = AudioSlots(max_epochs=4, learning_rate_decay=2, checkpoint=tmp_path / "s.ckpt",
                         **params).fit(sources.sum(1), sources)
    for key, value in straight.history_.items():
        np.testing.assert_array_equal(resumed.history_[key], value)
    constant = AudioSlots(max_epochs=4, **params).fit(sources.sum(1), sources)
    assert not np.array_equal(constant.history_["train_loss"], straight.history_["train_loss"])


def test_a_checkpoint_of_an_older_loop_is_refused_with_advice(tmp_path):
    path = tmp_path / "old.ckpt"
    save_checkpoint(path, {"format": "decomp-training-checkpoint", "fingerprint": {},
                           "epoch": 1, "network": {}})
    with pytest.raises(ValueError, match="older decomp .*delete it"):
        _scripted([1.0, 0.5], checkpoint=path)
