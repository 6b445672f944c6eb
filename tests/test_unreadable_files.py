"""Every unreadable file is named with what was expected, and the command line ends a user's mistake
with exit status 2 and one line (issue 13). The tests write their own small damaged files."""
from __future__ import annotations

import gzip
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rdl_neuro.data.loaders import load_cifar100, load_kriegeskorte92, load_mnist, read_idx


def _idx_images(n: int = 3) -> bytes:
    header = bytes([0, 0, 0x08, 3]) + np.array([n, 28, 28], dtype=">u4").tobytes()
    return header + np.arange(n * 28 * 28, dtype=np.uint8).tobytes()


def _message(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------- MNIST
def test_truncated_and_corrupt_mnist_gzip_name_the_file(tmp_path):
    whole = gzip.compress(_idx_images())
    truncated = tmp_path / "train-images-idx3-ubyte.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="IDX file") as info:
        read_idx(truncated)
    assert str(truncated) in _message(info)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(ValueError, match=f"cannot read {corrupt}: expected an IDX file"):
        read_idx(corrupt)
    # through load_mnist: the folder's damaged file is the one named
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="cannot read .*-idx"):
        load_mnist(tmp_path, split="train")


def test_truncated_and_corrupt_mnist_npz_name_the_file(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4, np.uint8),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8))
    data = good.read_bytes()
    truncated = tmp_path / "mnist.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read {truncated}: expected a numpy .npz archive"):
        load_mnist(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    with pytest.raises(ValueError, match=f"cannot read {garbage}"):
        load_mnist(garbage)


# ---------------------------------------------------------------- CIFAR-100
def test_corrupt_cifar_pickles_name_the_file(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    meta = pickle.dumps({b"fine_label_names": [b"a"], b"coarse_label_names": [b"b"]})
    (folder / "meta").write_bytes(meta[: len(meta) // 2])
    with pytest.raises(ValueError, match=f"cannot read {folder / 'meta'}: expected the CIFAR-100 python pickle"):
        load_cifar100(tmp_path)
    (folder / "meta").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match=f"{folder / 'meta'}: expected the CIFAR-100 python pickle.*got a list"):
        load_cifar100(tmp_path)


# ---------------------------------------------------------------- the 92-image .mat files
@pytest.mark.parametrize("damaged", ["Kriegeskorte_Neuron2008_supplementalData.mat", "92_brainRDMs.mat",
                                     "92_modelRDMs.mat"])
def test_truncated_92_image_mat_files_name_the_file(tmp_path, kriegeskorte_dir, damaged):
    for name in ("Kriegeskorte_Neuron2008_supplementalData.mat", "92_brainRDMs.mat", "92_modelRDMs.mat"):
        real = kriegeskorte_dir / name
        if name == damaged:
            (tmp_path / name).write_bytes(real.read_bytes()[:3000])
        else:
            (tmp_path / name).symlink_to(real)
    with pytest.raises(ValueError, match=f"cannot read {tmp_path / damaged}: expected a MATLAB .mat file"):
        load_kriegeskorte92(tmp_path)


# ---------------------------------------------------------------- NIfTI
def test_truncated_nifti_names_the_file(tmp_path):
    import nibabel as nib

    from rdl_neuro.data.nifti import rdms_from_nifti

    rng = np.random.default_rng(0)
    betas = tmp_path / "betas.nii.gz"
    nib.save(nib.Nifti1Image(rng.standard_normal((6, 6, 6, 4)).astype(np.float32), np.eye(4)), betas)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.eye(4)), mask)
    data = betas.read_bytes()
    betas.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read {betas}: expected a NIfTI image"):
        rdms_from_nifti(betas, conditions=[0, 1, 2, 3], mask=mask)
    mask.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(ValueError, match=f"cannot read {mask}: expected a NIfTI image"):
        rdms_from_nifti(tmp_path / "betas.nii.gz", conditions=[0, 1, 2, 3], mask=mask)


# ---------------------------------------------------------------- RDM files of the train config
def _rdm_config(tmp_path: Path, rdm: str, ids: str, n_train: int = 50, min_covered: int = 0) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f"""
        output = "{tmp_path / 'out'}"
        epochs = 1
        quiet = true
        [data]
        source = "digits"
        n_train = {n_train}
        min_covered = {min_covered}
        [teacher]
        kind = "rdm"
        rdm = "{rdm}"
        stimulus_ids = {ids}
        [losses.rdl]
        layers = ["hidden1"]
        """))
    return cfg


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_corrupt_rdm_files_of_the_config_name_key_and_file(tmp_path, suffix):
    from rdl_neuro.cli import train as train_cmd
    from rdl_neuro.cli.config import ConfigError, load_config

    rdm = tmp_path / f"brain{suffix}"
    if suffix == ".npy":
        np.save(rdm, np.zeros((5, 5)))
        rdm.write_bytes(rdm.read_bytes()[:100])
    elif suffix == ".npz":
        np.savez(rdm, rdm=np.zeros((5, 5)), stimulus_ids=np.arange(5))
        rdm.write_bytes(rdm.read_bytes()[:150])
    else:
        rdm.write_bytes(b"\x00\xff\xfe binary, not text")
    cfg = _rdm_config(tmp_path, f"brain{suffix}", "[0, 1, 2, 3, 4]")
    with pytest.raises(ConfigError, match=f"teacher.rdm: cannot read {rdm}: expected"):
        train_cmd.build_run(load_config(cfg))


def test_whole_float_ids_in_a_config_file_are_ints_and_fractions_are_errors(tmp_path):
    from rdl_neuro.cli import train as train_cmd
    from rdl_neuro.cli.config import ConfigError, load_config
    from rdl_neuro.rdm import compute_rdm

    ids = np.arange(0, 400, 2)
    np.save(tmp_path / "brain.npy", compute_rdm(torch.randn(len(ids), 5, dtype=torch.float64), "euclidean",
                                                square=True).numpy())
    for file_ids, ok in ((ids.astype(np.float64), True), (ids + 0.5, False)):
        np.save(tmp_path / "ids.npy", file_ids)
        cfg = _rdm_config(tmp_path, "brain.npy", '"ids.npy"', n_train=300, min_covered=5)
        if ok:
            teacher = train_cmd.build_run(load_config(cfg)).trainer.terms["rdl"][0].rdm_teachers[0]
            assert teacher.ids == ids.tolist()
        else:
            with pytest.raises(ConfigError, match="teacher.stimulus_ids: stimulus id 0.5 is a float"):
                train_cmd.build_run(load_config(cfg))


# ---------------------------------------------------------------- writing
def test_unwritable_paths_name_the_requested_file(tmp_path):
    from matplotlib.figure import Figure

    from rdl_neuro.io import atomic_write_bytes
    from rdl_neuro.vis import save_figure

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=f"cannot write {blocker / 'sub' / 'out.png'}"):
        atomic_write_bytes(blocker / "sub" / "out.png", b"1")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(OSError, match=f"cannot write {folder}: it is a folder"):
        atomic_write_bytes(folder, b"1")
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    ax = Figure().add_subplot(1, 1, 1)
    ax.plot([0, 1])
    assert save_figure(ax, tmp_path / "axes.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="Figure or Axes, got list"):
        save_figure([ax], tmp_path / "x.png")


# ---------------------------------------------------------------- the command line
def _cli(capsys, *argv: str) -> tuple[int, str]:
    from rdl_neuro.cli.main import main

    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def _fc_checkpoint(path: Path) -> Path:
    from rdl_neuro.model.networks import build_model

    model = build_model({"type": "mlp", "input_shape": [3, 16, 16], "n_classes": 4, "hidden": [8]})
    torch.save({"model_state": model.state_dict(), "model_config": model.config}, path)
    return path


def test_cli_evaluate_image_size_that_does_not_fit(tmp_path, kriegeskorte_dir, capsys):
    ckpt = _fc_checkpoint(tmp_path / "m.pt")
    code, err = _cli(capsys, "evaluate", "--checkpoint", str(ckpt), "--layers", "hidden1", "--data",
                     str(kriegeskorte_dir), "--out", str(tmp_path / "out"), "--image-size", "20", "--no-progress")
    assert code == 2 and err.count("\n") == 0, err
    assert "--image-size 20" in err and "[3, 20, 20]" in err and "--image-size 16" in err


def test_cli_evaluate_corrupt_data_folder(tmp_path, capsys):
    ckpt = _fc_checkpoint(tmp_path / "m.pt")
    data = tmp_path / "k92"
    data.mkdir()
    for name in ("Kriegeskorte_Neuron2008_supplementalData.mat", "92_brainRDMs.mat", "92_modelRDMs.mat"):
        (data / name).write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 10)
    code, err = _cli(capsys, "evaluate", "--checkpoint", str(ckpt), "--layers", "hidden1", "--data", str(data),
                     "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 2 and err.count("\n") == 0, err
    assert f"cannot read {data / 'Kriegeskorte_Neuron2008_supplementalData.mat'}" in err


def test_cli_evaluate_corrupt_checkpoint_and_unwritable_out(tmp_path, kriegeskorte_dir, capsys):
    ckpt = _fc_checkpoint(tmp_path / "m.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[:200])
    code, err = _cli(capsys, "evaluate", "--checkpoint", str(bad), "--layers", "hidden1", "--out",
                     str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 0 and str(bad) in err, err
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, err = _cli(capsys, "evaluate", "--checkpoint", str(ckpt), "--layers", "hidden1", "--data",
                     str(kriegeskorte_dir), "--out", str(blocker / "out"), "--image-size", "16")
    assert code == 2 and err.count("\n") == 0 and str(blocker) in err, err


def test_cli_train_device_that_does_not_exist_here(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f"""
        output = "{tmp_path / 'out'}"
        device = "cuda:99"
        [data]
        source = "digits"
        [losses.ce]
        weight = 1.0
        """))
    code, err = _cli(capsys, "train", str(cfg))
    assert code == 2 and err.count("\n") == 0, err
    assert "device" in err and "'cuda:99'" in err


def test_cli_train_resume_with_only_corrupt_checkpoints(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch-0001.pt").write_bytes(b"not a checkpoint")
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f"""
        output = "{out}"
        resume = true
        epochs = 2
        quiet = true
        [data]
        source = "digits"
        n_train = 40
        [losses.ce]
        weight = 1.0
        """))
    with pytest.warns(UserWarning, match="epoch-0001.pt"):
        code, err = _cli(capsys, "train", str(cfg))
    assert code == 2 and err.count("\n") == 0, err
    assert "epoch-0001.pt" in err
