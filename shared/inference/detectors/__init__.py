"""Hand detectors: one file per detector, one registry (as `shared.models.registry` is for models).

A detector kind (`DetectorKind`, see `base.py`) holds everything about one detector, once:

- `create(**settings)`: the in-process detector (`Detector`: RGB images -> `Detections`);
- `from_runner(runner, spec)`: the same over any runner (the served network through BLS,
  ONNX Runtime inside Triton's python backend);
- `preprocess(image, spec)` / `postprocess(outputs, lb, image_hw, spec)`: one image, for the
  python steps of the Triton detection ensemble (the same code as in process);
- `served(model, work_dir, ...)`: the network as ONNX + its `DetectorSpec`, for components.deploy.

Adding a detector = one new file here with its kind + one line in `DETECTORS` (or
`register_detector(kind)` from your own code) + its tests. Today: `blazepalm` (MediaPipe's
palm detector) and `yolo` (an Ultralytics detect / pose model).
"""

from __future__ import annotations

from typing import Any

from shared.errors import UserError
from shared.inference.detectors.base import Detections, Detector, DetectorKind, DetectorSpec, ServedNetwork
from shared.inference.detectors.blazepalm import BLAZEPALM, PalmDetector
from shared.inference.detectors.yolo import YOLO, YoloDetector, YoloOnnxDetector, yolo_decode, yolo_letterbox

DETECTORS: dict[str, DetectorKind] = {BLAZEPALM.name: BLAZEPALM, YOLO.name: YOLO}


def register_detector(kind: DetectorKind) -> DetectorKind:
    """Add (or replace) a detector kind under `kind.name`; returns it."""
    DETECTORS[kind.name] = kind
    return kind


def detector_kind(name: str) -> DetectorKind:
    if name not in DETECTORS:
        raise UserError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name]


def create_detector(name: str, **settings: Any) -> Detector:
    """The in-process detector `name` from the pipeline's settings (backend, yolo_model, expand_ratio,
    score_threshold, max_detections, device, work_dir, threads, options, palm_letterbox, ...): each
    kind takes what it needs."""
    return detector_kind(name).create(**settings)


__all__ = ["DETECTORS", "Detections", "Detector", "DetectorKind", "DetectorSpec", "PalmDetector", "ServedNetwork",
           "YoloDetector", "YoloOnnxDetector", "create_detector", "detector_kind", "register_detector",
           "yolo_decode", "yolo_letterbox"]
