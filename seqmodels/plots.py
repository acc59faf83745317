"""PNG plots a person can look at (matplotlib, Agg backend: no display needed).

Each function takes plain arrays and a path, so evaluate decides *what* to show and these
only draw. The reconstruction-example plot depends on the modality (a curve, an image, a
word), so `EXAMPLE_PLOTS` maps `data.kind` to the function that draws one; evaluate skips
examples.png, saying why, for a kind that has none.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from seqmodels.point_metrics import runs

LOSS_COMPONENTS = {"loss": "total loss", "recon": "reconstruction", "task": "task (unweighted)",
                   "kl": "KL (unweighted)"}
MAX_SCATTER_POINTS = 5000


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_curves(history: pd.DataFrame, path: Path) -> None:
    """Training and validation loss per epoch: one panel for the total and one per loss
    component that is not identically zero (a model without a task head has no task loss)."""
    shown, skipped = [], []
    for key, title in LOSS_COMPONENTS.items():
        columns = [c for c in (f"train_{key}", f"val_{key}") if c in history and history[c].notna().any()]
        if key == "loss" or any(history[c].abs().max() > 0 for c in columns):
            shown.append((title, columns))
        elif columns:
            skipped.append(key)
    best = None  # the exported model is the best by validation loss
    if "val_loss" in history and history["val_loss"].notna().any():
        best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.8), squeeze=False)
    for ax, (title, columns) in zip(axes[0], shown, strict=True):
        if best is not None:
            ax.axvline(best, color="grey", linewidth=0.8, label=f"best val (epoch {best})")
        for column in columns:
            values = history[column]
            ax.plot(history["epoch"], values, "-" if column.startswith("train") else "--",
                    label=column.split("_")[0])  # epoch is 1-based in the DVCLive log
            if (values.dropna() > 0).all():
                ax.set_yscale("log")
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("loss")
    if skipped:
        fig.suptitle(f"always 0 for this model, not drawn: {', '.join(skipped)}", fontsize=8,
                     x=0.99, ha="right")
    _save(fig, path)


def score_histogram(score: np.ndarray, split: np.ndarray, label: np.ndarray | None, path: Path,
                    threshold: float | None = None, threshold_text: str = "") -> None:
    """Score distribution per split (and per label in test), with the anomaly threshold."""
    fig, ax = plt.subplots(figsize=(7, 4))
    test = split == "test"
    # Scores are errors spanning orders of magnitude: log-spaced bins keep both modes visible.
    positive = score[score > 0]
    low, high = (positive.min(), positive.max()) if len(positive) else (1e-6, 1.0)
    bins = np.geomspace(low, max(high, low * 10), 40)
    if label is None:
        groups = {s: score[split == s] for s in ("train", "val", "test")}
    else:
        groups = {"train": score[split == "train"], "val": score[split == "val"],
                  "test normal": score[test & (label == 0)],
                  "test anomalous": score[test & (label == 1)]}
    for name, values in groups.items():
        if len(values):
            ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.5,
                    label=f"{name} (n={len(values)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--",
                   label=f"threshold {threshold:.3g} {threshold_text}")
    ax.set(xlabel="anomaly score (log scale)", ylabel="rows", title="Score distribution", xscale="log")
    ax.legend(fontsize=8)
    _save(fig, path)


def roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path,
        operating_point: tuple[float, float] | None = None) -> None:
    """ROC curves on test, `curves` = {name: (fpr, tpr, auroc)}; the point the threshold picks."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    if operating_point is not None:
        ax.plot(*operating_point, "ko", label=f"at the threshold (FPR {operating_point[0]:.2f}, "
                f"TPR {operating_point[1]:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on test",
           xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def latent_scatter(projection: np.ndarray, split: np.ndarray, label: np.ndarray | None,
                   label_kind: str, path: Path, explained: list[float], seed: int = 0) -> None:
    """2-D projection of the latents coloured by split, and by label when there is one.
    `label_kind` is "anomaly" (0/1) or "class"."""
    rows = np.arange(len(projection))
    if len(rows) > MAX_SCATTER_POINTS:  # a readable plot, whatever the row count
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_SCATTER_POINTS, replace=False))
    panels = 1 if label is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5), squeeze=False)
    xy, split = projection[rows], split[rows]
    for name in ("train", "val", "test"):
        here = split == name
        if here.any():
            axes[0][0].scatter(*xy[here].T, s=8, alpha=0.6, label=f"{name} (n={int(here.sum())})")
    axes[0][0].set_title("latents by split")
    if label is not None:
        ax, label = axes[0][1], label[rows]
        if label_kind == "anomaly":
            for value, name in ((0, "normal"), (1, "anomalous")):
                here = label == value
                if here.any():
                    ax.scatter(*xy[here].T, s=8, alpha=0.6, label=f"{name} (n={int(here.sum())})",
                               color="tab:blue" if value == 0 else "tab:red")
            ax.set_title("latents by label")
        else:
            points = ax.scatter(*xy.T, s=8, alpha=0.7, c=label, cmap="tab10")
            fig.colorbar(points, ax=ax, label="class")
            ax.set_title("latents by class")
    axis = [f"PC{i + 1} ({r:.0%} of variance)" for i, r in enumerate(explained)] or ["latent 1", "latent 2"]
    for ax in axes[0]:
        ax.set(xlabel=axis[0], ylabel=axis[1])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, markerscale=2)
        ax.grid(alpha=0.3)
    _save(fig, path)


# --- Reconstruction examples, one drawing function per modality -------------------------------------


@dataclass
class Examples:
    """Rows to show, by group ("normal (test)", "anomalous (test)", ...): the model input and
    its reconstruction (flat, as stored), with id and score. `input_shape`, `features` and
    `vocab` come from the prepared data's spec."""

    groups: dict[str, list[dict]]  # name -> [{"id", "score", "x", "reconstruction"}]
    input_shape: tuple[int, ...]
    features: tuple[str, ...] = ()
    vocab: list[str] | None = None
    id_column: str = "id"


def _grid(examples: Examples, **kwargs):
    columns = max(len(rows) for rows in examples.groups.values())
    fig, axes = plt.subplots(len(examples.groups), columns, squeeze=False,
                             figsize=(3.6 * columns, 2.8 * len(examples.groups)), **kwargs)
    for ax in axes.ravel():
        ax.set_visible(False)
    return fig, axes


def _caption(examples: Examples, group: str, row: dict) -> str:
    return f"{group}\n{examples.id_column} {row['id']}, score {row['score']:.3g}"


def series_examples(examples: Examples, path: Path) -> None:
    """Input (solid) vs reconstruction (dashed) over the window, per feature."""
    window, n_features = examples.input_shape
    fig, axes = _grid(examples, sharey=True)
    for r, (group, rows) in enumerate(examples.groups.items()):
        for c, row in enumerate(rows):
            ax = axes[r][c]
            ax.set_visible(True)
            x = np.asarray(row["x"]).reshape(window, n_features)
            recon = np.asarray(row["reconstruction"]).reshape(window, n_features)
            for f in range(min(n_features, 4)):
                name = examples.features[f] if f < len(examples.features) else f"x{f}"
                line, = ax.plot(x[:, f], "-", label=f"{name} input")
                ax.plot(recon[:, f], "--", color=line.get_color(), label=f"{name} reconstruction")
            ax.set_title(_caption(examples, group, row), fontsize=8)
            ax.set_xlabel("step in window", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("scaled value")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)


def tabular_examples(examples: Examples, path: Path) -> None:
    """Each feature's input value (bar) and reconstruction (dot)."""
    (width,) = examples.input_shape
    names = list(examples.features) if len(examples.features) == width else [f"x{i}" for i in range(width)]
    fig, axes = _grid(examples, sharey=True)
    for r, (group, rows) in enumerate(examples.groups.items()):
        for c, row in enumerate(rows):
            ax = axes[r][c]
            ax.set_visible(True)
            ax.bar(np.arange(width), row["x"], color="tab:blue", alpha=0.5, label="input")
            ax.plot(np.arange(width), row["reconstruction"], "o", color="tab:orange", label="reconstruction")
            ax.set_xticks(np.arange(width), names, rotation=90, fontsize=7)
            ax.set_title(_caption(examples, group, row), fontsize=8)
    axes[0][0].set_ylabel("scaled value")
    axes[0][0].legend(fontsize=7)
    _save(fig, path)


def _as_image(flat, shape: tuple[int, ...]) -> np.ndarray:
    channels, height, width = shape
    image = np.clip(np.asarray(flat, dtype=np.float64).reshape(channels, height, width), 0, 1)
    return image[0] if channels != 3 else image.transpose(1, 2, 0)


def image_examples(examples: Examples, path: Path) -> None:
    """Each image next to its reconstruction."""
    columns = max(len(rows) for rows in examples.groups.values())
    fig, axes = plt.subplots(len(examples.groups), 2 * columns, squeeze=False,
                             figsize=(1.9 * 2 * columns, 2.4 * len(examples.groups)))
    for ax in axes.ravel():
        ax.axis("off")
    for r, (group, rows) in enumerate(examples.groups.items()):
        for c, row in enumerate(rows):
            for offset, (key, what) in enumerate((("x", "input"), ("reconstruction", "reconstruction"))):
                ax = axes[r][2 * c + offset]
                ax.imshow(_as_image(row[key], examples.input_shape), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{what}\n{examples.id_column} {row['id']}" if offset == 0 else
                             f"{what}\nscore {row['score']:.3g}", fontsize=7)
        axes[r][0].text(-0.3, 0.5, group, transform=axes[r][0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=8)
    _save(fig, path)


def decode_tokens(ids, vocab: list[str]) -> str:
    """Token ids -> text: stops at <eos>, drops <pad>, shows other special tokens as they are."""
    out = []
    for token in (vocab[int(i)] if 0 <= int(i) < len(vocab) else "<?>" for i in ids):
        if token == "<eos>":
            break
        if token != "<pad>":
            out.append(token)
    return "".join(out)


def token_examples(examples: Examples, path: Path) -> None:
    """Input text and the greedy-decoded reconstruction, one line per sequence."""
    lines = []
    for group, rows in examples.groups.items():
        lines.append((group, "bold"))
        for row in rows:
            text = decode_tokens(row["x"], examples.vocab or [])
            decoded = decode_tokens(row["reconstruction"], examples.vocab or [])
            mark = "same" if text == decoded else "DIFFERENT"
            lines.append((f"  {text!r:>18} -> {decoded!r:<18} {mark:<9} score {row['score']:.3g}", "normal"))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(lines) + 0.8))
    ax.axis("off")
    ax.set_title("input -> greedy-decoded reconstruction")
    for i, (text, weight) in enumerate(lines):
        ax.text(0.0, 1 - (i + 0.5) / len(lines), text, family="monospace", fontsize=9, weight=weight,
                transform=ax.transAxes, va="center")
    _save(fig, path)


EXAMPLE_PLOTS: dict[str, Callable[[Examples, Path], None]] = {
    "series": series_examples,
    "tabular": tabular_examples,
    "images": image_examples,
    "tokens": token_examples,
}


# --- Timeline: where in a long series the score rises, and what the labels say --------------------

MAX_LINE_POINTS = 4000  # per plotted line in an overview: more pixels than the figure is wide
MAX_FIGURE_HEIGHT = 48.0  # inches; more rows get thinner instead of an unreadably tall PNG
_LABELLED = {"color": "tab:red", "alpha": 0.18, "label": "labelled anomaly"}
_FLAGGED = {"color": "tab:orange", "alpha": 0.35, "label": "flagged event"}


@dataclass(frozen=True, eq=False)
class Timeline:
    """One whole series as evaluate sees it, step by step: values, score, split and the two
    kinds of anomaly marks (what the data says, what the threshold says).

    Frozen because the same record feeds both the zoom selection and the drawing, so neither
    may change it under the other; eq=False because arrays have no single truth value, so
    records compare (and hash) by identity. `t` is int64 steps or datetime64 timestamps, only
    used as the x axis. `score` is NaN where no window covers the step (or nothing was
    scored). `flags` is `score > threshold` as the caller decided it, so the plot shows the
    caller's decision rather than recomputing one."""

    series_id: str
    t: np.ndarray
    values: np.ndarray
    score: np.ndarray
    split: np.ndarray
    labels: np.ndarray | None = None
    flags: np.ndarray | None = None

    def __post_init__(self):
        """A length mismatch would otherwise draw shading at the wrong steps, silently."""
        n = len(self.t)
        arrays = {"values": self.values, "score": self.score, "split": self.split,
                  "labels": self.labels, "flags": self.flags}
        wrong = {k: len(v) for k, v in arrays.items() if v is not None and len(v) != n}
        if wrong:
            raise ValueError(f"series {self.series_id}: {len(self.t)} steps in t but lengths {wrong}")


@dataclass(frozen=True)
class ZoomWindow:
    """One zoomed panel: the event's steps [start, stop) in series number `series` and the
    steps [lo, hi) drawn around it (the event plus context, clipped at the series' ends)."""

    series: int
    series_id: str
    start: int
    stop: int
    lo: int
    hi: int
    labelled: bool
    flagged: bool
    peak: float  # highest score in the event, -inf when it has none

    @property
    def kind(self) -> str:
        """What the panel title says the event is."""
        return "labelled + flagged" if self.labelled and self.flagged else (
            "labelled" if self.labelled else "flagged")


def _runs(mask: np.ndarray | None) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive true steps: an event is a run, not a step."""
    if mask is None or not len(mask):
        return []
    starts, stops = runs(np.asarray(mask).astype(bool))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _events(series: Timeline) -> list[tuple[int, int, bool, bool]]:
    """Labelled runs and flagged runs merged where they overlap or touch, so one anomaly that
    was both labelled and caught gets one panel: (start, stop, labelled, flagged)."""
    marked = [(a, b, True, False) for a, b in _runs(series.labels)]
    marked += [(a, b, False, True) for a, b in _runs(series.flags)]
    merged: list[list] = []
    for start, stop, labelled, flagged in sorted(marked):
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            last[1], last[2], last[3] = max(last[1], stop), last[2] or labelled, last[3] or flagged
        else:
            merged.append([start, stop, labelled, flagged])
    return [tuple(event) for event in merged]


def zoom_windows(series: list[Timeline], max_zooms: int = 6, context: int | None = None) -> list[ZoomWindow]:
    """The events worth a zoomed panel, at most `max_zooms`: every labelled one first (they are
    what the reader checks the model against, in series and time order), then flagged-only
    events by their highest score (the most confident false alarms or unlabelled finds).
    `context` steps either side; None means max(50, 2 * event length)."""
    windows = []
    for i, s in enumerate(series):
        score = np.where(np.isnan(s.score), -np.inf, s.score)
        for start, stop, labelled, flagged in _events(s):
            pad = context if context is not None else max(50, 2 * (stop - start))
            windows.append(ZoomWindow(i, s.series_id, start, stop, max(0, start - pad),
                                      min(len(s.t), stop + pad), labelled, flagged,
                                      float(score[start:stop].max())))
    labelled = [w for w in windows if w.labelled]
    flagged = sorted((w for w in windows if not w.labelled), key=lambda w: -w.peak)
    return (labelled + flagged)[:max(0, max_zooms)]


def overview_series(series: list[Timeline], windows: list[ZoomWindow], max_series: int) -> list[Timeline]:
    """The series drawn whole, at most `max_series` in their own order: one panel pair per
    series made a figure of thousands of series unreadable and slow to draw, so those that the
    zoomed events come from go first, then those with the highest peak score."""
    chosen = list(dict.fromkeys(w.series for w in windows))
    peaks = [float(np.nanmax(s.score)) if np.isfinite(s.score).any() else -np.inf for s in series]
    rest = sorted(set(range(len(series))) - set(chosen), key=lambda i: (-peaks[i], i))
    return [series[i] for i in sorted((chosen + rest)[:max(0, max_series)])]


class TimelineCandidates:
    """The series `timeline` could draw, kept as series arrive one at a time: those holding one
    of the first `max_zooms` labelled events, those holding one of the `max_zooms` highest
    flagged-only events, and the `max_series` highest peak scores. `timeline` given only these
    draws what it would draw given every series, in memory that does not grow with them."""

    def __init__(self, max_zooms: int = 6, max_series: int = 6) -> None:
        self.max_zooms, self.max_series = max_zooms, max_series
        self.total = 0
        self._kept: dict[int, Timeline] = {}
        self._labelled: set[int] = set()
        self._labelled_events = 0
        self._flagged: list[tuple[float, int]] = []  # (peak, -order) of the best flagged-only events
        self._peaks: list[tuple[float, int]] = []  # (peak score, -order) of the best series

    def add(self, series: Timeline) -> None:
        order = self.total
        self.total += 1
        events = zoom_windows([series], max_zooms=len(series.t) + 1, context=0)
        if self._labelled_events < self.max_zooms and any(w.labelled for w in events):
            self._labelled.add(order)
            self._labelled_events += sum(w.labelled for w in events)
        for w in events:
            if not w.labelled:
                _keep_best(self._flagged, (w.peak, -order), self.max_zooms)
        finite = np.isfinite(series.score)
        _keep_best(self._peaks, (float(np.max(series.score[finite])) if finite.any() else -np.inf, -order),
                   self.max_series)
        self._kept[order] = series
        wanted = self._labelled | {-o for _, o in self._flagged} | {-o for _, o in self._peaks}
        for gone in set(self._kept) - wanted:
            del self._kept[gone]

    @property
    def series(self) -> list[Timeline]:
        return [self._kept[order] for order in sorted(self._kept)]


def _keep_best(best: list[tuple[float, int]], entry: tuple[float, int], size: int) -> None:
    """`best` as a heap of at most `size` entries, the largest kept (ties: the earlier series)."""
    if size <= 0:
        return
    if len(best) < size:
        heapq.heappush(best, entry)
    elif entry > best[0]:
        heapq.heapreplace(best, entry)


def _decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points that draw like the full line: per bucket of consecutive
    steps the minimum and the maximum, in time order, so a one-step spike still shows. A bucket
    with no finite value gives NaN, which keeps gaps (unscored steps) as gaps."""
    n = len(y)
    if n <= max_points:
        return x, y
    size = -(-n // max(1, max_points // 2))
    buckets = -(-n // size)
    padded = np.concatenate([np.asarray(y, dtype=np.float64), np.full(buckets * size - n, np.nan)])
    grid = padded.reshape(buckets, size)
    missing = np.isnan(grid)
    low = np.where(missing, np.inf, grid).argmin(axis=1)
    high = np.where(missing, -np.inf, grid).argmax(axis=1)
    index = (np.sort(np.stack([low, high], axis=1), axis=1) + size * np.arange(buckets)[:, None]).ravel()
    return x[index], padded[index]


def _edges(t: np.ndarray) -> np.ndarray:
    """Where each step starts, plus where the last one ends (one more step on): step i spans
    edges[i] to edges[i + 1], so a single-step run still has a width."""
    step = t[-1] - t[-2] if len(t) > 1 else t[-1] - t[-1]
    return np.append(t, t[-1] + step)


def _shade(ax, edges: np.ndarray, spans: list[tuple[int, int]], style: dict) -> None:
    """All runs as one full-height artist, so thousands of flagged runs stay cheap to draw,
    and a marker at each run's start on the top edge: in the overview of a long series a
    short run is narrower than a pixel and would otherwise not show."""
    if not spans:
        return
    xs = np.concatenate([[edges[a], edges[a], edges[b], edges[b]] for a, b in spans])
    ys = np.tile([0.0, 1.0, 1.0, 0.0], len(spans))
    ax.fill_between(xs, 0, ys, transform=ax.get_xaxis_transform(), linewidth=0, **style)
    ax.plot(xs[::4], np.full(len(spans), 0.93), "v", color=style["color"], markersize=4,
            transform=ax.get_xaxis_transform())


def _splits(axes, t: np.ndarray, split: np.ndarray) -> None:
    """Faint lines where the split changes, each split's name once, at its first stretch."""
    changes = [0, *(np.flatnonzero(split[1:] != split[:-1]) + 1).tolist()]  # no Python loop over the steps
    named = set()
    for i in changes:
        for ax in axes:
            if i:
                ax.axvline(t[i], color="grey", linewidth=0.7, alpha=0.5)
        if split[i] not in named:
            named.add(split[i])
            axes[0].text(t[i], 0.98, f" {split[i]}", transform=axes[0].get_xaxis_transform(),
                         fontsize=7, color="dimgrey", va="top", ha="left")


def _legend(ax) -> None:
    """One legend entry per label, whatever drew it how often."""
    handles = dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    if handles:
        ax.legend(handles.values(), handles.keys(), fontsize=7, loc="upper right")


def _draw(ax_values, ax_score, s: Timeline, lo: int, hi: int, threshold: float | None) -> None:
    """Values (first 3 features) over score for steps [lo, hi), with labelled runs shaded on
    both and flagged events on the score axis; lines decimated past MAX_LINE_POINTS."""
    t = s.t[lo:hi]
    values = np.asarray(s.values, dtype=np.float64).reshape(len(s.t), -1)[lo:hi]
    for f in range(min(values.shape[1], 3)):
        ax_values.plot(*_decimate(t, values[:, f], MAX_LINE_POINTS), linewidth=0.6,
                       label="value" if values.shape[1] == 1 else f"feature {f}")
    ax_score.plot(*_decimate(t, np.asarray(s.score, dtype=np.float64)[lo:hi], MAX_LINE_POINTS),
                  linewidth=0.6, color="black", label="score")
    if threshold is not None:
        ax_score.axhline(threshold, color="tab:purple", linestyle="--", linewidth=0.9,
                         label=f"threshold {threshold:.3g}")
    edges = _edges(s.t)[lo:hi + 1]
    labelled = _runs(None if s.labels is None else s.labels[lo:hi])
    for ax in (ax_values, ax_score):
        _shade(ax, edges, labelled, _LABELLED)
    _shade(ax_score, edges, _runs(None if s.flags is None else s.flags[lo:hi]), _FLAGGED)
    _splits((ax_values, ax_score), t, s.split[lo:hi])
    if edges[0] != edges[-1]:
        ax_values.set_xlim(edges[0], edges[-1])
    for ax in (ax_values, ax_score):
        ax.grid(alpha=0.3)
        _legend(ax)
    ax_score.set_ylabel("score", fontsize=8)


def _layout(n_series: int, n_zooms: int):
    """Overviews full width, zooms two per row below; the height grows with the rows, capped."""
    zoom_rows = -(-n_zooms // 2)
    ratios = [2.0, 1.2] * n_series + [1.6, 1.0] * zoom_rows
    fig = plt.figure(figsize=(14, min(MAX_FIGURE_HEIGHT, 0.6 + sum(ratios))))
    grid = fig.add_gridspec(len(ratios), 2, height_ratios=ratios)
    overviews = []
    for i in range(n_series):
        top = fig.add_subplot(grid[2 * i, :])
        overviews.append((top, fig.add_subplot(grid[2 * i + 1, :], sharex=top)))
    zooms = []
    for k in range(n_zooms):
        row, column = 2 * n_series + 2 * (k // 2), k % 2
        top = fig.add_subplot(grid[row, column])
        zooms.append((top, fig.add_subplot(grid[row + 1, column], sharex=top)))
    return fig, overviews, zooms


def timeline(series: list[Timeline], threshold: float | None, path: Path, max_zooms: int = 6,
             context: int | None = None, max_series: int = 6, total_series: int | None = None) -> None:
    """Whole series (values over score, labelled runs in red, flagged events in orange, the
    splits marked), at most `max_series` of them (`overview_series`), then zoomed panels at
    full resolution on the events `zoom_windows` picks among all series: an overview of a
    long series shows *where* the score rises, a zoom shows *what* the series did there.
    `series` may be only the candidates TimelineCandidates kept of `total_series`."""
    windows = zoom_windows(series, max_zooms, context)
    shown = overview_series(series, windows, max_series)
    total = len(series) if total_series is None else total_series
    fig, overviews, zooms = _layout(len(shown), len(windows))
    for s, (ax_values, ax_score) in zip(shown, overviews, strict=True):
        _draw(ax_values, ax_score, s, 0, len(s.t), threshold)
        ax_values.set_title(f"{s.series_id}: {len(s.t)} steps", fontsize=9)
    if len(shown) < total:
        fig.suptitle(f"{len(shown)} of {total} series drawn whole: those with zoomed events, "
                     "then the highest scores", fontsize=8, x=0.99, ha="right")
    for w, (ax_values, ax_score) in zip(windows, zooms, strict=True):
        s = series[w.series]
        _draw(ax_values, ax_score, s, w.lo, w.hi, threshold)
        ax_values.set_title(f"{w.series_id}: t {s.t[w.start]} to {s.t[w.stop - 1]} ({w.kind})", fontsize=8)
    for ax_values, _ in overviews + zooms:
        ax_values.tick_params(labelbottom=False)
    _save(fig, path)
