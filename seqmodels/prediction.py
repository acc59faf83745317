"""One batch of model inputs through a model, as arrays: what batch inference writes.

The Ray Data predictor (seqmodels.distributed.infer) and the in-process Detector both call
`predict_arrays`, so the pipeline, `seqmodels score` and the Python API score alike.
"""

from __future__ import annotations

import numpy as np
import torch

from seqmodels.models.base import FusedAutoencoder


def predict_arrays(model: FusedAutoencoder, x: np.ndarray, device: torch.device,
                   reconstructions: bool) -> dict[str, np.ndarray]:
    """One batch of model inputs through the model: latent, [reconstruction], score (float32),
    [step_score] and the family's extra outputs, in the column order inference writes. The
    Ray Data predictor and the in-process Detector both call this, so they score alike."""
    inputs = {"x": torch.from_numpy(x).to(device)}
    if model.spec.discrete:
        inputs["x"] = inputs["x"].long()
    with torch.inference_mode():
        out = model(inputs)
        score = model.score(inputs, out)
        steps = model.step_scores(inputs, out)
        result = {"latent": out.latent.code.float().cpu().numpy()}
        if reconstructions:
            result["reconstruction"] = model.output_reconstruction(inputs, out).cpu().numpy()
        result["score"] = score.float().cpu().numpy().astype(np.float32)
        if steps is not None:
            result["step_score"] = steps.float().cpu().numpy()
        for name, values in model.extra_outputs(out).items():
            result[name] = values.cpu().numpy()
    return result
