"""`--task classifier`: a timm gesture classifier on hand crops (the seed's train_classifier.py).

Two data sources:
- a YOLO-pose dataset (`--data D` or `--train_images/--train_labels/--val_images/--val_labels`):
  each labelled hand is cut on the fly, its box expanded by `--expand_ratio`
  and made square — the same crop `components.relabel` cuts later;
- `--data_dir`, as in the seed: an ImageFolder tree (one subfolder per
  gesture; validation from `--val_dir`, from `root/val` when `root` holds
  `train/` and `val/`, else a stratified `--val_split` of `root`), or one YOLO
  split such as the seed's `dataset/train` (`images/` + `labels/`; validation
  from the sibling `val/`/`valid/` split, else `--val_split` of its images).

    python -m components.train --task classifier --data_dir dataset/train --num_classes 5 \\
        --model_name mobilenetv3_small_100 --pretrained --epochs 100 --batch_size 32 --lr 1e-4 \\
        --output_dir checkpoints/classifier
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import config_to_dict, option
from shared.data.splits import SplitDirs, resolve_crop_splits
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


@dataclass
class ClassifierConfig(RunConfig):
    data_dir: str = option("", "ImageFolder root (one subfolder per gesture), or one YOLO split folder "
                               "(images/ + labels/, e.g. dataset/train: crops cut from its labels)")
    val_dir: str = option("", "ImageFolder validation root (default: data_dir/val, else a split of data_dir)")
    val_split: float = option(0.2, "share of an ImageFolder root held out for validation when no val folder exists",
                              min=0.0, max=0.9)
    data: str = option("", "YOLO-pose dataset folder with data.yaml (crops cut from the labels)")
    train_images: str = option("", "YOLO-pose training images folder")
    train_labels: str = option("", "YOLO-pose training labels folder")
    val_images: str = option("", "YOLO-pose validation images folder")
    val_labels: str = option("", "YOLO-pose validation labels folder")
    num_classes: int = option(len(GESTURES), "gesture classes", min=1)
    model_name: str = option("mobilenetv3_small_100", "timm model name")
    pretrained: bool = option(False, "start from timm's ImageNet weights (must be in the local cache; no download)")
    img_size: int = option(224, "crop side in pixels", min=16)
    expand_ratio: float = option(0.3, "box crops: the longer box side grown by this ratio (0.3 = +30%), square",
                                 min=0.0)
    lr: float = option(1e-4, "peak learning rate (AdamW, warm-up + cosine)", min=0.0)
    head_lr: float = option(0.0, "learning rate of the new classifier head when --pretrained (0 = 10 x lr)", min=0.0)
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", min=0.0, max=1.0)
    use_weighted_sampler: bool = option(False, "draw every gesture class equally often")
    class_weights: list[float] = option([], "per-class loss weights, one per class", min=0.0)
    augment: bool = option(True, "ROI jitter + flips/colour/blur/noise/occlusion on training crops")
    output_dir: str = option("checkpoints/classifier", "outputs: best.pt, last.pt, metrics, plots, config",
                             output="dir")


def create_classifier(model_name: str, num_classes: int, pretrained: bool) -> Any:
    """The timm classifier through the project's factory: [0, 1] RGB in (it normalises itself), logits out;
    `pretrained` uses timm weights only from the local cache (never downloads)."""
    from shared.models.classifier import create_timm_classifier

    return create_timm_classifier(model_name, num_classes=num_classes, pretrained=pretrained)


def _imagefolder_splits(cfg: ClassifierConfig, augment: Any) -> tuple[Any, Any]:
    from shared.data.crops import ImageFolderCrops

    names = GESTURES[: cfg.num_classes]
    root = Path(cfg.data_dir)
    train_root, val_root = root, Path(cfg.val_dir) if cfg.val_dir else None
    if val_root is None and (root / "train").is_dir() and (root / "val").is_dir():
        train_root, val_root = root / "train", root / "val"
    if val_root is not None:
        train = ImageFolderCrops(train_root, cfg.img_size, augment, names, cfg.seed)
        return train, ImageFolderCrops(val_root, cfg.img_size, None, names)
    items = ImageFolderCrops.scan(root, names)
    # Stratified hold-out: every class keeps the same share in validation, fixed by the seed.
    rng = np.random.default_rng(cfg.seed)
    labels = np.array([c for _, c in items])
    val_idx: list[int] = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        rng.shuffle(idx)
        val_idx += idx[: max(1, round(len(idx) * cfg.val_split))].tolist() if len(idx) > 1 else []
    val_set = set(val_idx)
    train_items = [it for i, it in enumerate(items) if i not in val_set]
    val_items = [it for i, it in enumerate(items) if i in val_set]
    if not val_items:
        raise UserError(f"{root}: too few images to hold out a validation split; add images or pass --val_dir")
    return (ImageFolderCrops(root, cfg.img_size, augment, names, cfg.seed, items=train_items),
            ImageFolderCrops(root, cfg.img_size, None, names, items=val_items))


def _yolo_split_of(data_dir: Path) -> tuple[SplitDirs, SplitDirs | None] | None:
    """`data_dir` as one YOLO split (`images/` + `labels/`, the seed's `dataset/train`), and the
    sibling validation split when there is one; None when it is not a YOLO split."""
    if not ((data_dir / "images").is_dir() and (data_dir / "labels").is_dir()):
        return None
    for name in ("val", "valid", "validation"):
        val = data_dir.parent / name
        if val != data_dir and (val / "images").is_dir() and (val / "labels").is_dir():
            return SplitDirs(data_dir / "images", data_dir / "labels"), SplitDirs(val / "images", val / "labels")
    return SplitDirs(data_dir / "images", data_dir / "labels"), None


def _datasets(cfg: ClassifierConfig) -> tuple[Any, Any]:
    from shared.data.crops import CropAugment, HandCropDataset

    augment = CropAugment(rotation_deg=15.0, scale=0.1, shift=0.05) if cfg.augment else None
    # The seed's crop: the label box, expanded and squared, axis-aligned (no keypoints needed).
    common = dict(img_size=cfg.img_size, expand_ratio=cfg.expand_ratio, rotate=False, use_box=True,
                  num_classes=cfg.num_classes)
    yolo = _yolo_split_of(Path(cfg.data_dir)) if cfg.data_dir else None
    if cfg.data_dir and yolo is None:
        return _imagefolder_splits(cfg, augment)
    if yolo is not None and yolo[1] is None:
        # One YOLO split and no sibling val split: hold out whole images (hands of one image stay together).
        train_all = HandCropDataset(yolo[0].images, yolo[0].labels, augment=augment, seed=cfg.seed, **common)
        val_all = HandCropDataset(yolo[0].images, yolo[0].labels, augment=None, **common)
        images = sorted({str(r.image) for r in train_all.records})
        rng = np.random.default_rng(cfg.seed)
        held = set(rng.permutation(images)[: max(1, round(len(images) * cfg.val_split))].tolist())
        train_idx = [i for i, r in enumerate(train_all.records) if str(r.image) not in held]
        val_idx = [i for i, r in enumerate(train_all.records) if str(r.image) in held]
        if not train_idx or not val_idx:
            raise UserError(f"{cfg.data_dir}: too few images to hold out a validation split; add a val split")
        return _LabelledSubset(train_all, train_idx), _LabelledSubset(val_all, val_idx)
    train_dirs, val_dirs = yolo if yolo is not None else resolve_crop_splits(cfg)
    return (HandCropDataset(train_dirs.images, train_dirs.labels, augment=augment, seed=cfg.seed, **common),
            HandCropDataset(val_dirs.images, val_dirs.labels, augment=None, **common))


class _LabelledSubset:
    """A subset of a crop dataset that keeps `gestures` (for the sampler) and `set_epoch`."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    @property
    def gestures(self) -> np.ndarray:
        return self.dataset.gestures[self.indices]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def train_classifier(cfg: ClassifierConfig, logger: Any = None, model: Any = None) -> TrainResult:
    if cfg.class_weights and len(cfg.class_weights) != cfg.num_classes:
        raise UserError(f"--class_weights has {len(cfg.class_weights)} values; give one per class ({cfg.num_classes})")
    preflight(cfg)
    # Heavy imports after the checks: a bad value or server fails in a second, not after torch loads.
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from shared.logger import get_logger
    from shared.training.callbacks import EpochReporter, EpochSeed, PortableCheckpoints
    from shared.training.modules import ClassifierModule, OptimConfig
    from shared.training.samplers import balanced_sampler

    train_ds, val_ds = _datasets(cfg)  # bad paths fail here, before anything is written
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    maybe_init_clearml(cfg.project_name, cfg.task_name)
    logger = logger or get_logger(output_dir)
    config_path = save_resolved(cfg, output_dir, logger)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    skipped = skipped_files(train_ds, val_ds)
    print(f"classifier: {len(train_ds)} training crops, {len(val_ds)} validation crops at {cfg.img_size}px"
          f"{f', {len(skipped)} bad image file(s) skipped' if skipped else ''}")
    if model is None:
        model = create_classifier(cfg.model_name, cfg.num_classes, cfg.pretrained)
    new_params = {n for n, _ in model.named_parameters()}
    timm_model = getattr(model, "model", model)  # our wrapper holds the timm network as .model
    if cfg.pretrained and hasattr(timm_model, "get_classifier"):
        # Only the re-initialised classifier layer is new; it gets head_lr.
        head_ids = {id(p) for p in timm_model.get_classifier().parameters()}
        new_params = {n for n, p in model.named_parameters() if id(p) in head_ids}
    meta = {"task": "classifier", "model_name": f"timm:{cfg.model_name}",
            "model_kwargs": {"num_classes": cfg.num_classes}, "img_size": cfg.img_size,
            "gesture_names": list(GESTURES[: cfg.num_classes]), "normalize": None,  # inside the model
            "roi": {"expand_ratio": cfg.expand_ratio, "rotate": False, "source": "box"},
            "config": config_to_dict(cfg)}
    head_lr = (cfg.head_lr or cfg.lr * 10) if cfg.pretrained else cfg.lr
    module = ClassifierModule(model, OptimConfig(lr=cfg.lr, head_lr=head_lr, weight_decay=cfg.weight_decay),
                              num_classes=cfg.num_classes, class_names=GESTURES[: cfg.num_classes],
                              class_weights=list(cfg.class_weights) or None, label_smoothing=cfg.label_smoothing,
                              new_params=new_params, meta=meta)
    sampler = balanced_sampler(train_ds.gestures, cfg.num_classes, seed=cfg.seed) if cfg.use_weighted_sampler \
        else None
    workers = dict(num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                          drop_last=len(train_ds) > cfg.batch_size, **workers)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, **workers)

    monitor = cfg.monitor or "val/macro_f1"
    mode = monitor_mode(monitor, cfg.monitor_mode)
    print_every = 0 if cfg.progress_bar else max(1, len(train_dl) // 5)
    reporter = EpochReporter(logger, output_dir, monitor, mode, plots=cfg.plots, print_every=print_every)
    trainer = lightning_trainer(cfg, output_dir, [reporter, PortableCheckpoints(output_dir, monitor, mode),
                                                  EpochSeed()], monitor, mode)
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=resume_path(cfg, output_dir))

    plots = sorted(str(p) for p in (output_dir / "plots").glob("*.png"))
    for path in plots:
        logger.log_artifact(Path(path).stem, path)
    result = TrainResult(task="classifier", output_dir=str(output_dir), best=str(output_dir / "best.pt"),
                         last=str(output_dir / "last.pt"), config=str(config_path), metrics=reporter.final_metrics(),
                         extra={"plots": plots, "metrics_jsonl": str(output_dir / "metrics.jsonl"),
                                "train_crops": len(train_ds), "val_crops": len(val_ds),
                                "skipped_images": len(skipped), "skipped_image_files": skipped})
    return write_summary(result)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_task_args(ClassifierConfig, "classifier", argv, "Train a timm gesture classifier on hand crops.",
                          aliases={"--checkpoint_dir": "output_dir"})
    result = train_classifier(cfg)
    m = result.metrics
    print("final: " + " ".join(f"{k}={m[k]:.4f}" for k in ("val/accuracy", "val/macro_f1") if k in m))
    print(f"best: {result.best}; summary: {result.summary}")
    return 0
