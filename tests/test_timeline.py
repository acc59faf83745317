"""seqmodels.timeline: per-step scores from sliding windows, against a plain double loop,
and events from per-step flags."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from seqmodels.timeline import (
    POINT_SCORES,
    StepScores,
    aggregate_outputs,
    event_precision_recall,
    events_table,
    merge_events,
)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """0, S, 2S, ... and a tail window ending exactly at the series end."""
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return np.array(starts, dtype=np.int64)


def reference(length, window, how, starts, window_scores, step_scores):
    """Plain-Python double loop: for each step, the values of the windows covering it."""
    values = [[] for _ in range(length)]
    for i, start in enumerate(starts):
        for k in range(window):
            values[start + k].append(float(window_scores[i] if how == "window" else step_scores[i, k]))
    rule = {"mean": lambda v: sum(v) / len(v), "max": max, "window": lambda v: sum(v) / len(v)}[how]
    return np.array([rule(v) if v else math.nan for v in values])


def random_windows(rng, length, window, stride):
    starts = window_starts(length, window, stride)
    scores = rng.random(len(starts))
    steps = rng.random((len(starts), window)).astype(np.float32)
    return starts, scores, steps


def output_batch(series_id, starts, scores, steps):
    """An inference output batch; series_id is one id for all rows or one per row."""
    window = steps.shape[1]
    ids = series_id if isinstance(series_id, list) else [series_id] * len(starts)
    step_score = pa.FixedSizeListArray.from_arrays(pa.array(steps.reshape(-1)), window)
    return pa.record_batch({"series_id": pa.array(ids),
                            "start": pa.array(starts, pa.int64()), "score": pa.array(scores),
                            "step_score": step_score})


@pytest.mark.parametrize(("length", "window", "stride"),
                         [(10, 4, 2), (11, 4, 2), (100, 8, 8), (100, 8, 3), (37, 5, 1), (64, 64, 64)])
def test_each_step_is_covered_by_the_windows_over_it(length, window, stride):
    starts = window_starts(length, window, stride)
    acc = StepScores(length, window, "window")
    acc.add(starts, np.ones(len(starts)))
    expected = np.zeros(length, dtype=int)
    for start in starts:
        expected[start:start + window] += 1
    assert acc.coverage.dtype == np.int32
    np.testing.assert_array_equal(acc.coverage, expected)
    assert acc.coverage[0] == 1 and acc.coverage[-1] == 1
    assert starts[-1] + window == length


def test_interior_steps_are_covered_window_over_stride_times():
    acc = StepScores(1000, 128, "mean")
    starts = window_starts(1000, 128, 64)
    acc.add(starts, np.zeros(len(starts)), np.zeros((len(starts), 128)))
    assert set(acc.coverage[64:-128]) == {2}


@pytest.mark.parametrize("how", POINT_SCORES)
@pytest.mark.parametrize(("length", "window", "stride"), [(50, 6, 2), (73, 10, 7), (20, 20, 20)])
def test_scores_match_a_plain_double_loop(how, length, window, stride):
    rng = np.random.default_rng(length * window + stride)
    starts, scores, steps = random_windows(rng, length, window, stride)
    acc = StepScores(length, window, how)
    acc.add(starts, scores, steps)
    got = acc.result()
    assert got.dtype == np.float64 and got.shape == (length,)
    np.testing.assert_allclose(got, reference(length, window, how, starts, scores, steps), rtol=1e-12)


@pytest.mark.parametrize("how", POINT_SCORES)
def test_batches_in_any_order_give_the_same_scores(how):
    rng = np.random.default_rng(7)
    starts, scores, steps = random_windows(rng, 500, 16, 4)
    whole = StepScores(500, 16, how)
    whole.add(starts, scores, steps)
    shuffled = StepScores(500, 16, how)
    order = rng.permutation(len(starts))
    for part in np.array_split(order, 7):
        shuffled.add(starts[part], scores[part], steps[part])
    np.testing.assert_allclose(shuffled.result(), whole.result(), rtol=1e-12)
    np.testing.assert_array_equal(shuffled.coverage, whole.coverage)


@pytest.mark.parametrize("how", POINT_SCORES)
def test_uncovered_steps_are_nan(how):
    acc = StepScores(20, 4, how)
    acc.add(np.array([2, 10]), np.array([0.5, 0.0]), np.zeros((2, 4)))
    got = acc.result()
    covered = np.zeros(20, dtype=bool)
    covered[2:6] = covered[10:14] = True
    assert np.isnan(got[~covered]).all()
    assert not np.isnan(got[covered]).any()
    assert (got[10:14] == 0).all()  # a zero score stays 0, not NaN
    assert np.isnan(StepScores(5, 2, how).result()).all()


def test_mean_and_max_need_step_scores_and_window_does_not():
    with pytest.raises(ValueError, match="needs step_scores"):
        StepScores(10, 4, "mean").add(np.array([0]), np.array([1.0]), None)
    with pytest.raises(ValueError, match="needs step_scores"):
        StepScores(10, 4, "max").add(np.array([0]), np.array([1.0]))
    acc = StepScores(10, 4, "window")
    acc.add(np.array([0]), np.array([1.0]))
    assert acc.result()[0] == 1.0


def test_bad_windows_are_refused():
    acc = StepScores(10, 4, "mean")
    with pytest.raises(ValueError, match="starting at 7 runs past the series end"):
        acc.add(np.array([0, 7]), np.zeros(2), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="before the series start"):
        acc.add(np.array([-1]), np.zeros(1), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(1, 4\)"):
        acc.add(np.array([0]), np.zeros(1), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="how must be one of"):
        StepScores(10, 4, "median")
    assert (acc.coverage == 0).all()  # nothing was added by the refused calls


@pytest.mark.parametrize("how", POINT_SCORES)
def test_aggregate_outputs_streams_batches_of_several_series(how):
    rng = np.random.default_rng(3)
    a = random_windows(rng, 300, 12, 5)
    b = random_windows(rng, 90, 12, 12)
    rows = [("a", *[x[i] for x in a]) for i in range(len(a[0]))]
    rows += [("b", *[x[i] for x in b]) for i in range(len(b[0]))]
    order = rng.permutation(len(rows))
    batches = []
    for part in np.array_split(order, 5):  # each batch mixes both series, in shuffled order
        ids, starts, scores, steps = zip(*(rows[i] for i in part), strict=True)
        batches.append(output_batch(list(ids), np.array(starts), np.array(scores), np.stack(steps)))
    got = aggregate_outputs(iter(batches), {"a": 300, "b": 95, "c": 10}, 12, how)
    assert set(got) == {"a", "b", "c"}
    np.testing.assert_allclose(got["a"], reference(300, 12, how, *a), rtol=1e-12)
    np.testing.assert_allclose(got["b"][:90], reference(90, 12, how, *b), rtol=1e-12)
    assert np.isnan(got["b"][90:]).all() and np.isnan(got["c"]).all()


def test_aggregate_outputs_names_an_unknown_series():
    rng = np.random.default_rng(0)
    batch = output_batch("ghost", *random_windows(rng, 20, 4, 2))
    with pytest.raises(ValueError, match="'ghost'"):
        aggregate_outputs([batch], {"a": 20}, 4, "mean")


def test_aggregate_outputs_checks_the_step_score_column():
    rng = np.random.default_rng(0)
    batch = output_batch("a", *random_windows(rng, 20, 4, 2))
    with pytest.raises(ValueError, match=r"fixed_size_list<float32>\[5\]"):
        aggregate_outputs([batch], {"a": 20}, 5, "max")
    with pytest.raises(ValueError, match="step_score"):
        aggregate_outputs([batch.drop_columns(["step_score"])], {"a": 20}, 4, "mean")
    got = aggregate_outputs([batch.drop_columns(["step_score"])], {"a": 20}, 4, "window")
    assert not np.isnan(got["a"]).any()


@pytest.mark.parametrize(("flags", "starts", "stops"), [
    ([], [], []),
    ([0, 0, 0], [], []),
    ([1, 1, 1], [0], [3]),
    ([1, 0, 0, 1], [0, 3], [1, 4]),
    ([1, 1, 0, 1, 0, 1, 1], [0, 3, 5], [2, 4, 7]),
    ([0, 1, 0], [1], [2]),
])
def test_merge_events(flags, starts, stops):
    got_starts, got_stops = merge_events(np.array(flags, dtype=bool))
    assert got_starts.tolist() == starts and got_stops.tolist() == stops


def test_merge_events_refuses_non_flags():
    with pytest.raises(ValueError, match="1-D"):
        merge_events(np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="booleans or 0/1"):
        merge_events(np.array([0.5, 1.0]))


def test_events_table_on_a_hand_made_series():
    t = pd.date_range("2026-01-01", periods=10, freq="min").to_numpy()
    flags = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 1], dtype=bool)
    score = np.array([5, 7, 0, 0, 1, 9, 2, 0, 0, 3], dtype=float)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    table = events_table("s1", t, flags, score, labels)
    assert list(table.columns) == ["series_id", "start", "end", "steps", "peak_score", "peak_t",
                                   "overlaps_anomaly"]
    assert table["series_id"].tolist() == ["s1"] * 3
    assert table["start"].tolist() == [pd.Timestamp(t[i]) for i in (0, 4, 9)]
    assert table["end"].tolist() == [pd.Timestamp(t[i]) for i in (1, 6, 9)]
    assert table["steps"].tolist() == [2, 3, 1]
    assert table["peak_score"].tolist() == [7.0, 9.0, 3.0]
    assert table["peak_t"].tolist() == [pd.Timestamp(t[i]) for i in (1, 5, 9)]
    assert table["overlaps_anomaly"].tolist() == [False, True, False]
    assert str(table["overlaps_anomaly"].dtype) == "boolean"


def test_events_table_without_labels_or_events():
    t = np.arange(100, 105)
    table = events_table("s", t, np.array([0, 1, 1, 0, 0], dtype=bool), np.arange(5.0))
    assert table["start"].tolist() == [101] and table["end"].tolist() == [102]
    assert table["overlaps_anomaly"].isna().all()
    assert str(table["overlaps_anomaly"].dtype) == "boolean"
    empty = events_table("s", t, np.zeros(5, dtype=bool), np.arange(5.0))
    assert empty.empty and "peak_t" in empty.columns
    with pytest.raises(ValueError, match="differ in length"):
        events_table("s", t[:4], np.zeros(5, dtype=bool), np.arange(5.0))


def test_event_precision_recall_counts_events():
    labels = np.zeros(30, dtype=bool)
    labels[5:9] = labels[20:24] = True  # two labelled events
    flags = np.zeros(30, dtype=bool)
    flags[1:3] = flags[8:11] = flags[14:16] = True  # three flagged, one overlapping [5, 9)
    got = event_precision_recall(flags, labels)
    assert got["flagged_events"] == 3 and got["labelled_events"] == 2
    assert got["flagged_overlapping"] == 1 and got["labelled_found"] == 1
    assert got["precision"] == pytest.approx(1 / 3) and got["recall"] == pytest.approx(1 / 2)
    assert got["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_event_precision_recall_edge_cases():
    nothing = event_precision_recall(np.zeros(5, dtype=bool), np.array([0, 1, 1, 0, 0]))
    assert nothing["precision"] is None and nothing["recall"] == 0.0 and nothing["f1"] is None
    unlabelled = event_precision_recall(np.array([1, 0, 0]), np.zeros(3))
    assert unlabelled["precision"] == 0.0 and unlabelled["recall"] is None
    misses = event_precision_recall(np.array([1, 0, 0, 0]), np.array([0, 0, 1, 1]))
    assert misses["precision"] == 0.0 and misses["recall"] == 0.0 and misses["f1"] == 0.0


def test_events_do_not_merge_across_series():
    # Concatenated, the flags at the end of a and the start of b would be one event
    # overlapping b's label; per series they are two events, one of them a hit.
    flags = [np.array([0, 0, 1, 1], dtype=bool), np.array([1, 1, 0, 0], dtype=bool)]
    labels = [np.zeros(4, dtype=bool), np.array([0, 1, 0, 0], dtype=bool)]
    got = event_precision_recall(flags, labels)
    assert got["flagged_events"] == 2 and got["flagged_overlapping"] == 1
    assert got["precision"] == 0.5 and got["recall"] == 1.0
    joined = event_precision_recall(np.concatenate(flags), np.concatenate(labels))
    assert joined["flagged_events"] == 1 and joined["precision"] == 1.0
    with pytest.raises(ValueError, match="2 series of flags but 1"):
        event_precision_recall(flags, labels[:1])


def test_aggregate_outputs_takes_dictionary_encoded_series_ids():
    rng = np.random.default_rng(1)
    windows = random_windows(rng, 40, 4, 2)
    plain = output_batch(["a" if i % 2 == 0 else "b" for i in range(len(windows[0]))], *windows)
    encoded = plain.set_column(0, "series_id", plain.column("series_id").dictionary_encode())
    lengths = {"a": 40, "b": 40}
    got, expected = (aggregate_outputs([batch], lengths, 4, "max") for batch in (encoded, plain))
    for series_id in lengths:
        np.testing.assert_array_equal(got[series_id], expected[series_id])
    assert np.isnan(got["a"]).sum() != np.isnan(got["b"]).sum()  # the rows did split by series
