"""The README's bring-your-own-data example is real: its rows are in docs/example-series.csv,
and that file prepares with the windows the README uses."""

import re

from seqmodels.config import config_from_mapping
from seqmodels.data.build import build_examples
from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "example-series.csv"


def test_readme_csv_example_rows_come_from_the_example_file():
    block = re.search(r"```csv\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    lines = EXAMPLE.read_text().splitlines()
    shown = block.strip().splitlines()
    assert shown[0] == lines[0]
    assert set(shown[1:]) <= set(lines[1:])


def test_example_file_prepares_as_the_readme_says():
    cfg = config_from_mapping({"data": {"source": str(EXAMPLE), "window": 24, "stride": 12}})
    prepared = build_examples(cfg)
    assert prepared.spec.features == ("temperature", "pressure")
    examples = prepared.examples
    assert examples["series_id"].nunique() == 24 and len(examples) == 24 * 3
    anomalous = examples.loc[examples["label"] == 1, "series_id"].unique()
    assert len(anomalous) == 6 and set(examples.loc[examples["label"] == 1, "split"]) == {"test"}


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def run_blocks(blocks: list[str], cwd) -> None:
    """Run each block as written, in a fresh interpreter in `cwd` (a checkout)."""
    import subprocess
    import sys

    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], cwd=cwd, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"README block failed:\n{block}\n{result.stderr[-3000:]}"


def test_the_readme_detector_example_runs_as_written(tmp_path):
    """The Detector block needs only the example file; the other blocks read pipeline
    outputs and run in the end-to-end test (test_pipeline_e2e)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    blocks = [block for block in python_blocks() if "Detector" in block]
    assert blocks
    run_blocks(blocks, tmp_path)
    assert (tmp_path / "models/pumps/threshold.json").is_file()
