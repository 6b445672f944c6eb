"""Null and reference teachers: the controls a claim of brain-likeness from RDL needs.

Training toward a brain RDM can help for reasons that have nothing to do with
the brain: any structured regulariser may help a small network (Federer et al.
2020 found that randomised data with the statistics of neural data helped as
much), and a brain RDM carries category information the student may get from
its labels anyway. Each function here builds an ``RDMTeacher`` that isolates
one such explanation; a brain teacher must beat all of them before the brain's
own structure can be credited.

=========================  =====================================================
``permuted_teacher``       stimulus labels shuffled: the same dissimilarities,
                           the same distribution and the same RDM statistics,
                           but attached to the wrong stimuli. Controls for "any
                           teacher with brain-like statistics regularises".
                           With ``within=`` a category descriptor the shuffle
                           stays inside each category: every between- and
                           within-category block keeps its values (so its mean),
                           only the item-specific structure is destroyed.
                           Controls for "only the teacher's category structure
                           matters".
``category_teacher``       0 within a category, 1 between (e.g. the 6 image
                           categories): the categorical model. Controls for
                           "the brain teaches nothing beyond the categories".
``model_teacher``          one named model RDM of an rsatoolbox ``RDMs`` (e.g.
                           the animacy or face/body/manmade/natural models that
                           ship with the 92 images): a hypothesis-driven
                           reference teacher.
``pixel_teacher``          the RDM of the input images themselves: a low-level
                           teacher. Controls for "pulling toward any RDM of the
                           stimuli that is not random helps".
=========================  =====================================================

All build on ``RDMTeacher``'s public constructors and keep its stimulus-id
rules (ids travel with the RDM; unknown ids are uncovered in batches).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rdl_neuro.rdm.calc import compute_rdm
from rdl_neuro.train.teachers import RDMTeacher

__all__ = ["permuted_teacher", "permutation", "category_teacher", "model_teacher", "pixel_teacher"]


def _groups_of(teacher: RDMTeacher, within: Sequence[Hashable] | Mapping[Hashable, Hashable]) -> np.ndarray:
    """Group label of each teacher row, from a sequence aligned with ``teacher.ids`` or an id -> group mapping."""
    if isinstance(within, Mapping):
        missing = [i for i in teacher.ids if i not in within]
        if missing:
            raise KeyError(f"no group given for teacher stimulus ids {missing[:5]}")
        labels = [within[i] for i in teacher.ids]
    else:
        labels = list(within)
        if len(labels) != teacher.n_stimuli:
            raise ValueError(f"within has {len(labels)} group labels for a teacher over {teacher.n_stimuli} stimuli")
    return np.asarray(labels, dtype=object)


def permutation(n: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """A seeded permutation ``(n,)`` of ``0..n-1``; with ``groups (n,)`` it maps positions only within a group."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(n)
    perm = np.arange(n)
    for g in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == g)
        perm[members] = rng.permutation(members)
    return perm


def permuted_teacher(teacher: RDMTeacher, seed: int,
                     within: Sequence[Hashable] | Mapping[Hashable, Hashable] | None = None) -> RDMTeacher:
    """The teacher with its stimulus labels permuted (a null teacher).

    ``new[i, j] = old[p(i), p(j)]`` for a seeded permutation ``p`` of the
    teacher's stimuli, applied to every stored RDM alike, so the RDMs keep
    their values and statistics but no longer belong to their stimuli.

    Controls for: any teacher with the statistics of the real one acting as a
    regulariser. With ``within``: the teacher's category structure alone.

    Parameters
    ----------
    teacher : RDMTeacher
    seed : int
        Seed of the permutation (the same seed gives the same null teacher).
    within : sequence (aligned with ``teacher.ids``) or mapping id -> group, optional
        Permute only within each group (e.g. the image category): the
        category-block structure of the RDM is kept exactly.

    Returns
    -------
    RDMTeacher
        Same ids, method, ``combine`` and seed as ``teacher``.

    Examples
    --------
    >>> import numpy as np
    >>> rdm = np.array([[0., 1., 2.], [1., 0., 3.], [2., 3., 0.]])
    >>> null = permuted_teacher(RDMTeacher(rdm, ["a", "b", "c"]), seed=1)
    >>> sorted(null.rdms[0][np.triu_indices(3, 1)].tolist())
    [1.0, 2.0, 3.0]
    """
    groups = None if within is None else _groups_of(teacher, within)
    perm = torch.as_tensor(permutation(teacher.n_stimuli, seed, groups))
    rdms = teacher.rdms.index_select(1, perm).index_select(2, perm)
    return RDMTeacher(rdms, teacher.ids, method=teacher.method, combine=teacher.combine, seed=teacher.seed)


def category_teacher(categories: Sequence[Hashable], ids: Sequence[Hashable]) -> RDMTeacher:
    """The categorical model RDM: 0 for stimuli of the same category, 1 otherwise.

    Controls for: a teacher that says nothing beyond the category labels.

    Parameters
    ----------
    categories : sequence of hashable, length ``n``
        Category of each stimulus (e.g. the 6 categories of the 92 images).
    ids : sequence of hashable, length ``n``

    Examples
    --------
    >>> category_teacher(["face", "face", "body"], [0, 1, 2]).rdms[0].tolist()
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    """
    cats = np.asarray(list(categories), dtype=object)
    if len(cats) != len(ids):
        raise ValueError(f"{len(cats)} categories for {len(ids)} stimulus ids")
    rdm = (cats[:, None] != cats[None, :]).astype(np.float64)
    return RDMTeacher(rdm, list(ids), method="categorical")


def model_teacher(models: Any, name: str, *, name_descriptor: str = "name",
                  stimulus_descriptor: str = "stimulus", ids: Sequence[Hashable] | None = None) -> RDMTeacher:
    """The model RDM called ``name`` among rsatoolbox ``models``, optionally restricted to stimuli ``ids``.

    A reference teacher: a stated hypothesis (e.g. animacy) in place of the brain.

    Parameters
    ----------
    models : rsatoolbox.rdm.RDMs
        Model RDMs with a ``rdm_descriptors[name_descriptor]`` and stimulus ids
        in ``pattern_descriptors[stimulus_descriptor]``.
    name : str
        Which model (e.g. ``"animacy"``); an unknown name raises a KeyError listing the names.
    ids : sequence, optional
        Keep only these stimuli, in this order (e.g. the training images).
    """
    names = list(models.rdm_descriptors.get(name_descriptor, []))
    if name not in names:
        raise KeyError(f"no model RDM named {name!r} (rdm_descriptors[{name_descriptor!r}]: {names})")
    teacher = RDMTeacher.from_rsatoolbox(models.subset(name_descriptor, [name]), stimulus_descriptor)
    if ids is None:
        return teacher
    rows = teacher.rows_of(list(ids))
    if bool((rows < 0).any()):
        unknown = [i for i, r in zip(ids, rows.tolist()) if r < 0]
        raise KeyError(f"stimulus ids not in model {name!r}: {unknown[:5]}")
    rdms = teacher.rdms.index_select(1, rows).index_select(2, rows)
    return RDMTeacher(rdms, list(ids), method=teacher.method)


def pixel_teacher(images: torch.Tensor, ids: Sequence[Hashable], method: str = "correlation") -> RDMTeacher:
    """The RDM of the input images themselves (each image flattened to one pattern).

    Controls for: pulling toward any non-random RDM of the stimuli (here a low-level one).

    Parameters
    ----------
    images : Tensor ``(n, ...)``
        The stimuli as the student sees them before augmentation (e.g. ``(n, 3, H, W)``).
    ids : sequence of hashable, length ``n``
    method : str
        RDM method (see ``rdl_neuro.rdm.compute_rdm``).

    Examples
    --------
    >>> import torch
    >>> pixel_teacher(torch.rand(4, 3, 8, 8), [0, 1, 2, 3]).n_stimuli
    4
    """
    if images.shape[0] != len(ids):
        raise ValueError(f"{images.shape[0]} images for {len(ids)} stimulus ids")
    x = images.detach().reshape(images.shape[0], -1).to(torch.float64)
    return RDMTeacher(compute_rdm(x, method, square=True), list(ids), method=method)
