"""Small student/teacher networks built from plain dicts: ``build_model(config)``.

Two families, both ``nn.Sequential`` with *named* layers so that RDL losses,
``LayerRecorder`` and the TOML configs can point at them by name:

``mlp``  ``flatten, fc1, hidden1, [drop1], fc2, hidden2, [drop2], ..., out``
    ``hidden<k>`` is the ReLU after the k-th fully connected layer -- the
    representation the paper's RDL compares.
``cnn``  ``conv1, act1, pool1, conv2, act2, pool2, ..., flatten, fc1, hidden1, [drop1], ..., out``
    3x3 same-padded convolutions, each followed by ReLU and 2x2 max-pooling.

The config dict is stored on the model (``model.config``) and in every
checkpoint (``"model_config"``), so ``build_model(checkpoint["model_config"])``
rebuilds the architecture.
"""
from __future__ import annotations

import copy
import difflib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

__all__ = ["RDLNet", "build_model", "MODEL_TYPES"]

#: the network types :func:`build_model` builds (the config's ``type``)
MODEL_TYPES = ("mlp", "cnn")

# key -> (accepted types, default); "required" marks keys without a default
_REQUIRED = object()
_COMMON = {
    "type": ((str,), _REQUIRED),
    "input_shape": ((list, tuple), _REQUIRED),
    "n_classes": ((int,), _REQUIRED),
    "hidden": ((list, tuple), None),
    "dropout": ((int, float), 0.0),
}
_CNN_ONLY = {"channels": ((list, tuple), [16, 32])}
_DEFAULT_HIDDEN = {"mlp": [256, 256], "cnn": [64]}


class RDLNet(nn.Sequential):
    """``nn.Sequential`` of named layers that remembers the config it was built from.

    Input ``(b, C, H, W)`` (or ``(b, C*H*W)`` for an MLP), output logits ``(b, n_classes)``.
    """

    def __init__(self, layers: "OrderedDict[str, nn.Module]", config: Mapping[str, Any]) -> None:
        super().__init__(layers)
        self.config: dict[str, Any] = copy.deepcopy(dict(config))


def _positive_ints(value: Any, key: str, allow_empty: bool = True) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                        for v in value):
        raise TypeError(f"model.{key}: expected a list of positive integers, got {value!r}")
    if not allow_empty and not value:
        raise ValueError(f"model.{key}: must not be empty")
    return [int(v) for v in value]


def _validate(config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(f"model config must be a mapping, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"model.type: unknown model type {kind!r}; valid types are: {', '.join(MODEL_TYPES)}")
    schema = dict(_COMMON, **(_CNN_ONLY if kind == "cnn" else {}))
    for key in config:
        if key not in schema:
            close = difflib.get_close_matches(key, schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"model.{key}: unknown key for a {kind} model{hint}; valid keys: {', '.join(schema)}")
    out: dict[str, Any] = {}
    for key, (types, default) in schema.items():
        if key not in config or config[key] is None:
            if default is _REQUIRED:
                raise KeyError(f"model.{key}: missing required key")
            out[key] = copy.deepcopy(default)
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise TypeError(f"model.{key}: expected {names}, got {type(value).__name__} {value!r}")
        out[key] = value
    out["input_shape"] = _positive_ints(out["input_shape"], "input_shape", allow_empty=False)
    if len(out["input_shape"]) != 3:
        raise ValueError(f"model.input_shape: expected [channels, height, width], got {out['input_shape']}")
    if out["n_classes"] < 2:
        raise ValueError(f"model.n_classes: need at least 2 classes, got {out['n_classes']}")
    if out["hidden"] is None:
        out["hidden"] = list(_DEFAULT_HIDDEN[kind])
    out["hidden"] = _positive_ints(out["hidden"], "hidden")
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise ValueError(f"model.dropout: must be in [0, 1), got {out['dropout']}")
    out["dropout"] = float(out["dropout"])
    if kind == "cnn":
        out["channels"] = _positive_ints(out["channels"], "channels", allow_empty=False)
    return out


def _dense_stack(layers: "OrderedDict[str, nn.Module]", n_in: int, hidden: Sequence[int], dropout: float,
                 n_classes: int) -> None:
    for k, width in enumerate(hidden, start=1):
        layers[f"fc{k}"] = nn.Linear(n_in, width)
        layers[f"hidden{k}"] = nn.ReLU()
        if dropout > 0:
            layers[f"drop{k}"] = nn.Dropout(dropout)
        n_in = width
    layers["out"] = nn.Linear(n_in, n_classes)


def build_model(config: Mapping[str, Any]) -> RDLNet:
    """Build an ``mlp`` or ``cnn`` from a config dict.

    Parameters
    ----------
    config : mapping
        ``type`` ("mlp" | "cnn"), ``input_shape`` ([C, H, W]), ``n_classes``,
        optional ``hidden`` (widths of the fully connected hidden layers;
        default [256, 256] for mlp, [64] for cnn), ``dropout`` (default 0) and,
        for cnn, ``channels`` (default [16, 32]; each block halves H and W).

    Returns
    -------
    RDLNet
        Maps ``(b, C, H, W)`` to logits ``(b, n_classes)``; ``model.config``
        holds the completed config (defaults filled in).

    Raises
    ------
    KeyError, TypeError, ValueError
        naming the offending ``model.<key>``.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.model import build_model
    >>> net = build_model({"type": "mlp", "input_shape": [1, 8, 8], "hidden": [32, 32], "n_classes": 10})
    >>> [name for name, _ in net.named_children()]
    ['flatten', 'fc1', 'hidden1', 'fc2', 'hidden2', 'out']
    >>> net(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    >>> net.config["dropout"]                      # the completed config travels with the model
    0.0
    """
    cfg = _validate(config)
    c, h, w = cfg["input_shape"]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if cfg["type"] == "mlp":
        layers["flatten"] = nn.Flatten()
        _dense_stack(layers, c * h * w, cfg["hidden"], cfg["dropout"], cfg["n_classes"])
    else:
        n_in = c
        for k, ch in enumerate(cfg["channels"], start=1):
            if h < 2 or w < 2:
                raise ValueError(f"model.channels: {len(cfg['channels'])} pooling blocks shrink the "
                                 f"{cfg['input_shape'][1]}x{cfg['input_shape'][2]} input below 1x1; use fewer")
            layers[f"conv{k}"] = nn.Conv2d(n_in, ch, kernel_size=3, padding=1)
            layers[f"act{k}"] = nn.ReLU()
            layers[f"pool{k}"] = nn.MaxPool2d(2)
            n_in, h, w = ch, h // 2, w // 2
        layers["flatten"] = nn.Flatten()
        _dense_stack(layers, n_in * h * w, cfg["hidden"], cfg["dropout"], cfg["n_classes"])
    return RDLNet(layers, cfg)
