"""NMF speed: decomp against scikit-learn and torchnmf, measured side by side in one run.

Problem: the linear magnitude spectrogram (n_fft 1024, so F = 513 bins) of a rendered
piano piece, cropped to T = 2000 frames, K = 88 components, float32, one shared
NNDSVDa initialisation, the same number of iterations, no early stopping.

1. Full factorisation with multiplicative updates, KL and Frobenius: ms per
   iteration, achieved GFLOP/s (counted as the standard form's 4 matmuls of 2·T·K·F
   flops per iteration; decomp's Frobenius updates use Gram matrices and do fewer
   flops, so its figure can exceed the peak: read it as a speed, not a utilisation), the
   fraction of this machine's matmul peak, final loss. The peak is measured twice: on
   the four matmuls of one iteration alone (the best an iteration could do at these
   shapes) and on a 2048² square matmul (the machine's headline figure).
2. Semi-supervised transform with a fixed dictionary of training frames (Frobenius):
   scikit-learn's ``NMF.transform`` with its default solver (coordinate descent) and
   default stopping, against decomp run for just enough iterations to reach an
   equal or lower final loss.
3. A batch of 32 spectrograms decomposed in one engine call against a Python loop of
   32 calls (fixed dictionary, KL, same iterations).

Targets (issue #2): KL-MU iteration >= 1.15x faster than scikit-learn's ``mu`` and
>= 75 % of matmul peak; transform >= 3x faster at equal loss; batched not slower.
Each target line prints PASS or FAIL. Run: ``python benchmarks/nmf_speed.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from decomp import NMF
from decomp.audio import Spectrogram
from decomp.data import DEFAULT_PROTOCOL, labelled_frames, random_piece
from decomp.engine import BetaNMFObjective, Block, beta_divergence, initialize_nmf, minimize


def best_time(function, repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls (seconds): the least disturbed run."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def problem(n_frames: int) -> tuple[np.ndarray, Spectrogram]:
    front_end = Spectrogram(kind="linear", n_fft=1024, hop_length=512)
    piece = random_piece(DEFAULT_PROTOCOL.test_soundfont, n_bars=30, random_state=0)
    X = np.asarray(front_end.transform(piece.audio))[:n_frames].astype(np.float32)
    if X.shape[0] < n_frames:
        raise RuntimeError(f"the rendered piece has only {X.shape[0]} frames")
    return X, front_end


def factorisation(X: np.ndarray, n_components: int, n_iter: int, repeats: int) -> dict:
    from sklearn.decomposition import NMF as SklearnNMF
    from torchnmf.nmf import NMF as TorchNMF

    n_frames, n_bins = X.shape
    X_tensor = torch.from_numpy(X)
    H0, W0 = initialize_nmf(X_tensor, n_components, method="nndsvda")
    flops = 4 * 2 * n_frames * n_components * n_bins
    results = {}
    for beta_name, beta in (("kl", 1.0), ("frobenius", 2.0)):
        def decomp_run(beta=beta):
            objective = BetaNMFObjective(X_tensor[None], beta)
            return minimize(objective, [Block("W", W0, per_item=False), Block("H", H0[None])],
                            schedule=("W", "H"), max_iter=n_iter, tol=0.0,
                            check_every=n_iter)

        def sklearn_run(beta=beta):
            model = SklearnNMF(n_components, init="custom", solver="mu",
                               beta_loss="kullback-leibler" if beta == 1 else "frobenius",
                               max_iter=n_iter, tol=0.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                activations = model.fit_transform(X, W=H0.numpy().copy(), H=W0.numpy().copy())
            return activations, model.components_

        def torchnmf_run(beta=beta):
            model = TorchNMF(W=W0.T.clone(), H=H0.clone())
            model.fit(X_tensor, beta=beta, tol=0.0, max_iter=n_iter)
            return model.H.detach(), model.W.detach().T

        rows = {}
        result = decomp_run()
        loss = float(result.loss[0])
        rows["decomp"] = (best_time(decomp_run, repeats), loss)
        activations, components = sklearn_run()
        loss = float(beta_divergence(X_tensor, torch.from_numpy(activations @ components), beta))
        rows["scikit-learn mu"] = (best_time(sklearn_run, repeats), loss)
        activations, components = torchnmf_run()
        loss = float(beta_divergence(X_tensor, activations @ components, beta))
        rows["torchnmf"] = (best_time(torchnmf_run, repeats), loss)
        results[beta_name] = {name: (seconds / n_iter, loss) for name, (seconds, loss)
                              in rows.items()}
    results["flops"] = flops
    return results


def matmul_peaks(X: np.ndarray, n_components: int, repeats: int) -> tuple[float, float]:
    n_frames, n_bins = X.shape
    H = torch.rand(n_frames, n_components)
    W = torch.rand(n_components, n_bins)
    R = torch.rand(n_frames, n_bins)

    def four_matmuls():
        # The four products of one KL iteration (dictionary, then activations update).
        torch.matmul(H, W)
        torch.matmul(H.T, R)
        torch.matmul(H, W)
        torch.matmul(R, W.T)

    shape_seconds = best_time(four_matmuls, repeats * 10)
    square = torch.rand(2048, 2048)
    square_seconds = best_time(lambda: square @ square, repeats * 3)
    return (8 * n_frames * n_components * n_bins / shape_seconds / 1e9,
            2 * 2048**3 / square_seconds / 1e9)


def transform_comparison(X: np.ndarray, front_end: Spectrogram, repeats: int) -> dict:
    from sklearn.decomposition import NMF as SklearnNMF

    notes = DEFAULT_PROTOCOL.training_notes()
    frames, labels = [], []
    for rendered in notes:
        features = np.asarray(front_end.transform(rendered.audio))
        roll = rendered.roll(front_end.frame_times(features.shape[0]), DEFAULT_PROTOCOL.pitches)
        selected, pitches = labelled_frames(features, roll, DEFAULT_PROTOCOL.pitches)
        frames.append(selected)
        labels.append(pitches)
    ours = NMF(beta_loss="frobenius", dictionary="frames", n_components_per_source=12,
               random_state=0).fit(
        np.concatenate(frames).astype(np.float32), np.concatenate(labels))
    dictionary = ours.components_
    reference = SklearnNMF(dictionary.shape[0])  # default solver: coordinate descent
    reference.fit(np.abs(np.random.default_rng(0).random((4, X.shape[1]))).astype(np.float32))
    reference.components_ = dictionary.astype(np.float32)
    reference.n_components_ = dictionary.shape[0]
    # One timed call: coordinate descent over hundreds of components takes minutes, so the
    # run-to-run noise is small next to it.
    started = time.perf_counter()
    reference_activations = reference.transform(X)
    sklearn_seconds = time.perf_counter() - started
    X_tensor = torch.from_numpy(X)
    sklearn_loss = float(beta_divergence(
        X_tensor, torch.from_numpy(reference_activations @ dictionary), 2.0))
    probe = ours.set_params(tol=0.0, max_iter=2000).decompose(X)
    reached = np.flatnonzero(probe.history[:, 0] <= sklearn_loss)
    if reached.size == 0:
        return {"sklearn_seconds": sklearn_seconds, "sklearn_loss": sklearn_loss,
                "decomp_seconds": float("nan"), "decomp_loss": float(probe.history[-1, 0]),
                "iterations": None, "n_components": dictionary.shape[0]}
    iterations = int(probe.history_iterations[reached[0]])
    ours.set_params(max_iter=iterations)
    decomp_seconds = best_time(lambda: ours.transform(X), repeats)
    decomp_loss = float(ours.decompose(X).loss[0])
    return {"sklearn_seconds": sklearn_seconds, "sklearn_loss": sklearn_loss,
            "decomp_seconds": decomp_seconds, "decomp_loss": decomp_loss,
            "iterations": iterations, "n_components": dictionary.shape[0]}


def batch_comparison(X: np.ndarray, repeats: int, n_items: int = 32) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    model = NMF(n_components=88, max_iter=50, random_state=0).fit(X)
    model.set_params(tol=0.0, max_iter=100)
    length = 200
    starts = rng.integers(0, X.shape[0] - length, n_items)
    batch = np.stack([X[start:start + length] for start in starts])
    batched = best_time(lambda: model.transform(batch), repeats)
    looped = best_time(lambda: [model.transform(item) for item in batch], repeats)
    return batched, looped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--components", type=int, default=88)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"T={args.frames}, F=513, K={args.components}, {args.iterations} iterations, "
          f"best of {args.repeats}")
    X, front_end = problem(args.frames)
    shape_peak, square_peak = matmul_peaks(X, args.components, args.repeats)
    print(f"matmul peak: {shape_peak:.1f} GFLOP/s on one iteration's four matmuls, "
          f"{square_peak:.1f} GFLOP/s on a 2048² matmul")
    results = factorisation(X, args.components, args.iterations, args.repeats)
    flops = results.pop("flops")
    for beta_name, rows in results.items():
        print(f"\nfull factorisation, multiplicative updates, {beta_name}:")
        print(f"  {'':18s} {'ms/iter':>8s} {'GFLOP/s':>8s} {'% shape peak':>13s} "
              f"{'% square peak':>14s} {'final loss':>12s}")
        for name, (seconds, loss) in rows.items():
            gflops = flops / seconds / 1e9
            print(f"  {name:18s} {seconds * 1e3:8.2f} {gflops:8.1f} "
                  f"{100 * gflops / shape_peak:12.1f}% {100 * gflops / square_peak:13.1f}% "
                  f"{loss:12.5g}")
    kl = results["kl"]
    speedup = kl["scikit-learn mu"][0] / kl["decomp"][0]
    fraction = flops / kl["decomp"][0] / 1e9 / shape_peak
    print(f"\nTARGET KL-MU >= 1.15x scikit-learn mu: {speedup:.2f}x "
          f"{'PASS' if speedup >= 1.15 else 'FAIL'}")
    print(f"TARGET KL-MU >= 75% of matmul peak (same shapes): {100 * fraction:.1f}% "
          f"{'PASS' if fraction >= 0.75 else 'FAIL'}")
    print(f"   (against the 2048² peak: {100 * flops / kl['decomp'][0] / 1e9 / square_peak:.1f}%)")

    comparison = transform_comparison(X, front_end, args.repeats)
    print(f"\nsemi-supervised transform, fixed dictionary of {comparison['n_components']} "
          "training frames, Frobenius:")
    print(f"  scikit-learn (cd, default stopping): {comparison['sklearn_seconds'] * 1e3:8.1f} ms, "
          f"loss {comparison['sklearn_loss']:.6g}")
    if comparison["iterations"] is None:
        print(f"  decomp never reached that loss in 2000 iterations (got "
              f"{comparison['decomp_loss']:.6g})\nTARGET transform >= 3x: FAIL")
    else:
        ratio = comparison["sklearn_seconds"] / comparison["decomp_seconds"]
        print(f"  decomp (mu, {comparison['iterations']} iterations):     "
              f"{comparison['decomp_seconds'] * 1e3:8.1f} ms, loss {comparison['decomp_loss']:.6g}")
        print(f"TARGET transform >= 3x faster at equal loss: {ratio:.2f}x "
              f"{'PASS' if ratio >= 3 else 'FAIL'}")

    batched, looped = batch_comparison(X, args.repeats)
    print(f"\nbatch of 32 x 200 frames, KL, 100 iterations: one call {batched * 1e3:.0f} ms, "
          f"loop {looped * 1e3:.0f} ms")
    print(f"TARGET batched not slower than a loop: {looped / batched:.2f}x "
          f"{'PASS' if batched <= looped else 'FAIL'}")


if __name__ == "__main__":
    main()
