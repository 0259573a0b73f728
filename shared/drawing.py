"""Drawing hands on frames: `Annotator(...).annotate(image, results) -> new image`.

Boxes, track ids, gesture and handedness labels, and the skeleton of `shared.hand.SKELETON`.
Works on whatever channel order the image has (colours are given as BGR, OpenCV's order,
which is what the CLI writes); the input image is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from shared.hand import FINGERS, GESTURES, HANDEDNESS, SKELETON

# `results` below is a `shared.results.HandResults`, which draws itself through this module
# (`HandResults.plot`); typed as Any so that this module does not import it back.
HandResults = Any

# Distinct colours for track ids (BGR); untracked hands use the first one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (211, 188, 0), (209, 115, 0), (255, 149, 50), (255, 56, 132),
    (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255),
)
# One colour per finger for the skeleton (thumb .. pinky), the palm in grey.
FINGER_COLOURS: dict[str, tuple[int, int, int]] = {
    "thumb": (0, 215, 255), "index": (0, 200, 0), "middle": (255, 160, 0), "ring": (200, 0, 200),
    "pinky": (0, 0, 230),
}
PALM_COLOUR = (180, 180, 180)


def _bone_colour(a: int, b: int) -> tuple[int, int, int]:
    for finger, joints in FINGERS.items():
        if b in joints and (a in joints or a == 0):
            return FINGER_COLOURS[finger]
    return PALM_COLOUR


@dataclass
class Annotator:
    draw_boxes: bool = True
    draw_labels: bool = True
    draw_skeleton: bool = True
    line_width: int = 0  # 0 = from the image size
    min_visibility: float = 0.0  # keypoints with visibility <= this are not drawn

    def annotate(self, image: np.ndarray, results: HandResults) -> np.ndarray:
        """A copy of `image` [H, W, 3] uint8 with `results` drawn on it."""
        out = np.ascontiguousarray(image).copy()
        lw = self.line_width or max(1, round(sum(out.shape[:2]) / 2 / 320))
        for i in range(len(results)):
            tid = int(results.track_id[i])
            colour = PALETTE[tid % len(PALETTE)] if tid >= 0 else PALETTE[0]
            x1, y1, x2, y2 = (int(round(float(v))) for v in results.xyxy[i])
            if self.draw_skeleton:
                self._skeleton(out, results.keypoints[i], lw)
            if self.draw_boxes:
                cv2.rectangle(out, (x1, y1), (x2, y2), colour, lw, cv2.LINE_AA)
            if self.draw_labels:
                self._label(out, self._text(results, i), (x1, y1), colour, lw)
        return out

    @staticmethod
    def _text(results: HandResults, i: int) -> str:
        parts = []
        tid = int(results.track_id[i])
        if tid >= 0:
            parts.append(f"#{tid}")
        g = int(results.gesture[i])
        if 0 <= g < len(GESTURES):
            parts.append(f"{GESTURES[g]} {float(results.gesture_score[i]):.2f}")
        h = int(results.handedness[i])
        if h in (0, 1):
            parts.append(HANDEDNESS[h][0].upper())
        if not parts:
            parts.append(f"{float(results.score[i]):.2f}")
        return " ".join(parts)

    def _skeleton(self, image: np.ndarray, keypoints: np.ndarray, lw: int) -> None:
        pts = np.round(keypoints[:, :2]).astype(np.int32)
        visible = keypoints[:, 2] > self.min_visibility
        for a, b in SKELETON:
            if visible[a] and visible[b]:
                cv2.line(image, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), _bone_colour(a, b), lw,
                         cv2.LINE_AA)
        radius = max(2, lw + 1)
        for j in np.flatnonzero(visible):
            cv2.circle(image, tuple(int(v) for v in pts[j]), radius, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(image, tuple(int(v) for v in pts[j]), radius, (40, 40, 40), 1, cv2.LINE_AA)

    @staticmethod
    def _label(image: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, int, int], lw: int) -> None:
        scale = max(0.4, lw / 3)
        thickness = max(1, lw // 2)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x, y = corner
        y = max(y, th + base + 2)  # keep the label inside the image at the top edge
        cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 2, y), colour, -1)
        cv2.putText(image, text, (x + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
