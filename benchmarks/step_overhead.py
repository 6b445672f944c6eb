"""Cost of RDL per training step: CE alone vs CE + RDL on both hidden layers.

Student: MLP 784-800-800-10 (ReLU), batch 128, SGD. Three step variants, each
on its own copy of the same initial student and on the same batches:

``ce``       forward, cross-entropy, backward, SGD step
``fixed``    + RDL (``RDLLoss``, euclidean, mse) on both hidden layers against a
             precomputed ``RDMTeacher`` over all stimuli (the brain-RDM case)
``network``  + RDL on both hidden layers against a ``NetworkTeacher``
             (MLP 784-1200-1200-10, run on every batch, no cache)
``products``  + only the two matrix products per hidden layer that any RDL step needs
             (the Gram matrix ``X X^T`` forward, ``B X`` backward): the floor for ``fixed``

The variants are interleaved (random order in every repeat) so that machine
load drifts hit them alike; each repeat times a few consecutive steps, and the
median over repeats is reported. The last line is

    RESULT rdl_fixed_overhead=<fixed/ce> rdl_network_overhead=<network/ce> rdl_fixed_vs_floor=<fixed/products>

Usage: ``python benchmarks/step_overhead.py [--quick] [--repeats N] [--threads T]``
"""
from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from _provenance import add_arguments, start_record

from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.train.losses import RDLLoss
from rdl_neuro.rdm import compute_rdm
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

HIDDEN_LAYERS = ("relu1", "relu2")


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """MLP with named layers fc1, relu1, fc2, relu2, ..., out."""
    layers: list[tuple[str, nn.Module]] = []
    for k, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1]), start=1):
        layers += [(f"fc{k}", nn.Linear(a, b)), (f"relu{k}", nn.ReLU())]
    layers.append(("out", nn.Linear(sizes[-2], sizes[-1])))
    return nn.Sequential(OrderedDict(layers))


class _ProductsOnly(torch.autograd.Function):
    """The matrix products of an RDL term and nothing else: ``sum(X X^T)`` forward, ``G X`` backward
    (the shapes and cost of the Gram matrix and of RDL's ``S X`` gradient product)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gram = x @ x.T
        ctx.save_for_backward(x, gram)
        return gram.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x, gram = ctx.saved_tensors
        return gram @ x * grad


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a smoke run, noisy numbers)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 40, quick 5)")
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps per timed repeat")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-stimuli", type=int, default=1000, help="stimuli covered by the fixed teacher RDM")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rec = start_record("step_overhead", args, argv, seeds=args.seed,
                       depends_on=["rdl_neuro/train/losses.py", "rdl_neuro/train/teachers.py", "rdl_neuro/rdm",
                                   "rdl_neuro/model/recorder.py", "benchmarks/step_overhead.py"])
    repeats = args.repeats or (5 if args.quick else 40)
    warmup = 2 if args.quick else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    # stimuli and their ids; every batch draws distinct stimuli (all covered by the fixed teacher)
    n, b = args.n_stimuli, args.batch_size
    images = torch.rand(n, 784)
    labels = torch.randint(10, (n,))
    ids = torch.arange(n) + 10_000
    n_batches = 16
    batches = [torch.randperm(n)[:b] for _ in range(n_batches)]

    student0 = mlp((784, 800, 800, 10))
    teacher_net = mlp((784, 1200, 1200, 10))
    network_teacher = NetworkTeacher(teacher_net, HIDDEN_LAYERS)
    # the brain-like fixed RDM: precomputed once over all stimuli (here from the teacher's second hidden layer)
    with torch.no_grad():
        _, feats = network_teacher(images)
        fixed = RDMTeacher.from_array(compute_rdm(feats["relu2"], "euclidean", square=True), ids.tolist(), method="euclidean")

    def make_variant(kind: str):
        model = copy.deepcopy(student0)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        recorder = LayerRecorder(model, HIDDEN_LAYERS) if kind != "ce" else None
        if kind == "fixed":
            rdl = RDLLoss({layer: fixed for layer in HIDDEN_LAYERS})
        elif kind == "network":
            rdl = RDLLoss({layer: layer for layer in HIDDEN_LAYERS})
        state = {"i": 0}

        def step() -> None:
            idx = batches[state["i"] % n_batches]
            state["i"] += 1
            x, y, sid = images[idx], labels[idx], ids[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if kind == "fixed":
                loss = loss + rdl(recorder.features, sid)[0]
            elif kind == "products":
                feats = recorder.features
                loss = loss + 1e-9 * sum(_ProductsOnly.apply(feats[layer]) for layer in HIDDEN_LAYERS)
            elif kind == "network":
                _, t_feats = network_teacher(x, sid)
                loss = loss + rdl(recorder.features, sid, t_feats)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    variants = {kind: make_variant(kind) for kind in ("ce", "fixed", "network", "products")}
    for step in variants.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {kind: [] for kind in variants}  # wall clock
    cpu: dict[str, list[float]] = {kind: [] for kind in variants}  # process CPU time (less sensitive to other load)
    for _ in range(repeats):
        order = list(variants)
        rng.shuffle(order)
        for kind in order:
            step = variants[kind]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            times[kind].append((time.perf_counter() - t0) / args.steps)
            cpu[kind].append((time.process_time() - c0) / args.steps)

    med = {kind: statistics.median(t) for kind, t in times.items()}
    ratios = {kind: med[kind] / med["ce"] for kind in med}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {b}, "
        f"{repeats} repeats x {args.steps} steps (interleaved), {n} stimuli in the fixed teacher"
    )
    print(f"{'variant':<10} {'median ms/step':>15} {'IQR ms':>14} {'ratio to ce':>12}")
    for kind in variants:
        q = statistics.quantiles(times[kind], n=4) if len(times[kind]) >= 2 else [med[kind]] * 3
        print(f"{kind:<10} {1e3 * med[kind]:>15.2f} {1e3 * q[0]:>6.2f}-{1e3 * q[2]:<7.2f} {ratios[kind]:>12.3f}")
    cpu_med = {kind: statistics.median(t) for kind, t in cpu.items()}
    print(
        "process CPU time ratios (less sensitive to other load on the machine): "
        + ", ".join(f"{kind}={cpu_med[kind] / cpu_med['ce']:.3f}" for kind in cpu_med)
    )
    print(f"floor: the matrix products alone cost {ratios['products']:.3f}x the CE step")
    vs_floor = med["fixed"] / med["products"]
    print(f"fixed-teacher step against its floor (the products-only step): {vs_floor:.3f}x wall, "
          f"{cpu_med['fixed'] / cpu_med['products']:.3f}x process CPU")
    result = (f"RESULT rdl_fixed_overhead={ratios['fixed']:.3f} rdl_network_overhead={ratios['network']:.3f} "
              f"rdl_fixed_vs_floor={vs_floor:.3f}")
    import pandas as pd

    steps = {"ce": "cross-entropy", "fixed": "+ RDL on both hidden layers, fixed RDM teacher",
             "products": "+ only the two matrix products per layer that RDL needs",
             "network": "+ RDL against a network teacher (MLP 784-1200-1200-10)"}
    table = pd.DataFrame([{"step": steps[k], "ms": f"{1e3 * med[k]:.2f}", "ratio to CE": f"{ratios[k]:.2f}",
                           "CPU-time ratio": f"{cpu_med[k] / cpu_med['ce']:.2f}"} for k in steps])
    rec.finish(table, result_line=result,
               values={"threads": torch.get_num_threads(),
                       "rdl_above_products": f"{100 * (ratios['fixed'] - ratios['products']):.0f}%",
                       "products_ratio": f"{ratios['products']:.2f}"},
               title=f"Cost of RDL per training step: MLP 784-800-800-10, batch {b}, "
                     f"{torch.get_num_threads()} thread(s), median of {repeats} interleaved repeats")
    print(result)
    return ratios


if __name__ == "__main__":
    main(sys.argv[1:])
