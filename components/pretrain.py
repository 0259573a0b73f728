"""G-MAE self-supervised pretraining (the seed's src/scripts/pretrain.py), with Lightning.

    python -m components.pretrain --config configs/pretrain.yaml --data_dir D --output_dir O \\
        [--epochs 500 --batch_size 64 --learning_rate 1e-3 --mask_ratio 0.6 ...]

`D` is a split root (`D/pretrain_dataset/train[, val]`, as `split_corpus`
writes it), a folder with `train/` (and `val/`), or any image tree; class
folders are ignored (pretraining needs no labels). With `--source hagrid|yolo|
imagefolder`, `D` is a raw source: it is formatted (hand crops), cleaned and
split into `O/corpus/` first (reused when already there), and the fine-tuning
part waits in `O/corpus/split/finetune_dataset`. `--corpus_only` stops there.

Real photos with no labels at all: `--source teacher --data_dir PHOTOS` (any image
folder, e.g. all 18 gesture folders of HaGRID): the MediaPipe teacher cuts every hand
out (the crop the landmark network sees: placed by the 21 landmarks, upright) into
`O/corpus/hands/<photo folder>/`, and pretraining reads them all. A folder with no hand
in it is an error before any training.

Writes to O: `encoder.pt` (the encoder's weights + config, what fine-tuning
loads) and `gmae.pt` (the whole autoencoder) every `--save_every` epochs (`--keep_snapshots`:
every saved encoder also as `snapshots/encoder_epoch_NNNN.pt`), `previews/epoch_NNNN.png`
(original / masked / reconstructed, the same images) every epoch,
`metrics.jsonl`, `config.yaml`, `pretrain_summary.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import add_config_args, config_to_dict, load_config, option, option_like, read_yaml, save_config
from shared.errors import UserError, run_cli
from shared.models.gmae import MASK_RATIO
from shared.paths import CONFIGS_DIR
from shared.training.run import (
    RunConfig,
    lightning_trainer,
    maybe_init_clearml,
    preflight,
    resolve_config,
    resume_path,
    skipped_files,
)

DEFAULT_CONFIG = CONFIGS_DIR / "pretrain.yaml"
MODELS = ("gmae_tiny", "gmae_small", "gmae_base")


@dataclass
class CorpusOptions:
    """How a raw source becomes a pretraining corpus (only with --source other than 'folder')."""

    source: str = option("folder", "folder: data_dir is ready to use | teacher: real photos (any image folder, "
                         "or a YOLO-pose dataset with keypoints); the MediaPipe teacher cuts every hand out "
                         "into output_dir/corpus/hands first | hagrid | yolo | imagefolder: a raw source "
                         "to format, clean and split into output_dir/corpus first",
                         metadata={"choices": ["folder", "teacher", "hagrid", "yolo", "imagefolder"]})
    hagrid_mode: str = option("crops", "HaGRID: hand crops from its boxes, or whole frames",
                              metadata={"choices": ["crops", "frames"]})
    gesture_map: str = option("", "class names through a gesture map section (e.g. 'hagrid' of "
                              "configs/gesture_map.yaml) ; '' keeps the source's own names")
    crop_size: int = option(224, "side of the saved hand crops, pixels", min=16)
    min_score: float = option(0.5, "teacher: keep hands whose landmark presence reaches this", min=0.0, max=1.0)
    crop_expand: float = option(0.3, "hand crops: the longer box side grown by this ratio, made square", min=0.0)
    min_image_size: int = option(32, "drop images whose shorter side is below this", min=1)
    pretrain_fraction: float = option(0.7, "share of the corpus (by subject groups) for pretraining; the rest "
                                      "is for fine-tuning", min=0.0, max=1.0)
    val_fraction: float = option(0.15, "validation share inside each part", min=0.0, max=1.0)
    test_fraction: float = option(0.15, "test share of the fine-tuning part", min=0.0, max=1.0)
    corpus_only: bool = option(False, "build the corpus, then stop")


@dataclass
class PretrainConfig(CorpusOptions, RunConfig):
    data_dir: str = option("", "pretraining images (see the module help), or the raw source with --source")
    output_dir: str = option("outputs/pretrain", "encoder.pt, gmae.pt, previews/, metrics, config, summary",
                             output="dir")
    model: str = option("gmae_small", "gmae_tiny | gmae_small | gmae_base", metadata={"choices": list(MODELS)})
    img_size: int = option(224, "training image side, pixels (a multiple of the patch size)", min=16)
    patch_size: int = option(0, "patch side in pixels (0 = the model size's default: 8 tiny, 16 small/base)", min=0)
    epochs: int = option_like(RunConfig, "epochs", 500, "training epochs (seed: 500)")
    batch_size: int = option_like(RunConfig, "batch_size", 64, "images per batch (seed: 64)")
    learning_rate: float = option(1e-3, "peak learning rate, AdamW (seed: 1e-3)", min=0.0)
    weight_decay: float = option_like(RunConfig, "weight_decay", 0.05,
                                      "AdamW weight decay (not on norms, biases, the mask token)")
    warmup_epochs: float = option(10.0, "linear warm-up, epochs (at most a fifth of the run), then cosine", min=0.0)
    mask_ratio: float = option(MASK_RATIO, "share of patches hidden from the encoder (seed: 0.6; paper: 0.5-0.7 best)",
                               min=0.0, max=0.99)
    norm_pix_loss: bool = option(False, "predict per-patch normalised pixels (MAE's option)")
    use_msdc: bool = option(True, "multi-scale dilated convolutions in every block (ablation switch)")
    use_mhsa: bool = option(True, "self-attention in every block (ablation switch)")
    use_mscffn: bool = option(True, "multi-scale convolutional FFN (off = plain FFN; ablation switch)")
    min_scale: float = option(0.2, "random resized crop: smallest area share (MAE uses 0.2)", min=0.0, max=1.0)
    color_jitter: float = option(0.4, "colour jitter strength (0 = off)", min=0.0)
    save_every: int = option(10, "save encoder.pt and gmae.pt every N epochs (previews: every epoch)", min=1)
    preview_count: int = option(8, "images in each preview PNG", min=0)
    patience: int = option(0, "early stopping on --monitor (0 = off; pretraining runs its epochs)", min=0)
    keep_snapshots: bool = option(False, "also keep every saved encoder as snapshots/encoder_epoch_NNNN.pt")

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise UserError(f"mask_ratio must be within [0, 1), got {self.mask_ratio}")


@dataclass
class PretrainResult:
    """What pretraining leaves behind; also written as `pretrain_summary.json` in output_dir."""

    output_dir: str
    encoder_weights: str  # encoder.pt: what `--pretrained_weights` of fine-tuning takes
    autoencoder: str  # gmae.pt
    config: str
    previews: list[str] = field(default_factory=list)
    corpus_dir: str = ""  # the split corpus when one was built (finetune_dataset is inside)
    metrics: dict[str, Any] = field(default_factory=dict)  # last epoch's train/val loss
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch metrics
    skipped_images: list[str] = field(default_factory=list)  # 'file: reason' of image files that do not decode
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- corpus
def build_corpus(cfg: CorpusOptions, raw_dir: str | Path, corpus_dir: str | Path, seed: int = 0,
                 progress: bool = True) -> Path:
    """raw source -> corpus_dir/{formatted, clean, split}; returns the split root (reused if complete)."""
    from shared.data.corpus import SOURCES, SPLIT_REPORT_NAME, data_formater, prepare_corpus, split_corpus

    corpus_dir = Path(corpus_dir)
    split_dir = corpus_dir / "split"
    if (split_dir / SPLIT_REPORT_NAME).is_file():
        print(f"corpus: reusing {split_dir} (delete {corpus_dir} to rebuild)")
        return split_dir
    if corpus_dir.exists() and any(corpus_dir.iterdir()):
        raise UserError(f"{corpus_dir} holds an incomplete corpus from an interrupted run; delete it and rerun")
    gmap = None
    if cfg.gesture_map:
        from shared.data.sources import GestureMap, default_gesture_map_path

        gmap = GestureMap.load(default_gesture_map_path(), cfg.gesture_map)
    kwargs: dict[str, Any] = {}
    if cfg.source == "hagrid":
        # Hands the map does not keep stay in the corpus unlabelled: pretraining can use them.
        kwargs = {"mode": cfg.hagrid_mode, "gesture_map": gmap, "unmapped_unlabelled": True}
    elif cfg.source == "yolo":
        kwargs = {"gesture_map": gmap}
    scan = SOURCES[cfg.source](raw_dir, **kwargs)
    if not scan.items:
        raise UserError(f"{raw_dir}: the {cfg.source} source gave no images "
                        f"({len(scan.issues)} issues, e.g. {scan.issues[:2]})")
    print(f"corpus: {len(scan.items)} items from {cfg.source} {raw_dir} ({len(scan.issues)} issues, "
          f"skipped by the gesture map: {scan.skipped or 'none'})")
    fmt = data_formater(scan.items, corpus_dir / "formatted", crop_size=cfg.crop_size, crop_expand=cfg.crop_expand,
                        progress=progress)
    clean = prepare_corpus(corpus_dir / "formatted", corpus_dir / "clean", min_size=cfg.min_image_size,
                           progress=progress)
    split = split_corpus(corpus_dir / "clean", split_dir, pretrain_fraction=cfg.pretrain_fraction,
                         val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=seed,
                         progress=progress)
    (corpus_dir / "source_report.json").write_text(json.dumps({
        "source": cfg.source, "raw_dir": str(raw_dir), "items": len(scan.items), "issues": scan.issues,
        "skipped": scan.skipped, "formatted": fmt.written, "format_failed": fmt.failed, "per_class": fmt.per_class,
        "clean_kept": clean.kept, "clean_dropped": clean.dropped, "split_counts": split.counts,
    }, indent=2))
    print(f"corpus: kept {clean.kept}/{clean.scanned} ({clean.dropped or 'none dropped'}); split into {split_dir}")
    return split_dir


def build_teacher_crops(cfg: CorpusOptions, raw_dir: str | Path, corpus_dir: str | Path, seed: int = 0,
                        progress: bool = True) -> Path:
    """Real photos -> corpus_dir/hands/<folder>/*.png, every hand the teacher finds (reused if complete).

    The crop is the one the landmark network sees while tracking (placed by the 21 landmarks,
    upright), from the photos' own keypoint labels when it is a YOLO-pose dataset with them.
    """
    from shared.inference.real_crops import write_hand_crops

    hands = Path(corpus_dir) / "hands"
    report = Path(corpus_dir) / "hands_report.json"
    if report.is_file():
        print(f"corpus: reusing {hands} (delete {corpus_dir} to rebuild)")
        return hands
    if hands.exists():
        raise UserError(f"{hands} holds an incomplete crop folder from an interrupted run; delete it and rerun")
    print(f"corpus: cutting every hand out of {raw_dir} with the MediaPipe teacher ({cfg.crop_size} px crops)")
    written = write_hand_crops(raw_dir, hands, size=cfg.crop_size, seed=seed, min_score=cfg.min_score,
                               progress=progress)
    report.write_text(json.dumps(dataclasses.asdict(written), indent=2))
    for bad in written.unreadable:  # skipped, never silently: named here and in hands_report.json
        print(f"warning: {bad}: not a readable image, skipped", file=sys.stderr)
    print(f"corpus: {written.crops} hands from {written.images_read} photos ({written.how}; "
          f"{len(written.unreadable)} unreadable) in {len(written.per_folder)} folder(s)")
    return hands


# --------------------------------------------------------------------------- stage
def run_pretrain(cfg: PretrainConfig, logger: Any = None) -> PretrainResult:
    if cfg.model not in MODELS:
        raise UserError(f"--model {cfg.model}: pretraining needs one of {', '.join(MODELS)}")
    if not cfg.data_dir:
        raise UserError("no data: pass --data_dir (pretraining images, or the raw source with --source)")
    if not Path(cfg.data_dir).is_dir():
        raise UserError(f"--data_dir {cfg.data_dir}: folder not found")
    preflight(cfg)  # outputs writable, ClearML (when asked for) reachable: before any work
    # Heavy imports after the checks: a bad value or server fails in a second, not after torch loads.
    import lightning as L
    import torch

    from shared.data.corpus import PRETRAIN_PART, ImageFolderDataset, resolve_subset
    from shared.data.image_transforms import train_transform, val_transform
    from shared.logger import get_logger
    from shared.models.registry import create_model
    from shared.training.gmae import GMAEPretrainModule, PretrainArtifacts, make_loader, schedule_steps

    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_root = Path(cfg.data_dir)
    corpus_dir = ""
    if cfg.source == "teacher":
        data_root = build_teacher_crops(cfg, cfg.data_dir, output_dir / "corpus", seed=cfg.seed,
                                        progress=cfg.progress_bar)
        corpus_dir = str(data_root)
    elif cfg.source != "folder":
        data_root = build_corpus(cfg, cfg.data_dir, output_dir / "corpus", seed=cfg.seed, progress=cfg.progress_bar)
        corpus_dir = str(data_root)
    config_path = save_config(cfg, output_dir / "config.yaml")
    if cfg.corpus_only:
        result = PretrainResult(str(output_dir), "", "", str(config_path), corpus_dir=corpus_dir)
        return _write_summary(result)

    maybe_init_clearml(cfg.project_name, cfg.task_name)
    logger = logger or get_logger(output_dir)
    logger.log_params(config_to_dict(cfg), name="pretrain")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    train_dir = resolve_subset(data_root, PRETRAIN_PART, "train")
    if train_dir is None:
        raise UserError(f"{data_root}: no training images (expected {PRETRAIN_PART}/train, train/, or an image tree)")
    val_dir = resolve_subset(data_root, PRETRAIN_PART, "val")
    train_ds = ImageFolderDataset(train_dir, train_transform(cfg.img_size, cfg.min_scale,
                                                             color_jitter=cfg.color_jitter), labelled=False)
    val_ds = ImageFolderDataset(val_dir, val_transform(cfg.img_size), labelled=False) if val_dir else None
    skipped = skipped_files(train_ds, val_ds)
    print(f"pretrain: {len(train_ds)} training images from {train_dir}, "
          f"{len(val_ds) if val_ds else 0} validation images, {cfg.img_size}px, mask {cfg.mask_ratio}"
          f"{f', {len(skipped)} bad image file(s) skipped' if skipped else ''}")

    model = create_model(cfg.model, img_size=cfg.img_size, patch_size=cfg.patch_size or None,
                         mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss, use_msdc=cfg.use_msdc,
                         use_mhsa=cfg.use_mhsa, use_mscffn=cfg.use_mscffn)
    if cfg.img_size % model.cfg.encoder.patch_size:
        raise UserError(f"--img_size {cfg.img_size} is not a multiple of the patch size {model.cfg.encoder.patch_size}")
    train_dl = make_loader(train_ds, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, seed=cfg.seed,
                           drop_last=len(train_ds) > cfg.batch_size)
    val_dl = make_loader(val_ds, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers) if val_ds else None
    total, warmup = schedule_steps(len(train_dl), cfg.epochs, cfg.warmup_epochs, cfg.max_steps,
                                   cfg.limit_train_batches)
    module = GMAEPretrainModule(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                mask_ratio=cfg.mask_ratio, warmup_steps=warmup, total_steps=total)
    preview_src = val_ds or ImageFolderDataset(train_dir, val_transform(cfg.img_size), labelled=False)
    previews = torch.stack([preview_src[i][0] for i in range(min(cfg.preview_count, len(preview_src)))]) \
        if cfg.preview_count > 0 else None
    meta = {"model_name": cfg.model, "img_size": cfg.img_size, "mask_ratio": cfg.mask_ratio,
            "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    artifacts = PretrainArtifacts(output_dir, previews, every=cfg.save_every, meta=meta, logger=logger,
                                  snapshots=cfg.keep_snapshots)
    monitor = cfg.monitor or ("val/loss" if val_dl is not None else "train/loss")
    trainer = lightning_trainer(cfg, output_dir, [artifacts], monitor, "min")
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=resume_path(cfg, output_dir))

    for name in ("encoder.pt", "gmae.pt"):
        logger.log_artifact(name.removesuffix(".pt"), output_dir / name)
    result = PretrainResult(
        output_dir=str(output_dir), encoder_weights=str(output_dir / "encoder.pt"),
        autoencoder=str(output_dir / "gmae.pt"), config=str(config_path), previews=artifacts.previews,
        corpus_dir=corpus_dir, metrics={k: v for k, v in (artifacts.history[-1] if artifacts.history else {}).items()},
        history=artifacts.history, skipped_images=skipped)
    return _write_summary(result)


def _write_summary(result: PretrainResult) -> PretrainResult:
    path = Path(result.output_dir) / "pretrain_summary.json"
    result.summary = str(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


# --------------------------------------------------------------------------- CLI
def resolve_stage_config(cls: type, section: str, config_path: str | Path | None, preset: str | None,
                         args: argparse.Namespace) -> Any:
    """A YAML with a `<section>:` (and optional `presets:`), or a flat YAML of the fields, <- flags."""
    path = Path(config_path) if config_path else None
    if path is None:
        return load_config(cls, None, args)
    data = read_yaml(path)
    if section in data or "presets" in data:
        return resolve_config(cls, section, path, preset, args)
    if preset:
        raise UserError(f"{path}: --preset {preset} needs a `presets:` section in the file")
    return load_config(cls, path, args)


def parse_args(argv: list[str] | None) -> PretrainConfig:
    parser = argparse.ArgumentParser(prog="python -m components.pretrain",
                                     description="G-MAE masked pretraining on unlabelled hand images.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
                        help=f"YAML with a `pretrain:` section (default: {DEFAULT_CONFIG})")
    parser.add_argument("--preset", default=None, help="preset under `presets:` in the YAML (e.g. demo)")
    add_config_args(parser, PretrainConfig)
    args = parser.parse_args(argv)
    return resolve_stage_config(PretrainConfig, "pretrain", args.config, args.preset, args)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    result = run_pretrain(cfg)
    if cfg.corpus_only:
        print(f"corpus: {result.corpus_dir}; summary: {result.summary}")
        return 0
    shown = " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if k in ("train/loss", "val/loss"))
    print(f"final: {shown}")
    print(f"encoder: {result.encoder_weights}; previews: {len(result.previews)}; summary: {result.summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
