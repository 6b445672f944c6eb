"""``rdl-neuro searchlight``: maps and figures from files, one-line errors, torchrun equal to one process."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from rsatoolbox.rdm import RDMs

from rdl_neuro.cli.main import main
from rdl_neuro.inference.searchlight import evaluate_searchlight

SHAPE = (9, 9, 9)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N_COND = 8


@pytest.fixture
def files(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    """A 4D betas file with a planted two-category region, a mask, conditions and a model RDM (.npz)."""
    data = rng.normal(size=SHAPE + (N_COND,))
    region = np.zeros(SHAPE, bool)
    region[3:6, 3:6, 3:6] = True
    category = np.arange(N_COND) % 2
    data[region] += 1.5 * rng.normal(size=(2, int(region.sum())))[category].T
    mask = np.zeros(SHAPE, bool)
    mask[1:8, 1:8, 1:8] = True
    paths = {"betas": tmp_path / "betas.nii.gz", "mask": tmp_path / "mask.nii.gz",
             "conditions": tmp_path / "conditions.txt", "model": tmp_path / "category.npz"}
    nib.save(nib.Nifti1Image(data, AFFINE), paths["betas"])
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), paths["mask"])
    paths["conditions"].write_text("\n".join(str(c) for c in range(10, 10 + N_COND)) + "\n")
    square = (category[:, None] != category[None, :]).astype(float)
    np.savez(paths["model"], rdm=square, stimulus_ids=np.arange(10, 10 + N_COND))
    return paths


def _args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["searchlight", "--betas", str(files["betas"]), "--mask", str(files["mask"]), "--conditions",
            str(files["conditions"]), "--model", str(files["model"]), "--radius", "2", "--threshold", "0.5",
            "--out", str(out), "--no-progress", *extra]


def test_command_writes_maps_figure_and_peaks(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(files, out, "--plot-threshold", "0.2")) == 0
    printed = capsys.readouterr().out
    assert "spheres (radius 2 voxels" in printed and "category" in printed
    volume = nib.load(out / "searchlight_category.nii.gz")
    assert volume.shape == SHAPE and np.allclose(volume.affine, AFFINE)
    model = RDMs(np.load(files["model"])["rdm"][np.triu_indices(N_COND, 1)][None],
                 pattern_descriptors={"stimulus": np.arange(10, 10 + N_COND)}, rdm_descriptors={"name": ["category"]})
    expected = evaluate_searchlight(str(files["betas"]), np.arange(10, 10 + N_COND), model, mask=str(files["mask"]),
                                    radius=2, threshold=0.5)
    np.testing.assert_array_equal(np.asarray(volume.dataobj), np.asarray(expected.to_nifti().dataobj))
    assert (out / "searchlight_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    peak = (out / "peaks.csv").read_text().splitlines()[1].split(",")
    # the best sphere lies in the planted region (voxels 3..5)
    assert all(3 <= int(v) <= 5 for v in peak[2:5])


@pytest.mark.parametrize("change, message", [
    ({"mask_shape": (9, 9, 8)}, r"mask \(.*mask_bad\.nii\.gz\) and betas \(.*\) differ in shape"),
    ({"mask_affine": np.eye(4)}, r"differ in affine \(voxel-to-world transform\): .* resample one"),
    ({"radius": "0.5"}, "radius 0.5 voxels leaves the spheres empty"),
    ({"conditions": "1 2 3"}, "conditions has 3 entries but the betas have 8 volumes"),
    ({"crossnobis_one_run": True}, r"crossnobis needs at least 2 runs to cross-validate, got a single run \[1\]"),
    ({"model_ids": "1 2 3 4 5 6 7 8"}, r"model RDM 'category' lacks 8 of the 8 conditions"),
    ({"missing_betas": True}, r"betas \(.*nope\.nii\.gz\) file not found"),
])
def test_user_mistakes_exit_2_with_one_line(files, tmp_path, capsys, change, message):
    args = _args(files, tmp_path / "out")
    if "mask_shape" in change or "mask_affine" in change:
        bad = tmp_path / "mask_bad.nii.gz"
        nib.save(nib.Nifti1Image(np.ones(change.get("mask_shape", SHAPE), np.uint8),
                                 change.get("mask_affine", AFFINE)), bad)
        args[args.index("--mask") + 1] = str(bad)
    if "radius" in change:
        args[args.index("--radius") + 1] = change["radius"]
    if "conditions" in change:
        (tmp_path / "c.txt").write_text(change["conditions"])
        args[args.index("--conditions") + 1] = str(tmp_path / "c.txt")
    if "crossnobis_one_run" in change:
        (tmp_path / "runs.txt").write_text("1\n" * N_COND)
        args += ["--rdm-method", "crossnobis", "--runs", str(tmp_path / "runs.txt")]
    if "model_ids" in change:
        (tmp_path / "ids.txt").write_text(change["model_ids"])
        args += ["--model-ids", str(tmp_path / "ids.txt")]
    if "missing_betas" in change:
        args[args.index("--betas") + 1] = str(tmp_path / "nope.nii.gz")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rdl-neuro searchlight: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_torchrun_processes_write_the_single_process_map(files, tmp_path):
    from tests.test_torchrun import run_ranks  # noqa: PLC0415 - the shared torchrun launcher

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    res = run_ranks(["--standalone", "--nproc_per_node=2", "-m", "rdl_neuro", *_args(files, dist_out),
                     "--chunk-size", "50"], env=env, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 processes" in res.stdout and res.stdout.count("wrote 1 map") == 1  # rank 0 alone writes
    assert main(_args(files, single_out)) == 0  # the single process in this one (saves starting a third)
    a = np.asarray(nib.load(dist_out / "searchlight_category.nii.gz").dataobj)
    b = np.asarray(nib.load(single_out / "searchlight_category.nii.gz").dataobj)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isfinite(a).sum() > 100
    assert sorted(p.name for p in dist_out.iterdir()) == ["peaks.csv", "searchlight_category.nii.gz",
                                                          "searchlight_category.png"]


@pytest.mark.slow
def test_a_torchrun_rank_without_centres_takes_part(files, tmp_path):
    """Two spheres on three ranks, no checkpoint: rank 1 gets no centres, does no work, and the scores are the
    single process's."""
    from tests.test_torchrun import run_ranks  # noqa: PLC0415 - the shared torchrun launcher

    mask = np.zeros(SHAPE, np.uint8)
    mask[4, 4, 4:6] = 1  # two neighbouring voxels: two spheres of two voxels each at radius 2
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "two_voxels.nii.gz")
    script = tmp_path / "run.py"
    script.write_text(f"""
import sys
import numpy as np
import torch.distributed as dist
from rsatoolbox.rdm import RDMs
from rdl_neuro.inference.searchlight import evaluate_searchlight

dist.init_process_group("gloo")
square = np.load({str(files["model"])!r})["rdm"]
model = RDMs(square[np.triu_indices({N_COND}, 1)][None], pattern_descriptors={{"stimulus": np.arange(10, {10 + N_COND})}})
res = evaluate_searchlight({str(files["betas"])!r}, np.arange(10, {10 + N_COND}), model,
                           mask={str(tmp_path / "two_voxels.nii.gz")!r}, radius=2, threshold=0, progress=False)
if dist.get_rank() == 0:
    np.save(sys.argv[1], res.scores)
dist.destroy_process_group()
""")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = run_ranks(["--standalone", "--nproc_per_node=3", str(script), str(tmp_path / "d.npy")], env=env,
                    timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    model = RDMs(np.load(files["model"])["rdm"][np.triu_indices(N_COND, 1)][None],
                 pattern_descriptors={"stimulus": np.arange(10, 10 + N_COND)})
    single = evaluate_searchlight(str(files["betas"]), np.arange(10, 10 + N_COND), model,
                                  mask=str(tmp_path / "two_voxels.nii.gz"), radius=2, threshold=0, progress=False)
    assert single.scores.shape[0] == 2
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), single.scores, rtol=0, atol=1e-12)


@pytest.fixture
def subjects(files, tmp_path, rng) -> list[Path]:
    """Three subjects' 4D betas on one grid: the planted region of ``files`` plus fresh noise each."""
    base = np.asarray(nib.load(files["betas"]).dataobj)
    paths = []
    for i in range(3):
        path = tmp_path / f"sub-0{i + 1}_betas.nii.gz"
        nib.save(nib.Nifti1Image(base + 0.5 * rng.normal(size=base.shape), AFFINE), path)
        paths.append(path)
    return paths


def _group_args(files, subjects, out, *extra):
    args = _args(files, out, *extra)
    at = args.index("--betas")
    args[at:at + 2] = ["--subject-betas", *map(str, subjects)]
    return args


@pytest.mark.parametrize("test", ["t", "permutation"])
def test_group_test_from_the_command_line(files, subjects, tmp_path, capsys, test):
    from rdl_neuro.inference.searchlight import searchlight_group_test

    out = tmp_path / "out"
    assert main(_group_args(files, subjects, out, "--group-test", test, "--n-permutations", "100")) == 0
    printed = capsys.readouterr().out
    assert "subject sub-03_betas (3 of 3)" in printed and "wrote the group maps" in printed
    model = RDMs(np.load(files["model"])["rdm"][np.triu_indices(N_COND, 1)][None],
                 pattern_descriptors={"stimulus": np.arange(10, 10 + N_COND)}, rdm_descriptors={"name": ["category"]})
    results = [evaluate_searchlight(str(s), np.arange(10, 10 + N_COND), model, mask=str(files["mask"]), radius=2,
                                    threshold=0.5) for s in subjects]
    for s, result in zip(subjects, results):  # every subject's map, as one call would give it
        written = nib.load(out / s.name.split(".")[0] / "searchlight_category.nii.gz")
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(result.to_nifti().dataobj))
        assert not (out / s.name.split(".")[0] / "checkpoint").exists()  # removed once the subject is done
    expected = searchlight_group_test(results, test=test, n_permutations=100)
    for kind in ("t", "p") + (("p_fwe",) if test == "permutation" else ()):
        written = np.asarray(nib.load(out / f"group_category_{kind}.nii.gz").dataobj)
        np.testing.assert_array_equal(written, np.asarray(getattr(expected, kind).dataobj))
    assert (test == "permutation") == (out / "group_category_p_fwe.nii.gz").is_file()
    assert (out / "group_category_t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = (out / "group.csv").read_text().splitlines()
    assert row[0].startswith("model,test,alternative,n_subjects,n_voxels") and row[1].startswith(f"category,{test},")


@pytest.mark.parametrize("change, message", [
    ({"conditions": 2}, r"--conditions: give one file for all 3 subjects or one per subject, got 2"),
    ({"one_subject": True}, r"--subject-betas: a test across subjects needs at least 2 subjects, got 1"),
    ({"both": True}, r"give --betas \(one subject\) or --subject-betas \(one 4D image per subject\), not both"),
    ({"extra": ["--n-permutations", "0"]}, r"--n-permutations must be at least 1, got 0"),
    ({"extra": ["--alpha", "1.5"]}, r"--alpha must lie in \(0, 1\), got 1.5"),
    ({"extra": ["--runs", "a.txt", "b.txt"]}, r"--runs: give one file for all 3 subjects or one per subject, got 2"),
])
def test_group_mistakes_exit_2_with_one_line(files, subjects, tmp_path, capsys, change, message):
    args = _group_args(files, subjects, tmp_path / "out")
    if "conditions" in change:
        at = args.index("--conditions")
        args[at + 1:at + 2] = [str(files["conditions"])] * change["conditions"]
    if "one_subject" in change:
        at = args.index("--subject-betas")
        del args[at + 2:at + 4]
    if "both" in change:
        args += ["--betas", str(files["betas"])]
    args += change.get("extra", [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rdl-neuro searchlight: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
