"""Ray Data's settings per purpose: applied inside the context manager, restored after it.

No Ray is started: the settings live in the driver's DataContext.
"""

import math
import os

import pytest

from seqmodels.config import RayConfig
from seqmodels.distributed import runtime


@pytest.fixture
def context():
    from ray.data import DataContext

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
