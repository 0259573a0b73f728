"""`--task keypoints` and `--task multitask`: BlazeHand on upright hand crops, with Lightning.

keypoints: 21 landmarks only (hands with keypoint labels), from MediaPipe's
weights by default. multitask: landmarks + the gesture head, loss
`kps_weight * keypoints + cls_weight * cross-entropy(class_weights)`, optionally
a class-balanced sampler. Both take the seed's flags:

    python -m components.train --task multitask --train_images D/train/images --train_labels D/train/labels \\
        --val_images D/val/images --val_labels D/val/labels --model_type blazehand \\
        --pretrained_weights mediapipe --epochs 3 --batch_size 32 --lr 1e-5 --kps_weight 1.0 --cls_weight 2.0 \\
        --use_weighted_sampler --class_weights 2.0 2.0 1.0 2.0 8.0 --checkpoint_dir C

Learning rates: `--lr` (the seed's 1e-5) applies to weights that come from the
pretrained checkpoint; weights that start from scratch (the gesture head after a
MediaPipe import, or everything under random init) use `--head_lr` (1e-3),
because a fresh head at 1e-5 barely moves in a few epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import config_to_dict, option, option_like
from shared.data.splits import resolve_crop_splits
from shared.errors import UserError
from shared.hand import GESTURES
from shared.training.run import (
    RunConfig,
    TrainResult,
    lightning_trainer,
    maybe_init_clearml,
    monitor_mode,
    parse_task_args,
    preflight,
    resume_path,
    save_resolved,
    skipped_files,
    write_summary,
)

CROP_MODELS = ("blazehand", "blazehand_full", "blazehand_lite")
NO_WEIGHTS = ("", "none", "random", "scratch")


@dataclass
class KeypointsConfig(RunConfig):
    """Landmarks on upright crops (the seed's train_keypoints.py)."""

    data: str = option("", "dataset folder with data.yaml (used when --train_images/--val_images are not given)")
    train_images: str = option("", "training images folder (YOLO-pose layout)")
    train_labels: str = option("", "training labels folder (default: images -> labels)")
    val_images: str = option("", "validation images folder")
    val_labels: str = option("", "validation labels folder")
    model_type: str = option("blazehand", "blazehand (= blazehand_full) | blazehand_full | blazehand_lite")
    pretrained_weights: str = option("mediapipe", "'mediapipe' (MediaPipe's own weights), a .pth/.pt path, or "
                                                  "'none' for random init")
    num_classes: int = option(len(GESTURES), "gesture classes of the model's head", min=1)
    expand_ratio: float = option(0.5, "crop side = upright keypoint extent x (1 + expand_ratio), MediaPipe-like",
                                 min=0.0)
    epochs: int = option_like(RunConfig, "epochs", 200)
    lr: float = option(1e-5, "learning rate of the pretrained weights", min=0.0)
    head_lr: float = option(1e-3, "learning rate of weights that start from scratch (new heads, random init)", min=0.0)
    weight_decay: float = option_like(RunConfig, "weight_decay", 1e-4, "AdamW weight decay (not on biases/norms)")
    probe_epochs: float = option(0.0, "epochs at the start in which only new weights (the gesture head) train, "
                                      "before the pretrained ones join (linear probe, then fine-tune)", min=0.0)
    kps_loss: str = option("l1", "keypoint loss: l1 | mse | wing", metadata={"choices": ("l1", "mse", "wing")})
    use_hard_mining: bool = option(False, "online hard keypoint mining (top-k worst keypoints + hard-sample weights)")
    hard_topk: int = option(8, "hard mining: keypoints per sample that enter the loss", min=1, max=21)
    hard_sample_gamma: float = option(1.0, "hard mining: sample weight ~ (loss / batch mean) ** gamma (0 = off)")
    augment: bool = option(True, "ROI jitter + flips/colour/blur/noise/occlusion on training crops")
    rot_jitter: float = option(20.0, "augmentation: max ROI rotation jitter, degrees", min=0.0)
    scale_jitter: float = option(0.15, "augmentation: max ROI scale jitter (fraction)", min=0.0, max=0.9)
    shift_jitter: float = option(0.08, "augmentation: max ROI shift jitter (fraction of the side)", min=0.0)
    checkpoint_dir: str = option("checkpoints/keypoints", "outputs: best.pt, last.pt, metrics, plots, config",
                                 output="dir")


@dataclass
class MultitaskConfig(KeypointsConfig):
    """Landmarks + gestures (the seed's train_multitask.py)."""

    kps_weight: float = option(1.0, "weight of the keypoint loss", min=0.0)
    cls_weight: float = option(2.0, "weight of the gesture loss", min=0.0)
    use_weighted_sampler: bool = option(False, "draw every gesture class equally often")
    class_weights: list[float] = option([], "per-class weights of the gesture loss, one per class (e.g. 2 2 1 2 8)",
                                        min=0.0)
    label_smoothing: float = option(0.0, "label smoothing of the gesture loss", min=0.0, max=1.0)
    checkpoint_dir: str = option("checkpoints/multitask", "outputs: best.pt, last.pt, metrics, plots, config",
                                 output="dir")


# ---------------------------------------------------------------------------------------------- model

def _missing_keys(report: Any) -> set[str]:
    """Missing-key names from whatever report the weight loader returns."""
    if report is None:
        return set()
    if isinstance(report, dict):
        for key in ("missing", "missing_keys"):
            if key in report:
                return set(report[key])
        return set()
    if hasattr(report, "missing_keys"):
        return set(report.missing_keys)
    if hasattr(report, "missing"):
        return set(report.missing)
    if isinstance(report, tuple) and report:
        return set(report[0])
    return set()


def load_crop_weights(model: Any, weights: str) -> tuple[set[str], str]:
    """Load `weights` ("mediapipe", a .tflite, our best.pt or a .pth state dict) into `model`;
    returns (parameter names that start from scratch, one-line report)."""
    from shared.models.blazehand import load_pretrained

    params = {n for n, _ in model.named_parameters()}
    if weights.lower() in NO_WEIGHTS:
        return params, "random init"
    report = load_pretrained(model, weights)
    missing = _missing_keys(report)
    if params and not (params - missing):
        raise UserError(f"{weights}: no weight fits {type(model).__name__}; pick the matching --model_type")
    return params & missing, str(report)


def centre_landmark_head(model: Any) -> None:
    """Start a random landmark head at the crop centre instead of the corner.

    The head regresses pixels of a 224 crop; from the default init every point sits
    near (0, 0), ~100 px from any hand, and Adam moves a bias by ~lr per step, so a
    random-init run would spend its first epochs just walking to the middle.
    """
    import torch

    head = getattr(model, "landmarks", None)
    if isinstance(head, torch.nn.Linear) and head.bias is not None:
        with torch.no_grad():
            bias = head.bias.view(-1, 3)  # [21, 3] x, y, z
            bias[:, :2] = float(getattr(model, "img_size", 224)) / 2


def build_crop_model(model_type: str, num_classes: int, weights: str) -> tuple[Any, str, set[str], str]:
    """(model, registry name, new parameter names, load report)."""
    from shared.models.registry import create_model, resolve_name

    if model_type not in CROP_MODELS:
        raise UserError(f"--model_type {model_type}: the crop model is one of {', '.join(CROP_MODELS)}")
    name = resolve_name(model_type)
    model = create_model(name, num_gestures=num_classes)
    new, report = load_crop_weights(model, weights)
    if weights.lower() in NO_WEIGHTS:
        centre_landmark_head(model)
    return model, name, new, report


# ---------------------------------------------------------------------------------------------- stage

def _loaders(cfg: KeypointsConfig, img_size: int, multitask: bool) -> tuple[Any, Any, Any]:
    import torch
    from torch.utils.data import DataLoader

    from shared.data.crops import CropAugment, HandCropDataset
    from shared.training.samplers import balanced_sampler

    train_dirs, val_dirs = resolve_crop_splits(cfg)
    augment = CropAugment(rotation_deg=cfg.rot_jitter, scale=cfg.scale_jitter, shift=cfg.shift_jitter) \
        if cfg.augment else None
    # keypoints: only hands with keypoint labels teach anything; multitask keeps box-only hands for the gesture.
    common = dict(img_size=img_size, expand_ratio=cfg.expand_ratio, rotate=True, num_classes=cfg.num_classes,
                  require_keypoints=not multitask)
    train_ds = HandCropDataset(train_dirs.images, train_dirs.labels, augment=augment, seed=cfg.seed, **common)
    val_ds = HandCropDataset(val_dirs.images, val_dirs.labels, augment=None, **common)
    sampler = None
    if multitask and getattr(cfg, "use_weighted_sampler", False):
        sampler = balanced_sampler(train_ds.gestures, cfg.num_classes, seed=cfg.seed)
    pin = torch.cuda.is_available()
    workers = dict(num_workers=cfg.num_workers, persistent_workers=False, pin_memory=pin)
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                          drop_last=len(train_ds) > cfg.batch_size, **workers)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, **workers)
    return train_dl, val_dl, (train_ds, val_ds)


def train_landmarks(cfg: KeypointsConfig, logger: Any = None, model: Any = None) -> TrainResult:
    """Train the crop model; `model` (optional) replaces the registry model, e.g. a tiny one in tests."""
    multitask = isinstance(cfg, MultitaskConfig)
    task = "multitask" if multitask else "keypoints"
    preflight(cfg)
    # Heavy imports after the checks: a bad value or server fails in a second, not after torch loads.
    import lightning as L

    from shared.logger import get_logger
    from shared.training.callbacks import EpochReporter, EpochSeed, PortableCheckpoints
    from shared.training.losses import KeypointLossConfig
    from shared.training.modules import LandmarkLossConfig, LandmarkModule, OptimConfig

    if multitask and cfg.class_weights and len(cfg.class_weights) != cfg.num_classes:
        raise UserError(f"--class_weights has {len(cfg.class_weights)} values; give one per class "
                        f"({cfg.num_classes}: {', '.join(GESTURES[:cfg.num_classes])})")
    for split in resolve_crop_splits(cfg):  # fail on a wrong path before building anything
        for d in (split.images, split.labels):
            if not d.is_dir():
                raise UserError(f"{d}: folder not found; pass existing --train_images/--train_labels/"
                                f"--val_images/--val_labels (or --data D)")
    output_dir = Path(cfg.checkpoint_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    maybe_init_clearml(cfg.project_name, cfg.task_name)
    logger = logger or get_logger(output_dir)
    config_path = save_resolved(cfg, output_dir, logger)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    if model is None:
        model, model_name, new_params, report = build_crop_model(cfg.model_type, cfg.num_classes,
                                                                 cfg.pretrained_weights)
    else:  # the caller built it (and loaded any weights): it is `--model_type`, and every weight trains at head_lr
        from shared.models.registry import resolve_name

        model_name, new_params, report = resolve_name(cfg.model_type), {n for n, _ in model.named_parameters()}, \
            "model given by the caller"
    print(f"weights: {report}")
    img_size = int(getattr(model, "img_size", 224))
    train_dl, val_dl, (train_ds, val_ds) = _loaders(cfg, img_size, multitask)
    skipped = skipped_files(train_ds, val_ds)
    print(f"{task}: {len(train_ds)} training crops, {len(val_ds)} validation crops at {img_size}px "
          f"({len(train_ds.issues) + len(val_ds.issues)} label lines skipped, {len(skipped)} bad image file(s) "
          f"skipped, {len(train_ds.notes) + len(val_ds.notes)} box(es) clipped to the image)")
    for issue in ([str(i) for i in train_ds.issues + val_ds.issues] + skipped)[:5]:
        print(f"  skipped {issue}")

    loss = LandmarkLossConfig(
        keypoints=KeypointLossConfig(kind=cfg.kps_loss, hard_mining=cfg.use_hard_mining, topk=cfg.hard_topk,
                                     sample_gamma=cfg.hard_sample_gamma),
        kps_weight=getattr(cfg, "kps_weight", 1.0), cls_weight=getattr(cfg, "cls_weight", 0.0),
        class_weights=list(getattr(cfg, "class_weights", [])) or None,
        label_smoothing=getattr(cfg, "label_smoothing", 0.0))
    meta = {"task": task, "model_name": model_name, "model_kwargs": {"num_gestures": cfg.num_classes},
            "img_size": img_size, "gesture_names": list(GESTURES[:cfg.num_classes]), "normalize": None,
            "roi": {"expand_ratio": cfg.expand_ratio, "rotate": True, "source": "keypoints"},
            "config": config_to_dict(cfg)}
    module = LandmarkModule(model, OptimConfig(lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay,
                                        probe_epochs=cfg.probe_epochs),
                            loss, img_size=img_size, class_names=GESTURES[:cfg.num_classes],
                            new_params=new_params, meta=meta)
    monitor = cfg.monitor or ("val/score" if multitask else "val/pck@0.1")
    mode = monitor_mode(monitor, cfg.monitor_mode)
    print_every = 0 if cfg.progress_bar else max(1, len(train_dl) // 5)
    reporter = EpochReporter(logger, output_dir, monitor, mode, plots=cfg.plots, print_every=print_every)
    trainer = lightning_trainer(cfg, output_dir, [reporter, PortableCheckpoints(output_dir, monitor, mode),
                                                  EpochSeed()], monitor, mode)
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=resume_path(cfg, output_dir))

    metrics = reporter.final_metrics()
    plots = sorted(str(p) for p in (output_dir / "plots").glob("*.png"))
    result = TrainResult(task=task, output_dir=str(output_dir), best=str(output_dir / "best.pt"),
                         last=str(output_dir / "last.pt"), config=str(config_path), metrics=metrics,
                         extra={"plots": plots, "metrics_jsonl": str(output_dir / "metrics.jsonl"),
                                "lightning_checkpoint": str(output_dir / "lightning" / "last.ckpt"),
                                "weights": report, "train_crops": len(train_ds), "val_crops": len(val_ds),
                                "skipped_images": len(skipped), "skipped_image_files": skipped,
                                "skipped_label_lines": len(train_ds.issues) + len(val_ds.issues),
                                "clipped_boxes": len(train_ds.notes) + len(val_ds.notes)})
    for path in plots:
        logger.log_artifact(Path(path).stem, path)
    return write_summary(result)


def train_keypoints(cfg: KeypointsConfig, logger: Any = None, model: Any = None) -> TrainResult:
    return train_landmarks(cfg, logger, model)


def train_multitask(cfg: MultitaskConfig, logger: Any = None, model: Any = None) -> TrainResult:
    return train_landmarks(cfg, logger, model)


def _report(result: TrainResult) -> None:
    m = result.metrics
    keys = ("val/macro_f1", "val/accuracy", "val/pck@0.05", "val/pck@0.1", "val/pck@0.2", "val/nme")
    print("final: " + " ".join(f"{k}={m[k]:.4f}" for k in keys if k in m))
    print(f"best: {result.best} (epoch {m.get('best_epoch', '-')}); summary: {result.summary}")


def main_keypoints(argv: list[str] | None = None) -> int:
    cfg = parse_task_args(KeypointsConfig, "keypoints", argv, "Train BlazeHand landmarks on upright hand crops.",
                          aliases={"--output_dir": "checkpoint_dir"})
    _report(train_keypoints(cfg))
    return 0


def main_multitask(argv: list[str] | None = None) -> int:
    cfg = parse_task_args(MultitaskConfig, "multitask", argv, "Train BlazeHand landmarks + gestures on hand crops.",
                          aliases={"--output_dir": "checkpoint_dir"})
    _report(train_multitask(cfg))
    return 0


main = main_multitask
