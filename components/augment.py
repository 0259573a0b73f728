"""Offline augmentation of a YOLO-pose folder, boxes and keypoints kept consistent.

    python -m components.augment --images_dir D/train/images --labels_dir D/train/labels \
        --output_dir augmented --num_augmentations 10 --aug_type standard --save_original

aug_type: light = brightness/contrast/blur; standard = flips, rotations, scale/shift,
colour; heavy = standard + perspective/elastic, coarse dropout, noise, compression.
A keypoint leaving the image gets v=0, a box is clipped, a hand that leaves the image
entirely is dropped from that copy and counted. Writes `output_dir/{images,labels}` and
`output_dir/augment_summary.json`; the input folders are only read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# albumentations asks PyPI for a newer version when it is imported (3-5 s offline, and a
# warning); its opt-out must be set before the import, here, not only in the Makefile.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from shared.config import add_config_args, check_outputs, load_config, option, save_config  # noqa: E402
from shared.data.images import check_image  # noqa: E402
from shared.data.labels import HandLabel, label_path_for, list_images, read_labels, write_labels  # noqa: E402
from shared.errors import UserError, run_cli  # noqa: E402
from shared.hand import NUM_KEYPOINTS  # noqa: E402

AUG_TYPES = ("light", "standard", "heavy", "none")


@dataclass
class AugmentConfig:
    images_dir: str = option("", "folder of input images")
    labels_dir: str = option("", "folder of YOLO-pose labels matching the images")
    output_dir: str = option("outputs/augmented", "where images/ and labels/ are written", output="dir")
    num_augmentations: int = option(5, "augmented copies per image", min=0)
    aug_type: str = option("standard", "augmentation strength", metadata={"choices": list(AUG_TYPES)})
    save_original: bool = option(False, "also copy the original image and label")
    seed: int = option(42, "random seed")
    min_box_visibility: float = option(0.1, "drop a hand whose clipped box keeps less than this share of its area",
                                       min=0.0, max=1.0)


@dataclass
class AugmentResult:
    output_dir: str
    images_in: int
    images_out: int
    hands_out: int
    hands_dropped: int
    keypoints_hidden: int
    rejected: list[dict]
    seconds: float
    notes: list[str] = field(default_factory=list)


def build_transform(aug_type: str, min_visibility: float = 0.1) -> A.Compose:
    """An albumentations pipeline that moves boxes and keypoints with the pixels."""
    light = [
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.4),
    ]
    geometric = [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-30, 30), border_mode=cv2.BORDER_CONSTANT,
                 rotate_method="ellipse", p=0.8),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.3, hue=0.03, p=0.7),
    ]
    heavy = [
        A.OneOf([A.Perspective(scale=(0.03, 0.08), border_mode=cv2.BORDER_CONSTANT),
                 A.ElasticTransform(alpha=20, sigma=6)], p=0.5),
        A.CoarseDropout(num_holes_range=(1, 6), hole_height_range=(0.04, 0.12), hole_width_range=(0.04, 0.12), p=0.5),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.4),
        A.ImageCompression(quality_range=(30, 80), p=0.4),
    ]
    transforms = {"none": [], "light": light, "standard": light + geometric, "heavy": light + geometric + heavy}
    if aug_type not in transforms:
        raise UserError(f"unknown --aug_type {aug_type!r}; choose one of {', '.join(AUG_TYPES)}")
    return A.Compose(
        transforms[aug_type],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["hand_ids"], clip=True,
                                 min_visibility=min_visibility, min_area=1.0),
        keypoint_params=A.KeypointParams(format="xy", label_fields=["kp_ids"], remove_invisible=False),
    )


def augment_one(transform: A.Compose, image: np.ndarray, labels: list[HandLabel]) -> tuple[np.ndarray, list[HandLabel],
                                                                                          int, int]:
    """One augmented copy: (image, labels, hands dropped, keypoints newly hidden)."""
    h, w = image.shape[:2]
    boxes = [np.clip(lb.xyxy(w, h), [0, 0, 0, 0], [w, h, w, h]) for lb in labels]
    kps = [lb.keypoints_px(w, h) for lb in labels]
    flat_kp = np.concatenate(kps)[:, :2] if kps else np.zeros((0, 2))
    out = transform(image=image, bboxes=np.array(boxes).reshape(-1, 4), hand_ids=list(range(len(labels))),
                    keypoints=flat_kp, kp_ids=list(range(len(flat_kp))))
    oh, ow = out["image"].shape[:2]
    # Some transforms may drop keypoints despite remove_invisible=False: place the survivors
    # back by id; a missing one counts as having left the image.
    new_kp = np.full((len(flat_kp), 2), -1.0)
    survivors = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
    if len(survivors):
        new_kp[np.asarray(out["kp_ids"], dtype=np.int64)] = survivors
    new_labels: list[HandLabel] = []
    hidden = 0
    for box, hand in zip(out["bboxes"], out["hand_ids"]):
        hand = int(hand)
        kp = kps[hand].copy()
        xy = new_kp[hand * NUM_KEYPOINTS:(hand + 1) * NUM_KEYPOINTS]
        kp[:, :2] = xy
        labelled = kp[:, 2] > 0
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= ow) & (xy[:, 1] >= 0) & (xy[:, 1] <= oh)
        gone = labelled & ~inside
        hidden += int(gone.sum())
        kp[~(labelled & inside)] = 0.0
        box = np.asarray(box, dtype=np.float64)
        shown = kp[:, 2] > 0
        if shown.any():
            # Non-affine warps (elastic, perspective) move points off the warped box corners:
            # the box must still hold every visible keypoint of its hand.
            box = np.r_[np.minimum(box[:2], kp[shown, :2].min(0)), np.maximum(box[2:], kp[shown, :2].max(0))]
            box = np.clip(box, 0, [ow, oh, ow, oh])
        new_labels.append(HandLabel.from_xyxy(labels[hand].cls, box, ow, oh, kp))
    return out["image"], new_labels, len(labels) - len(new_labels), hidden


def augment(cfg: AugmentConfig) -> AugmentResult:
    images_dir, labels_dir, out = Path(cfg.images_dir), Path(cfg.labels_dir), Path(cfg.output_dir)
    if not images_dir.is_dir():
        raise UserError(f"--images_dir not found: {images_dir}")
    if not labels_dir.is_dir():
        raise UserError(f"--labels_dir not found: {labels_dir}")
    if out.resolve() in (images_dir.resolve(), labels_dir.resolve()):
        raise UserError("--output_dir must differ from the input folders (inputs are never modified)")
    if cfg.num_augmentations < 0:
        raise UserError("--num_augmentations must be >= 0")
    check_outputs(cfg)
    transform = build_transform(cfg.aug_type, cfg.min_box_visibility)
    transform.set_random_seed(cfg.seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    images = list_images(images_dir)
    if not images:
        raise UserError(f"no images in {images_dir}")
    start = time.perf_counter()
    n_out = hands_out = dropped = hidden = 0
    rejected: list[dict] = []
    notes: list[str] = []  # boxes clipped to the image
    for image_path in tqdm(images, desc=f"augment ({cfg.aug_type})", unit="img"):
        label_path = label_path_for(image_path, images_dir, labels_dir)
        reason = check_image(image_path)
        labels: list[HandLabel] = []
        if reason is None and label_path.is_file():
            labels, issues = read_labels(label_path, notes=notes)
            if issues:
                reason = "; ".join(str(i) for i in issues)
        if reason:
            rejected.append({"item": str(image_path), "reason": reason})
            continue
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        rel = image_path.relative_to(images_dir).with_suffix("")
        if cfg.save_original:
            dst = out / "images" / image_path.relative_to(images_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image_path, dst)
            write_labels(out / "labels" / rel.with_suffix(".txt"), labels)
            n_out += 1
            hands_out += len(labels)
        for k in range(cfg.num_augmentations):
            aug_image, aug_labels, n_drop, n_hidden = augment_one(transform, image, labels)
            name = rel.parent / f"{rel.name}_aug{k}"
            dst = out / "images" / name.with_suffix(".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dst), aug_image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_labels(out / "labels" / name.with_suffix(".txt"), aug_labels)
            n_out += 1
            hands_out += len(aug_labels)
            dropped += n_drop
            hidden += n_hidden
    result = AugmentResult(str(out), len(images), n_out, hands_out, dropped, hidden, rejected,
                           round(time.perf_counter() - start, 3), notes)
    (out / "augment_summary.json").write_text(json.dumps(asdict(result), indent=2))
    save_config(cfg, out / "augment_config.yaml")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.augment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with AugmentConfig keys (flags override it)")
    add_config_args(parser, AugmentConfig)
    args = parser.parse_args(argv)
    cfg = load_config(AugmentConfig, args.config, args)
    r = augment(cfg)
    print(f"{r.images_in} images in -> {r.images_out} images out, {r.hands_out} hands; "
          f"{r.hands_dropped} hands left the image and were dropped, {r.keypoints_hidden} keypoints hidden; "
          f"{len(r.rejected)} input(s) rejected; {r.seconds:.1f}s")
    print(f"summary: {Path(r.output_dir) / 'augment_summary.json'}")
    if r.images_in and len(r.rejected) == r.images_in:
        raise UserError(f"nothing usable: all {r.images_in} input image(s) were rejected (reasons in "
                        f"{Path(r.output_dir) / 'augment_summary.json'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
