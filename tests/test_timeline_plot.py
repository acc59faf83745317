"""The timeline plot: which events get a zoomed panel, the decimation that keeps spikes, and
that the PNG is drawn (datetime or step t, with or without labels and flags) without warnings."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from seqmodels.plots import (
    MAX_LINE_POINTS,
    Timeline,
    TimelineCandidates,
    _decimate,
    overview_series,
    timeline,
    zoom_windows,
)

pytestmark = pytest.mark.filterwarnings("error")


def _series(n=1000, labelled=(), flagged=(), scores=None, sid="s0", datetime=False, features=2,
            with_labels=True):
    """A noisy sine with NaN scores over the first 30 steps (no full window yet); `labelled` and
    `flagged` are [start, stop) runs, `scores` {step: score} raises the score at a step."""
    rng = np.random.default_rng(0)
    steps = np.arange(n, dtype=np.int64)
    t = np.datetime64("2024-01-01T00:00") + steps.astype("timedelta64[m]") if datetime else steps
    values = np.sin(steps[:, None] / 20 + np.arange(features)) + rng.normal(0, 0.05, (n, features))
    score = rng.uniform(0, 1, n)
    score[:30] = np.nan
    for step, value in (scores or {}).items():
        score[step] = value
    split = np.where(steps < 0.6 * n, "train", np.where(steps < 0.8 * n, "val", "test"))
    labels = np.zeros(n, dtype=np.int64)
    for a, b in labelled:
        labels[a:b] = 1
    flags = np.zeros(n, dtype=bool)
    for a, b in flagged:
        flags[a:b] = True
    return Timeline(sid, t, values.squeeze() if features == 1 else values, score, split,
                    labels if with_labels else None, flags if flagged else None)


def test_labelled_runs_come_first_then_flagged_by_highest_score():
    s = _series(labelled=[(600, 610)], flagged=[(100, 103), (300, 302), (900, 905)],
                scores={101: 5.0, 301: 9.0, 902: 7.0})
    windows = zoom_windows([s], max_zooms=6)
    assert [(w.start, w.kind) for w in windows] == [
        (600, "labelled"), (300, "flagged"), (900, "flagged"), (100, "flagged")]
    assert windows[1].peak == 9.0


def test_overlapping_labelled_and_flagged_runs_are_one_panel():
    s = _series(labelled=[(500, 510), (515, 520)], flagged=[(505, 516), (700, 701)])
    windows = zoom_windows([s], max_zooms=6)
    assert [(w.start, w.stop, w.labelled, w.flagged) for w in windows] == [
        (500, 520, True, True), (700, 701, False, True)]
    assert windows[0].kind == "labelled + flagged"


def test_the_cap_counts_across_series_and_keeps_labelled_ones():
    a = _series(flagged=[(100 * k, 100 * k + 2) for k in range(1, 9)], sid="a")
    b = _series(labelled=[(400, 405)], sid="b")
    windows = zoom_windows([a, b], max_zooms=3)
    assert len(windows) == 3
    assert (windows[0].series_id, windows[0].labelled) == ("b", True)
    assert zoom_windows([a, b], max_zooms=0) == []


def test_context_is_clipped_at_the_ends_and_defaults_to_twice_the_event():
    s = _series(n=1000, labelled=[(5, 10), (400, 440)], flagged=[(990, 1000)])
    near_start, middle, near_end = zoom_windows([s], max_zooms=6)
    assert (near_start.lo, near_start.hi) == (0, 60)  # default context max(50, 2 * 5) = 50
    assert (middle.lo, middle.hi) == (320, 520)  # 2 * 40 = 80 either side
    assert (near_end.lo, near_end.hi) == (940, 1000)
    near_start = zoom_windows([s], max_zooms=1, context=20)[0]
    assert (near_start.lo, near_start.hi) == (0, 30)


def test_decimation_keeps_a_single_spike_in_a_million_points():
    y = np.zeros(1_000_000)
    y[123_457], y[876_543] = 7.0, -3.0
    x, small = _decimate(np.arange(len(y)), y, MAX_LINE_POINTS)
    assert len(small) <= MAX_LINE_POINTS
    assert small.max() == 7.0 and small.min() == -3.0
    assert 123_457 in x and 876_543 in x
    assert np.all(np.diff(x) >= 0)  # in time order, so the line draws the spike where it was


def test_decimation_keeps_each_buckets_min_and_max_and_gaps():
    y = np.random.default_rng(1).normal(size=10_000)
    y[2000:3000] = np.nan
    _, small = _decimate(np.arange(len(y)), y, 200)  # 100 buckets of 100 steps
    buckets, envelope = y.reshape(100, 100), small.reshape(100, 2)
    scored = ~np.isnan(buckets).all(axis=1)
    assert np.array_equal(np.nanmin(buckets[scored], axis=1), envelope[scored].min(axis=1))
    assert np.array_equal(np.nanmax(buckets[scored], axis=1), envelope[scored].max(axis=1))
    assert np.isnan(envelope[~scored]).all() and (~scored).sum() == 10
    short = np.arange(50.0)
    assert _decimate(short, short, 200)[1] is short


def test_timeline_png_grows_with_zoom_panels(tmp_path):
    plain, zoomed = tmp_path / "plain.png", tmp_path / "zoomed.png"
    timeline([_series(with_labels=False)], 0.9, plain)
    timeline([_series(labelled=[(700, 705)], flagged=[(702, 710), (850, 851)], scores={850: 3.0}),
              _series(n=200_000, features=4, labelled=[(150_000, 150_001)], sid="long")],
             0.9, zoomed, max_zooms=6)
    small, big = mpimg.imread(plain), mpimg.imread(zoomed)
    assert small.shape[1] == big.shape[1] == 1400 and small.shape[2] in (3, 4)
    assert 300 < small.shape[0] < big.shape[0] <= 4800
    assert big.std() > 0.01  # something was drawn


def test_datetime_t_without_labels_or_flags_and_an_unscored_train_split(tmp_path):
    s = _series(n=3000, datetime=True, features=1, with_labels=False, flagged=[(2500, 2504)])
    s.score[:1800] = np.nan  # nothing scored in train
    path = tmp_path / "dates.png"
    timeline([s, _series(datetime=True, with_labels=False, sid="quiet")], None, path, context=30)
    assert mpimg.imread(path).shape[0] > 300


def test_mismatched_lengths_are_refused():
    s = _series(n=100)
    with pytest.raises(ValueError, match="lengths"):
        Timeline("bad", s.t, s.values, s.score[:50], s.split)


def test_a_few_series_are_drawn_whole_the_zoomed_ones_first_then_the_highest_scores(tmp_path):
    """A figure with one panel pair per series of thousands was unreadable and took minutes."""
    many = [_series(n=200, sid=f"s{i:02d}", with_labels=False) for i in range(40)]
    many[30] = _series(n=200, sid="s30", labelled=[(120, 125)])
    many[5].score[50], many[17].score[60] = 9.0, 8.0
    windows = zoom_windows(many, max_zooms=1)
    assert [w.series_id for w in windows] == ["s30"]
    assert [s.series_id for s in overview_series(many, windows, max_series=3)] == ["s05", "s17", "s30"]
    assert [s.series_id for s in overview_series(many, [], max_series=1)] == ["s05"]
    drawn, three = tmp_path / "many.png", tmp_path / "three.png"
    timeline(many, 0.9, drawn, max_zooms=1, max_series=3)
    timeline([many[i] for i in (5, 17, 30)], 0.9, three, max_zooms=1)
    assert mpimg.imread(drawn).shape == mpimg.imread(three).shape


@pytest.mark.parametrize("labelled_every", [3, 50])
def test_the_candidates_kept_one_series_at_a_time_draw_what_all_series_draw(labelled_every):
    """TimelineCandidates keeps a handful of 60 series; zooms and whole-series panels chosen
    among them are those chosen among all (few labelled events: flagged ones fill the zooms)."""
    rng = np.random.default_rng(1)
    every = []
    for i in range(60):
        start = int(rng.integers(100, 800))
        scores = {start + 1: float(rng.uniform(1, 9)), int(rng.integers(30, 999)): float(rng.uniform(1, 9))}
        labelled = [(start, start + 5)] if i % labelled_every == 0 else []
        every.append(_series(n=1000, sid=f"s{i}", labelled=labelled, flagged=[(start, start + 3), (950, 953)],
                             scores=scores))
    kept = TimelineCandidates()
    for s in every:
        kept.add(s)
    assert kept.total == 60 and len(kept.series) <= 18

    def chosen(series):
        windows = zoom_windows(series)
        return ([(w.series_id, w.start, w.stop) for w in windows],
                [s.series_id for s in overview_series(series, windows, max_series=6)])

    assert chosen(kept.series) == chosen(every)
