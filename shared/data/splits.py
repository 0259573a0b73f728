"""The splits of a YOLO dataset (`data.yaml`): where each split's images and labels are, checked.

Training stages read their data through these: `split_dirs(data, "train")` finds the
folders (Roboflow's and Ultralytics' path conventions), `check_dataset_names` refuses a
dataset whose class ids are not ours, `resolve_crop_splits` takes explicit folders first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import read_yaml
from shared.errors import UserError
from shared.hand import GESTURES, LABEL_NAMES, UNKNOWN_HAND


@dataclass(frozen=True)
class SplitDirs:
    images: Path
    labels: Path


def _images_to_labels(images: Path) -> Path:
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):  # the last "images" component, as Ultralytics does
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def dataset_yaml(data: str | Path) -> Path:
    """`data` is a data.yaml or a dataset folder holding one."""
    path = Path(data)
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise UserError(f"{path}: data.yaml not found; pass the dataset folder written by components.ingest "
                        f"(D with D/data.yaml) or the YAML itself")
    return path


def check_dataset_names(yaml_path: Path, info: dict[str, Any]) -> list[str]:
    """The class names of a training dataset's data.yaml, which must be ours in id order: its
    label files hold class ids, and reading ids of other names as our gestures would train on
    wrong labels silently. A dataset written by components.ingest always passes."""
    names = info.get("names")
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            names = list(names.values())
    if not names:
        raise UserError(f"{yaml_path}: no `names:`; the label files' class ids cannot be read without them. Run "
                        f"`python -m components.ingest --source folder --input_dir {yaml_path.parent}` to map the "
                        f"dataset's classes to ours ({', '.join(GESTURES)})")
    names = [str(n) for n in names] if isinstance(names, list) else names
    # Ours in id order, optionally followed by `hand` (autolabel: a hand whose gesture is unknown), or
    # the one class `hand` of a hand detector's dataset.
    if not isinstance(names, list) or (names != list(LABEL_NAMES[:len(names)]) and names != [UNKNOWN_HAND]):
        raise UserError(f"{yaml_path}: class names {names} are not ours ({', '.join(GESTURES)}, in this order); "
                        f"run `python -m components.ingest --source folder --input_dir {yaml_path.parent}` to map "
                        f"them through configs/gesture_map.yaml")
    return names


def split_dirs(data: str | Path, split: str) -> SplitDirs:
    """Images/labels folders of one split (`train`, `val`, `test`) of a YOLO dataset YAML."""
    yaml_path = dataset_yaml(data)
    info = read_yaml(yaml_path)
    check_dataset_names(yaml_path, info)
    entry = info.get(split) or (info.get("valid") if split == "val" else None)
    if not entry:
        raise UserError(f"{yaml_path}: no `{split}:` entry; add `{split}: {split}/images`")
    if isinstance(entry, list):
        entry = entry[0]
    base = Path(info.get("path") or yaml_path.parent)
    if not base.is_absolute():
        base = yaml_path.parent / base
    entry_path = Path(str(entry))
    # Roboflow exports write "../train/images" relative to a parent they never name: try the sensible readings.
    candidates = [base / entry_path, yaml_path.parent / entry_path,
                  yaml_path.parent / Path(*[p for p in entry_path.parts if p != ".."])]
    images = next((c.resolve() for c in candidates if c.is_dir()), None)
    if images is None:
        raise UserError(f"{yaml_path}: {split} images folder {entry!r} not found (looked in "
                        f"{', '.join(str(c) for c in candidates)}); fix `path:`/`{split}:`")
    return SplitDirs(images, _images_to_labels(images))


def resolve_crop_splits(cfg: Any) -> tuple[SplitDirs, SplitDirs]:
    """Train/val folders from explicit `--train_images ...` flags, else from `--data`."""
    if cfg.train_images:
        train = SplitDirs(Path(cfg.train_images), Path(cfg.train_labels or _images_to_labels(Path(cfg.train_images))))
    elif cfg.data:
        train = split_dirs(cfg.data, "train")
    else:
        raise UserError("no training data: pass --data D (a dataset with data.yaml) or --train_images/--train_labels")
    if cfg.val_images:
        val = SplitDirs(Path(cfg.val_images), Path(cfg.val_labels or _images_to_labels(Path(cfg.val_images))))
    elif cfg.data:
        val = split_dirs(cfg.data, "val")
    else:
        raise UserError("no validation data: pass --val_images/--val_labels (or --data D)")
    return train, val


