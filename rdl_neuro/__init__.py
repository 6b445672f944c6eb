"""rdl_neuro: Representational Distance Learning (RDL) in PyTorch and model-brain RSA.

The package follows the stages of the field's pipeline (see docs/architecture.md):
``rdl_neuro.data`` (stimuli, loaders, fMRI), ``rdl_neuro.rdm`` (RDMs and their
comparisons), ``rdl_neuro.model`` (networks' layers and their RDMs),
``rdl_neuro.inference`` (statistics), ``rdl_neuro.vis`` (figures),
``rdl_neuro.train`` (teachers, losses, the Trainer) and ``rdl_neuro.cli``.
The most used names are re-exported here lazily so ``import rdl_neuro`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

#: the package version (the one place it is set; pyproject.toml reads it from here)
__version__ = "0.2.0"

# public name -> module that owns it
_EXPORTS = {
    "compute_rdm": "rdm",
    "to_square": "rdm",
    "to_condensed": "rdm",
    "compare_rdms": "rdm",
    "from_rsatoolbox": "rdm",
    "to_rsatoolbox": "rdm",
    "rdms_from_nifti": "data",
    "StimulusDataset": "data",
    "LayerRecorder": "model",
    "layer_rdms": "model",
    "RDMTeacher": "train",
    "NetworkTeacher": "train",
    "RDLLoss": "train",
    "KDLoss": "train",
    "RKDLoss": "train",
    "SPLoss": "train",
    "CKALoss": "train",
    "Trainer": "train",
    "rsa_table": "inference",
    "rsa_evaluate": "inference",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"rdl_neuro.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rdl_neuro' has no attribute {name!r}")
