"""Statistical inference on model-brain comparisons, equal to rsatoolbox's.

=====================================  ========================================
``rdl_neuro.inference.evaluate``       ``rsa_evaluate``, ``rsa_table``, ``RSAResult``
``rdl_neuro.inference.resampling``     bootstrap draws, their pair weights, ``fold_subject_bootstrap``
``rdl_neuro.inference.bootstrap``      the general and the weighted-moment bootstrap
``rdl_neuro.inference.kendall``        the Kendall tau bootstrap
``rdl_neuro.inference.noise_ceiling``  ``pool_rdm``, ``noise_ceiling_bounds``, ``leave_one_out_rdms``
``rdl_neuro.inference.dual``           ``rsa_dual_bootstrap`` (subjects and stimuli at once)
``rdl_neuro.inference.crossval``       ``crossval``, ``bootstrap_crossval``, ``cv_noise_ceiling``, ``sets_k_fold``
``rdl_neuro.inference.cv_moments``     the crossvalidation engine on weighted moments (``corr``, ``cosine``)
``rdl_neuro.inference.tests``          pairwise tests, tests against 0 and the ceiling, corrections
=====================================  ========================================
"""
from rdl_neuro.inference.crossval import (BOOT_TYPES, CVFolds, bootstrap_crossval, crossval, cv_noise_ceiling,
                                          draw_cv_folds, prepare_models, sets_k_fold)
from rdl_neuro.inference.dual import dual_bootstrap_variances, rsa_dual_bootstrap
from rdl_neuro.inference.evaluate import (BOOTSTRAPS, CV_METHODS, RSAResult, build_result, prepare_rdms, rsa_evaluate,
                                          rsa_table, run_bootstrap)
from rdl_neuro.inference.noise_ceiling import leave_one_out_rdms, noise_ceiling_bounds, pool_rdm
from rdl_neuro.inference.resampling import fold_subject_bootstrap
from rdl_neuro.inference.tests import (CORRECTIONS, TEST_TYPES, correct_pvalues, extract_variances, model_tests,
                                       noise_pvalues, pair_pvalues, paired_unit_tests, pairwise_contrast,
                                       pairwise_tests, significant_pvalues, zero_pvalues)

__all__ = ["BOOTSTRAPS", "CV_METHODS", "RSAResult", "build_result", "prepare_rdms", "rsa_evaluate", "rsa_table",
           "run_bootstrap", "rsa_dual_bootstrap", "dual_bootstrap_variances",
           "noise_ceiling_bounds", "pool_rdm", "leave_one_out_rdms", "fold_subject_bootstrap", "CORRECTIONS", "TEST_TYPES", "correct_pvalues", "extract_variances",
           "model_tests", "noise_pvalues", "pair_pvalues", "paired_unit_tests", "pairwise_contrast",
           "pairwise_tests", "significant_pvalues", "zero_pvalues", "BOOT_TYPES", "CVFolds", "bootstrap_crossval",
           "crossval", "cv_noise_ceiling", "draw_cv_folds", "prepare_models", "sets_k_fold"]
