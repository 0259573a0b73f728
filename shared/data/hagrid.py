"""HaGRID reader: the official `annotations/<split>/<gesture>.json` + `images/<gesture>/<uuid>.jpg` layout.

Each annotation maps an image uuid to `bboxes` (normalised top-left x, y, w, h),
`labels` (a gesture name, or `no_gesture` for an idle second hand), `user_id`,
and, in the releases that have them, `landmarks` (per hand, a list of [x, y]
normalised points, empty when missing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.data.labels import IMAGE_SUFFIXES, LabelIssue
from shared.errors import UserError


@dataclass
class HagridHand:
    bbox: np.ndarray  # [4] normalised x, y (top-left), w, h as in HaGRID
    label: str  # gesture name or "no_gesture"
    landmarks: np.ndarray | None = None  # [21, 2] normalised, when the annotation has them


@dataclass
class HagridImage:
    uuid: str
    image_path: Path
    gesture: str  # the annotation file's gesture (the image folder)
    split: str  # the annotation folder: train / val / test
    user_id: str | None
    hands: list[HagridHand] = field(default_factory=list)


def _find_image(root: Path, gesture: str, uuid: str) -> Path | None:
    folder = root / "images" / gesture
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{uuid}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _parse_landmarks(raw: object) -> np.ndarray | None:
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (21, 2) or not np.isfinite(arr).all():
        return None
    return arr


def read_hagrid(root: str | Path) -> tuple[list[HagridImage], list[LabelIssue]]:
    """All annotated images under `root`, and one issue per bad annotation or missing image."""
    root = Path(root)
    ann_root = root / "annotations"
    if not ann_root.is_dir():
        raise UserError(f"{root}: no 'annotations/' folder; expected the HaGRID layout "
                        "annotations/<split>/<gesture>.json + images/<gesture>/<uuid>.jpg")
    files = sorted(ann_root.glob("*/*.json")) or sorted(ann_root.glob("*.json"))
    if not files:
        raise UserError(f"{ann_root}: no annotation .json files found")
    images: list[HagridImage] = []
    issues: list[LabelIssue] = []
    for ann_file in files:
        split = ann_file.parent.name if ann_file.parent != ann_root else "train"
        gesture = ann_file.stem
        try:
            data = json.loads(ann_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            issues.append(LabelIssue(str(ann_file), 0, f"not valid JSON ({exc})"))
            continue
        if not isinstance(data, dict):
            issues.append(LabelIssue(str(ann_file), 0, "expected a mapping uuid -> annotation"))
            continue
        for uuid, ann in data.items():
            where = f"{ann_file}[{uuid}]"
            bboxes = ann.get("bboxes") if isinstance(ann, dict) else None
            labels = ann.get("labels") if isinstance(ann, dict) else None
            if not isinstance(bboxes, list) or not isinstance(labels, list) or len(bboxes) != len(labels):
                issues.append(LabelIssue(where, 0, "annotation needs 'bboxes' and 'labels' lists of equal length"))
                continue
            image_path = _find_image(root, gesture, uuid)
            if image_path is None:
                issues.append(LabelIssue(where, 0, f"image missing: images/{gesture}/{uuid}.jpg"))
                continue
            raw_landmarks = ann.get("landmarks") or [None] * len(bboxes)
            hands: list[HagridHand] = []
            bad = None
            for box, label, lms in zip(bboxes, labels, list(raw_landmarks) + [None] * len(bboxes)):
                try:
                    b = np.asarray(box, dtype=np.float64).reshape(4)
                except (TypeError, ValueError):
                    bad = f"bbox {box!r} is not 4 numbers"
                    break
                if not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0 or (b < -1e-3).any() or \
                        b[0] + b[2] > 1 + 1e-3 or b[1] + b[3] > 1 + 1e-3:
                    bad = f"bbox {list(b)} out of range (normalised top-left x, y, w, h expected)"
                    break
                hands.append(HagridHand(b, str(label), _parse_landmarks(lms) if lms else None))
            if bad:
                issues.append(LabelIssue(where, 0, bad))
                continue
            images.append(HagridImage(uuid, image_path, gesture, split, ann.get("user_id"), hands))
    return images, issues
