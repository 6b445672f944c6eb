"""rdl_neuro: Representational Distance Learning (RDL) in PyTorch and model-brain RSA.

The core pieces are importable from their modules (``rdl_neuro.rdm``,
``rdl_neuro.compare``, ``rdl_neuro.adapters``, ...); the most used names are
re-exported here lazily so ``import rdl_neuro`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that owns it
_EXPORTS = {
    "compute_rdm": "rdm",
    "to_square": "rdm",
    "to_condensed": "rdm",
    "compare_rdms": "compare",
    "from_rsatoolbox": "adapters",
    "to_rsatoolbox": "adapters",
    "rdms_from_nifti": "adapters",
    "LayerRecorder": "features",
    "RDMTeacher": "teachers",
    "NetworkTeacher": "teachers",
    "RDLLoss": "losses",
    "KDLoss": "losses",
    "RKDLoss": "losses",
    "SPLoss": "losses",
    "CKALoss": "losses",
    "Trainer": "train",
    "layer_rdms": "evaluate",
    "rsa_table": "evaluate",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"rdl_neuro.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rdl_neuro' has no attribute {name!r}")
