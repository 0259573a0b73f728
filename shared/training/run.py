"""What every training stage shares: the run config, the result, config resolution, the Lightning run.

Each task (`components.tasks.detector`, `classifier`, `landmarks`, `gmae_finetune`, and
`components.pretrain`) has one config dataclass built on `RunConfig` (hardware, precision,
epochs, batch, weight decay, stopping, resuming, logging: each setting's one home; a task
changes only a default, with `option_like`), a stage function returning a `TrainResult` and
a CLI parsed by `parse_task_args`. Settings resolve as dataclass defaults <-
`configs/train.yaml` section <- preset <- flags (`resolve_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import (
    FLAGS,
    add_config_args,
    build_config,
    check_outputs,
    config_to_dict,
    option,
    read_yaml,
    save_config,
)
from shared.data.images import report_skipped
from shared.errors import UserError
from shared.logger import check_clearml_server, start_clearml_task
from shared.paths import CONFIGS_DIR

DEFAULT_CONFIG = CONFIGS_DIR / "train.yaml"


@dataclass
class TrainResult:
    """What a training stage leaves behind; also written as `train_summary.json` in `output_dir`."""

    task: str
    output_dir: str
    best: str  # checkpoint to use downstream
    last: str
    config: str  # the resolved config, as written
    metrics: dict[str, Any] = field(default_factory=dict)  # final validation metrics
    summary: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific paths (e.g. the Ultralytics run)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunConfig:
    """Fields every Lightning task shares: hardware, precision, stopping, resuming, logging."""

    accelerator: str = option("auto", "cpu | gpu | auto (a GPU when one is visible)")
    devices: str = option("auto", "number of devices or 'auto'; >1 GPU trains with DDP")
    strategy: str = option("auto", "auto | ddp | ddp_find_unused_parameters_true | ...")
    precision: str = option("32-true", "32-true | bf16-mixed | 16-mixed (mixed precision on GPU)")
    num_workers: int = option(2, "data-loading worker processes", min=0)
    threads: int = option(0, "CPU threads for torch (0 = torch's default); 1 is much faster on a busy, shared CPU",
                          min=0)
    seed: int = option(42, "random seed (weights of new layers, sampling, augmentation)")
    # The schedule every task has; a task changes a default with option_like (its seed's value). The
    # learning rate is per task: the hand seed's tasks take --lr (+ --head_lr), G-MAE's --learning_rate.
    epochs: int = option(100, "training epochs", min=1)
    batch_size: int = option(32, "samples per batch (per device)", min=1)
    weight_decay: float = option(0.01, "AdamW weight decay", min=0.0)
    patience: int = option(20, "early stopping: epochs without improvement of --monitor (0 = off)", min=0)
    monitor: str = option("", "metric that picks best.pt and drives early stopping ('' = the task's default)")
    monitor_mode: str = option("", "max | min ('' = min for losses and nme, max otherwise)", choices=["", "max", "min"])
    grad_clip: float = option(0.0, "clip the gradient norm (0 = off)", min=0.0)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1 = epochs decide)", min=-1)
    limit_train_batches: float = option(0.0, "batches per training epoch: a fraction <= 1, a count > 1, 0 = all",
                                        min=0.0)
    limit_val_batches: float = option(0.0, "batches per validation: a fraction <= 1, a count > 1, 0 = all", min=0.0)
    progress_bar: bool = option(True, "show progress bars")
    plots: bool = option(True, "write the confusion-matrix / keypoint-error PNGs every epoch")
    resume: str = option("", "resume: 'last' (this --checkpoint_dir), 'auto' (last if present) or a .ckpt path")
    project_name: str = option("", "ClearML project: start a task here when ClearML is configured (seed flag)")
    task_name: str = option("", "ClearML task name (seed flag)")


def monitor_mode(monitor: str, mode: str) -> str:
    if mode:
        if mode not in ("max", "min"):
            raise UserError(f"--monitor_mode {mode}: use max or min")
        return mode
    return "min" if ("loss" in monitor or "nme" in monitor) else "max"


def skipped_files(*datasets: Any) -> list[str]:
    """'file: reason' for every image file the datasets skipped (they do not decode), once each;
    printed as warnings here and counted in the run's summary."""
    seen: dict[str, Any] = {}
    for ds in datasets:
        for bad in getattr(ds, "skipped", None) or getattr(getattr(ds, "dataset", None), "skipped", None) or []:
            seen.setdefault(bad.path, bad)
    report_skipped(list(seen.values()))
    return [str(b) for b in seen.values()]


def write_summary(result: TrainResult) -> TrainResult:
    path = Path(result.output_dir) / "train_summary.json"
    result.summary = str(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


# ---------------------------------------------------------------------------------------------- config

# Top-level sections a training YAML may hold (one per task, plus `presets:`); pretraining and
# classification keep their own sections in their own files.
TASK_SECTIONS = ("detector", "classifier", "keypoints", "multitask", "gmae_finetune")
CONFIG_SECTIONS = (*TASK_SECTIONS, "pretrain", "classify", "infer")


def _preset_section(data: dict[str, Any], task: str, preset: str | None, source: str) -> dict[str, Any]:
    """The `task:` section of a training YAML, or with `preset` only that preset's `task:` part."""
    if preset is None:
        values = data.get(task) or {}
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {task!r} must be a mapping of key: value, got {values!r}")
        return dict(values)
    presets = data.get("presets") or {}
    if preset not in presets:
        raise UserError(f"{source}: no preset {preset!r}; available: {', '.join(sorted(presets)) or 'none'}")
    unknown = sorted(set(map(str, presets[preset] or {})) - set(CONFIG_SECTIONS))
    if unknown:
        raise UserError(f"{source}: presets.{preset}: unknown section(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(CONFIG_SECTIONS)}")
    values = (presets[preset] or {}).get(task) or {}
    if not isinstance(values, dict):
        raise UserError(f"{source}: presets.{preset}.{task} must be a mapping of key: value, got {values!r}")
    return dict(values)


def resolve_config(cls: type, task: str, config_path: str | Path | None = None, preset: str | None = None,
                   overrides: dict[str, Any] | argparse.Namespace | None = None) -> Any:
    """Dataclass defaults <- `configs/train.yaml` section `task` <- preset `presets.<preset>.<task>` <- flags.
    A `--config` file without sections holds this task's keys directly.

    Every value goes through `shared.config.build_config`: unknown keys, types and ranges are
    checked before anything runs, and an error names the file (or flag), key, value and type."""
    path = Path(config_path) if config_path else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    layers: list[tuple[str, Any]] = []
    if path is not None:
        data = read_yaml(path)
        if config_path and data and not set(map(str, data)) & {*CONFIG_SECTIONS, "presets"}:
            data = {task: data}  # a flat file of this task's keys
        unknown = sorted(set(map(str, data)) - set(CONFIG_SECTIONS) - {"presets"})
        if unknown:
            raise UserError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(CONFIG_SECTIONS)}, presets (one section per task)")
        layers.append((f"{path} [{task}]", _preset_section(data, task, None, str(path))))
        if preset:
            layers.append((f"{path} [presets.{preset}.{task}]", _preset_section(data, task, preset, str(path))))
    elif preset:
        raise UserError(f"--preset {preset} needs a config file; {DEFAULT_CONFIG} does not exist")
    layers.append((FLAGS, overrides))
    return build_config(cls, layers)


def parse_task_args(cls: type, task: str, argv: list[str] | None, description: str,
                    aliases: dict[str, str] | None = None) -> Any:
    """Build a task's parser (`--config`, `--preset`, one flag per field), parse, resolve the config."""
    parser = argparse.ArgumentParser(prog=f"python -m components.train --task {task}", description=description)
    parser.add_argument("--config", default=None, help=f"YAML with per-task sections (default: {DEFAULT_CONFIG})")
    parser.add_argument("--preset", default=None, help="preset name under `presets:` in the YAML (e.g. demo)")
    add_config_args(parser, cls)
    for alias, dest in (aliases or {}).items():  # the seed used --output_dir for one script, --checkpoint_dir else
        parser.add_argument(alias, dest=dest, default=None, help=f"same as --{dest}")
    args = parser.parse_args(argv)
    return resolve_config(cls, task, args.config, args.preset, args)


def save_resolved(cfg: Any, output_dir: Path, logger: Any) -> Path:
    path = save_config(cfg, output_dir / "config.yaml")
    logger.log_params(config_to_dict(cfg), name="train")
    return path


# ---------------------------------------------------------------------------------------------- running

def preflight(cfg: Any) -> None:
    """What every training stage checks before any work: its outputs can be written, and a
    ClearML server it will log to (`--project_name`) answers."""
    check_outputs(cfg)
    if getattr(cfg, "project_name", ""):
        check_clearml_server()


def maybe_init_clearml(project_name: str, task_name: str) -> None:
    """Start a ClearML task when asked for one (`--project_name`) and ClearML is configured;
    otherwise log locally. A configured but unreachable server is one clear error within
    seconds (`shared.logger.start_clearml_task`), not the SDK's minutes of silent retries."""
    if not project_name:
        return
    start_clearml_task(project_name, task_name or "train")


def lightning_trainer(cfg: Any, output_dir: Path, callbacks: list[Any], monitor: str, mode: str) -> Any:
    """A Lightning Trainer from the common fields: devices/precision/epochs/patience/progress."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    if cfg.threads > 0:
        # OpenMP threads spin at every barrier; when other processes hold the cores, 2 threads on
        # 2 cores can run 5-20x slower than 1 (measured here), so a shared machine wants 1.
        torch.set_num_threads(cfg.threads)

    callbacks = list(callbacks)
    # Lightning's own checkpoint (optimizer + loop state) exists only for --resume.
    callbacks.append(ModelCheckpoint(dirpath=output_dir / "lightning", filename="last", save_last=True,
                                     save_top_k=0, enable_version_counter=False))
    if cfg.patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience, check_finite=True))
    devices: Any = cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    limit_train = _limit(cfg.limit_train_batches)
    if cfg.max_steps > 0 and (limit_train is None or isinstance(limit_train, int)):
        # Lightning validates at the end of an epoch; a run that stops on --max_steps inside the
        # first epoch would never validate (no best.pt, and early stopping fails on the missing
        # metric). An epoch of at most max_steps batches ends where the run ends, and validates.
        limit_train = min(limit_train or cfg.max_steps, cfg.max_steps)
    return L.Trainer(
        accelerator=cfg.accelerator, devices=devices, strategy=cfg.strategy, precision=cfg.precision,
        max_epochs=cfg.epochs, max_steps=cfg.max_steps, limit_train_batches=limit_train,
        limit_val_batches=_limit(cfg.limit_val_batches), callbacks=callbacks, logger=False,
        default_root_dir=str(output_dir), enable_progress_bar=cfg.progress_bar, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=10, deterministic=False, gradient_clip_val=cfg.grad_clip or None,
    )


def _limit(value: float) -> int | float | None:
    """Lightning reads a float as a fraction and an int as a batch count; 0 means all batches."""
    if not value:
        return None
    return float(value) if value <= 1 else int(value)


def resume_path(cfg: Any, output_dir: Path) -> str | None:
    """`--resume last` = this run's own Lightning checkpoint; a path = that file."""
    if not cfg.resume:
        return None
    path = output_dir / "lightning" / "last.ckpt" if cfg.resume in ("last", "auto") else Path(cfg.resume)
    if not path.is_file():
        if cfg.resume == "auto":
            return None
        raise UserError(f"{path}: no checkpoint to resume from; train once with --checkpoint_dir {output_dir} or "
                        f"pass a Lightning .ckpt")
    return str(path)

