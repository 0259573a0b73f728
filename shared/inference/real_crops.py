"""Real hand crops, cut the way the tracking-mode pipeline feeds the crop model.

One reader for every consumer that needs real crops rather than synthetic ones:
ONNX Runtime INT8 calibration and its verification (`shared.models.quantize`), and the
TensorRT INT8 calibrator (`shared.models.tensorrt`), so both quantizations calibrate on
the same set.

A crop is placed by the hand's 21 landmarks: MediaPipe's next-frame ROI
(`shared.inference.pipeline.roi_from_landmarks`: palm landmarks, x2, shifted to the
fingers, made upright) warped to `size` x `size` (`shared.geometry.crop_matrix`), i.e. what
BlazeHand sees while it follows a hand. The landmarks come from

- the labels of a YOLO-pose dataset whose lines carry keypoints (e.g. written by
  `python -m components.autolabel`, the MediaPipe teacher), or
- the teacher itself, run here: the static pipeline (MediaPipe's palm detector and landmark
  network, ONNX Runtime) on every photo of a folder with no keypoint labels.

Photos are visited in a fixed shuffled order (seed 0), so `limit` crops spread over every
sub-folder (HaGRID's gesture folders) instead of the first one alphabetically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from shared.data.labels import label_path_for, list_images, read_labels
from shared.data.realsets import RealCrops
from shared.errors import UserError
from shared.geometry import apply_affine, crop_matrix
from shared.hand import LABEL_NAMES
from shared.inference.pipeline import HandPipeline, PipelineConfig, roi_from_landmarks


def _label_dirs(root: Path) -> list[tuple[Path, Path]]:
    """(images, labels) folder pairs of a YOLO-pose dataset under `root` (any split layout)."""
    pairs = []
    for images in sorted([root] + [p for p in root.rglob("images") if p.is_dir()]):
        if images.name == "images" and (images.parent / "labels").is_dir():
            pairs.append((images, images.parent / "labels"))
    return pairs


def crop_from_landmarks(rgb: np.ndarray, keypoints_px: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The tracking-mode crop [S, S, 3] uint8 of one hand and its landmarks [21, 3] in crop pixels."""
    m = crop_matrix(roi_from_landmarks(keypoints_px[:, :2]), size)
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return crop, apply_affine(keypoints_px, m)


def _teacher():
    # The teacher: MediaPipe's own networks, every photo independent, no gesture model needed.
    return HandPipeline(PipelineConfig(static=True, backend="onnxruntime", gesture_model="none", max_hands=4))


@dataclass
class HandCrop:
    """One real hand crop: what `iter_hand_crops` yields."""

    crop: np.ndarray  # [S, S, 3] uint8 RGB
    keypoints: np.ndarray  # [21, 3] float64 landmarks in crop pixels
    source: Path  # the photo
    root: Path  # the source folder it was found under (for relative paths)
    cls: int | None  # the label's class id (keypoint labels), None when the teacher found the hand


@dataclass
class CropScan:
    """Running counts of an `iter_hand_crops` pass (filled while it yields)."""

    images_read: int = 0
    unreadable: list[str] = field(default_factory=list)
    how: set[str] = field(default_factory=set)


def _source_items(src: Path) -> list[tuple[Path, list | None]]:
    """(image, its keypoint labels or None = ask the teacher) for every photo under `src`."""
    pairs = _label_dirs(src) if src.is_dir() else []
    if not pairs:
        return [(p, None) for p in (list_images(src) if src.is_dir() else [src])]
    labelled: list[tuple[Path, list | None]] = []
    for images_dir, labels_dir in pairs:
        for image in list_images(images_dir):
            label_file = label_path_for(image, images_dir, labels_dir)
            labels = read_labels(label_file, num_classes=1000)[0] if label_file.is_file() else []
            with_kp = [lab for lab in labels if lab.has_keypoints]
            # A dataset with boxes only (human labels) goes through the teacher instead.
            labelled.append((image, with_kp if with_kp or not labels else None))
    if all(v is None or not v for _, v in labelled):
        labelled = [(p, None) for p, _ in labelled]
    return labelled


def _checked_sources(sources: str | Path | Iterable[str | Path]) -> list[Path]:
    """`sources` as a list of paths; a UserError when it is empty or one of them does not exist
    (before anything is read)."""
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    if not sources:
        raise UserError("no source of real photos given; pass a folder of real photos of hands")
    for src in sources:
        if not src.exists():
            raise UserError(f"{src}: no such folder or image; pass a folder of real photos of hands")
    return sources


def iter_hand_crops(sources: str | Path | Iterable[str | Path], size: int = 224, seed: int = 0,
                    min_score: float = 0.5, scan: CropScan | None = None,
                    progress: bool = False) -> Iterator[HandCrop]:
    """Every real hand crop of one or more folders (or image files), one at a time; see the module doc.

    Photos are visited in a fixed shuffled order per source (`seed`). Unreadable files are
    counted in `scan` (and skipped); a missing source is a UserError before anything is read.
    """
    sources = _checked_sources(sources)
    scan = scan if scan is not None else CropScan()
    teacher = None
    for src in sources:
        items = _source_items(src)
        order = np.random.default_rng(seed).permutation(len(items))
        for i in tqdm(order, desc=f"hand crops {src.name}", unit="photo", disable=not progress):
            image, labels = items[i]
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                scan.unreadable.append(str(image))  # only shrinks the set; named by the caller
                continue
            scan.images_read += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            if labels is not None:
                hands = [(lab.keypoints_px(w, h), lab.cls) for lab in labels]
                scan.how.add("labels")
            else:
                teacher = teacher or _teacher()
                found = teacher.process(rgb)
                keep = np.ones(len(found.xyxy), bool) if found.score is None else found.score >= min_score
                hands = [] if found.keypoints is None else [(kp, None) for kp in found.keypoints[keep]]
                scan.how.add("teacher")
            for kp, cls in hands:
                crop, kp_crop = crop_from_landmarks(rgb, np.asarray(kp, np.float64), size)
                yield HandCrop(crop, kp_crop, image, src if src.is_dir() else src.parent, cls)


def no_hands_error(sources: Iterable[str | Path], read: int, use: str) -> UserError:
    where = ", ".join(str(s) for s in sources)
    return UserError(f"{where}: no hand found in {read} image(s); {use} needs real photos of hands "
                     "(or a YOLO-pose dataset with keypoints, e.g. from components.autolabel)")


def real_crops(sources: str | Path | Iterable[str | Path], size: int = 224, limit: int | None = None,
               seed: int = 0, min_score: float = 0.5) -> RealCrops:
    """Up to `limit` real hand crops from one or more folders (or image files), as arrays.

    A folder holding YOLO-pose labels with keypoints is read from its labels; any other folder
    (or image) goes through the teacher. Raises a UserError when a source does not exist or
    when no hand is found at all (a calibration set with no hands in it is a mistake, never
    an empty calibration).
    """
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    limit = limit if limit and limit > 0 else None
    scan = CropScan()
    crops: list[np.ndarray] = []
    kps: list[np.ndarray] = []
    names: list[str] = []
    for hand in iter_hand_crops(sources, size=size, seed=seed, min_score=min_score, scan=scan):
        crops.append(hand.crop)
        kps.append(hand.keypoints)
        names.append(str(hand.source))
        if limit is not None and len(crops) >= limit:
            break  # before the next photo is read
    if not crops:
        raise no_hands_error(sources, scan.images_read, "calibration and verification")
    x = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)  # [N, 3, S, S]
    return RealCrops(x=np.ascontiguousarray(x), keypoints=np.stack(kps), sources=names, images_read=scan.images_read,
                     unreadable=scan.unreadable, how="+".join(sorted(scan.how)))


@dataclass
class CropFolderReport:
    """What `write_hand_crops` wrote."""

    out_dir: str
    crops: int
    images_read: int
    per_folder: dict[str, int]
    unreadable: list[str]
    how: str


def write_hand_crops(sources: str | Path | Iterable[str | Path], out_dir: str | Path, size: int = 224,
                     seed: int = 0, min_score: float = 0.5, progress: bool = True,
                     use: str = "pretraining") -> CropFolderReport:
    """Every real hand of `sources` as a PNG crop under `out_dir/<folder>/`, for image-folder training.

    `<folder>` is the label's class name for keypoint labels (our gestures, or `hand`), else
    the photo's own folder name (HaGRID's gesture folders; `_unlabelled` for photos at the top).
    `out_dir` must not hold crops already (nothing is mixed or overwritten). No hand at all
    is a UserError naming the sources, before any training starts.
    """
    from shared.data.corpus import UNLABELLED

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: not empty; hand crops are written into a fresh folder (delete it or pick another)")
    sources = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
    scan = CropScan()
    per_folder: dict[str, int] = {}
    per_photo: dict[Path, int] = {}
    for hand in iter_hand_crops(sources, size=size, seed=seed, min_score=min_score, scan=scan, progress=progress):
        if hand.cls is not None:
            folder = LABEL_NAMES[hand.cls] if 0 <= hand.cls < len(LABEL_NAMES) else f"class_{hand.cls}"
        else:
            folder = UNLABELLED if hand.source.parent == hand.root else hand.source.parent.name
        k = per_photo[hand.source] = per_photo.get(hand.source, -1) + 1
        dst = out / folder / f"{hand.source.stem}_{k}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), cv2.cvtColor(hand.crop, cv2.COLOR_RGB2BGR))
        per_folder[folder] = per_folder.get(folder, 0) + 1
    if not per_folder:
        raise no_hands_error(sources, scan.images_read, use)
    return CropFolderReport(str(out), sum(per_folder.values()), scan.images_read, dict(sorted(per_folder.items())),
                            scan.unreadable, "+".join(sorted(scan.how)))


def real_frames(sources: str | Path | Iterable[str | Path], size: int = 192, limit: int | None = None,
                seed: int = 0) -> RealCrops:
    """Up to `limit` real photos as the palm detector sees them: each letterboxed to `size` x `size`
    the MediaPipe way (`shared.models.blazepalm_post.letterbox`), [N, 3, S, S] float RGB in [0, 1].
    The INT8 palm detector is calibrated and verified on these (`shared.models.quantize_palm`), as
    BlazeHand is on `real_crops`. Photos are taken in the same fixed shuffled order; a YOLO dataset
    is read through its images. `keypoints` is empty ([N, 0, 3]): the float palm detector is the
    reference, and whether the photos hold hands at all is checked against it."""
    from shared.models.blazepalm_post import letterbox

    sources = _checked_sources(sources)
    limit = limit if limit and limit > 0 else None
    frames: list[np.ndarray] = []
    names: list[str] = []
    scan = CropScan()
    for src in sources:
        items = [image for image, _ in _source_items(src)]
        for i in np.random.default_rng(seed).permutation(len(items)):
            if limit is not None and len(frames) >= limit:
                break
            bgr = cv2.imread(str(items[i]), cv2.IMREAD_COLOR)
            if bgr is None:
                scan.unreadable.append(str(items[i]))
                continue
            scan.images_read += 1
            frames.append(letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)[0])
            names.append(str(items[i]))
    if not frames:
        where = ", ".join(str(s) for s in sources)
        raise UserError(f"{where}: no readable photo ({len(scan.unreadable)} unreadable); the palm detector's int8 "
                        "ranges are measured on real photos of hands")
    x = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)
    return RealCrops(x=np.ascontiguousarray(x), keypoints=np.zeros((len(frames), 0, 3)), sources=names,
                     images_read=scan.images_read, unreadable=scan.unreadable, how="letterboxed photos")
