"""Relabel gestures with a trained classifier (the seed's utils/update_labels.py).

    python -m components.relabel --images_dir D/train/images --labels_dir D/train/labels \\
        --model_weights checkpoints/classifier/best.pt --model_type timm --model_name mobilenetv3_small_100 \\
        --num_classes 5 --img_size 224 --min_confidence 0.9 --output_dir D/train/labels_relabeled --verbose

Every labelled hand is cut exactly as the model was trained on it (the box crop
for a timm classifier, the upright keypoint crop for BlazeHand; the crop
convention is read from our checkpoints), classified, and its class id set to
the prediction when the confidence is at least `--min_confidence`. Only the
class token changes: the rest of each line (box and keypoints) is kept byte for
byte, and so is every file without a change.

Output: a new labels folder (default `<labels_dir>_relabeled`), or with
`--in_place` the original folder after a full backup copy. A report
(`relabel_report.json`) counts the from -> to pairs and lists every changed line.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.config import add_config_args, load_config, option
from shared.errors import UserError, run_cli
from shared.hand import GESTURES

MODEL_TYPES = ("timm", "blazehand")


@dataclass
class RelabelConfig:
    images_dir: str = option("", "images folder (YOLO layout)")
    labels_dir: str = option("", "labels folder to relabel (never modified unless --in_place)")
    model_weights: str = option("", "classifier weights: our best.pt, or a bare state dict .pth")
    model_type: str = option("timm", "timm | blazehand", metadata={"choices": MODEL_TYPES})
    model_name: str = option("mobilenetv3_small_100", "timm model name, or blazehand_full / blazehand_lite "
                                                       "(for bare state dicts; our checkpoints say it themselves)")
    num_classes: int = option(len(GESTURES), "classes of the model")
    img_size: int = option(0, "crop side in pixels (0 = from the checkpoint, else 224)")
    expand_ratio: float = option(-1.0, "crop expansion (-1 = from the checkpoint; else 0.3 box crops for timm, "
                                       "0.5 keypoint crops for blazehand)")
    min_confidence: float = option(0.9, "change a class only when the prediction's probability is at least this")
    output_dir: str = option("", "new labels folder (default: <labels_dir>_relabeled)")
    in_place: bool = option(False, "rewrite --labels_dir itself, after copying it to --backup_dir")
    backup_dir: str = option("", "backup of the original labels for --in_place (default: "
                                 "<labels_dir>.backup-<time>)")
    overwrite: bool = option(False, "replace an existing --output_dir")
    report: str = option("", "report path (default: <output folder>/relabel_report.json; with --in_place: "
                             "<backup_dir>/relabel_report.json)")
    batch_size: int = option(32, "crops per forward pass")
    device: str = option("", "'' = cuda if available else cpu")
    verbose: bool = option(False, "print every changed line")


@dataclass
class LineChange:
    file: str  # label file, relative to the labels folder
    line: int  # 1-based
    image: str
    old: int
    new: int
    confidence: float


@dataclass
class RelabelResult:
    labels_dir: str  # the folder holding the new labels
    report: str
    hands: int
    changed: int
    counts: dict[str, int] = field(default_factory=dict)  # "from->to": n
    backup_dir: str = ""
    skipped_lines: list[str] = field(default_factory=list)
    changes: list[LineChange] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- model

def load_classifier(cfg: RelabelConfig) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, crop settings {img_size, expand_ratio, rotate, use_box, output})."""
    from shared.training.callbacks import CHECKPOINT_FORMAT, load_checkpoint, read_checkpoint

    path = Path(cfg.model_weights)
    if not cfg.model_weights or not path.is_file():
        raise UserError(f"--model_weights {cfg.model_weights or '(missing)'}: file not found; pass a best.pt from "
                        f"`components.train` or a .pth state dict")
    ckpt = read_checkpoint(path)
    if ckpt.get("format") == CHECKPOINT_FORMAT and ckpt.get("model_name"):
        model, ckpt = load_checkpoint(path)
        roi = ckpt.get("roi") or {}
        is_timm = str(ckpt["model_name"]).startswith("timm:")
        img_size = int(ckpt.get("img_size") or 224)
        expand, rotate = float(roi.get("expand_ratio", 0.3 if is_timm else 0.5)), bool(roi.get("rotate", False))
        use_box = roi.get("source", "box" if is_timm else "keypoints") == "box"
        if cfg.model_type == "timm" and not is_timm or cfg.model_type == "blazehand" and is_timm:
            print(f"note: {path} holds {ckpt['model_name']}; using it as such (--model_type {cfg.model_type} ignored)")
    elif cfg.model_type == "timm":
        from shared.models.classifier import create_timm_classifier

        model = create_timm_classifier(cfg.model_name, num_classes=cfg.num_classes, pretrained_weights=str(path))
        is_timm, img_size, expand, rotate, use_box = True, 224, 0.3, False, True
    else:
        from shared.models.registry import create_model

        name = cfg.model_name if cfg.model_name.startswith("blazehand") else "blazehand_full"
        model = create_model(name, num_gestures=cfg.num_classes, pretrained_weights=str(path))
        is_timm, img_size, expand, rotate, use_box = False, 224, 0.5, True, False
    report = getattr(model, "load_report", None)
    if report is not None and getattr(report, "missing_keys", None):
        raise UserError(f"{path}: weights do not fit {cfg.model_name} (missing {report.missing_keys[:3]}); pass the "
                        f"--model_name / --num_classes it was trained with")
    crop = {"img_size": cfg.img_size or img_size, "expand_ratio": cfg.expand_ratio if cfg.expand_ratio >= 0 else expand,
            "rotate": rotate, "use_box": use_box, "output": None if is_timm else "gesture_logits"}
    return model.eval(), crop


def predict(model: Any, dataset: Any, output: str | None, batch_size: int, device: str) -> tuple[Any, Any]:
    """(predicted class [N], confidence [N]) for every crop of `dataset`, in order."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    model.to(device)
    preds, confs = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.inference_mode():
        for batch in tqdm(loader, desc="classifying hands", unit="batch", leave=False):
            out = model(batch["image"].to(device))
            logits = out[output] if output else out  # [B, C]
            prob = logits.float().softmax(-1)
            conf, pred = prob.max(-1)
            preds.append(pred.cpu())
            confs.append(conf.cpu())
    return torch.cat(preds).numpy(), torch.cat(confs).numpy()


# ---------------------------------------------------------------------------------------------- files

_FIRST_TOKEN = re.compile(r"(\s*)(\S+)(.*)", re.S)


def replace_class(line: str, new_cls: int) -> str:
    """`line` with its first token (the class id) replaced; every other byte kept."""
    m = _FIRST_TOKEN.match(line)
    if m is None:
        raise ValueError(f"no class token in {line!r}")
    return f"{m.group(1)}{new_cls}{m.group(3)}"


def rewrite_file(path: Path, changes: dict[int, int]) -> str:
    """The file's text with the class of each changed line (1-based) replaced."""
    text = path.read_bytes().decode("utf-8")
    lines = text.splitlines(keepends=True)  # the same numbering as shared.data.labels.read_labels
    for lineno, new_cls in changes.items():
        lines[lineno - 1] = replace_class(lines[lineno - 1], new_cls)
    return "".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- stage

def relabel(cfg: RelabelConfig) -> RelabelResult:
    import torch

    from shared.data.crops import HandCropDataset

    labels_dir = Path(cfg.labels_dir)
    images_dir = Path(cfg.images_dir)
    if not 0.0 <= cfg.min_confidence <= 1.0:
        raise UserError(f"--min_confidence {cfg.min_confidence}: a probability in [0, 1]")
    if cfg.in_place and cfg.output_dir:
        raise UserError("--in_place and --output_dir exclude each other; pass one")
    model, crop = load_classifier(cfg)
    dataset = HandCropDataset(images_dir, labels_dir, img_size=crop["img_size"], expand_ratio=crop["expand_ratio"],
                              rotate=crop["rotate"], use_box=crop["use_box"], num_classes=cfg.num_classes)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pred, conf = predict(model, dataset, crop["output"], cfg.batch_size, device)

    changes: list[LineChange] = []
    for record, p, c in zip(dataset.records, pred, conf):
        if c >= cfg.min_confidence and int(p) != record.label.cls:
            changes.append(LineChange(str(record.label_file.relative_to(labels_dir)), record.line,
                                      str(record.image), record.label.cls, int(p), round(float(c), 4)))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = ""
    if cfg.in_place:
        target = labels_dir
        default_backup = labels_dir.with_name(f"{labels_dir.name}.backup-{stamp}")
        backup_dir = Path(cfg.backup_dir) if cfg.backup_dir else default_backup
        if backup_dir.exists():
            raise UserError(f"{backup_dir}: backup folder exists; pass another --backup_dir")
        shutil.copytree(labels_dir, backup_dir)  # the whole original, before any byte changes
        backup = str(backup_dir)
        report_path = Path(cfg.report) if cfg.report else backup_dir / "relabel_report.json"
    else:
        target = Path(cfg.output_dir) if cfg.output_dir else labels_dir.with_name(f"{labels_dir.name}_relabeled")
        if target.resolve() == labels_dir.resolve():
            raise UserError(f"--output_dir {target} is the input folder; use --in_place to rewrite it")
        if target.exists():
            if not cfg.overwrite:
                raise UserError(f"{target}: output folder exists; pass --overwrite or another --output_dir")
            shutil.rmtree(target)
        shutil.copytree(labels_dir, target)  # unchanged files stay byte-identical copies
        report_path = Path(cfg.report) if cfg.report else target / "relabel_report.json"

    by_file: dict[str, dict[int, int]] = {}
    for ch in changes:
        by_file.setdefault(ch.file, {})[ch.line] = ch.new
    for rel, file_changes in by_file.items():
        _write_atomic(target / rel, rewrite_file(labels_dir / rel if not cfg.in_place else Path(backup) / rel,
                                                 file_changes))

    names = GESTURES if cfg.num_classes == len(GESTURES) else tuple(str(i) for i in range(cfg.num_classes))
    counts = Counter(f"{names[ch.old]}->{names[ch.new]}" for ch in changes)
    result = RelabelResult(labels_dir=str(target), report=str(report_path), hands=len(dataset.records),
                           changed=len(changes), counts=dict(sorted(counts.items())), backup_dir=backup,
                           skipped_lines=[str(i) for i in dataset.issues], changes=changes)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report = {"source_labels": str(labels_dir), "images": str(images_dir), "model_weights": cfg.model_weights,
              "min_confidence": cfg.min_confidence, "crop": crop, **asdict(result)}
    report_path.write_text(json.dumps(report, indent=2))
    return result


def print_report(result: RelabelResult, verbose: bool) -> None:
    print(f"{result.changed} of {result.hands} hands relabelled -> {result.labels_dir}")
    if result.counts:
        width = max(len(k) for k in result.counts)
        for pair, n in result.counts.items():
            print(f"  {pair:<{width}}  {n}")
    if verbose:
        for ch in result.changes:
            print(f"  {ch.file}:{ch.line}: {GESTURES[ch.old] if ch.old < len(GESTURES) else ch.old} -> "
                  f"{GESTURES[ch.new] if ch.new < len(GESTURES) else ch.new} ({ch.confidence:.3f})")
    if result.skipped_lines:
        print(f"{len(result.skipped_lines)} malformed label line(s) kept unchanged, e.g. {result.skipped_lines[0]}")
    if result.backup_dir:
        print(f"backup of the original labels: {result.backup_dir}")
    print(f"report: {result.report}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.relabel", description=__doc__.split("\n\n")[0])
    add_config_args(parser, RelabelConfig)
    args = parser.parse_args(argv)
    cfg = load_config(RelabelConfig, None, args)  # flags through the one validation path
    for name in ("images_dir", "labels_dir", "model_weights"):
        if not getattr(cfg, name):
            raise UserError(f"--{name} is required")
    print_report(relabel(cfg), cfg.verbose)
    return 0


if __name__ == "__main__":
    run_cli(main)
