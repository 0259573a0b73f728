"""BlazePalm post-processing in NumPy: anchors, weighted NMS, letterbox, the hand ROI.

Kept free of torch so that the Triton Python backend, the onnxruntime/TensorRT
runners and the TensorRT calibrator can decode palm detections without loading
PyTorch; `shared.models.blazepalm` re-exports everything here.

Everything follows MediaPipe's palm-detection graph: SSD anchors as
`SsdAnchorsCalculator` builds them for this model, WEIGHTED non-max suppression
at IoU 0.3, the letterbox of ImageToTensor (`keep_aspect_ratio`, zero border),
and the hand ROI of `palm_detection_detection_to_roi` (rotation from the wrist to
the middle-finger base, shift by half the box height towards the fingers, square
on the long side, scale 2.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from shared.geometry import Roi, warp_roi

NUM_PALM_KEYPOINTS = 7
NUM_REGRESSORS = 4 + 2 * NUM_PALM_KEYPOINTS  # 18: cx, cy, w, h, then x, y per keypoint
PALM_WRIST, PALM_MIDDLE_MCP = 0, 2


def sigmoid_scores(logits: np.ndarray, clip: float = 100.0) -> np.ndarray:
    """MediaPipe's score: sigmoid of the logit clipped to +-clip."""
    z = np.clip(np.asarray(logits, np.float64), -clip, clip)  # float64: exp(100) overflows float32
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, img_size: int = 192
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs [..., N, 18] / [..., N, 1] -> (boxes [..., N, 4] xyxy, keypoints [..., N, 7, 2],
    scores [..., N]), normalised to the input; the NumPy twin of `BlazePalm.decode`."""
    r = np.asarray(regressors, np.float32) / img_size
    centre = r[..., 0:2] + anchors
    half = r[..., 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=-1)
    keypoints = r[..., 4:].reshape(*r.shape[:-1], NUM_PALM_KEYPOINTS, 2) + anchors[:, None, :]
    return boxes, keypoints, sigmoid_scores(np.asarray(logits)[..., 0])


def ssd_anchors(img_size: int = 192, strides: tuple[int, ...] = (8, 16, 16, 16), per_layer: int = 2) -> np.ndarray:
    """[N, 2] anchor centres (x, y), normalised, in the model's output order.

    Consecutive layers with the same stride share one grid (MediaPipe merges
    them); each layer puts `per_layer` anchors per cell (one aspect ratio 1.0
    plus the interpolated scale), and fixed-size anchors make them differ only
    in count, not in shape.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(img_size / strides[i])
        per_cell = per_layer * (j - i)
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)  # [n*n, 1, 2], row-major like NHWC
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(centres).astype(np.float32)



@dataclass
class PalmDetections:
    """Palms in one image: boxes xyxy [N, 4] and 7 keypoints [N, 7, 2] in pixels, scores [N]."""

    xyxy: np.ndarray
    keypoints: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.score)
        if self.xyxy.shape != (n, 4) or self.keypoints.shape != (n, NUM_PALM_KEYPOINTS, 2):
            raise ValueError(f"inconsistent palm arrays: {self.xyxy.shape}, {self.keypoints.shape}, {n}")

    def __len__(self) -> int:
        return len(self.score)

    def rois(self, scale: float = 2.6, shift_y: float = -0.5) -> list[Roi]:
        return [palm_to_roi(b, k, scale=scale, shift_y=shift_y) for b, k in zip(self.xyxy, self.keypoints)]



def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of boxes [M, 4] (0 where the union is empty)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3,
                 max_detections: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression.

    Take the best remaining detection; every remaining one overlapping it with
    IoU > threshold (itself included) joins its cluster; the output is the
    score-weighted mean box and keypoints of the cluster, with the best score.
    boxes [N, 4] xyxy, keypoints [N, K, 2], scores [N] -> the same, M <= N.
    """
    # float64 so an IoU equal to the threshold compares as equal (MediaPipe merges only above it)
    boxes, keypoints = np.asarray(boxes, np.float64), np.asarray(keypoints, np.float64)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while len(order) and (max_detections is None or len(out_s) < max_detections):
        best = order[0]
        overlap = iou_one_to_many(boxes[best], boxes[order]) > iou_threshold
        overlap[0] = True  # a degenerate (zero-area) best box still forms its own cluster
        cluster, order = order[overlap], order[~overlap]
        w = scores[cluster][:, None]  # [C, 1]
        out_b.append((boxes[cluster] * w).sum(0) / w.sum())
        out_k.append((keypoints[cluster] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[best])
    k = keypoints.shape[1] if keypoints.ndim == 3 else NUM_PALM_KEYPOINTS
    if not out_s:
        return np.zeros((0, 4), np.float32), np.zeros((0, k, 2), np.float32), np.zeros((0,), np.float32)
    return np.stack(out_b), np.stack(out_k), np.asarray(out_s)


def postprocess(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, lb: Letterbox,
                score_threshold: float = 0.5, nms_threshold: float = 0.3, max_detections: int | None = None
                ) -> PalmDetections:
    """One image's decoded outputs (boxes [A, 4] xyxy and keypoints [A, 7, 2] normalised to the
    input, scores [A]) -> palms in pixels of the original image, best first.

    MediaPipe's order: TensorsToDetections keeps scores >= threshold and boxes of non-negative
    size, weighted NMS (IoU > nms_threshold), ClipDetectionVectorSize keeps the first
    `max_detections` (max_num_hands), DetectionLetterboxRemoval maps back.
    """
    b, k, s = np.asarray(boxes), np.asarray(keypoints), np.asarray(scores)
    keep = (s >= score_threshold) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    b, k, s = weighted_nms(b[keep], k[keep], s[keep], nms_threshold, max_detections)
    b = unletterbox(np.asarray(b, np.float64).reshape(-1, 2, 2) * lb.size, lb).reshape(-1, 4)
    k = unletterbox(np.asarray(k, np.float64).reshape(-1, NUM_PALM_KEYPOINTS, 2) * lb.size, lb)
    return PalmDetections(b.astype(np.float32), k.astype(np.float32), np.asarray(s, np.float32))


def palm_to_roi(xyxy: np.ndarray, keypoints: np.ndarray, scale: float = 2.6, shift_x: float = 0.0,
                shift_y: float = -0.5) -> Roi:
    """The hand ROI MediaPipe derives from one palm (all in pixels).

    Rotation: the wrist -> middle-finger-base vector is turned to point up
    (MediaPipe's `rotation_vector_target_angle_degrees: 90`). The box centre is
    shifted by (shift_x * w, shift_y * h) in the rotated frame, the box is
    squared on its long side and scaled (RectTransformationCalculator:
    scale 2.6, shift_y -0.5, square_long).
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = x2 - x1, y2 - y1
    wrist, middle = np.asarray(keypoints[PALM_WRIST], float), np.asarray(keypoints[PALM_MIDDLE_MCP], float)
    # MediaPipe's rotation is clockwise on screen; our Roi.angle counts counter-clockwise.
    rotation = math.pi / 2 - math.atan2(-(middle[1] - wrist[1]), middle[0] - wrist[0])
    rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
    c, s = math.cos(rotation), math.sin(rotation)
    cx = (x1 + x2) / 2 + w * shift_x * c - h * shift_y * s
    cy = (y1 + y2) / 2 + w * shift_x * s + h * shift_y * c
    return Roi(cx, cy, max(w, h) * scale, -rotation)


# --------------------------------------------------------------------------- letterbox

LETTERBOX_MODES = ("mediapipe", "area")


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into a square: input = image * scale + pad (pixels; the pads
    are fractional for MediaPipe's letterbox)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    size: int


def letterbox(image: np.ndarray, size: int = 192, mode: str = "mediapipe") -> tuple[np.ndarray, Letterbox]:
    """Fit an image into size x size keeping its aspect ratio, centred, zero border.

    mode "mediapipe" (default) is MediaPipe's palm-detection input bit for bit
    (ImageToTensorCalculator, keep_aspect_ratio, BORDER_ZERO): the square of side
    max(H, W) around the image centre, its corners mapped onto the input's corners, each
    input pixel sampled bilinearly at one point (`shared.geometry.warp_roi`). Large photos
    alias a little: that is what the palm model saw in training. mode "area" resizes with
    area averaging (no aliasing) and pads by whole pixels: our earlier letterbox, kept as an
    option (other palm scores and boxes on downscaled photos).
    """
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if mode == "mediapipe":
        side = float(max(h, w))
        out, _ = warp_roi(image, Roi(w / 2, h / 2, side, 0.0), size, border="zero")
        scale = size / side
        return out, Letterbox(scale, scale, (size - w * scale) / 2, (size - h * scale) / 2, size)
    if mode != "area":
        raise ValueError(f"letterbox mode {mode!r} is not one of {LETTERBOX_MODES}")
    ratio = size / max(h, w)
    nw, nh = max(1, round(w * ratio)), max(1, round(h * ratio))
    interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    return out, Letterbox(nw / w, nh / h, pad_x, pad_y, size)


def unletterbox(points: np.ndarray, lb: Letterbox) -> np.ndarray:
    """[..., 2] points in letterboxed pixels -> pixels of the original image."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts - [lb.pad_x, lb.pad_y]) / [lb.scale_x, lb.scale_y]
