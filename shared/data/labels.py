"""YOLO-pose label files: `<cls> <xc> <yc> <w> <h>` + 21 x `<x> <y> <v>`, normalised.

Plain YOLO detection lines (5 values) are read too; their keypoints are absent
(all zeros, v=0). Every problem is reported as `LabelIssue(file, line, reason)`
so callers can reject one item and keep the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.hand import GESTURES, NUM_KEYPOINTS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Tolerance on [0, 1]: exporters round, and a box touching the border can read 1.0000001.
COORD_EPS = 1e-3


@dataclass
class HandLabel:
    """One labelled hand, normalised to [0, 1] image coordinates."""

    cls: int
    box: np.ndarray  # [4] xc, yc, w, h
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((NUM_KEYPOINTS, 3), np.float32))  # [21, 3]

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)

    @property
    def has_keypoints(self) -> bool:
        return bool((self.keypoints[:, 2] > 0).any())

    def xyxy(self, width: float = 1.0, height: float = 1.0) -> np.ndarray:
        xc, yc, w, h = self.box
        return np.array([(xc - w / 2) * width, (yc - h / 2) * height,
                         (xc + w / 2) * width, (yc + h / 2) * height])

    def keypoints_px(self, width: float, height: float) -> np.ndarray:
        kp = self.keypoints.copy()
        kp[:, 0] *= width
        kp[:, 1] *= height
        return kp

    @classmethod
    def from_xyxy(cls, cls_id: int, xyxy: np.ndarray, width: float, height: float,
                  keypoints_px: np.ndarray | None = None) -> HandLabel:
        x1, y1, x2, y2 = [float(v) for v in xyxy]
        box = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        kp = np.zeros((NUM_KEYPOINTS, 3))
        if keypoints_px is not None:
            kp = np.asarray(keypoints_px, dtype=np.float64).copy()
            kp[:, 0] /= width
            kp[:, 1] /= height
            kp[kp[:, 2] <= 0, :2] = 0.0
        return cls(cls_id, np.array(box), kp)


@dataclass
class LabelIssue:
    path: str
    line: int  # 1-based; 0 = the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


def format_line(label: HandLabel) -> str:
    """One YOLO-pose line; 6 decimals is sub-pixel for images up to 10^5 px."""
    parts = [str(int(label.cls))] + [f"{v:.6f}" for v in label.box]
    for x, y, v in label.keypoints:
        parts += [f"{x:.6f}", f"{y:.6f}", str(int(round(v)))]
    return " ".join(parts)


def parse_line(text: str, path: str, lineno: int, num_classes: int = len(GESTURES),
               notes: list[str] | None = None) -> HandLabel | LabelIssue:
    """One label line -> a HandLabel, or the LabelIssue that rejects it.

    A box that runs past the image edge is clipped to the image, and `notes` (when given)
    gets a line saying so; a box wholly outside the image is rejected."""
    tokens = text.split()
    expected = 5 + NUM_KEYPOINTS * 3
    if len(tokens) not in (5, expected):
        return LabelIssue(path, lineno, f"wrong token count {len(tokens)}: expected 5 (box) or "
                                        f"{expected} (box + 21 x y v)")
    try:
        cls_f = float(tokens[0])
        values = [float(t) for t in tokens[1:]]
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        return LabelIssue(path, lineno, f"non-numeric value {bad!r}")
    if not np.isfinite(values).all():
        return LabelIssue(path, lineno, "non-finite value (nan/inf)")
    if cls_f != int(cls_f) or not 0 <= int(cls_f) < num_classes:
        return LabelIssue(path, lineno, f"class id {tokens[0]} outside the {num_classes} names (0..{num_classes - 1})")
    box = np.array(values[:4])
    if (box < -COORD_EPS).any() or (box > 1 + COORD_EPS).any():
        return LabelIssue(path, lineno, f"box coordinates out of range [0, 1]: {tokens[1:5]}")
    if box[2] <= 0 or box[3] <= 0:
        return LabelIssue(path, lineno, f"box has zero or negative size: w={tokens[3]} h={tokens[4]}")
    lo, hi = box[:2] - box[2:] / 2, box[:2] + box[2:] / 2  # x1 y1, x2 y2
    if (lo < -COORD_EPS).any() or (hi > 1 + COORD_EPS).any():
        lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        if (hi - lo <= 0).any():
            return LabelIssue(path, lineno, f"box lies outside the image: {tokens[1:5]}")
        if notes is not None:
            notes.append(f"{path}:{lineno}: box runs past the image edge ({' '.join(tokens[1:5])}); clipped to the "
                         f"image")
        box = np.concatenate([(lo + hi) / 2, hi - lo])
    kp = np.zeros((NUM_KEYPOINTS, 3))
    if len(tokens) == expected:
        kp = np.array(values[4:]).reshape(NUM_KEYPOINTS, 3)
        if not np.isin(kp[:, 2], (0, 1, 2)).all():
            return LabelIssue(path, lineno, "keypoint visibility must be 0, 1 or 2")
        labelled = kp[:, 2] > 0
        xy = kp[labelled, :2]
        if (xy < -COORD_EPS).any() or (xy > 1 + COORD_EPS).any():
            k = int(np.nonzero(labelled)[0][np.nonzero(((xy < -COORD_EPS) | (xy > 1 + COORD_EPS)).any(1))[0][0]])
            return LabelIssue(path, lineno, f"keypoint {k} coordinates out of range [0, 1]")
    return HandLabel(int(cls_f), np.clip(box, 0, 1), kp)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_labels(path: str | Path, num_classes: int = len(GESTURES),
                notes: list[str] | None = None) -> tuple[list[HandLabel], list[LabelIssue]]:
    """All hands of one label file, and the issues of its bad lines (blank lines are fine);
    `notes` gets a line per box clipped to the image."""
    path = Path(path)
    labels: list[HandLabel] = []
    issues: list[LabelIssue] = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return [], [LabelIssue(str(path), 0, "not a text file")]
    except OSError as exc:
        return [], [LabelIssue(str(path), 0, f"cannot read the label file ({exc.strerror or exc})")]
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = parse_line(line, str(path), lineno, num_classes, notes)
        (issues if isinstance(parsed, LabelIssue) else labels).append(parsed)
    return labels, issues


def write_labels(path: str | Path, labels: list[HandLabel]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(format_line(lb) + "\n" for lb in labels))


def labels_to_arrays(labels: list[HandLabel]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cls [N], boxes xc,yc,w,h [N,4], keypoints [N,21,3]) in normalised units."""
    if not labels:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 3))
    return (np.array([lb.cls for lb in labels], np.int64), np.stack([lb.box for lb in labels]),
            np.stack([lb.keypoints for lb in labels]))


def list_images(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_path_for(image: Path, images_dir: Path, labels_dir: Path) -> Path:
    return (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")
