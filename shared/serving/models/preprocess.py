"""preprocess kind: the `detector_preprocess` model of the `hand_detection` ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.inference.detectors import DetectorSpec
from shared.serving.models.base import BlsInfer, Inputs, ServedModel, check_image, detector_preprocess, require
from shared.serving.models.tensors import IMAGE, IMAGE_HW, LETTERBOX


class PreprocessModel(ServedModel):
    """detector_preprocess: IMAGE -> the detector's input + LETTERBOX (for hand_detection)."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        self.spec = DetectorSpec.from_dict(self.params["detector"])

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        image = check_image(require(get, IMAGE, self.name), self.name)
        x, lb = detector_preprocess(image, self.spec)
        return {self.spec.input_name: x[None], LETTERBOX.name: lb[None],
                IMAGE_HW.name: np.array([image.shape[:2]], np.int64)}
