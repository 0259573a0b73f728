"""`--task gmae_finetune`: fine-tune a G-MAE encoder for gestures (the seed's src/scripts/finetune.py).

    python -m components.train --task gmae_finetune --config configs/finetune.yaml --data_dir D \\
        --pretrained_weights O/encoder.pt --checkpoint_dir C [--epochs 250 --batch_size 64 \\
        --learning_rate 1e-4 --num_classes 5]

(`python -m components.tasks.gmae_finetune ...` takes the same flags.)

`D` is a split root (`D/finetune_dataset/{train,val[,test]}`, as
`split_corpus` writes it), a folder with `train/` and `val/`, or one class
tree (then a stratified `--val_split` is held out). Class folders name the
classes; folders named after our five gestures keep the project's gesture ids.

The encoder is loaded from `--pretrained_weights` (the `encoder.pt` of
`components.pretrain`); every encoder weight must be in the file (missing ones
are an error), and the load report (loaded / missing / unexpected / ignored
keys) goes to the console, the summary and `encoder_load.json`. Without
weights the classifier trains from scratch (the baseline the benchmark
compares against). Layer-wise learning-rate decay (`--layer_decay`, 1 = off)
lets the pretrained early layers move less than the new head.

Writes to C, like the other training tasks: `config.yaml`, `best.pt` /
`last.pt` (portable format, by `--monitor`, default `val/accuracy`),
`metrics.json` (`val/accuracy`, `val/macro_f1`, ... and the best epoch),
`metrics.jsonl`, `plots/confusion_matrix.png`, `train_summary.json`; with a
test split, `test_evaluation.json` from best.pt.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import config_to_dict, option, option_like, read_yaml
from shared.errors import UserError, run_cli
from shared.hand import GESTURES
from shared.paths import CONFIGS_DIR
from shared.training.run import (
    DEFAULT_CONFIG,
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

FINETUNE_CONFIG = CONFIGS_DIR / "finetune.yaml"
MODELS = ("gmae_classifier_tiny", "gmae_classifier_small", "gmae_classifier_base")
TASK = "gmae_finetune"


@dataclass
class GMAEFinetuneConfig(RunConfig):
    data_dir: str = option("", "labelled images: a split root (finetune_dataset/...), a folder with train/ val/, "
                           "or one class tree")
    val_dir: str = option("", "validation class tree (default: found under data_dir, else a split of it)")
    val_split: float = option(0.2, "share held out for validation when data_dir has no val folder", min=0.0, max=0.9)
    pretrained_weights: str = option("", "encoder.pt from components.pretrain ('' = train from scratch)")
    labels_per_class: int = option(0, "train on only N labelled images per class (seeded pick; 0 = all): "
                                   "label-efficiency studies", min=0)
    model: str = option("gmae_classifier_small", "gmae_classifier_tiny | _small | _base (the pretrained size)",
                        metadata={"choices": list(MODELS)})
    num_classes: int = option(0, "classes (0 = as many as the class folders; seed flag)", min=0)
    class_names: list[str] = option([], "class order (default: our five gestures when the folders use their "
                                     "names, else the sorted folder names)")
    img_size: int = option(0, "input side, pixels (0 = the pretrained encoder's, else the model's default)", min=0)
    patch_size: int = option(0, "patch side (0 = the model size's default; must match pretraining)", min=0)
    epochs: int = option_like(RunConfig, "epochs", 250, "training epochs (seed: 250)")
    batch_size: int = option_like(RunConfig, "batch_size", 64, "images per batch (seed: 64)")
    learning_rate: float = option(1e-4, "peak learning rate of the head; AdamW, warm-up + cosine (seed: 1e-4)", min=0.0)
    weight_decay: float = option_like(RunConfig, "weight_decay", 0.05, "AdamW weight decay (not on norms and biases)")
    layer_decay: float = option(0.75, "layer-wise lr decay: block i of D trains at lr * decay^(D+1-i) (1 = off)",
                                min=0.0, max=1.0)
    warmup_epochs: float = option(5.0, "linear warm-up, epochs (at most a fifth of the run)", min=0.0)
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", min=0.0, max=1.0)
    drop_path_rate: float = option(0.1, "stochastic depth of the encoder blocks", min=0.0, max=1.0)
    use_msdc: bool = option(True, "MSDC in the blocks (must match pretraining)")
    use_mhsa: bool = option(True, "self-attention in the blocks (must match pretraining)")
    use_mscffn: bool = option(True, "multi-scale conv FFN in the blocks (must match pretraining)")
    min_scale: float = option(0.35, "random resized crop: smallest area share", min=0.0, max=1.0)
    color_jitter: float = option(0.4, "colour jitter strength (0 = off)", min=0.0)
    evaluate_test: bool = option(True, "after training, evaluate best.pt on the test split when there is one")
    patience: int = option(0, "early stopping on --monitor (0 = off: the seed runs all its epochs)", min=0)
    output_dir: str = option("checkpoints/gmae_finetune", "outputs: best.pt, last.pt, metrics, plots, config",
                             output="dir")


@dataclass
class FinetuneResult(TrainResult):
    """TrainResult + where the encoder came from and what was loaded."""

    pretrained_weights: str = ""
    encoder_load: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data
def _class_names(cfg: GMAEFinetuneConfig, train_dir: Path) -> list[str]:
    from shared.data.corpus import find_classes

    folders = find_classes(train_dir)
    if not folders:
        raise UserError(f"{train_dir}: no class folders with images; fine-tuning needs one sub-folder per class")
    if cfg.class_names:
        names = list(cfg.class_names)
        extra = sorted(set(folders) - set(names))
        if extra:
            raise UserError(f"{train_dir}: class folders {extra} are not in --class_names {names}")
    elif set(folders) <= set(GESTURES) and (cfg.num_classes in (0, len(GESTURES))):
        names = list(GESTURES)  # our gesture ids, even when a class has no images here
    else:
        names = folders
    if cfg.num_classes and cfg.num_classes != len(names):
        raise UserError(f"--num_classes {cfg.num_classes} but the classes are {names} ({len(names)}); pass "
                        f"--num_classes {len(names)} or --class_names")
    return names


def _datasets(cfg: GMAEFinetuneConfig, img_size: int) -> tuple[Any, Any, Path | None, list[str]]:
    import numpy as np
    from torch.utils.data import Subset

    from shared.data.corpus import FINETUNE_PART, ImageFolderDataset, resolve_subset
    from shared.data.image_transforms import train_transform, val_transform

    root = Path(cfg.data_dir)
    if not root.is_dir():
        raise UserError(f"--data_dir {root}: folder not found")
    train_dir = resolve_subset(root, FINETUNE_PART, "train")
    if train_dir is None:
        raise UserError(f"{root}: no training images (expected {FINETUNE_PART}/train, train/, or class folders)")
    val_dir = Path(cfg.val_dir) if cfg.val_dir else resolve_subset(root, FINETUNE_PART, "val")
    test_dir = resolve_subset(root, FINETUNE_PART, "test")
    names = _class_names(cfg, train_dir)
    t_train = train_transform(img_size, cfg.min_scale, color_jitter=cfg.color_jitter)
    t_val = val_transform(img_size)
    if val_dir is not None:
        train = _few_labels(cfg, ImageFolderDataset(train_dir, t_train, names), names, train_dir)
        return train, ImageFolderDataset(val_dir, t_val, names), test_dir, names
    # One class tree: a stratified hold-out fixed by the seed.
    train_all = ImageFolderDataset(train_dir, t_train, names)
    val_all = ImageFolderDataset(train_dir, t_val, names)
    labels = np.array(train_all.targets())
    rng = np.random.default_rng(cfg.seed)
    val_idx: list[int] = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        rng.shuffle(idx)
        if len(idx) > 1:
            val_idx += idx[: max(1, round(len(idx) * cfg.val_split))].tolist()
    if not val_idx:
        raise UserError(f"{train_dir}: too few images to hold out a validation split; add images or pass --val_dir")
    held = set(val_idx)
    train_idx = [i for i in range(len(labels)) if i not in held]
    train = _few_labels(cfg, Subset(train_all, train_idx), names, train_dir, labels[train_idx])
    return train, Subset(val_all, sorted(held)), test_dir, names


def _few_labels(cfg: GMAEFinetuneConfig, dataset: Any, names: list[str], where: Path, targets: Any = None) -> Any:
    """`--labels_per_class N`: N images of every class (seeded); a set smaller than its classes is an error."""
    import numpy as np
    from torch.utils.data import Subset

    from shared.data.corpus import find_classes

    labels = np.asarray(dataset.targets() if targets is None else targets)
    if cfg.labels_per_class:
        rng = np.random.default_rng(cfg.seed)
        keep: list[int] = []
        for c in np.unique(labels):
            idx = np.nonzero(labels == c)[0]
            keep += rng.permutation(idx)[: cfg.labels_per_class].tolist()
        dataset, labels = Subset(dataset, sorted(keep)), labels[sorted(keep)]
    # The classes asked for (--class_names), else the class folders there: each needs a training image.
    required = list(cfg.class_names) or find_classes(where)
    have = {names[int(c)] for c in np.unique(labels)}
    empty = [c for c in required if c not in have]
    if empty or len(have) < 2:
        raise UserError(f"{where}: {len(labels)} labelled training image(s) in {len(have)} class(es), none for "
                        f"{empty or 'a second class'}; fine-tuning needs at least one image per class (and two "
                        "classes); add labelled images, raise --labels_per_class, or fix --class_names")
    return dataset


def _pretrained_img_size(path: str) -> int | None:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - load_pretrained_encoder reports a bad file properly
        return None
    return int(data["img_size"]) if isinstance(data, dict) and data.get("img_size") else None


# --------------------------------------------------------------------------- stage
def run_finetune(cfg: GMAEFinetuneConfig, logger: Any = None) -> FinetuneResult:
    if cfg.model not in MODELS:
        raise UserError(f"--model {cfg.model}: fine-tuning needs one of {', '.join(MODELS)}")
    if not cfg.data_dir:
        raise UserError("no data: pass --data_dir (class folders, or the split root written by pretraining)")
    if cfg.pretrained_weights and not Path(cfg.pretrained_weights).is_file():
        raise UserError(f"--pretrained_weights {cfg.pretrained_weights}: file not found (pass the encoder.pt "
                        "written by `python -m components.pretrain`)")
    preflight(cfg)
    # Heavy imports after the checks: a bad value or server fails in a second, not after torch loads.
    import lightning as L

    from shared.logger import get_logger
    from shared.models.gmae import load_pretrained_encoder
    from shared.models.registry import create_model
    from shared.training.callbacks import PortableCheckpoints
    from shared.training.gmae import FinetuneReporter, GMAEFinetuneModule, make_loader, schedule_steps

    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    maybe_init_clearml(cfg.project_name, cfg.task_name)
    logger = logger or get_logger(output_dir)
    config_path = save_resolved(cfg, output_dir, logger)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    img_size = cfg.img_size or (cfg.pretrained_weights and _pretrained_img_size(cfg.pretrained_weights)) or 0
    train_ds, val_ds, test_dir, names = _datasets(cfg, img_size or _default_img_size(cfg.model))
    img_size = img_size or _default_img_size(cfg.model)
    model_kwargs = {"num_classes": len(names), "img_size": img_size, "patch_size": cfg.patch_size or None,
                    "use_msdc": cfg.use_msdc, "use_mhsa": cfg.use_mhsa, "use_mscffn": cfg.use_mscffn}
    model = create_model(cfg.model, drop_path_rate=cfg.drop_path_rate, **model_kwargs)
    if img_size % model.cfg.encoder.patch_size:
        raise UserError(f"img_size {img_size} is not a multiple of the patch size {model.cfg.encoder.patch_size}")
    load: dict[str, Any] = {}
    if cfg.pretrained_weights:
        report = load_pretrained_encoder(model.encoder, cfg.pretrained_weights)
        print(f"encoder: {report.summary()}")
        if report.unexpected:
            print(f"encoder: unexpected keys (not loaded): {report.unexpected[:5]}")
        load = {"source": report.source, "loaded": len(report.loaded), "missing": report.missing,
                "unexpected": report.unexpected, "ignored": report.ignored}
        (output_dir / "encoder_load.json").write_text(json.dumps(load, indent=2))
        logger.log_params({"loaded": len(report.loaded), "missing": len(report.missing),
                           "unexpected": len(report.unexpected), "ignored": len(report.ignored)}, name="encoder_load")
    else:
        print("encoder: no --pretrained_weights, training from scratch")
    skipped = skipped_files(train_ds, val_ds)
    print(f"gmae_finetune: {len(train_ds)} training / {len(val_ds)} validation images, classes {names}, {img_size}px"
          f"{f', {len(skipped)} bad image file(s) skipped' if skipped else ''}")

    train_dl = make_loader(train_ds, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, seed=cfg.seed,
                           drop_last=len(train_ds) > cfg.batch_size)
    val_dl = make_loader(val_ds, cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    total, warmup = schedule_steps(len(train_dl), cfg.epochs, cfg.warmup_epochs, cfg.max_steps,
                                   cfg.limit_train_batches)
    meta = {"task": TASK, "model_name": cfg.model, "model_kwargs": model_kwargs, "img_size": img_size,
            "gesture_names": names, "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "preprocess": "val_transform: shorter side to img_size / 0.875, centre crop, normalise",
            "pretrained_weights": cfg.pretrained_weights, "config": config_to_dict(cfg)}
    module = GMAEFinetuneModule(model, names, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                layer_decay=cfg.layer_decay, label_smoothing=cfg.label_smoothing,
                                warmup_steps=warmup, total_steps=total, meta=meta)
    monitor = cfg.monitor or "val/accuracy"
    mode = monitor_mode(monitor, cfg.monitor_mode)
    reporter = FinetuneReporter(logger, output_dir, monitor, mode, plots=cfg.plots)
    trainer = lightning_trainer(cfg, output_dir, [reporter, PortableCheckpoints(output_dir, monitor, mode)],
                                monitor, mode)
    trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=resume_path(cfg, output_dir))

    test_metrics: dict[str, Any] = {}
    if cfg.evaluate_test and test_dir is not None:
        from components.classify import evaluate_checkpoint

        test_metrics = evaluate_checkpoint(output_dir / "best.pt", test_dir, output_dir / "test_evaluation",
                                           batch_size=cfg.batch_size, num_workers=cfg.num_workers)
        logger.log_scalars({"test/accuracy": test_metrics["accuracy"], "test/macro_f1": test_metrics["macro_f1"]},
                           step=trainer.current_epoch)
    plots = sorted(str(p) for p in (output_dir / "plots").glob("*.png"))
    for path in plots:
        logger.log_artifact(Path(path).stem, path)
    result = FinetuneResult(
        task=TASK, output_dir=str(output_dir), best=str(output_dir / "best.pt"), last=str(output_dir / "last.pt"),
        config=str(config_path), metrics=reporter.final_metrics(),
        extra={"plots": plots, "metrics_jsonl": str(output_dir / "metrics.jsonl"), "classes": names,
               "train_images": len(train_ds), "val_images": len(val_ds), "test_dir": str(test_dir or ""),
               "skipped_images": len(skipped), "skipped_image_files": skipped},
        pretrained_weights=cfg.pretrained_weights, encoder_load=load,
        test_metrics={k: v for k, v in test_metrics.items() if k in ("accuracy", "macro_f1", "num_images")})
    return write_summary(result)


def _default_img_size(model: str) -> int:
    from shared.models.gmae import gmst_config

    return gmst_config(model.rsplit("_", 1)[-1]).img_size


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Our own YAML by default (the shared train.yaml need not carry this task's section).
    if "--config" not in argv and FINETUNE_CONFIG.is_file() and not (DEFAULT_CONFIG.is_file() and _has_section()):
        argv = ["--config", str(FINETUNE_CONFIG)] + argv
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        _check_section(Path(argv[argv.index("--config") + 1]))
    cfg = parse_task_args(GMAEFinetuneConfig, TASK, argv, "Fine-tune a (pretrained) G-MAE encoder for gestures.",
                          aliases={"--checkpoint_dir": "output_dir"})
    result = run_finetune(cfg)
    m = result.metrics
    print("final: " + " ".join(f"{k}={m[k]:.4f}" for k in ("val/accuracy", "val/macro_f1") if k in m))
    if result.test_metrics:
        print(f"test: accuracy={result.test_metrics['accuracy']:.4f} macro_f1={result.test_metrics['macro_f1']:.4f}")
    print(f"best: {result.best}; summary: {result.summary}")
    return 0


def _check_section(path: Path) -> None:
    """A YAML without our section would be read as empty: say so instead of silently using defaults."""
    data = read_yaml(path)
    if TASK not in data and "presets" not in data and data:
        raise UserError(f"{path}: no `{TASK}:` section; put the fine-tuning keys under `{TASK}:` "
                        f"(see configs/finetune.yaml)")


def _has_section() -> bool:
    return TASK in read_yaml(DEFAULT_CONFIG)


if __name__ == "__main__":
    run_cli(main)
