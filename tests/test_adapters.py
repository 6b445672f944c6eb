"""rsatoolbox RDMs <-> torch tensors with stimulus ids: exact round trips, descriptors, names, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro.rdm.interop import from_rsatoolbox, stimulus_ids_of, to_rsatoolbox
from rdl_neuro.rdm import METHODS, RSATOOLBOX_MEASURE, compute_rdm, to_square


def test_round_trip_is_exact_and_keeps_descriptors(rng):
    rdms = compute_rdm(torch.from_numpy(rng.standard_normal((3, 6, 4))), "sqeuclidean")
    ids = ["face1", "face2", "car", "dog", "house", "tree"]
    rsa = to_rsatoolbox(
        rdms,
        ids,
        method="sqeuclidean",
        rdm_descriptors={"layer": ["conv1", "conv2", "fc"]},
        pattern_descriptors={"category": ["face", "face", "object", "animal", "object", "object"]},
    )
    assert rsa.dissimilarity_measure == "squared euclidean"
    assert rsa.n_rdm == 3 and rsa.n_cond == 6
    assert list(rsa.rdm_descriptors["layer"]) == ["conv1", "conv2", "fc"]
    assert list(rsa.pattern_descriptors["stimulus"]) == ids
    assert list(rsa.pattern_descriptors["category"])[3] == "animal"
    np.testing.assert_array_equal(rsa.get_vectors(), rdms.numpy())

    back, back_ids = from_rsatoolbox(rsa)
    assert back_ids == ids
    assert back.dtype == torch.float64
    assert torch.equal(back, rdms)


def test_round_trip_from_rsatoolbox_keeps_nan_and_ids(rng):
    vectors = rng.random((2, 10))
    vectors[1, 3] = np.nan
    rsa = RDMs(vectors, dissimilarity_measure="correlation", pattern_descriptors={"stimulus": [10, 20, 30, 40, 50]})
    tensor, ids = from_rsatoolbox(rsa, dtype=torch.float32)
    assert ids == [10, 20, 30, 40, 50] and all(type(i) is int for i in ids)
    assert tensor.dtype == torch.float32 and torch.isnan(tensor[1, 3])
    again = to_rsatoolbox(tensor.double(), ids, method="correlation")
    np.testing.assert_array_equal(again.get_vectors(), vectors.astype(np.float32).astype(np.float64))
    assert again.dissimilarity_measure == "correlation"


@pytest.mark.parametrize("method", METHODS)
def test_dissimilarity_measure_names_the_method(method):
    rsa = to_rsatoolbox(torch.rand(3), method=method)
    assert rsa.dissimilarity_measure == RSATOOLBOX_MEASURE[method]
    assert to_rsatoolbox(torch.rand(3), method="crossnobis").dissimilarity_measure == "crossnobis"


def test_square_and_gradient_inputs(rng):
    condensed = torch.from_numpy(rng.random((2, 15))).requires_grad_()
    rsa = to_rsatoolbox(to_square(condensed))
    np.testing.assert_array_equal(rsa.get_vectors(), condensed.detach().numpy())
    assert list(rsa.pattern_descriptors["stimulus"]) == list(range(6))


def test_ids_from_stimulus_else_index():
    with_stimulus = RDMs(np.random.rand(1, 3), pattern_descriptors={"stimulus": ["a", "b", "c"], "index": [0, 1, 2]})
    assert stimulus_ids_of(with_stimulus) == ["a", "b", "c"]
    assert from_rsatoolbox(with_stimulus)[1] == ["a", "b", "c"]
    plain = RDMs(np.random.rand(1, 3))  # rsatoolbox adds only 'index'
    with pytest.warns(UserWarning, match="no 'stimulus' pattern descriptor.*positions"):
        assert from_rsatoolbox(plain)[1] == [0, 1, 2]
    custom = RDMs(np.random.rand(1, 3), pattern_descriptors={"image": ["x", "y", "z"]})
    assert stimulus_ids_of(custom, "image") == ["x", "y", "z"]


def test_bad_input_messages():
    with pytest.raises(TypeError, match="expected rsatoolbox.rdm.RDMs, got ndarray"):
        from_rsatoolbox(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 stimulus ids given for RDMs over 3 stimuli"):
        to_rsatoolbox(torch.rand(3), ["a", "b"])
    with pytest.raises(ValueError, match="stimulus ids must be unique"):
        to_rsatoolbox(torch.rand(3), ["a", "b", "a"])
    with pytest.raises(ValueError, match=r"condensed RDM length 4 is not n\(n-1\)/2"):
        to_rsatoolbox(torch.rand(4))
    with pytest.raises(ValueError, match="rdm descriptor 'layer' has 1 values for 2 RDMs"):
        to_rsatoolbox(torch.rand(2, 3), rdm_descriptors={"layer": ["x"]})
    with pytest.raises(ValueError, match="pattern descriptor 'category' has 2 values for 3 stimuli"):
        to_rsatoolbox(torch.rand(3), pattern_descriptors={"category": ["x", "y"]})
    duplicated = RDMs(np.random.rand(1, 3), pattern_descriptors={"stimulus": ["a", "b", "a"]})
    with pytest.raises(ValueError, match=r"duplicate stimulus ids in pattern_descriptors\['stimulus'\]: \['a'\]"):
        stimulus_ids_of(duplicated)
