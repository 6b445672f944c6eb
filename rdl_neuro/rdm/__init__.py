"""RDMs in torch: computing them, comparing them, ranking, and rsatoolbox interop.

==============================  ===============================================
``rdl_neuro.rdm.calc``          ``compute_rdm``, ``gram_to_rdm``, condensed <-> square, ``subset_rdms``
``rdl_neuro.rdm.compare``       ``compare_rdms`` (rsatoolbox's comparison methods)
``rdl_neuro.rdm.ranks``         ``rankdata``, ``kendall_tau``, ``tau_from_counts``
``rdl_neuro.rdm.interop``       rsatoolbox ``RDMs`` <-> tensors with stimulus ids
==============================  ===============================================
"""
from rdl_neuro.rdm.calc import (METHODS, RSATOOLBOX_MEASURE, check_method, compute_rdm, gram_to_rdm,
                                n_stimuli_from_length, subset_rdms, to_condensed, to_square, triu_indices)
from rdl_neuro.rdm.compare import COMPARE_METHODS, DIFFERENTIABLE_METHODS, RANK_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names, stimulus_ids_of, to_rsatoolbox
from rdl_neuro.rdm.ranks import kendall_tau, rankdata, tau_from_counts

__all__ = ["METHODS", "RSATOOLBOX_MEASURE", "COMPARE_METHODS", "DIFFERENTIABLE_METHODS", "RANK_METHODS",
           "check_method", "compute_rdm", "gram_to_rdm", "n_stimuli_from_length", "subset_rdms", "to_condensed",
           "to_square", "triu_indices", "compare_rdms", "from_rsatoolbox", "to_rsatoolbox", "stimulus_ids_of",
           "rdm_names", "kendall_tau", "rankdata", "tau_from_counts"]
