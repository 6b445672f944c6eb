"""The model-comparison figure: evaluations with error bars, noise ceiling and significance.

One bar (or dot) per model (its mean evaluation, rsatoolbox's ``get_means``) with SEM or
95% interval bars, the noise ceiling as a grey band, the tests against 0 and
against the noise ceiling marked on each bar, per-subject points on request,
and the pairwise comparisons as a compact significance matrix beside it or as
Nili-style lines above the bars (Nili et al. 2014; rsatoolbox's
``plot_model_comparison``). All tests come from ``rdl_neuro.inference.tests``
with the chosen correction.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from rdl_neuro.inference.evaluate import RSAResult
from rdl_neuro.inference.tests import model_tests, pairwise_tests

__all__ = ["plot_model_comparison"]

PAIRWISE_STYLES = ("matrix", "lines", None)
MODEL_STYLES = ("bar", "dot")


def _unit_points(result: RSAResult) -> np.ndarray:
    """``(k, n_units)`` per-subject (or per-fold) evaluations; errors when the result has none."""
    evals = result.rsatoolbox_evaluations()
    if evals.ndim != 3 or evals.shape[0] != 1:
        raise ValueError(f"points=True needs one evaluation per subject or fold (a fixed or crossvalidated result); "
                         f"this {result.cv_method} result has evaluations of shape {evals.shape}")
    return evals[0]


def plot_model_comparison(result: RSAResult, *, test_type: str = "t-test", correction: str = "fdr",
                          alpha: float = 0.05, error_bars: str = "sem", pairwise: str | None = "matrix",
                          points: bool = False, sort: bool = False, title: str | None = None,
                          style: str = "bar") -> Figure:
    """Bar (or dot) chart of model evaluations with noise ceiling, tests against 0 / the ceiling and pairwise tests.

    Parameters
    ----------
    result : RSAResult
        From ``rsa_evaluate``, ``rsa_dual_bootstrap`` or
        ``RSAResult.from_rsatoolbox``.
    test_type : "t-test", "bootstrap" or "ranksum"
    correction : "fdr", "bonferroni" or "none"
        For each family: the pairs, the tests against 0, the tests against
        the ceiling.
    alpha : float
    error_bars : "sem", "ci" or None
        SEM or the 95% interval of the result.
    pairwise : "matrix", "lines" or None
        ``matrix``: a k x k panel, cell (row a, column b) green where a is
        significantly better than b, red where worse. ``lines``: a line above
        the bars from a to b for each significant pair, marked at the better
        model.
    points : bool
        Draw each subject's (fold's) evaluation as a dot (fixed or
        crossvalidated results).
    sort : bool
        Order the models by mean evaluation, best first.
    title : str, optional
    style : "bar" or "dot"
        A bar per model, or a dot (clearer with many models or with
        evaluations near or below 0).

    Returns
    -------
    Figure
        Save with ``rdl_neuro.vis.save_figure``. Marks: a white triangle at
        the base of a bar whose evaluation is significantly above 0; a grey
        downward triangle at the ceiling's lower bound where a model is
        significantly below it.
    """
    if pairwise not in PAIRWISE_STYLES:
        raise ValueError(f"pairwise must be one of {PAIRWISE_STYLES}, got {pairwise!r}")
    if error_bars not in ("sem", "ci", None):
        raise ValueError(f"error_bars must be 'sem', 'ci' or None, got {error_bars!r}")
    if style not in MODEL_STYLES:
        raise ValueError(f"style must be one of {MODEL_STYLES}, got {style!r}")
    k = len(result.names)
    order = np.argsort(-result.mean, kind="stable") if sort else np.arange(k)
    names = [result.names[i] for i in order]
    mean = result.mean[order]
    has_var = result.model_var is not None
    per_model = model_tests(result, test_type, correction, alpha) if has_var or test_type != "t-test" else None
    pairs = pairwise_tests(result, test_type, correction, alpha) if k > 1 and pairwise and per_model is not None \
        else None

    width = max(5.0, 0.6 * k + 2.5) + (0.45 * k + 1.2 if pairwise == "matrix" else 0)
    fig = Figure(figsize=(width, 4.8))
    if pairwise == "matrix":
        grid = fig.add_gridspec(1, 2, width_ratios=[max(5.0, 0.6 * k + 2.5), 0.45 * k + 1.2])
        ax, axm = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    else:
        ax, axm = fig.add_subplot(1, 1, 1), None
    pos = np.arange(k)
    if np.isfinite(result.nc_lower):
        ax.axhspan(result.nc_lower, result.nc_upper, color="0.82", zorder=0, label="noise ceiling")
    if style == "bar":
        ax.bar(pos, mean, color="tab:blue", zorder=2, width=0.7, label="model")
    else:
        ax.plot(pos, mean, "o", color="tab:blue", ms=8, zorder=3, label="model")
    if error_bars and has_var:
        if error_bars == "sem":
            yerr = np.vstack([result.sem[order], result.sem[order]])
        else:
            yerr = np.vstack([mean - result.ci_low[order], result.ci_high[order] - mean])
        ax.errorbar(pos, mean, yerr=np.nan_to_num(yerr), fmt="none", ecolor="black", capsize=3, lw=1.2, zorder=4)
    if points:
        units = _unit_points(result)[order]
        jitter = np.linspace(-0.2, 0.2, units.shape[1])
        for i in range(k):
            ax.scatter(pos[i] + jitter, units[i], s=9, color="black", alpha=0.55, zorder=5,
                       label="subjects" if i == 0 else None)
    if per_model is not None:
        above = per_model["above_zero"].to_numpy()[order]
        below = per_model["below_noise_ceiling"].to_numpy()[order]
        ax.scatter(pos[above], np.zeros(above.sum()), marker="^", s=55, color="white", edgecolor="black",
                   lw=0.6, zorder=6, label="> 0")
        if np.isfinite(result.nc_lower):
            ax.scatter(pos[below], np.full(below.sum(), result.nc_lower), marker="v", s=55, color="0.45",
                       zorder=6, label="< noise ceiling")
    if pairs is not None and pairwise == "lines":
        _draw_lines(ax, pairs, names, mean)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_xlabel("model")
    ax.set_ylabel(f"RDM {result.method} with brain")
    corr_word = {"fdr": "FDR", "bonferroni": "Bonferroni", "none": "uncorrected"}[correction]
    ax.set_title(title or f"model comparison ({result.cv_method}, {test_type}, {corr_word} q/alpha = {alpha:g})",
                 fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    if axm is not None:
        _draw_matrix(axm, pairs, names, mean)
    fig.tight_layout()
    return fig


def _significance_matrix(pairs, names: list[str], mean: np.ndarray) -> np.ndarray:
    """``(k, k)``: +1 where row beats column significantly, -1 where it loses, 0 otherwise."""
    index = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(names), len(names)))
    for a, b, sig in zip(pairs["model_a"], pairs["model_b"], pairs["significant"]):
        if sig:
            i, j = index[a], index[b]
            sign = 1.0 if mean[i] > mean[j] else -1.0
            out[i, j], out[j, i] = sign, -sign
    return out


def _draw_matrix(axm, pairs, names: list[str], mean: np.ndarray) -> None:
    k = len(names)
    sig = _significance_matrix(pairs, names, mean) if pairs is not None else np.zeros((k, k))
    axm.imshow(sig, cmap=ListedColormap(["#d6604d", "#f7f7f7", "#4dac26"]), vmin=-1, vmax=1)
    axm.set_xticks(range(k))
    axm.set_yticks(range(k))
    axm.set_xticklabels(names, rotation=90, fontsize=7)
    axm.set_yticklabels(names, fontsize=7)
    axm.set_xlabel("column model")
    axm.set_title("row vs column:\ngreen better, red worse", fontsize=8)
    for i in range(k):
        axm.text(i, i, "·", ha="center", va="center", color="0.5")


def _draw_lines(ax, pairs, names: list[str], mean: np.ndarray) -> None:
    """Nili-style: one line per significant pair above the bars, a dot at the better model."""
    index = {n: i for i, n in enumerate(names)}
    low, top = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= top]
    top = float(np.nanmax(np.append(mean, top)))
    step = 0.04 * max(top, 1e-9)
    level = top + step
    for a, b, sig in zip(pairs["model_a"], pairs["model_b"], pairs["significant"]):
        if not sig:
            continue
        i, j = index[a], index[b]
        ax.plot([i, j], [level, level], color="0.3", lw=1, gid="pair")
        better = i if mean[i] > mean[j] else j
        ax.plot([better], [level], marker="o", ms=3, color="0.1")
        level += step
    # the lines stack above the evaluations: no value ticks there, which would read as evaluations
    ax.set_yticks(ticks)
