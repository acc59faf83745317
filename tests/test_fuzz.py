"""Random canonical tables either validate and window correctly, or fail with the project's
own error type; never an unhandled exception from pandas, numpy or Pandera (issue 7)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqmodels.data import schemas
from seqmodels.data.config import DataConfig, SplitFractions
from seqmodels.data.series import prepare_windows, series_schema
from seqmodels.errors import DataError, SeqmodelsError

WINDOW, STRIDE = 3, 2

series_ids = st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "f"]), st.integers(0, 3), st.none())
steps = st.one_of(st.integers(-2, 12), st.sampled_from([1.5, "x", None, 2**70]))
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                   st.sampled_from(["oops", None, 1e200]))
labels = st.one_of(st.sampled_from([0, 1]), st.sampled_from([2, -1, None, "yes"]))


@st.composite
def frames(draw) -> pd.DataFrame:
    """Mostly well-formed series (so windowing is reached), with random defects mixed in."""
    rows = []
    names = draw(st.lists(st.sampled_from(list("abcdefgh")), min_size=3, max_size=8, unique=True))
    for i, sid in enumerate(names):
        length = draw(st.one_of(st.integers(WINDOW, 8), st.integers(1, 8)))
        label = int(i == 0) if draw(st.integers(0, 4)) else draw(st.sampled_from([0, 1]))
        gaps = draw(st.lists(st.integers(1, 2), min_size=length, max_size=length))
        start = draw(st.integers(-3, 3))
        rows += [{"series_id": sid, "t": start + int(t), "value": draw(st.floats(-1e6, 1e6)), "label": label}
                 for t in np.cumsum(gaps)]
    frame = pd.DataFrame(rows)
    for _ in range(draw(st.integers(0, 3))):  # defects
        row = draw(st.integers(0, len(frame) - 1))
        column, strategy = draw(st.sampled_from([("series_id", series_ids), ("t", steps),
                                                 ("value", values), ("label", labels)]))
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = draw(strategy)
    if draw(st.booleans()) and draw(st.booleans()):
        frame = frame.drop(columns=[draw(st.sampled_from(list(frame.columns)))])
    if draw(st.integers(0, 4)) == 4:
        frame = frame.sample(frac=1, random_state=draw(st.integers(0, 9)))  # rows out of order
    return frame


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_random_tables_validate_and_window_or_fail_with_a_seqmodels_error(frame):
    cfg = DataConfig(source="fuzz.csv", window=WINDOW, stride=STRIDE, split=SplitFractions(val=0.2, test=0.2))
    try:
        table = schemas.validate_table(frame, series_schema(["value"]), table="canonical series",
                                       source="fuzz.csv")
        windows, _, spec, _ = prepare_windows(table, ["value"], cfg, seed=0)
    except SeqmodelsError as error:
        assert isinstance(error, DataError) and error.message.strip()
        return
    # Validated: the table meets its contract ...
    assert table["value"].map(math.isfinite).all()
    assert table.groupby("series_id", sort=False)["t"].apply(lambda t: t.is_monotonic_increasing
                                                             and t.is_unique).all()
    # ... and the windows are exactly the sliding windows of each series, plus, when labels
    # vary inside a series (point labels: every step is scored), one flush with its end.
    lengths = table.groupby("series_id").size()
    expected = {sid: (n - WINDOW) // STRIDE + 1 + int(spec.timeline and (n - WINDOW) % STRIDE != 0)
                for sid, n in lengths.items()}
    assert windows.groupby("series_id").size().to_dict() == expected
    assert spec.input_shape == (WINDOW, 1)
    assert all(len(x) == WINDOW and np.isfinite(x).all() for x in windows["x"])
    assert (windows.groupby("series_id")["split"].nunique() == 1).all()
    if "label" in windows.columns:
        assert set(windows.loc[windows["label"] == 1, "split"]) <= {"test"}
    assert windows["window_id"].tolist() == list(range(len(windows)))
