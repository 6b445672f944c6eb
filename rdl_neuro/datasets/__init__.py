"""Stimulus datasets, coverage-aware batch samplers and loaders of real data sets.

``StimulusDataset`` and ``CoverageBatchSampler`` live in ``datasets.stimulus``;
the loaders (digits, MNIST, CIFAR-100, the 92-image set) in ``datasets.loaders``.
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"rdl_neuro.datasets.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rdl_neuro.datasets' has no attribute {name!r}")
