"""benchmarks/searchlight_speed.py runs (quick mode): a RESULT line, rsatoolbox's numbers, a record and a peak memory."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"^RESULT searchlight_speedup=(\S+) max_abs_diff=(\S+) peak_memory_gb=(\S+) memory_voxels=(\d+)$")


@pytest.mark.slow
def test_searchlight_speed_quick(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/searchlight_speed.py", "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    speedup, diff, peak_gb, memory_voxels = float(match[1]), float(match[2]), float(match[3]), int(match[4])
    assert speedup > 0 and 0 <= diff < 1e-10  # the same RDMs and evaluations as rsatoolbox's
    assert 0 < peak_gb < 8 and memory_voxels > 4000
    table = (tmp_path / "searchlight_speed.csv").read_text()
    assert "get_searchlight_RDMs" in table
    assert "200 centres x" in table
    assert (tmp_path / "records" / "searchlight_speed.md").is_file()
