"""An Ultralytics YOLO hand detector (detect or pose): everything about it, once.

In process: `YoloDetector` runs a `.pt` or `.onnx` through Ultralytics. Served (the Triton
venv has no Ultralytics): the ONNX export runs on any runner and is decoded here with
numpy/OpenCV exactly as Ultralytics does (`yolo_letterbox`: LetterBox(auto=False,
center=True); `yolo_decode`: class-aware NMS). Either way the crop ROI is the box made square
and grown by `expand_ratio` (the seed's convention); a pose model's 21 keypoints, when
confident, also give the rotation (wrist -> middle-finger base up) and a tighter square.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.errors import UserError
from shared.geometry import Roi, roi_from_box, roi_from_keypoints
from shared.hand import NUM_KEYPOINTS
from shared.inference.detectors.base import Detections, DetectorSpec, ServedNetwork
from shared.models.specs import onnx_io
from shared.tensors import TensorSpec, run_batched


def yolo_roi(box: np.ndarray, kp: np.ndarray | None, expand_ratio: float) -> Roi:
    """The crop ROI of one YOLO hand: from confident pose keypoints (rotated), else from the box."""
    if kp is not None and kp[0, 2] > 0.5 and kp[9, 2] > 0.5 and (kp[:, 2] > 0.5).sum() >= 5:
        return roi_from_keypoints(kp, expand_ratio=expand_ratio, rotate=True, min_visibility=0.5)
    return roi_from_box(box, expand_ratio=expand_ratio)


class YoloDetector:
    """An Ultralytics YOLO hand detector (`.pt` or `.onnx`), run by Ultralytics in process."""

    name = "yolo"

    def __init__(self, path: str, expand_ratio: float = 0.3, score_threshold: float = 0.5,
                 max_detections: int | None = None, imgsz: int = 640, device: str = "cpu") -> None:
        p = Path(path)
        if not path:
            raise UserError("--detector yolo needs --yolo_model (a trained .pt or .onnx)")
        if not p.is_file():
            raise UserError(f"{path}: YOLO model not found; pass a trained .pt or .onnx to --yolo_model")
        if p.suffix.lower() not in (".pt", ".onnx"):
            raise UserError(f"{path}: --yolo_model must be a .pt or .onnx file")
        from ultralytics import YOLO  # heavy (torch): only when this detector is chosen

        try:
            self.model = YOLO(str(p))
        except Exception as exc:  # ultralytics wraps many error types
            raise UserError(f"{path}: Ultralytics cannot load it ({type(exc).__name__}: {exc})") from None
        self.expand_ratio = expand_ratio
        self.score_threshold = score_threshold
        self.max_detections = max_detections or 300
        self.imgsz = imgsz
        self.device = "cpu" if device == "auto" else device

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        # Ultralytics takes numpy images as BGR (OpenCV's order).
        preds = self.model.predict([np.ascontiguousarray(im[..., ::-1]) for im in images], imgsz=self.imgsz,
                                   conf=self.score_threshold, max_det=self.max_detections, verbose=False,
                                   device=self.device)
        results = []
        for r in preds:
            xyxy = r.boxes.xyxy.cpu().numpy().astype(np.float32) if r.boxes is not None else np.zeros((0, 4))
            score = r.boxes.conf.cpu().numpy().astype(np.float32) if r.boxes is not None else np.zeros(0)
            kps = None
            if getattr(r, "keypoints", None) is not None and r.keypoints.data.shape[1] == NUM_KEYPOINTS:
                kps = r.keypoints.data.cpu().numpy()  # [N, 21, 3] pixels + confidence
            order = np.argsort(-score, kind="stable")
            rois = [yolo_roi(xyxy[i], None if kps is None else kps[i], self.expand_ratio) for i in order]
            results.append(Detections(xyxy[order].astype(np.float32), score[order].astype(np.float32), rois))
        return results


def yolo_letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' LetterBox(auto=False, center=True): resize keeping the aspect ratio, pad
    with grey 114 to size x size. Returns the input [3, S, S] float32 in [0, 1] and
    [scale_x, scale_y, pad_x, pad_y]."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    dw, dh = (size - nw) / 2, (size - nh) / 2
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = padded.transpose(2, 0, 1).astype(np.float32) * (1.0 / 255.0)  # [3, S, S]
    return x, np.array([nw / w, nh / h, left, top], np.float32)


def yolo_decode(output: np.ndarray, lb: np.ndarray, image_hw: tuple[int, int], spec: DetectorSpec) -> Detections:
    """One image's Ultralytics ONNX output [4 + classes (+ K*D), anchors] -> Detections.

    Boxes are cx, cy, w, h in letterboxed pixels; class scores are already sigmoid'ed.
    Class-aware NMS at `spec.nms_threshold` (Ultralytics' non_max_suppression), best first,
    mapped back to image pixels and clipped; crop ROIs as `YoloDetector` makes them.
    """
    pred = np.asarray(output, np.float32).T  # [A, C]
    nc = spec.num_classes
    cls_scores = pred[:, 4:4 + nc]
    score = cls_scores.max(1)
    keep = score > spec.score_threshold
    pred, score, cls = pred[keep], score[keep], cls_scores[keep].argmax(1)
    if not len(score):
        return Detections.empty()
    cx, cy, bw, bh = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    idx = cv2.dnn.NMSBoxesBatched(np.stack([xyxy[:, 0], xyxy[:, 1], bw, bh], 1).tolist(), score.tolist(),
                                  cls.astype(np.int32).tolist(), spec.score_threshold, spec.nms_threshold)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-score[idx], kind="stable")][: spec.max_detections]
    scale, pad = lb[:2].astype(np.float64), lb[2:4].astype(np.float64)
    h, w = image_hw
    boxes = ((xyxy[idx].reshape(-1, 2, 2) - pad) / scale).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    kps = None
    if spec.kpt_shape and spec.kpt_shape[0] == NUM_KEYPOINTS:
        k, d = spec.kpt_shape
        kps = pred[idx, 4 + nc:4 + nc + k * d].reshape(-1, k, d).astype(np.float64)
        kps[..., :2] = (kps[..., :2] - pad) / scale
        if d == 2:  # no visibility channel: treat every keypoint as seen
            kps = np.concatenate([kps, np.ones((*kps.shape[:2], 1))], axis=-1)
    rois = [yolo_roi(boxes[i], None if kps is None else kps[i], spec.expand_ratio) for i in range(len(idx))]
    return Detections(boxes.astype(np.float32), score[idx].astype(np.float32), rois)


class YoloOnnxDetector:
    """A YOLO ONNX export on any runner (a served network through BLS, ONNX Runtime in Triton),
    decoded with numpy/OpenCV."""

    name = "yolo"

    def __init__(self, runner: Any, spec: DetectorSpec) -> None:
        self.runner = runner
        self.spec = spec

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        inputs, lbs = zip(*(yolo_letterbox(im, self.spec.img_size) for im in images))
        out = run_batched(self.runner, np.stack(inputs))[self.spec.output_names[0]]  # [B, C, A]
        return [yolo_decode(out[i], lbs[i], images[i].shape[:2], self.spec) for i in range(len(images))]


class YoloKind:
    name = "yolo"
    model_option = "yolo_model"  # the components.deploy flag naming its network file

    def create(self, yolo_model: str = "", expand_ratio: float = 0.3, score_threshold: float = 0.5,
               max_detections: int | None = None, device: str = "cpu", **_: Any) -> YoloDetector:
        return YoloDetector(yolo_model, expand_ratio, score_threshold, max_detections, device=device)

    def from_runner(self, runner: Any, spec: DetectorSpec) -> YoloOnnxDetector:
        return YoloOnnxDetector(runner, spec)

    def preprocess(self, image: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
        return yolo_letterbox(image, spec.img_size)

    def postprocess(self, outputs: dict[str, np.ndarray], lb: np.ndarray, image_hw: tuple[int, int],
                    spec: DetectorSpec) -> Detections:
        return yolo_decode(outputs[spec.output_names[0]], lb, image_hw, spec)

    def served(self, model: str, work_dir: Path, max_batch: int, max_detections: int,
               settings: dict[str, Any]) -> ServedNetwork:
        """`model`: a trained Ultralytics `.pt` (exported to ONNX in `work_dir`, the input untouched) or `.onnx`."""
        if not model:
            raise UserError("--detector yolo needs --yolo_model (a trained Ultralytics .pt or .onnx)")
        src = Path(model)
        if not src.is_file() or src.suffix.lower() not in (".pt", ".onnx"):
            raise UserError(f"--yolo_model {model}: no such .pt or .onnx file")
        path = src
        if src.suffix.lower() == ".pt":
            # Export a copy in the work dir: Ultralytics writes the .onnx next to the .pt, and inputs stay untouched.
            work = Path(work_dir) / f"yolo_{src.stem}_{src.stat().st_size}_{int(src.stat().st_mtime)}"
            path = work / f"{src.stem}.onnx"
            if not path.is_file():
                work.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, work / src.name)
                from ultralytics import YOLO  # heavy (torch): only when a .pt is deployed

                path = Path(YOLO(str(work / src.name)).export(format="onnx", dynamic=True, imgsz=640, simplify=False))
        inputs, outputs, meta = onnx_io(path)
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 3:
            raise UserError(f"{path}: expected one image input and one output (an Ultralytics detect/pose export), "
                            f"got {[t.name for t in inputs]} -> {[t.name for t in outputs]}")
        names = ast.literal_eval(meta["names"]) if "names" in meta else {0: "hand"}
        kpt_shape = tuple(ast.literal_eval(meta["kpt_shape"])) if meta.get("kpt_shape") else ()
        size = inputs[0].shape[-1]
        if size <= 0:
            size = int(ast.literal_eval(meta.get("imgsz", "[640, 640]"))[0])
        det = DetectorSpec(kind=self.name, input_name=inputs[0].name, output_names=(outputs[0].name,), img_size=size,
                           max_batch=max_batch, nms_threshold=0.7, max_detections=max_detections,
                           expand_ratio=float(settings.get("expand_ratio", 0.3)), num_classes=len(names),
                           kpt_shape=kpt_shape, score_threshold=float(settings.get("detector_score_threshold", 0.5)))
        # A fixed input side keeps config.pbtxt exact; Ultralytics' dynamic export leaves H/W open.
        inputs = [TensorSpec(inputs[0].name, inputs[0].dtype, (3, size, size), "letterboxed RGB in [0, 1]")]
        return ServedNetwork(path, inputs, outputs, det)


YOLO = YoloKind()
