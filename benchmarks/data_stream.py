"""Throughput of dynamic mixing (MixtureStream) against the training step it feeds.

Data must never be the bottleneck of training. This script measures, on this machine:

- the stream alone: mixtures per second that a ``torch.utils.data.DataLoader`` over a
  :class:`decomp.data.MixtureStream` delivers with 0, 1 and 2 workers (``--workers``),
  in batches of 16 (``--batch-size``) 2-s crops (``--seconds``) at 16 kHz, 2 or 3
  sources, every augmentation on with probability 0.5 (``--no-augment`` turns it off),
  mixing the default instrument stem bank (:func:`decomp.data.instrument_stems`, both
  training fonts; rendered and cached by the first run, whose time is printed);
- one training step of a representative separator on a batch of the same size, with
  ``torch.set_num_threads(--threads)`` (default 1): the STFT front end of mixtures and
  sources, forward, permutation-invariant loss, backward and an Adam step of
  :class:`decomp.estimators.amortized.MHUNet` (``base_channels=8``, as in
  ``benchmarks/separation_table.py``) or AudioSlots (``--model audioslots``), on a fixed
  batch (no data loading at all);
- the same training steps fed by the stream with each number of workers, end to end.

It prints mixtures/s of each, the ratio stream / training (above 1: the stream is faster
than training consumes) and the end-to-end slowdown against fixed-batch training, and
writes the results as JSON (``--json``, default ``data-stream-results.json``): the
machine, the settings, and per measurement the rate and the time per batch.

Run: ``python benchmarks/data_stream.py`` (``--quick``: a small bank, fewer batches).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from _results import machine

from decomp import __version__
from decomp.data import Augmentation, MixtureStream, instrument_stems
from decomp.estimators.amortized import DEFAULT_FRONT_END, AudioSlots, MHUNet

SAMPLE_RATE = 16000


def build_model(name: str, stream: MixtureStream, n_frames: int) -> Any:
    """A separator fitted for one epoch on a few streamed mixtures (sets up its network)."""
    common = dict(max_epochs=1, random_state=0, device="cpu", chunk_frames=n_frames,
                  batch_size=8, validation_fraction=0.0)
    if name == "mhunet":
        model = MHUNet(base_channels=8, learning_rate=3e-3, **common)
    else:
        model = AudioSlots(n_slots=4, embed_dim=32, n_layers=1, patch_bins=32,
                           decoder_hidden=32, learning_rate=3e-3, **common)
    data = stream.take(8)
    model.fit(data.mixtures, data.sources)  # label-free: permutation-invariant heads
    return model


def make_step(model: Any) -> Any:
    """step(batch) -> seconds of one training step on a streamed batch (STFT included)."""
    network = model._network
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=model.learning_rate)
    front_end = model.front_end_

    def step(batch: Any) -> float:
        started = time.perf_counter()
        mixture = front_end(batch.mixture)  # (B, T, F)
        n_items, n_sources = batch.sources.shape[:2]
        sources = front_end(batch.sources.flatten(0, 1)).unflatten(0, (n_items, n_sources))
        sources = sources[:, : model.n_slots_]
        present = (batch.labels >= 0)[:, : model.n_slots_]
        losses = model._training_losses(network, {"mixture": mixture, "sources": sources,
                                                  "present": present})
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()
        return time.perf_counter() - started

    return step


def loader(stream: MixtureStream, workers: int, batch_size: int) -> Any:
    return torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers,
                                       prefetch_factor=4 if workers else None)


def time_stream(stream: MixtureStream, workers: int, batch_size: int, n_batches: int,
                warmup: int) -> dict[str, float]:
    started = time.perf_counter()
    iterator = iter(loader(stream, workers, batch_size))
    for _ in range(warmup):
        next(iterator)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(n_batches):
        next(iterator)
    seconds = time.perf_counter() - started
    del iterator
    return {"workers": workers, "mixtures_per_second": n_batches * batch_size / seconds,
            "seconds_per_batch": seconds / n_batches, "startup_seconds": first}


def time_training(step: Any, batches: Any, batch_size: int, n_batches: int, warmup: int
                  ) -> dict[str, float]:
    for _ in range(warmup):
        step(next(batches))
    started = time.perf_counter()
    step_seconds = 0.0
    for _ in range(n_batches):
        step_seconds += step(next(batches))
    seconds = time.perf_counter() - started
    return {"mixtures_per_second": n_batches * batch_size / seconds,
            "seconds_per_batch": seconds / n_batches,
            "step_seconds_per_batch": step_seconds / n_batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0, help="crop length")
    parser.add_argument("--sources", type=int, nargs=2, default=[2, 3], metavar=("MIN", "MAX"))
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--model", choices=["mhunet", "audioslots"], default="mhunet")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of training")
    parser.add_argument("--stream-batches", type=int, default=40)
    parser.add_argument("--train-batches", type=int, default=15)
    parser.add_argument("--n-melodies", type=int, default=32, help="of the stem bank")
    parser.add_argument("--quick", action="store_true", help="small bank, fewer batches")
    parser.add_argument("--json", default="data-stream-results.json", help="results file")
    args = parser.parse_args()
    if args.quick:
        args.n_melodies, args.stream_batches, args.train_batches = 4, 10, 4
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    bank = instrument_stems(n_melodies=args.n_melodies)
    bank_seconds = time.perf_counter() - started
    print(f"stem bank: {bank.n_stems} stems of {bank.duration:g} s ({len(bank.classes)} "
          f"instruments x fonts {sorted(set(bank.fonts.tolist()))}), "
          f"{bank.stems.nbytes / 1e6:.0f} MB, ready in {bank_seconds:.1f} s "
          "(render on the first run, else the cache)", flush=True)

    crop = int(round(args.seconds * SAMPLE_RATE))
    stream = MixtureStream(bank, crop_samples=crop, min_sources=args.sources[0],
                           max_sources=args.sources[1], random_state=0,
                           augmentation=None if args.no_augment else Augmentation())
    rows = []
    for workers in args.workers:
        row = time_stream(stream, workers, args.batch_size, args.stream_batches, warmup=2)
        rows.append(row)
        print(f"stream, {workers} workers: {row['mixtures_per_second']:7.1f} mixtures/s "
              f"({1e3 * row['seconds_per_batch']:.0f} ms per batch of {args.batch_size}; "
              f"start-up {row['startup_seconds']:.1f} s)", flush=True)

    model = build_model(args.model, stream, n_frames=DEFAULT_FRONT_END.n_frames(crop))
    step = make_step(model)
    fixed = next(iter(loader(stream, 0, args.batch_size)))

    def repeat():
        while True:
            yield fixed

    training = time_training(step, repeat(), args.batch_size, args.train_batches, warmup=2)
    print(f"training step ({args.model}, {args.threads} thread(s), fixed batch): "
          f"{training['mixtures_per_second']:7.1f} mixtures/s "
          f"({1e3 * training['seconds_per_batch']:.0f} ms per batch)", flush=True)

    fed = []
    for workers in args.workers:
        batches = iter(loader(stream, workers, args.batch_size))
        row = time_training(step, batches, args.batch_size, args.train_batches, warmup=2)
        row["workers"] = workers
        row["slowdown"] = row["seconds_per_batch"] / training["seconds_per_batch"]
        fed.append(row)
        del batches
        print(f"training fed by the stream, {workers} workers: "
              f"{row['mixtures_per_second']:7.1f} mixtures/s (x{row['slowdown']:.2f} the "
              "fixed-batch time)", flush=True)

    print("\n| DataLoader workers | stream alone (mixtures/s) | stream / training | "
          "training fed by the stream (mixtures/s) | slowdown |\n|---:|---:|---:|---:|---:|")
    for row, fed_row in zip(rows, fed, strict=True):
        row["ratio_to_training"] = row["mixtures_per_second"] / training["mixtures_per_second"]
        print(f"| {row['workers']} | {row['mixtures_per_second']:.1f} | "
              f"{row['ratio_to_training']:.1f} | {fed_row['mixtures_per_second']:.1f} | "
              f"x{fed_row['slowdown']:.2f} |")
    print(f"training alone (fixed batch): {training['mixtures_per_second']:.1f} mixtures/s")

    results = {
        "benchmark": "data_stream",
        "decomp_version": __version__,
        "machine": machine(),
        "settings": {"batch_size": args.batch_size, "crop_seconds": args.seconds,
                     "sample_rate": SAMPLE_RATE, "sources": args.sources,
                     "augmentation": not args.no_augment, "model": args.model,
                     "threads": args.threads, "stream_batches": args.stream_batches,
                     "train_batches": args.train_batches, "n_stems": bank.n_stems,
                     "bank_seconds": round(bank_seconds, 2)},
        "stream": rows,
        "training_fixed_batch": training,
        "training_fed_by_stream": fed,
    }
    Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
