"""Brain maps drawn by nilearn: valid PNG/SVG/PDF files, the map's values on screen, clear errors."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest

from rdl_neuro.vis import figure_to_array, plot_brain_map, save_figure

AFFINE = np.array([[3.0, 0, 0, -30], [0, 3.0, 0, -36], [0, 0, 3.0, -27], [0, 0, 0, 1]])


def blob_map(peak=(10, 12, 9), value=0.5) -> nib.Nifti1Image:
    """NaN outside a ball (as a searchlight map outside its centres), a peak of ``value`` inside."""
    data = np.full((20, 22, 18), np.nan)
    radius = np.sqrt(((np.indices(data.shape) - np.array(peak)[:, None, None, None]) ** 2).sum(axis=0))
    data[radius < 8] = 0.01
    data[radius < 3] = value - 0.1 * radius[radius < 3]
    return nib.Nifti1Image(data, AFFINE)


def anatomy() -> nib.Nifti1Image:
    radius = np.sqrt(((np.indices((20, 22, 18)) - np.array([10, 11, 9])[:, None, None, None]) ** 2).sum(axis=0))
    return nib.Nifti1Image(100 * np.exp(-(radius / 9) ** 2), AFFINE)


def _red_pixels(fig) -> int:
    rgb = figure_to_array(fig)[..., :3].astype(int)
    return int(((rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).sum())


def test_stat_map_over_anatomy_png(tmp_path):
    fig = plot_brain_map(blob_map(), bg_img=anatomy(), threshold=0.1, title="searchlight r")
    assert len(fig.axes) >= 4  # three slices and a colour bar
    # the cuts go through the peak voxel (10, 12, 9) -> (0, 0, 0) mm
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"x=0", "y=0", "z=0"} <= texts and "searchlight r" in texts
    assert _red_pixels(fig) > 50  # the positive blob is drawn in the map's warm colours
    path = save_figure(fig, tmp_path / "map.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_threshold_hides_weak_values():
    weak = plot_brain_map(blob_map(value=0.5), threshold=0.45)
    strong = plot_brain_map(blob_map(value=0.5), threshold=0.1)
    assert 0 < _red_pixels(weak) < _red_pixels(strong)


def test_glass_brain_svg_and_pdf(tmp_path):
    fig = plot_brain_map(blob_map(), kind="glass_brain", threshold=0.1, title="glass brain")
    assert _red_pixels(fig) > 20
    root = ET.parse(save_figure(fig, tmp_path / "glass.svg")).getroot()
    assert root.tag.endswith("svg")
    data = save_figure(fig, tmp_path / "glass.pdf").read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-32:]


def test_stat_map_over_the_bundled_mni_template():
    fig = plot_brain_map(blob_map(), bg_img="MNI152", display_mode="z", cut_coords=[0], threshold=0.1)
    assert figure_to_array(fig)[..., :3].std() > 0


def test_brain_map_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="brain map file not found"):
        plot_brain_map(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match="kind must be one of"):
        plot_brain_map(blob_map(), kind="surface")
    with pytest.raises(ValueError, match=r"threshold 0\.9 hides the whole map \(largest absolute value 0\.5\)"):
        plot_brain_map(blob_map(), threshold=0.9)
    with pytest.raises(ValueError, match="no finite value"):
        plot_brain_map(nib.Nifti1Image(np.full((4, 4, 4), np.nan), AFFINE))
    with pytest.raises(ValueError, match="must be a 3D image"):
        plot_brain_map(nib.Nifti1Image(np.zeros((4, 4, 4, 2)), AFFINE))
