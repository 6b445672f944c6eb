"""compare_rdms against rsatoolbox.rdm.compare itself, gradients, rank helpers and error messages."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
import torch
from rsatoolbox.rdm import RDMs, compare

from rdl_neuro.rdm import COMPARE_METHODS, DIFFERENTIABLE_METHODS, compare_rdms, kendall_tau, rankdata

# our name -> rsatoolbox's name
RSA_NAME = {"tau-b": "kendall"}


def _rsatoolbox(a: np.ndarray, b: np.ndarray, method: str) -> np.ndarray:
    return compare(RDMs(a), RDMs(b), method=RSA_NAME.get(method, method))


def _random_rdms(rng, shape, kind):
    if kind == "continuous":
        return rng.standard_normal(shape) + 2
    return rng.integers(0, 4, shape).astype(np.float64)  # integer-valued: many ties


def _assert_matches(ours: torch.Tensor, expected: np.ndarray, atol: float = 1e-9) -> None:
    ours = ours.numpy()
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=atol, equal_nan=True)


@pytest.mark.parametrize("method", COMPARE_METHODS)
@pytest.mark.parametrize("n", [5, 12, 40])
@pytest.mark.parametrize("kind", ["continuous", "integer"])
@pytest.mark.parametrize("with_nan", [False, True])
def test_equals_rsatoolbox(rng, method, n, kind, with_nan):
    n_pairs = n * (n - 1) // 2
    a = _random_rdms(rng, (3, n_pairs), kind)
    b = _random_rdms(rng, (4, n_pairs), kind)
    if with_nan:  # the same missing entries in every RDM, as rsatoolbox requires
        missing = rng.choice(n_pairs, size=max(1, n_pairs // 6), replace=False)
        a[:, missing] = np.nan
        b[:, missing] = np.nan
    _assert_matches(compare_rdms(torch.from_numpy(a), torch.from_numpy(b), method), _rsatoolbox(a, b, method))


@pytest.mark.parametrize("method", ["spearman", "rho-a", "tau-a", "kendall"])
def test_rank_methods_equal_rsatoolbox_on_large_rdms(rng, method):
    # large enough for the radix-sort ranking's tie fix-ups and the threaded pair loop to matter
    n_pairs = 300 * 299 // 2
    a = rng.standard_normal((2, n_pairs))
    a[1] = np.round(a[1], 2)  # many ties
    b = np.concatenate([rng.exponential(size=(1, n_pairs)), a[:1] + rng.standard_normal((1, n_pairs))])
    _assert_matches(compare_rdms(a, b, method), _rsatoolbox(a, b, method))


@pytest.mark.parametrize("method", COMPARE_METHODS)
def test_pairwise_nan_patterns(rng, method):
    # each pair of RDMs is compared on the entries valid in both: rsatoolbox applied per pair
    n = 9
    n_pairs = n * (n - 1) // 2
    a = _random_rdms(rng, (3, n_pairs), "integer" if method in ("tau-a", "kendall") else "continuous")
    b = _random_rdms(rng, (4, n_pairs), "continuous")
    a[0, [1, 5]] = np.nan
    a[2, [5, 30, 31]] = np.nan
    b[1, [0]] = np.nan
    b[3, [5, 6, 7]] = np.nan
    ours = compare_rdms(torch.from_numpy(a), torch.from_numpy(b), method)
    expected = np.empty((3, 4))
    for i, j in itertools.product(range(3), range(4)):
        missing = np.isnan(a[i]) | np.isnan(b[j])
        ai, bj = a[i].copy(), b[j].copy()
        ai[missing] = np.nan
        bj[missing] = np.nan
        expected[i, j] = _rsatoolbox(ai[None], bj[None], method)[0, 0]
    _assert_matches(ours, expected)


def test_numpy_input_dtype_and_1d(rng):
    a = rng.random(10)
    out = compare_rdms(a, rng.random((3, 10)), "corr")
    assert out.shape == (1, 3) and out.dtype == torch.float64
    out32 = compare_rdms(torch.rand(2, 6), torch.rand(6), "spearman")
    assert out32.shape == (2, 1) and out32.dtype == torch.float32


def test_constant_rdm_gives_rsatoolbox_values(rng):
    a = np.ones((1, 15))
    b = rng.random((2, 15))
    for method in COMPARE_METHODS:
        _assert_matches(compare_rdms(a, b, method), _rsatoolbox(a, b, method))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("method", DIFFERENTIABLE_METHODS)
def test_gradcheck(rng, method):
    a = torch.from_numpy(rng.random((2, 10)) + 0.1).requires_grad_()
    b = torch.from_numpy(rng.random((3, 10)) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: compare_rdms(x, y, method), (a, b))


@pytest.mark.parametrize("method", ["corr_cov", "cosine_cov"])
def test_gradcheck_with_nan_entries(rng, method):
    a = rng.random((2, 15)) + 0.1
    b = rng.random((2, 15)) + 0.1
    a[:, [3, 9]] = np.nan  # shared pattern
    b[1, 4] = np.nan  # and a pairwise one
    a, b = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: compare_rdms(x, y, method), (a, b))
    compare_rdms(a, b, method).sum().backward()
    assert torch.all(a.grad[:, [3, 9]] == 0) and torch.isfinite(a.grad).all()


def test_rank_methods_accept_grad_inputs_but_are_constant(rng):
    a = torch.from_numpy(rng.random((2, 10))).requires_grad_()
    for method in ("spearman", "rho-a", "kendall", "tau-a"):
        out = compare_rdms(a, torch.from_numpy(rng.random((1, 10))), method)
        assert not out.requires_grad


# ----------------------------------------------------------------------------- rank helpers


@pytest.mark.parametrize(
    "make",
    [
        lambda g: g.standard_normal(2000),
        lambda g: g.integers(0, 7, 2000).astype(float),
        lambda g: np.r_[g.standard_normal(3000), 1e9],  # one far outlier squeezes all others into few keys
        lambda g: 1 + g.integers(0, 3, 500) * 1e-13,  # differences far below the key resolution
        lambda g: np.full(9, 2.5),
        lambda g: g.standard_normal(50) * 1e-300,
        lambda g: np.r_[-1e308, g.standard_normal(20), 1e308],  # the range overflows
        lambda g: np.array([0.0, -0.0, 1.0, -0.0]),
    ],
)
def test_rankdata_equals_scipy(rng, make):
    x = np.stack([make(rng), make(rng)])
    np.testing.assert_array_equal(rankdata(torch.from_numpy(x)).numpy(), np.apply_along_axis(scipy.stats.rankdata, 1, x))


def _planted_float32(g, n):
    """float32 values with runs of ties, negatives, -0.0 beside +0.0, subnormals and infinities."""
    x = g.standard_normal(n).astype(np.float32)
    x[::7] = x[3]
    x[::11] = np.round(x[::11], 1)
    x[100:200], x[200:250] = -0.0, 0.0
    x[1000:1010], x[2000:2010] = np.float32(1e-45), -np.float32(1e-45)
    x[50:60], x[0], x[-1] = np.inf, -np.inf, np.inf
    return g.permutation(x)


# float32 rows this long (over 50,000 entries) are ranked by sorting packed integer keys
LONG = 346 * 345 // 2  # the RDM of 346 stimuli


@pytest.mark.parametrize(
    "make",
    [
        _planted_float32,
        lambda g, n: g.integers(-3, 4, n).astype(np.float32),
        lambda g, n: np.full(n, 2.5, dtype=np.float32),
        lambda g, n: (1 + g.random(n) * 1e-3).astype(np.float32),  # a narrow range: most values tie
        lambda g, n: g.permutation(n).astype(np.float32),  # no ties
    ],
)
def test_rankdata_of_long_float32_rows_equals_scipy(rng, make):
    x = np.stack([make(rng, LONG), make(rng, LONG)])
    expected = np.apply_along_axis(scipy.stats.rankdata, 1, x)
    np.testing.assert_array_equal(rankdata(torch.from_numpy(x)).numpy(), expected.astype(np.float32))
    # compare_rdms ranks in float64: the ranks of the float32 rows equal those of their float64 copies
    # (compare_rdms refuses infinite dissimilarities: here they become the largest finite float32)
    finite = np.nan_to_num(x, posinf=np.finfo(np.float32).max, neginf=np.finfo(np.float32).min)
    a, b = torch.from_numpy(finite[:1]), torch.from_numpy(finite[1:])
    for method in ("spearman", "rho-a"):
        ours = compare_rdms(a, b, method)
        assert ours.dtype == torch.float32
        assert torch.equal(ours, compare_rdms(a.double(), b.double(), method).float()) or torch.isnan(ours).all()


@pytest.mark.parametrize("method", ["spearman", "rho-a"])
def test_rank_methods_on_long_float32_rdms_equal_rsatoolbox(rng, method):
    n_pairs = LONG
    planted = np.nan_to_num(_planted_float32(rng, n_pairs), posinf=3e38, neginf=-3e38)  # finite dissimilarities
    a = np.stack([planted, rng.integers(0, 9, n_pairs).astype(np.float32)])
    b = np.concatenate([rng.exponential(size=(1, n_pairs)), a[:1] + rng.standard_normal((1, n_pairs))]).astype(np.float32)
    _assert_matches(compare_rdms(a, b, method).double(), _rsatoolbox(a.astype(np.float64), b.astype(np.float64), method), 1e-6)


def test_rankdata_keeps_dtype_and_device():
    x = torch.tensor([[3.0, 1.0, 2.0, 1.0]], dtype=torch.float32)
    r = rankdata(x)
    assert r.dtype == torch.float32 and r.device == x.device
    assert r.tolist() == [[4.0, 1.5, 3.0, 1.5]]


# ----------------------------------------------------------------------------- bad input


def test_different_lengths_raise():
    with pytest.raises(ValueError, match=r"different lengths: a has 10 entries per RDM \(5 stimuli\), b has 6 \(4 stimuli\)"):
        compare_rdms(torch.rand(2, 10), torch.rand(6))


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown comparison method 'pearson'; valid methods are: cosine, corr, spearman"):
        compare_rdms(torch.rand(6), torch.rand(6), "pearson")


def test_bad_lengths_shapes_and_values():
    with pytest.raises(ValueError, match=r"length 7 is not n\(n-1\)/2"):
        compare_rdms(torch.rand(7), torch.rand(7))
    with pytest.raises(ValueError, match=r"b must have shape \(n_rdms, n_pairs\)"):
        compare_rdms(torch.rand(6), torch.rand(1, 2, 6))
    with pytest.raises(TypeError, match="a must be a torch.Tensor or numpy array"):
        compare_rdms([1.0, 2.0, 3.0], torch.rand(3))
    b = torch.rand(2, 6)
    b[1, 4] = float("inf")
    with pytest.raises(ValueError, match=r"b contains an infinite dissimilarity \(RDM 1, condensed entry 4\)"):
        compare_rdms(torch.rand(6), b)
    a = torch.rand(6)
    a[:5] = float("nan")
    with pytest.raises(ValueError, match="fewer than 2 dissimilarities are valid"):
        compare_rdms(a, torch.rand(6))
