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
