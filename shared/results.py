"""`HandResults`: the one result type for a frame.

Detector, crop model, tracker, drawing, JSON output and the Triton client all
speak it. Arrays only, validated on construction, filterable with a mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.drawing import Annotator
from shared.hand import GESTURE_NONE, GESTURE_UNKNOWN, GESTURES, HANDEDNESS, NUM_KEYPOINTS


def _empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class HandResults:
    """Hands found in one frame, all coordinates in pixels of the original image.

    xyxy:          [N, 4] float32 box corners
    score:         [N] float32 detection / presence score
    keypoints:     [N, 21, 3] float32 x, y pixels + a confidence: from the pipeline, the hand's
                   presence repeated (MediaPipe's landmark network gives no per-keypoint
                   visibility); from labels, the YOLO-pose visibility 0/1/2
    gesture:       [N] int64 index into `shared.hand.GESTURES` (-1 = no gesture model ran,
                   -2 = the model's best score was below its threshold: "unknown")
    gesture_score: [N] float32
    handedness:    [N] int64 0 left, 1 right, -1 unknown
    track_id:      [N] int64 (-1 = not tracked)
    """

    xyxy: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float32))
    score: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    gesture: np.ndarray | None = None
    gesture_score: np.ndarray | None = None
    handedness: np.ndarray | None = None
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.score = self._fill(self.score, (n,), np.float32, 1.0)
        self.keypoints = self._fill(self.keypoints, (n, NUM_KEYPOINTS, 3), np.float32, 0.0)
        self.gesture = self._fill(self.gesture, (n,), np.int64, -1)
        self.gesture_score = self._fill(self.gesture_score, (n,), np.float32, 0.0)
        self.handedness = self._fill(self.handedness, (n,), np.int64, -1)
        self.track_id = self._fill(self.track_id, (n,), np.int64, -1)

    @staticmethod
    def _fill(value: Any, shape: tuple[int, ...], dtype: Any, default: float) -> np.ndarray:
        if value is None:
            return np.full(shape, default, dtype=dtype)
        arr = np.asarray(value, dtype=dtype)
        if arr.shape != shape:
            raise ValueError(f"HandResults: expected shape {shape}, got {arr.shape}")
        return arr

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> HandResults:
        """Select hands with a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return HandResults(
            xyxy=self.xyxy[index],
            score=self.score[index],
            keypoints=self.keypoints[index],
            gesture=self.gesture[index],
            gesture_score=self.gesture_score[index],
            handedness=self.handedness[index],
            track_id=self.track_id[index],
        )

    @classmethod
    def empty(cls) -> HandResults:
        return cls()

    @classmethod
    def concatenate(cls, parts: list[HandResults]) -> HandResults:
        if not parts:
            return cls()
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            keypoints=np.concatenate([p.keypoints for p in parts]),
            gesture=np.concatenate([p.gesture for p in parts]),
            gesture_score=np.concatenate([p.gesture_score for p in parts]),
            handedness=np.concatenate([p.handedness for p in parts]),
            track_id=np.concatenate([p.track_id for p in parts]),
        )

    def __iter__(self) -> Iterator[HandResults]:
        """One `HandResults` per hand: `for hand in hands: hand.xyxy[0], hand.gesture[0], ...`."""
        return (self[i] for i in range(len(self)))

    def plot(self, image: np.ndarray, **style: Any) -> np.ndarray:
        """A copy of `image` (the frame these hands were found in) with boxes, skeletons, ids, gestures and
        handedness drawn on it; `style`: `Annotator` options (draw_boxes, draw_labels, line_width, ...)."""
        return Annotator(**style).annotate(image, self)

    def save(self, path: str | Path, image: np.ndarray | None = None, rgb: bool = True) -> Path:
        """`*.json`: the hands as JSON (`to_json`); an image suffix (`.jpg`, `.png`, ...): `plot(image)`
        written there (`image` RGB unless `rgb=False`). The folder is created; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_json(), indent=1))
            return path
        if image is None:
            raise ValueError(f"{path}: drawing the hands needs the image they were found in (save(path, image))")
        drawn = self.plot(image)
        if not cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR) if rgb else drawn):
            raise ValueError(f"{path}: OpenCV cannot write this file type; use .jpg, .png or .json")
        return path

    def to_json(self) -> list[dict[str, Any]]:
        """One dict per hand, the `hands` list of a `results.jsonl` line."""
        hands = []
        for i in range(len(self)):
            g = int(self.gesture[i])
            h = int(self.handedness[i])
            hands.append(
                {
                    "xyxy": [round(float(v), 2) for v in self.xyxy[i]],
                    "score": round(float(self.score[i]), 4),
                    "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(v), 3)]
                                  for x, y, v in self.keypoints[i]],
                    "gesture": gesture_name(g),
                    "gesture_score": round(float(self.gesture_score[i]), 4),
                    "handedness": HANDEDNESS[h] if h in (0, 1) else None,
                    "track_id": int(self.track_id[i]),
                }
            )
        return hands

    @classmethod
    def from_json(cls, hands: list[dict[str, Any]]) -> HandResults:
        if not hands:
            return cls()
        return cls(
            xyxy=[h["xyxy"] for h in hands],
            score=[h["score"] for h in hands],
            keypoints=[h["keypoints"] for h in hands],
            gesture=[gesture_id(h.get("gesture")) for h in hands],
            gesture_score=[h.get("gesture_score", 0.0) for h in hands],
            handedness=[HANDEDNESS.index(h["handedness"]) if h.get("handedness") in HANDEDNESS else -1
                        for h in hands],
            track_id=[h.get("track_id", -1) for h in hands],
        )


def gesture_name(gesture: int) -> str | None:
    """A result's gesture id as JSON: the class name, "unknown" (low confidence) or None (no model)."""
    if 0 <= gesture < len(GESTURES):
        return GESTURES[gesture]
    return "unknown" if gesture == GESTURE_UNKNOWN else None


def gesture_id(name: str | None) -> int:
    """The inverse of `gesture_name`."""
    if name in GESTURES:
        return GESTURES.index(name)
    return GESTURE_UNKNOWN if name == "unknown" else GESTURE_NONE
