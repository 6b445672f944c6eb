"""Figures from RDMs, evaluation tables, training histories and brain maps (nilearn); returned to the caller, saved as PNG, SVG or PDF."""
from rdl_neuro.vis.brain_maps import BRAIN_MAP_KINDS, plot_brain_map
from rdl_neuro.vis.figures import (FORMATS, figure_to_array, plot_history, plot_layer_profile, plot_mds,
                                   plot_rdm_comparison, save_figure)
from rdl_neuro.vis.model_comparison import plot_model_comparison

__all__ = ["BRAIN_MAP_KINDS", "plot_brain_map", "FORMATS", "figure_to_array", "plot_history", "plot_layer_profile",
           "plot_mds", "plot_rdm_comparison", "save_figure", "plot_model_comparison"]
