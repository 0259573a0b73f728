"""ROI geometry: image -> upright square crop, and crop points back to image pixels.

A `Roi` is a rotated square in image pixels: centre, side and angle (radians,
counter-clockwise as seen on screen, i.e. the hand's "up" direction rotated by
`angle` from the image's up). The crop model always sees an upright hand, so the
crop's affine map undoes the rotation. All functions are pure and batched where
it pays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Roi:
    cx: float
    cy: float
    size: float  # side of the square, pixels
    angle: float = 0.0  # radians

    def as_array(self) -> np.ndarray:
        return np.array([self.cx, self.cy, self.size, self.angle], dtype=np.float64)

    def corners(self) -> np.ndarray:
        """[4, 2] corners (top-left, top-right, bottom-right, bottom-left of the crop)."""
        half = self.size / 2
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        c, s = math.cos(self.angle), math.sin(self.angle)
        # Screen coordinates have y down: a counter-clockwise on-screen rotation by
        # `angle` maps (x, y) -> (x c + y s, -x s + y c).
        rot = np.array([[c, s], [-s, c]])
        return local @ rot.T + [self.cx, self.cy]

    def bounding_xyxy(self) -> np.ndarray:
        pts = self.corners()
        return np.concatenate([pts.min(0), pts.max(0)])


def roi_from_box(xyxy: np.ndarray, expand_ratio: float = 0.3, angle: float = 0.0) -> Roi:
    """Square ROI around a box: the longer side grown by `expand_ratio` (0.3 = +30%)."""
    x1, y1, x2, y2 = [float(v) for v in xyxy]
    side = max(x2 - x1, y2 - y1) * (1.0 + expand_ratio)
    return Roi((x1 + x2) / 2, (y1 + y2) / 2, max(side, 1.0), angle)


def hand_angle(wrist: np.ndarray, middle_mcp: np.ndarray) -> float:
    """Rotation that makes the wrist -> middle-finger-base direction point up.

    0 when the finger base is straight above the wrist; positive when the hand
    leans left on screen (counter-clockwise), as MediaPipe computes it.
    """
    dx = float(middle_mcp[0] - wrist[0])
    dy = float(middle_mcp[1] - wrist[1])
    return math.atan2(-dx, -dy)


def roi_from_keypoints(keypoints: np.ndarray, expand_ratio: float = 0.3, rotate: bool = True,
                       min_visibility: float = 0.0) -> Roi:
    """ROI for the next frame from a hand's keypoints ([21, 2+] pixels), MediaPipe-style:
    rotated so the hand is upright, a square around the rotated points, expanded."""
    kp = np.asarray(keypoints, dtype=np.float64)
    pts = kp[:, :2]
    if kp.shape[1] > 2:
        keep = kp[:, 2] > min_visibility
        if keep.sum() >= 2:
            pts = pts[keep]
    angle = hand_angle(kp[0, :2], kp[9, :2]) if rotate else 0.0
    c, s = math.cos(angle), math.sin(angle)
    # Undo the rotation (inverse of the Roi.corners map), measure extents there.
    inv = np.array([[c, -s], [s, c]])
    local = pts @ inv.T
    lo, hi = local.min(0), local.max(0)
    centre_local = (lo + hi) / 2
    side = float(max(hi - lo)) * (1.0 + expand_ratio)
    centre = centre_local @ np.array([[c, s], [-s, c]]).T
    return Roi(float(centre[0]), float(centre[1]), max(side, 1.0), angle)


def crop_matrix(roi: Roi, out_size: int) -> np.ndarray:
    """[2, 3] affine map from image pixels to crop pixels (for cv2.warpAffine)."""
    src = roi.corners()[:3].astype(np.float32)
    dst = np.array([[0, 0], [out_size, 0], [out_size, out_size]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def warp_crop(image: np.ndarray, roi: Roi, out_size: int, border_value: int = 0) -> np.ndarray:
    """The upright `out_size` x `out_size` crop of `image` under `roi`."""
    m = crop_matrix(roi, out_size)
    return cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map [..., 2+] points with a [2, 3] affine; extra columns (z, v) pass through."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    out[..., :2] = pts[..., :2] @ m[:, :2].T + m[:, 2]
    return out


def image_to_crop(points: np.ndarray, roi: Roi, out_size: int) -> np.ndarray:
    return apply_affine(points, crop_matrix(roi, out_size))


def crop_to_image(points: np.ndarray, roi: Roi, out_size: int) -> np.ndarray:
    return apply_affine(points, invert_affine(crop_matrix(roi, out_size)))


def box_from_keypoints(keypoints: np.ndarray, min_visibility: float = 0.0, pad: float = 0.0) -> np.ndarray | None:
    """Axis-aligned [4] xyxy around the labelled keypoints, or None with fewer than 2."""
    kp = np.asarray(keypoints, dtype=np.float64)
    keep = kp[:, 2] > min_visibility if kp.shape[1] > 2 else np.ones(len(kp), bool)
    if keep.sum() < 2:
        return None
    lo, hi = kp[keep, :2].min(0), kp[keep, :2].max(0)
    margin = (hi - lo) * pad
    return np.concatenate([lo - margin, hi + margin])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] IoU between xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
