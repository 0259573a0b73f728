"""Lightning modules and callbacks for G-MAE: masked pretraining and gesture fine-tuning.

Pretraining (`GMAEPretrainModule`): MSE on the hidden patches, AdamW
(betas 0.9/0.95, weight decay without norms/biases, MAE's recipe), linear
warm-up then cosine, stepped per batch. Validation uses fixed masks per batch
(seeded noise), so the validation loss of two epochs compares like with like.
`PretrainArtifacts` saves `encoder.pt` and a reconstruction preview PNG
(original / masked / reconstructed) every N epochs.

Fine-tuning (`GMAEFinetuneModule`): cross-entropy (optional label smoothing),
AdamW with layer-wise learning-rate decay (BEiT/MAE: block i of D gets
lr * decay^(D + 1 - i), so pretrained early layers move less than the new
head), validation accuracy / macro-F1 / confusion matrix from
`shared.training.metrics`. Checkpoints use the project's portable format
(`shared.training.callbacks.PortableCheckpoints`, `meta` on the module).

Both raise on a non-finite loss instead of training on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.data.image_transforms import denormalize
from shared.logger import ExperimentLogger
from shared.models.gmae import GMAE, MASK_RATIO, GMAEClassifier, encoder_config_dict
from shared.training.callbacks import collect_metrics, plot_confusion_matrix, save_checkpoint
from shared.training.metrics import classification_metrics
from shared.training.schedules import warmup_cosine


# --------------------------------------------------------------------------- optimisation
def schedule_steps(batches_per_epoch: int, epochs: int, warmup_epochs: float, max_steps: int = -1,
                   limit_train_batches: float = 0.0) -> tuple[int, int]:
    """(total optimizer steps, warm-up steps) of a run; the warm-up is capped at a fifth of the run so
    that a short run (a smoke test, a benchmark) still reaches its peak learning rate."""
    per_epoch = batches_per_epoch
    if limit_train_batches:
        per_epoch = int(limit_train_batches) if limit_train_batches > 1 else int(per_epoch * limit_train_batches)
    per_epoch = max(min(per_epoch, batches_per_epoch), 1)
    total = per_epoch * max(epochs, 1)
    if max_steps and max_steps > 0:
        total = min(total, max_steps) if epochs > 0 else max_steps
    warmup = min(int(round(warmup_epochs * per_epoch)), total // 5)
    return total, warmup


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order depends only on `seed` (its own generator)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # Norm scales, biases and the mask token are not weights to shrink (MAE, timm).
    return p.ndim <= 1 or name.endswith(".bias") or "mask_token" in name


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def layer_id(name: str, depth: int) -> int:
    """0 = patch embedding, i + 1 = encoder block i, depth + 1 = final norm and head."""
    if name.startswith("encoder.patch_embed"):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups_lrd(model: GMAEClassifier, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with `lr_scale` = layer_decay ** (depth + 1 - layer): layer-wise lr decay."""
    depth = model.cfg.encoder.depth
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        nd = _no_decay(name, p)
        key = (lid, nd)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if nd else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid),
                           "name": f"layer{lid}" + ("_no_decay" if nd else "")}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def _check_finite(loss: torch.Tensor, step: int, stage: str) -> None:
    if not torch.isfinite(loss):
        # Training on after a NaN only wastes the remaining epochs and overwrites the weights with garbage.
        raise FloatingPointError(f"non-finite {stage} loss {loss.item()} at step {step}; lower --learning_rate")


class _Scheduled(L.LightningModule):
    """AdamW over given parameter groups, warm-up + cosine per step; groups may carry an `lr_scale`."""

    learning_rate: float
    warmup_steps: int
    total_steps: int
    betas: tuple[float, float] = (0.9, 0.999)

    def param_groups(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        for g in groups:
            g["lr"] = self.learning_rate * g.get("lr_scale", 1.0)
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate, betas=self.betas)
        total = self.total_steps
        if total <= 0 and self._trainer is not None:
            total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


# --------------------------------------------------------------------------- pretraining
class GMAEPretrainModule(_Scheduled):
    def __init__(self, model: GMAE, learning_rate: float = 1e-3, weight_decay: float = 0.05,
                 mask_ratio: float = MASK_RATIO, warmup_steps: int = 0, total_steps: int = 0) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.mask_ratio = mask_ratio
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.betas = (0.9, 0.95)  # MAE: a lower beta2 keeps large-batch masked pretraining stable

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups_weight_decay(self.model, self.weight_decay)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        imgs = _images(batch)  # [B, 3, H, W]
        loss, _, _ = self.model(imgs, mask_ratio=self.mask_ratio)
        _check_finite(loss, self.global_step, "pretraining")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=imgs.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        imgs = _images(batch)
        grid = self.model.encoder.patch_embed.grid_size(imgs.shape[-2], imgs.shape[-1])
        gen = torch.Generator().manual_seed(10_000 + batch_idx)  # the same masks every epoch
        noise = torch.rand(imgs.shape[0], grid[0] * grid[1], generator=gen).to(imgs.device)
        loss, _, _ = self.model(imgs, mask_ratio=self.mask_ratio, noise=noise)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=imgs.shape[0], sync_dist=True)


@torch.no_grad()
def reconstruction_preview(model: GMAE, imgs: torch.Tensor, mask_ratio: float, seed: int = 0) -> np.ndarray:
    """BGR uint8 grid, one row per image: original | masked input | reconstruction (visible patches pasted back)."""
    was_training = model.training
    model.eval()
    b = imgs.shape[0]
    grid = model.encoder.patch_embed.grid_size(imgs.shape[-2], imgs.shape[-1])
    noise = torch.rand(b, grid[0] * grid[1], generator=torch.Generator().manual_seed(seed)).to(imgs.device)
    _, pred, mask = model(imgs, mask_ratio=mask_ratio, noise=noise)  # [B, L, p*p*3], [B, L]
    if model.cfg.norm_pix_loss:
        # Predictions are per-patch normalised: show them with each patch's own mean/std (as MAE's demo does).
        target = model.patchify(imgs)
        pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    rec = model.unpatchify(pred, grid)  # [B, 3, H, W]
    p = model.cfg.encoder.patch_size
    pix = mask.view(b, 1, *grid).repeat_interleave(p, 2).repeat_interleave(p, 3)  # [B, 1, H, W] 1 = hidden
    masked = imgs * (1 - pix)  # hidden patches show the dataset mean (0 after normalisation)
    pasted = imgs * (1 - pix) + rec * pix
    rows = [np.concatenate([denormalize(t) for t in (imgs[i], masked[i], pasted[i])], axis=1) for i in range(b)]
    model.train(was_training)
    return cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)


class PretrainArtifacts(L.Callback):
    """Every epoch a reconstruction preview PNG; every `every` epochs and at the end `encoder.pt` (+ `gmae.pt`,
    the whole autoencoder)."""

    def __init__(self, output_dir: str | Path, preview_images: torch.Tensor | None, every: int = 10,
                 meta: dict[str, Any] | None = None, logger: ExperimentLogger | None = None,
                 snapshots: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.snapshots = snapshots
        self.preview_images = preview_images
        self.every = max(int(every), 1)
        self.meta = dict(meta or {})
        self.logger = logger
        self.previews: list[str] = []
        self.history: list[dict[str, float]] = []
        self.saved_step = -1

    def save(self, trainer: L.Trainer, pl_module: GMAEPretrainModule) -> None:
        model = pl_module.model
        epoch = trainer.current_epoch
        self.saved_step = trainer.global_step
        enc_state = {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}
        save_checkpoint({"format": "gmae-encoder/1", "encoder": enc_state,
                         "encoder_config": encoder_config_dict(model.cfg.encoder), "epoch": epoch,
                         "step": trainer.global_step, **self.meta}, self.output_dir / "encoder.pt")
        if self.snapshots:
            snap = self.output_dir / "snapshots" / f"encoder_epoch_{epoch + 1:04d}.pt"
            snap.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.output_dir / "encoder.pt", snap)
        save_checkpoint({"format": "gmae-autoencoder/1",
                         "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                         "encoder_config": encoder_config_dict(model.cfg.encoder), "epoch": epoch, **self.meta},
                        self.output_dir / "gmae.pt")

    def preview(self, trainer: L.Trainer, pl_module: GMAEPretrainModule) -> None:
        """previews/epoch_NNNN.png: original | masked | reconstructed, the same images every epoch."""
        epoch = trainer.current_epoch
        path = self.output_dir / "previews" / f"epoch_{epoch + 1:04d}.png"
        if self.preview_images is None or str(path) in self.previews:
            return
        imgs = self.preview_images.to(pl_module.device)
        image = reconstruction_preview(pl_module.model, imgs, pl_module.mask_ratio, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        self.previews.append(str(path))
        if self.logger is not None:
            self.logger.log_image("reconstruction", path, step=epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        # Here, unlike in on_validation_epoch_end, the epoch's train loss is reduced and validation has run.
        metrics = {**collect_metrics(trainer, "train/"), **collect_metrics(trainer, "val/")}
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        if self.logger is not None:
            self.logger.log_scalars(metrics, step=trainer.current_epoch)
        self.preview(trainer, pl_module)  # every epoch: cheap, and what a person watches
        epoch = trainer.current_epoch + 1
        if epoch % self.every == 0 or epoch >= (trainer.max_epochs or 0):
            self.save(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run stopped by max_steps (or early) ends between save points: the last weights go to disk too.
        if trainer.is_global_zero and self.saved_step != trainer.global_step:
            self.preview(trainer, pl_module)
            self.save(trainer, pl_module)


# --------------------------------------------------------------------------- fine-tuning
class GMAEFinetuneModule(_Scheduled):
    def __init__(self, model: GMAEClassifier, class_names: list[str], learning_rate: float = 1e-4,
                 weight_decay: float = 0.05, layer_decay: float = 0.75, label_smoothing: float = 0.1,
                 warmup_steps: int = 0, total_steps: int = 0, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.class_names = list(class_names)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.layer_decay = layer_decay
        self.label_smoothing = label_smoothing
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.meta = dict(meta or {})  # written into best.pt / last.pt by PortableCheckpoints
        self.val_details: dict[str, Any] = {}
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def param_groups(self) -> list[dict[str, Any]]:
        return param_groups_lrd(self.model, self.weight_decay, self.layer_decay)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.model(imgs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        imgs, targets = batch  # [B, 3, H, W], [B]
        logits, loss = self.model(imgs, targets, label_smoothing=self.label_smoothing)
        _check_finite(loss, self.global_step, "fine-tuning")
        acc = (logits.argmax(-1) == targets).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        self.log("train/accuracy", acc, on_step=False, on_epoch=True, batch_size=len(targets))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        imgs, targets = batch
        logits, loss = self.model(imgs, targets)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(targets), sync_dist=True)
        self._val_outputs.append((logits.argmax(-1).detach(), targets.detach()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        pred = torch.cat([p for p, _ in self._val_outputs])
        true = torch.cat([t for _, t in self._val_outputs])
        if self.trainer.world_size > 1:
            pred, true = self.all_gather(pred).flatten(0, 1), self.all_gather(true).flatten(0, 1)
        self._val_outputs = []
        m = classification_metrics(true.cpu().numpy(), pred.cpu().numpy(), len(self.class_names), self.class_names)
        self.log("val/accuracy", m["accuracy"], prog_bar=True)
        self.log("val/macro_f1", m["macro_f1"], prog_bar=True)
        for name, f1 in m["per_class_f1"].items():
            self.log(f"val/f1_{name}", f1)
        self.val_details = {"confusion_matrix": np.array(m["confusion_matrix"]), "class_names": self.class_names}


class FinetuneReporter(L.Callback):
    """Per epoch: scalars to the experiment logger, a console line, the confusion matrix (CSV-able + PNG);
    at the end, `metrics.json` (last epoch's metrics + the best epoch by `monitor`).

    Runs at `on_train_epoch_end`: by then this epoch's validation metrics are
    logged and its train metrics reduced (in `on_validation_epoch_end` a
    callback runs before the module's hook and would see last epoch's values).
    """

    def __init__(self, logger: ExperimentLogger, output_dir: str | Path, monitor: str, mode: str = "max",
                 plots: bool = True) -> None:
        self.logger = logger
        self.output_dir = Path(output_dir)
        self.monitor = monitor
        self.mode = mode
        self.plots = plots
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        metrics = {**collect_metrics(trainer, "train/"), **collect_metrics(trainer, "val/")}
        lrs = {f"lr/{g.get('name', i)}": g["lr"] for opt in trainer.optimizers for i, g in enumerate(opt.param_groups)
               if g.get("name") in ("layer0", f"layer{getattr(pl_module.model.cfg.encoder, 'depth', 0) + 1}")}
        self.logger.log_scalars({**metrics, **lrs}, step=epoch)
        self.history.append({"epoch": epoch, "step": trainer.global_step, **metrics})
        value = metrics.get(self.monitor)
        if value is not None and (self.best is None or (value > self.best[self.monitor] if self.mode == "max"
                                                         else value < self.best[self.monitor])):
            self.best = {"epoch": epoch, **metrics}
        details = getattr(pl_module, "val_details", {})
        if "confusion_matrix" in details:
            names = [str(n) for n in details["class_names"]]
            self.logger.log_matrix("val/confusion_matrix", details["confusion_matrix"], names, step=epoch)
            if self.plots:
                plot_dir = self.output_dir / "plots"
                plot_dir.mkdir(parents=True, exist_ok=True)
                path = plot_confusion_matrix(details["confusion_matrix"], names, plot_dir / "confusion_matrix.png",
                                             f"confusion matrix (epoch {epoch + 1})")
                self.logger.log_image("val/confusion_matrix", path, step=epoch)

    def final_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.history[-1]) if self.history else {}
        if self.best is not None:
            out["best_epoch"] = self.best["epoch"]
            out["best"] = {"monitor": self.monitor, "value": self.best.get(self.monitor), **self.best}
        return out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            (self.output_dir / "metrics.json").write_text(json.dumps(self.final_metrics(), indent=2, default=float))
