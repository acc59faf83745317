"""Stage `infer`: the exported model over every prepared window with Ray Data
(seqmodels.distributed.infer), checked and published to paths.outputs with a manifest."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from seqmodels.checkpoints import load_exported_model
from seqmodels.config import Config
from seqmodels.data import schemas
from seqmodels.data.blocks import block_rows
from seqmodels.data.registry import modality
from seqmodels.data.tables import streaming_parquet
from seqmodels.distributed.infer import predict_to_parquet
from seqmodels.distributed.runtime import release_ray
from seqmodels.errors import DataError
from seqmodels.models.base import FusedAutoencoder
from seqmodels.publish import (
    MANIFEST,
    build_manifest,
    clean_stale_staging,
    hash_path,
    publishing,
    write_json_atomic,
)
from seqmodels.spec import EXAMPLES_FILE, DataSpec


def run(cfg: Config) -> None:
    prepared, model_dir, target = Path(cfg.paths.prepared), Path(cfg.paths.model), Path(cfg.paths.outputs)
    model, _, spec = load_exported_model(model_dir)  # fail fast, before Ray starts
    windows = prepared / EXAMPLES_FILE
    check_windows_fit(windows, spec, model_dir)
    clean_stale_staging(target)
    with publishing(target) as staging:
        predict_to_parquet(cfg, model_dir, windows, staging)
        # The checks are this process's own work. A Ray started for this stage stops now: its
        # idle workers still map the object store's pages (at 10M rows the write worker held
        # 410 MiB of them), which made the checks' peak that much higher.
        release_ray()
        rows = check_and_describe_outputs(cfg, staging, model, spec, windows)
    print(f"wrote {rows} rows (latent_dim={model.cfg.latent_dim}) to {target}")


def check_windows_fit(windows: Path, spec: DataSpec, model_dir: Path) -> None:
    """Windows of another width than the model takes fail here, from the file's schema, before
    Ray starts: inside a predictor actor they failed as a reshape error of the model's, with
    Ray's traceback around it. Happens when the data was prepared with another window or
    other features than the model was trained on, and only one of the stages was rerun."""
    try:
        column = pq.read_schema(windows).field("x").type
    except KeyError:
        raise DataError("the prepared windows have no `x` column", where=str(windows),
                        fix="rerun the prepare stage") from None
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"the prepared windows cannot be read: {error}", where=str(windows),
                        fix="rerun the prepare stage") from None
    width = column.list_size if pa.types.is_fixed_size_list(column) else None
    if width != spec.input_dim:
        shape = " x ".join(map(str, spec.input_shape))
        held = f"hold {width} values each" if width is not None else f"are {column}, not fixed-size lists"
        raise DataError(f"the prepared windows {held}; the model takes {spec.input_dim} ({shape})",
                        where=str(windows),
                        fix=f"prepare and train with the same data settings (`dvc repro` reruns both), "
                            f"or set paths.model to a model trained on these windows, not {model_dir}")


def inference_schema(model: FusedAutoencoder, spec: DataSpec, write_reconstructions: bool):
    """The columns a model's predictions have: what the model produces (a classifier head
    or not), not only what the data holds."""
    return modality(spec.kind).output_schema(spec, model.cfg.latent_dim, write_reconstructions,
                                             predicted_classes=model.predicted_classes)


def check_and_describe_outputs(cfg: Config, staging: Path, model: FusedAutoencoder, spec: DataSpec,
                               windows: Path) -> int:
    """Validate the predictions written into `staging` (one row per input window, each row in
    the model's output schema) and write their manifest; returns the row count."""
    model_dir = Path(cfg.paths.model)
    expected_rows = pq.ParquetFile(windows).metadata.num_rows
    rows = _validate_output_parts(staging, inference_schema(model, spec, cfg.infer.write_reconstructions))
    if rows != expected_rows:
        raise DataError(f"inference wrote {rows} rows for {expected_rows} input windows",
                        where=str(staging), fix="rerun the infer stage")
    split_counts = (pads.dataset(staging).to_table(columns=["split"]).column("split")
                    .value_counts().to_pylist())
    write_json_atomic(staging / MANIFEST, build_manifest(
        model={"path": str(model_dir), "sha256": hash_path(model_dir)},
        input={"path": str(windows), "sha256": hash_path(windows)},
        params=cfg.to_dict(),
        rows=rows,
        rows_per_split={item["values"]: item["counts"] for item in split_counts},
        schema=pads.dataset(staging, format="parquet").schema.to_string(show_schema_metadata=False),
    ))
    return rows


def _validate_output_parts(directory: Path, schema) -> int:
    """Validate the written Parquet in blocks of about 16 MiB (blocks.block_rows, as the
    validate stage reads): 65,536 rows a block, 130 MiB of outputs with reconstructions, made
    the driver's peak at 10M rows twice its peak at 1M, whose parts are smaller than that.
    Returns the row count."""
    rows = 0
    for part in sorted(directory.glob("*.parquet")):
        file = streaming_parquet(part)
        for batch in file.iter_batches(batch_size=block_rows(file)):
            schemas.validate_table(batch.to_pandas(), schema, table="inference output", source=str(part))
            rows += batch.num_rows
    return rows
