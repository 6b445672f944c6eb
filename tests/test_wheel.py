"""The release artefacts: ``python -m build`` gives an sdist and a wheel that install and run.

The sources (tracked and new, unignored files) are copied to a temporary folder and
built there without build isolation (the installed setuptools; nothing fetched);
the wheel must hold every module and the packaged configs, and the version must be
``rdl_neuro.__version__``. It is then installed into a fresh virtual environment
that reuses the installed torch & co. (``--system-site-packages``, ``--no-index``:
the dependencies must already be satisfied, nothing is downloaded) and its
``rdl-neuro`` runs the demo from an unrelated folder, importing the installed copy.
The full fresh-venv check (torch installed first, then the wheel) is in the README.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import rdl_neuro

pytest.importorskip("build")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _source_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.fail(f"git ls-files failed in {REPO_ROOT}: {listed.stderr}")
    return [f for f in listed.stdout.split("\0") if f and (REPO_ROOT / f).is_file()]


@pytest.mark.slow
def test_build_install_and_run_the_wheel(tmp_path):
    """One test, so parallel workers never build twice."""
    src, dist = tmp_path / "src", tmp_path / "dist"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, src / rel)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], cwd=src)
    _check_contents(dist)
    _check_installed_wheel(dist, tmp_path)


def _check_contents(dist: Path) -> None:
    version = rdl_neuro.__version__
    wheel = dist / f"rdl_neuro-{version}-py3-none-any.whl"
    sdist = dist / f"rdl_neuro-{version}.tar.gz"
    assert wheel.is_file() and sdist.is_file(), sorted(p.name for p in dist.iterdir())
    names = set(zipfile.ZipFile(wheel).namelist())
    package_files = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "rdl_neuro").rglob("*")
                     if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts}
    assert "rdl_neuro/configs/example.toml" in package_files
    assert not package_files - names, f"missing from the wheel: {sorted(package_files - names)}"
    metadata = zipfile.ZipFile(wheel).read(f"rdl_neuro-{version}.dist-info/METADATA").decode()
    assert re.search(rf"^Version: {re.escape(version)}$", metadata, re.M)
    assert re.search(r"^License-Expression: MIT$", metadata, re.M)
    assert f"rdl_neuro-{version}.dist-info/licenses/LICENSE" in names
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    assert {"pyproject.toml", "LICENSE", "README.md", "rdl_neuro/configs/example.toml"} <= members


def _check_installed_wheel(dist: Path, tmp_path: Path) -> None:
    version = rdl_neuro.__version__
    venv = tmp_path / "venv"
    # without a pip (and the old setuptools that comes with it) of its own: the installed
    # packages, torch's build-time setuptools included, stay visible; this pip installs into it
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    py, cli = venv / "bin" / "python", venv / "bin" / "rdl-neuro"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "--quiet",
          str(dist / f"rdl_neuro-{version}-py3-none-any.whl")], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = _run([str(py), "-c", "import rdl_neuro, rdl_neuro.cli.config as c; "
                  "print(rdl_neuro.__file__); print(c.example_config_path().is_file())"], cwd=run_dir, env=env)
    location, config_found = where.stdout.split()
    assert Path(location).resolve().is_relative_to(venv.resolve()), f"imported {location}, not the installed wheel"
    assert config_found == "True"
    assert _run([str(cli), "--version"], cwd=run_dir, env=env).stdout.strip() == f"rdl-neuro {version}"
    demo = _run([str(cli), "demo", "--seeds", "1", "--out", "demo_out"], cwd=run_dir, env=env, timeout=900)
    for method in ("baseline", "KD", "RDL", "RDL+KD", "teacher (all training digits)"):
        assert re.search(rf"^{re.escape(method)}\s+\d+\.\d ± \d+\.\d %", demo.stdout, re.M), demo.stdout
    for name in ("results.csv", "histories.csv", "rdms.png", "accuracy.png", "training_curves.png"):
        assert (run_dir / "demo_out" / name).is_file(), name
