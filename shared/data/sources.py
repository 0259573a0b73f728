"""Dataset sources -> `SourceItem`s in our five gesture classes, plus the rejected rest.

Readers: a local YOLO / YOLO-pose folder (also Roboflow's export layout), a
Roboflow download through its SDK, HaGRID, and the synthetic generator. Class
names are mapped through a `GestureMap` (a YAML table in `configs/`): mapped,
deliberately dropped, or unmapped — never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from shared.data.hagrid import read_hagrid
from shared.data.images import check_image  # noqa: F401 - the one strict check, re-exported here
from shared.data.labels import (
    IMAGE_SUFFIXES,
    HandLabel,
    LabelIssue,
    list_images,
    parse_line,
)
from shared.errors import UserError
from shared.hand import GESTURE_TO_ID, GESTURES, NUM_KEYPOINTS
from shared.paths import CONFIGS_DIR

SPLIT_ALIASES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}


@dataclass
class SourceItem:
    """One image and its hands, already in our class ids."""

    key: str  # unique, filesystem-safe stem for the output files
    labels: list[HandLabel]
    image_path: Path | None = None  # copied byte for byte
    image: np.ndarray | None = None  # or encoded from pixels (synthetic), BGR uint8
    split: str | None = None  # the source's own split, when it has one
    group: str | None = None  # subject id: items of one group never straddle splits
    notes: list[str] = field(default_factory=list)


@dataclass
class Rejection:
    item: str
    reason: str
    files: list[Path] = field(default_factory=list)


@dataclass
class SourceReport:
    items: list[SourceItem] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    unmapped: dict[str, int] = field(default_factory=dict)  # source name -> hands seen
    dropped: dict[str, int] = field(default_factory=dict)
    mapping: str = ""  # why this gesture-map section was applied (folder sources)


# --------------------------------------------------------------------------- gesture map
@dataclass
class GestureMap:
    names: dict[str, str]
    drop: set[str]
    two_hands: str = "never"  # never | union

    @classmethod
    def load(cls, path: str | Path, section: str) -> GestureMap:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"gesture map not found: {path} (pass --gesture_map FILE, see configs/gesture_map.yaml)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({exc})") from None
        sec = data.get(section)
        if sec is None:
            raise UserError(f"{path}: no '{section}:' section; add one with 'names:' and 'drop:'")
        unknown = set(sec) - {"names", "drop", "two_hands"}
        if unknown:
            raise UserError(f"{path}: section '{section}' has unknown key(s) {sorted(unknown)}; "
                            "valid: names, drop, two_hands")
        names = {str(k): str(v) for k, v in (sec.get("names") or {}).items()}
        bad = {k: v for k, v in names.items() if v not in GESTURE_TO_ID}
        if bad:
            raise UserError(f"{path}: section '{section}' maps to unknown gesture(s) {bad}; "
                            f"targets must be one of {list(GESTURES)}")
        two_hands = str(sec.get("two_hands", "never"))
        if two_hands not in ("never", "union"):
            raise UserError(f"{path}: '{section}.two_hands' must be 'never' or 'union', got {two_hands!r}")
        return cls(names, {str(n) for n in sec.get("drop") or []}, two_hands)

    def lookup(self, name: str) -> tuple[str, int | None]:
        """('keep', class id) | ('drop', None) | ('unmapped', None)."""
        if name in self.names:
            return "keep", GESTURE_TO_ID[self.names[name]]
        if name in GESTURE_TO_ID and name not in self.drop:
            return "keep", GESTURE_TO_ID[name]  # already one of ours
        if name in self.drop:
            return "drop", None
        return "unmapped", None


def default_gesture_map_path() -> Path:
    return CONFIGS_DIR / "gesture_map.yaml"


# --------------------------------------------------------------------------- helpers
def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.width, im.height


def safe_key(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def union_label(a: HandLabel, b: HandLabel) -> HandLabel:
    """One 2_hands box around two hands; keypoints of the larger hand."""
    xa, xb = a.xyxy(), b.xyxy()
    x1, y1 = min(xa[0], xb[0]), min(xa[1], xb[1])
    x2, y2 = max(xa[2], xb[2]), max(xa[3], xb[3])
    big = a if a.box[2] * a.box[3] >= b.box[2] * b.box[3] else b
    return HandLabel(GESTURE_TO_ID["2_hands"], np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]),
                     big.keypoints.copy())


def _apply_map(names_and_labels: list[tuple[str, HandLabel]], gmap: GestureMap, report: SourceReport,
               ) -> tuple[list[HandLabel] | None, str | None]:
    """Map source names to ours; (labels, None) or (None, reason to reject the image)."""
    out: list[HandLabel] = []
    for name, label in names_and_labels:
        action, cls_id = gmap.lookup(name)
        if action == "keep":
            out.append(HandLabel(cls_id, label.box, label.keypoints))
        elif action == "drop":
            report.dropped[name] = report.dropped.get(name, 0) + 1
            return None, f"has a hand of dropped class '{name}' (see the gesture map's 'drop' list)"
        else:
            report.unmapped[name] = report.unmapped.get(name, 0) + 1
            return None, f"has a hand of unmapped class '{name}': add it to the gesture map's 'names' or 'drop'"
    if gmap.two_hands == "union" and len(out) == 2:
        out = [union_label(out[0], out[1])]
    return out, None


# --------------------------------------------------------------------------- folder / Roboflow export
def _resolve_split_dirs(root: Path, data_yaml: dict) -> list[tuple[str | None, Path, Path]]:
    """[(split or None, images_dir, labels_dir)] for a YOLO folder.

    Tries, in order: data.yaml's train/val/test paths (relative to root or its `path:`,
    or absolute); `train/ valid/ val/ test/` sub-folders; a single `images/ + labels/`.
    Roboflow's exports carry absolute paths of the exporting machine, which are
    ignored when they do not exist here.
    """
    found: list[tuple[str | None, Path, Path]] = []
    base = Path(data_yaml.get("path") or root)
    if not base.is_absolute():
        base = root / base
    for key in ("train", "val", "test"):
        value = data_yaml.get(key)
        if not isinstance(value, str):
            continue
        for candidate in (Path(value), base / value, root / value):
            if candidate.is_dir():
                images = candidate
                labels = Path(str(images).replace(f"{os.sep}images", f"{os.sep}labels"))
                if (images, labels) not in [(f[1], f[2]) for f in found]:
                    found.append((key, images, labels))
                break
    if found:
        return found
    for sub in ("train", "valid", "val", "test"):
        if (root / sub / "images").is_dir():
            found.append((SPLIT_ALIASES[sub], root / sub / "images", root / sub / "labels"))
    if found:
        return found
    if (root / "images").is_dir():
        return [(None, root / "images", root / "labels")]
    if list_images(root):
        return [(None, root, root)]
    raise UserError(f"{root}: no images found; expected train/ valid/ test/ sub-folders with images/ + labels/, "
                    "or images/ + labels/")


def _parse_label_file(path: Path, names: list[str]) -> tuple[list[tuple[str, HandLabel]], list[LabelIssue], list[str]]:
    """Lines -> (source name, label); polygon lines (YOLO-seg) become their bounding box."""
    out: list[tuple[str, HandLabel]] = []
    issues: list[LabelIssue] = []
    notes: list[str] = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return [], [LabelIssue(str(path), 0, "label file is not text")], []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 5 and len(tokens) != 5 + NUM_KEYPOINTS * 3 and (len(tokens) - 1) % 2 == 0:
            polygon = _polygon_to_box_line(tokens)
            if polygon is not None:
                notes.append(f"{path.name}:{lineno}: polygon (segmentation) line read as its bounding box")
                tokens = polygon
        parsed = parse_line(" ".join(tokens), str(path), lineno, num_classes=len(names), notes=notes)
        if isinstance(parsed, LabelIssue):
            issues.append(parsed)
        else:
            out.append((names[parsed.cls], parsed))
    return out, issues, notes


def _polygon_to_box_line(tokens: list[str]) -> list[str] | None:
    try:
        pts = np.array([float(t) for t in tokens[1:]]).reshape(-1, 2)
    except ValueError:
        return None
    lo, hi = pts.min(0), pts.max(0)
    box = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[0] - lo[0], hi[1] - lo[1]]
    return [tokens[0]] + [repr(float(v)) for v in box]


def read_data_yaml(root: str | Path) -> tuple[dict, list[str] | None]:
    """(data.yaml of a folder dataset, its class names in id order); ({}, None) without a data.yaml.

    A data.yaml without `names:` is an error: the label files hold class ids, and reading them
    with anyone's names but the dataset's own would mislabel every hand silently."""
    path = Path(root) / "data.yaml"
    if not path.is_file():
        return {}, None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping (train:, val:, names: ...)")
    names = data.get("names")
    if not names:
        raise UserError(f"{path}: no `names:`; the label files hold class ids, and without the dataset's own names "
                        f"they cannot be mapped (add `names: [...]` in class-id order, as the exporter wrote them)")
    if isinstance(names, dict):  # ultralytics style {0: name, ...}
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise UserError(f"{path}: `names:` keys must be class ids 0..N-1, got {sorted(map(str, names))}") from None
    if not isinstance(names, list):
        raise UserError(f"{path}: `names:` must be a list (or an id -> name mapping), got {names!r}")
    names = [str(n) for n in names]
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise UserError(f"{path}: nc: {nc} but {len(names)} names; fix one of them")
    return data, names


def is_roboflow_export(root: str | Path, data_yaml: dict) -> bool:
    """Roboflow's export: its README.roboflow.txt or `roboflow:` block in data.yaml, or its layout
    (train/ valid/ [test/] folders each with images/)."""
    root = Path(root)
    if (root / "README.roboflow.txt").is_file() or "roboflow" in data_yaml:
        return True
    return (root / "train" / "images").is_dir() and (root / "valid" / "images").is_dir()


def folder_map_section(root: str | Path, map_path: str | Path) -> tuple[str, str]:
    """(section of the gesture map for a folder dataset, why): `roboflow` for a Roboflow
    export (recognised by `is_roboflow_export`) whose names that section knows, `folder`
    (identity) for names that are ours, else the one section that knows every name; `folder`
    when none does (its unmapped names are then reported per image)."""
    data, names = read_data_yaml(root)
    if names is None:
        return "folder", "no data.yaml: class ids are read as ours (" + \
            ", ".join(f"{i} {n}" for i, n in enumerate(GESTURES)) + ")"
    try:
        sections = yaml.safe_load(Path(map_path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        sections = {}  # GestureMap.load reports the file's problem
    covering = [sec for sec, body in sections.items() if isinstance(body, dict) and sec != "folder"
                and set(names) <= set(map(str, body.get("names") or {})) | set(map(str, body.get("drop") or []))
                | set(GESTURES)]
    if is_roboflow_export(root, data) and ("roboflow" in covering or not set(names) <= set(GESTURES)):
        return "roboflow", "a Roboflow export"
    if set(names) <= set(GESTURES):
        return "folder", "the class names are ours"
    if len(covering) == 1:
        return covering[0], f"its section maps every class name ({', '.join(names)})"
    return "folder", "no section of the map knows every class name"


def read_folder(root: str | Path, gmap: GestureMap) -> SourceReport:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"input folder not found: {root} (pass --input_dir with a YOLO / Roboflow export folder)")
    data_yaml, names = read_data_yaml(root)
    if names is None:  # no data.yaml: a folder in our own format (documented: ids are ours)
        names = list(GESTURES)
    report = SourceReport()
    for split, images_dir, labels_dir in _resolve_split_dirs(root, data_yaml):
        images = list_images(images_dir) if images_dir != labels_dir else \
            sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        stems = set()
        for image in images:
            rel = image.relative_to(images_dir)
            stems.add(rel.with_suffix(""))
            key = safe_key(f"{split + '_' if split else ''}{rel.with_suffix('').as_posix()}")
            label_path = (labels_dir / rel).with_suffix(".txt")
            files = [image] + ([label_path] if label_path.is_file() else [])
            reason = check_image(image)
            if reason:
                report.rejected.append(Rejection(str(image), reason, files))
                continue
            parsed: list[tuple[str, HandLabel]] = []
            notes: list[str] = []
            if label_path.is_file():
                parsed, issues, notes = _parse_label_file(label_path, names)
                if issues:
                    report.rejected.append(Rejection(str(label_path), "; ".join(str(i) for i in issues), files))
                    continue
            labels, reason = _apply_map(parsed, gmap, report)
            if labels is None:
                report.rejected.append(Rejection(str(image), reason or "", files))
                continue
            if not label_path.is_file():
                notes.append(f"{rel}: no label file (an image without hands)")
            report.items.append(SourceItem(key, labels, image_path=image, split=split, notes=notes))
        if labels_dir.is_dir() and labels_dir != images_dir:
            for label_path in sorted(labels_dir.rglob("*.txt")):
                if label_path.relative_to(labels_dir).with_suffix("") not in stems:
                    report.rejected.append(Rejection(str(label_path), "label without image", [label_path]))
    return report


def download_roboflow(api_key: str | None, workspace: str, project: str, version: int, fmt: str,
                      location: Path) -> Path:
    """Download a Roboflow dataset version with the official SDK; one clear error offline."""
    api_key = api_key or os.environ.get("ROBOFLOW_API_KEY")
    if not api_key:
        raise UserError("Roboflow needs an API key: pass --api_key or set ROBOFLOW_API_KEY")
    if not (workspace and project and version):
        raise UserError("Roboflow needs --workspace, --project and --version")
    try:
        from roboflow import Roboflow

        rf = Roboflow(api_key=api_key)
        dataset = rf.workspace(workspace).project(project).version(int(version)).download(fmt, location=str(location))
    except UserError:
        raise
    except Exception as exc:  # the SDK raises assorted network / HTTP errors
        raise UserError(f"Roboflow download of {workspace}/{project}/{version} failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''} — check the network, key and ids, "
                        "or download the export yourself and use --source folder --input_dir") from None
    return Path(getattr(dataset, "location", location))


# --------------------------------------------------------------------------- HaGRID
def read_hagrid_source(root: str | Path, gmap: GestureMap) -> SourceReport:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"HaGRID folder not found: {root} (pass --input_dir with annotations/ and images/)")
    images, issues = read_hagrid(root)
    report = SourceReport()
    for issue in issues:
        report.rejected.append(Rejection(issue.path, issue.reason, [Path(issue.path.split("[")[0])]))
    for item in images:
        reason = check_image(item.image_path)
        if reason:
            report.rejected.append(Rejection(str(item.image_path), reason, [item.image_path]))
            continue
        named: list[tuple[str, HandLabel]] = []
        for hand in item.hands:
            x, y, w, h = hand.bbox
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, 1.0), min(y + h, 1.0)
            kp = np.zeros((NUM_KEYPOINTS, 3))
            if hand.landmarks is not None:
                inside = ((hand.landmarks >= 0) & (hand.landmarks <= 1)).all(1)
                kp[inside, :2] = hand.landmarks[inside]
                kp[inside, 2] = 2
            named.append((hand.label, HandLabel(0, np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]), kp)))
        labels, reason = _apply_map(named, gmap, report)
        if labels is None:
            report.rejected.append(Rejection(str(item.image_path), reason or "", [item.image_path]))
            continue
        report.items.append(SourceItem(safe_key(f"{item.gesture}_{item.uuid}"), labels, image_path=item.image_path,
                                       group=item.user_id))
    return report


# --------------------------------------------------------------------------- synthetic
def iter_synthetic(num_images: int, seed: int, image_size: int = 320) -> Iterator[SourceItem]:
    from shared.data.synthetic import SyntheticConfig, render_image

    cfg = SyntheticConfig(image_size=image_size)
    for i in range(num_images):
        sample = render_image(seed, i, cfg)
        yield SourceItem(f"synth_{seed}_{i:06d}", sample.labels, image=sample.image)
