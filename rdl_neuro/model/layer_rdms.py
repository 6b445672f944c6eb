"""Layer RDMs of a network over a stimulus set, as rsatoolbox ``RDMs`` with stimulus ids.

The Gram matrix of each layer is accumulated batch by batch, so memory grows
with ``n^2``, not with ``n x channels``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import warnings

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro._progress import progress_bar
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.data.ids import UNCOVERED, plain_ids
from rdl_neuro.devices import check_device
from rdl_neuro.rdm.calc import NORM_FLOOR, check_finite_rows, check_method, gram_to_rdm, zero_variance_rows
from rdl_neuro.rdm.interop import to_rsatoolbox


def _shuffles(loader: Any) -> str | None:
    """The name of a DataLoader's sampler when it draws in random order, else None."""
    from torch.utils.data import DistributedSampler, RandomSampler, SubsetRandomSampler, WeightedRandomSampler

    sampler = getattr(loader.batch_sampler, "sampler", None) if loader.batch_sampler is not None else loader.sampler
    if sampler is None:
        sampler = loader.batch_sampler  # a batch sampler of its own (e.g. CoverageBatchSampler)
    random = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)
    if isinstance(sampler, random) or (isinstance(sampler, DistributedSampler) and sampler.shuffle):
        return type(sampler).__name__
    if hasattr(sampler, "set_epoch") and not isinstance(sampler, DistributedSampler):
        return type(sampler).__name__  # epoch-dependent order: not a fixed stimulus order
    return None


def _iter_batches(stimuli: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, list[Any] | None]]:
    """``(inputs, ids)`` batches of a tensor ``(n, ...)``, a Dataset or a DataLoader.

    Inputs are the first element of tuple items (or a dict's ``image``/``input``/``x``); ids are
    the items' stimulus ids when the dataset is a ``StimulusDataset`` (``(x, y, id)`` items), else None.
    """
    from torch.utils.data import DataLoader, Dataset

    from rdl_neuro.data.stimulus import StimulusDataset

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

    def split(batch: Any, with_ids: bool) -> tuple[torch.Tensor, list[Any] | None]:
        return first(batch), (plain_ids(batch[2]) if with_ids else None)

    if isinstance(stimuli, torch.Tensor):
        for start in range(0, stimuli.shape[0], batch_size):
            yield stimuli[start:start + batch_size], None
    elif isinstance(stimuli, DataLoader):
        with_ids = isinstance(stimuli.dataset, StimulusDataset)
        sampler = _shuffles(stimuli)
        if sampler is not None and not with_ids:
            # RDM rows would follow a random order while the ids follow the dataset's
            raise ValueError(f"the DataLoader draws stimuli in random order ({sampler}): the RDM rows would not "
                             "match the stimulus ids; pass DataLoader(..., shuffle=False) or the Dataset itself")
        if stimuli.drop_last and stimuli.batch_size and len(stimuli.dataset) % stimuli.batch_size:  # type: ignore[arg-type]
            raise ValueError(f"the DataLoader drops the last {len(stimuli.dataset) % stimuli.batch_size} stimuli "  # type: ignore[arg-type]
                             "(drop_last=True): the RDM would silently lack them; pass drop_last=False")
        for batch in stimuli:
            yield split(batch, with_ids)
    elif isinstance(stimuli, Dataset):
        with_ids = isinstance(stimuli, StimulusDataset)
        # shuffle=False: RDM rows must follow the dataset order (and the stimulus ids)
        for batch in DataLoader(stimuli, batch_size=batch_size, shuffle=False):
            yield split(batch, with_ids)
    else:
        raise TypeError(f"stimuli must be a tensor (n, ...), a Dataset or a DataLoader, got {type(stimuli).__name__}")


def _item_ids(batches: list[tuple[torch.Tensor, list[Any] | None]], given: Sequence[Any] | None) -> list[Any] | None:
    """The stimulus ids for the RDMs: the items' (StimulusDataset) ids, checked against ``given``, or ``given``."""
    if batches[0][1] is None:
        return None if given is None else plain_ids(given)
    ids = [i for _, batch_ids in batches for i in batch_ids]  # type: ignore[union-attr]
    if UNCOVERED in ids:
        k = ids.index(UNCOVERED)
        if given is None:
            raise ValueError(f"stimulus {k} of the StimulusDataset has no stimulus id (UNCOVERED); "
                             "layer RDMs need one id per stimulus: pass stimulus_ids=")
        return plain_ids(given)
    if given is not None:
        given = plain_ids(given)
        if len(given) == len(ids):
            differ = [k for k, (a, b) in enumerate(zip(given, ids)) if a != b]
            if differ:
                k = differ[0]
                raise ValueError(f"stimulus_ids disagree with the StimulusDataset's ids in {len(differ)} places, "
                                 f"first at stimulus {k}: {given[k]!r} vs {ids[k]!r}")
        return given
    return ids


def _floor_warning(counts: dict[str, list[Any]], method: str) -> str:
    where = "; ".join(f"layer {name!r}: {len(ids)} (stimuli {ids[:5]}{', ...' if len(ids) > 5 else ''})"
                      for name, ids in counts.items() if ids)
    return (f"zero-variance patterns under {method!r} were floored (each counts as uncorrelated with every other "
            f"stimulus, dissimilarity 1): {where}; rdm_descriptors['n_floored'] holds the counts")


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
    floor: bool = True,
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
        Inputs in stimulus order (tuples yield their first element); floating
        inputs (integer images such as ``uint8`` raise: scale them as the model
        was trained). A DataLoader that draws in random order is refused,
        unless its items carry their ids (a ``StimulusDataset``, whose
        ``(x, y, id)`` items give the RDM's stimulus ids in the order drawn).
    layers : str or sequence of str
        Names from ``model.named_modules()``.
    method : {"euclidean", "sqeuclidean", "correlation", "cosine"}
    batch_size : int
        Used for tensors and Datasets.
    stimulus_ids : sequence, optional
        One id per stimulus, written to ``pattern_descriptors['stimulus']``;
        default: the ids of a ``StimulusDataset``'s items, else ``0..n-1``
        (given ids must agree with a ``StimulusDataset``'s).
    pattern_descriptors : dict, optional
        More per-stimulus descriptors (e.g. ``category``).
    progress : bool
        Show a tqdm progress bar.
    device : device, optional
        Where the model runs (the Gram is accumulated on the CPU).
    max_feature_bytes : int
        Budget for keeping activations of earlier batches.
    floor : bool
        ``correlation`` / ``cosine``: a stimulus whose pattern has zero
        variance (a dead unit layer, a constant image) has no defined
        dissimilarity. True (default): the library's floor
        (``rdl_neuro.rdm.calc.NORM_FLOOR``, as in training) counts it as
        uncorrelated with every other stimulus (dissimilarity 1), with a
        warning naming the layer and the stimuli; False: a ValueError naming them.

    Returns
    -------
    rsatoolbox.rdm.RDMs
        One RDM per layer (``rdm_descriptors['layer']``), ``dissimilarity_measure``
        from ``method``, ``pattern_descriptors['stimulus']`` the ids;
        ``rdm_descriptors['n_floored']`` the number of floored patterns per layer.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.model import build_model, layer_rdms
    >>> net = build_model({"type": "mlp", "input_shape": [1, 2, 2], "hidden": [8, 8], "n_classes": 3})
    >>> rdms = layer_rdms(net, torch.randn(10, 1, 2, 2), ["hidden1", "hidden2"], progress=False)
    >>> rdms.n_rdm, rdms.n_cond, rdms.rdm_descriptors["layer"], rdms.dissimilarity_measure
    (2, 10, ['hidden1', 'hidden2'], 'correlation')
    >>> rdms.rdm_descriptors["n_floored"]   # zero-variance patterns per layer (floored, with a warning)
    [0, 0]
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
        device = check_device(device)
        model.to(device)
    with_ids = list(_iter_batches(stimuli, batch_size))  # inputs only; activations are what may be large
    batches = [b for b, _ in with_ids]
    n = sum(b.shape[0] for b in batches)
    if n < 2:
        raise ValueError(f"an RDM needs at least 2 stimuli, the stimulus set gave {n}")
    if stimulus_ids is not None and len(stimulus_ids) != n:
        raise ValueError(f"{len(stimulus_ids)} stimulus ids for {n} stimuli")
    stimulus_ids = _item_ids(with_ids, stimulus_ids)
    if not batches[0].is_floating_point() and any(p.is_floating_point() for p in model.parameters()):
        raise TypeError(f"the stimuli are {batches[0].dtype} (integer images?): convert them to floats scaled as "
                        "the model was trained (e.g. x.float() / 255)")
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
    eps = NORM_FLOOR if floor else None
    floored: dict[str, list[Any]] = {}
    for name in layers:
        dead = zero_variance_rows(grams.gram[name], grams.sums[name], feats.n_channels[name], method, eps)
        rows = torch.nonzero(dead).squeeze(1).tolist()
        floored[name] = [stimulus_ids[r] for r in rows] if stimulus_ids is not None else rows
        if floored[name] and not floor:
            raise ValueError(f"layer {name!r} has zero-variance patterns under {method!r} for stimuli "
                             f"{floored[name][:5]}: the dissimilarity is undefined there (floor=True counts "
                             "them as uncorrelated with every other stimulus)")
    if any(floored.values()):
        warnings.warn(_floor_warning(floored, method), UserWarning, stacklevel=2)
    vectors = torch.stack([gram_to_rdm(grams.gram[name], grams.sums[name], feats.n_channels[name], method, eps=eps)
                           for name in layers])
    if not bool(torch.isfinite(vectors).all()):
        bad = [name for name, v in zip(layers, vectors) if not bool(torch.isfinite(v).all())]
        raise ValueError(f"layer {bad[0]!r}: features are finite but too large: their products overflow float64; "
                         "rescale them")
    descriptors = {"layer": layers, "n_floored": [len(floored[name]) for name in layers]}
    return to_rsatoolbox(vectors, stimulus_ids, method, descriptors, pattern_descriptors=pattern_descriptors)


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
        try:
            self.model(batch)
        except RuntimeError as err:  # e.g. images of a size the model was not built for
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"the model cannot run on stimulus batch {i} of shape {tuple(batch.shape)}: "
                             f"{first_line}") from err
        out = {}
        for name in self.layers:
            x = self.recorder.features[name].detach().reshape(batch.shape[0], -1).to("cpu", torch.float64)
            try:
                # NaN/inf (naming the stimuli) and float64 overflow of the squared norms
                check_finite_rows(x, (x * x).sum(1))
            except ValueError as err:
                raise ValueError(f"layer {name!r} (stimulus batch {i}): {err}") from None
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
