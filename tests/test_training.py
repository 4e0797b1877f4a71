"""The shared epoch of gradient steps (decomp._training.run_epoch)."""

import torch

from decomp._training import run_epoch


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
