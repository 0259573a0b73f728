"""hands kind: the stateless `hands` model, the static-mode pipeline on one image per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.hand import GESTURES
from shared.serving.models.base import BlsInfer, Inputs, check_image, require
from shared.serving.models.hand_pipeline import PipelineNetworksModel
from shared.serving.models.tensors import HANDS_GESTURE_PROBS, IMAGE, TIMING, results_to_tensors, timing_tensor


class HandsModel(PipelineNetworksModel):
    """hands: the static-mode `HandPipeline` (MediaPipe's static_image_mode), stateless: every
    request is one photo on its own, no correlation id, so a generic client, a health probe or
    `curl` can ask what hands are in an image. The same networks and settings as hand_pipeline
    (deployed with `static: true`), so it answers as `components.infer` does on a photo."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.inference.pipeline import HandPipeline

        self.pipeline = HandPipeline(self.pipeline_cfg, detector=self.detector, crop_model=self.crop_model)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        """The photos of a dynamic batch go through the static pipeline as one batch (one detector
        call, one crop-model call); a bad request gets its own error."""
        out: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        good: list[tuple[int, np.ndarray]] = []
        for i, get in enumerate(requests):
            try:
                good.append((i, check_image(require(get, IMAGE, self.name), self.name)))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                out[i] = exc
        if not good:
            return out
        try:
            results = self.pipeline.process_batch([im for _, im in good])
        except Exception as exc:  # noqa: BLE001
            for i, _ in good:
                out[i] = exc
            return out
        for (i, _), hands, timing, probs in zip(good, results, self.pipeline.last_timings,
                                                self.pipeline.last_gesture_probs):
            probs = np.zeros((len(hands), len(GESTURES)), np.float32) if probs is None else probs
            out[i] = {**results_to_tensors(hands), TIMING.name: timing_tensor(timing),
                      HANDS_GESTURE_PROBS.name: probs.astype(np.float32)[None]}
        return out
