"""Stage `validate`: the Pandera contracts on everything prepare wrote, with a full report
in paths.validation_report (the stage's output, valid or not). Each table is read and
checked a block of rows at a time (seqmodels.data.blocks), so memory does not grow with it,
and a piece of it per task (seqmodels.data.piece_checks), spread over Ray Data as
ray.spread_reads says (seqmodels.distributed.data_map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.modality import PreparedTable
from seqmodels.data.piece_checks import check_pieces
from seqmodels.data.pieces import Mapper, parquet_pieces
from seqmodels.data.registry import modality
from seqmodels.data.tables import read_spec
from seqmodels.distributed.data_map import stage_mapper
from seqmodels.errors import DataError, DataValidationError


def run(cfg: Config) -> None:
    prepared = Path(cfg.paths.prepared)
    spec = read_spec(prepared)
    entries: list[dict[str, Any]] = []
    failures: list[DataValidationError] = []
    with stage_mapper(cfg.ray, [str(prepared)]) as mapper:
        for table in modality(spec.kind).prepared_tables(spec):
            path = prepared / table.file
            try:
                rows = _check(path, table, mapper, cfg.data.piece_rows)
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


def _check(path: Path, table: PreparedTable, mapper: Mapper, piece_rows: int) -> int:
    """The rows of one table, checked a piece per task; raises its one DataValidationError."""
    try:
        validation, _ = check_pieces(parquet_pieces(str(path), str(path), piece_rows), table.schema,
                                     table=table.name, source=str(path), series_column=table.series_column,
                                     mapper=mapper)
    except DataValidationError:
        raise
    except DataError as error:
        raise DataError(f"cannot read {path}: {error.what}", where=str(path),
                        fix="rerun the prepare stage") from None
    return validation.finish()
