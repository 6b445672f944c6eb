"""benchmarks/searchlight_speed.py runs (quick mode): a RESULT line, rsatoolbox's numbers, a record and a peak memory."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"^RESULT searchlight_speedup=(\S+) max_abs_diff=(\S+) threads=(\d+) cpu_speedup=(\S+) "
                    r"speedup_1thread=(\S+) speedup_float32_1thread=(\S+) max_abs_diff_float32=(\S+) "
                    r"floor_ratio=(\S+) crossnobis_speedup=(\S+) crossnobis_max_abs_diff=(\S+) "
                    r"peak_memory_gb=(\S+) memory_voxels=(\d+)$")


@pytest.mark.slow
def test_searchlight_speed_quick(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/searchlight_speed.py", "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, f"last line is not a RESULT line: {lines[-1]!r}"
    speedup, diff, threads, cpu, speedup1, speedup32, diff32, floor_ratio, cross, cross_diff, peak_gb = (
        float(v) for v in match.groups()[:11])
    # float64 at the defaults and on one thread: rsatoolbox's numbers; float32: to its precision
    assert speedup > 0 and cpu > 0 and speedup1 > 0 and 0 <= diff < 1e-10 and threads >= 1
    assert speedup32 > 0 and 0 <= diff32 < 1e-5
    assert floor_ratio > 1  # the floor counts only the products: a lower bound
    assert cross > 0 and 0 <= cross_diff < 1e-10
    assert 0 < peak_gb < 8 and int(match[12]) > 4000
    table = (tmp_path / "searchlight_speed.csv").read_text()
    assert "get_searchlight_RDMs" in table and "crossnobis" in table and "defaults" in table and "floor" in table
    assert "200 centres x" in table and "50 centres x" in table
    assert (tmp_path / "records" / "searchlight_speed.md").is_file()
