"""Stage `validate`: the Pandera contracts on everything prepare wrote, with a full report
in paths.validation_report (the stage's output, valid or not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.tables import read_spec
from seqmodels.errors import DataError, DataValidationError
from seqmodels.spec import EXAMPLES_FILE, SERIES_FILE


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    checks = [(spec.kind, prepared / EXAMPLES_FILE,
               schemas.examples_schema(spec.kind, spec.input_dim, spec.n_classes, spec.vocab_size))]
    if spec.kind == "series":
        checks.insert(0, ("canonical series", prepared / SERIES_FILE,
                          schemas.series_schema(list(spec.features))))
    entries: list[dict[str, Any]] = []
    failures: list[DataValidationError] = []
    for table, path, schema in checks:
        frame = _read(path)
        try:
            schemas.validate_table(frame, schema, table=table, source=str(path))
            entries.append({"table": table, "source": str(path), "valid": True, "rows": len(frame)})
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
