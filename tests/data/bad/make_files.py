"""Writes the bad input files next to this script (run once; the files are committed).

Each file is a small, otherwise valid canonical table (or image / prepared-token table)
with exactly one thing wrong, so a test can assert the message names that one thing.
Rerun with `python tests/data/bad/make_files.py` after changing a case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def series(n_series: int = 8, length: int = 12, anomalous: int = 2) -> pd.DataFrame:
    """A good canonical table: `n_series` sines of `length` steps, the last `anomalous` labelled 1."""
    t = np.arange(length)
    frames = []
    for i in range(n_series):
        frames.append(pd.DataFrame({"series_id": f"s{i}", "t": t,
                                    "value": np.round(np.sin(t / 2 + i), 3),
                                    "label": int(i >= n_series - anomalous)}))
    return pd.concat(frames, ignore_index=True)


def small() -> pd.DataFrame:
    """Two series of three steps, one normal and one anomalous: enough to reach validation."""
    return series(n_series=2, length=3, anomalous=1)


def csv(name: str, frame: pd.DataFrame) -> None:
    frame.to_csv(HERE / name, index=False)


def main() -> None:
    csv("missing_column.csv", small().drop(columns=["t"]))

    wrong = small().astype({"t": object, "value": object})
    wrong.loc[1, "t"], wrong.loc[4, "value"] = "one", "high"
    csv("wrong_dtype.csv", wrong)

    nan = small()
    nan.loc[2, "value"] = np.nan
    csv("nan.csv", nan)

    inf = small()
    inf.loc[4, "value"] = np.inf
    csv("inf.csv", inf)

    huge = small()
    huge.loc[5, "value"] = 1e300
    csv("huge.csv", huge)

    duplicate = small()
    duplicate.loc[1, "t"] = 0
    csv("duplicate_t.csv", duplicate)

    decreasing = small()
    decreasing.loc[3:5, "t"] = [2, 1, 0]
    csv("decreasing_t.csv", decreasing)

    (HERE / "empty.csv").write_bytes(b"")
    (HERE / "header_only.csv").write_text("series_id,t,value,label\n")

    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(small(), preserve_index=False), buffer)
    data = buffer.getvalue().to_pybytes()
    (HERE / "truncated.parquet").write_bytes(data[: len(data) // 2])

    (HERE / "latin1.csv").write_bytes(
        "series_id,t,value,label\ncaf\u00e9,0,0.5,0\ncaf\u00e9,1,0.6,0\n".encode("latin-1"))

    short = series(n_series=8, length=12)
    csv("short_series.csv", pd.concat([short, series(n_series=1, length=3).assign(series_id="stub")]))

    csv("single_class.csv", series(n_series=8, length=12, anomalous=0))
    csv("few_series.csv", series(n_series=3, length=12, anomalous=1))

    images = pd.DataFrame({"image_id": [0, 1, 2], "label": [0, 1, 0]})
    images["x"] = [np.linspace(0, 1, 9).tolist(), np.linspace(0, 1, 10).tolist(),
                   np.linspace(0, 1, 9).tolist()]
    images.to_parquet(HERE / "images_wrong_size.parquet", index=False)

    tokens = HERE / "tokens_out_of_vocab"
    tokens.mkdir(exist_ok=True)
    ids = np.array([[4, 5, 2, 0], [5, 4, 2, 0], [4, 99, 2, 0], [6, 2, 0, 0]], dtype=np.int32)
    table = pa.table({"seq_id": np.arange(4, dtype=np.int64), "split": ["train", "train", "val", "test"],
                      "x": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), 4)})
    pq.write_table(table, tokens / "examples.parquet")
    (tokens / "spec.json").write_text(json.dumps({"kind": "tokens", "input_shape": [4], "features": [],
                                                  "has_labels": False, "n_classes": 0,
                                                  "vocab_size": 7}, indent=2) + "\n")


if __name__ == "__main__":
    main()
