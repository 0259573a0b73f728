"""What every hand detector shares: its answer (`Detections`), its call (`Detector`), the
description of a served detector network (`DetectorSpec`) and the detector kind protocol
that `shared.inference.detectors.DETECTORS` registers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.geometry import Roi
from shared.inference.triton_client import SERVED_DETECTOR
from shared.tensors import TensorSpec


@dataclasses.dataclass
class Detections:
    """Hands (or palms) found in one image, pixels of that image.

    xyxy [N, 4] the detector's box, score [N], rois: the crop ROI of each hand
    (rotated square, as the crop model wants it), best score first.
    """

    xyxy: np.ndarray
    score: np.ndarray
    rois: list[Roi]

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])


class Detector(Protocol):
    """In-process detector: RGB uint8 images [H, W, 3] -> one `Detections` each."""

    name: str

    def __call__(self, images: list[np.ndarray]) -> list[Detections]: ...


@dataclasses.dataclass
class DetectorSpec:
    """What the served detector network is and how its outputs become hands (deploy writes it
    into the Triton models' parameters; the served python models read it back)."""

    kind: str = "blazepalm"  # a name in shared.inference.detectors.DETECTORS
    model: str = SERVED_DETECTOR  # the served network's name
    input_name: str = "image"
    output_names: tuple[str, ...] = ("boxes", "keypoints", "scores")
    img_size: int = 192
    max_batch: int = 8
    score_threshold: float = 0.5
    nms_threshold: float = 0.3  # blazepalm: MediaPipe's weighted NMS; yolo: Ultralytics' default is 0.7
    max_detections: int = 4
    expand_ratio: float = 0.3  # yolo: box -> crop ROI
    num_classes: int = 1  # yolo: class scores after the 4 box values
    kpt_shape: tuple[int, ...] = ()  # yolo pose: (21, 3)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorSpec:
        d = dict(d)
        for key in ("output_names", "kpt_shape"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclasses.dataclass
class ServedNetwork:
    """A detector network ready to serve: the ONNX file, its tensors (batch axis dropped) and its spec."""

    onnx_path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    spec: DetectorSpec


class DetectorKind(Protocol):
    """One detector, everything about it in one file (see the package doc)."""

    name: str
    model_option: str  # the components.deploy option naming its network file ('' = none)

    def create(self, **settings: Any) -> Detector:
        """The in-process detector from the pipeline's settings (backend, thresholds, model files...)."""

    def from_runner(self, runner: Any, spec: DetectorSpec) -> Detector:
        """The same detector over any runner (e.g. the served network through BLS)."""

    def preprocess(self, image: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
        """One RGB image -> (network input [3, S, S] float32, LETTERBOX [4]: scale x, y, pad x, y)."""

    def postprocess(self, outputs: dict[str, np.ndarray], lb: np.ndarray, image_hw: tuple[int, int],
                    spec: DetectorSpec) -> Detections:
        """One image's raw outputs (no batch axis) + its LETTERBOX -> Detections in image pixels."""

    def served(self, model: str, work_dir: Path, max_batch: int, max_detections: int,
               settings: dict[str, Any]) -> ServedNetwork:
        """The network as ONNX (exported into `work_dir` when `model` is not one) for components.deploy."""
