"""compute_rdm and condensed <-> square conversion, tested against rsatoolbox and scipy themselves."""
from __future__ import annotations

import numpy as np
import pytest
import rsatoolbox
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist, squareform

from rdl_neuro.rdm import (
    METHODS,
    RSATOOLBOX_MEASURE,
    compute_rdm,
    n_stimuli_from_length,
    to_condensed,
    to_square,
    triu_indices,
)

# (n, p): tiny, the 92-image-like size, and sizes that take the blocked Gram path (2 and 4 row blocks)
SIZES = [(2, 1), (5, 3), (12, 40), (92, 17), (850, 6), (1700, 3)]


def _rsatoolbox_rdm(x: np.ndarray, method: str) -> np.ndarray:
    ds = rsatoolbox.data.Dataset(x)
    return rsatoolbox.rdm.calc_rdm(ds, method=method).get_vectors()[0]


@pytest.mark.parametrize("n,p", SIZES)
@pytest.mark.parametrize("method,rsa_method", [("sqeuclidean", "euclidean"), ("correlation", "correlation")])
def test_equals_rsatoolbox_calc_rdm(rng, n, p, method, rsa_method):
    if method == "correlation" and p < 2:
        p = 2  # correlation needs at least two channels to have variance
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
    ours = compute_rdm(torch.from_numpy(x), method).numpy()
    np.testing.assert_allclose(ours, _rsatoolbox_rdm(x, rsa_method), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n,p", SIZES)
@pytest.mark.parametrize("method", ["euclidean", "cosine"])
def test_equals_scipy_pdist(rng, n, p, method):
    x = rng.standard_normal((n, p)) + 0.3
    ours = compute_rdm(torch.from_numpy(x), method).numpy()
    np.testing.assert_allclose(ours, pdist(x, method), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,batch", [(7, (2, 3)), (820, (2, 1))])
def test_batched_equals_per_slice(rng, method, n, batch):
    x = torch.from_numpy(rng.standard_normal((*batch, n, 5)))
    batched = compute_rdm(x, method)
    assert batched.shape == (*batch, n * (n - 1) // 2)
    for i in range(batch[0]):
        for j in range(batch[1]):
            torch.testing.assert_close(batched[i, j], compute_rdm(x[i, j], method), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [4, 30])
def test_square_equals_to_square_of_condensed(rng, method, n):
    x = torch.from_numpy(rng.standard_normal((2, n, 9)))
    square = compute_rdm(x, method, square=True)
    assert square.shape == (2, n, n)
    torch.testing.assert_close(square, to_square(compute_rdm(x, method)), rtol=0, atol=1e-12)
    assert torch.equal(torch.diagonal(square, dim1=-2, dim2=-1), torch.zeros(2, n, dtype=square.dtype))


@pytest.mark.parametrize("method", METHODS)
def test_float32_and_device(rng, method):
    x64 = torch.from_numpy(rng.standard_normal((40, 16)))
    device = torch.device("cpu")
    rdm32 = compute_rdm(x64.to(device=device, dtype=torch.float32), method)
    assert rdm32.dtype == torch.float32 and rdm32.device == device
    torch.testing.assert_close(rdm32.double(), compute_rdm(x64, method), rtol=1e-4, atol=1e-5)


def test_condensed_square_round_trip(rng):
    for n in (2, 3, 17):
        v = torch.from_numpy(rng.random(n * (n - 1) // 2))
        sq = to_square(v)
        np.testing.assert_array_equal(sq.numpy(), squareform(v.numpy()))
        assert torch.equal(to_condensed(sq), v)
    batched = torch.from_numpy(rng.random((3, 2, 10)))
    assert to_square(batched).shape == (3, 2, 5, 5)
    assert torch.equal(to_condensed(to_square(batched)), batched)


def test_triu_indices_and_lengths():
    rows, cols = triu_indices(6)
    expected_rows, expected_cols = np.triu_indices(6, k=1)
    np.testing.assert_array_equal(rows.numpy(), expected_rows)
    np.testing.assert_array_equal(cols.numpy(), expected_cols)
    assert [n_stimuli_from_length(n * (n - 1) // 2) for n in (2, 3, 92, 1000)] == [2, 3, 92, 1000]
    assert RSATOOLBOX_MEASURE["sqeuclidean"] == "squared euclidean"


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(rng, method):
    x = torch.from_numpy(rng.standard_normal((6, 4))).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: compute_rdm(f, method), (x,))
    assert torch.autograd.gradcheck(lambda f: compute_rdm(f, method, square=True), (x,))


def _naive_rdm(x: torch.Tensor, method: str) -> torch.Tensor:
    """Straightforward n x n x p / full-Gram formulas, for checking the blocked path's values and gradients."""
    if method in ("euclidean", "sqeuclidean"):
        d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        # (the unused diagonal is moved off 0 so sqrt's gradient there is not NaN)
        square = (d2 + torch.eye(len(x))).sqrt() if method == "euclidean" else d2 / x.shape[1]
    else:
        z = x - x.mean(1, keepdim=True) if method == "correlation" else x
        z = z / z.norm(dim=1, keepdim=True)
        square = 1 - z @ z.T
    rows, cols = triu_indices(x.shape[0])
    return square[rows, cols]


@pytest.mark.parametrize("method", METHODS)
def test_blocked_gram_values_and_gradient_equal_naive(rng, method):
    # n >= 800 takes the blocked upper-triangle path
    n = 820
    x = torch.from_numpy(rng.standard_normal((n, 5))).requires_grad_()
    weights = torch.from_numpy(rng.standard_normal(n * (n - 1) // 2))
    ours = compute_rdm(x, method)
    naive = _naive_rdm(x, method)
    torch.testing.assert_close(ours, naive, rtol=0, atol=1e-12)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_naive,) = torch.autograd.grad((naive * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_naive, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("square", [False, True])
def test_euclidean_coinciding_rows_have_finite_gradient(rng, square):
    x = rng.standard_normal((5, 3))
    x[3] = x[1]
    x = torch.from_numpy(x).requires_grad_()
    rdm = compute_rdm(x, "euclidean", square=square)
    rdm.sum().backward()
    assert torch.isfinite(x.grad).all()
    condensed = to_condensed(rdm.detach()) if square else rdm.detach()
    rows, cols = triu_indices(5)
    assert float(condensed[(rows == 1) & (cols == 3)]) == 0.0
    # away from the coinciding pair the gradient is the ordinary one
    y = x.detach().clone()
    y[3] += 1e-3
    assert torch.autograd.gradcheck(lambda f: compute_rdm(f, "euclidean", square=square), (y.requires_grad_(),))


# ----------------------------------------------------------------------------- properties

feature_shapes = st.tuples(st.integers(2, 9), st.integers(2, 6))


def _features(seed: int, shape: tuple[int, int]) -> torch.Tensor:
    gen = np.random.default_rng(seed)
    return torch.from_numpy(gen.standard_normal(shape) * gen.uniform(0.1, 10))


@settings(max_examples=30, deadline=None)
@given(shape=feature_shapes, seed=st.integers(0, 2**32 - 1), method=st.sampled_from(METHODS))
def test_property_symmetric_zero_diagonal_nonnegative(shape, seed, method):
    square = compute_rdm(_features(seed, shape), method, square=True)
    assert torch.equal(square, square.transpose(0, 1))
    assert torch.all(torch.diagonal(square) == 0)
    slack = 1e-12 if method in ("correlation", "cosine") else 0.0
    assert bool((square >= -slack).all())


@settings(max_examples=30, deadline=None)
@given(shape=feature_shapes, seed=st.integers(0, 2**32 - 1), method=st.sampled_from(METHODS))
def test_property_permutation_equivariance(shape, seed, method):
    x = _features(seed, shape)
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(shape[0]))
    permuted = compute_rdm(x[perm], method, square=True)
    expected = compute_rdm(x, method, square=True)[perm][:, perm]
    torch.testing.assert_close(permuted, expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- bad input


def test_non_floating_features_raise():
    with pytest.raises(TypeError, match="floating dtype.*int64"):
        compute_rdm(torch.arange(12).reshape(4, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        compute_rdm(np.zeros((4, 3)))


def test_non_finite_features_name_the_row():
    x = torch.randn(5, 3, dtype=torch.float64)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values in row 2\b"):
        compute_rdm(x)
    batched = torch.randn(2, 4, 3, dtype=torch.float64)
    batched[1, 3, 0] = float("inf")
    with pytest.raises(ValueError, match=r"row 3 of batch element \(1,\)"):
        compute_rdm(batched, "euclidean")


def test_too_few_stimuli_or_bad_shape():
    with pytest.raises(ValueError, match="at least 2 stimuli"):
        compute_rdm(torch.randn(1, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(n, p\)"):
        compute_rdm(torch.randn(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="no channels"):
        compute_rdm(torch.randn(4, 0, dtype=torch.float64))


def test_zero_variance_row_under_correlation_is_named():
    x = torch.randn(6, 4, dtype=torch.float64)
    x[1] = 3.0
    x[4] = -1.5
    with pytest.raises(ValueError, match=r"zero variance.*'correlation'.*row 1, row 4"):
        compute_rdm(x, "correlation")
    compute_rdm(x, "euclidean")  # fine for the distances


def test_eps_treats_constant_rows_as_uncorrelated():
    x = torch.randn(6, 4, dtype=torch.float64)
    x[1] = 3.0
    x[5] = 0.0
    with pytest.raises(ValueError, match="pass eps="):
        compute_rdm(x, "correlation")
    for method in ("correlation", "cosine"):
        rdm = compute_rdm(x, method, eps=1e-8, square=True)
        assert torch.isfinite(rdm).all()
        bad = [1, 5] if method == "correlation" else [5]
        for row in bad:
            others = [j for j in range(6) if j != row]
            assert torch.allclose(rdm[row, others], torch.ones(5, dtype=torch.float64))
        good = [0, 2, 3, 4]
        # the other rows are untouched by eps
        sub = compute_rdm(x[good], method)
        assert torch.allclose(compute_rdm(x, method, eps=1e-8, square=True)[good][:, good],
                              compute_rdm(x[good], method, square=True))
        assert torch.isfinite(sub).all()


def test_zero_norm_row_under_cosine_is_named():
    x = torch.randn(6, 4, dtype=torch.float64)
    x[5] = 0.0
    with pytest.raises(ValueError, match=r"zero norm.*'cosine'.*row 5"):
        compute_rdm(x, "cosine")


def test_condensed_length_must_be_triangular():
    with pytest.raises(ValueError, match=r"length 4 is not n\(n-1\)/2.*valid lengths: 1, 3, 6"):
        to_square(torch.zeros(4))
    with pytest.raises(ValueError, match="square RDMs"):
        to_condensed(torch.zeros(3, 4))


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown RDM method 'mahalanobis'; valid methods are: euclidean, sqeuclidean, correlation, cosine"):
        compute_rdm(torch.randn(4, 3), "mahalanobis")


@pytest.mark.parametrize("method", ["euclidean", "sqeuclidean"])
def test_float64_euclidean_rdms_through_numpy_syrk_equal_the_torch_path_and_keep_gradients(method: str) -> None:
    """CPU float64 without autograd takes numpy's symmetric product; with autograd the blocked torch path.
    Both give the same RDM (to rounding), and the autograd path still has its gradient."""
    x = torch.randn(600, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    plain = compute_rdm(x, method)
    tracked = compute_rdm(x.clone().requires_grad_(True), method)
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=1e-12)
    assert tracked.requires_grad and not plain.requires_grad
