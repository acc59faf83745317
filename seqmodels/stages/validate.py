"""Stage `validate`: the Pandera contracts on everything prepare wrote, with a full report
in paths.validation_report (the stage's output, valid or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.registry import modality
from seqmodels.data.tables import read_spec
from seqmodels.errors import DataError, DataValidationError


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    entries: list[dict[str, Any]] = []
    failures: list[DataValidationError] = []
    for table in modality(spec.kind).prepared_tables(spec):
        path = prepared / table.file
        frame = _read(path)
        try:
            schemas.validate_table(frame, table.schema, table=table.name, source=str(path))
            entries.append({"table": table.name, "source": str(path), "valid": True, "rows": len(frame)})
        except DataValidationError as error:
            entries.append({**error.report, "rows": len(frame)})
            failures.append(error)
    report = Path(cfg.paths.validation_report)
    schemas.write_report(report, entries)
    if failures:
        raise DataValidationError("\n".join(f.what for f in failures), where=str(report),
                                  fix="full report in the file above; fix the data and rerun")
    tables = ", ".join(f"{e['table']} ({e['rows']} rows)" for e in entries)
    print(f"validated {tables} -> {report}")


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:
        raise DataError(f"cannot read {path}: {error}", where=str(path),
                        fix="rerun the prepare stage") from None
