"""Stimulus ids: the one place where ids are normalised and checked.

Stimulus identity travels with every sample and every RDM; these helpers are
shared by the teachers, the datasets, the trainer, ``layer_rdms``, the
rsatoolbox interop and the evaluation, so that one rule decides which ids name
the same stimulus everywhere:

- numpy scalars and 0-d tensors are their Python values (``np.int64(3)`` is ``3``,
  ``np.str_("a")`` is ``"a"``);
- a float that is a whole number is that integer (``3.0`` is ``3``, as ids read
  with ``np.loadtxt`` come as floats), in lists and in float tensors alike; a
  float with a fractional part (or NaN/inf) is not an id: an error;
- booleans are not ids (``True == 1`` would match stimulus 1 by accident);
- integers and strings never match each other: ``"1"`` is not ``1``. Where two
  sets of ids of different kinds meet (a teacher's string ids and a batch's
  integer ids), ``check_id_kinds`` raises naming both, with a few ids of each,
  instead of letting every lookup miss silently.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["plain_id", "plain_ids", "duplicate_ids", "id_kind", "check_id_kinds", "id_tensor", "UNCOVERED"]

#: stimulus id of samples that no teacher covers
UNCOVERED = -1


def plain_id(i: Any) -> Hashable:
    """One stimulus id in its canonical form (see the module docstring).

    Examples
    --------
    >>> plain_id(np.int64(3)), plain_id(3.0), plain_id(torch.tensor(3)), plain_id(np.str_("a"))
    (3, 3, 3, 'a')
    """
    if isinstance(i, torch.Tensor):
        if i.ndim != 0:
            raise TypeError(f"a stimulus id must be a scalar, got a tensor of shape {tuple(i.shape)}")
        i = i.item()
    if isinstance(i, np.generic):
        i = i.item()
    if isinstance(i, bool):
        raise TypeError(f"stimulus id {i!r} is a boolean; ids are integers or strings")
    if isinstance(i, float):
        if not math.isfinite(i) or not i.is_integer():
            raise ValueError(f"stimulus id {i!r} is a float that is not a whole number; ids are integers or strings")
        return int(i)
    return i


def plain_ids(ids: Iterable[Any]) -> list[Hashable]:
    """``[plain_id(i) for i in ids]``; a tensor or array of ids is read element by element."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        ids = ids.tolist()
    ids = list(ids)
    # the usual ids are plain already (all ints or all strs): a type check each instead of plain_id's
    if all(type(i) is int for i in ids) or all(type(i) is str for i in ids):
        return ids
    return [plain_id(i) for i in ids]


def duplicate_ids(ids: Iterable[Hashable]) -> list[Hashable]:
    """Every repeated occurrence of an id, in order: an id seen ``c`` times appears ``c - 1`` times.

    Error messages show the first few (``duplicate_ids(ids)[:5]``).

    Examples
    --------
    >>> from rdl_neuro.data import duplicate_ids
    >>> duplicate_ids(["b", "a", "b", "c", "a"])
    ['b', 'a']
    >>> duplicate_ids([3, 1, 3, 2, 1, 3])
    [3, 1, 3]
    """
    seen: set[Hashable] = set()
    return [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]


def id_kind(i: Hashable) -> str:
    """``"int"``, ``"str"`` or the type name of a (plain) id: ids of different kinds never match."""
    if isinstance(i, int) and not isinstance(i, bool):
        return "int"
    return "str" if isinstance(i, str) else type(i).__name__


def _few(ids: Sequence[Hashable], k: int = 3) -> str:
    return ", ".join(repr(i) for i in ids[:k]) + (", ..." if len(ids) > k else "")


def check_id_kinds(a: Sequence[Hashable], b: Sequence[Hashable], what_a: str, what_b: str) -> None:
    """Raise a TypeError when two sets of (plain) ids share no kind, so none of them could ever match.

    ``UNCOVERED`` (-1) in either set is ignored. Both sets must be non-empty to be compared.

    Examples
    --------
    >>> check_id_kinds([0, 1], [1, 2], "the batch", "the teacher")  # same kind: fine
    >>> check_id_kinds([0, 1], ["0", "1"], "the batch", "the teacher")
    Traceback (most recent call last):
    ...
    TypeError: stimulus ids of different kinds never match: the batch has int ids (0, 1) but the teacher has str ids ('0', '1'); convert one side (e.g. [int(i) for i in ids])
    """
    a = [i for i in a if i != UNCOVERED]
    b = [i for i in b if i != UNCOVERED]
    if not a or not b:
        return
    kinds_a, kinds_b = {id_kind(i) for i in a}, {id_kind(i) for i in b}
    if kinds_a & kinds_b:
        return
    hint = "[int(i) for i in ids]" if "int" in kinds_a | kinds_b and "str" in kinds_a | kinds_b else "the same type"
    raise TypeError(
        f"stimulus ids of different kinds never match: {what_a} has {'/'.join(sorted(kinds_a))} ids ({_few(a)}) "
        f"but {what_b} has {'/'.join(sorted(kinds_b))} ids ({_few(b)}); convert one side (e.g. {hint})"
    )


def id_tensor(ids: Any, what: str = "stimulus ids",
              hint: str = "map stimulus names to integer ids (e.g. with StimulusDataset)") -> torch.Tensor:
    """Integer stimulus ids of a batch as a ``torch.long`` tensor ``(b,)`` (device kept).

    Integer tensors and sequences pass; float ids must be whole numbers (``3.0``
    is ``3``); strings and other kinds raise a TypeError naming a few of them,
    since batches carry integer ids (map names to integers, e.g. with
    ``StimulusDataset``). ``what`` and ``hint`` word the errors (the trainer
    reads class labels with it too).
    """
    if isinstance(ids, torch.Tensor):
        t = ids
    else:
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        bad = [v for v in values if isinstance(v, (str, bytes, bool, np.str_, np.bool_)) or v is None]
        if bad:
            raise TypeError(f"{what} must be integers, got {type(bad[0]).__name__} values ({_few(bad)}); {hint}")
        try:
            t = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{what} must be integers, got {_few(values)}: {err}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{what} must be integers, got a {t.dtype} tensor")
    if t.is_floating_point():
        whole = torch.isfinite(t) & (t == torch.round(t))
        if not bool(whole.all()):
            bad_values = t[~whole][:3].tolist()
            raise ValueError(f"{what} must be whole numbers, got {_few(bad_values)} (a {t.dtype} tensor)")
    return t.long()
