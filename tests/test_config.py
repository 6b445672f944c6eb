"""TOML run configs: the packaged example runs as is; bad configs fail before training with key and problem."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rdl_neuro.cli import train as train_cmd
from rdl_neuro.cli.config import ConfigError, example_config_path, load_config, parse_config

BASE = """
seed = 0
epochs = 2
batch_size = 25
threads = 1
quiet = true
[data]
source = "digits"
n_train = 60
validation = 0.2
[model]
hidden = [32, 32]
[losses.ce]
weight = 1.0
"""


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(path: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["train", str(path), *extra])
    return args.func(args)


def test_example_config_is_packaged_and_valid() -> None:
    path = example_config_path()
    assert path.is_file()
    cfg = load_config(path)
    assert cfg["data"]["source"] == "digits" and "rdl" in cfg["losses"]


@pytest.mark.slow
def test_example_config_runs_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # `output` is relative to the current folder
    assert run_cli(example_config_path(), "--quiet", "--epochs", "3") == 0
    out = tmp_path / "runs" / "example"
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 3
    assert {"loss_ce", "loss_rdl", "rdl/hidden1", "rdl/hidden2", "val_acc", "rdm_corr_hidden1"} <= set(hist.columns)
    ckpt = torch.load(out / "final.pt", weights_only=True)
    for key in ("model_state", "model_config", "optimizer_state", "scheduler_state", "rng_state", "history", "epoch"):
        assert key in ckpt
    from rdl_neuro.model.networks import build_model

    build_model(ckpt["model_config"]).load_state_dict(ckpt["model_state"])
    assert (out / "teacher" / "final.pt").is_file()


def test_network_teacher_from_checkpoint_and_kd(tmp_path: Path) -> None:
    teacher_cfg = write(tmp_path, f'output = "{tmp_path / "t"}"\n' + BASE, "teacher.toml")
    assert run_cli(teacher_cfg) == 0
    student = write(tmp_path, f'output = "{tmp_path / "s"}"\n' + BASE + """
[teacher]
kind = "network"
checkpoint = "t/final.pt"
[losses.rdl]
weight = 0.1
layers = { hidden2 = "hidden2" }
[losses.kd]
temperature = 2.0
""")
    assert run_cli(student) == 0
    hist = pd.read_csv(tmp_path / "s" / "history.csv")
    assert {"loss_kd", "loss_rdl", "rdm_corr_hidden2"} <= set(hist.columns)


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".csv"])
def test_rdm_teacher_files(tmp_path: Path, suffix: str) -> None:
    from rdl_neuro.data.loaders import load_digits
    from rdl_neuro.rdm import compute_rdm

    digits = load_digits()
    ids = np.arange(0, 400, 2)
    rdm = compute_rdm(digits.images[torch.as_tensor(ids)].flatten(1).double(), "euclidean", square=True).numpy()
    extra = ""
    if suffix == ".npz":
        np.savez(tmp_path / "brain.npz", rdm=rdm, stimulus_ids=ids)
    elif suffix == ".npy":
        np.save(tmp_path / "brain.npy", rdm)
        np.save(tmp_path / "ids.npy", ids)
        extra = 'stimulus_ids = "ids.npy"'
    else:
        pd.DataFrame(rdm, index=ids, columns=ids).to_csv(tmp_path / "brain.csv")
    cfg = write(tmp_path, f'output = "{tmp_path / "out"}"\n' + BASE.replace("n_train = 60", "n_train = 300\nmin_covered = 5") + f"""
[teacher]
kind = "rdm"
rdm = "brain{suffix}"
{extra}
[losses.rdl]
weight = 0.01
layers = ["hidden1"]
""")
    built = train_cmd.build_run(load_config(cfg))
    assert built.trainer.min_covered == 5
    assert built.trainer.rdm_probe is not None
    history = built.trainer.fit()
    assert history["rdl/hidden1"].notna().all() and "rdm_corr_hidden1" in history


# ----------------------------------------------------------------- bad configs
def expect_error(tmp_path: Path, text: str, *fragments: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        train_cmd.build_run(load_config(path))
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_unknown_key(tmp_path: Path) -> None:
    expect_error(tmp_path, BASE.replace('source = "digits"', 'source = "digits"\nsorce = 1'),
                 "data.sorce: unknown key", "did you mean 'source'")
    expect_error(tmp_path, "epohcs = 3\n" + BASE, "epohcs: unknown key", "did you mean 'epochs'")
    expect_error(tmp_path, BASE + "[losses.rdll]\nweight = 1\n", "losses.rdll: unknown key")


def test_wrong_type(tmp_path: Path) -> None:
    expect_error(tmp_path, BASE.replace("epochs = 2", 'epochs = "2"'), "epochs: expected integer, got str '2'")
    expect_error(tmp_path, BASE.replace("[model]", "[model]\ndropout = true"), "model.dropout: expected number")
    expect_error(tmp_path, BASE.replace("hidden = [32, 32]", 'hidden = ["a"]'), "model.hidden",
                 "list of positive integers")
    expect_error(tmp_path, BASE.replace('source = "digits"', 'source = "imagenet"'),
                 "data.source: 'imagenet' is not one of")
    expect_error(tmp_path, BASE.replace("batch_size = 25", "batch_size = 0"), "batch_size: must be positive")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path, BASE + '[teacher]\nkind = "network"\ncheckpoint = "nope.pt"\n'
                 "[losses.kd]\n", "teacher.checkpoint: file not found", "nope.pt")
    expect_error(tmp_path, BASE + '[teacher]\nkind = "rdm"\nrdm = "brain.npy"\nstimulus_ids = [1, 2, 3]\n'
                 '[losses.rdl]\nlayers = ["hidden1"]\n', "teacher.rdm: file not found", "brain.npy")
    expect_error(tmp_path, BASE.replace('source = "digits"', 'source = "cifar100"\npath = "no/such/dir"'),
                 "data.path: file not found")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_unknown_layer(tmp_path: Path) -> None:
    teacher = '[teacher]\nkind = "network"\n[teacher.train]\nhidden = [16, 16]\nepochs = 1\n'
    expect_error(tmp_path, f'output = "{tmp_path / "o"}"\n' + BASE + teacher
                 + '[losses.rdl]\nlayers = { hiden1 = "hidden1" }\n',
                 "losses.rdl.layers", "unknown layer 'hiden1'", "hidden1")
    expect_error(tmp_path, f'output = "{tmp_path / "o"}"\n' + BASE + teacher
                 + '[losses.rdl]\nlayers = { hidden1 = "hidden7" }\n',
                 "unknown layer 'hidden7'")
    expect_error(tmp_path, f'output = "{tmp_path / "o"}"\n' + BASE + teacher
                 + '[losses.sp]\nstudent_layer = "fc9"\nteacher_layer = "hidden1"\n',
                 "losses.sp.student_layer", "unknown layer 'fc9'")


def test_inconsistent_combinations(tmp_path: Path) -> None:
    expect_error(tmp_path, BASE + "[losses.kd]\n", "losses.kd: needs a network teacher")
    expect_error(tmp_path, BASE + '[losses.rdl]\nlayers = ["hidden1"]\n', "losses.rdl: needs a teacher")
    expect_error(tmp_path, BASE + '[teacher]\nkind = "network"\n', "teacher.checkpoint",
                 "[teacher.train]")
    msg = expect_error(tmp_path, "[data]\n", "data.source: missing required key")
    assert "losses" not in msg


def test_cli_reports_config_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rdl_neuro.cli import main

    path = write(tmp_path, BASE.replace("epochs = 2", "epochs = -1"))
    try:
        code = main(["train", str(path)])
    except ModuleNotFoundError as err:  # another command module not written yet
        pytest.skip(f"cli not complete: {err}")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "epochs: must be positive" in err


def test_parse_config_fills_defaults() -> None:
    cfg = parse_config({"data": {"source": "digits"}, "losses": {"ce": {}}})
    assert cfg["optimizer"]["name"] == "adam" and cfg["batch_size"] == 32 and cfg["teacher"]["kind"] == "none"
    assert cfg["optimizer"]["max_grad_norm"] == 0.0  # no clipping unless asked


def test_max_grad_norm_reaches_the_trainer(tmp_path: Path) -> None:
    cfg = write(tmp_path, f'output = "{tmp_path / "out"}"\n' + BASE + "\n[optimizer]\nmax_grad_norm = 2.5\n")
    assert train_cmd.build_run(load_config(cfg)).trainer.max_grad_norm == 2.5


def test_device_and_allow_skipped_terms_keys(tmp_path: Path) -> None:
    expect_error(tmp_path, f'output = "{tmp_path / "out"}"\ndevice = "cuda:99"\n' + BASE, "device:", "'cuda:99'")
    expect_error(tmp_path, f'output = "{tmp_path / "out"}"\ndevice = "gpu"\n' + BASE, "device:", "not a device name")
    cfg = write(tmp_path, f'output = "{tmp_path / "out"}"\nallow_skipped_terms = true\n' + BASE)
    assert train_cmd.build_run(load_config(cfg)).trainer.allow_skipped_terms is True
    cfg = write(tmp_path, f'output = "{tmp_path / "out"}"\n' + BASE)
    assert train_cmd.build_run(load_config(cfg)).trainer.allow_skipped_terms is False


# ----------------------------------------------------------------- [probe.heldout]
def heldout_files(tmp_path: Path) -> None:
    """A pixel-RDM teacher over even training ids; 3 noisy 'subjects' over 30 odd ids (held out from the teacher)."""
    from rdl_neuro.data.loaders import load_digits
    from rdl_neuro.rdm import compute_rdm

    digits = load_digits()
    teach_ids = np.arange(0, 400, 2)
    rdm = compute_rdm(digits.images[torch.as_tensor(teach_ids)].flatten(1).double(), "euclidean", square=True)
    np.savez(tmp_path / "brain.npz", rdm=rdm.numpy(), stimulus_ids=teach_ids)
    held_ids = np.arange(1, 61, 2)
    g = torch.Generator().manual_seed(0)
    x = digits.images[torch.as_tensor(held_ids)].flatten(1).double()
    subjects = torch.stack([compute_rdm(x + 2 * torch.randn(x.shape, generator=g, dtype=torch.float64),
                                        "correlation", square=True) for _ in range(3)])
    np.savez(tmp_path / "heldout.npz", rdms=subjects.numpy(), stimulus_ids=held_ids)


HELDOUT_RUN = BASE.replace("n_train = 60", "n_train = 300") + """
[teacher]
kind = "rdm"
rdm = "brain.npz"
[losses.rdl]
weight = 0.01
layers = ["hidden1"]
[probe.heldout]
rdm = "heldout.npz"
"""


def test_heldout_probe_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rdl_neuro.data.loaders import load_digits
    from rdl_neuro.train import HeldOutProbe

    heldout_files(tmp_path)
    cfg = write(tmp_path, f'output = "{tmp_path / "out"}"\n' + HELDOUT_RUN + "subjects = [2]\n")
    built = train_cmd.build_run(load_config(cfg))
    probe = built.trainer.heldout_probe
    assert probe.stimulus_ids == list(range(1, 61, 2)) and probe.layers == ["hidden1"]
    history = built.trainer.fit()
    assert probe.columns == ["heldout_corr_hidden1", "heldout_stim_corr_hidden1"]
    # the history's last value is the probe's on the trained student, built here from the files by hand
    data = np.load(tmp_path / "heldout.npz")
    from rdl_neuro.rdm import to_rsatoolbox

    images = load_digits().images[torch.as_tensor(data["stimulus_ids"])]
    by_hand = HeldOutProbe(images, data["stimulus_ids"], to_rsatoolbox(data["rdms"], data["stimulus_ids"].tolist()),
                           "hidden1", heldout_subjects=[2]).measure(built.model, torch.device("cpu"))
    for column, value in by_hand.items():
        assert history[column].iloc[-1] == pytest.approx(value, abs=1e-12)
    # the command prints the held-out numbers of the last epoch
    code = run_cli(write(tmp_path, f'output = "{tmp_path / "out3"}"\n' + HELDOUT_RUN))
    assert code == 0 and "heldout_corr_hidden1 " in capsys.readouterr().out
    # probes off: no held-out probe either
    cfg = write(tmp_path, f'output = "{tmp_path / "out2"}"\n' + HELDOUT_RUN.replace(
        "[probe.heldout]", "[probe]\nenabled = false\n[probe.heldout]"))
    assert train_cmd.build_run(load_config(cfg)).trainer.heldout_probe is None


def test_heldout_probe_config_errors(tmp_path: Path) -> None:
    heldout_files(tmp_path)
    out = f'output = "{tmp_path / "out"}"\n'
    expect_error(tmp_path, out + HELDOUT_RUN + "stimuli = [1, 3, 4, 6]\n", "probe.heldout.stimuli: 2 are in the "
                 "teacher's RDM", "[4, 6]")
    expect_error(tmp_path, out + HELDOUT_RUN + "stimuli = [1, 3, 999999]\n", "probe.heldout.stimuli: 1 held-out "
                 "stimulus ids are not images of data source 'digits': [999999]")
    expect_error(tmp_path, out + HELDOUT_RUN + "stimuli = [1, 3, 5, 7, 61]\n",
                 "probe.heldout.stimuli: 1 are not stimuli of the brain RDMs (probe.heldout.rdm): [61]")
    expect_error(tmp_path, out + HELDOUT_RUN + "subjects = [3]\n", "probe.heldout.subjects: 3 is not an RDM of "
                 "probe.heldout.rdm, which holds 3")
    expect_error(tmp_path, out + HELDOUT_RUN + "subjects = [-1]\n", "probe.heldout.subjects: must be a non-empty list")
    expect_error(tmp_path, out + HELDOUT_RUN + 'layers = ["hiden1"]\n', "probe.heldout.layers: unknown layer",
                 "'hidden1'")
    expect_error(tmp_path, out + HELDOUT_RUN + 'compare = "pearson"\n', "probe.heldout.compare: 'pearson' is not one of")
    expect_error(tmp_path, out + HELDOUT_RUN + "layer = 1\n", "probe.heldout.layer: unknown key",
                 "did you mean 'layers'")
    expect_error(tmp_path, out + HELDOUT_RUN.replace('rdm = "heldout.npz"', 'rdm = "nothere.npz"'),
                 "probe.heldout.rdm: file not found")
    expect_error(tmp_path, out + HELDOUT_RUN.replace('rdm = "heldout.npz"', 'rdm_key = "x"'),
                 "probe.heldout.rdm: missing required key")
    expect_error(tmp_path, out + BASE + '[probe.heldout]\nrdm = "heldout.npz"\n',
                 "probe.heldout.layers: missing; without [losses.rdl]")
