"""Stage `prepare`: the data source -> canonical table, splits, scaler and model inputs in
paths.prepared (see seqmodels.data.build)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.build import build_examples
from seqmodels.data.modality import PreparedData
from seqmodels.data.tables import examples_to_arrow, parquet_write_options, row_group_rows
from seqmodels.errors import DataValidationError
from seqmodels.publish import clean_stale_staging, publishing, write_json_atomic
from seqmodels.spec import EXAMPLES_FILE, SPEC_FILE, SPLITS

PREPARE_REPORT = "prepare-failures.json"


def report_path(cfg: Config) -> Path:
    """Where prepare writes the full Pandera report of input that fails validation: beside
    the validate stage's report, which stays that stage's own output."""
    return Path(cfg.paths.validation_report).with_name(PREPARE_REPORT)


def run(cfg: Config) -> None:
    target = Path(cfg.paths.prepared)
    clean_stale_staging(target)
    report = report_path(cfg)
    try:
        prepared = build_examples(cfg)
    except DataValidationError as error:
        schemas.write_report(report, [error.report])
        raise DataValidationError(error.what, where=f"{error.where} (full report: {report})",
                                  fix=error.fix) from None
    report.unlink(missing_ok=True)  # a report of an earlier failure no longer applies
    with publishing(target) as staging:
        write_prepared(prepared, staging)
    counts = prepared.examples.groupby("split").size().reindex(list(SPLITS), fill_value=0).to_dict()
    shape = "x".join(str(n) for n in prepared.spec.input_shape)
    print(f"prepared {prepared.description} of shape {shape} {counts} in {target}")


def write_prepared(prepared: PreparedData, directory: Path) -> None:
    """The examples as Arrow vectors, the spec, and the modality's artifacts (series table,
    scaler, vocabulary) into `directory`."""
    spec = prepared.spec
    examples = examples_to_arrow(prepared.examples, spec.input_dim, spec.discrete)
    pq.write_table(examples, directory / EXAMPLES_FILE, row_group_size=row_group_rows(examples),
                   **parquet_write_options(examples.schema))
    write_json_atomic(directory / SPEC_FILE, spec.to_dict())
    for name, payload in prepared.artifacts.items():
        if isinstance(payload, pd.DataFrame):
            payload.to_parquet(directory / name, index=False)
        else:
            write_json_atomic(directory / name, payload)
