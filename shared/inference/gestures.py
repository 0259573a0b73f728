"""Gesture from 21 landmarks: a small MLP on normalised hand shape, plus the 2_hands pair rule.

MediaPipe's own Gesture Recognizer classifies the landmarks, not the pixels; so do we. The
landmarks stay MediaPipe's exactly (the crop network is untouched) and the classifier is a
few thousand weights that run in NumPy, identically in-process, in the Triton venv and on
any machine.

    clf = LandmarkGestureClassifier.load()               # the shipped weights (shared/weights/)
    gesture, score = clf.predict(keypoints_xy)           # [N, 21, 2] pixels -> [N] ids, [N] scores

Features (`landmark_features`): the 21 points in the hand's own frame: wrist at the origin,
wrist -> middle knuckle pointing up, that distance = 1; so position, size and in-plane
rotation do not matter, only shape. Mirror images are made equal by training on both (the
classifier needs no handedness, which is often wrong on a fist). Plus the distances of the
five fingertips to the wrist and of the four other tips to the thumb tip (pinch vs ok vs
fist live there).

An optional class `other` (hands showing gestures that are none of ours: call, like, peace,
...) makes such hands `unknown` instead of the nearest of our classes.

`2_hands` is not a shape of one hand but two hands held together: `apply_two_hands` gives
both hands of a pair whose boxes touch that class (see `TwoHandsRule`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import UserError
from shared.hand import FINGERTIPS, GESTURE_TO_ID, GESTURE_UNKNOWN, GESTURES, NUM_KEYPOINTS

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "gesture_landmarks"
WEIGHTS_FILE = "weights.npz"
CARD_FILE = "card.json"
OTHER = "other"  # a class of the classifier: a hand showing a gesture that is none of ours
NUM_FEATURES = NUM_KEYPOINTS * 2 + len(FINGERTIPS) + len(FINGERTIPS) - 1


def landmark_features(xy: np.ndarray) -> np.ndarray:
    """[N, 21, 2+] landmarks (any pixel frame) -> [N, NUM_FEATURES] float32 shape features."""
    xy = np.asarray(xy, dtype=np.float64)[..., :2]
    if xy.ndim == 2:
        xy = xy[None]
    rel = xy - xy[:, :1]  # [N, 21, 2] wrist at the origin
    axis = rel[:, 9]  # wrist -> middle knuckle
    scale = np.maximum(np.linalg.norm(axis, axis=-1), 1e-6)  # [N]
    # Rotate so that axis points up (image y grows downwards: up is (0, -1)).
    c, s = -axis[:, 1] / scale, -axis[:, 0] / scale  # cos, sin of the rotation taking axis to (0, -1)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # [N, 2, 2]
    local = np.einsum("nij,nkj->nki", rot, rel) / scale[:, None, None]  # [N, 21, 2]
    tips = local[:, list(FINGERTIPS)]  # [N, 5, 2]
    to_wrist = np.linalg.norm(tips, axis=-1)  # [N, 5]
    to_thumb = np.linalg.norm(tips[:, 1:] - tips[:, :1], axis=-1)  # [N, 4]
    return np.concatenate([local.reshape(len(local), NUM_KEYPOINTS * 2), to_wrist, to_thumb], axis=1).astype(np.float32)


def mirror_features(features: np.ndarray) -> np.ndarray:
    """The features of the mirror-image hand (x of every local point negated)."""
    out = features.copy()
    out[:, 0:NUM_KEYPOINTS * 2:2] *= -1
    return out


@dataclass
class LandmarkGestureClassifier:
    """An MLP (ReLU hidden layers, softmax out) over `landmark_features`, standardised inputs.

    `classes` are names from `shared.hand.GESTURES` (a subset: `2_hands` is the pair rule's).
    """

    layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out]) per layer
    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    classes: tuple[str, ...]
    threshold: float = 0.5
    card: dict | None = None

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in GESTURE_TO_ID and c != OTHER]
        if unknown:
            raise UserError(f"gesture classifier classes {unknown} are not gestures of ours ({', '.join(GESTURES)}) "
                            f"nor '{OTHER}'")
        # `other` (a hand showing some gesture that is none of ours) answers "unknown".
        self._ids = np.array([GESTURE_TO_ID.get(c, GESTURE_UNKNOWN) for c in self.classes], np.int64)
        self._ours = self._ids >= 0

    # ------------------------------------------------------------------ inference
    def probabilities(self, xy: np.ndarray) -> np.ndarray:
        """[N, 21, 2+] landmarks -> [N, len(classes)] probabilities."""
        h = (landmark_features(xy) - self.mean) / self.std
        return self.probabilities_from_features(h, standardised=True)

    def probabilities_from_features(self, features: np.ndarray, standardised: bool = False) -> np.ndarray:
        h = features if standardised else (features - self.mean) / self.std
        h = h.astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        h = h - h.max(-1, keepdims=True)
        e = np.exp(h)
        return e / e.sum(-1, keepdims=True)

    def to_gestures(self, probs: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities -> (gesture ids into GESTURES, -2 = unknown below threshold; scores)."""
        threshold = self.threshold if threshold is None else threshold
        if len(probs) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        ours = probs[:, self._ours]
        best = ours.argmax(-1)
        score = ours.max(-1).astype(np.float32)  # the best of OUR gestures, also when `other` wins
        gesture = np.where(score >= threshold, self._ids[self._ours][best], GESTURE_UNKNOWN).astype(np.int64)
        return gesture, score

    def predict(self, xy: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[N, 21, 2+] landmarks -> (gesture ids, scores)."""
        if len(xy) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self.to_gestures(self.probabilities(xy), threshold)

    def full_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """[N, len(classes)] -> [N, len(GESTURES)] (classes the model lacks get 0)."""
        out = np.zeros((len(probs), len(GESTURES)), np.float32)
        out[:, self._ids[self._ours]] = probs[:, self._ours]  # `other` keeps its mass out: the best of ours is low
        return out

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, card: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean, "std": self.std}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez(folder / WEIGHTS_FILE, **arrays)
        meta = dict(card or self.card or {})
        meta.update({"classes": list(self.classes), "threshold": self.threshold, "layers": len(self.layers),
                     "features": "shared.inference.gestures.landmark_features"})
        (folder / CARD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path | None = None) -> LandmarkGestureClassifier:
        """Load from a folder holding weights.npz + card.json (default: the shipped weights)."""
        folder = Path(folder) if folder else WEIGHTS_DIR
        weights, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
        if not weights.is_file() or not card_path.is_file():
            raise UserError(f"gesture model folder {folder} lacks {WEIGHTS_FILE} / {CARD_FILE}; pass a folder "
                            "written by `python -m components.gesture_model` (or 'none' for no gestures)")
        try:
            card = json.loads(card_path.read_text())
            data = np.load(weights)
            layers = [(data[f"w{i}"], data[f"b{i}"]) for i in range(int(card["layers"]))]
            mean, std = data["mean"], data["std"]
        except (KeyError, ValueError, OSError) as exc:
            raise UserError(f"gesture model {folder} is unreadable ({exc}); rebuild it with "
                            "`python -m components.gesture_model`") from exc
        if mean.shape != (NUM_FEATURES,):
            raise UserError(f"gesture model {folder} expects {mean.shape} features, ours are {NUM_FEATURES}: "
                            "it was built by another version; rebuild it")
        return cls(layers, mean, std, tuple(card["classes"]), float(card.get("threshold", 0.5)), card)


def load_gesture_model(spec: str, threshold: float | None = None) -> LandmarkGestureClassifier | None:
    """'default' -> the shipped weights; 'none'/'' -> None; anything else -> that folder."""
    if spec in ("", "none"):
        return None
    clf = LandmarkGestureClassifier.load(None if spec == "default" else spec)
    if threshold is not None:
        clf.threshold = threshold
    return clf


def landmark_gesture_reader(spec: str = "default") -> Callable[[np.ndarray], np.ndarray] | None:
    """landmarks [N, 21, 2] -> gesture ids [N] by the landmark gesture model `spec` (how the int8
    export reads the gestures of MediaPipe's weights, which have no gesture head); None for 'none'."""
    clf = load_gesture_model(spec)
    return None if clf is None else (lambda xy: clf.predict(xy)[0])


# --------------------------------------------------------------------------- 2_hands


@dataclass
class TwoHandsRule:
    """Two hands whose boxes touch form one `2_hands` gesture.

    Our `2_hands` class is two hands held side by side as one sign. A pair counts when the
    gap between their boxes (0 when they overlap) is at most `max_gap` x the smaller box's
    side and the boxes are of similar size (ratio of sides >= `min_size_ratio`): a relaxed
    hand hanging by the body is neither touching the raised one nor usually of its size.
    """

    max_gap: float = 0.1
    min_size_ratio: float = 0.6

    def pairs(self, xyxy: np.ndarray) -> list[tuple[int, int]]:
        n = len(xyxy)
        side = np.sqrt(np.maximum((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]), 1e-6))
        used: set[int] = set()
        out = []
        for i in range(n):
            for j in range(i + 1, n):
                if i in used or j in used:
                    continue
                gap_x = max(xyxy[i, 0], xyxy[j, 0]) - min(xyxy[i, 2], xyxy[j, 2])
                gap_y = max(xyxy[i, 1], xyxy[j, 1]) - min(xyxy[i, 3], xyxy[j, 3])
                gap = max(gap_x, gap_y, 0.0)
                small, big = sorted((side[i], side[j]))
                if gap <= self.max_gap * small and small / big >= self.min_size_ratio:
                    out.append((i, j))
                    used.update((i, j))
        return out

    def apply_probs(self, xyxy: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """[N, len(GESTURES)] probabilities -> the same with both hands of every pair one-hot
        `2_hands`, at the weaker hand's confidence."""
        if len(probs) < 2:
            return probs
        out = probs.copy()
        for i, j in self.pairs(np.asarray(xyxy, np.float64)):
            conf = min(float(probs[i].max()), float(probs[j].max()))
            out[[i, j]] = 0.0
            out[[i, j], GESTURE_TO_ID["2_hands"]] = conf
        return out


__all__ = ["LandmarkGestureClassifier", "NUM_FEATURES", "TwoHandsRule", "WEIGHTS_DIR", "landmark_features",
           "landmark_gesture_reader", "load_gesture_model", "mirror_features"]
