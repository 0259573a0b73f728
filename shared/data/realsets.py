"""Real test sets (photos of other people) and the views the stages build from them.

- `read_gesture_test_set(root)`: photos with their GESTURE hands (our classes, through the
  gesture map): HaGRID's annotation layout or a YOLO export with `names:`.
- `read_hand_boxes(root)`: every annotated hand, whatever its gesture (detector recall).
- `build_detector_view(data, test_dirs, view)`: a one-class (`hand`) YOLO dataset whose
  train split is an autolabel dataset and whose val split is the test sets' hands, so that
  Ultralytics' per-epoch validation is the recall curve on real test hands.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from shared.data.labels import list_images, read_labels
from shared.data.sources import GestureMap, default_gesture_map_path
from shared.errors import UserError
from shared.hand import FLIP_IDX, LABEL_NAMES, NUM_KEYPOINTS


@dataclass
class GestureSample:
    path: Path
    boxes: np.ndarray  # [K, 4] xyxy pixels of the gesture hands
    classes: np.ndarray  # [K] ids into GESTURES
    source: str = ""


@dataclass
class RealCrops:
    """N crops and where they came from.

    x:         [N, 3, S, S] float32 RGB in [0, 1] (the crop model's input)
    keypoints: [N, 21, 3] float64 the source landmarks in crop pixels (x, y, visibility / z)
    sources:   N image paths, one per crop
    """

    x: np.ndarray
    keypoints: np.ndarray
    sources: list[str] = field(default_factory=list)
    images_read: int = 0  # photos opened (with or without a hand)
    unreadable: list[str] = field(default_factory=list)  # files that did not decode (skipped, named)
    how: str = ""  # "labels" or "teacher"

    def __len__(self) -> int:
        return len(self.x)


def read_gesture_test_set(root: str | Path, gesture_map: str | Path | None = None,
                          review: str | Path | None = None) -> list[GestureSample]:
    """HaGRID (`annotations/<split>/<gesture>.json`) or a YOLO export (`images/`, `labels/`,
    `data.yaml` with names) -> the photos that hold at least one hand of a mapped gesture.
    `review`: a YAML of image stem -> reason; those photos (wrong labels) are left out."""
    root = Path(root)
    map_path = gesture_map or default_gesture_map_path()
    if (root / "annotations").is_dir():
        samples = _read_hagrid(root, GestureMap.load(map_path, "hagrid"))
    elif (root / "data.yaml").is_file():
        samples = _read_yolo(root, GestureMap.load(map_path, "roboflow"))
    else:
        raise UserError(f"{root}: neither HaGRID (annotations/) nor a YOLO export (data.yaml); pass a test set")
    if review:
        excluded = yaml.safe_load(Path(review).read_text()) or {}
        samples = [s for s in samples if s.path.stem not in excluded]
    return samples


def _read_hagrid(root: Path, gmap: GestureMap) -> list[GestureSample]:
    out = []
    for ann_file in sorted(root.glob("annotations/*/*.json")):
        for uuid, ann in sorted(json.loads(ann_file.read_text()).items()):
            path = root / "images" / ann_file.stem / f"{uuid}.jpg"
            boxes, classes = [], []
            for (x, y, w, h), name in zip(ann["bboxes"], ann["labels"]):
                kind, cls = gmap.lookup(name)
                if name != "no_gesture" and kind == "keep" and cls is not None:
                    boxes.append([x, y, x + w, y + h])
                    classes.append(cls)
            if boxes and path.is_file():
                out.append(GestureSample(path, np.array(boxes), np.array(classes), "hagrid"))
    return out


def _read_yolo(root: Path, gmap: GestureMap) -> list[GestureSample]:
    names = yaml.safe_load((root / "data.yaml").read_text()).get("names")
    if not names:
        raise UserError(f"{root / 'data.yaml'} has no 'names:'; the class ids cannot be read without them")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    out = []
    for path in sorted((root / "images").iterdir()):
        label = root / "labels" / f"{path.stem}.txt"
        if not label.is_file():
            continue
        boxes, classes = [], []
        for lineno, line in enumerate(label.read_text().splitlines(), 1):
            tokens = line.split()
            if len(tokens) != 5:  # a box export has 5 values a line; anything else is a malformed line
                if tokens:
                    print(f"warning: {label}:{lineno}: {len(tokens)} values, expected 5 (class xc yc w h); "
                          "line skipped", file=sys.stderr)
                continue
            kind, cls = gmap.lookup(names[int(tokens[0])])
            if kind == "keep" and cls is not None:
                xc, yc, w, h = (float(t) for t in tokens[1:5])
                boxes.append([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
                classes.append(cls)
        if boxes:
            out.append(GestureSample(path, np.array(boxes), np.array(classes), "roboflow"))
    return out


def read_hand_boxes(root: str | Path) -> list[tuple[Path, np.ndarray]]:
    """(image, [K, 4] normalised xyxy of EVERY annotated hand) for a HaGRID or YOLO test set."""
    root = Path(root)
    if (root / "annotations").is_dir():
        out = []
        for ann_file in sorted(root.glob("annotations/*/*.json")):
            for uuid, ann in sorted(json.loads(ann_file.read_text()).items()):
                path = root / "images" / ann_file.stem / f"{uuid}.jpg"
                if path.is_file():
                    out.append((path, np.array([[x, y, x + w, y + h] for x, y, w, h in ann["bboxes"]])))
        return out
    # A YOLO export: every labelled box, whatever its class.
    out = []
    for path in sorted((root / "images").iterdir()):
        label = root / "labels" / f"{path.stem}.txt"
        rows = [line.split()[1:5] for line in label.read_text().splitlines() if len(line.split()) >= 5] \
            if label.is_file() else []
        if rows:
            b = np.array(rows, np.float64)
            out.append((path, np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                                        b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)))
    return out


def _put_image(src: Path, dst: Path, resize: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if resize <= 0:
        shutil.copyfile(src, dst)
        return
    image = cv2.imread(str(src))
    h, w = image.shape[:2]
    s = resize / max(h, w)
    if s < 1:
        image = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(dst.with_suffix(".jpg")), image, [cv2.IMWRITE_JPEG_QUALITY, 85])


def build_detector_view(data: str | Path, test_dirs: list, view: str | Path, pose: bool, resize: int = 0) -> Path:
    """train = every teacher image (one class), val = the test sets' hands; with no test sets,
    the teacher's own train / val splits."""
    data, view, test_dirs = Path(data), Path(view), [Path(d) for d in test_dirs]
    if view.exists():
        shutil.rmtree(view)
    n = 0
    for split in ("train", "val", "test"):
        target = "train" if test_dirs or split == "train" else "val"
        if not (data / split / "images").is_dir():
            continue
        for image in list_images(data / split / "images"):
            labels, _ = read_labels(data / split / "labels" / f"{image.stem}.txt", num_classes=len(LABEL_NAMES))
            _put_image(image, view / target / "images" / f"{image.stem}.jpg", resize)
            lines = []
            for lb in labels:
                line = "0 " + " ".join(f"{v:.6f}" for v in lb.box)
                if pose:
                    line += " " + " ".join(f"{x:.6f} {y:.6f} {int(v)}" for x, y, v in lb.keypoints)
                lines.append(line)
            (view / target / "labels").mkdir(parents=True, exist_ok=True)
            (view / target / "labels" / f"{image.stem}.txt").write_text("\n".join(lines) + "\n")
            n += 1
    for root in test_dirs:
        put_test_set(root, view / "val", pose, resize)
    info = {"path": str(view.resolve()), "train": "train/images", "val": "val/images", "names": {0: "hand"}}
    if pose:
        info.update(kpt_shape=[NUM_KEYPOINTS, 3], flip_idx=list(FLIP_IDX))
    (view / "data.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    return view / "data.yaml"


def put_test_set(root: str | Path, split: str | Path, pose: bool = False, resize: int = 0) -> Path:
    """The annotated hands of a test set (`read_hand_boxes`) as one-class YOLO files under
    `split`/images and `split`/labels, images named `<set>_<stem>`; returns `split`."""
    root, split = Path(root), Path(split)
    zeros = " ".join(["0 0 0"] * NUM_KEYPOINTS)
    (split / "labels").mkdir(parents=True, exist_ok=True)
    for path, boxes in read_hand_boxes(root):
        stem = f"{root.name}_{path.stem}"
        _put_image(path, split / "images" / f"{stem}.jpg", resize)
        b = np.clip(boxes, 0, 1)
        lines = [f"0 {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
                 + (" " + zeros if pose else "") for x1, y1, x2, y2 in b]
        (split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return split
