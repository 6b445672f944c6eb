"""Null and reference teachers (rdl_neuro.train.control_teachers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rdl_neuro.train import RDMTeacher, category_teacher, model_teacher, permuted_teacher, pixel_teacher


def random_rdms(rng: np.random.Generator, n_rdm: int, n: int) -> np.ndarray:
    x = rng.normal(size=(n_rdm, n, 5))
    return np.stack([np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)) for a in x])


def test_permuted_teacher_relabels_every_rdm_alike(rng: np.random.Generator) -> None:
    rdms = random_rdms(rng, 3, 9)
    ids = [f"s{i}" for i in range(9)]
    teacher = RDMTeacher(rdms, ids, method="euclidean", combine="per_rdm", seed=7)
    null = permuted_teacher(teacher, seed=3)
    assert null.ids == ids and null.method == "euclidean" and null.combine == "per_rdm" and null.seed == 7
    new = null.rdms.numpy()
    # one permutation p with new[k, i, j] = old[k, p(i), p(j)] for every RDM k: recover p from row 0 of RDM 0
    perm = [int(np.argmin([np.abs(np.sort(new[0, i]) - np.sort(rdms[0, j])).sum() for j in range(9)])) for i in range(9)]
    assert sorted(perm) == list(range(9)) and perm != list(range(9))
    np.testing.assert_array_equal(new, rdms[:, perm][:, :, perm])
    # same seed, same null; another seed, another
    np.testing.assert_array_equal(permuted_teacher(teacher, seed=3).rdms.numpy(), new)
    assert not np.array_equal(permuted_teacher(teacher, seed=4).rdms.numpy(), new)


def test_permuted_within_groups_keeps_blocks(rng: np.random.Generator) -> None:
    n = 12
    groups = np.repeat(["a", "b", "c"], 4)
    rdms = random_rdms(rng, 1, n)
    teacher = RDMTeacher(rdms, list(range(n)))
    null = permuted_teacher(teacher, seed=0, within=list(groups))
    new = null.rdms[0].numpy()
    assert not np.allclose(new, rdms[0])
    for g in "abc":
        for h in "abc":
            block_old = rdms[0][np.ix_(groups == g, groups == h)]
            block_new = new[np.ix_(groups == g, groups == h)]
            np.testing.assert_allclose(np.sort(block_new.ravel()), np.sort(block_old.ravel()))
    # a mapping id -> group gives the same null
    by_id = permuted_teacher(teacher, seed=0, within={i: g for i, g in zip(range(n), groups)})
    np.testing.assert_array_equal(by_id.rdms.numpy(), null.rdms.numpy())
    with pytest.raises(ValueError, match="group labels"):
        permuted_teacher(teacher, seed=0, within=["a"] * 3)
    with pytest.raises(KeyError, match="no group"):
        permuted_teacher(teacher, seed=0, within={0: "a"})


def test_category_teacher_equals_rsatoolbox() -> None:
    from rsatoolbox.rdm import get_categorical_rdm

    cats = [0, 0, 1, 2, 1, 2, 2]
    ours = category_teacher(cats, list(range(7)))
    ref = get_categorical_rdm(cats).get_matrices()[0]
    np.testing.assert_array_equal(ours.rdms[0].numpy(), ref)
    with pytest.raises(ValueError, match="categories for"):
        category_teacher(cats, list(range(6)))


def test_model_teacher_from_the_92_image_models(kriegeskorte_dir: Path) -> None:
    from rdl_neuro.data import load_kriegeskorte92

    data = load_kriegeskorte92(kriegeskorte_dir)
    names = list(data.models.rdm_descriptors["name"])
    mats = data.models.get_matrices()
    animacy = model_teacher(data.models, "animacy")
    np.testing.assert_array_equal(animacy.rdms[0].numpy(), mats[names.index("animacy")])
    assert animacy.ids == list(range(92))
    ids = [5, 60, 2, 91]
    sub = model_teacher(data.models, "FaceBodyManmadeNatobj", ids=ids)
    np.testing.assert_array_equal(sub.rdms[0].numpy(), mats[names.index("FaceBodyManmadeNatobj")][np.ix_(ids, ids)])
    assert sub.ids == ids
    with pytest.raises(KeyError, match="no model RDM named 'animals'"):
        model_teacher(data.models, "animals")
    with pytest.raises(KeyError, match="not in model"):
        model_teacher(data.models, "animacy", ids=[0, 500])


def test_pixel_teacher_equals_rsatoolbox(rng: np.random.Generator) -> None:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    images = torch.from_numpy(rng.random((6, 3, 4, 4)))
    teacher = pixel_teacher(images, list(range(10, 16)))
    ref = calc_rdm(Dataset(images.reshape(6, -1).numpy()), method="correlation").get_matrices()[0]
    np.testing.assert_allclose(teacher.rdms[0].numpy(), ref, atol=1e-12)
    assert teacher.ids == list(range(10, 16)) and teacher.method == "correlation"
    with pytest.raises(ValueError, match="images for"):
        pixel_teacher(images, [0, 1])
