"""benchmarks/rdm_speed.py runs (quick mode) and ends with a well-formed RESULT line."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULT = re.compile(
    r"^RESULT corr_rdm_speedup=(\S+) corr_rdm_vs_matmul=(\S+) rank_compare_min_speedup=(\S+) max_abs_diff=(\S+) min_speedup=(\S+)$"
)


@pytest.mark.slow
def test_rdm_speed_quick_result_line():
    proc = subprocess.run(
        [sys.executable, "benchmarks/rdm_speed.py", "--quick", "--seed", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    speedup, vs_matmul, rank_min, diff, min_speedup = (float(v) for v in match.groups())
    assert speedup > 0 and vs_matmul > 0 and rank_min > 0
    assert 0 < min_speedup <= min(speedup, rank_min)  # the smallest ratio over every row
    assert 0 <= diff < 1e-9  # torch and rsatoolbox agree on every case
    assert any(line.startswith("compare tau-a") for line in lines)
