"""rdl-neuro evaluate: checkpoint -> CSV table and figures (called through the command's main)."""
from __future__ import annotations

import argparse

import pandas as pd
import pytest
import torch
from torch import nn

from rdl_neuro.cli import evaluate as cmd


def tiny_net(config=None) -> nn.Module:
    """Test-local model factory, reachable as tests.test_evaluate_cli:tiny_net."""
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 6))


def _checkpoint(path, config=None):
    torch.save({"model_state": tiny_net().state_dict(), "model_config": config}, path)
    return path


def test_evaluate_main_writes_table_and_figures(tmp_path, kriegeskorte_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(cmd.__file__).rsplit("/rdl_neuro/", 1)[0])
    ckpt = _checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "out"
    code = cmd.main(["--checkpoint", str(ckpt), "--model", "tests.test_evaluate_cli:tiny_net",
                     "--layers", "2", "4", "--data", str(kriegeskorte_dir), "--out", str(out),
                     "--image-size", "16", "--n-bootstrap", "20", "--no-progress"])
    assert code == 0
    table = pd.read_csv(out / "rsa_table.csv")
    assert list(table["model"].astype(str)) == ["2", "4"]
    assert table[["mean", "sem", "nc_lower", "nc_upper"]].notna().all().all()
    for name in ("layer_profile.png", "rdm_comparison.png", "mds.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_with_build_model_config(tmp_path, kriegeskorte_dir):
    models = pytest.importorskip("rdl_neuro.model.networks")
    config = {"type": "mlp", "input_shape": [3, 8, 8], "n_classes": 6, "hidden": [10]}
    model = models.build_model(config)
    torch.save({"model_state": model.state_dict(), "model_config": config}, tmp_path / "c.pt")
    from rdl_neuro.model.recorder import available_layers

    layer = available_layers(model)[1]
    args = argparse.Namespace(checkpoint=str(tmp_path / "c.pt"), layers=[layer], stimuli="kriegeskorte92",
                              data=str(kriegeskorte_dir), out=str(tmp_path / "o"), model=None, image_size=8,
                              rdm_method="correlation", method="corr", bootstrap="none", n_bootstrap=10, seed=0,
                              batch_size=32, format="svg", no_progress=True)
    assert cmd.run(args) == 0
    assert (tmp_path / "o" / "layer_profile.svg").is_file()


def test_evaluate_bad_inputs(tmp_path, kriegeskorte_dir):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        cmd.load_model(tmp_path / "missing.pt")
    torch.save({"weights": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no 'model_state'"):
        cmd.load_model(tmp_path / "bad.pt")
    _checkpoint(tmp_path / "noconf.pt")
    with pytest.raises(ValueError, match="no 'model_config'"):
        cmd.load_model(tmp_path / "noconf.pt")
    with pytest.raises(ValueError, match="module:callable"):
        cmd.load_model(tmp_path / "noconf.pt", "no_colon")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        cmd.load_model(tmp_path / "junk.pt")


class _Payload:
    """Any pickled object that is not tensors and plain containers."""


def test_evaluate_reads_checkpoints_weights_only(tmp_path):
    """load_model reads through train.checkpoints.load_checkpoint (weights_only=True): a file that would
    unpickle arbitrary objects is refused with a ValueError naming it, not loaded."""
    model = torch.nn.Linear(2, 2)
    torch.save({"model_state": model.state_dict(), "model_config": None, "extra": _Payload()}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*obj\.pt"):
        cmd.load_model(tmp_path / "obj.pt")
