"""Series: a data source -> the canonical long-form table -> windows the model reads.

Canonical table: one row per (series_id, t) with one float column per feature and an
optional integer `label` (1 = anomalous). Bundled datasets ship inside PyPI packages so the
default pipeline never touches the network. Windows are cut per series after the split
(seqmodels.data.splits), over values scaled on training series alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from seqmodels.data import schemas
from seqmodels.data.config import DataConfig
from seqmodels.data.files import feature_columns, read_table_file
from seqmodels.data.modality import Modality, PreparedData, PreparedTable
from seqmodels.data.scaling import StandardScaler
from seqmodels.data.series_files import SeriesFile, read_series_file, steps_forward
from seqmodels.data.splits import assign_splits, check_label_classes, time_splits
from seqmodels.data.ucr_anomaly import archive_files
from seqmodels.data.windows import cut_windows
from seqmodels.errors import DataError
from seqmodels.spec import HELDOUT_FILE, ID_COLUMNS, SCALER_FILE, SERIES_FILE, SPLITS, DataSpec

KIND = "series"
ID_COLUMN = ID_COLUMNS[KIND]


# --- bundled sources ---------------------------------------------------------------------

def _one_class_table(name: str, splits: list[tuple[np.ndarray, np.ndarray]], cfg: DataConfig) -> pd.DataFrame:
    """Labelled UCR arrays (X: series x channels x time) as the canonical table, in a one-class
    setup: data.normal_class is normal (label 0), every other class is anomalous. The UCR
    train/test split is pooled; prepare re-splits by series so the split fractions apply."""
    classes = sorted({str(c) for _, y in splits for c in y})
    if cfg.normal_class not in classes:
        raise DataError(
            f"data.normal_class={cfg.normal_class!r} is not a class of {name}",
            where="params.yaml: data.normal_class",
            fix=f"choose one of {classes}",
        )
    frames, offset = [], 0
    for X, y in splits:
        n, channels, length = X.shape
        table = pd.DataFrame(
            {
                "series_id": np.repeat([f"{name.lower()}-{offset + i:04d}" for i in range(n)], length),
                "t": np.tile(np.arange(length, dtype=np.int64), n),
                "label": np.repeat((np.asarray(y).astype(str) != cfg.normal_class).astype(np.int64), length),
            }
        )
        for c in range(channels):
            table[f"x{c}" if channels > 1 else "value"] = X[:, c, :].reshape(-1).astype(np.float64)
        frames.append(table)
        offset += n
    return pd.concat(frames, ignore_index=True)


def _ucr_from_sktime(name: str, cfg: DataConfig) -> pd.DataFrame:
    """A UCR dataset bundled with sktime (extract_path=None reads the packaged copy: no download)."""
    from sktime.datasets import load_UCR_UEA_dataset

    splits = [load_UCR_UEA_dataset(name, split=split, return_X_y=True, return_type="numpy3D")
              for split in ("train", "test")]
    return _one_class_table(name, splits, cfg)


def _ucr_from_tslearn(name: str, cfg: DataConfig) -> pd.DataFrame:
    """A UCR dataset cached inside tslearn (Trace: 4 classes, 200 series of 275 steps), offline."""
    from tslearn.datasets import CachedDatasets

    x_train, y_train, x_test, y_test = CachedDatasets().load_dataset(name)
    # tslearn stores (series, time, channels); the table builder expects (series, channels, time).
    splits = [(x_train.transpose(0, 2, 1), y_train), (x_test.transpose(0, 2, 1), y_test)]
    return _one_class_table(name, splits, cfg)


def _bundled_table(frame: pd.DataFrame) -> tuple[SeriesFile, None]:
    return SeriesFile(frame), None


def _ucr_anomaly_archive(name: str) -> tuple[SeriesFile, SeriesFile]:
    """An archive series' TRAIN (normal history) and TEST (labelled stream) files."""
    train, test = archive_files(name)
    return _read_file(train), _read_file(test)


SOURCES: dict[str, Callable[[DataConfig], tuple[SeriesFile, SeriesFile | None]]] = {
    "gunpoint": lambda cfg: _bundled_table(_ucr_from_sktime("GunPoint", cfg)),
    "trace": lambda cfg: _bundled_table(_ucr_from_tslearn("Trace", cfg)),
    "kdd135": lambda cfg: _ucr_anomaly_archive("kdd135"),
}


@dataclass
class SeriesInput:
    """The validated canonical rows of data.source (and data.test_source, whose rows carry
    split="test"), their feature columns, and whether the files' layout means point labels."""

    table: pd.DataFrame
    features: list[str]
    point_labels: bool = False


def _read_file(location: str | Path) -> SeriesFile:
    """A local file (bundled archives are Paths) or a URI kept as text (Path mangles s3://)."""
    location = str(location)
    return read_series_file(location, read_table_file(location, SOURCES))


def _source_files(cfg: DataConfig) -> tuple[SeriesFile, SeriesFile | None]:
    """data.source's rows and the test rows: data.test_source, else a bundled test file."""
    train, test = SOURCES[cfg.source](cfg) if cfg.source in SOURCES else (_read_file(cfg.source), None)
    if cfg.test_source is not None:
        test = _read_file(cfg.test_source)
    return train, test


def _canonical_columns(loaded: SeriesFile, features: list[str], source: str) -> pd.DataFrame:
    frame = loaded.table
    missing = [c for c in ("series_id", "t") if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) {missing} missing from {source}", where=source,
                        fix="the canonical table needs series_id, t, feature columns, optional label "
                            "(or the single-series form: timestamp, value columns, optional is_anomaly)")
    return frame[["series_id", "t", *features] + (["label"] if "label" in frame.columns else [])]


def _validated(loaded: SeriesFile, features: list[str], source: str) -> pd.DataFrame:
    return schemas.validate_table(_canonical_columns(loaded, features, source),
                                  series_schema(features, time_dtype(loaded.table)),
                                  table="canonical series", source=source)


def _check_test_file(test: SeriesFile, train: SeriesFile, features: list[str], cfg: DataConfig,
                     where: str) -> None:
    """The test file continues the training data: same value columns, same timestamp type."""
    test_features = feature_columns(test.table, cfg.features)
    if sorted(test_features) != sorted(features):
        raise DataError(f"the test file's value columns {test_features} differ from the training "
                        f"file's {features}", where=where,
                        fix="give both files the same value columns (or list them in data.features)")
    if "t" in test.table.columns and time_dtype(test.table) != time_dtype(train.table):
        raise DataError(f"mixed timestamp types: {where} has {time_dtype(test.table)} timestamps, "
                        f"{cfg.source} has {time_dtype(train.table)}", where=where,
                        fix="use one timestamp type (integer steps or datetimes) in both files")


def load_source(cfg: DataConfig) -> SeriesInput:
    """The validated canonical rows of data.source and data.test_source (split="test")."""
    train, test = _source_files(cfg)
    features = feature_columns(train.table, cfg.features)
    tables = [_validated(train, features, cfg.source)]
    if test is not None:
        where = cfg.test_source or f"{cfg.source} (its test file)"
        _check_test_file(test, train, features, cfg, where)
        tables.append(_validated(test, features, where).assign(split="test"))
    table = pd.concat(tables, ignore_index=True)
    return SeriesInput(table, features, train.point_labels or (test is not None and test.point_labels))


def time_dtype(frame: pd.DataFrame) -> str:
    """The canonical `t` type of a table: integer steps unless its t holds datetimes."""
    if "t" in frame.columns and pd.api.types.is_datetime64_any_dtype(frame["t"]):
        return "datetime64[ns]"
    return "int64"


# --- table contracts ---------------------------------------------------------------------

class SeriesTable(pa.DataFrameModel):
    """Canonical long-form series table (features added by `series_schema`). Prepare adds
    each step's `split`; `t` is int64 unless the source's timestamps are datetimes."""

    series_id: Series[str] = pa.Field(nullable=False)
    t: Series[np.int64] = pa.Field(nullable=False)
    label: Series[np.int64] | None = pa.Field(isin=[0, 1], nullable=False)
    split: Series[str] | None = pa.Field(isin=list(SPLITS), nullable=False)

    class Config:
        coerce = True

    @pa.parser("t")
    def fractional_steps_fail_coercion(cls, t: pd.Series) -> pd.Series:
        """Coercing to int64 would silently truncate a step of 1.5 to 1; as text it fails the
        coercion instead and is reported (parsers run before coercion)."""
        if t.dtype.kind not in "fO":
            return t
        return t.map(lambda v: str(v) if isinstance(v, float) and np.isfinite(v) and not v.is_integer()
                     else v)

    @pa.dataframe_check(error="t must be strictly increasing (unique) within each series_id")
    def t_strictly_increasing(cls, df: pd.DataFrame) -> Series[bool]:
        # A `t` that is not a number is reported by the dtype check; here it passes.
        dated = pd.api.types.is_datetime64_any_dtype(df["t"])
        return steps_forward(df["t"] if dated else pd.to_numeric(df["t"], errors="coerce"), df["series_id"])


class WindowTable(pa.DataFrameModel):
    """Prepared windows: `x` holds window * n_features float32 values, time-major; `start`
    is the window's first step, counted from the start of its series."""

    window_id: Series[np.int64] = pa.Field(unique=True, ge=0)
    series_id: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLITS))
    start: Series[np.int64] = pa.Field(ge=0)
    x: Series[object]
    label: Series[np.int64] | None = pa.Field(isin=[0, 1])

    class Config:
        strict = True


def series_schema(features: list[str], time_type: str = "int64") -> pa.DataFrameSchema:
    """The canonical table with its feature columns (named by the data) and its `t` type."""
    schema = SeriesTable.to_schema().add_columns(schemas.feature_checks(features))
    return schema if time_type == "int64" else schema.update_column("t", dtype=time_type)


def canonical_table(spec: DataSpec) -> list[PreparedTable]:
    """The canonical table prepare keeps beside the windows, checked by validate too."""
    schema = series_schema(list(spec.features), spec.time_dtype)
    return [PreparedTable("canonical series", SERIES_FILE, schema, series_column="series_id")]


# --- preparation -------------------------------------------------------------------------

def series_level_labels(table: pd.DataFrame) -> pd.Series:
    """A series is anomalous if any of its rows is; NaN when the table has no labels."""
    if "label" not in table.columns:
        return pd.Series(np.nan, index=pd.Index(table["series_id"].unique(), name="series_id"))
    return table.groupby("series_id", sort=False)["label"].max()


def uses_point_labels(table: pd.DataFrame, cfg: DataConfig, from_layout: bool) -> bool:
    """data.labels resolved: `auto` means points when labels vary inside a series or the
    file's layout gives them per step (is_anomaly)."""
    if "label" not in table.columns:
        if cfg.labels == "points":
            raise DataError("data.labels=points but the data has no label (or is_anomaly) column",
                            where="params.yaml: data.labels",
                            fix="add per-step labels or set data.labels=auto")
        return False
    if cfg.labels != "auto":
        return cfg.labels == "points"
    return from_layout or bool(table.groupby("series_id", sort=False)["label"].nunique().gt(1).any())


def sort_canonical(table: pd.DataFrame) -> pd.DataFrame:
    """Group rows by series (in order of first appearance) keeping each series' row order."""
    order = pd.Index(table["series_id"].unique())
    key = order.get_indexer(table["series_id"])
    return table.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


def row_splits(table: pd.DataFrame, cfg: DataConfig, seed: int, point_labels: bool) -> np.ndarray:
    """Each row's split. Rows of a test file are test already, and the rest is cut in time
    order into train and val (val = its last data.split.val); without a test file the rows
    are split by series or by time (data.split.by)."""
    fixed = table["split"].to_numpy(dtype=object) if "split" in table.columns else np.full(len(table), None)
    own = pd.isna(fixed)
    rows = table.loc[own]
    fractions = cfg.split if own.all() else cfg.split.model_copy(update={"test": 0.0})
    if cfg.split.by == "time" or not own.all():
        lengths = rows.groupby("series_id", sort=False).size()
        fixed[own] = time_splits(lengths, fractions, cfg.window, cfg.source)
    else:
        labels = series_level_labels(rows)
        if "label" in rows.columns and not point_labels:
            check_label_classes(labels, cfg.source, "series")
        fixed[own] = rows["series_id"].map(assign_splits(labels, fractions, seed, cfg.source)).to_numpy()
    return fixed.astype(str)


def train_windows_normal(windows: pd.DataFrame, source: str) -> pd.DataFrame:
    """Drop training windows that contain a labelled anomaly step (data.train_normal_only):
    an autoencoder taught to reconstruct an incident would score it as normal."""
    if "label" not in windows.columns:
        return windows
    drop = windows["split"].eq("train") & windows["label"].eq(1)
    if drop.any() and drop.sum() == windows["split"].eq("train").sum():
        raise DataError(f"data.train_normal_only drops every training window: all {int(drop.sum())} "
                        "contain a labelled anomaly step",
                        where=f"params.yaml: data.train_normal_only ({source})",
                        fix="set data.train_normal_only=false, use a shorter data.window, or train on a "
                            "stretch without incidents")
    kept = windows.loc[~drop].reset_index(drop=True)
    kept[ID_COLUMN] = np.arange(len(kept), dtype=np.int64)
    return kept


def prepare_windows(
    table: pd.DataFrame, features: list[str], cfg: DataConfig, seed: int, point_layout: bool = False,
) -> tuple[pd.DataFrame, StandardScaler, DataSpec, pd.DataFrame]:
    """Validated canonical rows -> (windows, scaler fitted on train steps, spec, the rows
    with their `split`). Point labels or a time split score every step (spec.timeline)."""
    table = sort_canonical(table)
    point_labels = uses_point_labels(table, cfg, point_layout)
    if point_labels:
        check_label_classes(table["label"], cfg.source, "time steps")
    timeline = point_labels or cfg.split.by == "time" or "split" in table.columns
    table = table.assign(split=row_splits(table, cfg, seed, point_labels))
    normal_only = cfg.train_normal_only if cfg.train_normal_only is not None else point_labels
    fit_rows = table["split"].eq("train")
    if normal_only and "label" in table.columns:
        fit_rows &= table["label"].eq(0)
    scaler = StandardScaler.fit(table.loc[fit_rows], features)
    windows = cut_windows(table, scaler.transform(table), cfg, timeline)
    if normal_only:
        windows = train_windows_normal(windows, cfg.source)
    spec = DataSpec(kind=KIND, input_shape=(cfg.window, len(features)), features=tuple(features),
                    has_labels="label" in table.columns, point_labels=point_labels, timeline=timeline,
                    time_dtype=time_dtype(table), stride=cfg.stride)
    return windows, scaler, spec, table


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """Load and validate the canonical rows, then cut their windows. The rows (with each
    step's split) and the scaler are written beside the windows, so validate can recheck the
    table, the timeline can be rebuilt from it, and the scaling that produced `x` stays on record."""
    loaded = load_source(cfg)
    examples, scaler, spec, table = prepare_windows(loaded.table, loaded.features, cfg, seed,
                                                    loaded.point_labels)
    heldout = table.loc[table["split"].eq("test")].drop(columns=["split"])
    return PreparedData(examples, spec, f"{table['series_id'].nunique()} series -> {len(examples)} windows",
                        {SERIES_FILE: table, SCALER_FILE: scaler.to_dict(), HELDOUT_FILE: heldout})


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=WindowTable,
                    extra_tables=canonical_table)
