"""Write the small intersphinx inventories the docs build reads instead of fetching.

The docs are built without network access (CI reaches only package registries), so
``intersphinx_mapping`` points at the ``*.inv`` files in this folder. Each lists the
external objects our docs link to, with their real URLs on the projects' sites.
Add an entry here (and rerun ``python docs/inventories/make_inventories.py``) when
the docs start linking to a new external name; ``tests/test_docs.py`` checks that the
committed files equal what this script writes.

Entries: ``(name, "domain:role", uri)``; a ``uri`` ending in ``$`` stands for the name,
as in Sphinx's own inventories.
"""
from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (version, base URL, entries)
INVENTORIES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "python": ("3", "https://docs.python.org/3/", [
        ("None", "py:data", "library/constants.html#None"),
        ("True", "py:data", "library/constants.html#True"),
        ("False", "py:data", "library/constants.html#False"),
        ("bltin-boolean-values", "std:label", "library/stdtypes.html#bltin-boolean-values"),
        ("bool", "py:class", "library/functions.html#bool"),
        ("int", "py:class", "library/functions.html#int"),
        ("float", "py:class", "library/functions.html#float"),
        ("str", "py:class", "library/stdtypes.html#str"),
        ("list", "py:class", "library/stdtypes.html#list"),
        ("tuple", "py:class", "library/stdtypes.html#tuple"),
        ("dict", "py:class", "library/stdtypes.html#dict"),
        ("set", "py:class", "library/stdtypes.html#set"),
        ("callable", "py:function", "library/functions.html#callable"),
        ("object", "py:class", "library/functions.html#object"),
        ("contextlib.contextmanager", "py:function", "library/contextlib.html#$"),
        ("collections.namedtuple", "py:function", "library/collections.html#$"),
        ("iterable", "std:term", "glossary.html#term-iterable"),
        ("sequence", "std:term", "glossary.html#term-sequence"),
        ("mapping", "std:term", "glossary.html#term-mapping"),
        ("generator", "std:term", "glossary.html#term-generator"),
        ("path-like object", "std:term", "glossary.html#term-path-like-object"),
        ("pathlib.Path", "py:class", "library/pathlib.html#$"),
        ("os.PathLike", "py:class", "library/os.html#$"),
        ("argparse.ArgumentParser", "py:class", "library/argparse.html#$"),
        ("argparse.Namespace", "py:class", "library/argparse.html#$"),
        ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$"),
        ("Exception", "py:exception", "library/exceptions.html#$"),
        ("ValueError", "py:exception", "library/exceptions.html#$"),
        ("KeyError", "py:exception", "library/exceptions.html#$"),
        ("TypeError", "py:exception", "library/exceptions.html#$"),
        ("RuntimeError", "py:exception", "library/exceptions.html#$"),
        ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
        ("UserWarning", "py:exception", "library/exceptions.html#$"),
        ("tomllib", "py:module", "library/tomllib.html#module-tomllib"),
    ]),
    "numpy": ("2", "https://numpy.org/doc/stable/", [
        ("numpy", "py:module", "reference/index.html#module-numpy"),
        ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#$"),
        ("numpy.dtype", "py:class", "reference/generated/numpy.dtype.html#$"),
        ("numpy.random.Generator", "py:class", "reference/random/generator.html#$"),
        ("numpy.random.RandomState", "py:class", "reference/random/legacy.html#$"),
        ("numpy.random.default_rng", "py:function", "reference/random/generator.html#$"),
        ("numpy.inf", "py:data", "reference/constants.html#$"),
        ("numpy.nan", "py:data", "reference/constants.html#$"),
        ("array_like", "std:term", "glossary.html#term-array_like"),
        ("arrays.scalars", "std:label", "reference/arrays.scalars.html#arrays-scalars"),
    ]),
    "torch": ("2", "https://docs.pytorch.org/docs/stable/", [
        ("torch", "py:module", "torch.html#module-torch"),
        ("torch.Tensor", "py:class", "tensors.html#$"),
        ("torch.device", "py:class", "tensor_attributes.html#$"),
        ("torch.dtype", "py:class", "tensor_attributes.html#$"),
        ("torch.Generator", "py:class", "generated/torch.Generator.html#$"),
        ("torch.manual_seed", "py:function", "generated/torch.manual_seed.html#$"),
        ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#$"),
        ("torch.nn.Module.forward", "py:method", "generated/torch.nn.Module.html#$"),
        ("torch.nn.Module.register_forward_hook", "py:method", "generated/torch.nn.Module.html#$"),
        ("torch.nn.parallel.DistributedDataParallel", "py:class",
         "generated/torch.nn.parallel.DistributedDataParallel.html#$"),
        ("torch.optim.Optimizer", "py:class", "optim.html#$"),
        ("torch.optim.lr_scheduler.LRScheduler", "py:class",
         "generated/torch.optim.lr_scheduler.LRScheduler.html#$"),
        ("torch.utils.data.Dataset", "py:class", "data.html#$"),
        ("torch.utils.data.TensorDataset", "py:class", "data.html#$"),
        ("torch.utils.data.Subset", "py:class", "data.html#$"),
        ("torch.utils.data.DataLoader", "py:class", "data.html#$"),
        ("torch.utils.data.Sampler", "py:class", "data.html#$"),
        ("torch.utils.data.BatchSampler", "py:class", "data.html#$"),
        ("torch.distributed", "py:module", "distributed.html#module-torch.distributed"),
        ("torch.distributed.init_process_group", "py:function", "distributed.html#$"),
        ("torch.distributed.all_gather", "py:function", "distributed.html#$"),
        ("torch.save", "py:function", "generated/torch.save.html#$"),
        ("torch.load", "py:function", "generated/torch.load.html#$"),
    ]),
    "pandas": ("2", "https://pandas.pydata.org/docs/", [
        ("pandas", "py:module", "index.html#module-pandas"),
        ("pandas.DataFrame", "py:class", "reference/api/pandas.DataFrame.html#$"),
        ("pandas.Series", "py:class", "reference/api/pandas.Series.html#$"),
        ("pandas.read_csv", "py:function", "reference/api/pandas.read_csv.html#$"),
        ("pandas.DataFrame.to_csv", "py:method", "reference/api/pandas.DataFrame.to_csv.html#$"),
    ]),
    "matplotlib": ("3", "https://matplotlib.org/stable/", [
        ("matplotlib.figure.Figure", "py:class", "api/_as_gen/matplotlib.figure.Figure.html#$"),
        ("matplotlib.figure.Figure.savefig", "py:method", "api/_as_gen/matplotlib.figure.Figure.html#$"),
        ("matplotlib.axes.Axes", "py:class", "api/_as_gen/matplotlib.axes.Axes.html#$"),
        ("matplotlib.colors.Colormap", "py:class", "api/_as_gen/matplotlib.colors.Colormap.html#$"),
        ("matplotlib.pyplot.close", "py:function", "api/_as_gen/matplotlib.pyplot.close.html#$"),
        ("matplotlib.pyplot.subplots", "py:function", "api/_as_gen/matplotlib.pyplot.subplots.html#$"),
    ]),
    "nibabel": ("5", "https://nipy.org/nibabel/", [
        ("nibabel", "py:module", "api.html#module-nibabel"),
        ("nibabel.nifti1.Nifti1Image", "py:class", "reference/nibabel.nifti1.html#$"),
        ("nibabel.spatialimages.SpatialImage", "py:class", "reference/nibabel.spatialimages.html#$"),
        ("nibabel.loadsave.load", "py:function", "reference/nibabel.loadsave.html#$"),
    ]),
    "rsatoolbox": ("0.3", "https://rsatoolbox.readthedocs.io/en/stable/", [
        ("rsatoolbox.data.dataset.Dataset", "py:class", "rsatoolbox.data.dataset.html#$"),
        ("rsatoolbox.data.Dataset", "py:class", "rsatoolbox.data.dataset.html#rsatoolbox.data.dataset.Dataset"),
        ("rsatoolbox.rdm.rdms.RDMs", "py:class", "rsatoolbox.rdm.rdms.html#$"),
        ("rsatoolbox.rdm.RDMs", "py:class", "rsatoolbox.rdm.rdms.html#rsatoolbox.rdm.rdms.RDMs"),
        ("rsatoolbox.rdm.calc.calc_rdm", "py:function", "rsatoolbox.rdm.calc.html#$"),
        ("rsatoolbox.rdm.calc_rdm", "py:function", "rsatoolbox.rdm.calc.html#rsatoolbox.rdm.calc.calc_rdm"),
        ("rsatoolbox.rdm.compare.compare", "py:function", "rsatoolbox.rdm.compare.html#$"),
        ("rsatoolbox.rdm.compare", "py:function", "rsatoolbox.rdm.compare.html#rsatoolbox.rdm.compare.compare"),
        ("rsatoolbox.model.model.ModelFixed", "py:class", "rsatoolbox.model.model.html#$"),
        ("rsatoolbox.inference.evaluate.eval_fixed", "py:function", "rsatoolbox.inference.evaluate.html#$"),
        ("rsatoolbox.inference.evaluate.eval_bootstrap", "py:function", "rsatoolbox.inference.evaluate.html#$"),
        ("rsatoolbox.inference.evaluate.eval_bootstrap_pattern", "py:function",
         "rsatoolbox.inference.evaluate.html#$"),
        ("rsatoolbox.inference.evaluate.eval_bootstrap_rdm", "py:function", "rsatoolbox.inference.evaluate.html#$"),
        ("rsatoolbox.inference.evaluate.crossval", "py:function", "rsatoolbox.inference.evaluate.html#$"),
        ("rsatoolbox.inference.noise_ceiling.boot_noise_ceiling", "py:function",
         "rsatoolbox.inference.noise_ceiling.html#$"),
        ("rsatoolbox.inference.result.Result", "py:class", "rsatoolbox.inference.result.html#$"),
    ]),
}


def inventory_bytes(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
    """One inventory in Sphinx's version 2 format (a plain header, then zlib-compressed lines)."""
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    lines = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
    return header + zlib.compress(lines.encode(), 9)


def write_all(folder: Path = HERE) -> list[Path]:
    """Write ``<project>.inv`` for every project above into ``folder``; returns the paths."""
    paths = []
    for project, (version, _, entries) in INVENTORIES.items():
        path = folder / f"{project}.inv"
        path.write_bytes(inventory_bytes(project, version, entries))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all():
        print(written)
