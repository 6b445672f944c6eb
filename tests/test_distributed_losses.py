"""gather=True under torch.distributed (2 gloo processes on CPU) equals one process on the concatenated batch.

Each rank holds the same tiny model and its slice of a global batch (unequal
slices: 5 and 3 samples). With ``gather=True`` the loss on every rank must equal
the single-process loss on the whole batch, and the all-reduce *mean* of the
ranks' parameter gradients (what DDP does) the single-process gradient.
"""
from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.train.losses import CKALoss, RDLLoss, RKDLoss, SPLoss
from rdl_neuro.rdm import compute_rdm
from rdl_neuro.train.teachers import RDMTeacher

WORLD = 2
SPLIT = [5, 3]  # per-rank batch sizes (unequal on purpose)


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(SPLIT), 4, generator=g, dtype=torch.float64)
    teacher_feats = torch.randn(sum(SPLIT), 7, generator=g, dtype=torch.float64)
    stim = torch.randn(6, 3, generator=g, dtype=torch.float64)
    rdms = torch.stack([compute_rdm(stim, "euclidean", square=True), compute_rdm(stim.flip(0), "euclidean", square=True)])
    rdms[0, 1, 2] = rdms[0, 2, 1] = float("nan")
    ids = torch.tensor([0, 1, 2, -1, 2, 3, 4, 5])  # uncovered and repeated stimuli, split across ranks
    return model, x, teacher_feats, rdms, ids


def _losses(gather: bool, rdms):
    teacher = RDMTeacher.from_array(rdms, range(6), combine="per_rdm", seed=4)
    return [
        RDLLoss({"1": teacher, "3": "t"}, weights={"3": 0.5}, gather=gather),
        RDLLoss({"1": teacher}, criterion="corr", gather=gather),
        RKDLoss("3", "t", angle_weight=0.5, gather=gather),
        SPLoss("1", "t", gather=gather),
        CKALoss("3", "t", gather=gather),
    ]


def _run_losses(model, x, teacher_feats, ids, losses):
    with LayerRecorder(model, ["1", "3"]) as rec:
        model(x)
        feats = rec.features
    total = 0
    for loss in losses:
        if isinstance(loss, RDLLoss):
            value, _ = loss(feats, ids, {"t": teacher_feats})
        else:
            value = loss(feats[loss.student_layer], teacher_feats)
        total = total + value
    return total


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model, x, teacher_feats, rdms, ids = _setup()
        reference = copy.deepcopy(model)
        start = sum(SPLIT[:rank])
        local = slice(start, start + SPLIT[rank])
        losses_g, losses_s = _losses(True, rdms), _losses(False, rdms)
        for step in range(2):  # two steps: the per-RDM draws must stay in sync
            model.zero_grad()
            loss = _run_losses(model, x[local], teacher_feats[local], ids[local], losses_g)
            loss.backward()
            for p in model[:4].parameters():  # the output layer gets no loss here
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= WORLD
            reference.zero_grad()
            ref_loss = _run_losses(reference, x, teacher_feats, ids, losses_s)
            ref_loss.backward()
            loss_err = abs(loss.item() - ref_loss.item())
            grad_err = max(
                (p.grad - q.grad).abs().max().item() for p, q in zip(model[:4].parameters(), reference[:4].parameters())
            )
            with open(os.path.join(out_dir, f"rank{rank}_step{step}.txt"), "w") as f:
                f.write(f"{loss_err} {grad_err} {ref_loss.item()}\n")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_equals_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(init_file, tmp), nprocs=WORLD, join=True)
        for rank in range(WORLD):
            for step in range(2):
                loss_err, grad_err, value = map(float, open(os.path.join(tmp, f"rank{rank}_step{step}.txt")).read().split())
                assert value > 0
                assert loss_err < 1e-6, f"rank {rank} step {step}: loss differs by {loss_err}"
                assert grad_err < 1e-6, f"rank {rank} step {step}: gradient differs by {grad_err}"


def test_gather_is_identity_without_process_group():
    from rdl_neuro.train.distributed import gather_no_grad, gather_with_grad, world_size_and_rank

    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x and gather_no_grad(x) is x
    assert world_size_and_rank() == (1, 0)
