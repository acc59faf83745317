"""Stage `validate`: the Pandera contracts on everything prepare wrote, with a full report
in paths.validation_report (the stage's output, valid or not). Each table is read and
checked a block of rows at a time (seqmodels.data.blocks), so memory does not grow with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.blocks import block_rows, validate_blocks
from seqmodels.data.registry import modality
from seqmodels.data.tables import read_spec, streaming_parquet
from seqmodels.errors import DataError, DataValidationError


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    entries: list[dict[str, Any]] = []
    failures: list[DataValidationError] = []
    for table in modality(spec.kind).prepared_tables(spec):
        path = prepared / table.file
        try:
            rows = validate_blocks(_blocks(path), table.schema, table=table.name, source=str(path),
                                   series_column=table.series_column)
            entries.append({"table": table.name, "source": str(path), "valid": True, "rows": rows})
        except DataValidationError as error:
            entries.append(error.report)
            failures.append(error)
    report = Path(cfg.paths.validation_report)
    schemas.write_report(report, entries)
    if failures:
        raise DataValidationError("\n".join(f.what for f in failures), where=str(report),
                                  fix="full report in the file above; fix the data and rerun")
    tables = ", ".join(f"{e['table']} ({e['rows']} rows)" for e in entries)
    print(f"validated {tables} -> {report}")


def _blocks(path: Path) -> Iterator[pd.DataFrame]:
    try:
        file = streaming_parquet(path)
        for batch in file.iter_batches(batch_size=block_rows(file)):
            yield batch.to_pandas()
    except Exception as error:
        raise DataError(f"cannot read {path}: {error}", where=str(path),
                        fix="rerun the prepare stage") from None
