"""`--task detector`: a hand detector trained with Ultralytics YOLO, offline.

`--model` is a model YAML (default `yolo11n-pose.yaml`: boxes + 21 keypoints,
`kpt_shape` taken from data.yaml; `yolo11n.yaml` for boxes only), built from
scratch, or a user's `.pt` to fine-tune. Ultralytics is kept offline: no
analytics, no integration callbacks that would start their own ClearML task,
no AMP-check weights download (bf16 AMP on GPUs that have it, none on CPU).

Ultralytics finds a label by replacing `/images/` with `/labels/` in the image
path and writes `labels.cache` next to the labels. So that it never writes into
the input dataset, and so that a boxes-only model reads 5-column labels, it
trains on a *view* in `<checkpoint_dir>/dataset`: image files are symlinks to
the originals, label files symlinks too (pose) or box-only copies (detect).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.config import option, read_yaml
from shared.data.labels import label_path_for, list_images
from shared.data.splits import check_dataset_names, dataset_yaml, split_dirs
from shared.errors import UserError
from shared.hand import FLIP_IDX, NUM_KEYPOINTS
from shared.training.run import (
    TrainResult,
    maybe_init_clearml,
    parse_task_args,
    preflight,
    save_resolved,
    write_summary,
)

INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


@dataclass
class DetectorConfig:
    data: str = option("", "dataset folder with data.yaml (from components.ingest), or the YAML")
    model: str = option("yolo11n-pose.yaml", "model YAML (yolo11n-pose.yaml, yolo11n.yaml, ...) or a .pt to fine-tune")
    imgsz: int = option(640, "training image size", min=32)
    epochs: int = option(100, "training epochs", min=1)
    batch_size: int = option(16, "images per batch", min=-1)
    device: str = option("", "'' = first GPU if any, else cpu; or cpu, 0, 0,1, ...")
    workers: int = option(2, "data-loading workers", min=0)
    patience: int = option(50, "early stopping patience in epochs", min=0)
    seed: int = option(0, "random seed")
    lr0: float = option(0.01, "initial learning rate", min=0.0)
    optimizer: str = option("auto", "Ultralytics optimizer: auto | SGD | AdamW | ...")
    amp: str = option("auto", "mixed precision: auto (bf16 on GPUs that support it, off on CPU) | bf16 | true | false")
    mosaic: float = option(1.0, "mosaic augmentation probability", min=0.0, max=1.0)
    close_mosaic: int = option(10, "epochs at the end without mosaic", min=0)
    fraction: float = option(1.0, "share of the training images to use", min=0.0, max=1.0)
    cache: bool = option(False, "cache decoded images in RAM")
    val: bool = option(True, "validate every epoch")
    resume: bool = option(False, "resume the interrupted Ultralytics run in --checkpoint_dir")
    verbose: bool = option(False, "Ultralytics' own per-epoch printout")
    checkpoint_dir: str = option("checkpoints/detector", "outputs: best.pt, last.pt, metrics.json, the run folder",
                                 output="dir")
    project_name: str = option("", "ClearML project: start a task here when ClearML is configured")
    task_name: str = option("", "ClearML task name")


@contextmanager
def ultralytics_offline(keep_clearml: bool) -> Iterator[None]:
    """Ultralytics with no network: analytics off, third-party callbacks off (in memory only;
    the user's settings file is not rewritten). `YOLO_OFFLINE` must be set before its first
    import to make Ultralytics skip its online checks, so set it here too."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # Ultralytics imports albumentations, which asks PyPI
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.plotting as plotting
    from ultralytics.utils import SETTINGS, events

    saved = {k: SETTINGS.get(k) for k in (*INTEGRATIONS, "sync")}
    wanted = {k: (k == "clearml" and keep_clearml) for k in INTEGRATIONS}
    dict.update(SETTINGS, {**wanted, "sync": False})  # dict.update bypasses JSONDict's save-to-disk
    was_enabled = events.events.enabled
    events.events.enabled = False
    # Dataset checks ask for Arial.ttf (for plots) and fetch it from GitHub when it is not local;
    # with plots off no font is needed, so answer from local fonts only.
    fonts = (data_utils.check_font, plotting.check_font)
    data_utils.check_font = plotting.check_font = _local_font
    try:
        yield
    finally:
        dict.update(SETTINGS, saved)
        events.events.enabled = was_enabled
        data_utils.check_font, plotting.check_font = fonts


def _local_font(font: str = "Arial.ttf") -> Path | None:
    """Ultralytics' check_font without the download: the font if it is installed, else None."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(font).name
    if (USER_CONFIG_DIR / name).exists():
        return USER_CONFIG_DIR / name
    matches = [f.fname for f in font_manager.fontManager.ttflist if name in f.fname]
    return Path(matches[0]) if matches else None


def _resolve_device(device: str) -> str:
    import torch

    if device:
        return device
    return "0" if torch.cuda.is_available() else "cpu"


def _resolve_amp(amp: str, device: str) -> bool | str:
    import torch

    if amp == "auto":
        if device == "cpu" or not torch.cuda.is_available():
            return False
        # bf16 skips Ultralytics' AMP self-check, which would download yolo26n.pt.
        return "bf16" if torch.cuda.is_bf16_supported() else False
    if amp in ("bf16",):
        return "bf16"
    if amp.lower() in ("true", "1", "yes"):
        return True
    if amp.lower() in ("false", "0", "no", "fp32"):
        return False
    raise UserError(f"--amp {amp}: use auto, bf16, true or false")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(src.resolve())
    except OSError:  # no symlinks (e.g. some Windows setups): a hard link, else a copy
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def _box_only(src: Path, dst: Path) -> None:
    """The first five tokens of every line: what a boxes-only YOLO expects."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(line.split()[:5]) for line in src.read_text().splitlines() if line.strip()]
    dst.write_text("".join(line + "\n" for line in lines))


def build_dataset_view(data: str | Path, view: Path, pose: bool) -> tuple[Path, dict[str, int]]:
    """A YOLO dataset in `view` over the input's files (see the module docstring); returns (yaml, image counts)."""
    from shared.data.images import BadImage, report_skipped, split_images  # PIL + OpenCV: only when building

    source_yaml = dataset_yaml(data)
    info = read_yaml(source_yaml)
    names = check_dataset_names(source_yaml, info)
    if view.exists():
        shutil.rmtree(view)
    counts: dict[str, int] = {}
    splits: dict[str, str] = {}
    skipped: list[BadImage] = []
    for split in ("train", "val", "test"):
        if not (info.get(split) or (split == "val" and info.get("valid"))):
            if split == "test":
                continue
            raise UserError(f"{source_yaml}: no `{split}:` split; a detector needs train and val images")
        dirs = split_dirs(source_yaml, split)
        # Files that do not decode completely are left out of the view (named, counted): Ultralytics
        # would otherwise "restore" a truncated JPEG by rewriting it, through the link, in the input.
        images, bad = split_images(list_images(dirs.images))
        skipped.extend(bad)
        if not images and split != "test":
            raise UserError(f"{dirs.images}: no images in the {split} split"
                            + (f" ({len(bad)} bad file(s) skipped, e.g. {bad[0]})" if bad else ""))
        for image in images:
            rel = image.relative_to(dirs.images)
            _link(image, view / split / "images" / rel)
            label = label_path_for(image, dirs.images, dirs.labels)
            if label.is_file():
                target = (view / split / "labels" / rel).with_suffix(".txt")
                _link(label, target) if pose else _box_only(label, target)
        counts[split] = len(images)
        splits[split] = f"{split}/images"
    out = {"path": str(view.resolve()), **splits, "names": {i: n for i, n in enumerate(names)}}
    if pose:
        out["kpt_shape"] = info.get("kpt_shape", [NUM_KEYPOINTS, 3])
        out["flip_idx"] = info.get("flip_idx", list(FLIP_IDX))
    path = view / "data.yaml"
    path.write_text(yaml.safe_dump(out, sort_keys=False))
    report_skipped(skipped)
    if skipped:
        counts["skipped"] = len(skipped)
    return path, counts


def _check_model(model: str) -> None:
    path = Path(model)
    if path.suffix == ".pt" and not path.is_file():
        raise UserError(f"--model {model}: file not found; pass a trained .pt, or a model YAML such as "
                        f"yolo11n-pose.yaml (built from scratch, nothing downloaded)")
    if path.suffix not in (".pt", ".yaml", ".yml"):
        raise UserError(f"--model {model}: expected a model YAML (yolo11n-pose.yaml) or a .pt file")


METRIC_NAMES = {
    "metrics/precision(B)": "val/box_precision", "metrics/recall(B)": "val/box_recall",
    "metrics/mAP50(B)": "val/box_map50", "metrics/mAP50-95(B)": "val/box_map50_95",
    "metrics/precision(P)": "val/pose_precision", "metrics/recall(P)": "val/pose_recall",
    "metrics/mAP50(P)": "val/pose_map50", "metrics/mAP50-95(P)": "val/pose_map50_95",
}


def _rename(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        name = METRIC_NAMES.get(key) or (key if key.startswith(("val/", "train/")) else None)
        if name is not None:
            out[name] = float(value)
    return out


def train_detector(cfg: DetectorConfig, logger: Any = None) -> TrainResult:
    from shared.logger import current_clearml_task, get_logger

    if not cfg.data:
        raise UserError("--data is required: the dataset folder with data.yaml (from components.ingest)")
    dataset_yaml(cfg.data)  # fail on a wrong path before writing anything
    _check_model(cfg.model)
    preflight(cfg)
    output_dir = Path(cfg.checkpoint_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    maybe_init_clearml(cfg.project_name, cfg.task_name)
    logger = logger or get_logger(output_dir)
    config_path = save_resolved(cfg, output_dir, logger)
    device = _resolve_device(cfg.device)

    run_last = output_dir / "ultralytics" / "weights" / "last.pt"
    if cfg.resume and not run_last.is_file():
        raise UserError(f"--resume: no interrupted run in {output_dir} ({run_last} is missing); train without "
                        f"--resume first")
    task = current_clearml_task()
    # Ultralytics' ClearML callback registers best.pt through OutputModel.update_weights, which an
    # offline task cannot do ('DummyModel' has no 'locked'); offline, the pipeline registers it.
    with ultralytics_offline(keep_clearml=task is not None and not task.is_offline()):
        from ultralytics import YOLO

        # Resuming starts from the run's own last.pt (Ultralytics restores its arguments from it).
        model = YOLO(str(run_last) if cfg.resume else cfg.model)
        pose = model.task == "pose"
        if model.task not in ("pose", "detect"):
            raise UserError(f"--model {cfg.model}: a {model.task} model; the detector is a detect or pose model")
        data_yaml, counts = build_dataset_view(cfg.data, output_dir / "dataset", pose)
        print(f"detector: {cfg.model} ({model.task}) on {counts} images, imgsz {cfg.imgsz}, device {device}")

        def log_epoch(trainer: Any) -> None:
            if trainer.epoch >= trainer.epochs:  # Ultralytics calls this once more after validating best.pt
                return
            losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
            scalars = {**{k: float(v) for k, v in losses.items()}, **_rename(trainer.metrics or {})}
            logger.log_scalars(scalars, step=trainer.epoch)
            shown = " ".join(f"{k}={v:.4f}" for k, v in scalars.items() if "map50" in k)
            print(f"epoch {trainer.epoch + 1}/{trainer.epochs} {shown}", flush=True)

        model.add_callback("on_fit_epoch_end", log_epoch)
        model.train(
            data=str(data_yaml), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch_size, device=device,
            workers=cfg.workers, patience=cfg.patience, seed=cfg.seed, lr0=cfg.lr0, optimizer=cfg.optimizer,
            amp=_resolve_amp(cfg.amp, device), mosaic=cfg.mosaic, close_mosaic=cfg.close_mosaic,
            fraction=cfg.fraction, cache=cfg.cache, val=cfg.val, resume=str(run_last) if cfg.resume else False,
            verbose=cfg.verbose,
            project=str(output_dir), name="ultralytics", exist_ok=True, plots=False, pretrained=False,
            deterministic=False,
        )
        trainer = model.trainer
        run_dir = Path(trainer.save_dir)
        metrics = _rename(trainer.metrics or {})

    best_src = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    best = output_dir / "best.pt"
    last = output_dir / "last.pt"
    shutil.copyfile(best_src, best)
    shutil.copyfile(trainer.last, last)
    metrics = {"task": model.task, **metrics}
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.log_artifact("detector_best", best)
    result = TrainResult(task="detector", output_dir=str(output_dir), best=str(best), last=str(last),
                         config=str(config_path), metrics=metrics,
                         extra={"run_dir": str(run_dir), "results_csv": str(run_dir / "results.csv"),
                                "data_yaml": str(data_yaml), "pose": pose, "images": counts})
    return write_summary(result)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_task_args(DetectorConfig, "detector", argv, "Train a YOLO hand detector (Ultralytics), offline.",
                          aliases={"--output_dir": "checkpoint_dir", "--batch": "batch_size"})
    result = train_detector(cfg)
    m = result.metrics
    print("final: " + " ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float) and "map" in k))
    print(f"best: {result.best}; summary: {result.summary}")
    return 0
