"""Gesture classification with a fine-tuned G-MAE (the seed's src/scripts/inference.py): evaluate or predict.

    # accuracy, macro-F1 and the confusion matrix on a labelled split
    python -m components.classify --config configs/inference.yaml --weights C/best.pt --data_dir D --split test \\
        --output_dir E
    # class + probability for every image of a folder
    python -m components.classify --config configs/inference.yaml --weights C/best.pt --images FOLDER --output_dir E

`D` is a split root (`D/finetune_dataset/test`), a folder with `test/`, or a
class tree. Evaluation writes `evaluation.json` (accuracy, macro_f1,
per-class F1, confusion matrix), `confusion_matrix.csv` / `.png` and
`eval_predictions.csv`; prediction writes `predictions.json` and
`predictions.csv` (path, class, probability). Both write `classify_summary.json`.
The checkpoint carries the model, class names, input size and normalisation,
so preprocessing matches training's validation transform.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import add_config_args, option, save_config
from shared.errors import UserError, run_cli
from shared.paths import CONFIGS_DIR

DEFAULT_CONFIG = CONFIGS_DIR / "inference.yaml"


@dataclass
class ClassifyConfig:
    weights: str = option("", "best.pt of `--task gmae_finetune` (any classifier checkpoint in the project format)")
    data_dir: str = option("", "evaluate: a labelled split root, a folder with <split>/, or a class tree")
    split: str = option("test", "the split of data_dir to evaluate", metadata={"choices": ["test", "val", "train"]})
    images: str = option("", "predict: a folder of images (searched recursively)")
    output_dir: str = option("outputs/classify", "evaluation.json / predictions.json / CSVs / summary")
    batch_size: int = option(64, "images per batch")
    num_workers: int = option(0, "data-loading worker processes")
    device: str = option("auto", "cpu | cuda | auto")
    img_size: int = option(0, "input side (0 = the checkpoint's)")


@dataclass
class ClassifyResult:
    output_dir: str
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluation: accuracy, macro_f1, confusion_matrix, ...
    evaluation: str = ""
    predictions_json: str = ""
    predictions_csv: str = ""
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- core
def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


def load_classifier(weights: str | Path, device: str = "auto") -> tuple[Any, dict[str, Any], Any]:
    """(model in eval mode on the device, checkpoint dict, device)."""
    from shared.training.callbacks import load_checkpoint

    if not weights:
        raise UserError("no model: pass --weights (the best.pt of a fine-tuning run)")
    model, ckpt = load_checkpoint(weights)
    if not ckpt.get("gesture_names"):
        raise UserError(f"{weights}: the checkpoint has no class names; pass a best.pt written by fine-tuning")
    dev = _device(device)
    return model.to(dev), ckpt, dev


def _transform(ckpt: dict[str, Any], img_size: int = 0) -> Any:
    from shared.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD, val_transform

    norm = ckpt.get("normalize") or {}
    size = img_size or int(ckpt.get("img_size") or 224)
    return val_transform(size, mean=tuple(norm.get("mean", IMAGENET_MEAN)), std=tuple(norm.get("std", IMAGENET_STD)))


def _predict(model: Any, loader: Any, device: Any) -> tuple[Any, Any]:
    """(probabilities [N, K], labels [N]) over a loader."""
    import numpy as np
    import torch
    from tqdm import tqdm

    probs, labels = [], []
    with torch.inference_mode():
        for imgs, targets in tqdm(loader, desc="classify", unit="batch", leave=False):
            logits = model(imgs.to(device))  # [B, K]
            probs.append(logits.float().softmax(-1).cpu().numpy())
            labels.append(np.asarray(targets))
    return np.concatenate(probs), np.concatenate(labels)


def evaluate_checkpoint(weights: str | Path, folder: str | Path, output_dir: str | Path, batch_size: int = 64,
                        num_workers: int = 0, device: str = "auto", img_size: int = 0) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix of a checkpoint on one class tree."""
    from shared.data.corpus import ImageFolderDataset
    from shared.training.callbacks import plot_confusion_matrix
    from shared.training.gmae import make_loader
    from shared.training.metrics import classification_metrics

    model, ckpt, dev = load_classifier(weights, device)
    names = list(ckpt["gesture_names"])
    dataset = ImageFolderDataset(folder, _transform(ckpt, img_size), classes=names)
    probs, labels = _predict(model, make_loader(dataset, batch_size, False, num_workers), dev)
    pred = probs.argmax(1)
    metrics = classification_metrics(labels, pred, len(names), names)
    metrics.update({"num_images": len(dataset), "class_names": names, "data_dir": str(folder), "weights": str(weights)})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    with open(out / "confusion_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted"] + names)
        for name, row in zip(names, metrics["confusion_matrix"]):
            writer.writerow([name] + row)
    plot_confusion_matrix(metrics["confusion_matrix"], names, out / "confusion_matrix.png",
                          f"confusion matrix ({Path(folder).name})")
    with open(out / "eval_predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "predicted", "probability"])
        for (path, _), t, p, pr in zip(dataset.samples, labels, pred, probs):
            writer.writerow([str(path), names[int(t)], names[int(p)], f"{pr[p]:.6f}"])
    return metrics


def predict_folder(weights: str | Path, images: str | Path, output_dir: str | Path, batch_size: int = 64,
                   num_workers: int = 0, device: str = "auto", img_size: int = 0) -> tuple[Path, Path]:
    """Class + probability (and every class's probability) for each image under `images`."""
    from shared.data.corpus import ImageFolderDataset
    from shared.training.gmae import make_loader

    model, ckpt, dev = load_classifier(weights, device)
    names = list(ckpt["gesture_names"])
    root = Path(images)
    dataset = ImageFolderDataset(root, _transform(ckpt, img_size), classes=[], labelled=False)
    probs, _ = _predict(model, make_loader(dataset, batch_size, False, num_workers), dev)
    rows = []
    for (path, _), pr in zip(dataset.samples, probs):
        k = int(pr.argmax())
        rows.append({"path": path.relative_to(root).as_posix(), "class": names[k], "probability": float(pr[k]),
                     "probabilities": {n: float(v) for n, v in zip(names, pr)}})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps({"weights": str(weights), "images": str(root), "classes": names,
                                     "predictions": rows}, indent=2))
    csv_path = out / "predictions.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "probability"])
        for row in rows:
            writer.writerow([row["path"], row["class"], f"{row['probability']:.6f}"])
    return json_path, csv_path


def run_classify(cfg: ClassifyConfig, logger: Any = None) -> ClassifyResult:
    from shared.data.corpus import FINETUNE_PART, resolve_subset
    from shared.logger import get_logger

    if not cfg.data_dir and not cfg.images:
        raise UserError("nothing to do: pass --data_dir (evaluate a labelled split) and/or --images (predict)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = logger or get_logger(out)
    save_config(cfg, out / "config.yaml")
    result = ClassifyResult(str(out))
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, device=cfg.device, img_size=cfg.img_size)
    if cfg.data_dir:
        root = Path(cfg.data_dir)
        if not root.is_dir():
            raise UserError(f"--data_dir {root}: folder not found")
        folder = resolve_subset(root, FINETUNE_PART, cfg.split) or root
        metrics = evaluate_checkpoint(cfg.weights, folder, out, **common)
        result.metrics = metrics
        result.evaluation = str(out / "evaluation.json")
        logger.log_scalars({f"{cfg.split}/accuracy": metrics["accuracy"], f"{cfg.split}/macro_f1": metrics["macro_f1"]},
                           step=0)
        logger.log_matrix(f"{cfg.split}/confusion_matrix", metrics["confusion_matrix"], metrics["class_names"])
    if cfg.images:
        if not Path(cfg.images).is_dir():
            raise UserError(f"--images {cfg.images}: folder not found")
        json_path, csv_path = predict_folder(cfg.weights, cfg.images, out, **common)
        result.predictions_json, result.predictions_csv = str(json_path), str(csv_path)
    path = out / "classify_summary.json"
    result.summary = str(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from components.pretrain import resolve_stage_config

    parser = argparse.ArgumentParser(prog="python -m components.classify",
                                     description="Evaluate a fine-tuned gesture classifier, or classify a folder.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
                        help=f"YAML with a `classify:` section (default: {DEFAULT_CONFIG})")
    parser.add_argument("--preset", default=None, help="preset under `presets:` in the YAML")
    add_config_args(parser, ClassifyConfig)
    args = parser.parse_args(argv)
    cfg = resolve_stage_config(ClassifyConfig, "classify", args.config, args.preset, args)
    result = run_classify(cfg)
    if result.metrics:
        m = result.metrics
        print(f"{cfg.split}: {m['num_images']} images, accuracy={m['accuracy']:.4f} macro_f1={m['macro_f1']:.4f}")
        print(f"evaluation: {result.evaluation}")
    if result.predictions_json:
        print(f"predictions: {result.predictions_json}, {result.predictions_csv}")
    return 0


if __name__ == "__main__":
    run_cli(main)
