"""Tabular: rows of sensor readings (a bundled table or a CSV/Parquet file) -> scaled rows.

One-class like series: each row is its own "series", so normal rows split train/val/test
and anomalous rows all go to test; the scaler is fitted on the training rows alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from seqmodels.data import schemas
from seqmodels.data.config import DataConfig
from seqmodels.data.files import feature_columns, read_table_file
from seqmodels.data.modality import Modality, PreparedData
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.splits import assign_splits, check_label_classes
from seqmodels.spec import HELDOUT_FILE, ID_COLUMNS, SCALER_FILE, SPLITS, DataSpec

KIND = "tabular"
ID_COLUMN = ID_COLUMNS[KIND]


def _shuttle() -> pd.DataFrame:
    """Statlog Shuttle as bundled by river (ODDS anomaly version): 49,097 rows x 9 sensor
    readings, 7% anomalies. Read straight from the package's CSV: no download."""
    from importlib.resources import files

    frame = pd.read_csv(files("river.datasets") / "shuttle.csv.gz")
    return frame.rename(columns={"anomaly": "label"})


SOURCES: dict[str, Callable[[], pd.DataFrame]] = {"shuttle": _shuttle}


def load_rows(cfg: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """Tabular rows (feature columns + optional 0/1 `label`), not yet validated."""
    bundled = SOURCES.get(cfg.source)
    frame = bundled() if bundled else read_table_file(cfg.source, SOURCES)
    features = [c for c in feature_columns(frame.columns, cfg.features) if c != ID_COLUMN]
    return frame[features + (["label"] if "label" in frame.columns else [])], features


class RawRows(pa.DataFrameModel):
    """Tabular input before preparation (feature columns added by `rows_schema`)."""

    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)

    class Config:
        coerce = True


class TabularTable(pa.DataFrameModel):
    """Prepared tabular rows: `x` holds the scaled features; `label` 1 = anomalous."""

    row_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    split: Series[str] = pa.Field(isin=list(SPLITS))
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(isin=[0, 1])

    class Config:
        strict = True


def rows_schema(features: list[str]) -> pa.DataFrameSchema:
    """The raw rows with their feature columns (named by the data)."""
    return RawRows.to_schema().add_columns(schemas.feature_checks(features))


def prepare_rows(table: pd.DataFrame, features: list[str], cfg: DataConfig,
                 seed: int) -> tuple[pd.DataFrame, StandardScaler, DataSpec]:
    """Tabular rows -> scaled examples. One-class like series: each row is its own "series",
    so normal rows split train/val/test and anomalous rows all go to test."""
    row_ids = pd.Index(np.arange(len(table), dtype=np.int64), name=ID_COLUMN)
    labels = (pd.Series(table["label"].to_numpy(), index=row_ids) if "label" in table.columns
              else pd.Series(np.nan, index=row_ids))
    if "label" in table.columns:
        check_label_classes(labels, cfg.source, "rows")
    splits = assign_splits(labels, cfg.split, seed, cfg.source).reindex(row_ids)
    scaler = StandardScaler.fit(table.loc[splits.to_numpy() == "train"], features)
    frame = pd.DataFrame({ID_COLUMN: row_ids.to_numpy(), "split": splits.to_numpy().astype(str)})
    frame["x"] = list(scaler.transform(table))
    if "label" in table.columns:
        frame["label"] = table["label"].to_numpy(np.int64)
    spec = DataSpec(kind=KIND, input_shape=(len(features),), features=tuple(features),
                    has_labels="label" in table.columns)
    return frame, scaler, spec


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """Load and validate the rows, split and scale them; the scaler is kept beside them."""
    table, features = load_rows(cfg)
    table = schemas.validate_table(table, rows_schema(features), table="tabular rows", source=cfg.source)
    examples, scaler, spec = prepare_rows(table, features, cfg, seed)
    heldout = table.loc[examples["split"].eq("test").to_numpy()].reset_index(drop=True)
    return PreparedData(examples, spec, f"{len(examples)} rows",
                        {SCALER_FILE: scaler.to_dict(), HELDOUT_FILE: heldout})


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=TabularTable)
