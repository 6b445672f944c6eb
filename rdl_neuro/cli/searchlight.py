"""``rdl-neuro searchlight``: searchlight RSA of one subject's betas against model RDMs -> NIfTI maps + figures.

    rdl-neuro searchlight --betas sub-01_betas.nii.gz --mask sub-01_brainmask.nii.gz \\
        --conditions conditions.txt --model category.npz --radius 3 --out searchlight/

Writes ``searchlight_<model>.nii.gz`` (the comparison value of every sphere at
its centre voxel, NaN elsewhere, in the betas' space), a figure of each map and
``peaks.csv``. Under ``torchrun`` the centres are split across the processes
and rank 0 writes the files.

Conditions (and runs) files hold one id per volume, separated by new lines,
spaces or commas. Model files are ``.npy``, ``.csv`` or ``.npz`` RDMs (square
or condensed, one or a stack), matched to the conditions by stimulus id: the
ids come from the file (a ``.csv``'s first column, an ``.npz``'s
``stimulus_ids``) or from ``--model-ids``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register", "run", "main", "read_ids", "load_model_rdms"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``searchlight`` sub-command."""
    p = subparsers.add_parser("searchlight", help="searchlight RSA: brain maps of model fit (NIfTI + figures)",
                              description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from rdl_neuro.data.nifti import METHODS
    from rdl_neuro.data.searchlight import PRECISION_METHODS
    from rdl_neuro.rdm.compare import COMPARE_METHODS
    from rdl_neuro.vis.brain_maps import BRAIN_MAP_KINDS

    p.add_argument("--betas", nargs="+", required=True, help="4D beta image, or 3D images in volume order")
    p.add_argument("--mask", required=True, help="binary mask on the betas' grid: the searchlight centres")
    p.add_argument("--conditions", required=True, help="file with the condition (stimulus id) of every volume")
    p.add_argument("--model", nargs="+", required=True, help="model RDM files (.npy, .csv, .npz)")
    p.add_argument("--model-ids", default=None, help="file with the stimulus ids of the model RDMs' rows")
    p.add_argument("--runs", default=None, help="file with the run of every volume (needed by crossnobis)")
    p.add_argument("--residuals", nargs="+", default=None, help="GLM residual images (crossnobis noise precision)")
    p.add_argument("--precision-method", default="shrinkage_diag", choices=PRECISION_METHODS)
    p.add_argument("--rdm-method", default="correlation", choices=METHODS, help="sphere RDM dissimilarity")
    p.add_argument("--method", default="corr", choices=COMPARE_METHODS, help="RDM comparison (rsatoolbox names)")
    p.add_argument("--radius", type=float, default=2.0, help="sphere radius in voxels (default 2; see --mm)")
    p.add_argument("--mm", action="store_true", help="the radius is in mm (measured with the betas' affine)")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="minimum fraction of a sphere's voxels inside the mask (default 1.0)")
    p.add_argument("--truncate", action="store_true", help="spheres keep only voxels inside the mask")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"), help="figure format")
    p.add_argument("--plot", default="stat_map", choices=BRAIN_MAP_KINDS, help="figure kind")
    p.add_argument("--bg", default=None, help="background of the figure: an anatomical image in the betas' space, "
                                               "or MNI152 (nilearn's template; for normalised data)")
    p.add_argument("--plot-threshold", type=float, default=None, help="values below this are not drawn")
    p.add_argument("--chunk-size", type=int, default=None, help="spheres per batch (default: ~64 MB)")
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def read_ids(path: str | Path, what: str) -> np.ndarray:
    """Ids from a text file (new lines, spaces or commas between them): int64 if all are integers, else str."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    tokens = path.read_text().replace(",", " ").split()
    if not tokens:
        raise ValueError(f"{what} file {path} is empty")
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        return np.array(tokens)


def load_model_rdms(paths: Sequence[str], ids_path: str | None) -> Any:
    """The model RDM files as a list of rsatoolbox ``RDMs`` named after the files (``stem`` or ``stem_i``)."""
    from rdl_neuro.cli.train import load_rdm_file
    from rdl_neuro.rdm.interop import to_rsatoolbox

    given = None if ids_path is None else read_ids(ids_path, "--model-ids").tolist()
    models = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"model RDM file not found: {path}")
        if Path(path).suffix.lower() not in (".npy", ".csv", ".npz"):
            raise ValueError(f"model RDM file {path}: use .npy, .csv or .npz")
        array, file_ids = load_rdm_file(path)
        ids = given if given is not None else file_ids
        if ids is None:
            raise ValueError(f"model RDM file {path} holds no stimulus ids: pass --model-ids (one id per row)")
        array = np.asarray(array, dtype=np.float64)
        n = len(ids)
        if array.ndim == 2 and array.shape == (n, n):  # square, as RDMTeacher.from_array reads 2-D arrays
            array = array[None]
        n_rdm = 1 if array.ndim == 1 else array.shape[0]
        stem = Path(path).name.split(".")[0]
        names = [stem] if n_rdm == 1 else [f"{stem}_{i}" for i in range(n_rdm)]
        try:
            models.append(to_rsatoolbox(array, ids, "model", rdm_descriptors={"name": names}))
        except ValueError as err:
            raise ValueError(f"model RDM file {path}: {err}") from None
    return models


def run(args: argparse.Namespace) -> int:
    """Compute the maps, write them and their figures; returns 0."""
    try:
        return _run(args)
    except ValueError as err:  # some messages (e.g. two affines) span lines: the command prints one
        raise ValueError(" ".join(str(err).split())) from None


def _run(args: argparse.Namespace) -> int:
    import nibabel as nib
    import torch.distributed as dist

    from rdl_neuro.inference.searchlight import evaluate_searchlight
    from rdl_neuro.io import atomic_write_csv
    from rdl_neuro.train.distributed import setup_process_group
    from rdl_neuro.vis import plot_brain_map, save_figure

    conditions = read_ids(args.conditions, "--conditions")
    runs = None if args.runs is None else read_ids(args.runs, "--runs")
    models = load_model_rdms(args.model, args.model_ids)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if args.bg is not None and args.bg != "MNI152" and not Path(args.bg).is_file():
        raise FileNotFoundError(f"--bg file not found: {args.bg}")
    world, rank, created = setup_process_group("auto")
    try:
        try:
            result = evaluate_searchlight(
                args.betas if len(args.betas) > 1 else args.betas[0], conditions, models, mask=args.mask,
                method=args.method, radius=args.radius, threshold=args.threshold,
                radius_unit="mm" if args.mm else "voxels", truncate_at_boundary=args.truncate, runs=runs,
                rdm_method=args.rdm_method, residuals=args.residuals, precision_method=args.precision_method,
                chunk_size=args.chunk_size, device=args.device, progress=not args.no_progress)
        except nib.filebasedimages.ImageFileError as err:
            raise ValueError(f"cannot read an image: {err}") from None
        if rank == 0:
            out = Path(args.out)
            paths = result.save(out)
            for name, path in zip(result.models, paths):
                fig = plot_brain_map(path, kind=args.plot, bg_img=args.bg, threshold=args.plot_threshold,
                                     title=f"{name}: {args.method} with {args.rdm_method} RDMs")
                save_figure(fig, path.with_name(path.name.replace(".nii.gz", f".{args.format}")))
            peaks = result.peaks()
            atomic_write_csv(peaks, out / "peaks.csv")
            print(f"{len(result.spheres)} spheres (radius {args.radius:g} {'mm' if args.mm else 'voxels'}, "
                  f"{result.spheres.n_voxels.mean():.1f} voxels on average), {len(result.models)} model(s)"
                  + (f", {world} processes" if world > 1 else ""))
            print(peaks.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            print(f"wrote {len(paths)} map(s), figures and peaks.csv to {out}")
    finally:
        if created:
            dist.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``searchlight`` alone: ``main(['--betas', ...])``."""
    parser = argparse.ArgumentParser(prog="rdl-neuro searchlight")
    _add_arguments(parser)
    return run(parser.parse_args(argv))
