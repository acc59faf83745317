"""Anomalies inside long series: the single-series file form, time splits, point labels,
windows that never cross a split and cover every step, and one clear message per bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from seqmodels.config import config_from_mapping
from seqmodels.data.build import build_examples
from seqmodels.data.config import DataConfig, SplitFractions
from seqmodels.data.series_files import canonical_form
from seqmodels.data.splits import time_splits
from seqmodels.data.windows import window_starts
from seqmodels.errors import DataError
from seqmodels.evaluation import Scored, choose_threshold
from seqmodels.spec import SERIES_FILE
from seqmodels.thresholds import read_thresholds
from seqmodels.timeline import StepScores, output_steps
from tests.test_hardening import assert_clean_failure, project, published  # noqa: F401 (fixture)

STEPS = 60


def stream(steps: int = STEPS, anomaly: tuple[int, int] | None = (40, 44), timestamp=None,
           extra_columns: dict | None = None) -> pd.DataFrame:
    """One series in the TSB-AD / TimeEval single-series form."""
    t = np.arange(steps)
    frame = pd.DataFrame({"timestamp": t if timestamp is None else timestamp,
                          "value": np.sin(2 * np.pi * t / 12) + 0.01 * t})
    if anomaly is not None:
        frame["is_anomaly"] = ((t >= anomaly[0]) & (t < anomaly[1])).astype(int)
        frame.loc[frame["is_anomaly"] == 1, "value"] += 3.0
    return frame.assign(**(extra_columns or {}))


def write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def examples(tmp_path: Path, frame: pd.DataFrame, test: pd.DataFrame | None = None, **data):
    raw = {"data": {"source": str(write(tmp_path, "train.csv", frame)), "window": 8, "stride": 3, **data}}
    if test is not None:
        raw["data"]["test_source"] = str(write(tmp_path, "test.csv", test))
    return build_examples(config_from_mapping(raw, "test"))


# --- splits and windows --------------------------------------------------------------------

@pytest.mark.parametrize("length,val,test",
                         [(100, 0.15, 0.3), (37, 0.25, 0.25), (500, 0.0, 0.2), (64, 0.2, 0.0)])
def test_time_splits_cut_each_series_in_order_without_overlap(length, val, test):
    lengths = pd.Series([length, length + 11], index=["a", "b"])
    sizes = time_splits(lengths, SplitFractions(by="time", val=val, test=test), window=5)
    assert sizes.shape == (2, 3) and (sizes.sum(axis=1) == lengths.to_numpy()).all()
    for (train, n_val, n_test), n in zip(sizes.tolist(), lengths.tolist(), strict=True):
        assert n_test == round(n * test) and n_val == round(n * val) and train == n - n_val - n_test


def test_windows_never_cross_a_split_and_every_step_is_covered(tmp_path):
    prepared = examples(tmp_path, stream(steps=203), split={"by": "time", "val": 0.2, "test": 0.3},
                        labels="points", train_normal_only=False)
    windows, table = prepared.examples, prepared.artifacts["series.parquet"]
    assert prepared.spec.timeline and prepared.spec.point_labels
    step_split = table["split"].to_numpy()
    for _, row in windows.iterrows():  # a window's steps all lie in its own split
        assert set(step_split[row["start"]:row["start"] + 8]) == {row["split"]}
    coverage = StepScores(len(table), 8, "window")
    coverage.add(windows["start"].to_numpy(), np.ones(len(windows)))
    assert (coverage.coverage > 0).all()  # the tail window of each stretch reaches its end
    for split in ("train", "val", "test"):
        last = np.flatnonzero(step_split == split)[-1]
        assert (windows.loc[windows["split"] == split, "start"] + 8 - 1).max() == last


@pytest.mark.parametrize("length,window,stride", [(20, 8, 3), (8, 8, 1), (21, 5, 5), (30, 7, 7)])
def test_window_starts_cover_the_tail_only_when_asked(length, window, stride):
    starts = window_starts(length, window, stride, cover_tail=True)
    assert starts[-1] == length - window and np.all(np.diff(starts) > 0)
    plain = window_starts(length, window, stride, cover_tail=False)
    assert np.array_equal(plain, np.arange(0, length - window + 1, stride))


def test_a_test_file_gives_every_test_window_and_training_skips_labelled_windows(tmp_path):
    prepared = examples(tmp_path, stream(anomaly=(20, 22)), test=stream(anomaly=(30, 36)),
                        split={"by": "time", "val": 0.25})
    windows = prepared.examples
    assert set(windows.loc[windows["series_id"] == "test", "split"]) == {"test"}
    assert set(windows.loc[windows["series_id"] == "train", "split"]) == {"train", "val"}
    train = windows[windows["split"] == "train"]
    assert len(train) and (train["label"] == 0).all()  # data.train_normal_only defaults to true
    assert (windows.loc[windows["split"] == "val", "label"] == 1).sum() == 0
    assert windows["window_id"].tolist() == list(range(len(windows)))
    assert windows.loc[windows["split"] == "test", "label"].sum() > 0


def test_point_labels_are_detected_and_series_labels_keep_the_one_class_split(tmp_path):
    frame = stream()
    assert examples(tmp_path, frame, split={"by": "time"}).spec.point_labels
    many = pd.concat([stream(anomaly=None).assign(series_id=f"s{i}") for i in range(10)])
    many["label"] = (many["series_id"] == "s9").astype(int)
    many = many.rename(columns={"timestamp": "t"})
    prepared = examples(tmp_path, many, split={"val": 0.2, "test": 0.2})
    assert not prepared.spec.point_labels and not prepared.spec.timeline


# --- the single-series form -------------------------------------------------------------------

def test_single_series_form_names_the_series_after_the_file_and_keeps_datetimes():
    dates = pd.date_range("2026-01-01", periods=5, freq="h", tz="Europe/Paris").astype(str)
    loaded = canonical_form(stream(steps=5, anomaly=(2, 3), timestamp=dates), "pump-7", "pump-7.csv")
    assert loaded.point_labels and loaded.table["series_id"].unique().tolist() == ["pump-7"]
    assert str(loaded.table["t"].dtype) == "datetime64[ns]"
    assert loaded.table["t"].iloc[0] == pd.Timestamp("2025-12-31T23:00:00")  # UTC, zone dropped
    assert loaded.table["label"].tolist() == [0, 0, 1, 0, 0]


def test_datetime_timestamps_flow_into_the_canonical_table(tmp_path):
    dates = pd.date_range("2026-03-01", periods=STEPS, freq="min").astype(str)
    prepared = examples(tmp_path, stream(timestamp=dates), split={"by": "time"})
    assert prepared.spec.time_dtype == "datetime64[ns]"
    assert prepared.artifacts["series.parquet"]["t"].iloc[-1] == pd.Timestamp("2026-03-01 00:59:00")


# --- bad input: one message, exit 2, nothing published -----------------------------------------

def dated(steps: int) -> list[str]:
    return [str(d) for d in pd.date_range("2026-01-01", periods=steps, freq="D")]


BAD_STREAMS = {
    # name: (training file, test file or None, --set overrides, what the user must see)
    "duplicate_timestamp": (stream(timestamp=[*range(30), 29, *range(31, 60)]), None, [],
                            ["timestamps must strictly increase", "data row 30 (29 after 29)",
                             "sort the file"]),
    "decreasing_timestamp": (stream(timestamp=[*range(50), 10, *range(51, 60)]), None, [],
                             ["data row 50 (10 after 49)"]),
    "mixed_timestamp_types": (stream(timestamp=[*map(str, range(30)), *dated(30)]), None, [],
                              ["mixed timestamp types", "data row 30 ('2026-01-01 00:00:00')", "one type"]),
    "is_anomaly_not_binary": (stream().assign(is_anomaly=lambda f: f["is_anomaly"] * 2), None, [],
                              ["'is_anomaly' must be 0 or 1", "data row 40 (2)", "4 row(s)"]),
    "test_columns_differ": (stream(), stream(extra_columns={"pressure": 1.0}), [],
                            ["value columns ['value', 'pressure'] differ", "['value']", "test.csv"]),
    "test_stream_shorter_than_window": (stream(), stream(steps=3, anomaly=None), [],
                                        ["1 series in", "shorter than data.window=4", "3 steps of test",
                                         "data.test_source"]),
    "time_split_leaves_val_empty": (stream(steps=20, anomaly=None), None,
                                    ["data.split.by=time", "data.split.val=0.1"],
                                    ["the time split leaves", "2 of val", "data.split"]),
    "train_normal_only_leaves_nothing": (
        stream().assign(is_anomaly=lambda f: (np.arange(len(f)) % 3 == 0).astype(int)), stream(),
        ["data.split.by=time"], ["drops every training window", "data.train_normal_only=false"]),
    "inf_value": (stream().assign(value=lambda f: f["value"].where(f.index != 7, np.inf)), None, [],
                  ["column 'value', check must be finite", "row 7"]),
    "nan_value": (stream().assign(value=lambda f: f["value"].where(f.index != 12)), None, [],
                  ["column 'value'", "row 12"]),
    "test_file_mixes_timestamp_types": (stream(), stream(timestamp=dated(STEPS)), [],
                                        ["mixed timestamp types", "datetime64[ns] timestamps", "int64"]),
}


@pytest.mark.parametrize("case", BAD_STREAMS)
def test_bad_streams_stop_prepare_with_one_message_and_keep_outputs(case, project, cli, tmp_path):  # noqa: F811
    train, test, extra, expected = BAD_STREAMS[case]
    before = published(project)
    sets = [f"data.source={write(tmp_path, 'stream.csv', train)}", "data.stride=1", *extra]
    if test is not None:
        sets.append(f"data.test_source={write(tmp_path, 'test.csv', test)}")
    code, stderr = cli("prepare", "--params", str(tmp_path / "params.yaml"),
                       *[arg for item in sets for arg in ("--set", item)])
    assert_clean_failure(code, stderr, expected)
    assert published(project) == before


def test_stride_above_the_window_is_refused_when_every_step_needs_a_score(tmp_path):
    with pytest.raises(DataError, match="leaves steps that no window covers"):
        examples(tmp_path, stream(), split={"by": "time"}, stride=9)


def test_points_requested_without_labels_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"data\.labels=points but the data has no label"):
        examples(tmp_path, stream(anomaly=None), labels="points")


def test_data_config_defaults_keep_the_series_split():
    assert DataConfig().split.by == "series" and DataConfig().test_source is None


def test_per_step_errors_average_to_the_window_score_under_mse_and_dtw():
    import torch

    from seqmodels.models.scoring import reconstruction_error, step_errors

    x, reconstruction = torch.randn(5, 12 * 3), torch.randn(5, 12 * 3)
    steps = step_errors(x, reconstruction, (12, 3))
    assert steps.shape == (5, 12)
    window_mse = reconstruction_error(x, reconstruction, "mse", (12, 3), 0.1)
    torch.testing.assert_close(steps.mean(dim=1), window_mse)
    assert torch.allclose(steps[:, 4], (reconstruction - x).reshape(5, 12, 3)[:, 4].pow(2).mean(dim=1))
    warped = step_errors(x, reconstruction, (12, 3), "dtw", 0.25)
    window_dtw = reconstruction_error(x, reconstruction, "dtw", (12, 3), 0.25)
    torch.testing.assert_close(warped.mean(dim=1), window_dtw)
    assert (warped >= 0).all() and not torch.allclose(warped, steps)


@pytest.mark.parametrize("kind", ["conv", "dense", "recurrent"])
@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("score", ["mse", "dtw"])
def test_every_series_family_scores_each_step_of_its_windows(kind, variational, score):
    import torch

    from seqmodels.models.config import ModelConfig
    from seqmodels.models.registry import build_model
    from seqmodels.spec import DataSpec

    spec = DataSpec(kind="series", input_shape=(16, 2), features=("a", "b"), has_labels=True,
                    point_labels=True, timeline=True)
    model = build_model(ModelConfig(kind=kind, hidden_size=8, latent_dim=4, variational=variational,
                                    score=score), spec).eval()
    batch = {"x": torch.randn(6, 32)}
    with torch.no_grad():
        out = model(batch)
        steps, window = model.step_scores(batch, out), model.score(batch, out)
    assert steps.shape == (6, 16) and (steps >= 0).all()
    torch.testing.assert_close(steps.mean(dim=1), window, rtol=1e-5, atol=1e-6)
    untimed = build_model(ModelConfig(kind=kind, hidden_size=8, latent_dim=4),
                          DataSpec(kind="series", input_shape=(16, 2), features=("a", "b")))
    assert untimed.step_scores(batch, untimed(batch)) is None


# --- through the stages (in process, as tests/test_combinations.py runs them) -----------------

@pytest.mark.parametrize("labelled", [True, False])
def test_stages_publish_a_timeline_events_and_point_metrics(tmp_path, labelled):
    import json

    import pyarrow.parquet as pq

    from seqmodels.stages import detector, evaluate, prepare, validate
    from tests.conftest import tiny_config
    from tests.test_combinations import predict_in_process, train_one_epoch

    anomaly = (150, 158) if labelled else None
    train = write(tmp_path, "history.csv", stream(steps=240, anomaly=None if not labelled else (30, 34)))
    test = write(tmp_path, "new.csv", stream(steps=300, anomaly=anomaly))
    cfg = tiny_config(tmp_path, data={"source": str(train), "test_source": str(test), "window": 24,
                                      "stride": 4, "split": {"val": 0.25}},
                      model={"kind": "conv", "num_layers": 1}, train={"epochs": 1, "workers": 1})
    prepare.run(cfg)
    validate.run(cfg)
    train_one_epoch(cfg)
    predict_in_process(cfg)
    detector.run(cfg)
    evaluate.run(cfg)

    # the detector stage streams; its step threshold is the one fitted on every step at once
    every = pq.read_table(Path(cfg.paths.prepared) / SERIES_FILE).to_pandas()
    scores = output_steps(pads.dataset(cfg.paths.outputs), every.groupby("series_id", sort=False).size(),
                          cfg.data.window, "window")
    reference = Scored(split=every["split"].to_numpy().astype(str), score=scores,
                       label=every["label"].to_numpy() if labelled else None)
    assert read_thresholds(cfg.paths.detector).step == choose_threshold(reference, cfg.evaluate.threshold)

    timeline = pq.read_table(cfg.paths.timeline).to_pandas()
    assert len(timeline) == 240 + 300 and timeline["score"].notna().sum() >= 300
    assert ("label" in timeline.columns) == labelled
    assert timeline.groupby("series_id")["t"].apply(lambda t: t.is_monotonic_increasing).all()
    result = json.loads(Path(cfg.paths.eval_metrics).read_text())
    points = result["points"]
    events = pd.read_csv(cfg.paths.events)
    assert list(events.columns) == ["series_id", "split", "start", "end", "steps", "peak_score", "peak_t",
                                    "overlaps_anomaly"]
    assert events["steps"].sum() == timeline["is_anomaly"].sum()
    if labelled:
        assert 0.0 <= points["model"]["vus_pr"] <= 1.0 and "knn" in points and "pca" in points
        assert points["events"]["labelled_events"] == 1
    else:
        assert "note" in points and "model" not in points
    assert (Path(cfg.paths.plots) / "timeline.png").stat().st_size > 10_000


def test_data_without_a_time_axis_gets_an_empty_timeline_saying_why(tmp_path):
    import json

    from seqmodels.stages import detector, evaluate, prepare, validate
    from tests.conftest import make_series_table, tiny_config
    from tests.test_combinations import predict_in_process, train_one_epoch

    make_series_table().to_csv(tmp_path / "series.csv", index=False)
    cfg = tiny_config(tmp_path, model={"kind": "dense"}, train={"epochs": 1, "workers": 1})
    prepare.run(cfg)
    validate.run(cfg)
    train_one_epoch(cfg)
    predict_in_process(cfg)
    detector.run(cfg)
    evaluate.run(cfg)
    manifest = json.loads((Path(cfg.paths.timeline) / "_manifest.json").read_text())
    assert manifest["rows"] == 0 and "not scored per time step" in manifest["note"]
    assert list(Path(cfg.paths.timeline).glob("*.parquet")) == []
    assert Path(cfg.paths.events).read_text().startswith("series_id,split,start,end")
    assert "points" not in json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert not (Path(cfg.paths.plots) / "timeline.png").exists()


def test_series_only_options_are_refused_for_other_data():
    from seqmodels.errors import ConfigError

    refused = r"data\.test_source, data\.split\.by only apply to data\.kind=series"
    with pytest.raises(ConfigError, match=refused):
        config_from_mapping({"data": {"kind": "tabular", "source": "shuttle", "test_source": "x.csv",
                                      "split": {"by": "time"}}, "model": {"kind": "dense"}}, "test")


def test_a_step_back_is_reported_against_the_same_series_previous_step():
    interleaved = pd.DataFrame({"series_id": ["a", "b", "a", "b", "a"], "timestamp": [0, 5, 1, 5, 1],
                                "value": [1.0, 2.0, 3.0, 4.0, 5.0]})
    with pytest.raises(DataError) as caught:
        canonical_form(interleaved, "pumps", "pumps.csv")
    assert "data row 3 (5 after 5), data row 4 (1 after 1) (2 row(s) in all)" in caught.value.message


def test_the_detector_stage_finds_each_series_fitting_steps_across_batches(tmp_path, monkeypatch):
    """fitting_steps reads the canonical table in batches (of 4 rows here): a series cut by a
    batch boundary keeps its step numbers, and a split that no step has finds nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqmodels.stages import detector
    from seqmodels.stages.detector import fitting_steps

    monkeypatch.setattr(detector, "SERIES_BATCH_ROWS", 4)

    split = ["train"] * 6 + ["val"] * 4 + ["train"] * 3 + ["val"] * 2 + ["test"] * 5
    table = pa.table({"series_id": ["a"] * 10 + ["b"] * 5 + ["c"] * 5, "split": split,
                      "label": np.arange(20) % 3})
    pq.write_table(table, tmp_path / "series.parquet", row_group_size=8)  # a in 3 batches, b in 2
    lengths, val = fitting_steps(pq.ParquetFile(tmp_path / "series.parquet"), "val", labelled=True)
    assert lengths == {"a": 10, "b": 5, "c": 5} and list(val) == ["a", "b"]
    assert val["a"].positions.tolist() == [6, 7, 8, 9] and val["b"].positions.tolist() == [3, 4]
    assert val["a"].labels.tolist() == [0, 1, 2, 0] and val["b"].labels.tolist() == [1, 2]
    assert fitting_steps(pq.ParquetFile(tmp_path / "series.parquet"), "nothing", labelled=False)[1] == {}


@pytest.mark.parametrize("point_score", ["window", "mean"])
def test_evaluate_streams_series_by_series_and_gives_what_the_whole_table_gives(tmp_path, monkeypatch,
                                                                               point_score):
    """Per-step evaluation meets the table, the outputs and the examples a batch at a time
    (tiny batches here, cutting series across them) and keeps only the test steps' scores:
    its metrics equal TSB-AD's metrics of the whole table's arrays, its baselines equal the
    in-memory ones, and neither batch sizes nor the order of the inference parts' rows (Ray
    Data keeps none) change what it writes."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqmodels.evaluation import nearest_train_distance, pca_step_errors
    from seqmodels.point_metrics import point_metrics
    from seqmodels.stages import detector, evaluate, prepare, validate
    from seqmodels.stages.evaluate import inputs as evaluate_inputs
    from seqmodels.stages.evaluate import points as evaluate_points
    from seqmodels.timeline import aggregate_windows
    from tests.conftest import tiny_config
    from tests.test_combinations import predict_in_process, train_one_epoch

    rng = np.random.default_rng(5)
    frames = []
    for i in range(6):
        t = np.arange(200)
        label = ((t >= 150 + i) & (t < 158 + i)).astype(int) if i % 2 else np.zeros(200, int)
        value = np.sin(2 * np.pi * t / 16) + rng.normal(0, 0.05, 200) + 3 * label
        frames.append(pd.DataFrame({"series_id": f"pump-{i}", "t": t, "label": label, "value": value}))
    source = tmp_path / "pumps.csv"
    pd.concat(frames).to_csv(source, index=False)
    cfg = tiny_config(tmp_path, data={"source": str(source), "window": 16, "stride": 4, "labels": "points",
                                      "split": {"by": "time", "val": 0.2, "test": 0.4}},
                      model={"kind": "conv", "num_layers": 1, "point_score": point_score},
                      train={"epochs": 1, "workers": 1})
    prepare.run(cfg)
    validate.run(cfg)
    train_one_epoch(cfg)
    predict_in_process(cfg)
    detector.run(cfg)

    def evaluated() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
        evaluate.run(cfg)
        return (json.loads(Path(cfg.paths.eval_metrics).read_text()), pd.read_csv(cfg.paths.events),
                pq.read_table(cfg.paths.timeline).to_pandas())

    result, events, timeline = evaluated()
    for module, name, size in ((evaluate_points, "SERIES_BATCH_ROWS", 37),
                               (evaluate_points, "OUTPUT_BATCH_ROWS", 5),
                               (evaluate_inputs, "EXAMPLE_BATCH_ROWS", 3),
                               (evaluate_points, "TIMELINE_ROW_GROUP", 50)):
        monkeypatch.setattr(module, name, size)
    parts = sorted(Path(cfg.paths.outputs).glob("*.parquet"))
    rows = pa.concat_tables([pq.read_table(part) for part in parts])
    for part in parts:
        part.unlink()
    shuffled = rows.take(np.random.default_rng(0).permutation(rows.num_rows))
    half = rows.num_rows // 2
    pq.write_table(shuffled.slice(0, half), Path(cfg.paths.outputs) / "part-00000.parquet")
    pq.write_table(shuffled.slice(half), Path(cfg.paths.outputs) / "part-00001.parquet")
    small_result, small_events, small_timeline = evaluated()
    assert small_result == result
    pd.testing.assert_frame_equal(small_events, events)
    pd.testing.assert_frame_equal(small_timeline, timeline)
    assert pq.ParquetFile(next(Path(cfg.paths.timeline).glob("*.parquet"))).metadata.num_row_groups > 1

    # the reference: every array of the whole table at once, as evaluate computed it in memory
    table = pq.read_table(Path(cfg.paths.prepared) / SERIES_FILE).to_pandas()
    examples = pq.read_table(Path(cfg.paths.prepared) / "examples.parquet").to_pandas()
    x, split = np.stack(examples["x"]).astype(np.float64), examples["split"].to_numpy().astype(str)
    lengths = table.groupby("series_id", sort=False).size()
    ids, start = examples["series_id"].to_numpy(), examples["start"].to_numpy()
    model_cfg, shape = cfg.model, (cfg.data.window, 1)
    pca_step = pca_step_errors(x, split, model_cfg, shape, cfg.seed)
    outputs = rows.sort_by("window_id").to_pandas()  # the parts as inference wrote them, in id order
    model_step = np.stack(outputs["step_score"]) if point_score != "window" else None
    reference = {
        "model": aggregate_windows(outputs["series_id"].to_numpy(), outputs["start"].to_numpy(),
                                   outputs["score"].to_numpy(), model_step, lengths, cfg.data.window,
                                   point_score),
        "pca": aggregate_windows(ids, start, pca_step.mean(axis=1), pca_step, lengths, cfg.data.window,
                                 point_score),
        "knn": aggregate_windows(ids, start, nearest_train_distance(x, split, model_cfg, shape, cfg.seed),
                                 None, lengths, cfg.data.window, "window")}
    test = table["split"].to_numpy() == "test"
    points = result["points"]
    assert points["steps"] == int(test.sum()) and points["anomalous_steps"] == int(table["label"][test].sum())
    for name, steps in reference.items():
        expected = point_metrics(steps[test], table["label"].to_numpy()[test],
                                 sliding_window=points["sliding_window"]).as_dict()
        assert points[name] == pytest.approx(expected, rel=1e-12)
