"""``rdl-neuro searchlight``: searchlight RSA of one subject's betas against model RDMs -> NIfTI maps + figures.

    rdl-neuro searchlight --betas sub-01_betas.nii.gz --mask sub-01_brainmask.nii.gz \\
        --conditions conditions.txt --model category.npz --radius 3 --out searchlight/

Writes ``searchlight_<model>.nii.gz`` (the comparison value of every sphere at
its centre voxel, NaN elsewhere, in the betas' space), a figure of each map and
``peaks.csv``. Under ``torchrun`` the centres are split across the processes
and rank 0 writes the files.

Several subjects (``--subject-betas``, one 4D image per subject, normalised to
one space) give each subject's maps in ``<out>/<subject>/`` and the test across
subjects per model (``--group-test``: one-sample t on Fisher-z values, or
sign-flip permutations with max-statistic FWE correction):
``group_<model>_t.nii.gz``, ``_p`` and (permutations) ``_p_fwe``, a figure of
the t map and ``group.csv``. ``--mask``, ``--conditions`` and ``--runs`` then take
one file for all subjects or one per subject.

Finished blocks of spheres are kept in ``<out>/checkpoint/`` while the
searchlight runs: a run that is stopped (Ctrl-C, a killed job) resumes from them
when the same command is given again; the folder is removed at the end.

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
    from rdl_neuro.inference.searchlight import ALTERNATIVES, GROUP_TESTS
    from rdl_neuro.rdm.compare import COMPARE_METHODS
    from rdl_neuro.vis.brain_maps import BRAIN_MAP_KINDS

    p.add_argument("--betas", nargs="+", default=None, help="4D beta image, or 3D images in volume order")
    p.add_argument("--subject-betas", nargs="+", default=None,
                   help="several subjects: one 4D beta image each (in one space); adds the group test")
    p.add_argument("--mask", nargs="+", required=True,
                   help="binary mask on the betas' grid: the searchlight centres (one, or one per subject)")
    p.add_argument("--conditions", nargs="+", required=True,
                   help="file with the condition (stimulus id) of every volume (one, or one per subject)")
    p.add_argument("--model", nargs="+", required=True, help="model RDM files (.npy, .csv, .npz)")
    p.add_argument("--model-ids", default=None, help="file with the stimulus ids of the model RDMs' rows")
    p.add_argument("--runs", nargs="+", default=None,
                   help="file with the run of every volume (needed by crossnobis; one, or one per subject)")
    p.add_argument("--residuals", nargs="+", default=None,
                   help="GLM residual images (crossnobis noise precision); several subjects: one 4D image each")
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
    p.add_argument("--group-test", default="t", choices=GROUP_TESTS,
                   help="test across subjects (with --subject-betas): t-test or sign-flip permutations (FWE)")
    p.add_argument("--alternative", default="greater", choices=ALTERNATIVES, help="alternative of the group test")
    p.add_argument("--n-permutations", type=int, default=5000, help="sign flips of the permutation test")
    p.add_argument("--alpha", type=float, default=0.05, help="FWE level of the permutation test's threshold")
    p.add_argument("--no-fisher-z", action="store_true",
                   help="test the maps' values as they are (default: Fisher z, for correlation-like comparisons)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sign flips")
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


def _per_subject(values: list[str] | None, n: int, option: str) -> list[Any]:
    """One value per subject from an option given once (shared) or once per subject."""
    if values is None:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{option}: give one file for all {n} subjects or one per subject, got {len(values)}")
    return list(values)


def _subject_labels(paths: Sequence[str]) -> list[str]:
    """Folder names of the subjects: the file names without extensions, else ``subject-01``, ... when they repeat."""
    from rdl_neuro.inference.searchlight import file_safe

    stems = [file_safe(Path(p).name.split(".")[0]) for p in paths]
    return stems if len(set(stems)) == len(stems) else [f"subject-{i + 1:02d}" for i in range(len(paths))]


def _run(args: argparse.Namespace) -> int:
    import shutil

    import nibabel as nib
    import torch.distributed as dist

    from rdl_neuro.train.distributed import setup_process_group

    if (args.betas is None) == (args.subject_betas is None):
        raise ValueError("give --betas (one subject) or --subject-betas (one 4D image per subject), not both")
    subjects = [args.betas if len(args.betas) > 1 else args.betas[0]] if args.betas is not None \
        else list(args.subject_betas)
    group = args.subject_betas is not None
    if group and len(subjects) < 2:
        raise ValueError(f"--subject-betas: a test across subjects needs at least 2 subjects, got {len(subjects)}")
    n = len(subjects)
    masks = _per_subject(args.mask, n, "--mask")
    conditions = [read_ids(path, "--conditions") for path in _per_subject(args.conditions, n, "--conditions")]
    runs = [None if path is None else read_ids(path, "--runs") for path in _per_subject(args.runs, n, "--runs")]
    if args.residuals is None or not group:
        residuals = [args.residuals] * n
    elif len(args.residuals) != n:
        raise ValueError(f"--residuals: give one 4D residual image per subject ({n}), got {len(args.residuals)}")
    else:
        residuals = list(args.residuals)
    models = load_model_rdms(args.model, args.model_ids)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if args.n_permutations < 1:
        raise ValueError(f"--n-permutations must be at least 1, got {args.n_permutations}")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must lie in (0, 1), got {args.alpha}")
    if args.bg is not None and args.bg != "MNI152" and not Path(args.bg).is_file():
        raise FileNotFoundError(f"--bg file not found: {args.bg}")
    out = Path(args.out)
    labels = _subject_labels(args.subject_betas) if group else [""]
    world, rank, created = setup_process_group("auto")
    try:
        results = []
        for i, label in enumerate(labels):
            folder = out / label if group else out
            if group and rank == 0:
                print(f"subject {label} ({i + 1} of {n})", flush=True)
            try:
                result = _subject_searchlight(args, subjects[i], masks[i], conditions[i], runs[i], residuals[i],
                                              models, folder / "checkpoint")
            except nib.filebasedimages.ImageFileError as err:
                raise ValueError(f"cannot read an image: {err}") from None
            if rank == 0:
                _write_subject(args, result, folder, world)
                shutil.rmtree(folder / "checkpoint", ignore_errors=True)  # finished: nothing left to resume
            results.append(result)
        if group and rank == 0:
            _write_group(args, results, out)
    finally:
        if created:
            dist.destroy_process_group()
    return 0


def _subject_searchlight(args: argparse.Namespace, betas: Any, mask: str, conditions: np.ndarray,
                         runs: np.ndarray | None, residuals: Any, models: Any, checkpoint: Path) -> Any:
    """One subject's searchlight, checkpointed into ``checkpoint``."""
    from rdl_neuro.inference.searchlight import evaluate_searchlight

    return evaluate_searchlight(
        betas, conditions, models, mask=mask, method=args.method, radius=args.radius, threshold=args.threshold,
        radius_unit="mm" if args.mm else "voxels", truncate_at_boundary=args.truncate, runs=runs,
        rdm_method=args.rdm_method, residuals=residuals, precision_method=args.precision_method,
        chunk_size=args.chunk_size, device=args.device, progress=not args.no_progress, checkpoint=checkpoint)


def _write_subject(args: argparse.Namespace, result: Any, out: Path, world: int) -> None:
    """Maps, figures and ``peaks.csv`` of one subject."""
    from rdl_neuro.io import atomic_write_csv
    from rdl_neuro.vis import plot_brain_map, save_figure

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


def _write_group(args: argparse.Namespace, results: list[Any], out: Path) -> None:
    """The test across subjects of every model: t, p (and p_fwe) maps, a figure of t and ``group.csv``."""
    import pandas as pd

    from rdl_neuro.inference.searchlight import file_safe, searchlight_group_test
    from rdl_neuro.io import atomic_write_csv
    from rdl_neuro.vis import plot_brain_map, save_figure

    rows = []
    for name in results[0].models:
        try:
            test = searchlight_group_test(results, model=name, test=args.group_test, alternative=args.alternative,
                                          fisher_z=not args.no_fisher_z, n_permutations=args.n_permutations,
                                          alpha=args.alpha, seed=args.seed)
        except ValueError as err:
            raise ValueError(f"group test of model {name!r}: {str(err).replace('fisher_z=False', '--no-fisher-z')}"
                             ) from None
        t_path = test.save(out, prefix=f"group_{file_safe(name)}")[0]
        t = np.asarray(test.t.dataobj)
        threshold = test.fwe_threshold
        if threshold is not None and args.alternative != "two-sided":
            survivors = int(np.nansum(t * (1 if args.alternative == "greater" else -1) > threshold))
        else:
            survivors = None if threshold is None else int(np.nansum(np.abs(t) > threshold))
        title = f"{name}: {test.test} across {test.n_subjects} subjects"
        if survivors == 0:  # nothing to draw above the threshold: show the whole t map and say so
            threshold, title = None, title + f" (no voxel at FWE {args.alpha:g})"
        elif threshold is not None:
            title += f", FWE {args.alpha:g}"
        fig = plot_brain_map(t_path, kind=args.plot, bg_img=args.bg, threshold=threshold, title=title)
        save_figure(fig, t_path.with_name(t_path.name.replace(".nii.gz", f".{args.format}")))
        p_fwe = None if test.p_fwe is None else np.asarray(test.p_fwe.dataobj)
        rows.append({"model": name, "test": test.test, "alternative": test.alternative,
                     "n_subjects": test.n_subjects, "n_voxels": test.n_voxels,
                     "n_permutations": test.n_permutations, "fwe_threshold": test.fwe_threshold,
                     "n_significant_fwe": None if p_fwe is None else int((p_fwe < args.alpha).sum()),
                     "max_t": float(np.nanmax(np.asarray(test.t.dataobj)))})
    table = pd.DataFrame(rows)
    atomic_write_csv(table, out / "group.csv")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote the group maps, figures and group.csv to {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``searchlight`` alone: ``main(['--betas', ...])``."""
    parser = argparse.ArgumentParser(prog="rdl-neuro searchlight")
    _add_arguments(parser)
    return run(parser.parse_args(argv))
