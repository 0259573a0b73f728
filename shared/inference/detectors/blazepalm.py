"""BlazePalm, MediaPipe's palm detector: everything about it as a hand detector, once.

In process (`PalmDetector`, any runner: torch, ONNX Runtime, a served network) and in the
Triton detection ensemble (`preprocess` / `postprocess` of one image) the same code runs:
letterbox to 192 (MediaPipe's ImageToTensor, bit for bit), decode, score threshold, weighted
NMS, the best `max_detections`, palm -> hand ROI (rotation from the palm keypoints, scale 2.6,
shift towards the fingers), all of it `shared.models.blazepalm_post`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import UserError
from shared.inference.backends import ModelRef, Runner, create_runner
from shared.inference.detectors.base import Detections, DetectorSpec, ServedNetwork
from shared.models.blazepalm_post import LETTERBOX_MODES, Letterbox, letterbox, postprocess
from shared.models.specs import ModelSpec, blazepalm_spec, check_against_spec, onnx_io
from shared.tensors import run_batched

IMG_SIZE = 192


class PalmDetector:
    """MediaPipe's palm detector on any runner, with MediaPipe's post-processing
    (`letterbox="area"`: area averaging instead of MediaPipe's resize)."""

    name = "blazepalm"

    def __init__(self, runner: Runner, img_size: int = IMG_SIZE, score_threshold: float = 0.5,
                 nms_threshold: float = 0.3, max_detections: int | None = None, letterbox: str = "mediapipe") -> None:
        if letterbox not in LETTERBOX_MODES:
            raise UserError(f"palm letterbox {letterbox!r} is not one of {', '.join(LETTERBOX_MODES)}")
        self.runner = runner
        self.img_size = img_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_detections = max_detections
        self.letterbox = letterbox

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        """images: RGB uint8 [H, W, 3] each, any size."""
        if not images:
            return []
        padded, boxes = zip(*(letterbox(im, self.img_size, self.letterbox) for im in images))
        x = np.stack(padded).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)  # [B, 3, 192, 192]
        out = run_batched(self.runner, x)
        return [_detections(out["boxes"][i], out["keypoints"][i], out["scores"][i], lb, self.score_threshold,
                            self.nms_threshold, self.max_detections) for i, lb in enumerate(boxes)]


def _detections(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, lb: Letterbox, score_threshold: float,
                nms_threshold: float, max_detections: int | None) -> Detections:
    palms = postprocess(boxes, keypoints, scores, lb, score_threshold, nms_threshold,
                        max_detections)  # [A, 4], [A, 7, 2], [A] -> pixels
    return Detections(palms.xyxy, palms.score, palms.rois()) if len(palms) else Detections.empty()


def check_palm_onnx(path: Path, dynamic_batch: bool = True) -> ModelSpec:
    """The palm detector's spec, with `path`'s tensors checked against it (names, order, known shapes):
    a UserError naming the file when it is another model. `dynamic_batch`: Triton's need (a file run
    in process may have a fixed batch)."""
    _, outputs, _ = onnx_io(path, dynamic_batch)
    known = [t.shape[0] for t in outputs if t.shape and t.shape[0] > 0]
    spec = blazepalm_spec(img_size=IMG_SIZE, num_anchors=known[0] if known else 2016)
    check_against_spec(path, spec, dynamic_batch)
    return spec


class BlazePalmKind:
    name = "blazepalm"
    model_option = "palm_onnx"  # the components.deploy flag naming its network file

    def create(self, backend: str = "torch", score_threshold: float = 0.5, max_detections: int | None = None,
               device: str = "cpu", work_dir: str = "", palm_model: str = "blazepalm_full",
               palm_weights: str = "mediapipe", threads: int = 0, options: dict[str, Any] | None = None,
               palm_letterbox: str = "mediapipe", **_: Any) -> PalmDetector:
        """On the crop model's backend (TensorRT and other GPU-only backends run the palm net on torch)."""
        palm_backend = backend if backend in ("torch", "onnxruntime", "openvino", "triton") else "torch"
        if str(palm_weights).endswith(".onnx"):  # a wrong file: one error here, not a shape error every frame
            check_palm_onnx(Path(palm_weights), dynamic_batch=False)
        ref = ModelRef(palm_model, palm_weights, img_size=IMG_SIZE, device=device, work_dir=work_dir,
                       threads=threads, options=dict(options or {}))
        return PalmDetector(create_runner(palm_backend, ref), img_size=IMG_SIZE, score_threshold=score_threshold,
                            max_detections=max_detections, letterbox=palm_letterbox)

    def from_runner(self, runner: Any, spec: DetectorSpec) -> PalmDetector:
        return PalmDetector(runner, img_size=spec.img_size, score_threshold=spec.score_threshold,
                            nms_threshold=spec.nms_threshold, max_detections=spec.max_detections)

    def preprocess(self, image: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
        padded, lb = letterbox(image, spec.img_size)
        x = padded.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)  # [3, S, S], as PalmDetector feeds it
        return x, np.array([lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y], np.float32)

    def postprocess(self, outputs: dict[str, np.ndarray], lb: np.ndarray, image_hw: tuple[int, int],
                    spec: DetectorSpec) -> Detections:
        b, k, s = (outputs[n] for n in spec.output_names)  # [A, 4], [A, 7, 2], [A] normalised to the input
        box = Letterbox(float(lb[0]), float(lb[1]), float(lb[2]), float(lb[3]), spec.img_size)
        return _detections(b, k, s, box, spec.score_threshold, spec.nms_threshold, spec.max_detections)

    def served(self, model: str, work_dir: Path, max_batch: int, max_detections: int,
               settings: dict[str, Any]) -> ServedNetwork:
        """`model`: a BlazePalm ONNX file, or '' to export MediaPipe's palm detector into `work_dir`."""
        if model:
            path = Path(model)
            if not path.is_file():
                raise UserError(f"--palm_onnx {model}: no such file; leave it empty to export MediaPipe's "
                                "palm detector here")
        else:
            path = ModelRef("blazepalm_full", "mediapipe", img_size=IMG_SIZE, work_dir=str(work_dir)).onnx_path()
        spec = check_palm_onnx(path)
        det = DetectorSpec(kind=self.name, input_name=spec.input_names[0], output_names=tuple(spec.output_names),
                           img_size=IMG_SIZE, max_batch=max_batch, max_detections=max_detections,
                           score_threshold=float(settings.get("detector_score_threshold", 0.5)))
        return ServedNetwork(path, list(spec.inputs), list(spec.outputs), det)


BLAZEPALM = BlazePalmKind()
