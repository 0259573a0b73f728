"""Image corpora for G-MAE: a source -> ImageFolder layout -> cleaned -> split, and the datasets that read them.

The seed's data steps (src/data/data_formater.py, prepare_corpus.py, split_corpus.py):

1. `data_formater(items, out)`: a source's images as an ImageFolder tree
   `out/<class>/<key>.jpg` (hand crops from boxes, or whole frames), plus
   `manifest.csv` (path, label, group, source) that remembers each file's group;
2. `prepare_corpus(src, out)`: drop unreadable, too small and duplicate images
   (pixel hash), copy the rest, write `corpus_report.json`;
3. `split_corpus(src, out)`: 70% pretrain / 30% fine-tune, each into
   train/val(/test), seeded and grouped: all images of one group (a HaGRID
   `user_id`, or the source frame of several crops) land in the same subset, so
   no person is both trained on and evaluated on.

Sources (`SOURCES`): HaGRID (hand crops from its boxes by default, or full
frames), our YOLO-pose datasets (hand crops), any ImageFolder tree. Every step
writes a new tree and never touches its input.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from shared.data.hagrid import read_hagrid
from shared.data.images import BadImage, check_image
from shared.data.labels import list_images
from shared.data.sources import GestureMap, default_gesture_map_path, read_folder
from shared.errors import UserError
from shared.geometry import roi_from_box, warp_crop
from shared.hand import GESTURES

MANIFEST_NAME = "manifest.csv"
CORPUS_REPORT_NAME = "corpus_report.json"
SPLIT_REPORT_NAME = "split_report.json"
UNLABELLED = "_unlabelled"  # folder of images without a class (pretraining only)
PRETRAIN_PART = "pretrain_dataset"
FINETUNE_PART = "finetune_dataset"


# --------------------------------------------------------------------------- sources
@dataclass
class CorpusItem:
    key: str  # unique, filesystem-safe output stem
    image_path: Path
    label: str  # class folder name; "" = unlabelled
    group: str  # subject / source frame: one group never straddles splits
    box: np.ndarray | None = None  # [4] x1, y1, x2, y2 normalised; None = the whole image


@dataclass
class SourceScan:
    items: list[CorpusItem] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)  # "file:line: reason"
    skipped: dict[str, int] = field(default_factory=dict)  # label -> hands left out by the gesture map


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _map_label(name: str, gesture_map: object | None, scan: SourceScan, unlabelled: bool = False) -> str | None:
    """Source name -> class folder: unchanged without a map, else one of our gestures; a name the map
    drops or does not know is skipped (None), or kept without a label ("") for pretraining."""
    if gesture_map is None:
        return name
    action, cls_id = gesture_map.lookup(name)  # type: ignore[attr-defined]
    if action == "keep":
        return GESTURES[cls_id]
    scan.skipped[name] = scan.skipped.get(name, 0) + 1
    return "" if unlabelled else None


def hagrid_items(root: str | Path, mode: str = "crops", gesture_map: object | None = None,
                 include_no_gesture: bool = True, unmapped_unlabelled: bool = False) -> SourceScan:
    """HaGRID -> one item per hand crop (mode "crops") or per frame (mode "frames").

    Classes are HaGRID's names unless `gesture_map` (a `shared.data.sources.GestureMap`)
    maps them to ours; hands it drops or does not know are counted in `skipped` and
    left out, or, with `unmapped_unlabelled`, kept without a label: they cannot
    teach a class but are good pretraining images (`split_corpus` sends unlabelled
    images to pretraining only). The group is the HaGRID `user_id` (the uuid when missing).
    """
    if mode not in ("crops", "frames"):
        raise UserError(f"HaGRID mode must be 'crops' or 'frames', got {mode!r}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"HaGRID folder not found: {root} (pass the folder holding annotations/ and images/)")
    images, issues = read_hagrid(root)
    scan = SourceScan(issues=[str(i) for i in issues])
    for image in images:
        group = f"hagrid:{image.user_id or image.uuid}"
        if mode == "frames":
            label = _map_label(image.gesture, gesture_map, scan, unmapped_unlabelled)
            if label is not None:
                scan.items.append(CorpusItem(_safe(f"{image.gesture}_{image.uuid}"), image.image_path, label, group))
            continue
        for i, hand in enumerate(image.hands):
            if hand.label == "no_gesture" and not include_no_gesture:
                scan.skipped["no_gesture"] = scan.skipped.get("no_gesture", 0) + 1
                continue
            label = _map_label(hand.label, gesture_map, scan, unmapped_unlabelled)
            if label is None:
                continue
            x, y, w, h = hand.bbox
            box = np.clip(np.array([x, y, x + w, y + h], dtype=np.float64), 0.0, 1.0)
            scan.items.append(CorpusItem(_safe(f"{image.gesture}_{image.uuid}_{i}"), image.image_path, label, group,
                                         box))
    return scan


def yolo_items(root: str | Path, gesture_map: object | None = None) -> SourceScan:
    """A YOLO / YOLO-pose dataset (ours, or a Roboflow export) -> one hand crop per labelled box.

    Read through `shared.data.sources.read_folder` (class names from data.yaml,
    mapped by the gesture map's "folder" section unless another map is given).
    Crops of one frame share a group.
    """
    gmap = gesture_map if gesture_map is not None else GestureMap.load(default_gesture_map_path(), "folder")
    report = read_folder(root, gmap)
    scan = SourceScan(issues=[f"{r.item}: {r.reason}" for r in report.rejected])
    for item in report.items:
        for i, label in enumerate(item.labels):
            x1, y1, x2, y2 = np.clip(label.xyxy(), 0.0, 1.0)
            if x2 <= x1 or y2 <= y1 or item.image_path is None:
                continue
            scan.items.append(CorpusItem(_safe(f"{item.key}_{i}"), item.image_path, GESTURES[label.cls],
                                         f"yolo:{item.group or item.key}", np.array([x1, y1, x2, y2])))
    return scan


def imagefolder_items(root: str | Path) -> SourceScan:
    """Any image tree: the first folder level is the class (images at the top are unlabelled).

    Groups come from the tree's `manifest.csv` when it has one, else each image is its own group.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    groups = read_manifest(root)
    scan = SourceScan()
    for path in list_images(root):
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] != UNLABELLED else ""
        key = _safe(rel.with_suffix("").as_posix())
        scan.items.append(CorpusItem(key, path, label, groups.get(rel.as_posix(), {}).get("group") or f"file:{key}"))
    return scan


SOURCES: dict[str, Callable[..., SourceScan]] = {
    "hagrid": hagrid_items,
    "yolo": yolo_items,
    "imagefolder": imagefolder_items,
}


# --------------------------------------------------------------------------- manifest
def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """relative path -> row of `root/manifest.csv` ({} when there is none)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise UserError(f"{path}:1: manifest needs a header with a 'path' column (path,label,group,source)")
        return {row["path"]: row for row in reader}


def write_manifest(root: Path, rows: list[dict[str, str]]) -> Path:
    path = Path(root) / MANIFEST_NAME
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "group", "source"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
    return path


def _check_fresh_output(src: Path | None, out: Path) -> None:
    out_r = out.resolve()
    if src is not None:
        src_r = src.resolve()
        if out_r == src_r or src_r in out_r.parents or out_r in src_r.parents:
            raise UserError(f"output {out} overlaps the input {src}; pick an output folder outside the input "
                            "(inputs are never modified)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty; pass a new folder (nothing is overwritten)")


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system: fall back to a copy
    shutil.copy2(src, dst)


def class_view(files: dict[str, list[Path]], out: str | Path) -> Path:
    """`out/<class>/<file name>` for each class's files (hard links, copies across file systems), an
    image-folder view for training without copying the data; files already there are kept."""
    out = Path(out)
    for cls, paths in files.items():
        (out / cls).mkdir(parents=True, exist_ok=True)
        for p in paths:
            if not (out / cls / p.name).exists():
                _place(Path(p), out / cls / p.name, link=True)
    return out


# --------------------------------------------------------------------------- 1. format
@dataclass
class FormatReport:
    out_dir: Path
    written: int
    per_class: dict[str, int]
    failed: list[dict[str, str]]  # [{"path", "reason"}]


def data_formater(items: list[CorpusItem], out_dir: str | Path, crop_size: int = 224, crop_expand: float = 0.3,
                  progress: bool = True) -> FormatReport:
    """Write items as an ImageFolder tree: hand crops (square, `crop_expand` context) or whole frames copied."""
    out = Path(out_dir)
    _check_fresh_output(None, out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    per_class: Counter = Counter()
    cached: tuple[Path | None, np.ndarray | None] = (None, None)
    seen: set[str] = set()
    # Sorted by image so that the crops of one frame decode it once.
    for item in tqdm(sorted(items, key=lambda it: (str(it.image_path), it.key)), desc="format", unit="img",
                     disable=not progress):
        folder = item.label or UNLABELLED
        key = item.key
        while key in seen:  # keys are unique per source; guard against two sources colliding
            key += "_"
        seen.add(key)
        if item.box is None:
            rel = Path(folder) / f"{key}{item.image_path.suffix.lower()}"
            if not item.image_path.is_file():
                failed.append({"path": str(item.image_path), "reason": "image missing"})
                continue
            _place(item.image_path, out / rel, link=False)
        else:
            if cached[0] != item.image_path:
                cached = (item.image_path, cv2.imread(str(item.image_path), cv2.IMREAD_COLOR))
            image = cached[1]
            if image is None:
                failed.append({"path": str(item.image_path), "reason": "image unreadable"})
                continue
            h, w = image.shape[:2]
            xyxy = np.asarray(item.box, dtype=np.float64) * [w, h, w, h]
            crop = warp_crop(image, roi_from_box(xyxy, expand_ratio=crop_expand), crop_size)
            rel = Path(folder) / f"{key}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
        per_class[folder] += 1
        rows.append({"path": rel.as_posix(), "label": item.label, "group": item.group, "source": str(item.image_path)})
    write_manifest(out, rows)
    return FormatReport(out, len(rows), dict(sorted(per_class.items())), failed)


# --------------------------------------------------------------------------- 2. clean
@dataclass
class CorpusReport:
    src_dir: Path
    out_dir: Path
    scanned: int
    kept: int
    dropped: dict[str, int]  # reason kind -> count
    files: list[dict[str, str]]  # [{"path", "reason"}] of every dropped file
    report_path: Path


def _inspect(data: bytes, min_size: int) -> tuple[str | None, str | None]:
    """(drop reason kind + detail or None, pixel hash or None)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a full decode: truncated files fail here, not at training time
            rgb = np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types for corrupt data
        return f"unreadable: {type(exc).__name__}: {exc}", None
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        return f"too_small: {w}x{h} < {min_size} px", None
    digest = hashlib.sha1(f"{h}x{w}".encode() + rgb.tobytes()).hexdigest()
    return None, digest


def prepare_corpus(src_dir: str | Path, out_dir: str | Path, min_size: int = 32, dedupe: bool = True,
                   link: bool = False, progress: bool = True) -> CorpusReport:
    """Copy the readable, large-enough, first-seen images of `src_dir` to `out_dir` (same relative paths).

    Duplicates are found by a hash of the decoded pixels, so the same picture
    saved twice under different names (or as PNG and BMP) is kept once: the
    first in sorted path order. `manifest.csv` rows of kept files carry over.
    """
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"corpus folder not found: {src}")
    _check_fresh_output(src, out)
    manifest = read_manifest(src)
    images = list_images(src)
    if not images:
        raise UserError(f"{src}: no images found (looked for .jpg/.png/... recursively)")
    out.mkdir(parents=True, exist_ok=True)
    first_by_hash: dict[str, str] = {}
    dropped: Counter = Counter()
    files: list[dict[str, str]] = []
    kept_rows: list[dict[str, str]] = []
    for path in tqdm(images, desc="prepare corpus", unit="img", disable=not progress):
        rel = path.relative_to(src).as_posix()
        reason, digest = _inspect(path.read_bytes(), min_size)
        if reason is None and dedupe and digest in first_by_hash:
            reason = f"duplicate: same pixels as {first_by_hash[digest]}"
        if reason is not None:
            dropped[reason.split(":", 1)[0]] += 1
            files.append({"path": rel, "reason": reason})
            continue
        if digest is not None:
            first_by_hash.setdefault(digest, rel)
        _place(path, out / rel, link)
        row = manifest.get(rel)
        parts = Path(rel).parts
        kept_rows.append(row or {"path": rel, "label": parts[0] if len(parts) > 1 else "", "group": "",
                                 "source": str(path)})
    if manifest:
        write_manifest(out, kept_rows)
    report_path = out / CORPUS_REPORT_NAME
    report = CorpusReport(src, out, len(images), len(images) - sum(dropped.values()), dict(dropped), files,
                          report_path)
    report_path.write_text(json.dumps({
        "src_dir": str(src), "out_dir": str(out), "min_size": min_size, "dedupe": dedupe,
        "scanned": report.scanned, "kept": report.kept, "dropped": report.dropped, "files": files,
    }, indent=2))
    return report


# --------------------------------------------------------------------------- 3. split
@dataclass
class SplitReport:
    out_dir: Path
    counts: dict[str, dict[str, int]]  # "pretrain_dataset/train" -> {class: images}
    groups: dict[str, int]  # subset -> number of groups
    report_path: Path


def _assign(groups: list[str], sizes: dict[str, int], fractions: dict[str, float]) -> dict[str, list[str]]:
    """Walk the (shuffled) groups, filling subsets in order by image count; no subset with a
    positive fraction stays empty while the first one has a group to spare."""
    names = list(fractions)
    total = sum(sizes[g] for g in groups) or 1
    bounds = np.cumsum([fractions[n] for n in names]) / sum(fractions.values())
    out: dict[str, list[str]] = {n: [] for n in names}
    done = 0
    for g in groups:
        pos = done / total
        k = int(np.searchsorted(bounds, pos, side="right"))
        out[names[min(k, len(names) - 1)]].append(g)
        done += sizes[g]
    for n in names[1:]:
        if fractions[n] > 0 and not out[n] and len(out[names[0]]) > 1:
            out[n].append(out[names[0]].pop())
    return out


def split_corpus(src_dir: str | Path, out_dir: str | Path, pretrain_fraction: float = 0.7,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, link: bool = False,
                 progress: bool = True) -> SplitReport:
    """70% / 30% of the groups (by images) into pretrain_dataset/{train,val} and finetune_dataset/{train,val,test}.

    Unlabelled images (top level or `_unlabelled/`) go to pretraining only.
    Groups come from `manifest.csv` (HaGRID user_id, source frame); without
    one, every image is its own group.
    """
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"corpus folder not found: {src}")
    for name, value in (("pretrain_fraction", pretrain_fraction), ("val_fraction", val_fraction),
                        ("test_fraction", test_fraction)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be within [0, 1], got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training data")
    _check_fresh_output(src, out)
    manifest = read_manifest(src)
    images = list_images(src)
    if not images:
        raise UserError(f"{src}: no images found")
    entries: list[tuple[str, str, str]] = []  # rel path, label, group
    for path in images:
        rel = path.relative_to(src).as_posix()
        parts = Path(rel).parts
        label = parts[0] if len(parts) > 1 and parts[0] != UNLABELLED else ""
        group = (manifest.get(rel, {}).get("group") or "").strip() or f"file:{rel}"
        entries.append((rel, label, group))

    sizes: Counter = Counter(g for _, _, g in entries)
    labelled_groups = sorted({g for _, lab, g in entries if lab})
    unlabelled_only = sorted(set(sizes) - set(labelled_groups))
    rng = np.random.default_rng(seed)
    order = [labelled_groups[i] for i in rng.permutation(len(labelled_groups))]
    parts = _assign(order, sizes, {PRETRAIN_PART: pretrain_fraction, FINETUNE_PART: 1.0 - pretrain_fraction})
    pre_groups = parts[PRETRAIN_PART] + [unlabelled_only[i] for i in rng.permutation(len(unlabelled_only))]
    subset_of: dict[str, str] = {}
    for part, groups, fractions in (
        (PRETRAIN_PART, pre_groups, {"train": 1.0 - val_fraction, "val": val_fraction}),
        (FINETUNE_PART, parts[FINETUNE_PART],
         {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}),
    ):
        fractions = {k: v for k, v in fractions.items() if v > 0 or k == "train"}
        for subset, members in _assign(groups, sizes, fractions).items():
            for g in members:
                subset_of[g] = f"{part}/{subset}"

    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter] = defaultdict(Counter)
    group_sets: dict[str, set[str]] = defaultdict(set)
    rows: list[dict[str, str]] = []
    for rel, label, group in tqdm(entries, desc="split corpus", unit="img", disable=not progress):
        where = subset_of[group]
        if where.startswith(FINETUNE_PART) and not label:
            # An unlabelled image of a group that went to fine-tuning: useless there, and
            # moving it to pretraining would split its group, so it is left out.
            counts["left_out_unlabelled"][UNLABELLED] += 1
            continue
        dst_rel = f"{where}/{rel}"
        _place(src / rel, out / dst_rel, link)
        counts[where][label or UNLABELLED] += 1
        group_sets[where].add(group)
        rows.append({"path": dst_rel, "label": label, "group": group, "source": rel})
    write_manifest(out, rows)
    report_path = out / SPLIT_REPORT_NAME
    report = SplitReport(out, {k: dict(sorted(v.items())) for k, v in sorted(counts.items())},
                         {k: len(v) for k, v in sorted(group_sets.items())}, report_path)
    report_path.write_text(json.dumps({
        "src_dir": str(src), "out_dir": str(out), "seed": seed, "pretrain_fraction": pretrain_fraction,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "grouped_by_manifest": bool(manifest),
        "counts": report.counts, "groups": report.groups,
    }, indent=2))
    return report


# --------------------------------------------------------------------------- datasets
def resolve_subset(data_dir: str | Path, part: str, subset: str) -> Path | None:
    """Where `subset` (train/val/test) of `part` lives under data_dir, or None.

    Accepts a split root (data_dir/<part>/<subset>), a part (data_dir/<subset>),
    or, for "train" only, a plain image tree (data_dir itself).
    """
    root = Path(data_dir)
    for candidate in (root / part / subset, root / subset):
        if candidate.is_dir():
            return candidate
    if subset == "train" and root.is_dir() and not any((root / s).is_dir() for s in ("train", "val", "test")) \
            and not (root / part).is_dir():
        return root
    return None


def find_classes(root: str | Path) -> list[str]:
    """Sorted class folder names (first level folders holding images; `_`-prefixed ones excluded)."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(("_", ".")) and list_images(p))


def load_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for corrupt data
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); run prepare_corpus to drop "
                        "unreadable files") from None


class ImageFolderDataset(Dataset):
    """Class sub-folders -> (image tensor [C, H, W], class index); -1 for unlabelled images.

    `classes` fixes the index order (train and val must agree even when a class
    is missing from val); a folder outside it is an error, unless labels are
    not needed (`labelled=False`, pretraining reads every image).
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, classes: list[str] | None = None,
                 labelled: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"image folder not found: {self.root}")
        self.transform = transform
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for path in list_images(self.root):
            parts = path.relative_to(self.root).parts
            folder = parts[0] if len(parts) > 1 else ""
            if folder in index:
                self.samples.append((path, index[folder]))
            elif labelled:
                raise UserError(f"{path}: class folder {folder!r} is not one of the classes {self.classes}; "
                                "remove it or train with matching --num_classes / class folders")
            else:
                self.samples.append((path, -1))
        # Files that do not decode completely are skipped up front (named, counted), never mid-epoch.
        self.skipped = [BadImage(str(p), r) for p, r in ((p, check_image(p)) for p, _ in self.samples)
                        if r is not None]
        if self.skipped:
            bad = {b.path for b in self.skipped}
            self.samples = [(p, c) for p, c in self.samples if str(p) not in bad]
        if not self.samples:
            raise UserError(f"{self.root}: no images found"
                            + (f" ({len(self.skipped)} skipped, e.g. {self.skipped[0]})" if self.skipped else ""))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        image = load_rgb(path)
        return (self.transform(image) if self.transform else image), label

    def targets(self) -> list[int]:
        return [label for _, label in self.samples]
