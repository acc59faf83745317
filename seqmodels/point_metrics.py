"""Per-time-step anomaly metrics, with the definitions of TSB-AD 1.5.

One long series, one anomaly score per step, one 0/1 label per step: how well does the score
find the labelled stretches? There is no single answer, so this module computes the measures
TSB-AD (Liu & Paparrizos, "The Elephant in the Room", NeurIPS 2024) reports, with its
definitions, so our figures can be set beside its published tables:

- threshold-free: AUC-ROC, AUC-PR, and VUS-ROC / VUS-PR, the volumes under range-ROC and
  range-PR surfaces, which give partial credit near a labelled range and average over buffer
  widths 0..sliding_window, so a score that peaks a few steps early is not counted as a miss.
  TSB-AD recommends VUS-PR as the headline measure;
- best F-scores over thresholds (each takes the threshold that suits the labels best, so each
  is an upper bound of what a fitted threshold achieves): Standard-F1 (point-wise),
  PA-F1 (point-adjusted: one flagged step inside a labelled range counts the whole range as
  found; it rewards random scores on long ranges, so it is named `pa_f1_optimistic` here),
  Event-based-F1 (recall over ranges, precision over steps), R-based-F1 (Tatbul et al.'s
  range precision and recall) and Affiliation-F (Huet et al.'s distance-based precision and
  recall).

`point_metrics(score, labels, sliding_window=...)` gives the same values as
`TSB_AD.evaluation.metrics.get_metrics(score, labels, slidingWindow=...)` (the tests ask for
1e-6; they agree to a few 1e-16). It is re-implemented here, vectorised, because TSB-AD pins
numpy<2 and loops in Python: its VUS passes over the whole series for each of 250 thresholds
and each buffer width, O(n * sliding_window * 250); here it is O(n log n + sliding_window**2 *
ranges) (100,000 steps, one range, sliding_window 100: 0.02 s here, 3.8 s in TSB-AD).

Kept from TSB-AD, because the numbers are its definition (each documented where it applies):
Standard-F1 adds 1e-5 to its denominator; PA-F1 does not extend a detection back to step 0;
Event-based-F1 ignores the last step of a range that ends the series. Where this module does
differ from TSB-AD it raises a ValueError with a clear message instead of failing deep inside
(no anomaly, only anomalies, NaN scores, bad labels), and it reports Affiliation-F = 0 rather
than NaN for a score that never exceeds its minimum (a constant score).

Plain numpy and scikit-learn; nothing of the rest of the package.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

F1_THRESHOLDS = 100
"""TSB-AD's thresholded F-scores (except Standard-F1) try this many thresholds, evenly spaced
from the lowest to the highest score; a step is flagged when its score is above one."""

VUS_THRESHOLDS = 250
"""VUS takes this many thresholds from the sorted scores; a step is flagged at or above one."""

CHUNK_STEPS = 1 << 20
"""Counts over every step are made this many steps at a time. What a metric keeps for the
whole series is then the score and labels it was given, the anomalous steps' scores and the
steps near labelled ranges, not sorted copies of the series: scikit-learn's curves take
about 45 bytes a step, and evaluate pools every test step of every series (4.4M at 10M
rows)."""

RANGE_RECALL_ALPHA = 0.2
"""R-based recall's weight on finding a range at all (the rest rewards how much of it)."""

TSB_AD_NAMES = {
    "auc_roc": "AUC-ROC",
    "auc_pr": "AUC-PR",
    "vus_pr": "VUS-PR",
    "vus_roc": "VUS-ROC",
    "standard_f1": "Standard-F1",
    "pa_f1_optimistic": "PA-F1",
    "event_f1": "Event-based-F1",
    "r_f1": "R-based-F1",
    "affiliation_f": "Affiliation-F",
}
"""Our key for each metric -> the key TSB-AD's `get_metrics` returns it under."""


@dataclass(frozen=True)
class PointMetrics:
    """The per-step metrics of one scored series; `as_dict()` keys are stable (eval.json)."""

    auc_roc: float
    auc_pr: float
    vus_pr: float
    vus_roc: float
    standard_f1: float
    pa_f1_optimistic: float
    event_f1: float
    r_f1: float
    affiliation_f: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Volumes(NamedTuple):
    """Volumes under TSB-AD's range-ROC and range-PR surfaces."""

    roc: float
    pr: float


def point_metrics(score: ArrayLike, labels: ArrayLike, *, sliding_window: int) -> PointMetrics:
    """Every TSB-AD metric of `score` against per-step `labels`.

    `sliding_window` is TSB-AD's `slidingWindow`: the widest buffer VUS puts around each
    labelled range (TSB-AD's benchmark uses the series' dominant period; its default is 100).
    """
    score, labels = check_inputs(score, labels)
    volumes = vus(score, labels, sliding_window=sliding_window)
    ranking = _Ranking.of(score, labels)  # one pass over the steps for all three of its figures
    return PointMetrics(
        auc_roc=ranking.auc_roc,
        auc_pr=ranking.auc_pr,
        vus_pr=volumes.pr,
        vus_roc=volumes.roc,
        standard_f1=ranking.best_f1,
        pa_f1_optimistic=pa_f1_optimistic(score, labels),
        event_f1=event_f1(score, labels),
        r_f1=r_f1(score, labels),
        affiliation_f=affiliation_f(score, labels),
    )


# --- input checks ---------------------------------------------------------------------------

def check_inputs(score: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """`score` as a float array and `labels` as bool, or a ValueError that says what is wrong.

    TSB-AD gives an IndexError from inside VUS when the labels have no anomaly or no normal
    step, a scikit-learn message for NaN scores or unequal lengths, and "multi_class must be
    in ('ovo', 'ovr')" for a label of 2; every one of those is a ValueError here that names
    the problem, because none of these metrics is defined for such input.
    """
    score = np.asarray(score)
    labels = np.asarray(labels)
    if score.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"score and labels must be 1-D, one value per time step; got shapes "
                         f"{score.shape} and {labels.shape}")
    if len(score) != len(labels):
        raise ValueError(f"score has {len(score)} steps but labels has {len(labels)}: give one "
                         f"score and one label per time step of the same series")
    if not (np.issubdtype(score.dtype, np.number) or score.dtype == bool):
        raise ValueError(f"score must be numeric, got dtype {score.dtype}")
    if not np.issubdtype(score.dtype, np.floating):
        score = score.astype(np.float64)
    # A float32 score stays float32: TSB-AD's threshold grids are then float32 too, and a grid
    # value that rounds onto a score would flag that step differently in float64.
    not_finite = ~np.isfinite(score)
    if not_finite.any():
        first = int(np.argmax(not_finite))
        raise ValueError(f"score has {int(not_finite.sum())} NaN or infinite values (the first at "
                         f"step {first}: {score[first]}); every step needs a finite score")
    not_binary = ~np.isin(labels, (0, 1))
    if not_binary.any():
        first = int(np.argmax(not_binary))
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous) per step; step {first} has "
                         f"{labels[first].item()!r} ({int(not_binary.sum())} such steps)")
    labels = labels.astype(bool)
    n_anomalous = int(labels.sum())
    if n_anomalous == 0:
        raise ValueError(f"labels have no anomalous step in {len(labels)} steps; these metrics "
                         f"compare scores at labelled anomalies with the rest, so evaluate a "
                         f"stretch of series that contains a labelled anomaly")
    if n_anomalous == len(labels):
        raise ValueError(f"every one of the {len(labels)} steps is labelled anomalous; these "
                         f"metrics need normal steps too, so evaluate a longer stretch")
    return score, labels


def _check_window(sliding_window: int) -> int:
    if isinstance(sliding_window, bool):
        raise ValueError(f"sliding_window must be an integer >= 0, got {sliding_window!r}")
    try:
        window = operator.index(sliding_window)
    except TypeError:
        raise ValueError(f"sliding_window must be an integer >= 0, got {sliding_window!r}") from None
    if window < 0:
        raise ValueError(f"sliding_window must be an integer >= 0, got {window}")
    return window


# --- shared pieces --------------------------------------------------------------------------

def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) of every run of True in `mask`, in order: labelled ranges
    here, events in seqmodels.timeline, shaded spans in the timeline plot."""
    # int8 throughout: with a plain [0] at each end the padded mask and its edges were int64,
    # 16 bytes a step (67 MiB of temporaries for the 4.4M test steps of 10M rows).
    edge = np.zeros(1, np.int8)
    edges = np.diff(np.concatenate((edge, mask.astype(np.int8, copy=False), edge)))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _range_max(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """max(values[start:stop]) for each range; -inf for an empty one. Only the ranges' steps
    are gathered (VUS asks this once per buffer width, of a series of millions of steps)."""
    lengths = np.maximum(np.asarray(stops) - np.asarray(starts), 0)
    out = np.full(len(lengths), -np.inf)
    nonempty = lengths > 0
    if nonempty.any():
        lengths, first = lengths[nonempty], np.asarray(starts)[nonempty]
        offsets = np.cumsum(lengths) - lengths
        steps = np.arange(int(lengths.sum())) - np.repeat(offsets - first, lengths)
        out[nonempty] = np.maximum.reduceat(values[steps], offsets)
    return out


def _covered_before(starts: np.ndarray, stops: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many steps of the sorted, disjoint ranges [starts, stops) lie before each of `at`:
    the prefix sum of their mask, read at a few places without making it."""
    if len(starts) == 0:
        return np.zeros(len(at), np.int64)
    done = np.concatenate(([0], np.cumsum(stops - starts)))  # steps of the ranges before range k
    last = np.searchsorted(starts, at, side="right") - 1  # the last range starting at or before
    known = np.maximum(last, 0)
    inside = np.minimum(at, stops[known]) - starts[known]
    return np.where(last >= 0, done[known] + inside, 0)


def _steps_at_least(score: np.ndarray, thresholds: np.ndarray, *, strictly: bool = False) -> np.ndarray:
    """How many steps score >= each threshold (> when `strictly`), CHUNK_STEPS at a time."""
    order = np.argsort(thresholds, kind="stable")
    ordered = thresholds[order]
    side = "left" if strictly else "right"  # x > t[k] iff searchsorted(t, x, "left") > k
    per_slot = np.zeros(len(ordered) + 1, np.int64)
    for begin in range(0, len(score), CHUNK_STEPS):
        slots = np.searchsorted(ordered, score[begin:begin + CHUNK_STEPS], side=side)
        per_slot += np.bincount(slots, minlength=len(ordered) + 1)
    counts = np.empty(len(ordered), np.int64)
    counts[order] = np.cumsum(per_slot[::-1])[::-1][1:]  # slots above k
    return counts


@dataclass(frozen=True)
class _Ranking:
    """The ranking of normal against anomalous steps, at each distinct anomalous score (the
    only thresholds at which recall moves): enough for AUC-ROC, AUC-PR and the best F1 of
    every threshold, exactly, from one chunked pass over the normal steps."""

    true_pos: np.ndarray  # anomalous steps scoring >= each distinct anomalous score, ascending
    false_pos: np.ndarray  # normal steps scoring >= each value
    normal: int  # normal steps
    normal_below: int  # (anomalous, normal) pairs with the anomalous step scoring higher
    ties: int  # pairs scoring the same

    @classmethod
    def of(cls, score: np.ndarray, labels: np.ndarray) -> _Ranking:
        anomalous = np.sort(score[labels])
        values, first = np.unique(anomalous, return_index=True)
        per_slot = np.zeros(len(values) + 1, np.int64)
        below = ties = normal_steps = 0
        for begin in range(0, len(score), CHUNK_STEPS):
            chunk = slice(begin, begin + CHUNK_STEPS)
            normal = score[chunk][~labels[chunk]]
            normal_steps += len(normal)
            lower = np.searchsorted(anomalous, normal, side="left")
            at_most = np.searchsorted(anomalous, normal, side="right")
            below += int(len(anomalous) * len(normal) - at_most.sum())
            ties += int((at_most - lower).sum())
            per_slot += np.bincount(np.searchsorted(values, normal, side="right"), minlength=len(values) + 1)
        false_pos = np.cumsum(per_slot[::-1])[::-1][1:]
        return cls(len(anomalous) - first, false_pos, normal_steps, below, ties)

    @property
    def auc_roc(self) -> float:
        """The area under the ROC curve: the chance an anomalous step outscores a normal one,
        ties counting half (the trapezoids scikit-learn sums, as one count)."""
        return (self.normal_below + self.ties / 2) / (int(self.true_pos[0]) * self.normal)

    @property
    def auc_pr(self) -> float:
        """Average precision: precision at each value, weighted by the recall it adds."""
        precision, recall = self._precision_recall()
        gained = recall - np.append(recall[1:], 0.0)
        return float(np.sum(gained[::-1] * precision[::-1]))  # highest threshold first, as scikit-learn

    @property
    def best_f1(self) -> float:
        """TSB-AD's Standard-F1, 2PR / (P + R + 1e-5), at its best value: between two anomalous
        values only normal steps join, which lowers precision, so the best is at one."""
        precision, recall = self._precision_recall()
        return float(np.max(2 * (precision * recall) / (precision + recall + 0.00001)))

    def _precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        return self.true_pos / (self.true_pos + self.false_pos), self.true_pos / self.true_pos[0]


def _count_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values are > each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="right")


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many values are >= each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")


def _f1_thresholds(score: np.ndarray) -> np.ndarray:
    return np.linspace(score.min(), score.max(), F1_THRESHOLDS)


# --- threshold-free -------------------------------------------------------------------------

def auc_roc(score: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn's, as TSB-AD)."""
    score, labels = check_inputs(score, labels)
    return _Ranking.of(score, labels).auc_roc


def auc_pr(score: ArrayLike, labels: ArrayLike) -> float:
    """Average precision, the step-wise area under the PR curve (scikit-learn's, as TSB-AD)."""
    score, labels = check_inputs(score, labels)
    return _Ranking.of(score, labels).auc_pr


def vus(score: ArrayLike, labels: ArrayLike, *, sliding_window: int) -> Volumes:
    """Volumes under the range-ROC and range-PR surfaces (TSB-AD's VUS, its 'opt' version).

    For each buffer width w in 0..sliding_window, every labelled range is widened by w // 2
    steps on each side with weights sqrt(1 - d / w) at distance d (capped at 1 where buffers
    add up); at 250 thresholds a flagged step earns its weight as a true positive, recall is
    scaled by the share of (merged, widened) ranges that hold a flagged step, and the ROC area
    and average precision of that curve are averaged over all widths.

    TSB-AD loops over widths, thresholds and ranges with a full pass over the series in each.
    Here each piece is counted once: weights live only on the buffer steps, are summed in
    score order with a cumulative sum, and read off at each threshold with a binary search.
    """
    score, labels = check_inputs(score, labels)
    window = _check_window(sliding_window)
    n = len(score)
    starts, stops = runs(labels)
    ends = stops - 1  # TSB-AD's ranges are closed: [start, end]
    n_anomalous = int(labels.sum())

    ranks = (n - 1) - np.linspace(0, n - 1, VUS_THRESHOLDS).astype(int)  # from the highest score
    thresholds = np.partition(score, np.unique(ranks))[ranks]
    flagged = _steps_at_least(score, thresholds)
    found = _count_at_least(np.sort(score[labels]), thresholds)

    # The normal steps any buffer can reach, sorted by score (highest first) once for all widths.
    buffer_steps = _buffer_steps(starts, ends, window // 2, labels)
    by_score = np.argsort(-score[buffer_steps], kind="stable")
    buffer_flagged = _count_at_least(np.sort(score[buffer_steps]), thresholds)

    roc_areas, pr_areas = [], []
    for width in range(window + 1):
        weights = _buffer_weights(starts, ends, width, labels, buffer_steps)
        credit = np.concatenate(([0.0], np.cumsum(weights[by_score])))[buffer_flagged]
        group_max = _widened_range_max(score, starts, ends, width)
        existence = _count_at_least(np.sort(group_max), thresholds) / len(group_max)

        # A flagged labelled step counts 1, a flagged buffer step its weight; TSB-AD's
        # positives (P_new) are the labelled steps plus half the flagged buffer weight.
        true_pos = found + credit
        positives = (n_anomalous + (n_anomalous + credit)) / 2
        tpr = np.minimum(true_pos / positives, 1) * existence
        fpr = (flagged - true_pos) / (n - positives)
        precision = true_pos / flagged

        # The curve runs from (0, 0) to (1, 1); AP is a step sum over the 250 thresholds.
        tpr = np.concatenate(([0.0], tpr, [1.0]))
        fpr = np.concatenate(([0.0], fpr, [1.0]))
        roc_areas.append(np.dot(np.diff(fpr), (tpr[1:] + tpr[:-1]) / 2))
        pr_areas.append(np.dot(tpr[1:-1] - tpr[:-2], precision))
    return Volumes(roc=float(np.mean(roc_areas)), pr=float(np.mean(pr_areas)))


def _buffer_offsets(starts: np.ndarray, ends: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps within `half` steps after each range's end, then before its start, range by range
    (TSB-AD's order of adding up buffers), and the distance d of each to its range."""
    after = np.arange(1, half + 1)
    before = after[::-1]
    steps = np.concatenate((ends[:, None] + after, starts[:, None] - before), axis=1).ravel()
    distance = np.tile(np.concatenate((after, before)), len(starts))
    return steps, distance


def _buffer_steps(starts: np.ndarray, ends: np.ndarray, half: int, labels: np.ndarray) -> np.ndarray:
    """Every normal step inside the widest buffer, sorted."""
    steps, _ = _buffer_offsets(starts, ends, half)
    steps = steps[(steps >= 0) & (steps < len(labels))]
    return np.unique(steps[~labels[steps]])


def _buffer_weights(starts: np.ndarray, ends: np.ndarray, width: int, labels: np.ndarray,
                    buffer_steps: np.ndarray) -> np.ndarray:
    """TSB-AD's widened label, min(1, sum of sqrt(1 - d / width)), at each buffer step."""
    steps, distance = _buffer_offsets(starts, ends, width // 2)
    keep = (steps >= 0) & (steps < len(labels))
    steps, distance = steps[keep], distance[keep]
    keep = ~labels[steps]  # labelled steps count 1 whatever their buffers add
    steps, distance = steps[keep], distance[keep]
    weights = np.sqrt(1 - distance / width) if len(distance) else np.empty(0)
    total = np.bincount(np.searchsorted(buffer_steps, steps), weights=weights,
                        minlength=len(buffer_steps))
    return np.minimum(total, 1.0)


def _widened_range_max(score: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The highest score in each labelled range widened by width // 2 on both sides, ranges
    whose widenings meet merged into one (TSB-AD's `new_sequence`)."""
    half = width // 2
    new_group = np.concatenate(([True], (starts[1:] - half) > (ends[:-1] + half)))
    first = np.flatnonzero(new_group)
    last = np.append(first[1:] - 1, len(starts) - 1)
    lo = np.maximum(starts[first] - half, 0)
    hi = np.minimum(ends[last] + half, len(score) - 1)
    return _range_max(score, lo, hi + 1)


# --- best F-scores over thresholds -----------------------------------------------------------

def standard_f1(score: ArrayLike, labels: ArrayLike) -> float:
    """The best point-wise F1 over every threshold of the precision-recall curve.

    TSB-AD computes 2PR / (P + R + 1e-5); the 1e-5 (which lowers a perfect score to 0.999995)
    is kept so the values agree.
    """
    score, labels = check_inputs(score, labels)
    return _Ranking.of(score, labels).best_f1


def pa_f1_optimistic(score: ArrayLike, labels: ArrayLike) -> float:
    """Point-adjusted F1, best of 100 thresholds. OPTIMISTIC: once any step of a labelled range
    is flagged, the whole range counts as found, so a random score on long ranges scores high;
    report it beside the others, never alone.

    As in TSB-AD's `_adjust_predicts`, the adjustment does not reach back to step 0: a range
    that starts the series gets step 0 only if step 0 itself is flagged.
    """
    score, labels = check_inputs(score, labels)
    thresholds = _f1_thresholds(score)
    starts, stops = runs(labels)
    detected = _range_max(score, starts, stops)[None, :] > thresholds[:, None]
    missed_first = (starts == 0)[None, :] & (score[0] <= thresholds)[:, None]
    true_pos = (detected * (stops - starts) - (detected & missed_first)).sum(axis=1)
    false_pos = (_steps_at_least(score, thresholds, strictly=True)
                 - _count_above(np.sort(score[labels]), thresholds))
    false_neg = labels.sum() - true_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true_pos > 0, 2 * true_pos / (2 * true_pos + false_pos + false_neg), 0.0)
    return float(f1.max())


def event_f1(score: ArrayLike, labels: ArrayLike) -> float:
    """Event-based F1, best of 100 thresholds: recall is the share of labelled ranges with a
    flagged step, precision is point-wise (TSB-AD's `metric_EventF1PA`).

    As in TSB-AD's `_get_events`, a range that ends on the last step of the series is checked
    without that step (a one-step anomaly there is never found).
    """
    score, labels = check_inputs(score, labels)
    thresholds = _f1_thresholds(score)
    starts, stops = runs(labels)
    checked_stops = np.where(stops == len(score), stops - 1, stops)
    found = (_range_max(score, starts, checked_stops)[None, :] > thresholds[:, None]).sum(axis=1)
    recall = found / len(starts)
    flagged = _steps_at_least(score, thresholds, strictly=True)
    true_pos = _count_above(np.sort(score[labels]), thresholds)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, true_pos / flagged, 0.0)
    return float(np.max(2 * recall * precision / (recall + precision + 1e-15)))


def r_f1(score: ArrayLike, labels: ArrayLike) -> float:
    """Range-based F1 (Tatbul et al. 2018, flat bias), best of 100 thresholds.

    Range recall: per labelled range, 0.2 for holding a flagged step plus 0.8 times the share
    of its steps flagged, divided by how many flagged ranges overlap it; range precision: per
    flagged range, the share of its steps labelled, divided by how many labelled ranges it
    overlaps (TSB-AD's `range_recall_new`).
    """
    score, labels = check_inputs(score, labels)
    label_starts, label_stops = runs(labels)
    best = 0.0
    for threshold in _f1_thresholds(score):
        flags = score > threshold
        flag_starts, flag_stops = runs(flags)
        if len(flag_starts) == 0:
            continue  # TSB-AD scores 0 here
        recall = _range_score(label_starts, label_stops, flag_starts, flag_stops, RANGE_RECALL_ALPHA)
        precision = _range_score(flag_starts, flag_stops, label_starts, label_stops, 0.0)
        if recall + precision != 0:
            best = max(best, 2 * recall * precision / (precision + recall))
    return float(best)


def _range_score(starts: np.ndarray, stops: np.ndarray, other_starts: np.ndarray, other_stops: np.ndarray,
                 alpha: float) -> float:
    """Tatbul's range recall of the ranges [starts, stops) against the other ranges
    (TSB-AD's `range_recall_new`)."""
    overlap = (_covered_before(other_starts, other_stops, stops)
               - _covered_before(other_starts, other_stops, starts))
    # The other ranges that share a step with each range: a contiguous block, by binary search.
    n_overlapping = (np.searchsorted(other_starts, stops - 1, side="right")
                     - np.searchsorted(other_stops - 1, starts, side="left"))
    cardinality = np.where(n_overlapping > 0, 1 / np.maximum(n_overlapping, 1), 0.0)
    existence = np.count_nonzero(overlap)
    overlap_reward = np.sum(overlap / (stops - starts) * cardinality)
    return float((alpha * existence + (1 - alpha) * overlap_reward) / len(starts))


def affiliation_f(score: ArrayLike, labels: ArrayLike) -> float:
    """Affiliation F (Huet et al., KDD 2022), best of 100 thresholds.

    The series is cut into one zone per labelled range (boundaries halfway between ranges);
    inside a zone, precision is the mean over flagged time of the chance that a uniformly
    random point of the zone lies farther from the range, recall the same from the range's
    side towards the flags. Zone precisions with no flag in the zone are left out of the
    mean, as TSB-AD does.

    TSB-AD returns NaN when no threshold flags anything (a constant score: precision is then
    undefined everywhere); that is 0 here, as an F-score of a detector that finds nothing.
    """
    score, labels = check_inputs(score, labels)
    events = runs(labels)
    best = 0.0
    for threshold in _f1_thresholds(score):
        flags = runs(score > threshold)
        if len(flags[0]) == 0:
            continue
        precision, recall = _affiliation_precision_recall(flags, events, len(score))
        if np.isnan(precision):
            continue
        best = max(best, 2 * precision * recall / (precision + recall + 1e-15))
    return float(best)


def _affiliation_precision_recall(flags: tuple[np.ndarray, np.ndarray], events: tuple[np.ndarray, np.ndarray],
                                  n: int) -> tuple[float, float]:
    """Affiliation precision and recall of flagged ranges against labelled ranges, both as
    half-open [start, stop) intervals in a series of n steps (TSB-AD's `pr_from_events`)."""
    event_starts, event_stops = (x.astype(np.float64) for x in events)
    bounds = np.concatenate(([0.0], (event_stops[:-1] + event_starts[1:]) / 2, [float(n)]))
    zone_lo, zone_hi = bounds[:-1], bounds[1:]
    zone, lo, hi = _cut_at_zones(*flags, zone_lo, zone_hi)
    j0, j1, e0, e1 = event_starts[zone], event_stops[zone], zone_lo[zone], zone_hi[zone]
    n_zones = len(zone_lo)

    # Precision: each flagged piece against its zone's labelled range.
    inside = np.maximum(0.0, np.minimum(hi, j1) - np.maximum(lo, j0))
    before = _precision_integral(np.minimum(lo, j0), np.minimum(hi, j0), j0, j1, e0, e1)
    after = _precision_integral(np.maximum(lo, j1), np.maximum(hi, j1), j0, j1, e0, e1)
    zone_integral = np.bincount(zone, weights=before + inside + after, minlength=n_zones)
    zone_length = np.bincount(zone, weights=hi - lo, minlength=n_zones)
    flagged_zones = np.bincount(zone, minlength=n_zones) > 0
    precision = (float(np.mean(zone_integral[flagged_zones] / zone_length[flagged_zones]))
                 if flagged_zones.any() else float("nan"))

    # Recall: each labelled range, cut halfway between the flagged pieces of its zone, against
    # the piece each part is closest to.
    same_zone = zone[1:] == zone[:-1]
    midpoints = (hi[:-1] + lo[1:]) / 2
    part_lo, part_hi = e0.copy(), e1.copy()
    part_lo[1:][same_zone] = midpoints[same_zone]
    part_hi[:-1][same_zone] = midpoints[same_zone]
    t0 = np.minimum(np.maximum(j0, part_lo), part_hi)
    t1 = np.minimum(np.maximum(j1, part_lo), part_hi)
    inside = np.maximum(0.0, np.minimum(t1, hi) - np.maximum(t0, lo))
    before = _recall_integral(np.minimum(t0, lo), np.minimum(t1, lo), lo, e0, e1, pivot_after=True)
    after = _recall_integral(np.maximum(t0, hi), np.maximum(t1, hi), hi, e0, e1, pivot_after=False)
    zone_recall = np.bincount(zone, weights=before + inside + after, minlength=n_zones)
    recall = float(np.mean(zone_recall / (event_stops - event_starts)))
    return precision, recall


def _cut_at_zones(starts: np.ndarray, stops: np.ndarray, zone_lo: np.ndarray,
                  zone_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each [start, stop) at the zone boundaries: (zone, lo, hi) of every non-empty piece,
    in series order."""
    first = np.searchsorted(zone_hi, starts, side="right")
    last = np.searchsorted(zone_lo, stops, side="left") - 1
    counts = last - first + 1
    owner = np.repeat(np.arange(len(starts)), counts)
    zone = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    lo = np.maximum(starts[owner], zone_lo[zone])
    hi = np.minimum(stops[owner], zone_hi[zone])
    return zone, lo, hi


def _precision_integral(i0: np.ndarray, i1: np.ndarray, j0: np.ndarray, j1: np.ndarray,
                        e0: np.ndarray, e1: np.ndarray) -> np.ndarray:
    """Integral over x in [i0, i1] (outside the range [j0, j1], inside its zone [e0, e1]) of the
    chance that a uniform point of the zone is farther from the range than x; 0 when i0 == i1.
    (TSB-AD's `integral_mini_interval_Pprecision_CDFmethod`, term by term.)"""
    d_min = np.maximum(i0 - j1, j0 - i1)
    d_max = np.maximum(i1 - j1, j0 - i0)
    m = np.minimum(j0 - e0, e1 - j1)
    a = np.minimum(d_max, m) ** 2 - np.minimum(d_min, m) ** 2
    b = np.maximum(d_max, m) - np.maximum(d_min, m)
    min_piece = (1 / 2) * a + m * b
    linear_piece = (1 / 2) * (d_max ** 2 - d_min ** 2)
    remaining_piece = (j1 - j0) * (i1 - i0)
    return (i1 - i0) - (1 / (e1 - e0)) * (min_piece + linear_piece + remaining_piece)


def _recall_integral(t0: np.ndarray, t1: np.ndarray, pivot: np.ndarray, e0: np.ndarray, e1: np.ndarray,
                     *, pivot_after: bool) -> np.ndarray:
    """Integral over t in [t0, t1] (a part of a labelled range that lies before the flagged
    piece's start `pivot` when pivot_after, else after its end) of the chance that a uniform
    point of the zone [e0, e1] is farther from t than the piece is; 0 when t0 == t1.
    (TSB-AD's `integral_mini_interval_Precall_CDFmethod`: the integrand
    1 - (min(d, m) + d) / |E| integrated piecewise between the breakpoints below.)"""
    e_mean = (e0 + e1) / 2
    near_e0 = (e0 + pivot) / 2
    near_e1 = (e1 + pivot) / 2
    # The part before e_mean, cut where it is as close to e0 as to the pivot; the part after,
    # where it is as close to e1. Empty pieces come out as zero-length intervals.
    lower0, lower1 = np.minimum(t0, e_mean), np.minimum(t1, e_mean)
    upper0, upper1 = np.maximum(t0, e_mean), np.maximum(t1, e_mean)
    bb0, bb1 = np.minimum(lower0, near_e0), np.minimum(lower1, near_e0)
    ba0, ba1 = np.maximum(lower0, near_e0), np.maximum(lower1, near_e0)
    ab0, ab1 = np.minimum(upper0, near_e1), np.minimum(upper1, near_e1)
    aa0, aa1 = np.maximum(upper0, near_e1), np.maximum(upper1, near_e1)
    if pivot_after:
        parts = ((pivot - e0) * (bb1 - bb0)
                 + (2 * pivot * (ba1 - ba0) - (ba1 ** 2 - ba0 ** 2))
                 + (2 * pivot * (ab1 - ab0) - (ab1 ** 2 - ab0 ** 2))
                 + ((e1 + pivot) * (aa1 - aa0) - (aa1 ** 2 - aa0 ** 2)))
    else:
        parts = (((bb1 ** 2 - bb0 ** 2) - (e0 + pivot) * (bb1 - bb0))
                 + ((ba1 ** 2 - ba0 ** 2) - 2 * pivot * (ba1 - ba0))
                 + ((ab1 ** 2 - ab0 ** 2) - 2 * pivot * (ab1 - ab0))
                 + (e1 - pivot) * (aa1 - aa0))
    integral = (t1 - t0) - (1 / (e1 - e0)) * parts
    # A pivot on the zone's edge is farther than any point of the zone: no credit.
    return np.where((pivot <= e0) | (pivot >= e1), 0.0, integral)
