"""Export a trained model's encoder to ONNX, for serving without Python, Ray or seqmodels.

ONNX rather than TorchScript: TorchScript is deprecated as of torch 2.13, while ONNX is
served by onnxruntime, Triton and most inference stacks. The graph maps `x` (batch,
input_dim) to `latent` (batch, latent_dim): the latent code inference writes (the mean for
a variational model), with a dynamic batch dimension. Before it is published, the exported
file is checked against the eager model on standard-normal inputs (the scale of the
standardised data) at two batch sizes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqmodels.checkpoints import load_exported_model
from seqmodels.errors import SeqmodelsError
from seqmodels.models.base import FusedAutoencoder
from seqmodels.publish import publishing, write_json_atomic

ONNX_FILE = "encoder.onnx"
ONNX_CARD = "encoder.json"
TOLERANCE = 1e-4  # float32 kernels differ between torch and onnxruntime in summation order


class LatentEncoder(nn.Module):
    """x -> latent code: the part of the model a serving system needs for embeddings."""

    def __init__(self, model: FusedAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.encode(x).code


def export_onnx(model_dir: str | Path, target: str | Path) -> Path:
    """Write `target`/encoder.onnx (+ encoder.json) for the model exported in `model_dir`."""
    try:
        import onnxruntime  # noqa: F401  (checked here, used by _check_against_pytorch)
    except ImportError:
        raise SeqmodelsError("ONNX export needs the onnx, onnxscript and onnxruntime packages",
                             fix='pip install -c constraints.txt -e ".[export]"') from None
    model, cfg, spec = load_exported_model(model_dir)
    if spec.discrete:
        raise SeqmodelsError(
            f"{cfg.kind} encodes variable-length token sequences with packed RNN sequences, which "
            "torch.export (and so ONNX export) cannot trace in torch 2.13",
            where=str(model_dir),
            fix="serve token models with seqmodels.checkpoints.load_exported_model in PyTorch")
    encoder = LatentEncoder(model).eval()
    inputs = torch.randn(8, spec.input_dim, generator=torch.Generator().manual_seed(0))
    target = Path(target)
    with publishing(target) as staging:
        path = staging / ONNX_FILE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter about optional torchvision ops
            torch.onnx.export(encoder, (inputs,), str(path), dynamo=True, input_names=["x"],
                              output_names=["latent"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                              verbose=False)
        difference = _check_against_pytorch(path, encoder, inputs, model_dir)
        write_json_atomic(staging / ONNX_CARD, {
            "input": {"name": "x", "shape": ["batch", spec.input_dim],
                      "dtype": "float32", "layout": f"flattened {list(spec.input_shape)}"},
            "output": {"name": "latent", "shape": ["batch", cfg.latent_dim], "dtype": "float32"},
            "model": cfg.model_dump(mode="json"), "data_spec": spec.to_dict(),
            "max_abs_difference_vs_pytorch": difference,
        })
    return target / ONNX_FILE


def _check_against_pytorch(path: Path, encoder: LatentEncoder, inputs: Tensor,
                           model_dir: str | Path) -> float:
    """The largest difference between onnxruntime and the eager model, at two batch sizes (the
    batch dimension is dynamic); a difference above TOLERANCE refuses to publish."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = 0.0
    for batch in (inputs, inputs[:1]):
        got = session.run(None, {"x": batch.numpy()})[0]
        with torch.no_grad():
            expected = encoder(batch).numpy()
        difference = max(difference, float(np.abs(got - expected).max()))
        if difference > TOLERANCE:
            raise SeqmodelsError(f"the ONNX encoder differs from the PyTorch model by {difference:g}",
                                 where=str(model_dir), fix="report this with the model card")
    return difference
