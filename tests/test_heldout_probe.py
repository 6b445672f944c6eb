"""HeldOutProbe: student-brain comparison on held-out stimuli and subjects, per epoch, without changing training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from rdl_neuro.data.stimulus import StimulusDataset
from rdl_neuro.inference import rsa_evaluate
from rdl_neuro.model import layer_rdms
from rdl_neuro.rdm import compute_rdm, to_rsatoolbox
from rdl_neuro.train import CELoss, HeldOutProbe, RDLLoss, RDMTeacher, Trainer, seed_everything
from rdl_neuro.vis import plot_history

N_STIM, N_TRAIN, DIM = 60, 40, 20
SUBJECTS = ["s0", "s1", "s2"]


class Student(nn.Module):
    """A small MLP with dropout and batch norm: both must be untouched by the probe."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(DIM, 32)
        self.bn = nn.BatchNorm1d(32)
        self.hidden1 = nn.ReLU()
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.hidden1(self.bn(self.fc1(x)))))


@pytest.fixture(scope="module")
def task():
    """Stimuli whose 'brain' geometry lives in 3 of 20 input dimensions (a random network sees all 20), the
    RDMs of 3 noisy subjects over all 60 stimuli; the teacher holds the first 40 stimuli of subjects s0, s1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_STIM, DIM, generator=g)
    core = 4 * x[:, :3]
    subj = [compute_rdm(core + 0.3 * torch.randn(core.shape, generator=g), "correlation") for _ in SUBJECTS]
    ids = list(range(100, 100 + N_STIM))
    brain = to_rsatoolbox(torch.stack(subj), ids, "correlation", {"subject": SUBJECTS})
    train_ids = ids[:N_TRAIN]
    teacher = RDMTeacher.from_rsatoolbox(brain.subset("subject", ["s0", "s1"]).subset_pattern("stimulus", train_ids),
                                         combine="mean")
    labels = torch.full((N_TRAIN,), -100)  # unlabelled: the RDL term alone trains
    data = StimulusDataset(TensorDataset(x[:N_TRAIN], labels), train_ids)
    return {"x": x, "ids": ids, "brain": brain, "teacher": teacher, "data": data}


def probe_of(task, **kwargs) -> HeldOutProbe:
    return HeldOutProbe(task["x"][N_TRAIN:], task["ids"][N_TRAIN:], task["brain"], "hidden1", **kwargs)


def trainer_of(task, probe: HeldOutProbe | None, epochs: int = 30, seed: int = 0) -> Trainer:
    seed_everything(seed)
    model = Student()
    losses = {"rdl": RDLLoss({"hidden1": task["teacher"]}, method="correlation", criterion="corr")}
    return Trainer(model, task["data"], losses=losses, optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                   batch_size=20, epochs=epochs, seed=seed, quiet=True, heldout_probe=probe, device="cpu")


def test_heldout_r_rises_when_the_student_learns_the_teachers_geometry(task):
    probe = probe_of(task, heldout_subjects=["s2"], subject_descriptor="subject")
    trainer = trainer_of(task, probe, epochs=20)
    before = probe.measure(trainer.model, trainer.device)
    history = trainer.fit()
    assert list(before) == probe.columns == ["heldout_corr_hidden1", "heldout_stim_corr_hidden1"]
    first, last = before["heldout_corr_hidden1"], history["heldout_corr_hidden1"].iloc[-1]
    # new stimuli and a new subject: the random network's geometry is far from the brain's, the trained one close
    assert first < 0.6 and last > first + 0.25, (first, last)
    assert history["heldout_stim_corr_hidden1"].iloc[-1] > before["heldout_stim_corr_hidden1"] + 0.25
    # the probe's number is the library's: layer_rdms + rsa_evaluate against subject s2 on the held-out stimuli
    rdms = layer_rdms(trainer.model, task["x"][N_TRAIN:], "hidden1", "correlation", stimulus_ids=task["ids"][N_TRAIN:],
                      progress=False)
    held = task["brain"].subset("subject", ["s2"]).subset_pattern("stimulus", task["ids"][N_TRAIN:])
    seen = task["brain"].subset("subject", ["s0", "s1"])
    assert last == pytest.approx(float(rsa_evaluate(rdms, held, "corr", noise_ceiling=False).fixed[0]), abs=1e-12)
    assert history["heldout_stim_corr_hidden1"].iloc[-1] == pytest.approx(
        float(rsa_evaluate(rdms, seen, "corr", noise_ceiling=False).fixed[0]), abs=1e-12)
    # plot_history draws both in their own panel
    fig = plot_history(history)
    panels = {ax.get_title(): [line.get_label() for line in ax.lines] for ax in fig.axes}
    assert panels["student-brain RDMs, held-out stimuli"] == ["heldout_corr_hidden1", "heldout_stim_corr_hidden1"]


def test_the_probe_does_not_change_training(task):
    """Same weights, batch-norm statistics, history and RNG state with and without the probe."""
    runs = []
    for probe in (None, probe_of(task)):
        trainer = trainer_of(task, probe, epochs=3)
        history = trainer.fit()
        runs.append((trainer.model.state_dict(), history, torch.get_rng_state()))
    (w0, h0, rng0), (w1, h1, rng1) = runs
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert list(h1.columns) == [*h0.columns, "heldout_corr_hidden1"]
    pd.testing.assert_frame_equal(h0.drop(columns="time_s"), h1[h0.columns].drop(columns="time_s"))
    assert torch.equal(rng0, rng1)


class NoisyEval(nn.Module):
    """Draws from the global generator even in eval mode (a forward a probe cannot control)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1e-3 * torch.randn_like(x)


@pytest.mark.parametrize("mode", [True, False])
def test_measure_keeps_mode_rng_and_gradients(task, mode):
    model = Student()
    model.hidden1 = nn.Sequential(nn.ReLU(), NoisyEval())
    model.train(mode)
    state = torch.get_rng_state()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    out = HeldOutProbe(task["x"][N_TRAIN:], task["ids"][N_TRAIN:], task["brain"], "hidden1").measure(
        model, torch.device("cpu"))
    assert np.isfinite(out["heldout_corr_hidden1"])
    assert torch.equal(torch.get_rng_state(), state)
    assert all(m.training == mode for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())  # batch-norm statistics too


def test_several_layers_other_methods_and_every_subject(task):
    model = Student()
    probe = HeldOutProbe(task["x"][N_TRAIN:], task["ids"][N_TRAIN:], task["brain"], ["fc1", "hidden1"],
                         method="euclidean", compare="spearman")
    out = probe.measure(model, torch.device("cpu"))
    assert list(out) == probe.columns == ["heldout_spearman_fc1", "heldout_spearman_hidden1"]
    rdms = layer_rdms(model, task["x"][N_TRAIN:], ["fc1", "hidden1"], "euclidean",
                      stimulus_ids=task["ids"][N_TRAIN:], progress=False)
    held = task["brain"].subset_pattern("stimulus", task["ids"][N_TRAIN:])
    with pytest.warns(UserWarning, match="dissimilarity measure"):  # euclidean student vs correlation brain
        expected = rsa_evaluate(rdms, held, "spearman", noise_ceiling=False).fixed
    assert [out["heldout_spearman_fc1"], out["heldout_spearman_hidden1"]] == pytest.approx(expected, abs=1e-12)


def test_stimulus_order_follows_the_ids_not_the_brain(task):
    """Held-out stimuli given in another order than the brain RDMs' give the same numbers."""
    model = Student()
    perm = torch.randperm(N_STIM - N_TRAIN, generator=torch.Generator().manual_seed(1))
    x, ids = task["x"][N_TRAIN:], task["ids"][N_TRAIN:]
    a = HeldOutProbe(x, ids, task["brain"], "hidden1").measure(model, torch.device("cpu"))
    b = HeldOutProbe(x[perm], [ids[i] for i in perm], task["brain"], "hidden1").measure(model, torch.device("cpu"))
    assert a["heldout_corr_hidden1"] == pytest.approx(b["heldout_corr_hidden1"], abs=1e-12)
    # while a wrong pairing of inputs and ids changes them
    c = HeldOutProbe(x[perm], ids, task["brain"], "hidden1").measure(model, torch.device("cpu"))
    assert abs(c["heldout_corr_hidden1"] - a["heldout_corr_hidden1"]) > 1e-3


def test_bad_input_names_the_problem(task):
    x, ids, brain = task["x"][N_TRAIN:], task["ids"][N_TRAIN:], task["brain"]
    with pytest.raises(ValueError, match=r"2 held-out stimulus ids are not in brain_rdms: \[7, 8\]"):
        HeldOutProbe(x, [*ids[:-2], 7, 8], brain, "hidden1")
    with pytest.raises(TypeError, match="different kinds"):
        HeldOutProbe(x, [str(i) for i in ids], brain, "hidden1")
    with pytest.raises(ValueError, match=r"duplicate stimulus ids \[100\]"):
        HeldOutProbe(x, [100, *ids[1:-1], 100], brain, "hidden1")
    with pytest.raises(ValueError, match="19 stimulus ids for 20 stimuli"):
        HeldOutProbe(x, ids[:-1], brain, "hidden1")
    with pytest.raises(ValueError, match="at least 3 stimuli"):
        HeldOutProbe(x[:2], ids[:2], brain, "hidden1")
    with pytest.raises(ValueError, match=r"heldout_subjects \['s9'\] are not among .*'s0', 's1', 's2'"):
        HeldOutProbe(x, ids, brain, "hidden1", heldout_subjects=["s9"], subject_descriptor="subject")
    with pytest.raises(KeyError, match="no rdm descriptor 'person'"):
        HeldOutProbe(x, ids, brain, "hidden1", heldout_subjects=["s2"], subject_descriptor="person")
    with pytest.raises(ValueError, match="comparison method"):
        HeldOutProbe(x, ids, brain, "hidden1", compare="pearson")
    with pytest.raises(TypeError, match="rsatoolbox.rdm.RDMs"):
        HeldOutProbe(x, ids, brain.get_vectors(), "hidden1")
    gappy = brain.get_vectors().copy()
    gappy[1, :] = np.nan  # subject s1 measured none of the pairs
    with pytest.raises(ValueError, match=r"brain RDM\(s\) \['RDM 1'\] have fewer than 3 dissimilarities"):
        HeldOutProbe(x, ids, to_rsatoolbox(gappy, task["ids"]), "hidden1")
    # the Trainer: stimuli the teacher covers are not held out; layers must exist
    with pytest.raises(ValueError, match=r"2 of its stimuli are in the RDM teacher of loss 'rdl'.*\[100, 101\]"):
        trainer_of(task, HeldOutProbe(task["x"][:3], [100, 101, 159], brain, "hidden1"))
    with pytest.raises(KeyError, match="unknown layer of the held-out probe 'hiden1'"):
        trainer_of(task, HeldOutProbe(x, ids, brain, "hiden1"))
