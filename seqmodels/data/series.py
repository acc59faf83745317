"""Series: a data source -> the canonical long-form table -> windows the model reads.

Canonical table: one row per (series_id, t) with one float column per feature and an
optional integer `label` (1 = anomalous). Bundled datasets ship inside PyPI packages so the
default pipeline never touches the network. Windows are cut per series after the split
(seqmodels.data.splits), over values scaled on training series alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq
from pandera.typing import Series

from seqmodels.data import schemas
from seqmodels.data.blocks import BlockValidation
from seqmodels.data.config import DataConfig
from seqmodels.data.files import check_table_file, feature_columns, is_parquet, read_errors, read_table_file
from seqmodels.data.modality import Modality, PreparedData, PreparedSummary, PreparedTable
from seqmodels.data.piece_checks import SeriesOrder, check_pieces
from seqmodels.data.pieces import Mapper, Piece, serial_map
from seqmodels.data.scaling import ScalerFit, StandardScaler
from seqmodels.data.series_files import SeriesFile, read_series_file, single_series_form, steps_forward
from seqmodels.data.series_stream import (
    FROM_TEST_FILE,
    Positions,
    SeriesGroup,
    SeriesSurvey,
    SurveyedPiece,
    TableSource,
    canonical_types,
    planned_groups,
    read_group,
    series_groups,
)
from seqmodels.data.splits import assign_splits, check_label_classes, time_splits
from seqmodels.data.tables import examples_to_arrow, parquet_write_options, row_group_rows
from seqmodels.data.ucr_anomaly import archive_files
from seqmodels.data.windows import cut_windows
from seqmodels.errors import DataError
from seqmodels.publish import write_json_atomic
from seqmodels.spec import EXAMPLES_FILE, HELDOUT_FILE, ID_COLUMNS, SCALER_FILE, SERIES_FILE, SPLITS, DataSpec
from seqmodels.storage import open_input

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
    return (read_series_file(str(train), read_table_file(train, SOURCES)),
            read_series_file(str(test), read_table_file(test, SOURCES)))


SOURCES: dict[str, Callable[[DataConfig], tuple[SeriesFile, SeriesFile | None]]] = {
    "gunpoint": lambda cfg: _bundled_table(_ucr_from_sktime("GunPoint", cfg)),
    "trace": lambda cfg: _bundled_table(_ucr_from_tslearn("Trace", cfg)),
    "kdd135": lambda cfg: _ucr_anomaly_archive("kdd135"),
}


def _loaded(loaded: SeriesFile, where: str, test: bool = False) -> TableSource:
    """A table read whole (a CSV file, the single-series form, a bundled dataset)."""
    _check_canonical_columns(loaded.table.columns, where)
    return TableSource(where=where, columns=list(loaded.table.columns), time_type=time_dtype(loaded.table),
                       point_labels=loaded.point_labels, test=test, frame=loaded.table)


def _file(location: str | Path, test: bool = False) -> TableSource:
    """A local file (bundled archives are Paths) or a URI kept as text (Path mangles s3://).
    A Parquet file in the canonical form streams; other files are read whole."""
    location = check_table_file(location, SOURCES)
    if is_parquet(location):
        with read_errors(location), open_input(location) as handle:
            metadata = pq.ParquetFile(handle).metadata
        schema = metadata.schema.to_arrow_schema()
        if not single_series_form(schema.names):
            if metadata.num_rows == 0:
                raise DataError(f"{location} has no data rows", where=location,
                                fix="the file needs at least one row per series")
            _check_canonical_columns(schema.names, location)
            dated = pyarrow.types.is_timestamp(schema.field("t").type)
            return TableSource(where=location, columns=list(schema.names), test=test, location=location,
                               time_type="datetime64[ns]" if dated else "int64")
    return _loaded(read_series_file(location, read_table_file(location, SOURCES)), location, test)


def _sources(cfg: DataConfig) -> tuple[TableSource, TableSource | None]:
    """data.source's rows and the test rows: data.test_source, else a bundled test file."""
    if cfg.source in SOURCES:
        train_file, test_file = SOURCES[cfg.source](cfg)
        train = _loaded(train_file, cfg.source)
        test = None if test_file is None else _loaded(test_file, f"{cfg.source} (its test file)", test=True)
    else:
        train, test = _file(cfg.source), None
    if cfg.test_source is not None:
        test = _file(cfg.test_source, test=True)
    return train, test


def _check_canonical_columns(columns: Iterable[str], source: str) -> None:
    missing = [c for c in ("series_id", "t") if c not in set(columns)]
    if missing:
        raise DataError(f"required column(s) {missing} missing from {source}", where=source,
                        fix="the canonical table needs series_id, t, feature columns, optional label "
                            "(or the single-series form: timestamp, value columns, optional is_anomaly)")


def _canonical(source: TableSource, features: list[str]) -> TableSource:
    """The source read in its canonical columns only."""
    label = ["label"] if "label" in source.columns else []
    return replace(source, columns=["series_id", "t", *features, *label])


def _check_test_file(test: TableSource, train: TableSource, cfg: DataConfig) -> None:
    """The test file continues the training data: same value columns, same timestamp type."""
    test_features = feature_columns(test.columns, cfg.features)
    train_features = feature_columns(train.columns, cfg.features)
    if sorted(test_features) != sorted(train_features):
        raise DataError(f"the test file's value columns {test_features} differ from the training "
                        f"file's {train_features}", where=test.where,
                        fix="give both files the same value columns (or list them in data.features)")
    if test.time_type != train.time_type:
        raise DataError(f"mixed timestamp types: {test.where} has {test.time_type} timestamps, "
                        f"{cfg.source} has {train.time_type}", where=test.where,
                        fix="use one timestamp type (integer steps or datetimes) in both files")


def series_sources(cfg: DataConfig) -> tuple[list[TableSource], list[str]]:
    """data.source (and the test rows' file) in canonical columns, and the feature columns."""
    train, test = _sources(cfg)
    features = feature_columns(train.columns, cfg.features)
    if test is not None:
        _check_test_file(test, train, cfg)
    canonical = [replace(_canonical(source, features), piece_rows=cfg.piece_rows)
                 for source in (train, test) if source is not None]
    return canonical, features


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


@dataclass
class Survey:
    """The first read's findings: the table's survey, and each piece's, for the reads after."""

    series: SeriesSurvey
    pieces: list[SurveyedPiece]


def survey_sources(sources: list[TableSource], features: list[str], mapper: Mapper = serial_map) -> Survey:
    """The first read: every block through the canonical schema (one message and report for
    all of a file's failures), and what splitting needs to know of each series. Each piece
    is surveyed by a task of `mapper`, and the pieces' findings merged in table order."""
    survey, surveyed = SeriesSurvey(), []
    for source in sources:
        validation, checked = check_pieces(source.pieces(), series_schema(features, source.time_type),
                                           table="canonical series", source=source.where,
                                           series_column="series_id", mapper=mapper,
                                           columns=source.columns,
                                           new_order=partial(SeriesSurvey, source.test))
        validation.finish()
        for result in checked:
            assert result.order is not None
            ordinals = survey.merge(result.order)
            own_before = survey.own_rows[ordinals] - result.order.own_rows
            surveyed.append(SurveyedPiece(result.piece, source, result.order.ids, ordinals, own_before))
    return Survey(survey, surveyed)


@dataclass(frozen=True)
class SeriesPlan:
    """What the survey decided: the label kind, whether every step is scored, and every
    series' split as the sizes of its own rows' train, val and test stretches in time order
    (a series split whole has one size); a test file's rows are all test."""

    sizes: np.ndarray  # (series, 3), SPLITS order, series numbered as the survey numbers them
    labelled: bool
    point_labels: bool
    timeline: bool
    normal_only: bool  # training windows (and scaler rows) exclude labelled anomaly steps

    def row_splits(self, ordinals: np.ndarray, positions: Positions, from_test: np.ndarray) -> np.ndarray:
        """Each row's split; `positions` carries each series' own rows seen in earlier blocks."""
        own = ~from_test
        step = np.zeros(len(ordinals), np.int64)
        step[own] = positions.of(ordinals[own])
        sizes = self.sizes[ordinals]
        index = (step >= sizes[:, 0]).astype(np.int64) + (step >= sizes[:, 0] + sizes[:, 1])
        index[from_test] = SPLITS.index("test")
        return np.asarray(SPLITS)[index]


def _point_labels(survey: SeriesSurvey, cfg: DataConfig, labelled: bool, from_layout: bool) -> bool:
    """data.labels resolved: `auto` means points when labels vary inside a series or the
    file's layout gives them per step (is_anomaly)."""
    if not labelled:
        if cfg.labels == "points":
            raise DataError("data.labels=points but the data has no label (or is_anomaly) column",
                            where="params.yaml: data.labels",
                            fix="add per-step labels or set data.labels=auto")
        return False
    if cfg.labels != "auto":
        return cfg.labels == "points"
    known = survey.labelled
    return from_layout or bool((survey.label_low[known] != survey.label_high[known]).any())


def plan_splits(survey: SeriesSurvey, sources: list[TableSource], cfg: DataConfig, seed: int) -> SeriesPlan:
    """Rows of a test file are test already, and the rest is cut in time order into train
    and val (val = its last data.split.val); without a test file the rows are split by series
    or by time (data.split.by)."""
    labelled = "label" in sources[0].columns
    point_labels = _point_labels(survey, cfg, labelled, any(s.point_labels for s in sources))
    if point_labels:
        known = survey.labelled
        classes = pd.Series(np.unique([survey.label_low[known], survey.label_high[known]]))
        check_label_classes(classes, cfg.source, "time steps", count=survey.rows)
    with_test_file = any(s.test for s in sources)
    fractions = cfg.split.model_copy(update={"test": 0.0}) if with_test_file else cfg.split
    ids = np.asarray(survey.ids, dtype=object)
    sizes = np.zeros((len(ids), len(SPLITS)), np.int64)
    if cfg.split.by == "time" or with_test_file:
        own = survey.own_rows > 0
        sizes[own] = time_splits(pd.Series(survey.own_rows[own], index=ids[own]), fractions, cfg.window,
                                 cfg.source)
    else:
        labels = pd.Series(survey.label_high if labelled else np.nan, index=pd.Index(ids, name="series_id"))
        if labelled and not point_labels:
            check_label_classes(labels, cfg.source, "series")
        split_of = assign_splits(labels, fractions, seed, cfg.source)
        column = pd.Index(SPLITS).get_indexer(split_of.reindex(ids).to_numpy())
        sizes[np.arange(len(ids)), column] = survey.own_rows
    normal_only = cfg.train_normal_only if cfg.train_normal_only is not None else point_labels
    return SeriesPlan(sizes, labelled, point_labels, point_labels or cfg.split.by == "time" or with_test_file,
                      normal_only and labelled)


def fit_scaler(survey: Survey, features: list[str], plan: SeriesPlan,
               mapper: Mapper = serial_map) -> StandardScaler:
    """The second read: the moments of the training rows (without anomaly steps when
    training is normal only), a piece per task, merged in table order."""
    moments = ScalerFit(features)
    for piece_moments in mapper(partial(_piece_moments, features=features, plan=plan), survey.pieces,
                                "fit scaler"):
        moments.merge(piece_moments)
    return moments.scaler()


def _piece_moments(item: SurveyedPiece, *, features: list[str], plan: SeriesPlan) -> ScalerFit:
    order, moments = SeriesOrder(item.ids), ScalerFit(features)
    local = replace(plan, sizes=plan.sizes[item.ordinals])
    positions = Positions(len(item.ids), item.own_before)
    for block in item.piece.blocks(item.source.columns):
        typed = canonical_types(block, features, item.source.time_type)
        split = local.row_splits(order.ordinals(typed["series_id"]), positions,
                                 np.full(len(typed), item.source.test))
        fit = split == "train"
        if plan.normal_only and "label" in typed.columns:  # an unlabelled test file's rows never train
            fit &= typed["label"].to_numpy() == 0
        moments.add(typed.loc[fit, features].to_numpy(np.float64))
    return moments


class SeriesSink(Protocol):
    """Where prepare_series puts each group's rows (with their split) and windows, once it
    knows their spec."""

    def open(self, spec: DataSpec) -> None: ...

    def add(self, rows: pd.DataFrame, windows: pd.DataFrame) -> None: ...


@dataclass
class PreparedSeries:
    """What prepare_series produced, besides what it gave its sink."""

    spec: DataSpec
    scaler: StandardScaler
    series: int
    counts: dict[str, int]  # windows per split

    @property
    def description(self) -> str:
        return f"{self.series} series -> {sum(self.counts.values())} windows"


def prepare_series(sources: list[TableSource], features: list[str], cfg: DataConfig, seed: int,
                   sink: SeriesSink, mapper: Mapper = serial_map) -> PreparedSeries:
    """Canonical sources -> validated rows, each with its split, and the windows over them
    scaled on the training rows, given to `sink` a group of whole series at a time
    (seqmodels.data.series_stream): memory is bounded by a group, not by the table. Point
    labels or a time split score every step (spec.timeline).

    Each read is a map over pieces of the sources (groups of whole series, for the windows)
    by `mapper`, whose tasks may run anywhere (seqmodels.distributed.data_map); only what
    must see every piece in order is done here: merging their findings, numbering windows
    and writing. Sources loaded whole (CSV, bundled data) are read in this process."""
    if not all(source.location for source in sources):
        mapper = serial_map
    survey = survey_sources(sources, features, mapper)
    series = survey.series
    plan = plan_splits(series, sources, cfg, seed)
    scaler = fit_scaler(survey, features, plan, mapper)
    spec = DataSpec(kind=KIND, input_shape=(cfg.window, len(features)), features=tuple(features),
                    has_labels=plan.labelled, point_labels=plan.point_labels, timeline=plan.timeline,
                    time_dtype=sources[0].time_type, stride=cfg.stride)
    sink.open(spec)
    if series.grouped:
        pieces = [source.pieces() for source in sources]
        task = partial(_group_windows, sources=sources, pieces=pieces, features=features, plan=plan,
                       scaler=scaler, cfg=cfg)
        cut: Iterable[GroupWindows] = mapper(task, planned_groups(series, cfg.piece_rows), "cut windows")
    else:  # regrouped here, through bucket files (series_stream._regrouped)
        cut = (_windows_of(group, series.ordinals(group["series_id"]), plan, scaler, cfg)
               for group in series_groups(sources, features, series))
    counts, dropped = dict.fromkeys(SPLITS, 0), 0
    for group in cut:
        windows = group.windows
        windows[ID_COLUMN] = np.arange(len(windows), dtype=np.int64) + sum(counts.values())
        for split, n in windows["split"].value_counts().items():
            counts[str(split)] += int(n)
        dropped += group.dropped
        sink.add(group.rows, windows)
    if dropped and not counts["train"]:
        raise DataError(f"data.train_normal_only drops every training window: all {dropped} "
                        "contain a labelled anomaly step",
                        where=f"params.yaml: data.train_normal_only ({cfg.source})",
                        fix="set data.train_normal_only=false, use a shorter data.window, or train on a "
                            "stretch without incidents")
    return PreparedSeries(spec, scaler, len(series.ids), counts)


@dataclass
class GroupWindows:
    """A group's rows with their split, its windows (not numbered yet) and how many training
    windows normal-only training dropped."""

    rows: pd.DataFrame
    windows: pd.DataFrame
    dropped: int


def _group_windows(group: SeriesGroup, *, sources: list[TableSource], pieces: list[list[Piece]],
                   features: list[str], plan: SeriesPlan, scaler: StandardScaler,
                   cfg: DataConfig) -> GroupWindows:
    """A task's share of the third read: one group, read by itself."""
    rows = read_group(group, sources, pieces, features)
    ordinals = SeriesOrder().ordinals(rows["series_id"])  # the group's series, in the table's order
    return _windows_of(rows, ordinals, replace(plan, sizes=plan.sizes[group.first:group.stop]), scaler, cfg)


def _windows_of(group: pd.DataFrame, ordinals: np.ndarray, plan: SeriesPlan, scaler: StandardScaler,
                cfg: DataConfig) -> GroupWindows:
    """Whole series (`ordinals`: their numbers in `plan`) -> their rows' splits and windows."""
    from_test = group[FROM_TEST_FILE].to_numpy()
    rows = group.drop(columns=[FROM_TEST_FILE])
    rows["split"] = plan.row_splits(ordinals, Positions(len(plan.sizes)), from_test)
    windows = cut_windows(rows, scaler.transform(rows), cfg, plan.timeline)
    dropped = 0
    if plan.normal_only:
        drop = windows["split"].eq("train") & windows["label"].eq(1)
        dropped = int(drop.sum())
        windows = windows.loc[~drop].reset_index(drop=True)
    return GroupWindows(rows, windows, dropped)


class _Collected:
    """A sink that keeps every group, for in-process users."""

    def __init__(self) -> None:
        self.rows: list[pd.DataFrame] = []
        self.windows: list[pd.DataFrame] = []

    def open(self, spec: DataSpec) -> None:
        pass

    def add(self, rows: pd.DataFrame, windows: pd.DataFrame) -> None:
        self.rows.append(rows)
        self.windows.append(windows)


def _in_memory(sources: list[TableSource], features: list[str], cfg: DataConfig,
               seed: int) -> tuple[pd.DataFrame, pd.DataFrame, PreparedSeries]:
    """prepare_series with every group kept: (windows, rows with their split, summary)."""
    kept = _Collected()
    summary = prepare_series(sources, features, cfg, seed, kept)
    return pd.concat(kept.windows, ignore_index=True), pd.concat(kept.rows, ignore_index=True), summary


def prepare(cfg: DataConfig, seed: int) -> PreparedData:
    """The prepared windows in memory, with the rows (each step's split) and the scaler that
    the prepare stage writes beside them."""
    windows, table, summary = _in_memory(*series_sources(cfg), cfg, seed)
    heldout = table.loc[table["split"].eq("test")].drop(columns=["split"])
    return PreparedData(windows, summary.spec, summary.description,
                        {SERIES_FILE: table, SCALER_FILE: summary.scaler.to_dict(), HELDOUT_FILE: heldout})


def prepare_windows(
    table: pd.DataFrame, features: list[str], cfg: DataConfig, seed: int, point_layout: bool = False,
) -> tuple[pd.DataFrame, StandardScaler, DataSpec, pd.DataFrame]:
    """Canonical rows held in memory -> (windows, scaler, spec, the rows with their split),
    for tests and notebooks that have a table already."""
    label = ["label"] if "label" in table.columns else []
    source = TableSource(where=cfg.source, columns=["series_id", "t", *features, *label],
                         time_type=time_dtype(table), point_labels=point_layout, frame=table)
    windows, rows, summary = _in_memory([source], features, cfg, seed)
    return windows, summary.scaler, summary.spec, rows


class _Folder:
    """A sink that writes prepare's files into a folder a group at a time, each group's
    windows checked against the examples' schema first (the in-memory path is checked whole,
    by seqmodels.data.build)."""

    def __init__(self, directory: Path, source: str) -> None:
        self.directory, self.source = directory, source
        self._width = 0
        self._validation: BlockValidation | None = None
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._empty: dict[str, pyarrow.Table] = {}

    def open(self, spec: DataSpec) -> None:
        self._width = spec.input_dim
        self._validation = BlockValidation(MODALITY.examples_schema(spec), table=KIND, source=self.source)

    def add(self, rows: pd.DataFrame, windows: pd.DataFrame) -> None:
        assert self._validation is not None
        self._validation.add(windows)
        self._write(SERIES_FILE, pyarrow.Table.from_pandas(rows, preserve_index=False))
        heldout = rows.loc[rows["split"].eq("test")].drop(columns=["split"])
        self._write(HELDOUT_FILE, pyarrow.Table.from_pandas(heldout, preserve_index=False))
        examples = examples_to_arrow(windows, self._width)
        self._write(EXAMPLES_FILE, examples, row_group_size=row_group_rows(examples),
                    **parquet_write_options(examples.schema))

    def _write(self, name: str, table: pyarrow.Table, row_group_size: int | None = None,
               **options: Any) -> None:
        if not table.num_rows:
            self._empty.setdefault(name, table)
            return
        if name not in self._writers:
            self._writers[name] = pq.ParquetWriter(self.directory / name, table.schema, **options)
        self._writers[name].write_table(table, row_group_size=row_group_size)

    def validated(self) -> None:
        """Raise the one DataValidationError of every group's windows, if any failed."""
        if self._validation is not None:
            self._validation.finish()

    def close(self) -> None:
        """Close every file; one that got no rows is written empty, with its columns."""
        for writer in self._writers.values():
            writer.close()
        for name, table in self._empty.items():
            if name not in self._writers:
                pq.write_table(table, self.directory / name)


def write_prepared(cfg: DataConfig, seed: int, directory: Path,
                   mapper: Mapper = serial_map) -> PreparedSummary:
    """The prepare stage's files, written as the groups come, in memory bounded by a group;
    `mapper` runs the reads (see prepare_series)."""
    folder = _Folder(directory, cfg.source)
    try:
        summary = prepare_series(*series_sources(cfg), cfg, seed, folder, mapper)
        folder.validated()
    finally:
        folder.close()
    write_json_atomic(directory / SCALER_FILE, summary.scaler.to_dict())
    return PreparedSummary(summary.spec, summary.description, summary.counts)


MODALITY = Modality(kind=KIND, sources=tuple(SOURCES), prepare=prepare, table=WindowTable,
                    extra_tables=canonical_table, write=write_prepared)
