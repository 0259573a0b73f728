"""Lightning modules: the gesture classifier and the crop model (keypoints / multitask).

Lightning gives us DDP, mixed precision, checkpoints, resume and progress bars;
the modules only say what a step computes. Validation collects predictions for
the whole split, gathers them over ranks and computes the metrics of
`shared.training.metrics` once per epoch; the per-epoch details that are not
scalars (confusion matrix, per-keypoint error) are kept in `val_details` for
the plotting callback.

Every tensor crossing a step is documented with its shape; batches are the dicts
of `shared.data.crops`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from shared.hand import GESTURES
from shared.training.losses import KeypointLossConfig, classification_loss, keypoint_loss
from shared.training.metrics import classification_metrics, keypoint_metrics
from shared.training.schedules import warmup_cosine


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up and a cosine decay, stepped per optimizer step."""

    lr: float = 1e-4  # pretrained parameters
    head_lr: float | None = None  # parameters that start from scratch (None = lr)
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05  # share of all steps spent warming up (capped at 200 steps)
    min_lr_ratio: float = 0.05  # cosine floor, as a fraction of the peak
    # Linear probing first (LP-FT, Kumar et al. 2022): for this many epochs only the new
    # parameters train, so a random head's large early gradients cannot wreck pretrained features.
    probe_epochs: float = 0.0


def build_optimizer(named_params: Iterable[tuple[str, nn.Parameter]], new_params: set[str],
                    cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: pretrained weights at `lr`, new ones (e.g. the gesture head) at `head_lr`.

    A gesture head that starts from zeros next to a backbone fine-tuned at the
    seed's 1e-5 would barely move in a few epochs; giving it its own, higher
    rate lets both converge in the same run. Biases and norms get no decay.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        is_new = name in new_params
        decay = p.ndim > 1
        groups.setdefault((is_new, decay), []).append(p)
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    param_groups = [
        {"params": ps, "lr": head_lr if is_new else cfg.lr, "weight_decay": cfg.weight_decay if decay else 0.0,
         "name": ("head" if is_new else "backbone") + ("" if decay else "_no_decay")}
        for (is_new, decay), ps in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups)


def warmup_cosine_ratio(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """`warmup_cosine` with the warm-up given as a share of the run (at most 200 steps)."""
    return warmup_cosine(total_steps, min(int(max(int(total_steps), 1) * warmup_ratio), 200), min_lr_ratio)


def lr_lambdas(group_names: list[str], total_steps: int, epochs: int, cfg: OptimConfig) -> list:
    """LR multiplier per step for each param group of `build_optimizer` (by name).

    New ("head") groups: warm-up + cosine over all steps. Pretrained groups: the same,
    or with `probe_epochs`, zero while the head is probed, then warm-up + cosine
    over the remaining steps.
    """
    head = warmup_cosine_ratio(total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    probe = int(round(cfg.probe_epochs * total_steps / max(epochs, 1))) if cfg.probe_epochs > 0 else 0
    backbone = head
    if probe > 0:
        after = warmup_cosine_ratio(max(total_steps - probe, 1), cfg.warmup_ratio, cfg.min_lr_ratio)

        def backbone(step: int) -> float:
            return 0.0 if step < probe else after(step - probe)

    return [head if name.startswith("head") else backbone for name in group_names]


class _Base(L.LightningModule):
    """Optimizer/scheduler wiring and the gather of validation outputs shared by both modules."""

    def __init__(self, model: nn.Module, optim: OptimConfig, new_params: set[str] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        # Names (as in model.named_parameters()) that start from scratch and get `head_lr`.
        self.new_params = set(new_params or ())
        self.meta = dict(meta or {})  # written into best.pt / last.pt by the checkpoint callback
        self.val_details: dict[str, Any] = {}
        self._val_outputs: list[dict[str, torch.Tensor]] = []

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.model.named_parameters(), self.new_params, self.optim_cfg)
        steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        epochs = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        lambdas = lr_lambdas([g["name"] for g in optimizer.param_groups], steps, epochs, self.optim_cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            # Training on after a NaN only wastes the remaining epochs and overwrites last.pt with garbage.
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}; lower --lr or "
                                     f"check the labels")

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def _gathered(self) -> dict[str, np.ndarray]:
        """Concatenate this epoch's validation outputs over batches and ranks, as numpy."""
        keys = self._val_outputs[0].keys() if self._val_outputs else ()
        out: dict[str, np.ndarray] = {}
        for key in keys:
            local = torch.cat([o[key] for o in self._val_outputs])  # [n, ...]
            if self.trainer.world_size > 1:
                local = self.all_gather(local).flatten(0, 1)  # [world * n, ...]
            out[key] = local.float().cpu().numpy() if local.is_floating_point() else local.cpu().numpy()
        self._val_outputs = []
        return out


class ClassifierModule(_Base):
    """A classifier (images -> logits) on hand crops.

    Inputs are RGB in [0, 1]. The project's timm wrapper normalises inside the
    model (so the relabeler and the exported graph feed [0, 1] too); pass
    `mean`/`std` only for a bare network that does not.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, num_classes: int = len(GESTURES),
                 class_names: tuple[str, ...] = GESTURES, class_weights: list[float] | None = None,
                 label_smoothing: float = 0.0, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, new_params: set[str] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__(model, optim, new_params, meta)
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32)
                             if class_weights else torch.ones(num_classes), persistent=False)
        self.register_buffer("mean", torch.tensor(mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)  # [B, C]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])  # [B, C]
        loss = classification_loss(logits, batch["gesture"], self.class_weights, self.label_smoothing)
        self._check_finite(loss)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])  # [B, C]
        loss = classification_loss(logits, batch["gesture"], self.class_weights)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(logits), sync_dist=True)
        self._val_outputs.append({"probs": logits.float().softmax(-1).detach(), "gesture": batch["gesture"]})

    def on_validation_epoch_end(self) -> None:
        out = self._gathered()
        if not out:
            return
        cls = classification_metrics(out["gesture"], out["probs"].argmax(-1), self.num_classes, self.class_names)
        self.log("val/accuracy", cls["accuracy"])
        self.log("val/macro_f1", cls["macro_f1"], prog_bar=True)
        for name, f1 in cls["per_class_f1"].items():
            self.log(f"val/f1_{name}", f1)
        self.val_details = {"confusion_matrix": np.array(cls["confusion_matrix"]), "class_names": self.class_names}


@dataclass
class LandmarkLossConfig:
    keypoints: KeypointLossConfig = field(default_factory=KeypointLossConfig)
    kps_weight: float = 1.0
    cls_weight: float = 0.0  # 0 = keypoints only (the gesture head is not trained)
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0


class LandmarkModule(_Base):
    """The crop model (BlazeHand): keypoints, and with `cls_weight > 0` the gesture head too.

    The model maps [B, 3, S, S] RGB in [0, 1] to a dict with `landmarks` [B, 21, 3]
    in crop pixels and `gesture_logits` [B, C]. Keypoint targets come in crop
    pixels too; the loss sees both in percent of the crop side (x 100 / S).
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, loss: LandmarkLossConfig, img_size: int = 224,
                 class_names: tuple[str, ...] = GESTURES, new_params: set[str] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__(model, optim, new_params, meta)
        self.loss_cfg = loss
        self.img_size = int(img_size)
        self.class_names = tuple(class_names)
        self.multitask = loss.cls_weight > 0
        weights = loss.class_weights
        self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32) if weights else
                             torch.ones(len(class_names)), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def compute_loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                     train: bool) -> dict[str, torch.Tensor]:
        """Weighted sum of the keypoint and gesture losses, and each part."""
        pred = out["landmarks"][..., :2] * (100.0 / self.img_size)  # [B, 21, 2] percent of the crop side
        target = batch["keypoints"] * (100.0 / self.img_size)  # [B, 21, 2]
        kcfg = self.loss_cfg.keypoints
        if not train:  # validation reports the plain masked loss, comparable across mining settings
            kcfg = KeypointLossConfig(kind=kcfg.kind, wing_width=kcfg.wing_width, wing_curvature=kcfg.wing_curvature)
        kps, _ = keypoint_loss(pred, target, batch["visibility"], kcfg)
        parts = {"kps_loss": kps, "loss": self.loss_cfg.kps_weight * kps}
        if self.multitask:
            cls = classification_loss(out["gesture_logits"], batch["gesture"], self.class_weights,
                                      self.loss_cfg.label_smoothing if train else 0.0)
            parts["cls_loss"] = cls
            parts["loss"] = parts["loss"] + self.loss_cfg.cls_weight * cls
        return parts

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self(batch["image"])
        parts = self.compute_loss(out, batch, train=True)
        self._check_finite(parts["loss"])
        n = len(batch["image"])
        self.log("train/loss", parts["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for key in ("kps_loss", "cls_loss"):
            if key in parts:
                self.log(f"train/{key}", parts[key], on_step=False, on_epoch=True, batch_size=n)
        return parts["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch["image"])
        parts = self.compute_loss(out, batch, train=False)
        n = len(batch["image"])
        for key, value in parts.items():
            self.log(f"val/{key}", value, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=key == "loss")
        record = {"landmarks": out["landmarks"][..., :2].detach().float(),  # [B, 21, 2]
                  "keypoints": batch["keypoints"], "visibility": batch["visibility"],
                  "box_size": batch["box_size"], "gesture": batch["gesture"]}
        if self.multitask:
            record["probs"] = out["gesture_logits"].detach().float().softmax(-1)  # [B, C]
        self._val_outputs.append(record)

    def on_validation_epoch_end(self) -> None:
        out = self._gathered()
        if not out:
            return
        kps = keypoint_metrics(out["landmarks"], out["keypoints"], out["visibility"], out["box_size"])
        for key, value in kps.items():
            self.log(f"val/{key}", value, prog_bar=key == "pck@0.1")
        err = np.linalg.norm(out["landmarks"] - out["keypoints"], axis=-1) / np.maximum(out["box_size"], 1e-6)[:, None]
        mask = out["visibility"] > 0
        per_kp = np.divide((err * mask).sum(0), mask.sum(0), out=np.full(mask.shape[1], np.nan),
                           where=mask.sum(0) > 0)  # [21] mean error / box size
        self.val_details = {"per_keypoint_nme": per_kp, "pck@0.1_per_keypoint":
                            np.divide(((err <= 0.1) & mask).sum(0), mask.sum(0), out=np.full(mask.shape[1], np.nan),
                                      where=mask.sum(0) > 0)}
        score = kps["pck@0.1"]
        if self.multitask:
            cls = classification_metrics(out["gesture"], out["probs"].argmax(-1), len(self.class_names),
                                         self.class_names)
            self.log("val/accuracy", cls["accuracy"])
            self.log("val/macro_f1", cls["macro_f1"], prog_bar=True)
            for name, f1 in cls["per_class_f1"].items():
                self.log(f"val/f1_{name}", f1)
            self.val_details["confusion_matrix"] = np.array(cls["confusion_matrix"])
            self.val_details["class_names"] = self.class_names
            # One number to pick the best multitask checkpoint by: both tasks count equally.
            score = 0.5 * (cls["macro_f1"] + kps["pck@0.1"])
        self.log("val/score", score)
