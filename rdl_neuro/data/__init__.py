"""Stimulus sets: datasets with stimulus ids, coverage-aware samplers, loaders, fMRI.

==============================  ===============================================
``rdl_neuro.data.stimulus``     ``StimulusDataset``, ``CoverageBatchSampler``, ``UNCOVERED``
``rdl_neuro.data.loaders``      digits, MNIST, CIFAR-100, the 92-image set; ``stratified_split``
``rdl_neuro.data.nifti``        NIfTI betas + mask/atlas -> rsatoolbox ``Dataset`` -> ``RDMs``
``rdl_neuro.data.ids``          the one rule for stimulus ids
==============================  ===============================================

Names are imported lazily so that ``import rdl_neuro.data`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StimulusDataset": "stimulus",
    "CoverageBatchSampler": "stimulus",
    "UNCOVERED": "stimulus",
    "load_digits": "loaders",
    "load_mnist": "loaders",
    "load_cifar100": "loaders",
    "load_kriegeskorte92": "loaders",
    "stratified_split": "loaders",
    "rdms_from_nifti": "nifti",
    "DroppedVoxelsWarning": "nifti",
    "plain_id": "ids",
    "plain_ids": "ids",
    "duplicate_ids": "ids",
    "check_id_kinds": "ids",
    "id_tensor": "ids",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"rdl_neuro.data.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rdl_neuro.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
