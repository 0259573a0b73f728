"""Autolabel: real photos -> a YOLO-pose dataset labelled by the MediaPipe teacher.

    python -m components.autolabel --input_dir ../shared/data/hagrid_train --output_dir data/hagrid_teacher

The input is a folder of gesture folders (`<input>/<gesture>/*.jpg`, or HaGRID's
`<input>/images/<gesture>/*.jpg`) or a flat folder of unlabelled images. Boxes and 21
keypoints come from the teacher: MediaPipe's palm detector and hand-landmark network (our
ONNX Runtime port, static mode, exactly MediaPipe's answers). The gesture comes from the
folder name through the gesture map (`configs/gesture_map.yaml`, section `--map_section`).

- One photo shows one gesture, but may show two hands. The gesture hand is the RAISED one:
  the hand whose wrist is higher in the image (HaGRID's idle second hand hangs by the body).
  When the two wrists are within `--min_raise` of a hand's size of each other the photo is
  ambiguous and rejected. The other hand is labelled `hand` (gesture unknown): it teaches
  the detector and the keypoints and is ignored by gesture losses. It is never `normal_hand`.
- Hands of folders with no mapped gesture (the map's `drop` list, unmapped names, a flat
  folder) are all `hand`: kept for detection and pretraining, never guessed.
- Every photo the teacher cannot label confidently (unreadable, no hand, a hand whose
  presence is below `--min_presence`, ambiguous gesture hand) is listed in `manifest.json`
  with its reason and copied to `rejected/`; nothing is dropped silently.
- `--tiles N` (off by default: MediaPipe's answer on the whole photo): the teacher also
  looks at N x N overlapping tiles of each photo. MediaPipe's palm detector sees a photo at
  192 px, where a hand far from the camera is a few pixels wide and missed; in a tile it is
  about N times larger. A tile's hand is kept when it lies whole inside its tile (not cut
  by an inner tile edge), reaches `--min_presence`, and overlaps no hand already found (box IoU <= 0.3); it is labelled
  `hand`, never the gesture (the gesture hand is chosen among the whole photo's hands). On
  `hagrid_sample` this raises the teacher's recall of the annotated hands from 0.85 to 0.92
  (`python -m benchmarks.detector_real --teacher_only`): labels for a detector that should
  find small hands. It costs N x N + 1 teacher runs per photo.
- `contact_sheet.png`: crops with their keypoints and label, a row per class, for a person
  to check the labels at a glance.

Writes the same layout as `components.ingest`: `D/data.yaml` (names: our five gestures and
`hand`), `D/{train,val,test}/{images,labels}`, `D/manifest.json`, `D/rejected/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from components.ingest import SPLITS, _content_hash, _prepare_output, _write_item, _write_rejected, assign_splits
from shared.config import add_config_args, check_outputs, load_config, option, save_config
from shared.data.labels import HandLabel, list_images
from shared.data.sources import GestureMap, Rejection, SourceItem, check_image, default_gesture_map_path, safe_key
from shared.errors import UserError, run_cli
from shared.hand import FLIP_IDX, LABEL_NAMES, NUM_KEYPOINTS, SKELETON, UNKNOWN_HAND, UNKNOWN_HAND_ID
from shared.results import HandResults

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class AutolabelConfig:
    input_dir: str = option("", "a folder of gesture folders (<dir>/<gesture>/*.jpg or <dir>/images/<gesture>/) "
                                "or a flat folder of images")
    output_dir: str = option("outputs/autolabel", "the dataset folder to write", output="dir")
    gesture_map: str = option("", "YAML mapping folder names to our gestures (default: configs/gesture_map.yaml)")
    map_section: str = option("hagrid", "section of the gesture map for the folder names (names equal to ours "
                                        "map to themselves in any section)")
    min_presence: float = option(0.8, "teacher confidence: every hand's landmark presence must reach this, "
                                      "else the photo is rejected", min=0.0, max=1.0)
    min_detection: float = option(0.5, "palm detector score threshold (MediaPipe's min_detection_confidence)",
                                  min=0.0, max=1.0)
    max_hands: int = option(2, "hands per photo the teacher looks for (MediaPipe's max_num_hands)", min=1)
    min_raise: float = option(0.25, "two hands: the gesture hand's wrist must be higher than the other's by this "
                                    "x the hand size, else the photo is ambiguous and rejected", min=0.0)
    box_pad: float = option(0.1, "box = landmark extent grown by this fraction on each side", min=0.0)
    tiles: int = option(0, "also look at N x N overlapping tiles of each photo (N >= 2) for small hands the palm "
                           "detector misses at 192 px, labelled 'hand'; 0 = the whole photo only", choices=[0, 2, 3, 4])
    splits: list[float] = option([0.7, 0.2, 0.1], "train/val/test fractions (seeded, per photo)")
    seed: int = option(0, "split seed")
    threads: int = option(0, "ONNX Runtime threads (0 = all cores)", min=0)
    contact_per_class: int = option(8, "crops per class on the contact sheet", min=1)
    overwrite: bool = option(False, "replace an existing dataset in output_dir")


@dataclass
class AutolabelResult:
    output_dir: str
    data_yaml: str
    manifest: str
    contact_sheet: str
    counts: dict
    rejected: int
    seconds: float
    reasons: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- input folders
def scan_input(root: Path) -> list[tuple[Path, str | None]]:
    """(image path, folder name or None) for every image: gesture folders or a flat folder."""
    if not root.exists():
        raise UserError(f"--input_dir {root} does not exist; pass a folder of gesture folders or of images")
    if not root.is_dir():
        raise UserError(f"--input_dir {root} is not a folder")
    base = root / "images" if (root / "images").is_dir() and not _images_in(root) else root
    out: list[tuple[Path, str | None]] = [(p, None) for p in _images_in(base)]
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        out += [(p, sub.name) for p in list_images(sub)]
    if not out:
        raise UserError(f"--input_dir {root} holds no images (.jpg, .png, ...) directly or in sub-folders")
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- the rule
def gesture_hand(keypoints: np.ndarray, min_raise: float) -> tuple[int | None, str]:
    """Which of the hands [N, 21, 2+] (pixels) shows the photo's gesture.

    One hand: that one. Two or more: the raised hand, i.e. the highest wrist (smallest y),
    if it is higher than the next one by at least `min_raise` x its hand size (wrist to
    middle knuckle, x2); else None with the reason. Measured on hagrid_sample's 2-hand
    photos, whose annotations say which hand shows the gesture (tests/test_autolabel.py).
    """
    if len(keypoints) == 1:
        return 0, ""
    wrist_y = keypoints[:, 0, 1]
    order = np.argsort(wrist_y)
    best, second = int(order[0]), int(order[1])
    size = 2.0 * float(np.linalg.norm(keypoints[best, 9, :2] - keypoints[best, 0, :2]))
    raise_px = float(wrist_y[second] - wrist_y[best])
    if raise_px < min_raise * max(size, 1.0):
        return None, (f"{len(keypoints)} hands at similar heights (raised by {raise_px:.0f} px < --min_raise "
                      f"{min_raise} x hand size {size:.0f} px): cannot tell which shows the gesture")
    return best, ""


# --------------------------------------------------------------------------- tiles
TILE_OVERLAP = 0.2  # 2 x 2 tiles share this much of a side (N x N: / (N - 1)): a smaller hand lies whole in one
TILE_DEDUP_IOU = 0.3  # a tile's hand overlapping a kept hand by more is the same hand


def tile_windows(width: int, height: int, n: int) -> list[tuple[int, int, int, int]]:
    """N x N overlapping windows (x0, y0, x1, y1) covering the image; each is (1 + TILE_OVERLAP) / N
    of a side, so neighbours share TILE_OVERLAP / (N - 1) of it. [] for n < 2."""
    if n < 2:
        return []
    frac = min(1.0, (1.0 + TILE_OVERLAP) / n)
    tw, th = round(width * frac), round(height * frac)
    xs = np.linspace(0, width - tw, n).round().astype(int)
    ys = np.linspace(0, height - th, n).round().astype(int)
    return [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]


def teacher_hands(pipe, rgb: np.ndarray, tiles: int, min_presence: float) -> tuple[HandResults, int]:
    """The teacher's hands of a photo: the whole photo's (MediaPipe's answer), then the hands
    found only in its tiles (see the module's doc), in pixels of the photo. Returns the hands
    and how many come from the whole photo (they come first)."""
    from shared.models.blazepalm_post import iou_one_to_many  # the inference stack: imported where it runs

    hands = pipe.process(rgb)
    n_whole = len(hands)
    h, w = rgb.shape[:2]
    parts = [hands]
    boxes = np.asarray(hands.xyxy, np.float64)
    for x0, y0, x1, y1 in tile_windows(w, h, tiles):
        found = pipe.process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        for i in range(len(found)):
            box = found.xyxy[i].astype(np.float64)
            # Cut by an inner tile edge (an edge that is not the photo's): the other tile has it whole.
            cut = ((x0 > 0 and box[0] <= 0) or (y0 > 0 and box[1] <= 0)
                   or (x1 < w and box[2] >= x1 - x0) or (y1 < h and box[3] >= y1 - y0))
            if cut or found.score[i] < min_presence:
                continue
            box += (x0, y0, x0, y0)
            if len(boxes) and iou_one_to_many(box, boxes).max() > TILE_DEDUP_IOU:
                continue
            hand = found[i:i + 1]
            hand.xyxy = box[None].astype(np.float32)
            hand.keypoints = hand.keypoints.copy()
            hand.keypoints[..., :2] += (x0, y0)
            parts.append(hand)
            boxes = np.concatenate([boxes.reshape(-1, 4), box[None]])
    return (HandResults.concatenate(parts) if len(parts) > 1 else hands), n_whole


# --------------------------------------------------------------------------- the stage
def _teacher(cfg: AutolabelConfig):
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    pcfg = PipelineConfig(static=True, backend="onnxruntime", max_hands=cfg.max_hands, threads=cfg.threads,
                          detector_score_threshold=cfg.min_detection, box_pad=cfg.box_pad, gesture_model="none")
    return HandPipeline(pcfg)


def autolabel(cfg: AutolabelConfig) -> AutolabelResult:
    t_start = time.perf_counter()
    root = Path(cfg.input_dir)
    if not cfg.input_dir:
        raise UserError("--input_dir is required: a folder of gesture folders or of images")
    inputs = scan_input(root)
    check_outputs(cfg)
    map_path = cfg.gesture_map or default_gesture_map_path()
    gmap = GestureMap.load(map_path, cfg.map_section)
    out = Path(cfg.output_dir)
    _prepare_output(out, argparse.Namespace(input_dir=cfg.input_dir, overwrite=cfg.overwrite))

    # Folder name -> class id (or the unknown-hand label), reported per kind.
    folder_class: dict[str | None, int] = {None: UNKNOWN_HAND_ID}
    unmapped: Counter = Counter()
    dropped: Counter = Counter()
    for _, folder in inputs:
        if folder is None or folder in folder_class:
            continue
        kind, cls = gmap.lookup(folder)
        folder_class[folder] = cls if kind == "keep" else UNKNOWN_HAND_ID
    pipe = _teacher(cfg)

    items: list[SourceItem] = []
    rejected: list[Rejection] = []
    sheet: dict[int, list[tuple[Path, np.ndarray]]] = {}  # per label, every hand (photo, keypoints)
    tile_only = 0  # gesture photos whose hands were all found in tiles: kept as 'hand' only
    for path, folder in tqdm(inputs, desc="teacher", unit="img"):
        key = safe_key(f"{folder}_{path.stem}" if folder else path.stem)
        reason = check_image(path)
        image = None if reason else cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            rejected.append(Rejection(key, reason or "image unreadable by OpenCV", [path]))
            continue
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        hands, n_whole = teacher_hands(pipe, rgb, cfg.tiles, cfg.min_presence)
        h, w = rgb.shape[:2]
        cls = folder_class[folder]
        if folder is not None and cls == UNKNOWN_HAND_ID:
            kind, _ = gmap.lookup(folder)
            (dropped if kind == "drop" else unmapped)[folder] += len(hands)
        if len(hands) == 0:
            rejected.append(Rejection(key, "teacher found no hand", [path]))
            continue
        weak = [float(s) for s in hands.score[:n_whole] if s < cfg.min_presence]
        if weak:
            rejected.append(Rejection(key, f"teacher not confident: hand presence {min(weak):.2f} < --min_presence "
                                           f"{cfg.min_presence}", [path]))
            continue
        classes = [UNKNOWN_HAND_ID] * len(hands)
        if cls != UNKNOWN_HAND_ID and n_whole == 0:
            tile_only += 1  # the gesture hand is chosen among the whole photo's hands: none here
        elif cls != UNKNOWN_HAND_ID:
            which, why = gesture_hand(hands.keypoints[:n_whole], cfg.min_raise)
            if which is None:
                rejected.append(Rejection(key, why, [path]))
                continue
            classes[which] = cls
        labels = []
        for i, c in enumerate(classes):
            kp = hands.keypoints[i].astype(np.float64).copy()
            inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
            kp[:, 2] = np.where(inside, 2.0, 0.0)  # YOLO-pose visibility: points off the image are absent
            labels.append(HandLabel.from_xyxy(c, hands.xyxy[i], w, h, kp))
            sheet.setdefault(c, []).append((path, hands.keypoints[i].copy()))
        items.append(SourceItem(key, labels, image_path=path))

    splits = assign_splits(items, cfg.splits, cfg.seed)
    per_split: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
    for split, split_items in splits.items():
        for item in split_items:
            _write_item(item, split, out)
            per_split[split].append([lb.cls for lb in item.labels])
    _write_rejected(rejected, out)
    sheet_path = out / "contact_sheet.png"
    write_contact_sheet(sheet, sheet_path, cfg.contact_per_class)

    counts = {}
    for split, rows in per_split.items():
        classes = Counter(c for cl in rows for c in cl)
        counts[split] = {"images": len(rows), "hands": sum(classes.values()),
                         "classes": {name: classes.get(i, 0) for i, name in enumerate(LABEL_NAMES)}}
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({
        "path": str(out.resolve()), "train": "train/images", "val": "val/images", "test": "test/images",
        "kpt_shape": [NUM_KEYPOINTS, 3], "flip_idx": list(FLIP_IDX),
        "nc": len(LABEL_NAMES), "names": {i: n for i, n in enumerate(LABEL_NAMES)},
    }, sort_keys=False))
    reasons = Counter(r.reason.split(":")[0].split(" (")[0] for r in rejected)
    seconds = time.perf_counter() - t_start
    manifest = {
        "source": "autolabel",
        "input": str(root),
        "teacher": {"detector": "blazepalm_full", "landmarks": "blazehand_full", "weights": "mediapipe 0.10.21",
                    "backend": "onnxruntime", "mode": "static"},
        "config": asdict(cfg),
        "gesture_map": {"file": str(map_path), "section": cfg.map_section,
                        "folders": {str(k): LABEL_NAMES[v] for k, v in folder_class.items() if k is not None}},
        "names": list(LABEL_NAMES),
        "unknown_hand_label": UNKNOWN_HAND,
        "counts": counts,
        "total_images": sum(c["images"] for c in counts.values()),
        "content_hash": _content_hash(out),
        "rejected": [{"item": r.item, "file": str(r.files[0]) if r.files else None, "reason": r.reason}
                     for r in rejected],
        "rejected_by_reason": dict(reasons),
        "unmapped_names": dict(unmapped),
        "gesture_photos_with_tile_hands_only": tile_only,
        "dropped_names": dict(dropped),
        "seconds": round(seconds, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    save_config(cfg, out / "autolabel_config.yaml")
    return AutolabelResult(str(out), str(data_yaml), str(out / "manifest.json"), str(sheet_path), counts,
                           len(rejected), seconds, dict(reasons))


# --------------------------------------------------------------------------- contact sheet
def write_contact_sheet(hands: dict[int, list[tuple[Path, np.ndarray]]], path: Path, per_class: int = 8,
                        tile: int = 128) -> None:
    """A grid: one row per label (our gestures, then `hand`), `per_class` crops with keypoints
    drawn, spread evenly over that label's hands (so over folders, not the first folder only)."""
    sheet = {}
    for c, items in hands.items():
        picks = np.unique(np.linspace(0, len(items) - 1, min(per_class, len(items))).round().astype(int))
        sheet[c] = [(cv2.cvtColor(cv2.imread(str(items[k][0])), cv2.COLOR_BGR2RGB), items[k][1]) for k in picks]
    rows = [c for c in range(len(LABEL_NAMES)) if sheet.get(c)]
    cols = max((len(sheet[c]) for c in rows), default=1)
    label_w = 120
    canvas = np.full((max(len(rows), 1) * tile, label_w + cols * tile, 3), 255, np.uint8)
    for r, c in enumerate(rows):
        cv2.putText(canvas, LABEL_NAMES[c], (6, r * tile + tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for k, (rgb, kp) in enumerate(sheet[c]):
            canvas[r * tile:(r + 1) * tile, label_w + k * tile:label_w + (k + 1) * tile] = _crop_tile(rgb, kp, tile)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


def _crop_tile(rgb: np.ndarray, kp: np.ndarray, tile: int) -> np.ndarray:
    lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * 1.4 + 8
    scale = tile / side
    m = np.array([[scale, 0, tile / 2 - scale * centre[0]], [0, scale, tile / 2 - scale * centre[1]]])
    crop = cv2.warpAffine(rgb, m, (tile, tile), flags=cv2.INTER_AREA, borderValue=(255, 255, 255))
    pts = kp[:, :2] * scale + m[:, 2]
    for a, b in SKELETON:
        cv2.line(crop, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), (0, 200, 0), 1, cv2.LINE_AA)
    for p in pts:
        cv2.circle(crop, (int(p[0]), int(p[1])), 2, (255, 0, 0), -1, cv2.LINE_AA)
    return crop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.autolabel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with AutolabelConfig keys (flags override it)")
    add_config_args(parser, AutolabelConfig)
    args = parser.parse_args(argv)
    cfg = load_config(AutolabelConfig, args.config, args)
    result = autolabel(cfg)
    for split, c in result.counts.items():
        print(f"{split:5s} {c['images']:6d} images {c['hands']:6d} hands  {c['classes']}")
    print(f"rejected {result.rejected} photo(s): {result.reasons} (see {Path(result.output_dir) / 'manifest.json'})")
    print(f"contact sheet: {result.contact_sheet}")
    print(f"dataset: {result.data_yaml}  ({result.seconds:.0f} s)")
    if sum(c["images"] for c in result.counts.values()) == 0:
        print("error: the teacher labelled no photo; see the reasons in manifest.json", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)


__all__ = ["AutolabelConfig", "AutolabelResult", "autolabel", "gesture_hand", "scan_input", "write_contact_sheet"]
