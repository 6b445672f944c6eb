"""LayerRecorder: Sequential, nested and repeated modules; hook removal; error messages."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rdl_neuro.model.recorder import LayerRecorder, available_layers


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.fc(x))


class Net(nn.Module):
    """A nested model whose ``shared`` block is called twice per forward pass."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        self.proj = nn.Linear(2 * 4 * 4, 4)
        self.shared = Block()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.proj(self.encoder(x).flatten(1))
        h = self.shared(self.shared(h))
        return self.head(h)


def test_sequential_records_flattened_outputs():
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(3, 5)
    with LayerRecorder(model, ["0", "1"]) as rec:
        out = model(x)
        feats = rec.features
    assert list(feats) == ["0", "1"]
    assert torch.equal(feats["1"], torch.relu(model[0](x)))
    assert feats["1"].requires_grad  # the graph is kept so losses on features train the model
    assert out.shape == (3, 2)


def test_nested_conv_output_is_flattened():
    model = Net()
    with LayerRecorder(model, ["encoder.0", "shared.fc"]) as rec:
        model(torch.randn(2, 1, 6, 6))
        assert rec.features["encoder.0"].shape == (2, 2 * 4 * 4)


@pytest.mark.parametrize("call", ["last", "first"])
def test_module_called_twice_keeps_the_chosen_call(call):
    model = Net()
    x = torch.randn(2, 1, 6, 6)
    with LayerRecorder(model, ["shared", "proj"], call=call) as rec:
        model(x)
        h = model.proj(model.encoder(x).flatten(1))
        first = model.shared(h)
        second = model.shared(first)
        expected = second if call == "last" else first
        # the manual calls above ran hooks too, but outside the root forward: re-run the model
        model(x)
        assert torch.allclose(rec.features["shared"], expected)
        assert rec.calls["shared"] == 2


def test_new_forward_pass_replaces_record():
    model = nn.Sequential(nn.Linear(3, 3))
    with LayerRecorder(model, ["0"], call="first") as rec:
        model(torch.zeros(2, 3))
        x = torch.randn(2, 3)
        model(x)
        assert torch.allclose(rec.features["0"], model[0](x))


def test_hooks_removed_on_exit():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with LayerRecorder(model, ["1"]) as rec:
        assert rec.active
        assert len(model[1]._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1
    assert not rec.active
    assert len(model[1]._forward_hooks) == 0 and len(model._forward_pre_hooks) == 0
    model(torch.randn(1, 3))
    with pytest.raises(RuntimeError, match=r"layers \['1'\] were not called"):
        rec.features


def test_unknown_layer_lists_close_matches():
    model = Net()
    with pytest.raises(KeyError, match=r"unknown layer 'shared.fc1'.*did you mean 'shared.fc'"):
        LayerRecorder(model, ["shared.fc1"])
    with pytest.raises(KeyError, match="unknown layer 'encoder.7'"):
        LayerRecorder(model, ["encoder.7"])
    with pytest.raises(ValueError, match="call must be one of"):
        LayerRecorder(model, ["proj"], call="middle")
    with pytest.raises(ValueError, match="listed twice"):
        LayerRecorder(model, ["proj", "proj"])


def test_available_layers():
    assert available_layers(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))) == ["0", "1", "1.0"]
    assert "shared.fc" in available_layers(Net())


def test_detach_option():
    model = nn.Sequential(nn.Linear(3, 3))
    with LayerRecorder(model, "0", detach=True) as rec:
        model(torch.randn(2, 3))
        assert not rec.features["0"].requires_grad
