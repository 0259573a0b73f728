"""Hand-crop datasets, cut on the fly from a YOLO-pose dataset (no second copy on disk).

Each item is one labelled hand: the image is read, a square ROI is placed around
the hand and warped to an `img_size` crop, and the keypoints are mapped into
crop pixels with the same affine map, so image and targets cannot disagree.

Two ROI conventions, both from `shared.geometry`:
- landmarks (`rotate=True`): the hand is made upright from its keypoints
  (wrist -> middle-finger base points up), as the crop model sees it at
  inference; hands with a box only fall back to an axis-aligned box ROI.
- classifier (`rotate=False`, `use_box=True`): the label's box, expanded by
  `expand_ratio` and made square, as the seed's classifier and relabeler cut it.

Training augmentation happens in two places, both keypoint-consistent:
1. ROI jitter (rotation, scale, shift around the ideal ROI) *before* the warp,
   so the model learns to cope with the imperfect ROIs a detector or the
   previous frame gives at inference, without black borders from re-warping;
2. albumentations in crop space (flip, colour, blur, noise, occluding holes)
   with the keypoints passed through `KeypointParams`, order preserved.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.images import BadImage, check_image
from shared.data.images import read_image as read_image_strict
from shared.data.labels import HandLabel, LabelIssue, label_path_for, list_images, read_labels
from shared.errors import UserError
from shared.geometry import Roi, box_from_keypoints, image_to_crop, roi_from_box, roi_from_keypoints, warp_crop
from shared.hand import GESTURES, NUM_KEYPOINTS


@dataclass(frozen=True)
class HandRecord:
    """Where one labelled hand lives: image, label file and 1-based line."""

    image: Path
    label_file: Path
    line: int
    label: HandLabel


@dataclass
class CropAugment:
    """Random augmentation of a hand crop; all magnitudes are the max of a uniform draw."""

    rotation_deg: float = 20.0  # ROI angle jitter
    scale: float = 0.15  # ROI side x U(1 - s, 1 + s)
    shift: float = 0.08  # ROI centre moved by U(-s, s) x side, on each axis
    hflip: float = 0.5  # probability; keypoint order is unchanged by a mirror (FLIP_IDX is identity)
    color: float = 0.8  # probability of brightness/contrast/hue jitter
    blur: float = 0.2
    noise: float = 0.2
    occlusion: float = 0.2  # probability of 1-2 random holes (simulates occluders)


def _build_pixel_augment(aug: CropAugment, hflip: bool = True) -> Any:
    """albumentations pipeline in crop space; keypoints ride along in order (no removal)."""
    # albumentations checks PyPI for a newer version on import unless told not to: no network here.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A  # scoped: import costs ~1 s and only training needs it

    return A.Compose(
        [
            A.HorizontalFlip(p=aug.hflip if hflip else 0.0),
            A.OneOf([A.RandomBrightnessContrast(0.3, 0.3, p=1.0),
                     A.HueSaturationValue(12, 25, 20, p=1.0),
                     A.RandomGamma(p=1.0)], p=aug.color),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.MotionBlur(blur_limit=(3, 7), p=1.0)], p=aug.blur),
            A.GaussNoise(std_range=(0.02, 0.08), p=aug.noise),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25),
                            fill="random_uniform", p=aug.occlusion),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


def index_hands(images_dir: str | Path, labels_dir: str | Path, require_keypoints: bool = False,
                num_classes: int = len(GESTURES), skipped: list[BadImage] | None = None,
                notes: list[str] | None = None) -> tuple[list[HandRecord], list[LabelIssue]]:
    """Every labelled hand of a YOLO-pose split, and the issues of the lines that were skipped.

    Images without a label file are backgrounds: they hold no hand and give no crop. An image
    that does not decode completely (`shared.data.images.check_image`: empty, truncated,
    corrupt) is skipped up front and added to `skipped`, so it never fails a run an epoch in;
    `notes` gets a line per box clipped to the image.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for name, d in (("images", images_dir), ("labels", labels_dir)):
        if not d.is_dir():
            raise UserError(f"{d}: {name} folder not found; pass an existing folder (YOLO layout: split/images, "
                            f"split/labels)")
    records: list[HandRecord] = []
    issues: list[LabelIssue] = []
    for image in list_images(images_dir):
        label_file = label_path_for(image, images_dir, labels_dir)
        if not label_file.is_file():
            continue
        labels, bad = read_labels(label_file, num_classes=num_classes, notes=notes)
        issues.extend(bad)
        if labels:
            reason = check_image(image)
            if reason is not None:
                if skipped is not None:
                    skipped.append(BadImage(str(image), reason))
                continue
        # Line numbers of the good labels: read_labels keeps file order and skips blanks and bad lines.
        bad_lines = {b.line for b in bad}
        lines = [i for i, text in enumerate(label_file.read_text().splitlines(), 1)
                 if text.strip() and i not in bad_lines]
        for lineno, label in zip(lines, labels):
            if require_keypoints and not label.has_keypoints:
                continue
            records.append(HandRecord(image, label_file, lineno, label))
    return records, issues


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image, or one clear error naming the file.

    The datasets run the strict check (`shared.data.images.check_image`: truncated files are
    bad files) once per file when they index it and skip what fails, so a training step only
    decodes; a file that breaks after indexing still gets a clear error here."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return read_image_strict(path)  # raises, naming the file and the reason
    return image


def hand_roi(label: HandLabel, width: int, height: int, expand_ratio: float, rotate: bool,
             use_box: bool, cover_box: bool = True) -> Roi:
    """The ideal (un-jittered) ROI of one labelled hand in image pixels.

    With keypoints: MediaPipe's landmark ROI (upright, square, `expand_ratio`
    around the keypoints). `cover_box`: when the label's box does not fit in that
    crop (a `2_hands` object: one box over both hands, keypoints of one), the ROI
    keeps its angle and grows to hold the box too, so the crop shows what the
    gesture is about. A single hand's box fits with room to spare.
    """
    if use_box or not label.has_keypoints or (label.keypoints[:, 2] > 0).sum() < 2:
        return roi_from_box(label.xyxy(width, height), expand_ratio=expand_ratio)
    kp = label.keypoints_px(width, height)
    # Rotation needs the wrist and the middle-finger base; without them keep the hand axis-aligned.
    can_rotate = rotate and kp[0, 2] > 0 and kp[9, 2] > 0
    roi = roi_from_keypoints(kp, expand_ratio=expand_ratio, rotate=can_rotate)
    if cover_box:
        box = label.xyxy(width, height)
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
        local = _to_roi_frame(corners, roi)  # [4, 2], in units of the ROI side, centred
        if np.abs(local).max() > 0.5:  # the box sticks out of the crop: it holds more than this hand
            return _grow_to_cover(roi, np.concatenate([kp[kp[:, 2] > 0, :2], corners]), expand_ratio / 2)
    return roi


def _to_roi_frame(points: np.ndarray, roi: Roi) -> np.ndarray:
    """[N, 2] image pixels -> the ROI's upright frame, centred, in units of its side."""
    c, s = math.cos(roi.angle), math.sin(roi.angle)
    inv = np.array([[c, -s], [s, c]])  # undoes Roi.corners' rotation
    return ((points - [roi.cx, roi.cy]) @ inv.T) / roi.size


def _grow_to_cover(roi: Roi, points: np.ndarray, margin: float) -> Roi:
    """Same angle, square around all `points` (+ margin), never smaller than `roi`."""
    c, s = math.cos(roi.angle), math.sin(roi.angle)
    local = points @ np.array([[c, -s], [s, c]]).T
    lo, hi = local.min(0), local.max(0)
    side = max(float((hi - lo).max()) * (1.0 + margin), roi.size)
    centre = ((lo + hi) / 2) @ np.array([[c, s], [-s, c]]).T
    return Roi(float(centre[0]), float(centre[1]), side, roi.angle)


def jitter_roi(roi: Roi, aug: CropAugment, rng: random.Random) -> Roi:
    """A randomly rotated, scaled and shifted copy of `roi` (the imperfect ROI of inference)."""
    angle = roi.angle + math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    size = roi.size * rng.uniform(1.0 - aug.scale, 1.0 + aug.scale)
    dx, dy = (rng.uniform(-aug.shift, aug.shift) * roi.size for _ in range(2))
    return Roi(roi.cx + dx, roi.cy + dy, size, angle)


class HandCropDataset(Dataset):
    """One item per labelled hand of a YOLO-pose split, cut to an `img_size` square crop.

    Item (a dict of tensors):
        image       [3, S, S] float32 RGB in [0, 1]
        keypoints   [21, 2] float32 crop pixels (zeros where not labelled)
        visibility  [21] float32 0 absent, 1 occluded, 2 visible
        gesture     [] int64 class id
        box_size    [] float32 longer side of the hand in crop pixels (the PCK/NME scale)
        has_keypoints [] bool
        index       [] int64 position in `records`
    """

    def __init__(self, images_dir: str | Path, labels_dir: str | Path, img_size: int = 224,
                 expand_ratio: float = 1.0, rotate: bool = True, use_box: bool = False,
                 augment: CropAugment | None = None, require_keypoints: bool = False,
                 num_classes: int = len(GESTURES), seed: int = 0) -> None:
        self.img_size = int(img_size)
        self.expand_ratio = float(expand_ratio)
        self.rotate = rotate
        self.use_box = use_box
        self.augment = augment
        self.seed = seed
        self.skipped: list[BadImage] = []  # image files that do not decode, skipped (file, reason)
        self.notes: list[str] = []  # boxes clipped to the image
        self.records, self.issues = index_hands(images_dir, labels_dir, require_keypoints, num_classes,
                                                skipped=self.skipped, notes=self.notes)
        if not self.records:
            what = "hands with keypoints" if require_keypoints else "labelled hands"
            raise UserError(f"{labels_dir}: no {what} found for the images in {images_dir}; check that the "
                            f"label files match the image names (YOLO layout)"
                            + (f"; first issue: {self.issues[0]}" if self.issues else "")
                            + (f"; {len(self.skipped)} image(s) skipped, e.g. {self.skipped[0]}" if self.skipped
                               else ""))
        self._pixel_augment = _build_pixel_augment(augment) if augment is not None else None
        # A mirror is wrong for an object whose keypoints are defined by side: a 2_hands box carries
        # the keypoints of the hand on the image's left, which a flip would move to the right.
        self._no_flip_augment = _build_pixel_augment(augment, hflip=False) if augment is not None else None
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed augmentation per epoch (the samplers call this) so epochs differ but runs repeat."""
        self._epoch = epoch

    @property
    def gestures(self) -> np.ndarray:
        """[N] class id per item, for samplers and class counts."""
        return np.array([r.label.cls for r in self.records], dtype=np.int64)

    def crop(self, index: int, rng: random.Random | None = None) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """(RGB uint8 crop [S, S, 3], keypoints [21, 3] crop px + visibility, box size px, mirror-safe)."""
        record = self.records[index]
        image = read_image(record.image)
        height, width = image.shape[:2]
        roi = hand_roi(record.label, width, height, self.expand_ratio, self.rotate, self.use_box)
        base = hand_roi(record.label, width, height, self.expand_ratio, self.rotate, self.use_box, cover_box=False)
        mirror_safe = roi == base  # grown to cover the box = more than one hand in the object
        if rng is not None and self.augment is not None:
            roi = jitter_roi(roi, self.augment, rng)
        crop = cv2.cvtColor(warp_crop(image, roi, self.img_size), cv2.COLOR_BGR2RGB)
        kp = image_to_crop(record.label.keypoints_px(width, height), roi, self.img_size)  # [21, 3]
        kp[kp[:, 2] <= 0, :2] = 0.0
        box = box_from_keypoints(kp)
        if box is None:  # box-only hand: its box side, in crop pixels
            x1, y1, x2, y2 = record.label.xyxy(width, height)
            box_size = max(x2 - x1, y2 - y1) * self.img_size / roi.size
        else:
            box_size = float(max(box[2] - box[0], box[3] - box[1]))
        return crop, kp, float(box_size), mirror_safe

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = None
        if self.augment is not None:
            # Deterministic per (seed, epoch, index) and independent of worker scheduling.
            rng = random.Random(hash((self.seed, self._epoch, int(index))) & 0xFFFFFFFF)
        crop, kp, box_size, mirror_safe = self.crop(index, rng)
        if self._pixel_augment is not None and rng is not None:
            augment = self._pixel_augment if mirror_safe else self._no_flip_augment
            # albumentations 2 owns its generators: re-seed them, never the global numpy/random state.
            augment.set_random_seed(rng.getrandbits(32))
            out = augment(image=crop, keypoints=kp[:, :2].astype(np.float32))
            crop = out["image"]
            kp = np.concatenate([np.asarray(out["keypoints"], np.float64).reshape(NUM_KEYPOINTS, 2), kp[:, 2:]], 1)
            kp[kp[:, 2] <= 0, :2] = 0.0
        label = self.records[index].label
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0),
            "keypoints": torch.from_numpy(kp[:, :2].astype(np.float32)),
            "visibility": torch.from_numpy(kp[:, 2].astype(np.float32)),
            "gesture": torch.tensor(label.cls, dtype=torch.int64),
            "box_size": torch.tensor(box_size, dtype=torch.float32),
            "has_keypoints": torch.tensor(label.has_keypoints),
            "index": torch.tensor(index, dtype=torch.int64),
        }


def letterbox_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio and pad to a `size` square (black)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), dtype=image.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


class ImageFolderCrops(Dataset):
    """Classifier data as the seed read it: `root/<class name>/*.jpg`, one hand per image.

    Folder names that are gesture names map to their id in `shared.hand.GESTURES`
    (which is sorted, so this equals torchvision's ImageFolder order); other
    names are an error naming the folder, so a typo never becomes a new class.
    """

    def __init__(self, root: str | Path, img_size: int = 224, augment: CropAugment | None = None,
                 class_names: tuple[str, ...] = GESTURES, seed: int = 0,
                 items: list[tuple[Path, int]] | None = None) -> None:
        self.root = Path(root)
        self.img_size = int(img_size)
        self.class_names = tuple(class_names)
        self.augment = augment
        self.seed = seed
        self._epoch = 0
        items = items if items is not None else self.scan(self.root, self.class_names)
        # Files that do not decode completely are skipped up front, named and counted.
        self.skipped = [BadImage(str(p), r) for p, r in ((p, check_image(p)) for p, _ in items) if r is not None]
        bad = {b.path for b in self.skipped}
        self.items = [(p, c) for p, c in items if str(p) not in bad]
        if not self.items:
            raise UserError(f"{self.root}: no images found in class subfolders; expected "
                            f"{self.root}/<class>/<image> with classes {', '.join(self.class_names)}"
                            + (f"; {len(self.skipped)} image(s) skipped, e.g. {self.skipped[0]}" if self.skipped
                               else ""))
        self._pixel_augment = _build_pixel_augment(augment) if augment is not None else None

    @staticmethod
    def scan(root: Path, class_names: tuple[str, ...]) -> list[tuple[Path, int]]:
        if not root.is_dir():
            raise UserError(f"{root}: folder not found; pass --data_dir with one subfolder per class")
        items: list[tuple[Path, int]] = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if sub.name not in class_names:
                raise UserError(f"{sub}: folder name is not a class ({', '.join(class_names)}); rename it or "
                                f"move it out of {root}")
            items += [(p, class_names.index(sub.name)) for p in list_images(sub)]
        return items

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def gestures(self) -> np.ndarray:
        return np.array([c for _, c in self.items], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, cls = self.items[index]
        image = cv2.cvtColor(letterbox_square(read_image(path), self.img_size), cv2.COLOR_BGR2RGB)
        if self._pixel_augment is not None:
            rng = random.Random(hash((self.seed, self._epoch, int(index))) & 0xFFFFFFFF)
            self._pixel_augment.set_random_seed(rng.getrandbits(32))
            image = self._pixel_augment(image=image, keypoints=np.zeros((0, 2), np.float32))["image"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0),
            "gesture": torch.tensor(cls, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
