"""Model-brain RSA: layer RDMs of a network, comparisons, bootstrap, noise ceilings -> pandas.

``layer_rdms`` runs a model over a stimulus set and returns one rsatoolbox
``RDMs`` (an RDM per recorded layer). ``rsa_table`` evaluates model RDMs
against brain RDMs the way rsatoolbox's ``eval_fixed``, ``eval_bootstrap_pattern``,
``eval_bootstrap_rdm`` and ``eval_bootstrap`` do -- same numbers, same t-tests,
same noise ceilings -- and returns a tidy DataFrame (``rsa_evaluate`` returns
the arrays behind it).

How the bootstrap is made fast
------------------------------
Resampling stimuli with replacement gives an RDM over a multiset of stimuli:
rsatoolbox builds it by indexing (``subsample_pattern``), and the pairs of two
copies of the same stimulus become NaN. Every valid entry of that RDM is a copy
of an original pair ``(a, b)``, present ``c_a * c_b`` times, where ``c`` counts
how often each stimulus was drawn. So a statistic of the resampled RDMs is the
*weighted* statistic of the original RDMs with pair weights ``c_a c_b``. For
``corr`` and ``cosine`` that is a handful of weighted moments per resample --
one batched matrix product over all resamples, models and subjects -- and the
noise ceiling follows in closed form from the subjects' weighted correlation
matrix. Kendall's tau-a and tau-b use the same weights differently: the
original entries are ordered once per (model, subject) pair, and a resample is
that order with every entry repeated ``c_a c_b`` times -- one ``np.repeat`` and
one compiled discordance count, no sorting or RDM building (see "Kendall tau,
pattern bootstrap" below); the bootstrapped noise ceiling pools the subjects'
weighted average ranks the same way. Other cases (the remaining rank and whitened
comparisons, RDM bootstraps with tau, NaN entries) take the exact general path:
the resampled RDMs are built as rsatoolbox builds them and compared with
``rdl_neuro.compare.compare_rdms`` (one batched call per resample).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from rsatoolbox.rdm import RDMs
from scipy import stats

from rdl_neuro.adapters import from_rsatoolbox, to_rsatoolbox
from rdl_neuro.compare import COMPARE_METHODS, _kendall_dis, _sorted_dense, compare_rdms, rankdata
from rdl_neuro.rdm import check_method, n_stimuli_from_length, triu_indices

__all__ = ["layer_rdms", "gram_to_rdm", "rsa_table", "rsa_evaluate", "RSAResult", "BOOTSTRAPS"]

BOOTSTRAPS = (None, "pattern", "rdm", "both")

# comparison methods whose pattern bootstrap runs on weighted moments (see the module docstring)
_MOMENT_METHODS = ("corr", "cosine")
# comparison methods that only see the order of the dissimilarities
_RANK_METHODS = ("spearman", "rho-a", "kendall", "tau-b", "tau-a")


# ============================================================================ layer RDMs


def gram_to_rdm(gram: torch.Tensor, sums: torch.Tensor, n_channels: int, method: str = "correlation") -> torch.Tensor:
    """Condensed RDM from a Gram matrix and per-stimulus feature sums.

    Parameters
    ----------
    gram : Tensor ``(n, n)``
        ``X @ X.T`` of the features ``X (n, p)``.
    sums : Tensor ``(n,)``
        ``X.sum(1)``; needed by ``correlation`` (centring), ignored otherwise.
    n_channels : int
        ``p``, the number of features.
    method : str
        One of ``rdl_neuro.rdm.METHODS``; the result equals
        ``compute_rdm(X, method)`` up to rounding.

    Returns
    -------
    Tensor ``(n (n - 1) / 2,)``
    """
    check_method(method)
    n = gram.shape[-1]
    rows, cols = triu_indices(n, gram.device)
    if method in ("euclidean", "sqeuclidean"):
        diag = torch.diagonal(gram)
        d2 = (diag[rows] + diag[cols] - 2 * gram[rows, cols]).clamp_min(0)
        return d2.sqrt() if method == "euclidean" else d2 / n_channels
    if method == "correlation":
        # centring each pattern across channels: G_c = G - s s^T / p
        gram = gram - torch.outer(sums, sums) / n_channels
        what = "zero variance across channels (constant pattern) under 'correlation'"
    else:
        what = "zero norm (all-zero pattern) under 'cosine'"
    diag = torch.diagonal(gram).clamp_min(0)
    norms = diag.sqrt()
    scale = torch.diagonal(gram).abs().max().sqrt().clamp_min(torch.finfo(gram.dtype).tiny)
    bad = norms <= 1e3 * torch.finfo(gram.dtype).eps * scale
    if bool(bad.any()):
        raise ValueError(f"{what} for stimuli at rows {torch.nonzero(bad).squeeze(1)[:5].tolist()}: "
                         "the dissimilarity is undefined there")
    return 1 - gram[rows, cols] / (norms[rows] * norms[cols])


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
    """
    from rdl_neuro._progress import progress_bar

    from rdl_neuro.features import LayerRecorder

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


# ============================================================================ inputs


def _rdm_names(rdms: RDMs) -> list[str]:
    for key in ("layer", "name", "model"):
        if key in rdms.rdm_descriptors:
            return [str(v) for v in rdms.rdm_descriptors[key]]
    return [f"rdm{i}" for i in range(rdms.n_rdm)]


def _match_stimuli(model_ids: list[Any], brain_ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(model_pos, brain_pos)`` of the common stimuli, in brain order; errors on missing ids."""
    brain_index = {sid: i for i, sid in enumerate(brain_ids)}
    missing = [sid for sid in model_ids if sid not in brain_index]
    if missing:
        if len(missing) == len(model_ids):
            raise ValueError(
                f"the model and brain RDMs share no stimulus ids: model ids start {model_ids[:5]}, "
                f"brain ids start {brain_ids[:5]} (check the stimulus descriptor)")
        raise ValueError(f"{len(missing)} stimulus ids of the model RDMs are missing from the brain RDMs: "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    model_index = {sid: i for i, sid in enumerate(model_ids)}
    brain_pos = np.array([i for i, sid in enumerate(brain_ids) if sid in model_index], dtype=np.int64)
    model_pos = np.array([model_index[brain_ids[i]] for i in brain_pos], dtype=np.int64)
    if len(brain_pos) < 3:
        raise ValueError(f"only {len(brain_pos)} stimuli in common; RSA needs at least 3")
    return model_pos, brain_pos


def _stack_models(model_rdms: RDMs | Sequence[RDMs], brain_rdms: RDMs, brain_ids: list[Any], method: str,
                  descriptor: str) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """Model RDMs from one ``RDMs`` or several (e.g. a network's layers and classic model RDMs),
    restricted to and ordered by the brain's stimuli: ``(models (k, P'), names, brain positions)``.
    Every object must cover the same stimuli, so that all models are compared on one set."""
    objects = [model_rdms] if isinstance(model_rdms, RDMs) else list(model_rdms)
    if not objects:
        raise ValueError("model_rdms is an empty sequence; give an RDMs object or a sequence of them")
    for i, obj in enumerate(objects):
        if not isinstance(obj, RDMs):
            where = "model_rdms" if isinstance(model_rdms, RDMs) else f"model_rdms[{i}]"
            raise TypeError(f"{where} must be rsatoolbox.rdm.RDMs, got {type(obj).__name__}")
    vectors, names, first_pos, first_ids = [], [], None, None
    for i, obj in enumerate(objects):
        _warn_measures(obj, brain_rdms, method)
        tensor, ids = from_rsatoolbox(obj, descriptor)
        model_pos, brain_pos = _match_stimuli(ids, brain_ids)
        if first_pos is None:
            first_pos, first_ids = brain_pos, set(ids)
        elif not np.array_equal(brain_pos, first_pos):
            only_here, only_first = sorted(set(ids) - first_ids, key=str), sorted(first_ids - set(ids), key=str)
            raise ValueError(f"model_rdms[{i}] covers other stimuli than model_rdms[0]: "
                             f"{len(only_here)} only in [{i}] (e.g. {only_here[:5]}), "
                             f"{len(only_first)} only in [0] (e.g. {only_first[:5]}); "
                             "subset them to the same stimuli")
        vectors.append(_subset_vectors(tensor, model_pos).to(torch.float64))
        names += _rdm_names(obj)
    return torch.cat(vectors), names, first_pos


def _subset_vectors(vectors: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    """Condensed RDMs ``(r, P)`` restricted/reordered to stimuli ``pos`` -> ``(r, P')``."""
    n = n_stimuli_from_length(vectors.shape[1])
    if len(pos) == n and np.array_equal(pos, np.arange(n)):
        return vectors
    square = _square_nan_diag(vectors)
    idx = torch.as_tensor(pos)
    sub = square[:, idx][:, :, idx]
    rows, cols = triu_indices(len(pos))
    return sub[:, rows, cols]


def _square_nan_diag(vectors: torch.Tensor) -> torch.Tensor:
    n = n_stimuli_from_length(vectors.shape[1])
    rows, cols = triu_indices(n)
    square = torch.full((vectors.shape[0], n, n), float("nan"), dtype=vectors.dtype)
    square[:, rows, cols] = vectors
    square[:, cols, rows] = vectors
    return square


def _warn_measures(model: RDMs, brain: RDMs, method: str) -> None:
    a, b = model.dissimilarity_measure, brain.dissimilarity_measure
    if not a or not b or a == b:
        return
    monotone = {a, b} <= {"euclidean", "squared euclidean"}
    if monotone and method in _RANK_METHODS:
        return  # one is a monotone transform of the other: rank comparisons cannot tell them apart
    warnings.warn(
        f"model RDMs use dissimilarity measure {a!r}, brain RDMs {b!r}: the '{method}' comparison "
        "depends on that choice (compute the model RDMs with the brain's measure, or use a rank method "
        "where only the order matters)", UserWarning, stacklevel=3)


# ============================================================================ noise ceiling pieces


def _nan_rank_rows(v: torch.Tensor) -> torch.Tensor:
    """Average ranks of each row's non-NaN entries (NaN stays NaN), as rsatoolbox's ``_nan_rank_data``."""
    valid = ~torch.isnan(v)
    if bool(valid.all()):
        return rankdata(v)
    out = torch.full_like(v, float("nan"))
    for i in range(v.shape[0]):
        out[i, valid[i]] = rankdata(v[i, valid[i]][None])[0]
    return out


def _pool(v: torch.Tensor, method: str) -> torch.Tensor:
    """rsatoolbox's ``pool_rdm``: the RDM ``(1, P)`` that best represents ``v (r, P)`` under ``method``."""
    if method in ("cosine", "cosine_cov"):
        v = v / torch.sqrt(torch.nanmean(v**2, dim=1, keepdim=True))
    elif method in ("corr", "corr_cov"):
        v = v - torch.nanmean(v, dim=1, keepdim=True)
        std = torch.sqrt(torch.nanmean(v**2, dim=1, keepdim=True))
        v = v / std
    elif method in _RANK_METHODS:
        v = _nan_rank_rows(v)
    # _nan_mean: the entries valid in the first RDM
    keep = ~torch.isnan(v[0])
    pooled = torch.full((1, v.shape[1]), float("nan"), dtype=v.dtype)
    pooled[0, keep] = v[:, keep].mean(0)
    if method in ("corr", "corr_cov"):
        pooled = pooled - pooled[~torch.isnan(pooled)].min()
    return pooled


def _noise_ceiling(brain: torch.Tensor, groups: np.ndarray, method: str) -> tuple[float, float]:
    """rsatoolbox's ``boot_noise_ceiling`` on ``brain (r, P)``; ``groups`` are the rows' ``index`` values."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError("a noise ceiling needs at least 2 brain RDMs (subjects/sessions); got 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pooled_all = _pool(brain, method)
        lower, upper = [], []
        for g in unique:
            test = torch.as_tensor(groups == g)
            lower.append(float(compare_rdms(_pool(brain[~test], method), brain[test], method).mean()))
            upper.append(float(compare_rdms(pooled_all, brain[test], method).mean()))
    return float(np.mean(lower)), float(np.mean(upper))


# ============================================================================ bootstrap


def _draw_indices(bootstrap: str, n_boot: int, n_stim: int, n_brain: int, seed: int | None,
                  given: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(rdm_idx (N, n_brain) | None, pattern_idx (N, n_stim) | None)``."""
    if given is not None:
        if bootstrap == "both":
            if not (isinstance(given, (tuple, list)) and len(given) == 2):
                raise ValueError("bootstrap='both' takes bootstrap_indices=(rdm_idx (N, n_brain), pattern_idx (N, n_stim))")
            rdm_idx, pat_idx = (np.asarray(g, dtype=np.int64) for g in given)
        elif bootstrap == "pattern":
            rdm_idx, pat_idx = None, np.asarray(given, dtype=np.int64)
        else:
            rdm_idx, pat_idx = np.asarray(given, dtype=np.int64), None
        for name, idx, size in (("rdm", rdm_idx, n_brain), ("pattern", pat_idx, n_stim)):
            if idx is None:
                continue
            if idx.ndim != 2 or idx.shape[1] != size:
                raise ValueError(f"{name} bootstrap indices must have shape (N, {size}), got {idx.shape}")
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} bootstrap indices must lie in [0, {size}), got [{idx.min()}, {idx.max()}]")
        return rdm_idx, pat_idx
    rng = np.random.default_rng(seed)
    rdm_idx = rng.integers(0, n_brain, size=(n_boot, n_brain)) if bootstrap in ("rdm", "both") else None
    pat_idx = rng.integers(0, n_stim, size=(n_boot, n_stim)) if bootstrap in ("pattern", "both") else None
    return rdm_idx, pat_idx


def _resample(vectors: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """rsatoolbox's ``subsample_pattern``: RDMs over stimuli ``sort(idx)``, NaN between copies."""
    square = _square_nan_diag(vectors)
    sel = torch.as_tensor(np.sort(idx))
    sub = square[:, sel][:, :, sel]
    rows, cols = triu_indices(len(sel))
    return sub[:, rows, cols]


def _bootstrap_general(models: torch.Tensor, brain: torch.Tensor, method: str, rdm_idx: np.ndarray | None,
                       pat_idx: np.ndarray | None, boot_nc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact bootstrap for every method: evaluations ``(N, k)`` and noise ceilings ``(2, N)``."""
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    evals = np.full((n_boot, models.shape[0]), np.nan)
    nc = np.full((2, n_boot), np.nan)
    fixed = compare_rdms(models, brain, method).numpy() if pat_idx is None else None
    for i in range(n_boot):
        rows = rdm_idx[i] if rdm_idx is not None else np.arange(brain.shape[0])
        if pat_idx is not None:
            if len(np.unique(pat_idx[i])) < 3:
                continue  # rsatoolbox marks such samples NaN
            m_b, y_b = _resample(models, pat_idx[i]), _resample(brain[torch.as_tensor(rows)], pat_idx[i])
            evals[i] = compare_rdms(m_b, y_b, method).mean(1).numpy()
        else:
            m_b, y_b = models, brain[torch.as_tensor(rows)]
            evals[i] = fixed[:, rows].mean(1)
        if boot_nc:
            nc[:, i] = _noise_ceiling(y_b, rows, method) if len(np.unique(rows)) > 1 else (np.nan, np.nan)
    return evals, nc


def _pair_weights(pat_idx: np.ndarray, n: int) -> torch.Tensor:
    """Pair weights ``c_a c_b`` ``(N, P)`` of pattern resamples ``(N, n)`` (``c`` = draw counts)."""
    offsets = np.arange(pat_idx.shape[0])[:, None] * n
    counts = np.bincount((pat_idx + offsets).ravel(), minlength=pat_idx.shape[0] * n).reshape(-1, n)
    c = torch.from_numpy(counts.astype(np.float64))
    rows, cols = triu_indices(n)
    return c[:, rows] * c[:, cols]


def _bootstrap_moments(models: torch.Tensor, brain: torch.Tensor, method: str, rdm_idx: np.ndarray | None,
                       pat_idx: np.ndarray | None, boot_nc: bool) -> tuple[np.ndarray, np.ndarray]:
    """``corr`` / ``cosine`` bootstrap from weighted moments (equal to the general path, much faster)."""
    k, m = models.shape[0], brain.shape[0]
    n = n_stimuli_from_length(models.shape[1])
    z = torch.cat([models, brain]).to(torch.float64)
    if method == "corr":
        # shifting by the full-data mean changes no correlation and avoids cancellation in S - mu mu^T
        z = z - z.mean(1, keepdim=True)
    n_boot = len(rdm_idx if rdm_idx is not None else pat_idx)
    if pat_idx is not None:
        weights = _pair_weights(pat_idx, n)
        valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx])
    else:
        weights = torch.ones(1, z.shape[1], dtype=torch.float64)
        valid = np.ones(n_boot, dtype=bool)
    # second moments (B, r, r) of the weighted entries (B = 1 when only RDMs are resampled): one matrix
    # product of the weights with the r (r + 1) / 2 entrywise products of RDM pairs
    r = z.shape[0]
    iu, ju = torch.triu_indices(r, r)
    products = z[iu] * z[ju]  # (r (r + 1) / 2, P)
    total = weights.sum(1)
    cov = torch.empty(weights.shape[0], r, r, dtype=torch.float64)
    upper = (weights @ products.T) / total[:, None]
    if method == "corr":
        mean = (weights @ z.T) / total[:, None]
        upper = upper - mean[:, iu] * mean[:, ju]
    cov[:, iu, ju] = upper
    cov[:, ju, iu] = upper
    sd = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    model_vs_brain = corr[:, :k, k:]  # (B, k, m)
    among = corr[:, k:, k:]  # (B, m, m): correlations of the subjects' (normalised) RDMs
    if pat_idx is None:
        model_vs_brain = model_vs_brain.expand(n_boot, k, m)
        among = among.expand(n_boot, m, m)
    mult = torch.zeros(n_boot, m, dtype=torch.float64)
    rows = rdm_idx if rdm_idx is not None else np.tile(np.arange(m), (n_boot, 1))
    mult.scatter_add_(1, torch.as_tensor(rows), torch.ones(rows.shape, dtype=torch.float64))
    evals = (model_vs_brain * mult[:, None, :]).sum(2) / mult.sum(1, keepdim=True)
    nc = np.full((2, n_boot), np.nan)
    if boot_nc:
        # pool_rdm z-scores (corr) or rms-normalises (cosine) each RDM and averages the copies, so the
        # pooled RDM is sum_j h_j z_j / sum h_j and its corr/cosine with subject i is
        # sum_j h_j R_ji / sqrt(sum_jl h_j h_l R_jl) with R the subjects' correlation/cosine matrix.
        present = mult > 0
        quad_all = torch.einsum("bj,bjl,bl->b", mult, among, mult)
        upper_i = (among * mult[:, :, None]).sum(1) / torch.sqrt(quad_all)[:, None]  # (B, m)
        h_loo = mult[:, None, :].expand(n_boot, m, m).clone()  # h_loo[b, i, j]: weights without subject i
        h_loo[:, torch.arange(m), torch.arange(m)] = 0
        num = torch.einsum("bij,bji->bi", h_loo, among)
        quad = torch.einsum("bij,bjl,bil->bi", h_loo, among, h_loo)
        lower_i = num / torch.sqrt(quad)
        n_present = present.sum(1)
        lower = torch.where(present, lower_i, torch.zeros_like(lower_i)).sum(1) / n_present
        upper = torch.where(present, upper_i, torch.zeros_like(upper_i)).sum(1) / n_present
        nc = torch.stack([lower, upper]).numpy().copy()
        nc[:, n_present.numpy() < 2] = np.nan
    evals = evals.numpy().copy()
    evals[~valid] = np.nan
    nc[:, ~valid] = np.nan
    return evals, nc


# ---------------------------------------------------------------------------- Kendall tau, pattern bootstrap
#
# A pattern resample with draw counts ``c`` holds ``w_u = c_a c_b`` copies of every original entry
# ``u = (a, b)`` (pairs of copies of one stimulus are NaN and dropped). Kendall's tau of two resampled
# RDMs therefore only needs the original entries and their weights:
#
# * order the original entries once by ``(x, y)`` (x, then y); the resampled vectors sorted by
#   ``(x, y)`` are that order with entry ``u`` repeated ``w_u`` times -- no sort per resample;
# * discordant pairs ``#{x_s < x_t, y_s > y_t}`` of that sequence are the inversions of its y
#   values, which scipy's compiled Fenwick count gives when every element is its own x group
#   (an increasing ramp for x): inside a run of tied x the y values ascend, so no pair there is
#   counted, and copies of one entry have equal y;
# * a model with a few distinct values (a categorical model RDM) needs no Fenwick count: along the
#   subject's value order, the weight of lower-valued model entries above each entry is a
#   cumulative sum;
# * tied pairs are ``sum_g W_g (W_g - 1) / 2`` over groups of equal x (of equal y, of equal x and y),
#   ``W_g`` the group's total weight; copies of one entry are tied in x, in y and jointly.
#
# The noise ceiling pools rank-transformed RDMs (rsatoolbox's ``pool_rdm``): the average rank of
# entry ``u`` in a resampled subject RDM is ``(weight of smaller values) + (W_tie + 1) / 2``, an
# O(P) cumulative sum along the subject's fixed value order. Pooled RDMs are compared through
# the integer keys ``sum of 2 * rank`` over the pooled subjects, ordered as rsatoolbox's means;
# they need one sort per pooled RDM and resample (of the entries present).
#
# tau-a (P <= _TAU_A_PRODUCT_MAX_P) needs no count per (model, subject) pair at all: the subjects'
# summed numerators are a quadratic form in the weights, ``w^T (G_x * Y) w``, evaluated for all
# resamples by one exact int8 matrix product per model (see ``_tau_a_bootstrap_sums``).
#
# Cost (92 images, P = 4186, 8 models, 8 subjects, 1000 resamples, one core): the tau-a products
# ~0.9 s; the noise ceiling ~2.7 s, half of it its Fenwick counts (16 per resample, 1.25 ms); tau-b
# adds one count per continuous (model, subject) pair and resample (~50 us each).

_KENDALL_METHODS = ("kendall", "tau-b", "tau-a")
# models with at most this many distinct values count discordant pairs by cumulative sums
_FEW_VALUES = 4


def _self_ties(w: np.ndarray) -> int:
    """Tied pairs among the copies of each entry alone: ``sum_u w_u (w_u - 1) / 2``."""
    return int((w * (w - 1)).sum()) // 2


def _tied_pairs(groups: np.ndarray, w: np.ndarray) -> int:
    """``sum_g W_g (W_g - 1) / 2`` with ``W_g`` the total weight ``w`` of group ``g`` (ids ``groups``)."""
    total = np.bincount(groups, weights=w)  # float64, exact: integers far below 2**53
    return int((total * (total - 1)).sum()) // 2


@dataclass
class _Ties:
    """Ties among the distinct entries of an RDM (or of an RDM pair, jointly).

    ``members`` (M,) are the entries that share their value with another entry, ``group`` (M,) the
    value group of each. Under entry weights ``w`` the tied pairs are the copies' own ties plus,
    per group, ``W_g (W_g - 1) / 2`` in place of the members' own ``w (w - 1) / 2``.
    """

    members: np.ndarray
    group: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray) -> _Ties:
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        members = np.flatnonzero(counts[inverse] > 1)
        group = np.unique(inverse[members], return_inverse=True)[1]
        return cls(members, group.astype(np.intp))

    @classmethod
    def none(cls) -> _Ties:
        return cls(np.zeros(0, np.intp), np.zeros(0, np.intp))

    def pairs(self, limit: int = 100_000) -> tuple[np.ndarray, np.ndarray] | None:
        """The tied entry pairs ``(u, v)`` (two (T,) arrays), or None when there are over ``limit``."""
        sizes = np.bincount(self.group) if self.group.size else np.zeros(0, np.intp)
        if int((sizes * (sizes - 1) // 2).sum()) > limit:
            return None
        by_group = np.argsort(self.group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        us, vs = [], []
        for g, size in enumerate(sizes):
            members = self.members[by_group[starts[g]:starts[g + 1]]]
            iu, iv = np.triu_indices(size, 1)
            us.append(members[iu])
            vs.append(members[iv])
        if not us:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        return np.concatenate(us), np.concatenate(vs)

    def count(self, w: np.ndarray, self_ties: int, split: np.ndarray | None = None) -> int:
        """Tied pairs under weights ``w`` (P,), given ``self_ties = _self_ties(w)``. ``split`` (M,),
        integer values at the members, refines the groups (joint ties with an RDM of those values)."""
        if self.members.size == 0:
            return self_ties
        if self.members.size == w.size and split is None:  # e.g. a categorical model: all entries tie
            return _tied_pairs(self.group, w)
        wm = w[self.members]
        if not wm.any():
            return self_ties
        group = self.group
        if split is not None:
            group = np.unique(group * (int(split.max()) + 1) + split, return_inverse=True)[1]
        return self_ties + _tied_pairs(group, wm) - _self_ties(wm)


@dataclass
class _RankedRDM:
    """One RDM's values as ranks: ``order`` (P,) ascending and its inverse ``position``, 1-based dense
    ranks ``dense`` (P,) (entry order) and ``dense_sorted`` (value order), the tie runs
    ``run_starts`` (None without ties) and the ``ties`` among distinct entries."""

    order: np.ndarray
    position: np.ndarray
    dense: np.ndarray
    dense_sorted: np.ndarray
    run_starts: np.ndarray | None
    ties: _Ties

    @classmethod
    def of(cls, values: np.ndarray) -> _RankedRDM:
        order, dense_sorted, n_ties = _sorted_dense(values)
        dense = np.empty_like(dense_sorted)
        dense[order] = dense_sorted
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        if not n_ties:
            return cls(order, position, dense, dense_sorted, None, _Ties.none())
        starts = np.flatnonzero(np.r_[True, dense_sorted[1:] != dense_sorted[:-1]])
        return cls(order, position, dense, dense_sorted, starts, _Ties.of(dense))

    @property
    def n_values(self) -> int:
        return int(self.dense_sorted[-1])


class _WeightedTauPair:
    """Discordant pairs of one (x, y) RDM pair under entry weights, prepared once for all resamples.

    ``y`` is a subject RDM. A model ``x`` with at most ``_FEW_VALUES`` values and a ``y`` without ties
    use cumulative sums along y's order; otherwise the entries are ordered by ``(x, y)`` once and
    every resample is one ``np.repeat`` and one Fenwick count (see the section comment).
    """

    def __init__(self, x: _RankedRDM, y: _RankedRDM):
        p = x.dense.size
        self.few = x.n_values <= _FEW_VALUES
        if self.few:
            x_in_y_order = x.dense[y.order]
            # masks in y's order: entries of value h, and entries below h, for h = 2..G
            self.at = [(x_in_y_order == h).astype(np.intp) for h in range(2, x.n_values + 1)]
            self.below = [(x_in_y_order < h).astype(np.intp) for h in range(2, x.n_values + 1)]
            # last position of each entry's run of tied y (None: no ties, the entry itself)
            self.run_end = None
            if y.run_starts is not None:
                ends = np.append(y.run_starts[1:], p) - 1
                self.run_end = ends[y.dense_sorted - 1]
        else:
            self.order = np.lexsort((y.dense, x.dense))
            self.y_seq = y.dense[self.order]
        same = x.ties.members.size and y.ties.members.size
        self.joint = _Ties.of(x.dense * (p + 1) + y.dense) if same else _Ties.none()

    def discordant(self, w: np.ndarray, w_y: np.ndarray, ramp: np.ndarray) -> int:
        """``#{x_s < x_t, y_s > y_t}`` over the resample's ``w.sum()`` entries; ``w_y = w[y.order]``."""
        if self.few:
            # sum over entries t of value h: w_t * weight of entries below h with a larger y
            total = 0
            for at, below in zip(self.at, self.below):
                lower = w_y * below
                up_to = np.cumsum(lower)  # t itself is not below h: it adds nothing
                if self.run_end is not None:
                    up_to = up_to[self.run_end]  # entries tied with t in y are not above it
                above = int(up_to[-1]) - up_to
                total += int(np.dot(w_y * at, above))
            return total
        return _weighted_tau_a_pairs(self.y_seq, self.order, w, ramp)


def _weighted_tau_a_pairs(y_seq: np.ndarray, order: np.ndarray, w: np.ndarray, ramp: np.ndarray) -> int:
    """Discordant pairs of a resampled RDM pair, from the original entries and their weights.

    Parameters
    ----------
    y_seq : intp array ``(P,)``
        y's 1-based dense ranks with the original entries ordered by ``(x, y)``.
    order : intp array ``(P,)``
        That ``(x, y)`` order of the original entries.
    w : intp array ``(P,)``
        Copies of every original entry in the resample (``c_a c_b``; 0 drops the entry).
    ramp : intp array ``(>= w.sum(),)``, strictly increasing
        Stands in for x: in the ``(x, y)`` order tied x need no x values (see the section comment).

    Returns
    -------
    int: ``#{(s, t): x_s < x_t, y_s > y_t}`` over the ``w.sum()`` resampled entries; the tau
    numerator is then ``tot - ties_x - ties_y + ties_xy - 2 * discordant``.
    """
    y_rep = np.repeat(y_seq, w[order])
    return int(_kendall_dis(ramp[: y_rep.size], y_rep))


# Largest RDM (entries P) whose tau-a bootstrap takes the matrix-product path below: it costs
# B k P^2 integer multiply-adds and P^2 bytes per model, against B k m P log P for Fenwick counts.
_TAU_A_PRODUCT_MAX_P = 8192


def _greater_matrix(ranks: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``r_u > r_v`` as 0/1 int8 ``(P, P)`` for integer ranks ``r`` ``(P,)`` below 2**15, into the
    bool buffer ``out`` (reused: fresh 17 MB arrays cost more in page faults than the comparison)."""
    r = ranks.astype(np.int16)
    # the comparison's bools are 0/1 bytes: viewed as int8, no widening and no float temporaries
    return np.greater.outer(r, r, out=out).view(np.int8)


def _exact_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (r, P) @ b (P, q)`` of int8 tensors as exact int32: oneDNN's int8 kernel, or float64
    products (exact below 2**53) on a torch build without it."""
    try:
        return torch._int_mm(a, b)
    except (RuntimeError, AttributeError, NotImplementedError):
        return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def _tau_a_bootstrap_sums(x_ranks: Sequence[np.ndarray], y_ranks: Sequence[np.ndarray], weights: torch.Tensor,
                          chunk: int = 256) -> np.ndarray:
    """Sum over subjects of the tau-a numerators (concordant - discordant pairs) of every resample.

    The numerator of resampled RDMs x and y is ``sum_{u<v} w_u w_v sign(x_u - x_v) sign(y_u - y_v)
    = w^T (S_x * S_y) w / 2`` (``S`` the sign matrices of the original entries, ``w`` the entry
    weights; copies of one entry tie and add 0). Summed over the subjects, ``S_y`` becomes
    ``Y = sum_j S_yj``, and as ``S_x = G_x - G_x^T`` with ``G_x = [x_u > x_v]`` and Y is
    antisymmetric, the sum is ``w^T (G_x * Y) w``: one ``(B, P) @ (P, P)`` product per model,
    exact in integers (int8 inputs and int32 sums, on oneDNN's VNNI kernels where the CPU has them).

    Parameters
    ----------
    x_ranks, y_ranks : k and m int arrays ``(P,)``: dense ranks of the model and subject RDMs.
    weights : ``(B, P)`` float64 entry weights ``c_a c_b`` of the resamples (``_pair_weights``).

    Returns
    -------
    ``(B, k)`` float64: ``sum_j (con - dis)(x_i, y_j)`` of resample b in row b.
    """
    # int8 needs |Y| <= m and the weights below 128; otherwise float64 (exact below 2**53)
    small = len(y_ranks) <= 127 and float(weights.max()) <= 127
    p = weights.shape[1]
    greater = np.empty((p, p), dtype=bool)
    subjects = np.zeros((p, p), dtype=np.int8 if small else np.int32)
    for y in y_ranks:  # Y = sum_j (G_yj - G_yj^T); G^T is the "less" comparison (no slow transpose)
        subjects += _greater_matrix(y, greater)
        subjects -= _greater_matrix(-y, greater)
    dtype = torch.int8 if small else torch.float64
    w_all = weights.to(dtype)
    w_exact = weights.to(torch.int32 if small else torch.float64)
    out = np.empty((weights.shape[0], len(x_ranks)))
    product = np.empty((p, p), dtype=subjects.dtype)
    for i, x in enumerate(x_ranks):
        np.multiply(_greater_matrix(x, greater), subjects, out=product)
        product_t = torch.from_numpy(product).to(dtype)  # (P, P)
        for start in range(0, weights.shape[0], chunk):
            rows = slice(start, start + chunk)
            if small:  # |w^T G| <= 127 m sum(w) and its products with w fit int32; the sums take int64
                sums = (_exact_int_mm(w_all[rows], product_t) * w_exact[rows]).sum(1, dtype=torch.int64)
            else:
                sums = ((w_all[rows] @ product_t) * w_exact[rows]).sum(1)
            out[rows, i] = sums.numpy()
    return out


def _tau_from_counts(con_minus_dis: int, tot: int, ties_x: int, ties_y: int, variant: str) -> float:
    """Kendall's tau-a or tau-b from pair counts, as rsatoolbox's ``_tau_a`` and scipy's ``kendalltau``."""
    if variant == "a":
        return min(1.0, max(-1.0, con_minus_dis / tot))
    if ties_x == tot or ties_y == tot:
        return math.nan
    return min(1.0, max(-1.0, con_minus_dis / math.sqrt(tot - ties_x) / math.sqrt(tot - ties_y)))


class _PooledBounds:
    """The bootstrapped noise ceiling of Kendall's tau, for chunks of resamples at once.

    In a resample with entry weights ``w``, the average rank of entry ``u`` in subject j's resampled
    RDM is ``(weight of smaller values) + (W_run + 1) / 2`` over its run of tied values: twice that
    is ``cs[s_u] + cs[e_u + 1] + 1`` with ``cs`` the cumulative weights along j's value order (0
    first) and ``[s_u, e_u]`` the run's sorted positions. ``pool_rdm`` averages these ranks over the
    subjects (all for the upper bound, all but j for the lower one); their integer sums order the
    pooled entries exactly as rsatoolbox's means. Each (pooled, subject) comparison then needs one
    sort of the kept entries and one Fenwick count of the resampled entries.
    """

    def __init__(self, ys: Sequence[_RankedRDM]):
        self.ys = ys
        p = ys[0].dense.size
        self.order = np.stack([y.order for y in ys])  # (m, P)
        self.dense_flat = np.concatenate([y.dense for y in ys])  # (m P,)
        starts, ends = [], []
        for y in ys:
            if y.run_starts is None:
                starts.append(y.position)
                ends.append(y.position + 1)
            else:
                run_ends = np.append(y.run_starts[1:], p)
                starts.append(y.run_starts[y.dense - 1])
                ends.append(run_ends[y.dense - 1])
        self.run_start, self.run_end = np.stack(starts), np.stack(ends)  # (m, P), entry order
        # each subject's tied entry pairs (None: too many to list, counted per resample instead)
        self.tie_pairs = [y.ties.pairs() for y in ys]

    def bounds(self, w: np.ndarray, variant: str) -> np.ndarray:
        """``(2, R)`` lower and upper noise ceilings of R resamples with intp entry weights ``w (R, P)``."""
        n_res, m = w.shape[0], len(self.ys)
        n_total = w.sum(1)
        tot = n_total * (n_total - 1) // 2
        self_ties = (w * (w - 1)).sum(1) // 2
        # the kept entries of each resample first, in entry order (K: the most kept; the rest of a
        # shorter row are absent entries, which weigh 0 and so drop out of every count)
        present = w > 0
        keep = np.argsort(~present, axis=1, kind="stable")[:, :int(present.sum(1).max())]  # (R, K)
        pooled = self._pooled(w, keep)
        w_keep = np.broadcast_to(np.take_along_axis(w, keep, 1)[:, None, :], pooled.shape)
        order, dense, w_sorted, ties_pooled = _sorted_rows(pooled.reshape(-1, keep.shape[1]),
                                                           w_keep.reshape(-1, keep.shape[1]))
        order, dense, w_sorted = (a.reshape(pooled.shape) for a in (order, dense, w_sorted))
        ties_pooled = ties_pooled.reshape(n_res, m + 1)
        ties_x = np.stack([ties_pooled[:, :m], np.repeat(ties_pooled[:, m:], m, axis=1)], axis=1)  # (R, 2, m)
        discordant = self._discordant(keep, order, dense, w_sorted, n_total, variant)
        ties_y, joint = self._subject_ties(w, self_ties, keep, pooled)
        con_minus_dis = tot[:, None, None] - ties_x - ties_y[:, None, :] + joint - 2 * discordant
        if variant == "a":
            return (con_minus_dis.sum(2) / (m * tot[:, None])).T
        with np.errstate(divide="ignore", invalid="ignore"):
            taus = con_minus_dis / np.sqrt(tot[:, None, None] - ties_x) / np.sqrt(tot[:, None] - ties_y)[:, None, :]
        constant = (ties_x == tot[:, None, None]) | (ties_y == tot[:, None])[:, None, :]
        taus = np.where(constant, np.nan, np.clip(taus, -1.0, 1.0))  # scipy's NaN for a constant vector
        return taus.mean(2).T

    def _pooled(self, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Integer pooled RDMs ``(R, m + 1, K)`` on the kept entries: row j sums twice the average
        ranks of all subjects but j, row m of all of them (see the class docstring)."""
        n_res, p = w.shape
        m = len(self.ys)
        cs = np.zeros((n_res, m, p + 1), dtype=np.intp)
        np.cumsum(w[:, self.order], axis=2, out=cs[:, :, 1:])
        base = (np.arange(n_res * m) * (p + 1)).reshape(n_res, m, 1)
        cs = cs.ravel()
        twice = (cs[base + self.run_start[:, keep].transpose(1, 0, 2)]
                 + cs[base + self.run_end[:, keep].transpose(1, 0, 2)] + 1)  # (R, m, K)
        pooled_all = twice.sum(1, keepdims=True)
        return np.concatenate([pooled_all - twice, pooled_all], axis=1)

    def _discordant(self, keep: np.ndarray, order: np.ndarray, dense: np.ndarray, w_sorted: np.ndarray,
                    n_total: np.ndarray, variant: str) -> np.ndarray:
        """Discordant pairs ``(R, 2, m)`` of subject j with the pooled RDM of bound 0 (all but j) and
        1 (all), from the pooled rows' ``order``, ``dense`` ranks and ``w_sorted`` weights ``(R, m + 1, K)``.

        The resampled sequences, each entry repeated by its weight, are laid end to end, block j
        shifted above block j - 1 in x and y so that no pair across two blocks is discordant: for
        tau-a, whose subject mean needs only the sum, one Fenwick count per bound and resample
        (returned in column 0, the others 0); for tau-b one per block.
        """
        n_res, n_keep = keep.shape
        m, p = len(self.ys), self.order.shape[1]
        subject = np.arange(m)[None, None, :, None]
        x = np.empty((n_res, 2, m, n_keep), dtype=np.intp)  # pooled ranks, along the pooled order
        x[:, 0], x[:, 1] = dense[:, :m], dense[:, m:]
        x += subject * (n_keep + 1)
        entries = np.take_along_axis(keep[:, None, :], order, 2)  # (R, m + 1, K)
        y = np.empty((n_res, 2, m, n_keep), dtype=np.intp)  # subject j's dense ranks, along the same order
        y[:, 0], y[:, 1] = entries[:, :m], entries[:, m:]
        y = self.dense_flat[y + subject * p] + subject * (p + 1)
        weights = np.empty((n_res, 2, m, n_keep), dtype=np.intp)
        weights[:, 0], weights[:, 1] = w_sorted[:, :m], w_sorted[:, m:]
        x_rep = np.repeat(x.ravel(), weights.ravel())
        y_rep = np.repeat(y.ravel(), weights.ravel())
        discordant = np.zeros((n_res, 2, m), dtype=np.int64)
        at = 0
        for r in range(n_res):
            block = int(n_total[r])
            for bound in range(2):
                if variant == "a":
                    span = slice(at, at + m * block)
                    discordant[r, bound, 0] = _kendall_dis(x_rep[span], y_rep[span])
                else:
                    for j in range(m):
                        span = slice(at + j * block, at + (j + 1) * block)
                        discordant[r, bound, j] = _kendall_dis(x_rep[span], y_rep[span])
                at += m * block
        return discordant

    def _subject_ties(self, w: np.ndarray, self_ties: np.ndarray, keep: np.ndarray,
                      pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tied pairs of every resampled subject ``(R, m)`` and joint ties with its pooled RDMs
        ``(R, 2, m)``: the copies' own ties plus ``w_u w_v`` for each pair of tied entries (u, v)
        (that also tie in the pooled RDM, for the joint ties)."""
        n_res, m = w.shape[0], len(self.ys)
        ties_y = np.repeat(self_ties[:, None], m, axis=1)
        joint = np.repeat(ties_y[:, None, :], 2, axis=1)
        # position of every entry among the kept ones (absent entries weigh 0: any position will do)
        position = np.zeros(w.shape, dtype=np.intp)
        np.put_along_axis(position, keep, np.arange(keep.shape[1])[None, :], 1)
        resamples = np.arange(n_res)[:, None]
        for j, (y, pairs) in enumerate(zip(self.ys, self.tie_pairs)):
            rows = (j, m)  # the pooled rows of bound 0 and 1
            if pairs is None:  # too many tied pairs to list: count them per resample
                for r in range(n_res):
                    ties_y[r, j] = y.ties.count(w[r], int(self_ties[r]))
                    at = position[r, y.ties.members]
                    for bound, row in enumerate(rows):
                        joint[r, bound, j] = y.ties.count(w[r], int(self_ties[r]), split=pooled[r, row, at])
                continue
            u, v = pairs
            if not u.size:
                continue
            both = w[:, u] * w[:, v]  # (R, T)
            ties_y[:, j] += both.sum(1)
            for bound, row in enumerate(rows):
                same = pooled[resamples, row, position[:, u]] == pooled[resamples, row, position[:, v]]
                joint[:, bound, j] += (both * same).sum(1)
        return ties_y, joint


def _sorted_rows(keys: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative integer ``keys`` (r, P') of entries with weights ``w`` (r, P') -> per row, the
    order by key, 1-based dense ranks and weights in that order (each (r, P')) and the tied pairs (r,)."""
    # sort (key, position) packed in one int64: numpy's vectorised sort beats its stable argsort
    bits = max(1, int(keys.shape[1] - 1).bit_length())
    if int(keys.max()).bit_length() + bits < 63:
        packed = np.sort((keys << bits) | np.arange(keys.shape[1]), axis=1)
        order = packed & ((1 << bits) - 1)
        ordered = packed >> bits
    else:
        order = np.argsort(keys, axis=1, kind="stable")
        ordered = np.take_along_axis(keys, order, 1)
    new = np.ones(ordered.shape, dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new[:, 1:])
    dense = np.cumsum(new, axis=1, dtype=np.intp)
    w_sorted = np.take_along_axis(w, order, 1)
    # total weight of every (row, value) group; float64 sums of integers are exact below 2**53
    width = keys.shape[1] + 1
    groups = (dense + np.arange(keys.shape[0])[:, None] * width).ravel()
    total = np.bincount(groups, weights=w_sorted.ravel(), minlength=keys.shape[0] * width).reshape(-1, width)
    ties = (total * (total - 1)).sum(1).astype(np.int64) // 2
    return order, dense, w_sorted, ties


def _bootstrap_kendall(models: torch.Tensor, brain: torch.Tensor, method: str, pat_idx: np.ndarray,
                       boot_nc: bool, chunk: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-a / tau-b pattern bootstrap from entry weights (see the section comment).

    Equal to ``_bootstrap_general`` resample by resample. Resamples run in chunks on
    ``torch.get_num_threads()`` threads (scipy's Fenwick count releases the GIL).
    """
    variant = "a" if method == "tau-a" else "b"
    k, m = models.shape[0], brain.shape[0]
    n_boot, n = pat_idx.shape
    xs = [_RankedRDM.of(v) for v in models.detach().cpu().to(torch.float64).numpy()]
    ys = [_RankedRDM.of(v) for v in brain.detach().cpu().to(torch.float64).numpy()]
    ramp = np.arange(xs[0].dense.size, dtype=np.intp)
    evals = np.full((n_boot, k), np.nan)
    nc = np.full((2, n_boot), np.nan)
    valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx], dtype=bool)  # else NaN, as rsatoolbox
    by_product = variant == "a" and ramp.size <= _TAU_A_PRODUCT_MAX_P
    ceiling = _PooledBounds(ys) if boot_nc else None
    # the product needs every resample's weights at once (at most B x 8192 entries); the
    # per-resample paths make them chunk by chunk (an RDM of n stimuli has n^2 / 2 entries)
    all_weights = _pair_weights(pat_idx, n) if by_product else None
    if not by_product:
        pairs = [[_WeightedTauPair(x, y) for y in ys] for x in xs]

    def product_evals() -> None:
        n_total = all_weights.sum(1).numpy()
        tot = n_total * (n_total - 1) / 2
        sums = _tau_a_bootstrap_sums([x.dense for x in xs], [y.dense for y in ys], all_weights)
        evals[valid] = (sums / (m * tot[:, None]))[valid]

    def one_resample(w: np.ndarray) -> np.ndarray:
        """The models' mean tau with the subjects ``(k,)`` in the resample of weights ``w (P,)``."""
        n_total = int(w.sum())
        tot = n_total * (n_total - 1) // 2
        self_ties = _self_ties(w)
        ties_y = [y.ties.count(w, self_ties) for y in ys]
        w_y = [w[y.order] for y in ys]
        ties_x = [x.ties.count(w, self_ties) for x in xs]
        taus = np.empty((k, m))
        for i in range(k):
            for j in range(m):
                pair = pairs[i][j]
                num = (tot - ties_x[i] - ties_y[j] + pair.joint.count(w, self_ties)
                       - 2 * pair.discordant(w, w_y[j], ramp))
                taus[i, j] = _tau_from_counts(num, tot, ties_x[i], ties_y[j], variant)
        return taus.mean(1)

    def run(start: int) -> None:
        stop = min(start + chunk, n_boot)
        ok = np.flatnonzero(valid[start:stop]) + start
        if not ok.size:
            return
        w = (all_weights[ok] if by_product else _pair_weights(pat_idx[ok], n)).numpy().astype(np.intp)
        if not by_product:
            for b, w_b in zip(ok, w):
                evals[b] = one_resample(w_b)
        if ceiling is not None:
            nc[:, ok] = ceiling.bounds(w, variant)

    starts = list(range(0, n_boot, chunk)) if boot_nc or not by_product else []
    n_threads = min(torch.get_num_threads(), len(starts) + by_product)
    if n_threads <= 1:
        if by_product:
            product_evals()
        for start in starts:
            run(start)
    else:
        # the product's numpy set-up is single-threaded: the noise-ceiling chunks fill the other cores
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            product = pool.submit(product_evals) if by_product else None
            list(pool.map(run, starts))
            if product is not None:
                product.result()
    return evals, nc


# ============================================================================ statistics (rsatoolbox's)


def _correct(var: np.ndarray, n: int | None) -> np.ndarray:
    return var * (n / (n - 1)) if n is not None and n > 1 else var


def _variances(evals: np.ndarray, nc: np.ndarray | None, n_corr: int | None, ddof: int = 1,
               scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """rsatoolbox's ``extract_variances``: ``(model_var (k,), noise_ceiling_var (k,))``."""
    k = evals.shape[1]
    if nc is not None:
        cov = np.atleast_2d(np.cov(np.concatenate([evals.T, nc]), ddof=ddof)) * scale
        model_var = np.diag(cov)[:k]
        nc_var = model_var - 2 * cov[:k, k] + cov[k, k]
    else:
        cov = np.atleast_2d(np.cov(evals.T, ddof=ddof)) * scale
        model_var = np.diag(cov)
        nc_var = model_var
    return _correct(model_var, n_corr), _correct(nc_var, n_corr)


@dataclass
class RSAResult:
    """Everything behind ``rsa_table``.

    Attributes
    ----------
    names : list of str
        One per model RDM.
    method, bootstrap : str, str or None
    evaluations : ndarray
        ``(k, m)`` model-by-brain-RDM comparisons without bootstrap, else
        ``(N, k)`` per-resample means over the (resampled) brain RDMs; NaN
        rows mark resamples rsatoolbox also drops (fewer than 3 stimuli).
    noise_ceiling : ndarray
        ``(2,)`` lower and upper bound, or ``(2, N)`` per resample.
    mean, sem, ci_low, ci_high, p_zero, p_noise : ndarray ``(k,)``
    nc_lower, nc_upper : float
    dof : int
    n_stimuli, n_brain : int
    """

    names: list[str]
    method: str
    bootstrap: str | None
    evaluations: np.ndarray
    noise_ceiling: np.ndarray | None
    fixed: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_zero: np.ndarray
    p_noise: np.ndarray
    nc_lower: float
    nc_upper: float
    dof: int
    n_stimuli: int
    n_brain: int
    rdm_idx: np.ndarray | None = field(default=None, repr=False)
    pattern_idx: np.ndarray | None = field(default=None, repr=False)

    def table(self) -> pd.DataFrame:
        """One row per model RDM (see ``rsa_table``)."""
        n = len(self.names)
        valid = int(np.isfinite(self.evaluations[:, 0]).sum()) if self.bootstrap else 0
        return pd.DataFrame({
            "model": self.names,
            "method": [self.method] * n,
            "bootstrap": [self.bootstrap or "none"] * n,
            "mean": self.mean,
            "fixed": self.fixed,
            "sem": self.sem,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_zero": self.p_zero,
            "p_noise": self.p_noise,
            "nc_lower": [self.nc_lower] * n,
            "nc_upper": [self.nc_upper] * n,
            "dof": [self.dof] * n,
            "n_stimuli": [self.n_stimuli] * n,
            "n_brain": [self.n_brain] * n,
            "n_bootstrap": [valid] * n,
        })


def rsa_evaluate(
    model_rdms: RDMs | Sequence[RDMs],
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    bootstrap: str | None = None,
    n_bootstrap: int = 1000,
    noise_ceiling: bool = True,
    boot_noise_ceiling: bool = True,
    ci: str = "t",
    seed: int | None = 0,
    bootstrap_indices: Any = None,
    descriptor: str = "stimulus",
) -> RSAResult:
    """Evaluate model RDMs against brain RDMs with rsatoolbox's statistics (see ``rsa_table``)."""
    check_method(method, COMPARE_METHODS, "comparison method")
    if bootstrap not in BOOTSTRAPS:
        raise ValueError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
    if ci not in ("t", "percentile"):
        raise ValueError(f"ci must be 't' or 'percentile', got {ci!r}")
    if not isinstance(brain_rdms, RDMs):
        raise TypeError(f"brain_rdms must be rsatoolbox.rdm.RDMs, got {type(brain_rdms).__name__}")
    brain, brain_ids = from_rsatoolbox(brain_rdms, descriptor)
    models, names, brain_pos = _stack_models(model_rdms, brain_rdms, brain_ids, method, descriptor)
    brain = _subset_vectors(brain, brain_pos)
    n_stim, k, m = len(brain_pos), models.shape[0], brain.shape[0]
    for name, v in (("model", models), ("brain", brain)):
        bad = torch.isnan(v).all(1)
        if bool(bad.any()):
            raise ValueError(f"{name} RDM(s) {torch.nonzero(bad).squeeze(1).tolist()} are entirely NaN")
    if noise_ceiling and m < 2:
        raise ValueError("noise_ceiling=True needs at least 2 brain RDMs (the lower bound leaves one out); "
                         "got 1 -- pass noise_ceiling=False or more subjects/sessions")
    fixed_all = compare_rdms(models, brain, method).numpy()  # (k, m)
    fixed = fixed_all.mean(1)
    nc_point = _noise_ceiling(brain, np.arange(m), method) if noise_ceiling else (np.nan, np.nan)
    rdm_idx = pat_idx = None
    if bootstrap is None:
        evaluations, nc_arr = fixed_all, np.array(nc_point)
        mean = fixed
        dof = m - 1
        if m > 1:
            model_var, nc_var = _variances(fixed_all.T, None, m, ddof=0, scale=1.0 / m)
        else:
            model_var = nc_var = np.full(k, np.nan)
        nc_lower, nc_upper = nc_point
    else:
        if n_bootstrap < 2 and bootstrap_indices is None:
            raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
        rdm_idx, pat_idx = _draw_indices(bootstrap, n_bootstrap, n_stim, m, seed, bootstrap_indices)
        if rdm_idx is not None and pat_idx is not None and len(rdm_idx) != len(pat_idx):
            raise ValueError(f"{len(rdm_idx)} rdm and {len(pat_idx)} pattern resamples given")
        boot_nc = noise_ceiling and boot_noise_ceiling
        has_nan = bool(torch.isnan(models).any() or torch.isnan(brain).any())
        if method in _MOMENT_METHODS and not has_nan:
            evaluations, nc_arr = _bootstrap_moments(models, brain, method, rdm_idx, pat_idx, boot_nc)
        elif method in _KENDALL_METHODS and bootstrap == "pattern" and not has_nan and _kendall_dis is not None:
            evaluations, nc_arr = _bootstrap_kendall(models, brain, method, pat_idx, boot_nc)
        else:
            evaluations, nc_arr = _bootstrap_general(models, brain, method, rdm_idx, pat_idx, boot_nc)
        ok = np.isfinite(evaluations[:, 0])
        if ok.sum() < 2:
            raise ValueError(f"only {int(ok.sum())} usable bootstrap samples; use more resamples or stimuli")
        mean = evaluations[ok].mean(0)
        n_corr = {"pattern": n_stim, "rdm": m, "both": min(m, n_stim)}[bootstrap]
        dof = n_corr - 1
        if bootstrap == "rdm":
            # eval_bootstrap_rdm overwrites its variances with the evaluations' covariance alone
            model_var, nc_var = _variances(evaluations, None, n_corr)
        else:
            model_var, nc_var = _variances(evaluations[ok], nc_arr[:, ok] if boot_nc else None, n_corr)
        if not noise_ceiling:
            nc_arr, nc_lower, nc_upper = None, np.nan, np.nan
        elif boot_nc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                nc_lower, nc_upper = (float(v) for v in np.nanmean(nc_arr, axis=1))
        else:
            nc_arr = np.array(nc_point)
            nc_lower, nc_upper = nc_point
    sem = np.sqrt(np.maximum(model_var, 0))
    eps = np.finfo(float).eps
    with np.errstate(invalid="ignore", divide="ignore"):
        p_zero = 1 - stats.t.cdf(mean / np.sqrt(np.maximum(model_var, eps)), dof) if dof > 0 else np.full(k, np.nan)
        if noise_ceiling and dof > 0:
            t_nc = (mean - nc_lower) / np.sqrt(np.maximum(nc_var, eps))
            p_noise = 2 * (1 - stats.t.cdf(np.abs(t_nc), dof))
        else:
            p_noise = np.full(k, np.nan)
    if ci == "percentile" and bootstrap is not None:
        framed = np.concatenate([np.tile([[-np.inf], [np.inf]], (1, k)), evaluations], 0)
        ci_low, ci_high = np.quantile(framed, 0.025, axis=0), np.quantile(framed, 0.975, axis=0)
    else:
        half = -sem * stats.t.ppf(0.025, dof) if dof > 0 else np.full(k, np.nan)
        ci_low, ci_high = mean - half, mean + half
    return RSAResult(names=names, method=method, bootstrap=bootstrap, evaluations=evaluations,
                     noise_ceiling=nc_arr, fixed=fixed, mean=mean, sem=sem, ci_low=ci_low, ci_high=ci_high,
                     p_zero=np.asarray(p_zero, float), p_noise=np.asarray(p_noise, float),
                     nc_lower=float(nc_lower), nc_upper=float(nc_upper), dof=int(dof),
                     n_stimuli=n_stim, n_brain=m, rdm_idx=rdm_idx, pattern_idx=pat_idx)


def rsa_table(
    model_rdms: RDMs | Sequence[RDMs],
    brain_rdms: RDMs,
    method: str = "corr",
    *,
    bootstrap: str | None = None,
    n_bootstrap: int = 1000,
    noise_ceiling: bool = True,
    boot_noise_ceiling: bool = True,
    ci: str = "t",
    seed: int | None = 0,
    bootstrap_indices: Any = None,
    descriptor: str = "stimulus",
) -> pd.DataFrame:
    """Model-brain RSA table with rsatoolbox's statistics, one row per model RDM.

    Parameters
    ----------
    model_rdms : rsatoolbox RDMs, or a sequence of them
        ``k`` model RDMs (e.g. from ``layer_rdms``); names from
        ``rdm_descriptors`` ``layer``, ``name`` or ``model``. A sequence
        (a network's layers and classic model RDMs, say) gives one row per
        RDM of each, in order; every object must cover the same stimuli.
    brain_rdms : rsatoolbox RDMs
        ``m`` brain RDMs (subjects/sessions). Stimuli are matched by
        ``pattern_descriptors[descriptor]``: the brain RDMs are cut to the
        model's stimuli (brain order); model ids the brain lacks are an error.
    method : str
        rsatoolbox comparison: cosine, corr, spearman, rho-a, kendall/tau-b,
        tau-a, corr_cov, cosine_cov.
    bootstrap : None, "pattern", "rdm" or "both"
        None is ``eval_fixed`` (SEM over brain RDMs); the others are
        ``eval_bootstrap_pattern``, ``eval_bootstrap_rdm`` and ``eval_bootstrap``.
    n_bootstrap : int
    noise_ceiling : bool
        Compute the noise ceiling (needs >= 2 brain RDMs) and the test against it.
    boot_noise_ceiling : bool
        As rsatoolbox's ``boot_noise_ceil``: a noise ceiling per resample
        (its covariance with the evaluations enters the test against it) or
        one on the full data.
    ci : "t" or "percentile"
        95% interval: rsatoolbox's t interval (mean +- t * SEM) or bootstrap
        percentiles.
    seed : int or None
        Seeds the resampling (``numpy.random.default_rng``).
    bootstrap_indices : array or (rdm_idx, pattern_idx), optional
        Positions of the drawn stimuli ``(N, n)`` (pattern), brain RDMs
        ``(N, m)`` (rdm) or both: e.g. rsatoolbox's own draws.
    descriptor : str
        The pattern descriptor that names stimuli.

    Returns
    -------
    DataFrame
        ``model, method, bootstrap, mean`` (rsatoolbox ``get_means``: the
        bootstrap mean when bootstrapping), ``fixed`` (mean over brain RDMs on
        all stimuli), ``sem, ci_low, ci_high, p_zero`` (one-sided t-test
        against 0), ``p_noise`` (two-sided t-test against the lower bound),
        ``nc_lower, nc_upper, dof, n_stimuli, n_brain, n_bootstrap``.
    """
    return rsa_evaluate(model_rdms, brain_rdms, method, bootstrap=bootstrap, n_bootstrap=n_bootstrap,
                        noise_ceiling=noise_ceiling, boot_noise_ceiling=boot_noise_ceiling, ci=ci, seed=seed,
                        bootstrap_indices=bootstrap_indices, descriptor=descriptor).table()
