"""plot_model_comparison: files, marks and significance drawn from the library's tests."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from rdl_neuro.inference import RSAResult, rsa_dual_bootstrap, rsa_evaluate
from rdl_neuro.vis import figure_to_array, plot_model_comparison, save_figure


@pytest.fixture
def k92(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    return load_kriegeskorte92(kriegeskorte_dir)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_dual_bootstrap_figure_of_the_92_images(k92, tmp_path):
    res = rsa_dual_bootstrap(k92.models, k92.human_it, "corr", n_bootstrap=100, seed=0)
    fig = plot_model_comparison(res, sort=True)
    ax, axm = fig.axes
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == [res.names[i] for i in np.argsort(-res.mean, kind="stable")]
    assert ax.get_title().startswith("model comparison (dual_bootstrap, t-test, FDR")
    # the significance matrix shows exactly the significant pairs, antisymmetric
    shown = axm.images[0].get_array()
    pairs = res.pairwise()
    assert int((shown != 0).sum()) == 2 * int(pairs["significant"].sum())
    np.testing.assert_array_equal(shown, -shown.T)
    # one white triangle per model above 0, one grey per model below the ceiling
    tests = res.tests()
    markers = {c.get_label(): len(c.get_offsets()) for c in ax.collections if c.get_label() in ("> 0", "< noise ceiling")}
    assert markers == {"> 0": int(tests["above_zero"].sum()), "< noise ceiling": int(tests["below_noise_ceiling"].sum())}
    path = save_figure(fig, tmp_path / "comparison.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure_to_array(fig)[..., :3].std() > 0


def test_fixed_figure_with_points_and_lines_as_svg(k92, tmp_path):
    res = rsa_evaluate(k92.models, k92.human_it, "corr")
    fig = plot_model_comparison(res, points=True, pairwise="lines", correction="bonferroni", error_bars="ci")
    ax = fig.axes[0]
    dots = [c for c in ax.collections if c.get_offsets().shape[0] == k92.human_it.n_rdm]
    assert len(dots) == len(res.names)  # one group of subject points per model
    significant = int(res.pairwise(correction="bonferroni")["significant"].sum())
    pair_lines = [ln for ln in ax.lines if ln.get_gid() == "pair"]
    assert len(pair_lines) == significant > 0
    # value ticks stop below the stacked lines (a tick beside a line would read as an evaluation)
    lowest_line = min(ln.get_ydata()[0] for ln in pair_lines)
    assert max(ax.get_yticks()) < lowest_line and max(ax.get_yticks()) >= res.mean.max() - 0.1
    path = save_figure(fig, tmp_path / "c.svg")
    assert path.read_text().lstrip().startswith("<?xml")


def test_rsatoolbox_result_figure_and_errors(k92):
    res = rsa_evaluate(k92.models, k92.human_it, "corr", bootstrap="pattern", n_bootstrap=20)
    fig = plot_model_comparison(RSAResult.from_rsatoolbox(res.to_rsatoolbox()), pairwise=None, test_type="bootstrap")
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="points=True needs one evaluation per subject or fold"):
        plot_model_comparison(res, points=True)
    with pytest.raises(ValueError, match="pairwise must be one of"):
        plot_model_comparison(res, pairwise="arrows")
    with pytest.raises(ValueError, match="unknown correction 'holm'"):
        plot_model_comparison(res, correction="holm")


def test_dots_error_bars_band_and_points_are_the_results_numbers_as_pdf(k92, tmp_path):
    """What is drawn is the result: dot heights, SEM bars, the ceiling band, each subject's evaluation."""
    from matplotlib.collections import LineCollection

    res = rsa_evaluate(k92.models, k92.human_it, "corr")
    fig = plot_model_comparison(res, style="dot", points=True, pairwise=None)
    ax, = fig.axes
    assert not [p for p in ax.patches if p.get_label() == "model"]  # no bars
    dots, = [ln for ln in ax.lines if ln.get_label() == "model"]
    np.testing.assert_allclose(dots.get_ydata(), res.mean, atol=1e-12)
    bars, = [c for c in ax.collections if isinstance(c, LineCollection)]
    lengths = np.array([seg[1][1] - seg[0][1] for seg in bars.get_segments()])
    np.testing.assert_allclose(lengths, 2 * res.sem, atol=1e-12)
    band, = [p for p in ax.patches if p.get_label() == "noise ceiling"]
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((res.nc_lower, res.nc_upper), abs=1e-12)
    per_subject = res.rsatoolbox_evaluations()[0]  # (k, subjects)
    groups = [c for c in ax.collections if c.get_offsets().shape[0] == k92.human_it.n_rdm]
    for i, group in enumerate(groups):
        np.testing.assert_allclose(np.asarray(group.get_offsets())[:, 1], per_subject[i], atol=1e-12)
    path = save_figure(fig, tmp_path / "dots.pdf")
    data = path.read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-32:]
    with pytest.raises(ValueError, match=r"style must be one of \('bar', 'dot'\), got 'violin'"):
        plot_model_comparison(res, style="violin")


def test_significance_matrix_cells_are_the_significant_pairs(k92):
    res = rsa_evaluate(k92.models, k92.human_it, "corr")
    fig = plot_model_comparison(res, sort=True, correction="none")
    ax, axm = fig.axes
    names = [t.get_text() for t in axm.get_yticklabels()]
    assert names == [t.get_text() for t in ax.get_xticklabels()]  # the matrix follows the bars' order
    shown = axm.images[0].get_array()
    mean = dict(zip(res.names, res.mean))
    expected = np.zeros_like(shown)
    for a, b, sig in res.pairwise(correction="none")[["model_a", "model_b", "significant"]].itertuples(index=False):
        if sig:
            i, j = names.index(a), names.index(b)
            expected[i, j] = np.sign(mean[a] - mean[b])
            expected[j, i] = -expected[i, j]
    assert (expected != 0).sum() > 0 and (expected == 0).sum() > len(names)
    np.testing.assert_array_equal(shown, expected)
