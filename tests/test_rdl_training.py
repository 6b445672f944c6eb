"""RDL trains: the student's RDM on the teacher's stimuli moves towards a random RDMTeacher / a NetworkTeacher."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rdl_neuro.rdm.compare import compare_rdms
from rdl_neuro.data import UNCOVERED
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.train.losses import RDLLoss
from rdl_neuro.rdm import compute_rdm
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

N_STIM, DIM = 24, 10


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread avoids OpenMP contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3))


def rdm_corr(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor) -> float:
    with torch.no_grad(), LayerRecorder(model, [layer]) as rec:
        model(x)
        rdm = compute_rdm(rec.features[layer], "euclidean")
    return float(compare_rdms(rdm, target, "corr"))


@pytest.mark.parametrize("criterion", ["mse", "corr"])
def test_training_towards_random_rdm_teacher(criterion):
    g = torch.Generator().manual_seed(1)
    stimuli = torch.randn(N_STIM, DIM, generator=g)
    extra = torch.randn(200, DIM, generator=g)  # uncovered samples in every batch
    ids = torch.arange(500, 500 + N_STIM)
    target = compute_rdm(torch.randn(N_STIM, 4, generator=g), "euclidean")  # unrelated to the inputs
    teacher = RDMTeacher.from_array(target, ids.tolist())
    model = student()
    loss_fn = RDLLoss({"3": teacher}, criterion=criterion)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = rdm_corr(model, "3", stimuli, target)
    with LayerRecorder(model, ["3"]) as rec:
        for _ in range(300):
            pick = torch.randint(N_STIM, (12,), generator=g)  # repeats happen and are masked
            other = torch.randint(len(extra), (4,), generator=g)
            x = torch.cat([stimuli[pick], extra[other]])
            batch_ids = torch.cat([ids[pick], torch.full((4,), UNCOVERED)])
            model(x)
            loss, _ = loss_fn(rec.features, batch_ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = rdm_corr(model, "3", stimuli, target)
    assert before < 0.4
    assert after > 0.8 and after > before + 0.4, (before, after)


def test_training_towards_network_teacher_of_other_architecture():
    torch.manual_seed(2)
    teacher_model = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 5))
    teacher = NetworkTeacher(teacher_model, ["3"], cache=True)
    g = torch.Generator().manual_seed(3)
    stimuli = torch.randn(N_STIM, DIM, generator=g)
    ids = torch.arange(N_STIM)
    with torch.no_grad():
        target = compute_rdm(teacher(stimuli)[1]["3"], "euclidean")
    model = student()
    loss_fn = RDLLoss({"3": "3"}, criterion="scaled_mse")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = rdm_corr(model, "3", stimuli, target)
    with LayerRecorder(model, ["3"]) as rec:
        for _ in range(150):
            pick = torch.randperm(N_STIM, generator=g)[:12]
            _, t_feats = teacher(stimuli[pick], ids[pick])
            model(stimuli[pick])
            loss, _ = loss_fn(rec.features, ids[pick], t_feats)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = rdm_corr(model, "3", stimuli, target)
    assert after > 0.8 and after > before + 0.3, (before, after)
    assert teacher.cache_misses == N_STIM  # the fixed teacher ran once per stimulus
