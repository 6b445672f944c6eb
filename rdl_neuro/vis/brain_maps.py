"""Brain maps drawn by nilearn: a statistical map over an anatomical image, or a glass brain.

``plot_brain_map`` takes a 3D map (a NIfTI image or path, e.g. a searchlight
r, t or p map) and returns a ``matplotlib.figure.Figure`` (no pyplot state),
to be saved with ``rdl_neuro.vis.save_figure`` as PNG, SVG or PDF.
"""
from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_brain_map", "BRAIN_MAP_KINDS"]

#: kinds of brain map figures
BRAIN_MAP_KINDS = ("stat_map", "glass_brain")


def plot_brain_map(
    stat_map: Any,
    *,
    kind: Literal["stat_map", "glass_brain"] = "stat_map",
    bg_img: Any = None,
    threshold: float | None = None,
    title: str | None = None,
    display_mode: str = "ortho",
    cut_coords: Any = None,
    cmap: str | None = None,
    vmax: float | None = None,
    figsize: tuple[float, float] = (8.0, 3.2),
) -> Figure:
    """Draw a 3D brain map with nilearn.

    Parameters
    ----------
    stat_map : NIfTI image or path
        A 3D map; NaN (no value, e.g. outside the searchlight centres) is drawn as 0.
    kind : {"stat_map", "glass_brain"}
        ``stat_map``: slices of the map over ``bg_img`` (nilearn's ``plot_stat_map``);
        ``glass_brain``: maximum-intensity projections on a transparent brain
        outline (``plot_glass_brain``; the outline is MNI space, so use it for
        normalised maps).
    bg_img : NIfTI image, path, "MNI152" or None
        Background of ``stat_map``: the subject's anatomical (or mean
        functional) image in the map's space, nilearn's bundled MNI152
        template, or none.
    threshold : float, optional
        Values with ``|value| <= threshold`` are not drawn (default: every non-zero value).
    title : str, optional
    display_mode : str
        nilearn's display mode: ``"ortho"``, ``"x"``, ``"y"``, ``"z"``, ``"mosaic"``, ...
    cut_coords : optional
        nilearn's cut coordinates (mm); default: at the map's peak (``stat_map``)
        or nilearn's choice.
    cmap : str, optional
        Colour map (default nilearn's).
    vmax : float, optional
        Upper end of the colour scale (default: the largest absolute value).
    figsize : (float, float)

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> data = np.zeros((20, 20, 20)); data[8:12, 8:12, 8:12] = 0.5
    >>> fig = plot_brain_map(nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1])), threshold=0.1, title="r")
    >>> len(fig.axes) > 0
    True
    """
    import nibabel as nib
    from nilearn import plotting

    if kind not in BRAIN_MAP_KINDS:
        raise ValueError(f"kind must be one of {BRAIN_MAP_KINDS}, got {kind!r}")
    if isinstance(stat_map, (str, os.PathLike)):
        if not os.path.isfile(stat_map):
            raise FileNotFoundError(f"brain map file not found: {stat_map}")
        stat_map = nib.load(stat_map)
    if not isinstance(stat_map, nib.spatialimages.SpatialImage):
        raise TypeError(f"stat_map must be a NIfTI image or a path to one, got {type(stat_map).__name__}")
    data = np.asarray(stat_map.dataobj, dtype=np.float64)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"stat_map must be a 3D image, got shape {data.shape}")
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("stat_map has no finite value to draw")
    data = np.where(finite, data, 0.0)
    image = nib.Nifti1Image(data, stat_map.affine)
    peak = float(np.abs(data).max())
    if threshold is not None and threshold >= peak:
        raise ValueError(f"threshold {threshold:g} hides the whole map (largest absolute value {peak:g})")
    fig = Figure(figsize=figsize)
    common: dict[str, Any] = {"display_mode": display_mode, "figure": fig, "title": title,
                              "threshold": 1e-12 if threshold is None else threshold,
                              "vmax": vmax if vmax is not None else peak, "colorbar": True}
    if cmap is not None:
        common["cmap"] = cmap
    if kind == "stat_map":
        if isinstance(bg_img, str) and bg_img == "MNI152":
            from nilearn.datasets import load_mni152_template

            bg_img = load_mni152_template()
        if cut_coords is None and display_mode == "ortho":
            # through the map's peak rather than nilearn's centre of mass
            ijk = np.unravel_index(int(np.argmax(np.abs(data))), data.shape)
            cut_coords = tuple(nib.affines.apply_affine(stat_map.affine, ijk))
        plotting.plot_stat_map(image, bg_img=bg_img, cut_coords=cut_coords, black_bg=False, draw_cross=False,
                               **common)
    else:
        plotting.plot_glass_brain(image, cut_coords=cut_coords, plot_abs=False, **common)
    return fig
