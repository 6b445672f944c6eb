"""Figures from RSA tables, RDMs and training histories (matplotlib object API, no pyplot state).

Every function returns a ``matplotlib.figure.Figure`` (or draws into a given
``ax``); ``save_figure`` writes PNG, SVG or PDF by suffix, atomically.
"""
from __future__ import annotations

import inspect
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rsatoolbox.rdm import RDMs
from scipy.stats import rankdata

from rdl_neuro.io import atomic_write_bytes
from rdl_neuro.rdm.interop import rdm_names, stimulus_ids_of

__all__ = ["save_figure", "plot_rdm_comparison", "plot_layer_profile", "plot_mds", "plot_history", "figure_to_array"]

#: the file formats :func:`save_figure` writes, chosen by the path's suffix
FORMATS = (".png", ".svg", ".pdf")


def save_figure(fig: Figure | Axes, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .svg or .pdf) atomically.

    ``fig`` may also be an ``Axes`` (as returned by the plotting functions
    when given ``ax=``): its whole figure is written. The figure is rendered
    in memory and written with ``rdl_neuro.io.atomic_write_bytes`` (temporary
    file, then rename), so readers never see a half-written file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import matplotlib.pyplot as plt
    >>> from rdl_neuro.vis import save_figure
    >>> fig, ax = plt.subplots()
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_figure(fig, Path(folder) / "figures" / "empty.pdf")   # creates figures/
    ...     (path.name, path.is_file())
    ('empty.pdf', True)
    >>> plt.close(fig)
    """
    if isinstance(fig, Axes):
        fig = fig.figure
    if not hasattr(fig, "savefig"):
        raise TypeError(f"save_figure needs a matplotlib Figure or Axes, got {type(fig).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the figure format of {str(path)!r}: use one of {', '.join(FORMATS)}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix[1:], dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot(1, 1, 1)


def _rdm_titles(rdms: RDMs, titles: Sequence[str] | None) -> list[str]:
    if titles is not None:
        if len(titles) != rdms.n_rdm:
            raise ValueError(f"{len(titles)} titles for {rdms.n_rdm} RDMs")
        return list(titles)
    return rdm_names(rdms)


def plot_rdm_comparison(
    rdms: RDMs | Sequence[RDMs],
    *,
    sort_by: str | None = None,
    titles: Sequence[str] | None = None,
    rank_transform: bool = False,
    shared_scale: bool = True,
    cmap: str = "viridis",
    descriptor: str | None = None,
) -> Figure:
    """Several RDMs (student, teacher, brain...) side by side in the same stimulus order.

    Parameters
    ----------
    rdms : RDMs or sequence of RDMs
        Each RDM becomes a panel. A sequence is matched by
        ``pattern_descriptors[descriptor]`` to the first one's stimulus order
        (``None`` reads ``stimulus``, else ``index`` with a warning (``rdl_neuro.rdm.stimulus_ids_of``); a named descriptor must exist).
    sort_by : str, optional
        A pattern descriptor (e.g. ``category``): stimuli are sorted by it
        (stable) and its group boundaries are drawn as lines.
    titles : sequence of str, optional
        Panel titles; default from ``rdm_descriptors`` (name/layer/...).
    rank_transform : bool
        Show each RDM's ranks scaled to [0, 1] (comparable across measures).
    shared_scale : bool
        One colour scale for all panels (else one per panel).

    Examples
    --------
    >>> import torch
    >>> import matplotlib.pyplot as plt
    >>> from rdl_neuro.rdm import to_rsatoolbox
    >>> from rdl_neuro.vis import plot_rdm_comparison
    >>> rdms = to_rsatoolbox(torch.rand(2, 6), stimulus_ids=[0, 1, 2, 3], rdm_descriptors={"name": ["a", "b"]})
    >>> fig = plot_rdm_comparison(rdms, titles=["model", "brain"])
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['model', 'brain']
    >>> plt.close(fig)
    """
    if isinstance(rdms, RDMs):
        parts = [rdms]
    else:
        parts = list(rdms)
    if not parts:
        raise ValueError("no RDMs to plot")
    ref = parts[0]
    ref_ids = stimulus_ids_of(ref, descriptor)
    mats, names = [], []
    for part in parts:
        ids = stimulus_ids_of(part, descriptor)
        where = {sid: i for i, sid in enumerate(ids)}
        missing = [sid for sid in ref_ids if sid not in where]
        if missing:
            raise ValueError(f"RDMs lack stimulus ids of the first RDMs: {missing[:10]}")
        order = np.array([where[sid] for sid in ref_ids])
        m = part.get_matrices()[:, order][:, :, order]
        mats.extend(m)
        names.extend(_rdm_titles(part, None))
    if titles is not None:
        if len(titles) != len(mats):
            raise ValueError(f"{len(titles)} titles for {len(mats)} RDMs")
        names = list(titles)
    order = np.arange(len(ref_ids))
    groups = None
    if sort_by is not None:
        if sort_by not in ref.pattern_descriptors:
            raise KeyError(f"no pattern descriptor {sort_by!r}; have {sorted(ref.pattern_descriptors)}")
        labels = np.asarray(ref.pattern_descriptors[sort_by])
        # keep the groups in order of first appearance, stimuli stable within them
        first = {v: i for i, v in reversed(list(enumerate(labels)))}
        order = np.array(sorted(range(len(labels)), key=lambda i: (first[labels[i]], i)))
        groups = labels[order]
    shown = []
    for m in mats:
        m = m[order][:, order].astype(float)
        if rank_transform:
            iu = np.triu_indices(len(m), 1)
            vals = m[iu]
            ok = np.isfinite(vals)
            r = np.full_like(vals, np.nan)
            r[ok] = (rankdata(vals[ok]) - 1) / max(ok.sum() - 1, 1)
            m = np.zeros_like(m)
            m[iu] = r
            m = m + m.T
        shown.append(m)
    finite = np.concatenate([s[np.isfinite(s)] for s in shown])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    n = len(shown)
    fig = Figure(figsize=(3.6 * n + 0.8, 3.8))
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    image = None
    for i_ax, (ax, m, name) in enumerate(zip(axes, shown, names)):
        kw = {"vmin": vmin, "vmax": vmax} if shared_scale else {}
        image = ax.imshow(m, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name)
        ax.set_xlabel("stimulus" + (f" (by {sort_by})" if sort_by else ""))
        if i_ax == 0:  # the same order in every panel; a label per panel would run into the colour bars
            ax.set_ylabel("stimulus")
        if groups is not None:
            bounds = np.nonzero(groups[1:] != groups[:-1])[0] + 0.5
            for b in bounds:
                ax.axhline(b, color="white", lw=0.8)
                ax.axvline(b, color="white", lw=0.8)
            starts = np.concatenate([[0], bounds + 0.5]).astype(int)
            ends = np.concatenate([bounds + 0.5, [len(groups)]]).astype(int)
            ax.set_xticks((starts + ends - 1) / 2)
            ax.set_xticklabels([str(groups[s]) for s in starts], rotation=90, fontsize=7)
            ax.set_yticks((starts + ends - 1) / 2)
            # the same order in every panel: group names on the first panel's rows only, so panels don't overlap
            ax.set_yticklabels([str(groups[s]) for s in starts] if i_ax == 0 else [], fontsize=7)
        if not shared_scale:
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if shared_scale and image is not None:
        cbar = fig.colorbar(image, ax=axes, fraction=0.046 / max(1, n) * 2, pad=0.04)
        cbar.set_label("rank (scaled)" if rank_transform else "dissimilarity")
    return fig


def plot_layer_profile(table: pd.DataFrame, *, ax: Axes | None = None, title: str | None = None,
                       x: str = "model") -> Figure:
    """Evaluation per layer/model with 95% interval bars and the noise ceiling as a grey band.

    ``table`` is ``rsa_table``'s output (columns ``mean``, ``ci_low``,
    ``ci_high``, ``nc_lower``, ``nc_upper``, ``method``...).
    """
    for col in (x, "mean"):
        if col not in table.columns:
            raise KeyError(f"table lacks column {col!r} (have {list(table.columns)})")
    fig, ax = _new_axes(ax, (max(4.0, 0.7 * len(table) + 2), 3.6))
    pos = np.arange(len(table))
    means = table["mean"].to_numpy(float)
    if {"ci_low", "ci_high"} <= set(table.columns):
        low = means - table["ci_low"].to_numpy(float)
        high = table["ci_high"].to_numpy(float) - means
        yerr = np.vstack([np.nan_to_num(low), np.nan_to_num(high)])
    else:
        yerr = None
    if {"nc_lower", "nc_upper"} <= set(table.columns) and np.isfinite(table["nc_lower"]).any():
        lo, hi = float(np.nanmean(table["nc_lower"])), float(np.nanmean(table["nc_upper"]))
        ax.axhspan(lo, hi, color="0.8", zorder=0, label="noise ceiling")
    ax.bar(pos, means, color="tab:blue", zorder=2, label="model")
    if yerr is not None:
        ax.errorbar(pos, means, yerr=yerr, fmt="none", ecolor="black", capsize=3, zorder=3)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(pos)
    ax.set_xticklabels([str(v) for v in table[x]], rotation=45, ha="right")
    ax.set_xlabel(x)
    method = str(table["method"].iloc[0]) if "method" in table.columns and len(table) else "similarity"
    ax.set_ylabel(f"RDM {method} with brain")
    ax.set_title(title or "model-brain RSA")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _mds_precomputed_kwargs(mds_class: type) -> dict[str, str]:
    """Keywords for MDS on a precomputed dissimilarity matrix in old and new scikit-learn.

    scikit-learn 1.8 renamed ``dissimilarity`` to ``metric`` and announced a new
    default ``init``; naming both keeps the result the same and silences the warnings.
    """
    params = inspect.signature(mds_class).parameters
    if "metric_mds" in params:  # the new API: ``metric`` names the dissimilarity
        return {"metric": "precomputed", "init": "random"}
    return {"dissimilarity": "precomputed"}


def plot_mds(rdms: RDMs, *, index: int = 0, color_by: str | None = None, ax: Axes | None = None,
             random_state: int = 0, title: str | None = None) -> Figure:
    """2-D metric MDS of the stimuli of one RDM, coloured by a pattern descriptor."""
    from sklearn.manifold import MDS

    if not 0 <= index < rdms.n_rdm:
        raise IndexError(f"RDM index {index} out of range for {rdms.n_rdm} RDMs")
    d = rdms.get_matrices()[index].astype(float)
    if not np.isfinite(d).all():
        raise ValueError("MDS needs an RDM without NaN entries")
    mds = MDS(n_components=2, random_state=random_state, n_init=4, normalized_stress="auto",
              **_mds_precomputed_kwargs(MDS))
    xy = mds.fit_transform(d)
    fig, ax = _new_axes(ax, (4.6, 4.2))
    if color_by is not None:
        if color_by not in rdms.pattern_descriptors:
            raise KeyError(f"no pattern descriptor {color_by!r}; have {sorted(rdms.pattern_descriptors)}")
        labels = np.asarray(rdms.pattern_descriptors[color_by])
        for value in dict.fromkeys(labels.tolist()):
            sel = labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=18, label=str(value))
        ax.legend(fontsize=7, loc="best", title=color_by)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=18)
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.set_title(title or f"MDS of {_rdm_titles(rdms, None)[index]}")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


# plot_history's panels: (title, y label), in display order
_HISTORY_PANELS = {
    "loss": ("loss terms", "loss"),
    "accuracy": ("accuracy", "accuracy"),
    "rdm": ("student-teacher RDM correlation", "Pearson r"),
    "heldout": ("student-brain RDMs, held-out stimuli", "RDM comparison"),
    "schedule": ("learning rate and loss weights", "value (log scale)"),
    "other": ("other metrics", "value"),
}


def _history_panel(column: str) -> str:
    """Which ``plot_history`` panel a history column belongs to (see ``_HISTORY_PANELS``)."""
    name = column.lower()
    if "acc" in name:
        return "accuracy"
    if name.startswith("rdm_corr"):
        return "rdm"
    if name.startswith("heldout_"):  # HeldOutProbe: new stimuli (heldout_stim_*) and new subjects too (heldout_*)
        return "heldout"
    if name == "lr" or name.startswith("weight_"):
        return "schedule"
    # "loss", "loss_<term>", "val_loss", sub-terms such as "rdl/hidden1", "train_<term>"
    if "loss" in name or "/" in name or name.startswith(("train_", "val_")):
        return "loss"
    return "other"


def plot_history(history: pd.DataFrame, *, x: str = "epoch") -> Figure:
    """Training curves from a per-epoch DataFrame (``Trainer.fit``'s history): loss terms,
    accuracies, the student-teacher RDM correlation, the student-brain comparison on held-out stimuli
    (``HeldOutProbe``), the learning rate and loss weights, and any
    other numeric columns, each kind in its own panel (up to three panels a row)."""
    if x not in history.columns:
        history = history.reset_index(drop=True).assign(**{x: np.arange(len(history))})
    numeric = [c for c in history.columns if c != x and pd.api.types.is_numeric_dtype(history[c])
               and not pd.api.types.is_bool_dtype(history[c]) and history[c].notna().any()]
    if not numeric:
        raise ValueError(f"history has no numeric columns to plot besides {x!r}: {list(history.columns)}")
    groups: dict[str, list[str]] = {kind: [] for kind in _HISTORY_PANELS}
    for c in numeric:
        groups[_history_panel(c)].append(c)
    panels = [(k, v) for k, v in groups.items() if v]
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows))
    for i, (kind, cols) in enumerate(panels):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        for c in cols:
            ax.plot(history[x], history[c], marker="o", ms=3, label=c)
        title, ylabel = _HISTORY_PANELS[kind]
        if kind == "schedule" and bool((history[cols] > 0).all().all()):
            ax.set_yscale("log")  # learning rates and weights span decades
        else:
            ylabel = ylabel.replace(" (log scale)", "")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` with the Agg canvas and return its RGBA pixels ``(H, W, 4)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()

