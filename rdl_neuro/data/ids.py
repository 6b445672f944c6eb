"""Stimulus ids: the one place where ids are normalised and checked.

Stimulus identity travels with every sample and every RDM; these helpers are
shared by the teachers, the datasets, the rsatoolbox interop and the
evaluation, so that ``np.int64(3)``, ``torch.tensor(3)`` and ``3`` name the
same stimulus everywhere.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import torch


def plain_id(i: Any) -> Hashable:
    """numpy scalars and 0-d tensors -> Python scalars, so that ``np.int64(3)`` and ``3`` match."""
    if isinstance(i, np.generic):
        return i.item()
    if isinstance(i, torch.Tensor) and i.ndim == 0:
        return i.item()
    return i


def duplicate_ids(ids: Iterable[Hashable]) -> list[Hashable]:
    """The ids that occur more than once, in order of their second occurrence.

    Examples
    --------
    >>> from rdl_neuro.data import duplicate_ids
    >>> duplicate_ids(["b", "a", "b", "c", "a"])
    ['b', 'a']
    """
    seen: set[Hashable] = set()
    return [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
