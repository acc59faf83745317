"""s3:// through pyarrow against a real S3 server (moto, on 127.0.0.1): data sources, Ray
Train run storage, and publishing that a connection dropped mid-upload never leaves half done."""

from __future__ import annotations

import io
import json
import pickle
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

from seqmodels import storage
from seqmodels.config import config_from_mapping
from seqmodels.data.build import build_examples
from seqmodels.data.files import read_table_file
from seqmodels.errors import ConfigError, DataError, OutputError
from seqmodels.stages import prepare
from tests.conftest import make_series_table, tiny_config
from tests.test_long_series import stream

if TYPE_CHECKING:
    from tests.s3 import S3

pytest_plugins = ["tests.s3"]  # the moto server, `s3` and `dropping_proxy` fixtures


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.to_parquet(sink, index=False)
    return sink.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- locations ----------------------------------------------------------------------------------

def test_uris_and_local_paths(tmp_path, monkeypatch):
    assert storage.is_uri("s3://bucket/key") and storage.is_uri("gs://b") and storage.is_uri("file:///x")
    assert not any(storage.is_uri(p) for p in ("data/series.csv", "/abs/x.parquet", "C:\\x.csv", "s3:/b"))
    monkeypatch.chdir(tmp_path)
    fs, path = storage.filesystem("runs/x")
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == str(tmp_path / "runs" / "x")
    assert storage.stem("s3://bucket/archive/135_TRAIN.csv") == "135_TRAIN" == storage.stem("a/135_TRAIN.csv")
    assert storage.join("s3://bucket/out/", "data-1", "part.parquet") == "s3://bucket/out/data-1/part.parquet"
    with pytest.raises(ConfigError, match="Unrecognized filesystem type"):
        storage.filesystem("nosuch://bucket/x")


def test_the_endpoint_from_the_environment_travels_with_the_pickled_filesystem(s3, monkeypatch):
    """A Ray worker unpickles the filesystem in an environment that may lack AWS_ENDPOINT_URL."""
    fs, path = storage.filesystem(s3.uri("runs/"))
    assert path == f"{s3.bucket}/runs"
    shipped = pickle.loads(pickle.dumps(fs))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with shipped.open_output_stream(f"{path}/probe.txt") as out:
        out.write(b"reached moto")
    assert s3.get("runs/probe.txt") == b"reached moto"


def test_a_cluster_is_told_where_s3_is_but_not_the_credentials(s3, monkeypatch):
    """What the driver forwards to a cluster's workers (runtime._join_cluster): the endpoint
    and region set here, never a key."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "secret-token")
    forwarded = storage.endpoint_environment()
    assert forwarded == {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": "eu-west-1",
                         "AWS_DEFAULT_REGION": "us-east-1"}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(forwarded)


def test_aws_endpoint_url_s3_wins_over_the_general_one(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    s3.put("x.csv", b"a\n1\n")
    assert storage.table_files(s3.uri("x.csv")) == [s3.uri("x.csv")]


# --- reading tables -------------------------------------------------------------------------------

def test_table_files_lists_a_prefix_or_names_one_file(s3):
    for key in ("raw/b.parquet", "raw/a.csv", "raw/_SUCCESS", "raw/.a.csv.crc", "raw/notes.txt",
                "raw/sub/c.csv", "raw/UPPER.CSV"):
        s3.put(key, b"x")
    expected = [s3.uri("raw/UPPER.CSV"), s3.uri("raw/a.csv"), s3.uri("raw/b.parquet")]
    assert storage.table_files(s3.uri("raw")) == expected
    assert storage.table_files(s3.uri("raw") + "/") == expected
    assert storage.table_files(s3.uri("raw/a.csv")) == [s3.uri("raw/a.csv")]
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        storage.table_files(s3.uri("raw/notes.txt"))


def test_open_input_feeds_pandas_and_parquet(s3):
    frame = pd.DataFrame({"series_id": ["a", "a"], "t": [0, 1], "value": [0.5, 1.5]})
    s3.put("t/frame.csv", frame.to_csv(index=False).encode())
    s3.put("t/frame.parquet", parquet_bytes(frame))
    with storage.open_input(s3.uri("t/frame.csv")) as handle:
        pd.testing.assert_frame_equal(pd.read_csv(handle), frame)
    with storage.open_input(s3.uri("t/frame.parquet")) as handle:
        assert pq.ParquetFile(handle).read().to_pandas().equals(frame)
    pd.testing.assert_frame_equal(read_table_file(s3.uri("t/frame.parquet"), ["gunpoint"]), frame)


def test_a_missing_object_bucket_or_table_says_which(s3):
    s3.put("docs/readme.txt", b"not a table")
    with pytest.raises(DataError) as missing:
        read_table_file(s3.uri("data/missing.csv"), ["gunpoint"])
    assert missing.value.what == f"{s3.uri('data/missing.csv')} does not exist"  # not s3:/...
    assert "upload it, or correct the key" in missing.value.fix and "gunpoint" in missing.value.fix
    with pytest.raises(DataError, match="bucket 'no-such-bucket' does not exist") as bucket:
        storage.table_files("s3://no-such-bucket/data.csv")
    assert s3.endpoint in bucket.value.fix
    with pytest.raises(DataError, match="no CSV/Parquet file directly inside"):
        storage.table_files(s3.uri("docs"))
    with pytest.raises(DataError, match="does not exist"), storage.open_input(s3.uri("docs/gone.csv")):
        pass
    with pytest.raises(DataError, match="is a folder of 1 table file"):
        s3.put("one/x.csv", b"a\n1\n")
        read_table_file(s3.uri("one"), ["gunpoint"])


def test_access_denied_and_an_unreachable_endpoint_are_named(s3, monkeypatch):
    import moto.settings

    s3.put("data/x.csv", b"a\n1\n")
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks the keys now
    with pytest.raises(DataError, match="access denied") as denied:
        storage.table_files(s3.uri("data/x.csv"))
    assert "AWS_ACCESS_KEY_ID" in denied.value.fix and denied.value.where == s3.uri("data/x.csv")
    monkeypatch.undo()

    nowhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", nowhere)
    with pytest.raises(DataError, match="the object store cannot be reached") as unreachable:
        read_table_file(s3.uri("data/x.csv"), ["gunpoint"])
    assert nowhere in unreachable.value.fix and "AWS_ENDPOINT_URL" in unreachable.value.fix


def test_prepare_reads_data_source_from_s3_like_the_local_file(s3, tmp_path):
    table = make_series_table()
    s3.put("data/series.csv", table.to_csv(index=False).encode())
    local = tiny_config(tmp_path / "local")
    (tmp_path / "local").mkdir()
    table.to_csv(local.data.source, index=False)
    remote = tiny_config(tmp_path / "remote", data={"source": s3.uri("data/series.csv")})
    prepare.run(local)
    prepare.run(remote)
    examples = [pq.read_table(Path(cfg.paths.prepared) / "examples.parquet") for cfg in (local, remote)]
    assert examples[0].num_rows > 0 and examples[0].equals(examples[1])


def test_a_single_series_train_and_test_file_on_s3(s3):
    s3.put("archive/135_TRAIN.csv", stream(anomaly=(30, 34)).to_csv(index=False).encode())
    s3.put("archive/135_TEST.csv", stream(steps=40, anomaly=(20, 24)).to_csv(index=False).encode())
    cfg = config_from_mapping({"data": {"source": s3.uri("archive/135_TRAIN.csv"),
                                        "test_source": s3.uri("archive/135_TEST.csv"),
                                        "window": 8, "stride": 3}}, "test")
    prepared = build_examples(cfg)
    examples = prepared.examples
    assert set(examples["series_id"]) == {"135_TRAIN", "135_TEST"}  # named after the files
    assert (examples.loc[examples["series_id"] == "135_TEST", "split"] == "test").all()
    assert examples.loc[examples["split"] == "test", "label"].max() == 1


# --- publishing -----------------------------------------------------------------------------------

def output_folder(path: Path, rows: int, seed: int, manifest_padding: int = 0) -> Path:
    """A finished output folder: two parts (a small one first, in upload order), a file in a
    subfolder, and its manifest."""
    rng = np.random.default_rng(seed)
    (path / "plots").mkdir(parents=True)
    pq.write_table(pa.table({"score": rng.random(3)}), path / "part-00000.parquet")
    pq.write_table(pa.table({"score": rng.random(rows)}), path / "part-00001.parquet",
                   compression="none")
    (path / "plots" / "scores.txt").write_text(f"seed {seed}")
    (path / "_manifest.json").write_text(json.dumps({"rows": rows + 3, "seed": seed,
                                                     "params": "p" * manifest_padding}))
    return path


def published_parts(uri: str) -> list[pa.Table]:
    parts = []
    for part in storage.remote_parts(uri):
        with storage.open_input(part) as handle:
            parts.append(pq.read_table(handle))
    return parts


def data_folders(s3: S3, prefix: str) -> set[str]:
    return {key.split("/")[1] for key in s3.keys(f"{prefix}/") if key.split("/")[1].startswith("data-")}


def test_publish_then_republish_keeps_exactly_one_generation(s3, tmp_path):
    uri = s3.uri("scores")
    storage.publish_remote(output_folder(tmp_path / "v1", rows=10, seed=1), uri)
    first = storage.read_remote_manifest(uri)
    assert first["rows"] == 13 and first["seed"] == 1
    assert sorted(first["files"]) == [f"data-{first['generation']}/{name}" for name in
                                      ("part-00000.parquet", "part-00001.parquet", "plots/scores.txt")]
    assert [part.num_rows for part in published_parts(uri)] == [3, 10]
    assert s3.get(f"scores/data-{first['generation']}/plots/scores.txt") == b"seed 1"

    storage.publish_remote(output_folder(tmp_path / "v2", rows=20, seed=2), uri)
    second = storage.read_remote_manifest(uri)
    assert second["seed"] == 2 and second["generation"] > first["generation"]
    assert [part.num_rows for part in published_parts(uri)] == [3, 20]
    assert data_folders(s3, "scores") == {f"data-{second['generation']}"}  # the old one is gone


def test_publish_remote_to_a_local_folder_works_the_same_way(tmp_path):
    target = str(tmp_path / "published")
    storage.publish_remote(output_folder(tmp_path / "v1", rows=4, seed=1), target)
    storage.publish_remote(output_folder(tmp_path / "v2", rows=6, seed=2), target)
    manifest = storage.read_remote_manifest(target)
    assert manifest["seed"] == 2 and [part.num_rows for part in published_parts(target)] == [3, 6]
    names = sorted(p.name for p in Path(target).iterdir())
    assert names == ["_manifest.json", f"data-{manifest['generation']}"]  # no temporary manifest left


def test_nothing_published_is_a_clear_error(s3):
    with pytest.raises(DataError, match=r"nothing is published at s3://seqmodels-test/none \(no _manifest"):
        storage.remote_parts(s3.uri("none"))


@pytest.mark.parametrize(("drop_after", "padding", "dies_in"), [
    (200, 0, "CreateMultipartUpload operation, key scores/data-"),  # the first file's first request
    (20_000, 0, "UploadPart operation, key scores/data-"),  # the big part, after the small file landed
    (20_000, 60_000, "UploadPart operation, key scores/_manifest.json"),  # the data lands, the manifest dies
], ids=["first-request", "mid-upload", "manifest"])
def test_a_connection_dropped_mid_publish_keeps_the_previous_version(s3, dropping_proxy, tmp_path,
                                                                      drop_after, padding, dies_in):
    uri = s3.uri("scores")
    storage.publish_remote(output_folder(tmp_path / "v1", rows=10, seed=1), uri)  # through the proxy
    before = storage.read_remote_manifest(uri)
    before_keys = s3.keys("scores/")
    before_parts = published_parts(uri)
    rows = 50 if padding else 20_000  # the 160 KB part is cut, the small ones pass

    dropping_proxy.arm(drop_after)
    with pytest.raises(OutputError) as failed:
        storage.publish_remote(output_folder(tmp_path / "v2", rows=rows, seed=2, manifest_padding=padding),
                               uri)
    dropping_proxy.disarm()

    error = failed.value
    assert error.what.startswith(f"could not publish {tmp_path / 'v2'}: cannot publish to {uri}: "
                                 "the object store cannot be reached")
    assert dies_in in error.what and error.where == uri
    assert "the previously published version is unchanged" in error.fix
    assert dropping_proxy.dropped > 1  # pyarrow retried, and the retries were cut too
    assert storage.read_remote_manifest(uri) == before
    assert [t.equals(b) for t, b in zip(published_parts(uri), before_parts, strict=True)] == [True, True]
    assert data_folders(s3, "scores") == {f"data-{before['generation']}"}  # nothing of v2 remains
    assert set(s3.keys("scores/")) - set(before_keys) <= {"scores/"}  # at most pyarrow's folder marker

    storage.publish_remote(tmp_path / "v2", uri)  # the network is back: the rerun publishes
    assert storage.read_remote_manifest(uri)["seed"] == 2


def test_publishing_to_a_missing_bucket_is_an_output_error(s3, tmp_path):
    with pytest.raises(OutputError, match="its bucket does not exist") as failed:
        storage.publish_remote(output_folder(tmp_path / "v1", rows=5, seed=1), "s3://no-such-bucket/out")
    assert "previously published version is unchanged" in failed.value.fix


# --- Ray Train run storage ------------------------------------------------------------------------

def test_train_storage_in_a_missing_bucket_fails_before_ray_starts(s3):
    from seqmodels.distributed.train import check_storage

    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist") as failed:
        check_storage("s3://no-such-bucket/runs")
    assert failed.value.where == "params.yaml: train.storage"
    assert check_storage(s3.uri("runs")) == s3.uri("runs")


@pytest.mark.slow
def test_ray_train_writes_its_checkpoints_to_s3_and_resumes_from_them(s3, tmp_path, series_csv, caplog):
    from seqmodels.distributed.runtime import shutdown_ray
    from seqmodels.distributed.train import run_checkpoints
    from seqmodels.stages import train

    cfg = tiny_config(tmp_path, train={"epochs": 2, "storage": s3.uri("runs")})
    prepare.run(cfg)
    shutdown_ray()  # Ray's processes inherit the environment when it starts: this test's endpoint
    try:
        train.run(cfg)
        metrics = json.loads(Path(cfg.paths.train_metrics).read_text())
        run = json.loads((Path(cfg.paths.model) / "model.json").read_text())["run"]
        checkpoints = run_checkpoints(cfg.train.storage, run.rsplit("/", 1)[1])
        train.run(cfg)  # the same run again: the workers restore its last checkpoint from s3
        rerun = json.loads(Path(cfg.paths.train_metrics).read_text())
    finally:
        shutdown_ray()
    assert metrics["epochs_run"] == 2
    assert run.startswith(s3.uri("runs") + "/")
    name = run.rsplit("/", 1)[1]
    saved = {key.split("/")[2] for key in s3.keys(f"runs/{name}/")  # runs/<name>/checkpoint_<time>/state.pt
             if key.split("/")[2].startswith("checkpoint_") and len(key.split("/")) > 3}
    assert len(saved) == 2 and {Path(c.path).name for c in checkpoints} == saved
    assert f"runs/{name}/{max(saved)}/state.pt" in s3.keys(f"runs/{name}/")
    assert f"run {name} exists in {s3.uri('runs')}: continuing it" in caplog.text
    assert rerun["epochs_run"] == 2 and rerun["best_val_loss"] == metrics["best_val_loss"]
