"""Statistical inference on model-brain comparisons, equal to rsatoolbox's.

=====================================  ========================================
``rdl_neuro.inference.evaluate``       ``rsa_evaluate``, ``rsa_table``, ``RSAResult``
``rdl_neuro.inference.resampling``     bootstrap draws and their pair weights
``rdl_neuro.inference.bootstrap``      the general and the weighted-moment bootstrap
``rdl_neuro.inference.kendall``        the Kendall tau bootstrap
``rdl_neuro.inference.noise_ceiling``  ``pool_rdm``, ``noise_ceiling_bounds``
=====================================  ========================================
"""
from rdl_neuro.inference.evaluate import BOOTSTRAPS, RSAResult, extract_variances, rsa_evaluate, rsa_table
from rdl_neuro.inference.noise_ceiling import noise_ceiling_bounds, pool_rdm

__all__ = ["BOOTSTRAPS", "RSAResult", "extract_variances", "rsa_evaluate", "rsa_table", "noise_ceiling_bounds",
           "pool_rdm"]
