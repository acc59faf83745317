"""The `data` section of params.yaml, beside the data code it configures.

`kind` is a Literal rather than a lookup in seqmodels.data.registry: this module must not
import the modality modules (they import it, and every stage loads params), so a test
keeps the Literal equal to the registry's kinds and `source`'s description naming each
modality's bundled sources.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seqmodels.sections import Section


class SplitFractions(Section):
    """How examples are split: fractions sent to validation and test (the rest trains).

    `by: series` sends whole series (normal ones; anomalous series all go to test), `by:
    time` cuts every series in time order into train, val, test, the layout of one long
    stream whose future must be scored from its past."""

    by: Literal["series", "time"] = "series"
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.3, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _leave_room_for_train(self) -> SplitFractions:
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test must be < 1 so some series train (got {self.val + self.test})")
        return self


class DataConfig(Section):
    kind: Literal["series", "images", "tabular", "tokens"] = "series"
    source: str = Field(
        "gunpoint",
        description="A bundled dataset name (series: gunpoint, trace, kdd135; images: digits; "
        "tabular: shuttle; tokens: english-words) or a path to a file in the modality's contract: "
        "CSV/Parquet for series, tabular and images, UTF-8 text with one sequence per line for tokens.",
    )
    image_shape: tuple[int, int, int] | None = Field(
        None, description="(channels, height, width) of images read from a file source."
    )
    features: list[str] | None = Field(
        None, description="Feature columns of a file source; default: every non-reserved column."
    )
    normal_class: str = Field(
        "1", description="For bundled labelled datasets: the class treated as normal (label 0)."
    )
    max_length: int = Field(12, gt=0, description="tokens: longest sequence kept (before EOS).")
    max_examples: int | None = Field(
        20_000, gt=0, description="tokens: sample at most this many sequences (seeded)."
    )
    test_source: str | None = Field(
        None, description="series: a second file (same value columns) whose every window is test, e.g. "
        "an archive's TEST file; data.source is then cut in time order into train and val (its last "
        "data.split.val; data.split.test and data.split.by are unused)."
    )
    labels: Literal["auto", "series", "points"] = Field(
        "auto", description="series: `points` = labels per time step (anomalous stretches inside a "
        "series), `series` = one label per series (a series is anomalous if any step is); `auto` "
        "picks points when labels vary inside a series or come as a single-series is_anomaly column."
    )
    train_normal_only: bool | None = Field(
        None, description="series: drop training windows that contain a labelled anomaly step "
        "(default: true with point labels)."
    )
    window: int = Field(150, gt=0)
    stride: int = Field(150, gt=0)
    split: SplitFractions = SplitFractions()
    piece_rows: int = Field(
        1 << 20, gt=0, description="Rows (whole Parquet row groups) per task of prepare's and "
        "validate's reads, and at most per group of whole series prepare windows at once: a file "
        "of more than one piece is read by Ray Data tasks (ray.spread_reads). Smaller spreads a "
        "file over more tasks; memory per task stays bounded by a block either way."
    )

    @model_validator(mode="after")
    def _series_options_need_series(self) -> DataConfig:
        """A time axis is what these options act on; set for other data they would do nothing."""
        used = [name for name, on in (("data.test_source", self.test_source is not None),
                                      ("data.labels", self.labels != "auto"),
                                      ("data.train_normal_only", self.train_normal_only is not None),
                                      ("data.split.by", self.split.by != "series")) if on]
        if self.kind != "series" and used:
            raise ValueError(f"{', '.join(used)} only apply to data.kind=series (got {self.kind!r}): "
                             "unset them")
        return self
