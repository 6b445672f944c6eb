"""Figures: valid PNG/SVG/PDF files, non-blank images, labelled axes."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from rsatoolbox.rdm import RDMs

from rdl_neuro.vis import (figure_to_array, plot_history, plot_layer_profile, plot_mds, plot_rdm_comparison,
                           save_figure)


def _check_axes(fig):
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel()
    assert figure_to_array(fig)[..., :3].std() > 0


@pytest.fixture
def k92(kriegeskorte_dir):
    from rdl_neuro.data.loaders import load_kriegeskorte92

    return load_kriegeskorte92(kriegeskorte_dir)


def test_rdm_comparison_92_images_sorted_by_category(k92, tmp_path):
    fig = plot_rdm_comparison([k92.models[[4]], k92.monkey_it, k92.human_it_mean], sort_by="category",
                              rank_transform=True)
    _check_axes(fig)
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles[0] == "HMAX" and titles[1].startswith("mIT") and titles[2].startswith("hIT")
    first = fig.axes[0]
    # category boundaries: 5 horizontal + 5 vertical lines between the 6 categories
    assert len(first.lines) == 10
    assert [t.get_text() for t in first.get_yticklabels()][0] == "human bodypart"
    # the image rows follow the category order
    image = first.images[0].get_array()
    assert image.shape == (92, 92) and np.allclose(np.diag(image), 0)
    path = save_figure(fig, tmp_path / "rdms.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rdm_comparison_errors(k92):
    with pytest.raises(KeyError, match="no pattern descriptor 'kind'"):
        plot_rdm_comparison(k92.human_it_mean, sort_by="kind")
    other = RDMs(k92.human_it_mean.get_vectors(), pattern_descriptors={"stimulus": np.arange(1, 93)})
    with pytest.raises(ValueError, match="lack stimulus ids"):
        plot_rdm_comparison([k92.human_it_mean, other])


def test_layer_profile_svg(tmp_path):
    table = pd.DataFrame({"model": ["fc1", "fc2", "fc3"], "method": "corr", "mean": [0.1, 0.25, 0.2],
                          "ci_low": [0.05, 0.2, 0.1], "ci_high": [0.15, 0.3, 0.3],
                          "nc_lower": 0.35, "nc_upper": 0.5})
    fig = plot_layer_profile(table)
    _check_axes(fig)
    ax = fig.axes[0]
    assert "corr" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2", "fc3"]
    path = save_figure(fig, tmp_path / "sub" / "profile.svg")
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert not list(tmp_path.joinpath("sub").glob(".*tmp"))  # no temporary left behind


def test_mds_pdf(k92, tmp_path):
    fig = plot_mds(k92.human_it_mean, color_by="category")
    _check_axes(fig)
    assert len(fig.axes[0].collections) == 6  # one scatter per category
    path = save_figure(fig, tmp_path / "mds.pdf")
    data = path.read_bytes()
    assert data[:5] == b"%PDF-" and b"%%EOF" in data[-32:]


def test_history_groups_columns(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4], "train_ce": [0.9, 0.5, 0.3],
                            "train_rdl": [0.1, 0.1, 0.1], "val_accuracy": [0.5, 0.6, 0.7],
                            "train_accuracy": [0.55, 0.7, 0.8], "rdm_corr": [0.1, 0.2, 0.3], "note": list("abc")})
    fig = plot_history(history)
    _check_axes(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss terms", "accuracy", "student-teacher RDM correlation"]
    assert len(fig.axes[0].lines) == 3 and len(fig.axes[1].lines) == 2 and len(fig.axes[2].lines) == 1
    # a Trainer history: sub-terms are losses; the schedule gets a log-scale panel; two rows
    trainer_history = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.8], "loss_rdl": [0.3, 0.2],
                                    "rdl/hidden1": [0.3, 0.2], "train_acc": [0.5, 0.6], "rdm_corr_hidden1": [0.1, 0.4],
                                    "lr": [0.01, 0.001], "weight_rdl": [0.5, 1.0], "grad_norm": [3.0, 2.0]})
    fig = plot_history(trainer_history)
    _check_axes(fig)
    panels = {ax.get_title(): [line.get_label() for line in ax.lines] for ax in fig.axes}
    assert panels == {"loss terms": ["loss", "loss_rdl", "rdl/hidden1"], "accuracy": ["train_acc"],
                      "student-teacher RDM correlation": ["rdm_corr_hidden1"],
                      "learning rate and loss weights": ["lr", "weight_rdl"], "other metrics": ["grad_norm"]}
    assert fig.axes[3].get_yscale() == "log"
    assert fig.get_size_inches()[1] > 6  # five panels: two rows
    save_figure(fig, tmp_path / "h.png")
    with pytest.raises(ValueError, match="no numeric columns"):
        plot_history(pd.DataFrame({"epoch": [1], "note": ["x"]}))


def test_save_figure_rejects_unknown_suffix(tmp_path):
    fig = plot_history(pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5]}))
    with pytest.raises(ValueError, match="figure format"):
        save_figure(fig, tmp_path / "x.jpg")
    assert not list(tmp_path.iterdir())


def test_rdm_comparison_named_descriptor_must_exist():
    """A descriptor the caller names is never replaced by positions (the one rule of stimulus_ids_of)."""
    import torch
    from rdl_neuro.rdm import to_rsatoolbox
    rdms = to_rsatoolbox(torch.rand(2, 6), stimulus_ids=[0, 1, 2, 3], rdm_descriptors={"name": ["a", "b"]})
    with pytest.raises((KeyError, ValueError), match="stimuli"):
        plot_rdm_comparison(rdms, descriptor="stimuli")
