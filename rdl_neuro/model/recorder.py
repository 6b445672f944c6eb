"""Recording named layers' activations with forward hooks: ``LayerRecorder``.

Layer names are those of ``model.named_modules()`` (``"0"``, ``"features.3"``,
``"encoder.block.fc"``...). Each recorded output is flattened to
``(batch, features)`` so that it can go straight into ``compute_rdm``.

A module that is called more than once per forward pass (a shared block, a
weight-tied layer) produces one output per call; ``call="last"`` (default)
keeps the last call of the current forward pass, ``call="first"`` the first.
"The current forward pass" is delimited by the root model: a pre-hook on the
model forgets what was recorded during its previous forward, so the recorder
never mixes two forward passes and ``call="first"`` needs no manual ``clear()``.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import torch
from torch import nn

__all__ = ["LayerRecorder", "available_layers", "resolve_layers"]

CALLS = ("last", "first")


def available_layers(model: nn.Module) -> list[str]:
    """Names of every submodule of ``model`` that a recorder can hook, in ``named_modules()`` order.

    The root module itself (name ``""``) is left out: its output is the model's output.
    """
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: Iterable[str] | str, what: str = "layer") -> dict[str, nn.Module]:
    """Map each layer name to its module; an unknown name raises a KeyError listing close matches."""
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError(f"no {what} names given")
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"{what} names must be strings as in model.named_modules(), got {name!r}")
        if name in out:
            raise ValueError(f"{what} {name!r} is listed twice")
        if name == "" or name not in modules:
            names = available_layers(model)
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
            raise KeyError(
                f"unknown {what} {name!r} in {type(model).__name__}{hint} "
                f"(the model's layers are: {shown or 'none'})"
            )
        out[name] = modules[name]
    return out


def _as_tensor_output(output: Any, name: str) -> torch.Tensor:
    """The tensor of a module's output: the tensor itself or the first tensor of a tuple (RNNs)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor; record a layer that returns one")


class LayerRecorder:
    """Record the outputs of named modules with forward hooks, flattened to ``(batch, features)``.

    Parameters
    ----------
    model : nn.Module
    layers : str or iterable of str
        Names as in ``model.named_modules()``. Unknown names raise a KeyError
        that lists the close matches among the model's names.
    call : {"last", "first"}
        Which output to keep for a module called several times in one forward pass.
    detach : bool
        Store detached outputs (for evaluation); default keeps the graph so
        losses on the features train the model.

    The hooks are registered on construction and removed by ``close()`` or on
    leaving a ``with`` block::

        with LayerRecorder(model, ["fc1", "fc2"]) as rec:
            logits = model(x)
            feats = rec.features      # {"fc1": (b, 800), "fc2": (b, 800)}

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.model import LayerRecorder, build_model
    >>> net = build_model({"type": "mlp", "input_shape": [1, 2, 2], "hidden": [8, 8], "n_classes": 3})
    >>> with LayerRecorder(net, ["hidden1", "hidden2"]) as rec:
    ...     logits = net(torch.randn(5, 1, 2, 2))
    ...     {name: tuple(f.shape) for name, f in rec.features.items()}
    {'hidden1': (5, 8), 'hidden2': (5, 8)}
    """

    def __init__(self, model: nn.Module, layers: Iterable[str] | str, call: str = "last", *, detach: bool = False):
        if call not in CALLS:
            raise ValueError(f"call must be one of {CALLS}, got {call!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.call = call
        self.detach = detach
        self._modules = resolve_layers(model, layers)
        self.layers: tuple[str, ...] = tuple(self._modules)
        self._features: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        # a new forward pass of the root model starts a fresh record (see module docstring)
        self._handles.append(model.register_forward_pre_hook(self._on_root_forward))
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        self.clear()

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._calls[name] = self._calls.get(name, 0) + 1
            if self.call == "first" and name in self._features:
                return
            out = _as_tensor_output(output, name)
            if out.ndim == 0:
                raise ValueError(f"layer {name!r} returned a scalar; cannot record per-sample features")
            out = out.reshape(out.shape[0], -1) if out.ndim != 2 else out
            self._features[name] = out.detach() if self.detach else out

        return hook

    @property
    def features(self) -> dict[str, torch.Tensor]:
        """Recorded outputs of the last forward pass, ``{name: Tensor (batch, features)}`` in ``layers`` order.

        Raises a RuntimeError naming the layers that were not called.
        """
        missing = [n for n in self.layers if n not in self._features]
        if missing:
            raise RuntimeError(
                f"layers {missing} were not called in the last forward pass of {type(self.model).__name__} "
                "(or the recorder was cleared/closed since)"
            )
        return {n: self._features[n] for n in self.layers}

    @property
    def calls(self) -> dict[str, int]:
        """How many times each layer was called in the last forward pass."""
        return {n: self._calls.get(n, 0) for n in self.layers}

    def clear(self) -> None:
        """Forget the recorded outputs (frees their graphs)."""
        self._features = {}
        self._calls = {}

    def close(self) -> None:
        """Remove every hook and forget the recorded outputs; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    @property
    def active(self) -> bool:
        """Whether the hooks are still registered."""
        return bool(self._handles)

    def __enter__(self) -> LayerRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LayerRecorder({type(self.model).__name__}, layers={list(self.layers)}, call={self.call!r})"
