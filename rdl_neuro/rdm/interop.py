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

import warnings

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro.data.ids import duplicate_ids, plain_ids
from rdl_neuro.rdm.calc import RSATOOLBOX_MEASURE, as_condensed, n_stimuli_from_length

__all__ = ["from_rsatoolbox", "to_rsatoolbox", "stimulus_ids_of", "rdm_names"]

# the pattern descriptor that holds stimulus ids unless the caller names another
STIMULUS_DESCRIPTOR = "stimulus"

# rdm_descriptors that name RDMs, in order of preference
NAME_DESCRIPTORS = ("layer", "name", "model", "role", "subject")


def rdm_names(rdms: RDMs) -> list[str]:
    """A label per RDM: the first of ``NAME_DESCRIPTORS`` present, else ``RDM 0, RDM 1, ...``."""
    for key in NAME_DESCRIPTORS:
        if key in rdms.rdm_descriptors:
            return [str(v) for v in rdms.rdm_descriptors[key]]
    return [f"RDM {i}" for i in range(rdms.n_rdm)]


def stimulus_ids_of(rdms: RDMs, descriptor: str | None = None) -> list[Any]:
    """The stimulus ids of an rsatoolbox ``RDMs`` (normalised by ``rdl_neuro.data.ids.plain_id``).

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs
    descriptor : str, optional
        The pattern descriptor holding the ids; a descriptor named here must
        exist (the error lists those that do). The default (None) reads
        ``stimulus`` and, when the RDMs have none, falls back to ``index``
        (rsatoolbox's positions) with a warning, since positions only name
        stimuli when every RDM lists them in the same order.

    Examples
    --------
    >>> import numpy as np
    >>> rdms = RDMs(np.ones((1, 3)), pattern_descriptors={"stimulus": ["a", "b", "c"]})
    >>> stimulus_ids_of(rdms)
    ['a', 'b', 'c']
    """
    descriptors = rdms.pattern_descriptors
    name = STIMULUS_DESCRIPTOR if descriptor is None else descriptor
    if name in descriptors:
        ids = descriptors[name]
    elif descriptor is not None:
        raise KeyError(f"the RDMs have no pattern descriptor {descriptor!r}; "
                       f"they have {sorted(descriptors) or 'none'}")
    else:
        name = "index"
        warnings.warn(f"the RDMs have no {STIMULUS_DESCRIPTOR!r} pattern descriptor: stimulus ids are their "
                      "positions ('index'); name the descriptor that holds ids to silence this "
                      f"(pattern descriptors: {sorted(descriptors) or 'none'})", UserWarning, stacklevel=2)
        ids = descriptors.get("index", range(rdms.n_cond))
    ids = plain_ids(ids)
    if len(set(ids)) != len(ids):
        dup = duplicate_ids(ids)
        raise ValueError(f"duplicate stimulus ids in pattern_descriptors[{name!r}]: {dup[:5]}")
    return ids


def from_rsatoolbox(
    rdms: RDMs,
    descriptor: str | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, list[Any]]:
    """rsatoolbox ``RDMs`` -> ``(tensor (n_rdm, n_pairs), stimulus ids)``.

    The ids come from ``pattern_descriptors[descriptor]`` (default
    ``stimulus``, else ``index`` with a warning; see ``stimulus_ids_of``).
    NaN entries are kept (they mark missing dissimilarities).
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
    rdms : Tensor ``(n_rdm, n_pairs)``, ``(n_pairs,)``, ``(n_rdm, n, n)`` or ``(n, n)``
        Condensed RDMs (1-D or 2-D) or square ones (3-D, or a single 2-D
        square RDM: symmetric with a zero diagonal, see
        ``rdl_neuro.rdm.calc.is_square_rdm``); gradients are detached, values
        copied to float64.
    stimulus_ids : sequence of length ``n``, optional
        Written to ``pattern_descriptors[descriptor]``; default ``0..n-1``.
        Normalised and checked by ``rdl_neuro.data.ids`` (unique; ``3.0`` is ``3``).
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
    if array.ndim in (1, 2, 3):
        array = as_condensed(torch.from_numpy(array)).numpy()
    if array.ndim != 2:
        raise ValueError(f"expected condensed (n_rdm, n_pairs) or square (n_rdm, n, n) RDMs, got shape {array.shape}")
    n = n_stimuli_from_length(array.shape[1])
    patterns = {k: list(v) for k, v in (pattern_descriptors or {}).items()}
    ids = list(range(n)) if stimulus_ids is None else plain_ids(stimulus_ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} stimulus ids given for RDMs over {n} stimuli")
    if len(set(ids)) != n:
        raise ValueError(f"stimulus ids must be unique; repeated: {duplicate_ids(ids)[:5]}")
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

