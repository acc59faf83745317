"""The scale benchmark's path, small (issue 19): benchmarks/pipeline_scale.py at 100k and
1M rows through prepare and validate, each stage a fresh process as `dvc repro` runs it,
then a bad value deep in the 1M-row file. Its figures are the benchmark's to judge; here the
path must work end to end and the bad row must be named and lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_scale_path_runs_at_a_million_rows_and_names_a_bad_row_deep_inside(tmp_path):
    results = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pipeline_scale.py"), "--rows", "100000", "--scale", "10",
         "--stages", "prepare", "validate", "--keep", str(tmp_path), "--results", str(results),
         "--bad-row", "987654"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(results.read_text())
    large = figures["sizes"]["1000000"]
    assert large["series"] == 1000 and large["plain_prepare"]["windows"] == 19_000
    assert large["prepare"]["peak_pss_mib"] > 0 and large["validate"]["peak_pss_mib"] > 0
    assert set(figures["peak_memory_large_vs_small"]) == {"prepare", "validate"}
    bad = figures["bad_row"]
    assert bad["exit_code"] == 2 and bad["names_row"] and bad["names_file"] and bad["previous_prepared_kept"]
