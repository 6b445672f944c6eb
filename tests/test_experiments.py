"""The experiment scripts in benchmarks/ run end to end in --quick mode and write complete, well-formed outputs.

These tests check plumbing (files, columns, methods, RESULT lines, that no
hyperparameter is chosen on test data), not the size of any effect. Each runs
the script as a subprocess, as a user would.
"""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
METHODS = {"baseline", "KD", "RDL", "RDL+KD", "RKD", "SP"}
FLOAT = r"-?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf)"

sys.path.insert(0, str(BENCH))


def run_script(name: str, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-4000:]}"
    return proc.stdout


def last_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


def check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > 5000, f"{path} looks empty"


def check_transfer_outputs(out: Path, stem: str, stdout: str, seeds: int) -> None:
    line = last_line(stdout)
    m = re.fullmatch(rf"RESULT rdl_vs_base_p=({FLOAT}) rdl_minus_kd_err=({FLOAT}) best_method=(\S+)", line)
    assert m, f"bad RESULT line: {line!r}"
    assert m.group(3) in METHODS
    runs = pd.read_csv(out / f"{stem}.csv")
    for col in ("phase", "student", "n_labelled", "method", "seed", "hp", "eval_set", "error_pct", "rdl_weight",
                "kd_temperature", "kd_weight", "rkd_weight", "sp_weight", "train_s"):
        assert col in runs.columns, col
    assert set(runs["phase"]) == {"search", "final"}
    # the search never looks at the test split, the final runs only at it
    assert set(runs.loc[runs["phase"] == "search", "eval_set"]) == {"validation"}
    assert set(runs.loc[runs["phase"] == "final", "eval_set"]) == {"test"}
    final = runs[runs["phase"] == "final"]
    assert set(final["method"]) == METHODS
    assert final.groupby("method")["seed"].nunique().eq(seeds).all()
    assert final["error_pct"].between(0, 100).all()
    # every final run uses the hyperparameters chosen on validation: one setting per method
    assert final.groupby(["student", "n_labelled", "method"])["hp"].nunique().eq(1).all()
    assert final.loc[final["method"] == "RDL", "rdl_weight"].notna().all()
    assert final.loc[final["method"] == "KD", "kd_temperature"].notna().all()
    summary = pd.read_csv(out / f"{stem}_summary.csv")
    assert set(summary["method"]) == METHODS
    for col in ("test_err_mean", "test_err_sd", "p_t_vs_baseline", "p_wilcoxon_vs_baseline", "p_t_vs_KD"):
        assert col in summary.columns
    md = (out / f"{stem}.md").read_text()
    for heading in ("## Test error", "## Chosen hyperparameters (validation only)", "## Search grid"):
        assert heading in md
    assert md.count("| --- |") >= 3
    assert line in md
    check_png(out / f"{stem}.png")


@pytest.mark.slow
def test_paper_mnist_quick(tmp_path: Path) -> None:
    stdout = run_script("paper_mnist.py", "--quick", "--out", str(tmp_path))
    check_transfer_outputs(tmp_path, "paper_mnist", stdout, seeds=2)


def write_fake_cifar100(folder: Path, n_train: int = 200, n_test: int = 60, n_used: int = 10, seed: int = 0) -> Path:
    """A tiny data set in the CIFAR-100 "python version" layout (Python-2 style pickles with bytes keys)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"class{k:02d}".encode() for k in range(100)]
    coarse_names = [f"super{k:02d}".encode() for k in range(20)]
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": fine_names, b"coarse_label_names": coarse_names}, fh, protocol=2)
    for part, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % n_used  # balanced over the first n_used classes (stratified subsets need >= 2 each)
        # class-dependent mean colour, so there is something to learn
        base = (fine[:, None] * 23 % 256).astype(np.float64)
        data = np.clip(base + rng.normal(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        d = {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
             b"filenames": [f"img{k}.png".encode() for k in range(n)], b"batch_label": part.encode()}
        with open(folder / part, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    return folder


def test_fake_cifar100_reads_with_the_loader(tmp_path: Path) -> None:
    from rdl_neuro.data import load_cifar100

    data = load_cifar100(write_fake_cifar100(tmp_path / "cifar-100-python"))
    assert data.images.shape == (260, 3, 32, 32)
    assert len(data.classes) == 100
    assert set(data.descriptors["split"]) == {"train", "test"}


@pytest.mark.slow
def test_paper_cifar100_quick_on_fake_data(tmp_path: Path) -> None:
    fake = write_fake_cifar100(tmp_path / "cifar-100-python")
    out = tmp_path / "out"
    stdout = run_script("paper_cifar100.py", "--cifar100", str(fake), "--quick", "--subsets", "50", "--out", str(out))
    check_transfer_outputs(out, "paper_cifar100", stdout, seeds=2)


def test_paper_cifar100_needs_its_data(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "paper_cifar100.py"), "--cifar100", str(tmp_path / "nope"),
                           "--quick", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "not found" in proc.stderr


@pytest.mark.slow
def test_brain92_quick(tmp_path: Path, kriegeskorte_dir: Path) -> None:
    import brain92

    stdout = run_script("brain92.py", "--quick", "--data", str(kriegeskorte_dir), "--out", str(tmp_path))
    line = last_line(stdout)
    m = re.fullmatch(rf"RESULT rdl_heldout_r=({FLOAT}) base_heldout_r=({FLOAT}) best_brain_row=(\S+) "
                     rf"best_brain_r=({FLOAT}) best_control_r=({FLOAT}) best_vs_controls_max_p=({FLOAT}) "
                     rf"animacy_heldout_r=({FLOAT}) nc_lower=({FLOAT})", line)
    assert m, f"bad RESULT line: {line!r}"
    for g in (1, 2, 4, 5, 7, 8):
        assert -1 <= float(m.group(g)) <= 1
    assert 0 <= float(m.group(6)) <= 1
    assert m.group(3).replace("_", " ") in brain92.BRAIN_ROWS

    rows = [r.name for r in brain92.ROWS]
    long = pd.read_csv(tmp_path / "brain92.csv")
    for col in ("fold", "held_out_subject", "row", "seed", "r_corr", "r_tau_a"):
        assert col in long.columns, col
    assert set(long["held_out_subject"]) == {"BE", "KO", "SN", "TI"}
    expected = {f"{r} @ {layer}" for r in rows for layer in brain92.LAYERS}
    expected |= {"animacy", "FaceBodyManmadeNatobj", "monkeyIT", "EVA", "HMAX", "V1", "Silhouette", "RADON",
                 "noise ceiling (lower)", "noise ceiling (upper)"}
    assert set(long["row"]) == expected
    assert long["r_corr"].between(-1, 1).all() and long["r_tau_a"].between(-1, 1).all()
    # every (fold, held-out subject) unit has every row
    n_units = long.groupby(["fold", "held_out_subject"]).ngroups
    assert long.groupby("row")[["fold", "held_out_subject"]].apply(lambda g: len(g.drop_duplicates())).eq(n_units).all()

    summary = pd.read_csv(tmp_path / "brain92_summary.csv")
    assert set(summary["row"]) == expected
    assert (summary["ci_low"] <= summary["r_corr"] + 1e-12).all() and (summary["r_corr"] <= summary["ci_high"] + 1e-12).all()
    # every row is tested against the baseline, every brain row against every null and reference teacher
    tests = pd.read_csv(tmp_path / "brain92_tests.csv")
    vs_base = tests[tests["family"] == "vs baseline"]
    assert set(vs_base["model_a"]) == set(rows) - {"baseline"} and set(vs_base["model_b"]) == {"baseline"}
    vs_ctrl = tests[tests["family"] == "brain row vs control"]
    assert set(zip(vs_ctrl["model_a"], vs_ctrl["model_b"])) == {(b, c) for b in brain92.BRAIN_ROWS for c in brain92.CONTROLS}
    assert (tests["p_corrected"] >= tests["p"] - 1e-12).all()
    # every searched row chose its weight for every unit on inner validation
    search = pd.read_csv(tmp_path / "brain92_search.csv")
    searched = {r.name for r in brain92.ROWS if r.teacher and r.searched}
    assert set(search["row"]) == searched
    assert search.groupby("row")["held_out_subject"].nunique().eq(4).all()
    students = pd.read_csv(tmp_path / "brain92_students.csv")
    assert set(students["student"]) == set(brain92.CANDIDATES)
    md = (tmp_path / "brain92.md").read_text()
    for heading in ("## Stronger student", "## Held-out correlation", "## Brain-teacher rows vs null and reference",
                    "## Layer profile", "## Loss weights"):
        assert heading in md
    assert line in md
    assert (tmp_path / "records" / "brain92.md").is_file()
    # the README's sentences are written from the numbers: every control is named with its difference and p
    from rdl_neuro.provenance import read_record

    values = read_record(tmp_path / "records" / "brain92.md")["values"]
    best = m.group(3).replace("_", " ")
    assert values["verdict"].startswith(f"the best brain-teacher row, {best} (r = {float(m.group(4)):.3f})")
    beaten = tests[(tests["model_a"] == best) & (tests["family"] == "brain row vs control")]
    assert ("does **not** beat" in values["verdict"]) == (not beaten["significant"].all())
    for control, diff in zip(beaten["model_b"], beaten["diff"]):
        assert f"{control} {diff:+.3f} (p = " in values["vs_controls"]
    assert set(values) >= {"student_choice", "strong_vs_small", "brain_rows", "training"}
    for png in ("brain92_rows.png", "brain92_layers.png", "brain92_rdms.png"):
        check_png(tmp_path / png)


def test_brain92_final_jobs_cover_every_unit() -> None:
    """Every row gets a network for every (fold, held-out subject) unit, with the weight chosen for that unit."""
    import brain92

    H, folds = 4, [None, None]
    best = {(r.name, f, h): 0.5 + h % 2 for r in brain92.ROWS for f in range(2) for h in range(H)}
    ctx = {"folds": folds, "H": H, "seeds": {"main": 2, "extra": 1}, "students": {"strong": "bn", "small": "small"}}
    jobs = brain92.final_jobs(ctx, best)
    for row in brain92.ROWS:
        seeds = 2 if row.seeds == "main" else 1
        for f in range(2):
            mine = [j for j in jobs if j["row"] == row.name and j["fold"] == f]
            for h in range(H):
                serving = [j for j in mine if h in j["units"]]
                assert len(serving) == seeds, (row.name, f, h)
                want = best[(row.name, f, h)] if (row.teacher and row.searched) else 1.0
                assert all(j["weight"] == want for j in serving) or not row.teacher


def test_selection_uses_validation_only() -> None:
    from _experiments import select_hyperparameters

    rows = []
    for w, err in ((0.01, 10.0), (0.1, 8.0), (1.0, 8.0)):
        for seed in (0, 1):
            rows.append({"student": "s", "n_labelled": 100, "method": "RDL", "seed": seed, "eval_set": "validation",
                         "error_pct": err, "eval_ce": w, "rdl_weight": w, "kd_temperature": np.nan,
                         "kd_weight": np.nan, "rkd_weight": np.nan, "sp_weight": np.nan})
    chosen = select_hyperparameters(pd.DataFrame(rows))
    assert chosen[("s", 100, "RDL")] == {"rdl_weight": 0.1}  # tie on error broken by validation CE
    with pytest.raises(AssertionError):
        select_hyperparameters(pd.DataFrame(rows).assign(eval_set="test"))


def test_paired_tests() -> None:
    from _experiments import paired_tests
    from scipy import stats

    a = np.array([1.0, 2.0, 3.5, 4.0, 5.5])
    b = np.array([1.5, 2.0, 3.0, 5.0, 6.0])
    out = paired_tests(a, b)
    assert out["p_t"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert out["mean_diff"] == pytest.approx(np.mean(a - b))
    same = paired_tests(a, a)
    assert same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0


def test_brain92_gabor_front_end_is_a_fixed_quadrature_bank() -> None:
    """The Gabor stage of ``gabor+flags``: zero-mean unit-norm filters in quadrature, nothing learned,
    energy invariant to the phase of a grating."""
    import math

    import torch
    from brain92_students import GaborFrontEnd, build_student, gabor_bank

    bank = gabor_bank((4.0, 8.0), n_orientations=4)[:, 0].double()
    q = bank.shape[0] // 2
    assert bank.shape[0] == 2 * 2 * 4 and bank.shape[-1] % 2 == 1
    torch.testing.assert_close(bank.sum((1, 2)), torch.zeros(2 * q, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(bank.flatten(1).norm(dim=1), torch.ones(2 * q, dtype=torch.float64), atol=1e-5, rtol=0)
    # even and odd filters of a pair are orthogonal (quadrature)
    assert (bank[:q] * bank[q:]).sum((1, 2)).abs().max() < 1e-4

    front = GaborFrontEnd((4.0, 8.0), n_orientations=4)
    assert not list(front.parameters())  # nothing learned
    # a vertical grating at the first filter's period and orientation: the complex cell at the centre does not
    # depend on the grating's phase, the simple cell does
    x = torch.arange(33, dtype=torch.float32)
    energies, simples = [], []
    for phase in (0.0, 1.0, 2.0):
        grating = torch.cos(2 * math.pi * x / 4.0 + phase).expand(33, 33)
        out = front(grating.expand(1, 3, 33, 33))
        energies.append(float(out[0, 0, 16, 16]))
        simples.append(float(out[0, front.q, 16, 16]))
    assert max(energies) - min(energies) < 1e-3 * max(energies)
    assert max(simples) - min(simples) > 0.1 * max(energies)
    assert out.shape == (1, 3 * front.q + 3, 33, 33)

    student = build_student("gabor+flags", 32)
    names = dict(student.named_modules())
    for layer in ("pool1", "pool2", "pool3", "hidden1", "out", "flags"):
        assert layer in names
    assert student(torch.rand(2, 3, 32, 32)).shape == (2, 6)
