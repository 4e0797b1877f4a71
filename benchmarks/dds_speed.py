"""DDS speed: the stacked flow dictionary against a loop over per-source models, in one run.

DDS searches latent codes Z of a flow dictionary: every update runs all S·M codes through
the flows (W = relu(f(Z)) of shape (S·M, F) and the log-density of each row), forms
``||X - H W||_F + λ Σ_k c_k NLL_k / F`` (X: (T=256, F) random non-negative, H fixed,
c_k the detached activation shares, λ = 1) and back-propagates to Z. The flow
parameters are frozen, so backward needs only input gradients.

1. One DDS-2 iteration (S = 60 sources, M codes per source), three ways: *stacked*,
   ``StackedRealNVP`` through ``FlowDictionaryObjective`` (what ``DDS2.decompose`` runs,
   one ``baddbmm`` per dense layer for all sources, and with the flow frozen a
   hand-written input-gradient backward); *loop*, a Python loop over the 60
   ``flow.per_source_module(s)`` (plain ``nn.Linear`` RealNVPs, how the DDS authors' code
   and a naive user evaluate a bag of models), then concatenation, the loss written out
   by hand; *nflows*, a loop over 60 nflows models (``AffineCouplingTransform`` with the
   same MLP sizes and random permutations; its scale is nflows' sigmoid, so only the
   time is comparable). Stacked and loop are checked to give the same W, loss and
   gradient before timing. Settings: our shipped flow (4 blocks, hidden 32, 1 hidden layer) and
   the papers' (16 blocks, hidden 128, 3 hidden layers), M = 4 and 20, F = 384 (the
   shipped DDS-2's and DDS-3's front end, log STFT cut at 384 bins), F = 172 (a log-CQT
   of 24 bins/octave from 55 Hz, DDS-3's front end before) and, without --quick, F = 1025 (the
   papers' STFT). Then torch.profiler splits one iteration's self CPU time into matmul,
   gather/scatter/copy, elementwise and framework time (autograd nodes, views, checks).
2. Achieved GFLOP/s of the dictionary pass alone (stacked flow forward + backward to Z).
   Counting: a dense layer costs 2·rows·in·out flops forward; with frozen weights its
   backward is one input-gradient product of the same size, so a pass costs 2x the
   forward dense flops (elementwise work, gathers and the log-dets are not counted).
   Against matmul peaks measured now: the pass's layers as batched matmuls (forward and
   transposed), once with one block's weights reused (cache-hot: the best at these
   shapes) and once streaming every block's weights as the pass does; and a 2048²
   matmul. With M rows per source each weight is used for only M rows (2·M flops per
   4 bytes), so the pass can be memory-bound: the table gives the weights' size and the
   time to read them once (forward and backward each read them once).
3. DDS-3: ``DDS3(flow=ConditionalGlow(60, F), max_epochs=0)`` with F the shipped DDS-3's
   bins (384: ``default_dds_front_end("dds3")``; 8 steps, hidden 256, 2 hidden layers;
   untrained: only the cost matters) fitted on random labelled frames, ``decompose`` of a
   (256, F) input with M = 4. The time per iteration is the
   difference between 40 and 20 iterations over 20 (the fixed setup cost apart),
   and the implied real-time factor of a 256-frame chunk (hop 512 at 16 kHz: 8.19 s)
   at 200 and 1000 iterations. The same with ``flow_precision="bfloat16"`` (the flow
   pass under bfloat16 autocast), its ratio to float32, and what ``"auto"`` picks on
   this CPU (bfloat16 only with AMX: set ``ONEDNN_MAX_CPU_ISA`` to ``AVX512_CORE_BF16``,
   ``AVX512_CORE`` or ``AVX2`` to see what a CPU without it gets).

Target (DDS speed issue): stacked >= 10x faster than the loop on the headline setting (our
flow, M = 4, F = 384, as the shipped DDS-2 searches). Timings: warm-up, then best of
``--repeats`` (each repeat averages enough iterations to last ~0.2 s; stacked, loop and
nflows take turns, so that a slow spell of a shared machine reaches all three). Float32,
``--threads`` (default 2) threads. Run: ``python benchmarks/dds_speed.py`` (~1.5 min on 2
cores) or ``--quick`` (~45 s); ``--json PATH`` writes the tables for the docs' Results page.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _results import machine, write_results
from torch import nn

from decomp._backend import resolve_device, resolve_matmul_precision
from decomp.estimators.dds import DDS3
from decomp.estimators.flow_objective import FlowDictionaryObjective
from decomp.flows import ConditionalGlow, StackedRealNVP
from decomp.flows.base import standard_normal_log_prob
from decomp.transcription import default_dds_front_end

N_SOURCES, N_FRAMES, WEIGHT, TARGET = 60, 256, 1.0, 10.0
FLOWS = {"ours 4x32x1": (4, 32, 1), "paper 16x128x3": (16, 128, 3)}


def best_times(functions: dict, repeats: int, budget: float = 0.2) -> dict[str, float]:
    """Seconds per call of each function: warm-up, then the best of ``repeats`` averages
    over ~budget s each, the functions' repeats interleaved so that a slow spell of a
    shared machine reaches all of them alike (a ratio is then measured side by side)."""
    calls = {}
    for name, function in functions.items():
        started = time.perf_counter()
        function()
        calls[name] = max(1, min(50, round(budget / max(time.perf_counter() - started, 1e-6))))
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(calls[name]):
                function()
            times[name].append((time.perf_counter() - started) / calls[name])
    return {name: min(values) for name, values in times.items()}


def best_time(function, repeats: int, budget: float = 0.2) -> float:
    """Seconds per call of one function (see :func:`best_times`)."""
    return best_times({"only": function}, repeats, budget)["only"]


def layer_sizes(n_features: int, hidden: int, n_hidden: int) -> list[tuple[int, int]]:
    sizes = [n_features // 2] + [hidden] * n_hidden + [2 * (n_features - n_features // 2)]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def make_flow(n_bins: int, blocks: int, hidden: int, n_hidden: int) -> StackedRealNVP:
    """A stacked flow whose zero-initialised layers are made random (a generic, non-identity
    flow: the equality check between stacked and loop then means something)."""
    flow = StackedRealNVP(N_SOURCES, n_bins, n_blocks=blocks, hidden_features=hidden,
                          n_hidden_layers=n_hidden, random_state=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for weights, biases in zip(flow.weights, flow.biases, strict=True):
            weights[-1].normal_(0, 0.1 / weights[-1].shape[1] ** 0.5, generator=generator)
            biases[-1].normal_(0, 0.01, generator=generator)
        flow.output_loc.normal_(0, 1, generator=generator)
        flow.output_log_scale.normal_(0, 0.1, generator=generator)
    return flow.eval().requires_grad_(False)


def nflows_model(n_bins: int, blocks: int, hidden: int, n_hidden: int) -> nn.Module:
    from nflows.transforms import AffineCouplingTransform, CompositeTransform
    from nflows.transforms.permutations import RandomPermutation

    class Net(nn.Sequential):  # nflows calls transform_net(x, context)
        def forward(self, x: torch.Tensor, context: object = None) -> torch.Tensor:
            return super().forward(x)

    def net(fan_in: int, fan_out: int) -> nn.Module:
        sizes = [fan_in] + [hidden] * n_hidden + [fan_out]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.SELU()]
        nn.init.normal_(layers[-2].weight, 0, 0.01)
        return Net(*layers[:-1])

    mask = torch.ones(n_bins)
    mask[: n_bins // 2] = -1  # n_bins // 2 conditioning features, the rest transformed
    transforms: list[nn.Module] = []
    for _ in range(blocks):
        transforms += [RandomPermutation(n_bins), AffineCouplingTransform(mask, net)]
    return CompositeTransform(transforms).eval().requires_grad_(False)


def dds_loss(W: torch.Tensor, log_prob: torch.Tensor, X: torch.Tensor,
             H: torch.Tensor) -> torch.Tensor:
    """The DDS-2 loss written out: ||X - H relu(W)||_F + λ Σ_k c_k (-log p_k / F)."""
    share = H.sum(0) / H.sum()
    return (torch.linalg.norm(X - H @ torch.relu(W))
            + WEIGHT * (share * -log_prob / W.shape[1]).sum())


def setting(name: str, n_per_source: int, n_bins: int, repeats: int, with_nflows: bool,
            profile: bool) -> dict:
    blocks, hidden, n_hidden = FLOWS[name]
    flow = make_flow(n_bins, blocks, hidden, n_hidden)
    generator = torch.Generator().manual_seed(2)
    rows = N_SOURCES * n_per_source
    labels = torch.arange(N_SOURCES).repeat_interleave(n_per_source)
    X = torch.rand(N_FRAMES, n_bins, generator=generator)
    H = torch.rand(N_FRAMES, rows, generator=generator) / rows
    Z0 = 0.5 * torch.randn(rows, n_bins, generator=generator)
    objective = FlowDictionaryObjective(X[None], flow=flow, labels=labels, per_frame=False,
                                        likelihood_weight=WEIGHT)
    singles = [flow.per_source_module(s).requires_grad_(False) for s in range(N_SOURCES)]

    def stacked():
        Z = Z0[None].clone().requires_grad_(True)
        loss = objective.loss({"Z": Z, "H": H[None]}).sum()
        return loss, torch.autograd.grad(loss, Z)[0][0]

    def looped(models=singles, forward=lambda m, z: m.forward_and_log_det(z)):
        Z = Z0.clone().requires_grad_(True)
        parts, log_dets = zip(*(forward(m, z) for m, z in
                                zip(models, Z.split(n_per_source), strict=True)), strict=True)
        W = torch.cat(parts)
        loss = dds_loss(W, standard_normal_log_prob(Z) - torch.cat(log_dets), X, H)
        return loss, torch.autograd.grad(loss, Z)[0]

    loss_s, grad_s = stacked()
    loss_l, grad_l = looped()
    with torch.no_grad():
        W_s, _ = objective.dictionary_and_nll(Z0[None])
        W_l = torch.relu(torch.cat([m.forward_and_log_det(z)[0] for m, z in
                                    zip(singles, Z0.split(n_per_source), strict=True)]))
    torch.testing.assert_close(W_l, W_s[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss_l, loss_s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_l, grad_s, rtol=1e-3, atol=1e-4)
    contenders = {"stacked": stacked, "loop": looped}
    if with_nflows:
        models = [nflows_model(n_bins, blocks, hidden, n_hidden) for _ in range(N_SOURCES)]
        # nflows' forward is data -> noise; inverse(z) is the generative map with log-det.
        contenders["nflows"] = lambda: looped(models, lambda m, z: m.inverse(z))
    out = {"name": name, "M": n_per_source, "F": n_bins, "rows": rows, "nflows": float("nan"),
           **best_times(contenders, repeats)}

    # Section 2: the dictionary pass alone, and the peak at its shapes.
    cotangents = (torch.randn(rows, n_bins, generator=generator), torch.randn(rows))

    def dictionary_pass():
        Z = Z0.clone().requires_grad_(True)
        torch.autograd.backward(flow.sample_and_log_prob(Z, labels), cotangents)

    sizes = layer_sizes(n_bins, hidden, n_hidden)
    out["pass_flops"] = 2 * blocks * 2 * rows * sum(a * b for a, b in sizes)
    out["pass"] = best_time(dictionary_pass, repeats)
    weights = [w for block in flow.weights for w in block]
    inputs = {(a, b): (torch.randn(N_SOURCES, n_per_source, a), torch.randn(N_SOURCES, 1, b),
                       torch.randn(N_SOURCES, n_per_source, b)) for a, b in sizes}

    def matmuls(layers):  # each layer forward (baddbmm) and its input gradient (bmm)
        for w in layers:
            x, bias, g = inputs[tuple(w.shape[1:])]
            torch.baddbmm(bias, x, w)
            torch.bmm(g, w.transpose(1, 2))

    # hot: one block's layers again and again (weights stay in cache); all: every block's
    # weights once, as the pass streams them.
    out["hot_peak"] = (2 * 2 * rows * sum(a * b for a, b in sizes)
                       / best_time(lambda: matmuls(weights[:len(sizes)]), repeats * 3) / 1e9)
    out["all_peak"] = out["pass_flops"] / best_time(lambda: matmuls(weights), repeats) / 1e9
    out["weight_mb"] = sum(w.numel() for w in weights) * 4 / 2**20
    # Forward and backward each read every weight once: twice this is a memory floor.
    out["read_once"] = best_time(lambda: [w.sum() for w in weights], repeats)
    if profile:
        out["profile"] = {"stacked": split_time(stacked), "loop": split_time(looped)}
    return out


MATMUL = {"aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::addbmm"}
MOVE = ("index", "cat", "gather", "scatter", "copy_", "zero", "fill_", "clone", "empty",
        "new_", "contiguous", "_to_copy", "split_backward", "slice_backward")
VIEWS = ("view", "reshape", "transpose", "expand", "as_strided", "aten::t", "unsqueeze",
         "squeeze", "chunk", "split", "slice", "select", "detach", "alias", "permute",
         "unbind", "narrow", "_unsafe_view", "resolve")


def split_time(function) -> dict:
    """Self CPU time of one call by kind of op (torch.profiler; it slows small ops down)."""
    function()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        function()
    kinds: dict[str, float] = defaultdict(float)
    n_ops = 0
    for event in prof.key_averages():
        name = event.key
        if name.startswith("aten::"):
            n_ops += event.count
        if name in MATMUL:
            kind = "matmul"
        elif name.startswith("aten::") and any(k in name for k in MOVE):
            kind = "gather/scatter/copy"
        elif name.startswith("aten::") and not any(k in name for k in VIEWS):
            kind = "elementwise"
        else:
            kind = "framework"
        kinds[kind] += event.self_cpu_time_total / 1e3
    return {"ms": dict(kinds), "total": sum(kinds.values()), "ops": n_ops}


def square_peak(repeats: int) -> float:
    square = torch.rand(2048, 2048)
    return 2 * 2048**3 / best_time(lambda: square @ square, repeats, 0.5) / 1e9


def dds3(repeats: int, flow_precision: str = "float32") -> dict:
    n_bins, n_per_source = default_dds_front_end("dds3").n_bins, 4
    glow = ConditionalGlow(N_SOURCES, n_bins, n_steps=8, hidden_features=256,
                           n_hidden_layers=2, random_state=0)
    rng = np.random.default_rng(0)
    frames = rng.random((10 * N_SOURCES, n_bins), dtype=np.float32)
    model = DDS3(n_per_source, flow=glow, max_epochs=0, tol=0.0,
                 flow_precision=flow_precision, random_state=0).fit(
        frames, np.repeat(np.arange(N_SOURCES), 10))
    X = rng.random((N_FRAMES, n_bins), dtype=np.float32)
    assert int(np.max(model.decompose(X, max_iter=40).n_iter)) == 40, "stopped early"
    t_20 = best_time(lambda: model.decompose(X, max_iter=20), repeats, 0)
    per_iter = max(best_time(lambda: model.decompose(X, max_iter=40), repeats, 0) - t_20,
                   0.0) / 20
    rows = N_SOURCES * n_per_source
    dense = sum(a * b for a, b in layer_sizes(n_bins, 256, 2))
    # per step and row: coupling MLP 2·Σ in·out, two triangular solves 2·F², doubled for
    # the input-gradient pass; plus the four (T, K, F) products of H @ W and its gradients.
    flops = 8 * 2 * rows * (2 * dense + 2 * n_bins**2) + 4 * 2 * N_FRAMES * rows * n_bins
    return {"per_iter": per_iter, "fixed": max(t_20 - 20 * per_iter, 0.0), "at_20": t_20 / 20,
            "flops": flops, "n_bins": n_bins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="F = 384 and 172 only, nflows on the headline setting only (~40 s)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, load = time.perf_counter(), os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"best of {args.repeats}; S={N_SOURCES} sources, T={N_FRAMES} frames, λ={WEIGHT}; "
          f"load average {load:.2f} on {os.cpu_count()} CPUs")
    if args.threads > 1 and load > (os.cpu_count() or 1) - args.threads + 1:
        print("  NOTE: if other processes use the CPU, OpenMP threads spin-wait for each other "
              "and multi-threaded small ops slow down several-fold (seen here: 5x); compare "
              "with --threads 1 or OMP_WAIT_POLICY=PASSIVE")
    try:
        import nflows  # noqa: F401
        have_nflows = True
    except ImportError:
        have_nflows = False
    plan = [("ours 4x32x1", 4, 384), ("ours 4x32x1", 4, 172), ("ours 4x32x1", 20, 172),
            ("paper 16x128x3", 4, 172), ("paper 16x128x3", 20, 172)]
    if not args.quick:
        plan += [("ours 4x32x1", 4, 1025), ("paper 16x128x3", 20, 1025)]
    peak = square_peak(args.repeats)
    results = [setting(name, m, f, args.repeats, have_nflows and (i == 0 or not args.quick),
                       profile=i == 0) for i, (name, m, f) in enumerate(plan)]

    print("\n1. one DDS-2 iteration (flow forward + loss + backward to Z), ms; "
          "W, loss and dL/dZ checked equal (stacked vs loop)")
    print(f"  {'flow':15s} {'M':>3s} {'F':>5s} {'rows':>5s} {'stacked':>8s} {'loop':>8s} "
          f"{'ratio':>7s} {'nflows':>8s} {'ratio':>7s}  >=10x")
    for r in results:
        ratio = r["loop"] / r["stacked"]
        nflows_cells = (f"{r['nflows'] * 1e3:8.2f} {r['nflows'] / r['stacked']:6.1f}x"
                        if r["nflows"] == r["nflows"] else f"{'-':>8s} {'-':>7s}")
        print(f"  {r['name']:15s} {r['M']:3d} {r['F']:5d} {r['rows']:5d} "
              f"{r['stacked'] * 1e3:8.2f} {r['loop'] * 1e3:8.2f} {ratio:6.1f}x "
              f"{nflows_cells}  {'PASS' if ratio >= TARGET else 'FAIL'}")
    head = results[0]
    print(f"  where one iteration's time goes, {head['name']} M={head['M']} F={head['F']} "
          "(torch.profiler, self CPU ms; profiling inflates small ops):")
    for method, split in head["profile"].items():
        shares = ", ".join(f"{kind} {ms:.1f}" for kind, ms in sorted(
            split["ms"].items(), key=lambda item: -item[1]))
        print(f"  {method:7s}: {split['ops']:5d} aten ops, {split['total']:.1f} ms = {shares}")

    print(f"\n2. dictionary pass (stacked flow forward + input-gradient backward); peaks in "
          f"GFLOP/s: 2048² matmul {peak:.1f}, 'hot'/'all' = the pass's batched matmuls "
          "with cache-hot / all weights")
    print(f"  {'flow':15s} {'M':>3s} {'F':>5s} {'GFLOP':>6s} {'ms':>7s} {'GFLOP/s':>7s} "
          f"{'hot':>6s} {'all':>6s} {'%hot':>5s} {'%all':>5s} {'%2048²':>6s} "
          f"{'weights':>8s} {'read 1x':>8s}")
    for r in results:
        rate = r["pass_flops"] / r["pass"] / 1e9
        print(f"  {r['name']:15s} {r['M']:3d} {r['F']:5d} {r['pass_flops'] / 1e9:6.2f} "
              f"{r['pass'] * 1e3:7.1f} {rate:7.1f} {r['hot_peak']:6.1f} {r['all_peak']:6.1f} "
              f"{100 * rate / r['hot_peak']:4.0f}% {100 * rate / r['all_peak']:4.0f}% "
              f"{100 * rate / peak:5.1f}% {r['weight_mb']:5.0f} MB {r['read_once'] * 1e3:5.1f} ms")

    glow = dds3(args.repeats)
    rounded = dds3(args.repeats, "bfloat16")
    auto = resolve_matmul_precision("auto", resolve_device("auto"))  # DDS3's device
    chunk = N_FRAMES * 512 / 16000
    rtf = {n: (glow["fixed"] + n * glow["per_iter"]) / chunk for n in (200, 1000)}
    print(f"\n3. DDS-3 search: DDS3.decompose of a (256, {glow['n_bins']}) input, "
          "ConditionalGlow 8 steps x "
          f"256 x 2, C={N_SOURCES}, M=4")
    print(f"  {glow['per_iter'] * 1e3:.2f} ms/iteration ((t(40) - t(20)) / 20), fixed setup "
          f"{glow['fixed'] * 1e3:.1f} ms, {glow['at_20'] * 1e3:.2f} ms/iteration for 20 "
          f"iterations with setup; {glow['flops'] / 1e9:.2f} GFLOP/iteration = "
          f"{glow['flops'] / glow['per_iter'] / 1e9:.1f} GFLOP/s")
    print(f"  implied real-time factor of a 256-frame chunk ({chunk:.2f} s): "
          f"{rtf[200]:.2f} at 200 iterations, {rtf[1000]:.2f} at 1000 iterations")
    print(f"  flow_precision='bfloat16' (the flow pass under bfloat16 autocast): "
          f"{rounded['per_iter'] * 1e3:.2f} ms/iteration, "
          f"{rounded['per_iter'] / glow['per_iter']:.2f}x float32's; 'auto' picks "
          f"{'bfloat16' if auto is not None else 'float32'} on this CPU")

    ratio = head["loop"] / head["stacked"]
    rate = head["pass_flops"] / head["pass"] / 1e9
    print(f"\nsummary ({args.threads} threads, load average {load:.2f} -> "
          f"{os.getloadavg()[0]:.2f}, {time.perf_counter() - started:.0f} s):")
    print(f"TARGET stacked >= {TARGET:.0f}x loop, {head['name']} M={head['M']} F={head['F']}: "
          f"{ratio:.1f}x "
          f"{'PASS' if ratio >= TARGET else 'FAIL'}")
    print("  other settings: " + "; ".join(
        f"{r['name'].split()[0]} M={r['M']} F={r['F']} {r['loop'] / r['stacked']:.1f}x"
        for r in results[1:]))
    print(f"  dictionary pass, headline: {rate:.1f} GFLOP/s = {100 * rate / head['hot_peak']:.0f}%"
          f" of its shapes' hot peak, {100 * rate / peak:.0f}% of the 2048² peak")
    print(f"  DDS-3: {glow['per_iter'] * 1e3:.1f} ms/iteration -> RTF {rtf[200]:.2f} (200 it), "
          f"{rtf[1000]:.2f} (1000 it); the transcription RTF targets are measured by "
          "benchmarks/shared_cpu.py")
    write_results(args.json, {
        "benchmark": "dds_speed", "machine": machine(args.threads),
        "settings": {"threads": args.threads, "repeats": args.repeats, "quick": args.quick,
                     "sources": N_SOURCES, "frames": N_FRAMES, "likelihood_weight": WEIGHT,
                     "load_average": [load, os.getloadavg()[0]]},
        "target_ratio": TARGET,
        "square_peak_gflops": peak,
        "rows": [{key: value for key, value in r.items() if key != "profile"} | {
            "ratio": r["loop"] / r["stacked"], "pass_gflops": r["pass_flops"] / r["pass"] / 1e9,
            # JSON has no NaN: settings without the nflows loop get None
            "nflows": r["nflows"] if r["nflows"] == r["nflows"] else None,
            "nflows_ratio": r["nflows"] / r["stacked"] if r["nflows"] == r["nflows"] else None,
        } for r in results],
        "headline_profile": head["profile"],
        "dds3": glow | {"rtf_200": rtf[200], "rtf_1000": rtf[1000]},
        "dds3_bfloat16": rounded | {"ratio_to_float32": rounded["per_iter"] / glow["per_iter"],
                                    "auto_picks_bfloat16": auto is not None},
        "verdict": "PASS" if ratio >= TARGET else "FAIL",
    })


if __name__ == "__main__":
    main()
