"""postprocess kind: the `detector_postprocess` model of the `hand_detection` ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.inference.detectors import DetectorSpec
from shared.serving.models.base import BlsInfer, Inputs, ServedModel, detector_postprocess, require
from shared.serving.models.tensors import IMAGE_HW, LETTERBOX, ROIS
from shared.tensors import TensorSpec


class PostprocessModel(ServedModel):
    """detector_postprocess: raw detector outputs + LETTERBOX -> XYXY, SCORE, ROIS."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        self.spec = DetectorSpec.from_dict(self.params["detector"])

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        outputs = {n: require(get, TensorSpec(n, "float32", ()), self.name) for n in self.spec.output_names}
        lb = require(get, LETTERBOX, self.name)
        hw = require(get, IMAGE_HW, self.name)
        det = detector_postprocess(outputs, lb, (int(hw[0]), int(hw[1])), self.spec)
        rois = np.array([r.as_array() for r in det.rois], np.float32).reshape(-1, 4)
        return {"XYXY": det.xyxy.astype(np.float32)[None], "SCORE": det.score.astype(np.float32)[None],
                ROIS.name: rois[None]}
