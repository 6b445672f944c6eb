"""Figures from RDMs, evaluation tables and training histories; returned to the caller, saved as PNG, SVG or PDF."""
from rdl_neuro.vis.figures import (FORMATS, figure_to_array, plot_history, plot_layer_profile, plot_mds,
                                   plot_rdm_comparison, save_figure)

__all__ = ["FORMATS", "figure_to_array", "plot_history", "plot_layer_profile", "plot_mds", "plot_rdm_comparison",
           "save_figure"]
