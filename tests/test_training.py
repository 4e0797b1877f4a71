"""The shared epoch of gradient steps and the checkpoint files (decomp._training)."""

import threading

import pytest
import torch

from decomp._training import load_checkpoint, run_epoch, save_checkpoint


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
