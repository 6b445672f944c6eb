"""The examples in the docstrings run, and say what they print.

Every module of the package (private ones too; ``__main__`` excepted, as it runs
the command line) is imported and its docstring examples run with doctest, one
test per module. Examples are short and seeded where they draw random numbers;
outputs compare with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``.
"""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import matplotlib
import numpy as np
import pytest
import torch

import rdl_neuro

matplotlib.use("Agg")

MODULES = sorted(info.name for info in pkgutil.walk_packages(rdl_neuro.__path__, "rdl_neuro.")
                 if not info.name.endswith("__main__")) + ["rdl_neuro"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# the public functions and classes whose docstrings must carry a runnable example
MUST_HAVE_EXAMPLES = (
    "rdl_neuro.rdm.compute_rdm", "rdl_neuro.rdm.to_square", "rdl_neuro.rdm.compare_rdms",
    "rdl_neuro.rdm.to_rsatoolbox", "rdl_neuro.rdm.rankdata", "rdl_neuro.model.layer_rdms",
    "rdl_neuro.model.build_model", "rdl_neuro.model.LayerRecorder", "rdl_neuro.train.RDMTeacher",
    "rdl_neuro.train.RDLLoss", "rdl_neuro.train.linear_warmup", "rdl_neuro.train.derive_seed",
    "rdl_neuro.inference.rsa_table", "rdl_neuro.vis.save_figure", "rdl_neuro.vis.plot_rdm_comparison",
    "rdl_neuro.data.StimulusDataset", "rdl_neuro.data.stratified_split", "rdl_neuro.data.rdms_from_nifti",
    "rdl_neuro.data.duplicate_ids",
)


@pytest.mark.parametrize("modname", MODULES)
def test_docstring_examples_run(modname):
    module = importlib.import_module(modname)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    torch.manual_seed(0)
    np.random.seed(0)
    for test in finder.find(module, modname):
        # only the examples written in this module (not those of names it imports)
        if test.filename and module.__file__ and test.filename != module.__file__:
            continue
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)


@pytest.mark.parametrize("path", MUST_HAVE_EXAMPLES)
def test_main_functions_have_examples(path):
    module, _, name = path.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, path)
    assert tests and tests[0].examples, f"{path} has no docstring example"
