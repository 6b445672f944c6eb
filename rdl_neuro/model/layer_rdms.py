"""Layer RDMs of a network over a stimulus set, as rsatoolbox ``RDMs`` with stimulus ids.

The Gram matrix of each layer is accumulated batch by batch, so memory grows
with ``n^2``, not with ``n x channels``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro._progress import progress_bar
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.rdm.calc import check_method, gram_to_rdm
from rdl_neuro.rdm.interop import to_rsatoolbox


def _iter_batches(stimuli: Any, batch_size: int) -> Iterable[torch.Tensor]:
    """Input batches of a tensor ``(n, ...)``, a Dataset or a DataLoader (first element of tuples)."""
    from torch.utils.data import DataLoader, Dataset

    def first(batch: Any) -> torch.Tensor:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            for key in ("image", "input", "x"):
                if key in batch:
                    return batch[key]
            raise KeyError(f"dict batches need an 'image', 'input' or 'x' entry, got keys {sorted(batch)}")
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f"stimulus batches must be tensors, got {type(batch).__name__}")
        return batch

    if isinstance(stimuli, torch.Tensor):
        for start in range(0, stimuli.shape[0], batch_size):
            yield stimuli[start:start + batch_size]
    elif isinstance(stimuli, DataLoader):
        for batch in stimuli:
            yield first(batch)
    elif isinstance(stimuli, Dataset):
        # shuffle=False: RDM rows must follow the dataset order (and the stimulus ids)
        for batch in DataLoader(stimuli, batch_size=batch_size, shuffle=False):
            yield first(batch)
    else:
        raise TypeError(f"stimuli must be a tensor (n, ...), a Dataset or a DataLoader, got {type(stimuli).__name__}")


@torch.no_grad()
def layer_rdms(
    model: torch.nn.Module,
    stimuli: Any,
    layers: Sequence[str] | str,
    method: str = "correlation",
    *,
    batch_size: int = 64,
    stimulus_ids: Sequence[Any] | None = None,
    pattern_descriptors: dict[str, Sequence[Any]] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    max_feature_bytes: int = 256 * 2**20,
) -> RDMs:
    """RDMs of named layers of ``model`` over a stimulus set.

    The model runs in eval mode without gradients, batch by batch, and each
    layer contributes only its Gram matrix ``(n, n)`` and feature sums
    ``(n,)`` (float64), from which ``gram_to_rdm`` gives every method. A Gram
    block ``X_i X_j^T`` needs the features of two batches at once: while all
    layers' activations of the stimulus set fit in ``max_feature_bytes`` the
    earlier batches are kept (one forward pass per batch); beyond that only
    two batches are held at a time and earlier batches are recomputed
    (``n_batches (n_batches + 1) / 2`` forward passes), so memory stays
    bounded however wide the layers are.

    Parameters
    ----------
    model : nn.Module
    stimuli : Tensor ``(n, ...)``, Dataset or DataLoader
        Inputs in stimulus order (tuples yield their first element).
    layers : str or sequence of str
        Names from ``model.named_modules()``.
    method : {"euclidean", "sqeuclidean", "correlation", "cosine"}
    batch_size : int
        Used for tensors and Datasets.
    stimulus_ids : sequence, optional
        One id per stimulus (default ``0..n-1``), written to
        ``pattern_descriptors['stimulus']``.
    pattern_descriptors : dict, optional
        More per-stimulus descriptors (e.g. ``category``).
    progress : bool
        Show a tqdm progress bar.
    device : device, optional
        Where the model runs (the Gram is accumulated on the CPU).
    max_feature_bytes : int
        Budget for keeping activations of earlier batches.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer (``rdm_descriptors['layer']``), ``dissimilarity_measure``
        from ``method``, ``pattern_descriptors['stimulus']`` the ids.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.model import build_model, layer_rdms
    >>> net = build_model({"type": "mlp", "input_shape": [1, 2, 2], "hidden": [8, 8], "n_classes": 3})
    >>> rdms = layer_rdms(net, torch.randn(10, 1, 2, 2), ["hidden1", "hidden2"], progress=False)
    >>> rdms.n_rdm, rdms.n_cond, rdms.rdm_descriptors["layer"], rdms.dissimilarity_measure
    (2, 10, ['hidden1', 'hidden2'], 'correlation')
    """
    check_method(method)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    if device is not None:
        model.to(device)
    batches = list(_iter_batches(stimuli, batch_size))  # inputs only; activations are what may be large
    n = sum(b.shape[0] for b in batches)
    if n < 2:
        raise ValueError(f"an RDM needs at least 2 stimuli, the stimulus set gave {n}")
    if stimulus_ids is not None and len(stimulus_ids) != n:
        raise ValueError(f"{len(stimulus_ids)} stimulus ids for {n} stimuli")
    grams = _GramAccumulator(layers, [b.shape[0] for b in batches])
    bar = progress_bar(total=n, disable=not progress, desc="layer RDMs", unit="stim")
    try:
        with LayerRecorder(model, layers) as rec:
            feats = _BatchFeatures(model, rec, batches, layers, device, max_feature_bytes)
            for j in range(len(batches)):
                feats_j = feats.compute(j)
                grams.add_diagonal_block(j, feats_j)
                for i, feats_i in feats.earlier(j, feats_j):
                    grams.add_block(i, feats_i, j, feats_j)
                bar.update(batches[j].shape[0])
    finally:
        bar.close()
        model.train(was_training)
    vectors = torch.stack([gram_to_rdm(grams.gram[name], grams.sums[name], feats.n_channels[name], method)
                           for name in layers])
    return to_rsatoolbox(vectors, stimulus_ids, method, {"layer": layers}, pattern_descriptors=pattern_descriptors)


class _BatchFeatures:
    """Float64 CPU features ``(b_i, p)`` of every layer for batch ``i``, kept or recomputed.

    While all layers' activations of the batches seen so far fit in ``max_bytes`` they are kept
    (one forward pass per batch); from the first batch that would exceed it on, earlier batches
    are recomputed when needed (``n_batches (n_batches + 1) / 2`` forward passes in all).
    """

    def __init__(self, model: torch.nn.Module, recorder: LayerRecorder, batches: list[torch.Tensor],
                 layers: list[str], device: torch.device | str | None, max_bytes: int) -> None:
        self.model, self.recorder, self.batches, self.layers = model, recorder, batches, layers
        self.device, self.max_bytes = device, max_bytes
        self.n_channels: dict[str, int] = {}
        self.kept: list[dict[str, torch.Tensor]] | None = []

    def compute(self, i: int) -> dict[str, torch.Tensor]:
        """Run the model on batch ``i``: layer -> ``(b_i, p)``; checks finiteness and a fixed width per layer."""
        batch = self.batches[i].to(self.device) if self.device is not None else self.batches[i]
        self.model(batch)
        out = {}
        for name in self.layers:
            x = self.recorder.features[name].detach().reshape(batch.shape[0], -1).to("cpu", torch.float64)
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"layer {name!r} produced NaN or infinite activations")
            if self.n_channels.setdefault(name, x.shape[1]) != x.shape[1]:
                raise ValueError(f"layer {name!r} gave {x.shape[1]} features for one batch "
                                 f"and {self.n_channels[name]} for another")
            out[name] = x
        return out

    def earlier(self, j: int, feats_j: dict[str, torch.Tensor]) -> Iterable[tuple[int, dict[str, torch.Tensor]]]:
        """``(i, features of batch i)`` for ``i < j``, then keeps ``feats_j`` while the budget allows."""
        if self.kept is not None:
            size = sum(x.numel() * 8 for x in feats_j.values()) * (j + 1)
            if size > self.max_bytes:
                self.kept = None  # from now on recompute earlier batches instead of keeping them
        if self.kept is None:
            yield from ((i, self.compute(i)) for i in range(j))
        else:
            yield from ((i, self.kept[i]) for i in range(j))
            self.kept.append(feats_j)


class _GramAccumulator:
    """Per layer the Gram matrix ``(n, n)`` and feature sums ``(n,)`` (float64), filled block by block."""

    def __init__(self, layers: list[str], batch_sizes: list[int]) -> None:
        n = sum(batch_sizes)
        self.starts = np.cumsum([0] + batch_sizes)
        self.gram = {name: torch.zeros(n, n, dtype=torch.float64) for name in layers}
        self.sums = {name: torch.zeros(n, dtype=torch.float64) for name in layers}

    def _rows(self, i: int) -> slice:
        return slice(self.starts[i], self.starts[i + 1])

    def add_diagonal_block(self, j: int, feats_j: dict[str, torch.Tensor]) -> None:
        """``X_j X_j^T`` and the row sums of batch ``j``."""
        rows = self._rows(j)
        for name, x in feats_j.items():
            self.sums[name][rows] = x.sum(1)
            self.gram[name][rows, rows] = x @ x.T

    def add_block(self, i: int, feats_i: dict[str, torch.Tensor], j: int, feats_j: dict[str, torch.Tensor]) -> None:
        """``X_i X_j^T`` and its transpose."""
        rows_i, rows_j = self._rows(i), self._rows(j)
        for name, x in feats_j.items():
            block = feats_i[name] @ x.T
            self.gram[name][rows_i, rows_j] = block
            self.gram[name][rows_j, rows_i] = block.T
