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
    starts = np.cumsum([0] + [b.shape[0] for b in batches])
    gram = {name: torch.zeros(n, n, dtype=torch.float64) for name in layers}
    sums = {name: torch.zeros(n, dtype=torch.float64) for name in layers}
    n_channels: dict[str, int] = {}
    kept: list[dict[str, torch.Tensor]] | None = []
    bar = progress_bar(total=n, disable=not progress, desc="layer RDMs", unit="stim")
    try:
        with LayerRecorder(model, layers) as rec:
            def run(i: int) -> dict[str, torch.Tensor]:
                batch = batches[i].to(device) if device is not None else batches[i]
                model(batch)
                out = {}
                for name in layers:
                    x = rec.features[name].detach().reshape(batch.shape[0], -1).to("cpu", torch.float64)
                    if not bool(torch.isfinite(x).all()):
                        raise ValueError(f"layer {name!r} produced NaN or infinite activations")
                    if n_channels.setdefault(name, x.shape[1]) != x.shape[1]:
                        raise ValueError(f"layer {name!r} gave {x.shape[1]} features for one batch "
                                         f"and {n_channels[name]} for another")
                    out[name] = x
                return out

            for j in range(len(batches)):
                feats_j = run(j)
                sl_j = slice(starts[j], starts[j + 1])
                for name, x in feats_j.items():
                    sums[name][sl_j] = x.sum(1)
                    gram[name][sl_j, sl_j] = x @ x.T
                if kept is not None:
                    earlier = ((i, kept[i]) for i in range(j))
                    size = sum(x.numel() * 8 for x in feats_j.values()) * (j + 1)
                    if size > max_feature_bytes:
                        kept = None  # from now on recompute earlier batches instead of keeping them
                        earlier = ((i, run(i)) for i in range(j))
                else:
                    earlier = ((i, run(i)) for i in range(j))
                for i, feats_i in earlier:
                    sl_i = slice(starts[i], starts[i + 1])
                    for name in layers:
                        block = feats_i[name] @ feats_j[name].T
                        gram[name][sl_i, sl_j] = block
                        gram[name][sl_j, sl_i] = block.T
                if kept is not None:
                    kept.append(feats_j)
                bar.update(batches[j].shape[0])
    finally:
        bar.close()
        model.train(was_training)
    vectors = torch.stack([gram_to_rdm(gram[name], sums[name], n_channels[name], method) for name in layers])
    return to_rsatoolbox(vectors, stimulus_ids, method, {"layer": layers}, pattern_descriptors=pattern_descriptors)
