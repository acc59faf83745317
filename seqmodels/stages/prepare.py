"""Stage `prepare`: the data source -> canonical table, splits, scaler and model inputs in
paths.prepared. Series are written as they are prepared, a group of whole series at a time
(seqmodels.data.series.write_prepared), their reads spread over Ray Data tasks as
ray.spread_reads says (seqmodels.distributed.data_map); the other kinds are prepared in
memory (seqmodels.data.build) and written here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.build import prepare_examples
from seqmodels.data.config import DataConfig
from seqmodels.data.modality import PreparedSummary
from seqmodels.data.pieces import Mapper
from seqmodels.data.registry import modality
from seqmodels.data.tables import examples_to_arrow, parquet_write_options, row_group_rows
from seqmodels.distributed.data_map import stage_mapper
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
    kind = modality(cfg.data.kind)
    try:
        with publishing(target) as staging, stage_mapper(cfg.ray, _inputs(cfg.data)) as mapper:
            summary = (kind.write or write_in_memory)(cfg.data, cfg.seed, staging, mapper)
            write_json_atomic(staging / SPEC_FILE, summary.spec.to_dict())
    except DataValidationError as error:
        schemas.write_report(report, [error.report])
        raise DataValidationError(error.what, where=f"{error.where} (full report: {report})",
                                  fix=error.fix) from None
    report.unlink(missing_ok=True)  # a report of an earlier failure no longer applies
    counts = {split: summary.counts.get(split, 0) for split in SPLITS}
    shape = "x".join(str(n) for n in summary.spec.input_shape)
    print(f"prepared {summary.description} of shape {shape} {counts} in {target}")


def _inputs(data: DataConfig) -> list[str]:
    return [location for location in (data.source, data.test_source) if location is not None]


def write_in_memory(data: DataConfig, seed: int, directory: Path, mapper: Mapper) -> PreparedSummary:
    """A modality without its own writer: prepared in memory (seqmodels.data.build), then
    written as Arrow vectors, with the spec and the modality's artifacts (vocabulary...).
    Such data fits in memory: its reads are this process's (`mapper` is not used)."""
    prepared = prepare_examples(data, seed)
    spec = prepared.spec
    examples = examples_to_arrow(prepared.examples, spec.input_dim, spec.discrete)
    pq.write_table(examples, directory / EXAMPLES_FILE, row_group_size=row_group_rows(examples),
                   **parquet_write_options(examples.schema))
    for name, payload in prepared.artifacts.items():
        if isinstance(payload, pd.DataFrame):
            payload.to_parquet(directory / name, index=False)
        else:
            write_json_atomic(directory / name, payload)
    counts = prepared.examples.groupby("split").size().to_dict()
    return PreparedSummary(spec, prepared.description, {str(k): int(v) for k, v in counts.items()})
