"""rsatoolbox ``RDMs`` <-> torch tensors with stimulus ids.

``from_rsatoolbox`` gives condensed tensors plus the stimulus ids that name
their rows and columns; ``to_rsatoolbox`` goes back, writing the method name
into ``dissimilarity_measure`` and the ids into ``pattern_descriptors``.
``rdm_names`` is the one rule for labelling the RDMs of an ``RDMs`` object
(table rows, figure titles).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro.data.ids import duplicate_ids, plain_id
from rdl_neuro.rdm.calc import RSATOOLBOX_MEASURE, n_stimuli_from_length, to_condensed

__all__ = ["from_rsatoolbox", "to_rsatoolbox", "stimulus_ids_of", "rdm_names"]

# rdm_descriptors that name RDMs, in order of preference
NAME_DESCRIPTORS = ("layer", "name", "model", "role", "subject")


def rdm_names(rdms: RDMs) -> list[str]:
    """A label per RDM: the first of ``NAME_DESCRIPTORS`` present, else ``RDM 0, RDM 1, ...``."""
    for key in NAME_DESCRIPTORS:
        if key in rdms.rdm_descriptors:
            return [str(v) for v in rdms.rdm_descriptors[key]]
    return [f"RDM {i}" for i in range(rdms.n_rdm)]


def stimulus_ids_of(rdms: RDMs, descriptor: str = "stimulus") -> list[Any]:
    """The stimulus ids of an rsatoolbox ``RDMs``: ``pattern_descriptors[descriptor]``, else ``index``."""
    descriptors = rdms.pattern_descriptors
    if descriptor in descriptors:
        ids = descriptors[descriptor]
    elif "index" in descriptors:
        ids = descriptors["index"]
    else:
        ids = range(rdms.n_cond)
    ids = [plain_id(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = duplicate_ids(ids)
        raise ValueError(f"duplicate stimulus ids in pattern_descriptors[{descriptor!r}]: {dup[:5]}")
    return ids


def from_rsatoolbox(
    rdms: RDMs,
    descriptor: str = "stimulus",
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, list[Any]]:
    """rsatoolbox ``RDMs`` -> ``(tensor (n_rdm, n_pairs), stimulus ids)``.

    The ids come from ``pattern_descriptors[descriptor]`` (default
    ``stimulus``), else from ``index``. NaN entries are kept (they mark
    missing dissimilarities).
    """
    if not isinstance(rdms, RDMs):
        raise TypeError(f"expected rsatoolbox.rdm.RDMs, got {type(rdms).__name__}")
    vectors = torch.as_tensor(np.asarray(rdms.get_vectors()), dtype=dtype, device=device)
    return vectors, stimulus_ids_of(rdms, descriptor)


def to_rsatoolbox(
    rdms: torch.Tensor | np.ndarray,
    stimulus_ids: Sequence[Any] | None = None,
    method: str = "correlation",
    rdm_descriptors: Mapping[str, Sequence[Any]] | None = None,
    *,
    pattern_descriptors: Mapping[str, Sequence[Any]] | None = None,
    descriptor: str = "stimulus",
) -> RDMs:
    """Torch (or numpy) RDMs -> rsatoolbox ``RDMs``.

    Parameters
    ----------
    rdms : Tensor ``(n_rdm, n_pairs)``, ``(n_pairs,)`` or ``(n_rdm, n, n)``
        Condensed RDMs (1-D or 2-D) or square ones (3-D; a single square RDM
        is ``(1, n, n)``); gradients are detached, values copied to float64.
    stimulus_ids : sequence of length ``n``, optional
        Written to ``pattern_descriptors[descriptor]``; default ``0..n-1``.
    method : str
        One of ``rdl_neuro.rdm.METHODS`` (written as rsatoolbox's
        ``dissimilarity_measure``, e.g. ``sqeuclidean`` -> ``squared euclidean``)
        or any other string, which is written as is.
    rdm_descriptors, pattern_descriptors : mappings of lists, optional
        Extra descriptors, one value per RDM / per stimulus.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.rdm import from_rsatoolbox, to_rsatoolbox
    >>> rdms = to_rsatoolbox(torch.tensor([[1., 2., 3.]]), stimulus_ids=["cat", "dog", "car"], method="correlation")
    >>> rdms.n_rdm, rdms.n_cond, rdms.pattern_descriptors["stimulus"]
    (1, 3, ['cat', 'dog', 'car'])
    >>> tensor, ids = from_rsatoolbox(rdms)       # and back, with the ids
    >>> tensor, ids
    (tensor([[1., 2., 3.]], dtype=torch.float64), ['cat', 'dog', 'car'])
    """
    if isinstance(rdms, torch.Tensor):
        rdms = rdms.detach().cpu().numpy()
    array = np.asarray(rdms, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim == 3:
        array = to_condensed(torch.from_numpy(array)).numpy()
    if array.ndim != 2:
        raise ValueError(f"expected condensed (n_rdm, n_pairs) or square (n_rdm, n, n) RDMs, got shape {array.shape}")
    n = n_stimuli_from_length(array.shape[1])
    patterns = {k: list(v) for k, v in (pattern_descriptors or {}).items()}
    ids = list(range(n)) if stimulus_ids is None else list(stimulus_ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} stimulus ids given for RDMs over {n} stimuli")
    if len(set(ids)) != n:
        raise ValueError("stimulus ids must be unique")
    patterns[descriptor] = ids
    for key, values in patterns.items():
        if len(values) != n:
            raise ValueError(f"pattern descriptor {key!r} has {len(values)} values for {n} stimuli")
    rdm_desc = {k: list(v) for k, v in (rdm_descriptors or {}).items()}
    for key, values in rdm_desc.items():
        if len(values) != array.shape[0]:
            raise ValueError(f"rdm descriptor {key!r} has {len(values)} values for {array.shape[0]} RDMs")
    return RDMs(
        array,
        dissimilarity_measure=RSATOOLBOX_MEASURE.get(method, method),
        rdm_descriptors=rdm_desc or None,
        pattern_descriptors=patterns,
    )

