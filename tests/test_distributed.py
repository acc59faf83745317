"""Integration: the real stages on a real local Ray (2 CPU train workers), tiny data."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from seqmodels.checkpoints import load_exported_model
from seqmodels.data import schemas
from seqmodels.data.registry import modality
from seqmodels.distributed.live import read_history
from seqmodels.distributed.runtime import shutdown_ray
from seqmodels.publish import MANIFEST
from seqmodels.stages import detector, evaluate, infer, prepare, train, validate
from tests.conftest import exported_vs_untrained_loss, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray_teardown():
    yield
    shutdown_ray()


def test_train_infer_evaluate_on_two_ray_workers(tiny):
    prepare.run(tiny)
    validate.run(tiny)
    train.run(tiny.model_copy(update={"train": tiny.train.model_copy(update={"epochs": 4})}))

    history = read_history(tiny.paths.train_live)
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert {"val_loss", "train_recon", "train_task", "lr", "samples_per_s"} <= set(history.columns)
    metrics = json.loads(Path(tiny.paths.train_metrics).read_text())
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 4 and metrics["resumed_at_epochs"] == []

    assert exported_vs_untrained_loss(tiny) < 0.9
    _, cfg, spec = load_exported_model(tiny.paths.model)
    windows = pq.read_table(f"{tiny.paths.prepared}/examples.parquet").to_pandas()

    infer.run(tiny)
    out_dir = tiny.paths.outputs
    parts = sorted(p.name for p in Path(out_dir).glob("*.parquet"))
    assert parts == ["part-00000.parquet"]
    output = pq.read_table(out_dir).to_pandas()
    assert len(output) == len(windows)
    assert sorted(output["window_id"]) == sorted(windows["window_id"])
    schema = modality("series").output_schema(spec, cfg.latent_dim, reconstructions=True)
    schemas.validate_table(output, schema, table="output", source=out_dir)
    assert all(len(v) == cfg.latent_dim for v in output["latent"])
    manifest = json.loads((Path(out_dir) / MANIFEST).read_text())
    assert manifest["rows"] == len(windows)
    assert manifest["rows_per_split"]["test"] == int((windows["split"] == "test").sum())

    # Rows come out in input order, and a rerun writes byte-identical files.
    assert output["window_id"].tolist() == windows["window_id"].tolist()
    first = {part.name: part.read_bytes() for part in Path(out_dir).glob("*.parquet")}
    infer.run(tiny)
    assert first == {part.name: part.read_bytes() for part in Path(out_dir).glob("*.parquet")}

    detector.run(tiny)

    evaluate.run(tiny)
    evaluation = json.loads(Path(tiny.paths.eval_metrics).read_text())
    assert set(evaluation["model"]["mse"]) == {"train", "val", "test", "test_normal", "test_anomalous"}
    assert 0.0 <= evaluation["model"]["test_auroc"] <= 1.0
    assert evaluation["pca"]["test_auroc"] is not None
    for name in ("loss.png", "scores.png"):
        assert (Path(tiny.paths.plots) / name).stat().st_size > 1000


def test_training_reads_a_file_above_the_v1_size_with_the_v2_reader(tiny, monkeypatch):
    """Any file counts as large with TRAIN_V1_MAX_BYTES at 0: the V2 reader's read tasks feed
    both workers every epoch and the model learns as it does from V1's."""
    from seqmodels.distributed import runtime

    readers = []
    data_settings = runtime.data_settings

    def recorded(settings):
        readers.append(settings.datasource_v2)
        return data_settings(settings)

    monkeypatch.setattr(runtime, "TRAIN_V1_MAX_BYTES", 0)
    monkeypatch.setattr(runtime, "data_settings", recorded)
    prepare.run(tiny)
    train.run(tiny.model_copy(update={"train": tiny.train.model_copy(update={"epochs": 3})}))
    assert readers == [True]
    history = read_history(tiny.paths.train_live)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert exported_vs_untrained_loss(tiny) < 0.9


def test_images_conv_with_classifier_head_end_to_end(tmp_path):
    cfg = tiny_config(tmp_path, data={"kind": "images", "source": "digits", "split": {"val": 0.1,
                                                                                    "test": 0.2}},
                      model={"kind": "conv", "hidden_size": 8, "num_layers": 2, "latent_dim": 8,
                             "task_weight": 0.05},
                      train={"epochs": 3, "batch_size": 64}, infer={"batch_size": 256})
    prepare.run(cfg)
    validate.run(cfg)
    train.run(cfg)
    infer.run(cfg)
    detector.run(cfg)
    evaluate.run(cfg)
    output = pq.read_table(cfg.paths.outputs).to_pandas()
    assert len(output) == 1797
    assert {"image_id", "predicted_class", "latent", "reconstruction"} <= set(output.columns)
    assert all(len(r) == 64 for r in output["reconstruction"].head())
    evaluation = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert evaluation["model"]["test_auroc"] is None  # class labels are not anomaly labels
    assert evaluation["model"]["accuracy"]["test"] > 0.3  # 3 epochs: far above chance (0.1)
    assert evaluation["model"]["mse"]["test"] > 0


def test_a_diverging_run_surfaces_the_workers_error_not_a_ray_trace(tiny):
    from seqmodels.errors import TrainingDivergedError

    prepare.run(tiny)
    exploding = tiny.model_copy(update={"train": tiny.train.model_copy(
        update={"lr": 1e30, "grad_clip": None, "epochs": 3, "storage": tiny.train.storage + "-nan"})})
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf) at epoch \d+, step \d+"):
        train.run(exploding)
    assert not Path(tiny.paths.model).exists()  # nothing published for a failed run


def test_tabular_dense_on_shuttle_through_ray(tmp_path):
    cfg = tiny_config(tmp_path, data={"kind": "tabular", "source": "shuttle"},
                      model={"kind": "dense", "hidden_size": 16, "latent_dim": 4},
                      train={"epochs": 2, "batch_size": 512}, infer={"batch_size": 4096})
    for stage in (prepare.run, validate.run, train.run, infer.run, detector.run, evaluate.run):
        stage(cfg)
    output = pq.read_table(cfg.paths.outputs, columns=["row_id", "score"]).to_pandas()
    assert len(output) == 49_097 and output["row_id"].is_unique
    evaluation = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert evaluation["model"]["test_auroc"] > 0.9  # 2 epochs already separate Shuttle's anomalies


def test_tokens_seq2seq_through_ray(tmp_path):
    cfg = tiny_config(tmp_path, data={"kind": "tokens", "source": "english-words", "max_length": 8,
                                      "max_examples": 600},
                      model={"kind": "seq2seq", "hidden_size": 32, "latent_dim": 8},
                      train={"epochs": 2, "batch_size": 64}, infer={"batch_size": 128})
    for stage in (prepare.run, validate.run, train.run, infer.run, detector.run, evaluate.run):
        stage(cfg)
    output = pq.read_table(cfg.paths.outputs).to_pandas()
    assert len(output) == 600 and output["seq_id"].is_unique
    assert all(len(r) == 9 for r in output["reconstruction"])  # greedy ids, EOS + PAD included
    assert all(np.issubdtype(np.asarray(r).dtype, np.integer) for r in output["reconstruction"].head())
    evaluation = json.loads(Path(cfg.paths.eval_metrics).read_text())
    assert evaluation["model"]["cross_entropy"]["test"] < evaluation["unigram"]["cross_entropy"]["test"]
    assert 0.0 <= evaluation["model"]["exact_match"]["test"] <= 1.0


def test_inference_spread_over_files_and_actors_keeps_input_order_and_reruns_identically(tmp_path,
                                                                                          monkeypatch):
    """Small file and block targets force many blocks, two predictor actors and several
    write tasks: the files, read in name order, must still hold the rows in input order."""
    import pandas as pd
    import torch

    from seqmodels.checkpoints import export_model
    from seqmodels.data.tables import examples_to_arrow
    from seqmodels.distributed import infer as distributed_infer
    from seqmodels.distributed import runtime
    from seqmodels.models import build_model
    from seqmodels.spec import DataSpec

    monkeypatch.setattr(runtime, "INFER_BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(distributed_infer, "INFER_FILE_BYTES", 256 << 10)
    cfg = tiny_config(tmp_path, infer={"batch_size": 500, "concurrency": 2})
    spec = DataSpec(kind="series", input_shape=(20, 1), features=("value",))
    torch.manual_seed(0)
    export_model(tmp_path / "model", build_model(cfg.model, spec).state_dict(), cfg.model, spec)
    rows = 10_000
    rng = np.random.default_rng(0)
    windows = pd.DataFrame({"window_id": np.arange(rows), "series_id": [f"s{i // 50}" for i in range(rows)],
                            "split": "test", "start": (np.arange(rows) % 50) * 20,
                            "x": list(rng.normal(size=(rows, 20)).astype(np.float32))})
    pq.write_table(examples_to_arrow(windows, 20), tmp_path / "examples.parquet")

    runs = []
    for name in ("first", "second"):
        distributed_infer.predict_to_parquet(cfg, tmp_path / "model", tmp_path / "examples.parquet",
                                             tmp_path / name)
        runs.append({part.name: part.read_bytes() for part in sorted((tmp_path / name).glob("*.parquet"))})
    assert len(runs[0]) > 2, "the small file target should have split the output"
    # ... into files of about the target size, not one per (64 KiB) block
    output_bytes = pq.read_table(tmp_path / "first").nbytes
    assert len(runs[0]) <= -(-output_bytes // (256 << 10)), (len(runs[0]), output_bytes)
    ids = np.concatenate([pq.read_table(tmp_path / "first" / part, columns=["window_id"])
                          ["window_id"].to_numpy() for part in runs[0]])
    assert ids.tolist() == list(range(rows))
    assert runs[0] == runs[1]


def test_local_ray_workers_get_the_malloc_settings_from_the_raylet(tiny):
    """Locally the settings reach tasks and actors through the raylet's environment, not a
    job runtime_env (which would keep Ray from using its pre-started workers)."""
    import os

    import ray

    from seqmodels.distributed.runtime import WORKER_MALLOC, init_ray

    init_ray(tiny.ray)

    @ray.remote(num_cpus=0)
    def task_environment() -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in WORKER_MALLOC}

    @ray.remote(num_cpus=0)
    class Probe:
        def environment(self) -> dict[str, str | None]:
            return {name: os.environ.get(name) for name in WORKER_MALLOC}

    probe = Probe.remote()
    assert ray.get(task_environment.remote()) == WORKER_MALLOC
    assert ray.get(probe.environment.remote()) == WORKER_MALLOC
    ray.kill(probe)


def test_ray_started_for_scoring_has_no_dashboard_and_training_restarts_it_with_one(tiny):
    """ray_starting (scoring) and infer's preflight start a local Ray without the dashboard
    (2 s of a 1M-window score on 2 cores); Ray Train's placement-group cleaner polls the
    dashboard's state API, so a train preflight in the same process restarts Ray with it."""
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    from seqmodels.distributed.runtime import init_ray, ray_starting

    shutdown_ray()
    with ray_starting(tiny.ray):
        init_ray(tiny.ray, dashboard=False)
    with pytest.raises(RayStateApiException):
        list_nodes(timeout=5)
    init_ray(tiny.ray, dashboard=True)
    assert len(list_nodes(timeout=10)) == 1
    shutdown_ray()


def test_a_ray_worker_gives_back_arrow_memory_once_freed(tiny):
    """A read task's Arrow buffers must not stay with its worker after it goes idle: with
    mimalloc's default purge delay the 300 MB below stayed resident until the next call."""
    import psutil
    import ray

    from seqmodels.distributed.runtime import init_ray

    init_ray(tiny.ray)

    @ray.remote(num_cpus=0)
    def allocate_then_free() -> tuple[int, int]:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        process = psutil.Process()
        base = pa.array(np.ones(200_000))
        before = process.memory_info().rss
        arrays = [pc.multiply(base, i) for i in range(200)]  # 200 x 1.6 MB from Arrow's pool
        held = process.memory_info().rss - before
        del arrays
        return held, process.memory_info().rss - before

    held, kept = ray.get(allocate_then_free.remote())
    assert held > 250 << 20
    assert kept < 50 << 20


STALLED_RAYLET = """
import sys, time
import psutil, ray
from seqmodels.config import RayConfig
from seqmodels.distributed.runtime import init_ray
init_ray(RayConfig(num_cpus=1), dashboard=False)
raylet = psutil.Process(ray._private.worker._global_node.all_processes["raylet"][0].process.pid)
raylet.suspend()
time.sleep(float(sys.argv[1]))
raylet.resume()
print(ray.get(ray.remote(lambda: "answered").remote(), timeout=60))
"""


@pytest.mark.slow
def test_a_local_ray_outlives_a_stalled_raylet(tmp_path):
    """A machine too busy for the raylet to answer Ray's health checks: Ray's default gives up
    after 5 missed checks, the raylet exits and takes the driver with it (how a pytest run
    once ended mid-suite, status 1 and no output). A local Ray tolerates 30. Checks are
    shortened to 0.5 s so that 5 misses take seconds and 30 take longer than the stall."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
           "RAY_health_check_initial_delay_ms": "0"}
    env.pop("RAY_ADDRESS", None)

    def stall(seconds: float, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", STALLED_RAYLET, str(seconds)], env={**env, **extra},
                              capture_output=True, text=True, timeout=240, cwd=tmp_path)

    survived = stall(10)
    assert survived.returncode == 0 and "answered" in survived.stdout, survived.stderr[-3000:]
    ray_default = stall(10, RAY_health_check_failure_threshold="5")
    assert ray_default.returncode != 0 and "marked as dead" in ray_default.stdout + ray_default.stderr


def _md5s(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_and_validate_as_ray_data_tasks_write_what_one_process_writes(tmp_path, capsys):
    """ray.spread_reads=always on a canonical Parquet file of many pieces (data.piece_rows):
    the survey, the scaler and the windows run as Ray Data tasks, and every prepared file
    is byte-identical to the one-process run's; validate's tasks report a bad value as the
    one-process validate does; a task's own DataError reaches the user as itself."""
    import pyarrow as pa

    from seqmodels.errors import DataError, DataValidationError
    from tests.conftest import make_series_table

    source = tmp_path / "streams.parquet"
    frame = make_series_table(n_series=30, length=200)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=250)
    folders = {}
    for spread in ("never", "always"):
        cfg = tiny_config(tmp_path / spread, data={"source": str(source), "piece_rows": 500,
                                                   "labels": "points", "split": {"by": "time"}},
                          ray={"num_cpus": 2, "spread_reads": spread})
        prepare.run(cfg)
        validate.run(cfg)
        folders[spread] = Path(cfg.paths.prepared)
        out = capsys.readouterr().out
        assert ("Ray Data tasks" in out) == (spread == "always"), out
    assert _md5s(folders["always"]) == _md5s(folders["never"])
    assert len(pq.ParquetFile(folders["never"] / "series.parquet").metadata.to_dict()["row_groups"]) > 2

    reports = {}
    for spread in ("never", "always"):
        cfg = tiny_config(tmp_path / spread, ray={"num_cpus": 2, "spread_reads": spread},
                          data={"source": str(source), "piece_rows": 500})
        series = folders[spread] / "series.parquet"
        table = pq.read_table(series).to_pandas()
        table.loc[1_234, "f0"] = np.inf
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), series, row_group_size=250)
        with pytest.raises(DataValidationError):
            validate.run(cfg)
        reports[spread] = json.loads(Path(cfg.paths.validation_report).read_text())
    for report in reports.values():  # the source differs: each run's own folder
        for table in report["tables"]:
            table.pop("source")
    assert reports["always"] == reports["never"] and not reports["never"]["valid"]
    assert "1234" in json.dumps(reports["never"])

    too_long = tiny_config(tmp_path / "long", data={"source": str(source), "piece_rows": 500, "window": 500},
                           ray={"num_cpus": 2, "spread_reads": "always"})
    with pytest.raises(DataError, match=r"shorter than data\.window=500"):
        prepare.run(too_long)
