"""benchmarks/rsa_speed.py --quick runs and ends with its RESULT line."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rsa_speed_quick(kriegeskorte_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rsa_speed.py"), "--quick",
                           "--data", str(kriegeskorte_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"RESULT boot_corr_speedup=([\d.]+) boot_tau_a_speedup=([\d.]+) "
                         r"max_abs_diff_fixed=([\d.e+-]+) dual_boot_speedup=([\d.]+) crossval_speedup=([\d.]+) "
                         r"min_speedup=([\d.]+)", last)
    assert match, last
    assert float(match.group(3)) <= 1e-9
    assert 0 < float(match.group(6)) <= min(float(match.group(g)) for g in (1, 2, 4, 5))
