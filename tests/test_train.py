"""Trainer: seeding, history (DataFrame and CSV), weight schedules, RDM probe, checkpoints and resume policy."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from rdl_neuro.data.loaders import load_digits
from rdl_neuro.data.stimulus import StimulusDataset
from rdl_neuro.train.losses import CELoss, KDLoss, RDLLoss
from rdl_neuro.model.networks import build_model
from rdl_neuro.rdm import compute_rdm, to_condensed
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher
from rdl_neuro.train import (CheckpointError, CorruptCheckpointWarning, RDMProbe, Trainer, find_checkpoints,
                             linear_warmup, load_checkpoint, seed_everything)


@pytest.fixture(scope="module")
def digits():
    return load_digits(split="train")


def make_trainer(digits, seed: int = 0, out_dir: Path | None = None, epochs: int = 2, resume: bool = False,
                 probe: bool = False, **kwargs) -> Trainer:
    seed_everything(seed)
    teacher = NetworkTeacher(build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10,
                                          "hidden": [24, 24]}), ["hidden1", "hidden2"])
    student = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16, 16],
                           "dropout": 0.1})
    data = StimulusDataset(TensorDataset(digits.images[:160], digits.labels[:160]), digits.stimulus[:160].tolist())
    losses = {"ce": CELoss(), "rdl": (RDLLoss({"hidden1": "hidden1"}), linear_warmup(0.1, 2)), "kd": (KDLoss(), 0.5)}
    rdm_probe = RDMProbe(digits.images[200:240], digits.stimulus[200:240], teacher, {"hidden1": "hidden1"}) \
        if probe else None
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    return Trainer(student, data, losses=losses, teacher=teacher, optimizer=opt,
                   scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
                   val_data=TensorDataset(digits.images[160:200], digits.labels[160:200]), batch_size=32,
                   epochs=epochs, seed=seed, out_dir=out_dir, resume=resume, quiet=True, rdm_probe=rdm_probe,
                   device="cpu", **kwargs)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_equal_weights(a: dict, b: dict) -> None:
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_other_seed_differs(digits) -> None:
    a, b, c = make_trainer(digits, 0), make_trainer(digits, 0), make_trainer(digits, 1)
    for t in (a, b, c):
        t.fit()
    assert_equal_weights(weights(a), weights(b))
    assert not torch.equal(weights(a)["fc1.weight"], weights(c)["fc1.weight"])


def test_history_columns_schedules_probe_and_csv(digits, tmp_path: Path, capsys) -> None:
    trainer = make_trainer(digits, out_dir=tmp_path, epochs=3, probe=True)
    hist = trainer.fit()
    assert list(hist["epoch"]) == [1, 2, 3]
    for col in ("loss", "loss_ce", "loss_rdl", "loss_kd", "rdl/hidden1", "train_acc", "val_acc", "val_loss",
                "rdm_corr_hidden1", "weight_rdl", "lr"):
        assert col in hist and hist[col].notna().all(), col
    assert list(hist["weight_rdl"]) == pytest.approx([0.05, 0.1, 0.1])  # linear warm-up over 2 epochs
    assert list(hist["weight_kd"]) == [0.5] * 3
    assert list(hist["lr"]) == pytest.approx([0.05, 0.025, 0.0125])
    assert hist["rdm_corr_hidden1"].between(-1, 1).all()
    # the total is the weighted sum of the terms (per-sample means over the epoch)
    total = hist["loss_ce"] + hist["weight_rdl"] * hist["loss_rdl"] + hist["weight_kd"] * hist["loss_kd"]
    assert hist["loss"].to_numpy() == pytest.approx(total.to_numpy(), rel=1e-6)  # float32 sums
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "history.csv"), hist, check_dtype=False)
    assert capsys.readouterr().err == ""  # quiet: no progress bars


def test_checkpoint_contents_and_last_two_kept(digits, tmp_path: Path) -> None:
    trainer = make_trainer(digits, out_dir=tmp_path, epochs=3)
    trainer.fit()
    ckpts = find_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ckpts] == ["epoch-0002.pt", "epoch-0003.pt"]
    ckpt = torch.load(tmp_path / "final.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert ckpt["model_config"]["hidden"] == [16, 16]
    assert ckpt["scheduler_state"] is not None and "torch" in ckpt["rng_state"]
    rebuilt = build_model(ckpt["model_config"])
    rebuilt.load_state_dict(ckpt["model_state"])
    assert_equal_weights(rebuilt.state_dict(), weights(trainer))


def test_resume_equals_uninterrupted_and_corrupt_newest_falls_back(digits, tmp_path: Path) -> None:
    full = make_trainer(digits, out_dir=tmp_path / "full", epochs=3)
    full.fit()
    part = make_trainer(digits, out_dir=tmp_path / "part", epochs=2)
    part.fit()
    newest = find_checkpoints(tmp_path / "part" / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # damage it
    resumed = make_trainer(digits, seed=0, out_dir=tmp_path / "part", epochs=3, resume=True)
    with pytest.warns(CorruptCheckpointWarning, match="epoch-0002.pt"):
        resumed.fit()
    # epochs 2 and 3 were redone from epoch 1's checkpoint and match the uninterrupted run exactly
    assert_equal_weights(weights(resumed), weights(full))
    pd.testing.assert_frame_equal(resumed.history.drop(columns="time_s"), full.history.drop(columns="time_s"))


def test_no_readable_checkpoint_is_a_clear_error(digits, tmp_path: Path) -> None:
    make_trainer(digits, out_dir=tmp_path, epochs=2).fit()
    for p in find_checkpoints(tmp_path / "checkpoints"):
        p.write_bytes(b"not a checkpoint")
    trainer = make_trainer(digits, out_dir=tmp_path, epochs=3, resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptCheckpointWarning)
        with pytest.raises(CheckpointError, match=r"epoch-0001\.pt.*\n.*|epoch-0002\.pt"):
            trainer.fit()
    with pytest.raises(CheckpointError, match="corrupt or unreadable checkpoint .*epoch-0002.pt"):
        load_checkpoint(tmp_path / "checkpoints" / "epoch-0002.pt")


def test_resume_without_checkpoints_starts_fresh_and_finished_run_is_a_no_op(digits, tmp_path: Path) -> None:
    a = make_trainer(digits, out_dir=tmp_path, epochs=2, resume=True)
    a.fit()
    b = make_trainer(digits, seed=0, out_dir=tmp_path, epochs=2, resume=True)
    hist = b.fit()
    assert len(hist) == 2
    assert_equal_weights(weights(a), weights(b))


def test_probe_with_fixed_rdm_and_rdm_teacher(digits) -> None:
    images, ids = digits.images[:30], digits.stimulus[:30]
    rdm = compute_rdm(images.flatten(1).double(), "euclidean")
    seed_everything(0)
    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16]})
    teacher = RDMTeacher.from_array(rdm, ids.tolist())
    data = StimulusDataset(TensorDataset(digits.images[:100], digits.labels[:100]), digits.stimulus[:100].tolist())
    for probe_teacher in (rdm, teacher):
        t = Trainer(model, data, losses={"ce": CELoss(), "rdl": (RDLLoss({"hidden1": teacher}), 0.01)},
                    rdm_probe=RDMProbe(images, ids, probe_teacher, "hidden1"), epochs=1, quiet=True,
                    min_covered=4, batch_size=20, device="cpu")
        hist = t.fit()
        assert -1 <= hist["rdm_corr_hidden1"].iloc[0] <= 1


def test_probe_uses_every_subject_rdm_and_leaves_the_draws_alone(digits) -> None:
    """With combine="per_rdm" the probe compares with all RDMs and does not advance the loss's generator."""
    images, ids = digits.images[:30], digits.stimulus[:30]
    rdms = torch.stack([compute_rdm(images.flatten(1).double() + 0.1 * k * torch.randn(30, 64, dtype=torch.float64),
                                    "euclidean", square=True) for k in range(3)])
    teacher = RDMTeacher.from_array(rdms, ids.tolist(), combine="per_rdm")
    seed_everything(0)
    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16]})
    data = StimulusDataset(TensorDataset(digits.images[:60], digits.labels[:60]), digits.stimulus[:60].tolist())
    t = Trainer(model, data, losses={"ce": CELoss()}, rdm_probe=RDMProbe(images, ids, teacher, "hidden1"),
                epochs=1, quiet=True, batch_size=20, device="cpu")
    state = teacher.generator.get_state()
    probe_rdms = t.rdm_probe.teacher_rdms(t.device)["hidden1"]
    assert torch.equal(teacher.generator.get_state(), state)
    assert probe_rdms.shape == (3, 30 * 29 // 2)
    assert torch.allclose(probe_rdms, to_condensed(rdms))


def test_bad_arguments_fail_early(digits) -> None:
    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16]})
    data = TensorDataset(digits.images[:50], digits.labels[:50])
    with pytest.raises(KeyError, match="hiden1"):
        Trainer(model, data, losses={"ce": CELoss(), "rdl": RDLLoss({"hiden1": "hidden1"})})
    with pytest.raises(ValueError, match=r"\['kd'\] need a network teacher"):
        Trainer(model, data, losses={"ce": CELoss(), "kd": KDLoss()})
    with pytest.raises(TypeError, match="not a rdl_neuro TransferLoss"):
        Trainer(model, data, losses={"ce": torch.nn.CrossEntropyLoss()})
    with pytest.raises(TypeError, match="not a number"):
        Trainer(model, data, losses={"ce": (CELoss(), "heavy")})
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, data, losses={"ce": CELoss()}, batch_size=0)
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        Trainer(model, data, losses={"ce": CELoss()}, max_grad_norm=0.0)


def test_progress_bars_in_notebooks_but_not_in_batch_logs(digits, capsys, monkeypatch) -> None:
    """stderr of a Jupyter kernel is no terminal, yet shows bars; a batch job's log stays clean."""
    import rdl_neuro._progress as progress

    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [8]})
    data = TensorDataset(digits.images[:64], digits.labels[:64])
    for in_notebook, expect_bar in ((False, False), (True, True)):
        monkeypatch.setattr(progress, "_in_notebook", lambda flag=in_notebook: flag)
        Trainer(model, data, losses={"ce": CELoss()}, batch_size=32, epochs=1, device="cpu").fit()
        assert ("epoch 1/1" in capsys.readouterr().err) == expect_bar


def test_max_grad_norm_clips_every_step_and_logs_the_norm(digits) -> None:
    """Plain SGD with lr 1: each step moves the weights by exactly the clipped gradient."""
    seed_everything(0)
    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16]})
    data = TensorDataset(digits.images[:64], digits.labels[:64])
    trainer = Trainer(model, data, losses={"ce": CELoss()}, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                      batch_size=32, epochs=1, quiet=True, device="cpu", max_grad_norm=1e-3)
    moves = []
    before = torch.cat([q.detach().flatten().clone() for q in model.parameters()])
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: moves.append(
        torch.cat([q.detach().flatten() for q in model.parameters()])))
    history = trainer.fit()
    steps = torch.diff(torch.stack([before] + moves), dim=0).norm(dim=1)
    assert len(moves) == 2 and torch.allclose(steps, torch.full((2,), 1e-3), rtol=1e-4)
    assert history["grad_norm"].iloc[0] > 1e-3  # the norm before clipping, well above the cap


def test_unlabelled_samples_are_ignored_by_ce_and_accuracy(digits) -> None:
    seed_everything(0)
    model = build_model({"type": "mlp", "input_shape": [1, 8, 8], "n_classes": 10, "hidden": [16]})
    labels = digits.labels[:80].clone()
    labels[40:] = -100
    ids = digits.stimulus[:80].tolist()[:40] + [-1] * 40
    data = StimulusDataset(TensorDataset(digits.images[:80], labels), ids)
    hist = Trainer(model, data, losses={"ce": CELoss()}, min_covered=5, batch_size=20, epochs=2, quiet=True,
                   device="cpu").fit()
    assert hist["loss_ce"].notna().all() and hist["train_acc"].between(0, 1).all()
