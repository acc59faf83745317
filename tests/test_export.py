"""ONNX export of the encoder: the served graph gives the eager model's latents."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from seqmodels.checkpoints import export_model
from seqmodels.errors import SeqmodelsError
from seqmodels.export import ONNX_CARD, export_onnx
from seqmodels.models import build_model
from seqmodels.models.config import ModelConfig
from seqmodels.spec import DataSpec

SERIES = DataSpec(kind="series", input_shape=(16, 2), features=("a", "b"))
CASES = [
    ("conv", SERIES), ("recurrent", SERIES), ("dense", DataSpec(kind="tabular", input_shape=(9,))),
    ("conv", DataSpec(kind="images", input_shape=(1, 8, 8), has_labels=True, n_classes=10)),
]


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize(("kind", "spec"), CASES, ids=[f"{k}-{s.kind}" for k, s in CASES])
def test_onnx_encoder_matches_the_eager_model(tmp_path, kind, spec, variational):
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden_size=8, latent_dim=3, variational=variational)
    model = build_model(cfg, spec).eval()
    export_model(tmp_path / "model", model.state_dict(), cfg, spec)

    path = export_onnx(tmp_path / "model", tmp_path / "onnx")

    x = torch.randn(13, spec.input_dim) * 2  # another batch size than the export's example
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = session.run(["latent"], {"x": x.numpy()})[0]
    with torch.no_grad():
        eager = model.encode(x).code.numpy()
    assert served.shape == (13, 3)
    np.testing.assert_allclose(served, eager, atol=1e-4)
    card = json.loads((tmp_path / "onnx" / ONNX_CARD).read_text())
    assert card["output"]["shape"] == ["batch", 3] and card["input"]["shape"] == ["batch", spec.input_dim]


def test_token_models_are_refused_with_the_reason(tmp_path):
    spec = DataSpec(kind="tokens", input_shape=(7,), vocab_size=10)
    cfg = ModelConfig(kind="seq2seq", hidden_size=8, latent_dim=3)
    export_model(tmp_path / "model", build_model(cfg, spec).state_dict(), cfg, spec)
    with pytest.raises(SeqmodelsError, match="packed RNN sequences"):
        export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
