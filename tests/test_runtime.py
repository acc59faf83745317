"""Ray Data's settings per purpose: applied inside the context manager, restored after it.

No Ray is started: the settings live in the driver's DataContext.
"""

import math
import os
import warnings
from types import SimpleNamespace

import pytest

from seqmodels.config import RayConfig
from seqmodels.distributed import runtime


@pytest.fixture
def context():
    from ray.data import DataContext

    runtime.quiet_ray_deprecations()  # a first get_current() builds the context, which warns
    return DataContext.get_current()


def _state(context) -> tuple:
    options = context.execution_options
    return (options.preserve_order, options.resource_limits, context.enable_progress_bars,
            context.use_datasource_v2, context.target_max_block_size, options)


def test_training_ingest_reads_with_v1_under_both_caps_and_restores_the_context(context, monkeypatch):
    monkeypatch.delenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", raising=False)
    cfg = RayConfig(data_cpu_limit=1.0, data_memory_limit_mb=1024)
    before = _state(context)
    with runtime.training_ingest(cfg):
        limits = context.execution_options.resource_limits
        assert context.execution_options.preserve_order is True
        assert context.use_datasource_v2 is False
        assert (limits.cpu, limits.object_store_memory) == (1.0, 1024 * 2**20)
        assert math.isinf(limits.gpu)  # for_limits: an unnamed resource is unlimited, not 0
        assert context.target_max_block_size == before[4]  # training keeps Ray's block size
        assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ  # V2 reader settings only
    assert _state(context) == before


def test_training_ingest_reads_a_large_file_with_v2_and_a_small_one_with_v1(context, monkeypatch):
    """V1 reads a file in one task whose memory follows the file: above TRAIN_V1_MAX_BYTES
    training takes V2's bounded read tasks, with inference's reader settings."""
    monkeypatch.delenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", raising=False)
    monkeypatch.delenv("RAY_DATA_PARQUET_BIN_PACKING_BYTES", raising=False)
    before = _state(context)
    with runtime.training_ingest(RayConfig(), input_bytes=runtime.TRAIN_V1_MAX_BYTES):
        assert context.use_datasource_v2 is False
        assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ
    with runtime.training_ingest(RayConfig(), input_bytes=runtime.TRAIN_V1_MAX_BYTES + 1):
        assert context.use_datasource_v2 is True
        assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "1"
        assert os.environ["RAY_DATA_PARQUET_BIN_PACKING_BYTES"] == str(64 << 20)
        assert context.target_max_block_size == before[4]  # training keeps Ray's block size
    assert _state(context) == before
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ


def test_batch_inference_reads_with_v2_uncapped_cpu_small_blocks_and_restores_it(context, monkeypatch):
    monkeypatch.delenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", raising=False)
    monkeypatch.setenv("RAY_DATA_PARQUET_BIN_PACKING_BYTES", "12345")  # a user's own value
    cfg = RayConfig(data_cpu_limit=1.0, data_memory_limit_mb=512)
    before = _state(context)
    with runtime.batch_inference(cfg):
        limits = context.execution_options.resource_limits
        assert context.execution_options.preserve_order is True
        assert context.use_datasource_v2 is True
        assert context.target_max_block_size == runtime.INFER_BLOCK_BYTES == 8 << 20
        assert math.isinf(limits.cpu) and limits.object_store_memory == 512 * 2**20
        assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "1"
        assert os.environ["RAY_DATA_PARQUET_BIN_PACKING_BYTES"] == "12345"  # the user's wins
    assert _state(context) == before
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ
    assert os.environ["RAY_DATA_PARQUET_BIN_PACKING_BYTES"] == "12345"


def test_the_context_is_restored_when_the_pipeline_fails(context):
    before = _state(context)
    with pytest.raises(RuntimeError, match="pipeline failed"), runtime.batch_inference(RayConfig()):
        raise RuntimeError("pipeline failed")
    assert _state(context) == before


def test_progress_is_off_while_datasets_are_planned_off_a_terminal(context, monkeypatch):
    """Planning (Parquet sampling) draws bars of its own whenever progress is on."""
    monkeypatch.setattr(runtime, "progress_bars_shown", lambda: False)
    with runtime.batch_inference(RayConfig()):
        assert context.enable_progress_bars is False
    monkeypatch.setattr(runtime, "progress_bars_shown", lambda: True)
    with runtime.training_ingest(RayConfig()):
        assert context.enable_progress_bars is True


def test_a_dataset_run_off_a_terminal_logs_its_progress_rather_than_disabling_it(monkeypatch):
    """Disabled progress is what prints "Progress bars disabled", in every process that runs
    the Dataset; logged progress is INFO, below ray.log_level, and no worker draws bars."""
    from ray.data import DataContext

    runtime.quiet_ray_deprecations()
    dataset = SimpleNamespace(context=DataContext())
    dataset.context.enable_progress_bars = False
    monkeypatch.setattr(runtime, "progress_bars_shown", lambda: False)
    assert runtime.logged_progress(dataset) is dataset
    assert dataset.context.enable_progress_bars is True and dataset.context.use_ray_tqdm is False
    on_a_terminal = SimpleNamespace(context=DataContext())
    monkeypatch.setattr(runtime, "progress_bars_shown", lambda: True)
    runtime.logged_progress(on_a_terminal)
    assert on_a_terminal.context.use_ray_tqdm is DataContext().use_ray_tqdm  # Ray's own bars, as they were


def test_predictor_actors_are_restarted_only_on_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runtime.actor_pool_args(RayConfig()) == {"max_restarts": 0}
    assert runtime.actor_pool_args(RayConfig(address="ray://head:10001")) == {}


def test_ray_train_gets_the_ingest_options_explicitly_and_nothing_warns(context):
    with warnings.catch_warnings(record=True) as caught, runtime.training_ingest(RayConfig()):
        warnings.simplefilter("always")
        data_config = runtime.train_data_config()
        options = data_config._resolve_execution_options("train")  # what Ray Train applies to a shard
        assert options.resource_limits == context.execution_options.resource_limits
        assert options.preserve_order is True
        assert options is not context.execution_options  # a copy: restoring the context leaves it be
    assert [str(w.message) for w in caught] == []


def test_only_rays_deprecation_warnings_about_itself_are_hidden():
    from ray.data import DataContext, ExecutionOptions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runtime.quiet_ray_deprecations()
        DataContext()  # Ray's dataclass __init__ assigns use_push_based_shuffle, use_polars, ...
        ExecutionOptions(exclude_resources=ExecutionOptions().exclude_resources)  # from Ray's own __init__
        assert caught == []
        warnings.warn("`use_polars` is deprecated", DeprecationWarning, stacklevel=1)  # raised here: shown
        ExecutionOptions().exclude_resources = ExecutionOptions().exclude_resources  # set here: shown
    assert len(caught) == 2
