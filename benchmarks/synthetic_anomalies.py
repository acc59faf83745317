"""Synthetic anomalies in a real normal series: one labelled test series per anomaly type.

Why: a real anomaly benchmark series (a UCR archive one holds a single labelled anomaly) says
whether a detector found that one anomaly, not which kinds of anomaly it finds. Here anomalies
of one known kind at a time are inserted into real normal data, so VUS-PR can be computed per
kind. The data around them stay real (a physiological signal with its own noise and
beat-to-beat variation), so only the inserted stretches are abnormal. Sizes are relative to the
series' standard deviation and lengths to its period, so one set of definitions fits any
periodic signal: each kind is large enough to be seen, and all but the spike stay within the
signal's usual range, so a threshold on the raw values does not find them (each definition is
on its inserter below):

    spike             1-3 points displaced by 2.5-4 std
    level_shift       1-2 periods offset by 0.8-1.2 std
    frequency_change  2 periods in which the signal runs 1.5x or 2x as fast, in phase at both ends
    missing_pattern   1 period replaced by the straight line between its neighbours
    extra_pattern     1 period replaced by the one 0.3-0.7 periods later (out of phase)
    trend_change      2-3.5 periods with a triangular ramp of 1-2 std added, up and back down

Every kind keeps the series' length: a test series lines up with its source step for step.
Anomalies sit at least one period from the ends and from each other, at random positions.

The real normal series is UCR anomaly archive series 135 (InternalBleeding16, a physiological
recording with one pulse every 183 points): its TRAIN part is the training series, the TEST
points after the training part and before 4000 (the labelled anomaly is at 4187-4198) the
normal test series. The files are TSB-AD / TimeEval single-series CSVs:

    PYTHONPATH=. .venv/bin/python benchmarks/synthetic_anomalies.py --out DIR --seed 0
    # DIR/train.csv, DIR/<type>.csv per type, DIR/anomalies.json (type -> [[start, stop), ...])
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqmodels.data.ucr_anomaly import archive_files
from seqmodels.periods import dominant_period


# --- The data source: the one place that knows where the real series comes from -------------------
def load_kdd135_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train values, test values, test 0/1 labels) of UCR series 135 InternalBleeding16, read
    by the project's own bundled-source reader (seqmodels.data.ucr_anomaly: the aeon wheel's
    files). TRAIN: 1200 normal points. TEST: 7501 points (the whole recording: its first 1200
    are TRAIN), anomaly at 4187-4198."""
    train, test = (pd.read_csv(path) for path in archive_files("kdd135"))
    return (train["value"].to_numpy(np.float64), test["value"].to_numpy(np.float64),
            test["is_anomaly"].to_numpy(np.int8))

# ---------------------------------------------------------------------------------------------------

ANOMALY_TYPES = ("spike", "level_shift", "frequency_change", "missing_pattern", "extra_pattern",
                 "trend_change")
NORMAL_TEST_STOP = 4000
"""kdd135's TEST points before this index hold no labelled anomaly (the anomaly starts at 4187)."""
MIN_PERIOD = 4

Inserter = Callable[[np.ndarray, np.ndarray, int, int, int, float, np.random.Generator], None]
"""insert(out, normal, start, stop, period, scale, rng): writes the anomaly into out[start:stop]."""


def _random_sign(rng: np.random.Generator) -> float:
    return float(rng.choice((-1.0, 1.0)))


def _spike(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int, scale: float,
           rng: np.random.Generator) -> None:
    """spike: 1-3 consecutive points all moved up (or all down) by one draw of 2.5-4 std: a
    glitch outside the usual range of most of the cycle, but not larger than a beat's swing."""
    out[start:stop] = normal[start:stop] + _random_sign(rng) * rng.uniform(2.5, 4.0) * scale


def _level_shift(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int,
                 scale: float, rng: np.random.Generator) -> None:
    """level_shift: 1-2 periods moved up or down by 0.8-1.2 std, the shape kept: a baseline
    change (a sensor offset), smaller than the signal's own swing within a period."""
    out[start:stop] = normal[start:stop] + _random_sign(rng) * rng.uniform(0.8, 1.2) * scale


def _frequency_change(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int,
                      scale: float, rng: np.random.Generator) -> None:
    """frequency_change: 2 periods that play 3 or 4 periods of the normal signal (1.5x or 2x as
    fast, linear interpolation). The played stretch starts a whole number of periods before
    `start` (0 or 1) and ends one period after `stop`, so the signal enters the fast stretch
    and leaves it in phase: the rest of the series continues from where the stretch ends, and
    only the fast stretch is labelled."""
    extra = int(rng.integers(1, 3))  # periods squeezed in: speed (2 + extra) / 2
    before = extra // 2
    first, last = start - before * period, stop + (extra - before) * period
    positions = np.linspace(first, last, num=stop - start, endpoint=False)
    out[start:stop] = np.interp(positions, np.arange(normal.shape[0]), normal)


def _missing_pattern(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int,
                     scale: float, rng: np.random.Generator) -> None:
    """missing_pattern: one period replaced by the straight line from the point before it to the
    point after it: a beat that did not happen. A line rather than a flat local mean, which
    would add a step at each end that a point detector finds without seeing the beat missing."""
    out[start:stop] = np.linspace(normal[start - 1], normal[stop], stop - start + 2)[1:-1]


def _extra_pattern(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int,
                   scale: float, rng: np.random.Generator) -> None:
    """extra_pattern: one period replaced by the period that starts 0.3-0.7 periods later, so a
    beat comes where it does not fit. Of those offsets, the one whose period starts and ends
    nearest the values it replaces, and a linear correction of what is left makes it meet the
    original at the stretch's first and last points: no step at either end, the pasted shape
    hardly bent. Not a duplicated period (which would lengthen the series): in a periodic
    signal a repeated period is a normal one, and which copy is "the extra" could not be told,
    so the label would be arbitrary."""
    length = stop - start
    shifts = np.arange(max(1, round(0.3 * period)), round(0.7 * period) + 1)
    mismatch = (np.abs(normal[start] - normal[start + shifts])
                + np.abs(normal[stop - 1] - normal[stop - 1 + shifts]))
    shift = int(shifts[np.argmin(mismatch)])
    pasted = normal[start + shift: stop + shift]
    out[start:stop] = pasted + np.linspace(normal[start] - pasted[0], normal[stop - 1] - pasted[-1], length)


def _trend_change(out: np.ndarray, normal: np.ndarray, start: int, stop: int, period: int,
                  scale: float, rng: np.random.Generator) -> None:
    """trend_change: a triangular ramp over 2-3.5 periods, rising linearly to 1-2 std (or
    falling) at the middle and back to 0: a slow drift and its recovery. It is non-zero on every
    labelled point and zero just outside them (at most 3.5 periods, so 3 of them fit in 15)."""
    steps = np.arange(1, stop - start + 1) / (stop - start + 1)
    out[start:stop] = normal[start:stop] + _random_sign(rng) * rng.uniform(1.0, 2.0) * scale * (
        1.0 - np.abs(2.0 * steps - 1.0))


@dataclass(frozen=True)
class _Kind:
    length: Callable[[int, np.random.Generator], int]  # labelled points, given the period
    longest: Callable[[int], int]  # the most `length` can return, for the fit check
    insert: Inserter


_KINDS: dict[str, _Kind] = {
    "spike": _Kind(lambda p, rng: int(rng.integers(1, 4)), lambda p: 3, _spike),
    "level_shift": _Kind(lambda p, rng: round(float(rng.uniform(1.0, 2.0) * p)), lambda p: 2 * p,
                         _level_shift),
    "frequency_change": _Kind(lambda p, rng: 2 * p, lambda p: 2 * p, _frequency_change),
    "missing_pattern": _Kind(lambda p, rng: p, lambda p: p, _missing_pattern),
    "extra_pattern": _Kind(lambda p, rng: p, lambda p: p, _extra_pattern),
    "trend_change": _Kind(lambda p, rng: round(float(rng.uniform(2.0, 3.5) * p)),
                          lambda p: math.ceil(3.5 * p), _trend_change),
}


def _series(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as a finite 1-D float64 copy, or a ValueError naming `name`."""
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ValueError(f"{name} must be a 1-D series of finite values, got shape {array.shape}"
                         + ("" if array.ndim != 1 else " with NaN or infinite values"))
    return array


def _place(lengths: list[int], n: int, margin: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Ranges of the given lengths, in order, at random, each `margin` from the next and from the
    ends: the free points are split at `len(lengths)` uniformly drawn cuts."""
    free = n - sum(lengths) - (len(lengths) + 1) * margin
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))
    ranges: list[tuple[int, int]] = []
    cursor, previous = 0, 0
    for length, cut in zip(lengths, cuts, strict=True):
        start = cursor + margin + int(cut) - previous
        ranges.append((start, start + length))
        cursor, previous = start + length, int(cut)
    return ranges


def _check_request(kind: str, count: int, period: int, n: int) -> _Kind:
    """The kind's definition, once kind, count and period are known to fit a series of n points."""
    if kind not in _KINDS:
        raise ValueError(f"unknown anomaly type {kind!r}; the types are {', '.join(ANOMALY_TYPES)}")
    if count < 1 or period < MIN_PERIOD:
        raise ValueError(f"count must be at least 1 and period at least {MIN_PERIOD}, "
                         f"got count={count}, period={period}")
    spec = _KINDS[kind]
    needed = count * spec.longest(period) + (count + 1) * period
    if needed > n:
        raise ValueError(f"a series of {n} points is too short for {count} {kind} anomalies at period "
                         f"{period}: they need up to {needed} ({count} x {spec.longest(period)} points, "
                         f"plus one period before, between and after them)")
    return spec


def insert_anomalies(normal: np.ndarray, kind: str, count: int, period: int, rng: np.random.Generator,
                     *, scale: float | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(values, 0/1 labels, [(start, stop), ...]): `normal` with `count` anomalies of `kind`.

    Same length as `normal`; values outside the ranges are `normal`'s. Ranges are sorted, at
    least `period` points from each other and from both ends. Sizes are in units of `scale`,
    `normal`'s standard deviation unless given (make_test_sets passes the training series')."""
    values = _series(normal, "normal")
    spec = _check_request(kind, int(count), int(period), values.shape[0])
    scale = float(np.std(values)) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"the anomaly scale must be positive (a constant series has none), got {scale}")
    lengths = [spec.length(period, rng) for _ in range(count)]
    ranges = _place(lengths, values.shape[0], period, rng)
    out = values.copy()
    labels = np.zeros(values.shape[0], dtype=np.int8)
    for start, stop in ranges:
        spec.insert(out, values, start, stop, period, scale, rng)
        labels[start:stop] = 1
    return out, labels, ranges


def make_test_sets(normal_train: np.ndarray, normal_test: np.ndarray, period: int, seed: int,
                   count: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{type: (values, labels)}: `count` anomalies of each type in its own copy of `normal_test`.

    Sizes are relative to `normal_train`'s standard deviation, the spread a detector trained on it
    learned as normal, and the same for every type. Each type draws from its own stream of `seed`,
    so one type's series does not depend on the others'."""
    scale = float(np.std(_series(normal_train, "normal_train")))
    streams = np.random.SeedSequence(seed).spawn(len(ANOMALY_TYPES))
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, stream in zip(ANOMALY_TYPES, streams, strict=True):
        values, labels, _ = insert_anomalies(normal_test, kind, count, period,
                                             np.random.default_rng(stream), scale=scale)
        sets[kind] = (values, labels)
    return sets


def label_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """The (start, stop) ranges of consecutive 1s in a 0/1 label array."""
    edges = np.diff(np.concatenate([[0], np.asarray(labels, dtype=np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def write_single_series(path: Path, values: np.ndarray, labels: np.ndarray | None) -> None:
    """A TSB-AD / TimeEval single-series CSV: timestamp (0..n-1), value, and is_anomaly (0/1)
    when labels are given. Values are written to full precision (shortest round-trip repr:
    `pd.read_csv(..., float_precision="round_trip")` reads them back bit for bit)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    frame = pd.DataFrame({"timestamp": np.arange(values.shape[0]), "value": values})
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != values.shape or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be 0/1, one per value ({values.shape[0]}), "
                             f"got shape {labels.shape}")
        frame["is_anomaly"] = labels.astype(np.int8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def kdd135_normal_parts(train: np.ndarray, test: np.ndarray,
                        labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normal_train, normal_test): TRAIN, and the TEST points after it and before 4000.

    UCR's TEST file is the whole recording, its first len(TRAIN) points the TRAIN series: they
    are skipped, or the test set would start with the very points the detector trained on."""
    skip = train.shape[0] if np.array_equal(test[: train.shape[0]], train) else 0
    if labels[:NORMAL_TEST_STOP].any():
        raise ValueError(f"the test series has labelled anomalies before {NORMAL_TEST_STOP}")
    return train, test[skip:NORMAL_TEST_STOP]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write one synthetic-anomaly test series per anomaly "
                                                 "type, built from UCR series 135's normal data.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSVs and anomalies.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=3, help="anomalies per test series")
    args = parser.parse_args(argv)
    normal_train, normal_test = kdd135_normal_parts(*load_kdd135_arrays())
    period = dominant_period(normal_train)
    sets = make_test_sets(normal_train, normal_test, period, args.seed, args.count)
    write_single_series(args.out / "train.csv", normal_train, np.zeros(normal_train.shape[0], np.int8))
    for kind, (values, labels) in sets.items():
        write_single_series(args.out / f"{kind}.csv", values, labels)
    ranges = {kind: [list(r) for r in label_ranges(labels)] for kind, (_, labels) in sets.items()}
    (args.out / "anomalies.json").write_text(json.dumps(ranges, indent=2) + "\n")
    print(f"period {period}; train {normal_train.shape[0]} points, each test series "
          f"{normal_test.shape[0]}; wrote {len(sets) + 1} CSVs and anomalies.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
