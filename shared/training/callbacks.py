"""Lightning callbacks: per-epoch logging, plots, and our portable best.pt / last.pt.

Lightning's own `.ckpt` (optimizer state, loop state) stays in
`<checkpoint_dir>/lightning/` for `--resume`. What other stages load is the
small, framework-free checkpoint written here:

    {"format": "handops-checkpoint/1", "task", "model_name", "model_kwargs",
     "state_dict" (the bare model's, no "model." prefix), "img_size",
     "gesture_names", "normalize" (mean/std or None), "roi" (crop convention),
     "epoch", "step", "metrics", "config"}

`load_checkpoint(path)` rebuilds the model from it through the registry.
Plots use `matplotlib.figure.Figure` with the Agg canvas directly, so nothing
here switches the global backend.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from shared.errors import UserError
from shared.hand import KEYPOINT_NAMES
from shared.logger import ExperimentLogger
from shared.models.registry import create_model

CHECKPOINT_FORMAT = "handops-checkpoint/1"


def _scalar(value: Any) -> float | None:
    try:
        v = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def collect_metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """Epoch-level scalars under `prefix` (e.g. "val/") from the trainer, as plain floats."""
    out: dict[str, float] = {}
    items = trainer.callback_metrics
    for key, value in items.items():
        if not key.startswith(prefix) or key.endswith("_step"):
            continue
        if f"{key}_epoch" in items:  # logged per step and per epoch: the epoch mean is the one we want
            continue
        v = _scalar(value)
        if v is not None:
            out[key.removesuffix("_epoch")] = v
    return dict(sorted(out.items()))


def export_state(pl_module: L.LightningModule, trainer: L.Trainer | None = None,
                 metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """The portable checkpoint dict of a module (see the module docstring)."""
    meta = dict(getattr(pl_module, "meta", {}))
    state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        **meta,
        "state_dict": state,
        "epoch": int(trainer.current_epoch) if trainer is not None else None,
        "step": int(trainer.global_step) if trainer is not None else None,
        "metrics": dict(metrics or {}),
    }


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write must not leave a truncated best.pt behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Our checkpoint dict; a bare state dict (the seed's .pth) comes back as {"state_dict": ...}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass the best.pt/last.pt of a training run")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UserError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc}); pass a .pt/.pth "
                        f"written by torch.save") from None
    if isinstance(data, dict) and "state_dict" in data:
        state = data["state_dict"]
        # Lightning .ckpt files prefix the module's attribute name.
        if any(k.startswith("model.") for k in state) and data.get("format") != CHECKPOINT_FORMAT:
            state = {k.removeprefix("model."): v for k, v in state.items()}
        return {**data, "state_dict": state}
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"state_dict": data}
    raise UserError(f"{path}: no state dict inside; expected our best.pt format or a plain state dict")


def load_checkpoint(path: str | Path, model_name: str | None = None,
                    model_kwargs: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict). `model_name`/`model_kwargs` are needed only for bare state dicts."""
    ckpt = read_checkpoint(path)
    name = ckpt.get("model_name") or model_name
    if not name:
        raise UserError(f"{path}: a bare state dict does not say which model it holds; pass the model name "
                        f"(e.g. --model_type timm --model_name mobilenetv3_small_100)")
    kwargs = dict(ckpt.get("model_kwargs") or model_kwargs or {})
    model = create_model(name, **kwargs)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit {name} {kwargs} (missing {list(missing)[:3]}, unexpected "
                        f"{list(unexpected)[:3]}); pass the model name and class count it was trained with")
    model.eval()
    return model, ckpt


def plot_confusion_matrix(matrix: np.ndarray, names: list[str] | tuple[str, ...], path: Path,
                          title: str = "confusion matrix") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    fig = Figure(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    row = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, row, out=np.zeros(matrix.shape, float), where=row > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), labels=list(names), rotation=30, ha="right")
    ax.set_yticks(range(len(names)), labels=list(names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_keypoint_error(per_keypoint: np.ndarray, path: Path, pck: np.ndarray | None = None,
                        title: str = "keypoint error") -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(per_keypoint))
    ax.bar(x, np.nan_to_num(per_keypoint), color="tab:orange", label="mean error / box size (NME)")
    ax.set_xticks(x, labels=list(KEYPOINT_NAMES[: len(x)]), rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("NME")
    ax.set_title(title)
    if pck is not None:
        ax2 = ax.twinx()
        ax2.plot(x, np.nan_to_num(pck), "o-", color="tab:blue", label="PCK@0.1")
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("PCK@0.1")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


class EpochReporter(L.Callback):
    """Once per epoch (rank 0): scalars to the experiment logger, one console line, plots;
    at the end, `metrics.json` with the final validation metrics and the best epoch's."""

    def __init__(self, logger: ExperimentLogger, output_dir: str | Path, monitor: str, mode: str = "max",
                 plots: bool = True, print_every: int = 0) -> None:
        self.logger = logger
        self.output_dir = Path(output_dir)
        self.monitor = monitor
        self.mode = mode
        self.plots = plots
        self.print_every = print_every  # > 0: a progress line every N training batches (when no progress bar)
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None
        self._epoch_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.print_every <= 0 or not trainer.is_global_zero or (batch_idx + 1) % self.print_every:
            return
        loss = _scalar(outputs["loss"] if isinstance(outputs, dict) else outputs)
        total = trainer.num_training_batches
        rate = (batch_idx + 1) / max(time.perf_counter() - self._epoch_start, 1e-9)
        print(f"  epoch {trainer.current_epoch + 1} batch {batch_idx + 1}/{total} loss={loss:.4f} "
              f"({rate:.2f} batches/s)", flush=True)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        old = self.best["metrics"][self.monitor]
        return value > old if self.mode == "max" else value < old

    # Lightning runs the epoch's validation before `on_train_epoch_end`, and has reduced the
    # epoch means by then: one place sees the train and val numbers of the same epoch.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        metrics = {**collect_metrics(trainer, "train/"), **collect_metrics(trainer, "val/")}
        lrs = {f"lr/{g.get('name', i)}": g["lr"] for opt in trainer.optimizers
               for i, g in enumerate(opt.param_groups)}
        self.logger.log_scalars({**metrics, **lrs}, step=epoch)
        record = {"epoch": epoch, "step": trainer.global_step, **metrics}
        self.history.append(record)
        value = metrics.get(self.monitor)
        if value is not None and self._better(value):
            self.best = {"epoch": epoch, "metrics": metrics}
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                         if k in ("train/loss", "val/loss", "val/macro_f1", "val/accuracy", "val/pck@0.1", "val/nme"))
        print(f"epoch {epoch + 1}/{trainer.max_epochs} {shown}", flush=True)
        details = getattr(pl_module, "val_details", {})
        if self.plots:
            self._plot(details, epoch)

    def _plot(self, details: dict[str, Any], epoch: int) -> None:
        plot_dir = self.output_dir / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        if "confusion_matrix" in details:
            names = list(details.get("class_names", range(len(details["confusion_matrix"]))))
            self.logger.log_matrix("val/confusion_matrix", details["confusion_matrix"], [str(n) for n in names],
                                   step=epoch)
            path = plot_confusion_matrix(details["confusion_matrix"], [str(n) for n in names],
                                         plot_dir / "confusion_matrix.png", f"confusion matrix (epoch {epoch + 1})")
            self.logger.log_image("val/confusion_matrix", path, step=epoch)
        if "per_keypoint_nme" in details:
            path = plot_keypoint_error(details["per_keypoint_nme"], plot_dir / "keypoint_error.png",
                                       details.get("pck@0.1_per_keypoint"), f"keypoint error (epoch {epoch + 1})")
            self.logger.log_image("val/keypoint_error", path, step=epoch)

    def final_metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        out: dict[str, Any] = {k: v for k, v in last.items()}
        if self.best is not None:
            out["best_epoch"] = self.best["epoch"]
            out["best"] = {"monitor": self.monitor, "value": self.best["metrics"].get(self.monitor),
                           **self.best["metrics"]}
        return out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            (self.output_dir / "metrics.json").write_text(json.dumps(self.final_metrics(), indent=2))


class PortableCheckpoints(L.Callback):
    """best.pt (by `monitor`) and last.pt in our portable format, rank 0 only."""

    def __init__(self, output_dir: str | Path, monitor: str, mode: str = "max") -> None:
        self.output_dir = Path(output_dir)
        self.monitor = monitor
        self.mode = mode
        self.best_value: float | None = None

    def state_dict(self) -> dict[str, Any]:  # survives --resume, so a resumed run keeps its best
        return {"best_value": self.best_value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_value = state_dict.get("best_value")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = collect_metrics(trainer, "val/")
        value = metrics.get(self.monitor)
        state = export_state(pl_module, trainer, metrics)
        save_checkpoint(state, self.output_dir / "last.pt")
        if value is None:
            return
        improved = self.best_value is None or (value > self.best_value if self.mode == "max"
                                               else value < self.best_value)
        if improved:
            self.best_value = value
            save_checkpoint(state, self.output_dir / "best.pt")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        save_checkpoint(export_state(pl_module, trainer, collect_metrics(trainer, "val/")),
                        self.output_dir / "last.pt")
        if not (self.output_dir / "best.pt").exists():  # no validation ran: the last weights are the best we have
            save_checkpoint(export_state(pl_module, trainer), self.output_dir / "best.pt")


class EpochSeed(L.Callback):
    """Tells the datasets which epoch it is, so augmentation differs per epoch yet repeats per run."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)
