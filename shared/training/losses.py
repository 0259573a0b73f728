"""Losses for the crop model: visibility-masked keypoint loss, wing loss, online hard keypoint mining.

Keypoint errors are measured in percent of the crop side (coordinates / img_size
x 100), so the loss scale does not depend on the input resolution, and a
keypoint loss of a few units sits next to a cross-entropy below one: with the
seed's `--kps_weight 1 --cls_weight 2` the shared backbone is led by the
keypoints, which need it most, while the gesture head still learns fast (in
crop-side units the keypoint term was ~100x smaller and the gesture gradients
rewrote MediaPipe's features: PCK@0.1 fell below the zero-shot 0.66 on our
synthetic set). Unlabelled keypoints
(visibility 0) contribute nothing; occluded ones (1) are still supervised,
because the crop model must place hidden joints too (MediaPipe does).

Hard mining follows OHKM (Chen et al., "Cascaded Pyramid Network", 2018): per
sample only the top-k worst labelled keypoints enter the loss, so easy joints
(the wrist, the palm) stop dominating once they are learned. On top of that,
hard *samples* in the batch are re-weighted by their loss relative to the batch
mean (weights detached, clipped, normalised to mean 1) so a batch's gradient
leans towards the hands the model still gets wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def wing_loss(error: torch.Tensor, width: float = 10.0, curvature: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018) of a non-negative error, elementwise.

    Log-shaped for errors below `width` (amplifies small and medium errors, which
    L2/L1 under-weight once training has converged), linear above it.
    """
    c = width - width * math.log(1.0 + width / curvature)  # joins the two pieces continuously
    return torch.where(error < width, width * torch.log1p(error / curvature), error - c)


@dataclass
class KeypointLossConfig:
    kind: str = "l1"  # l1 | mse | wing
    wing_width: float = 10.0  # percent of the crop side: log-shaped below, linear above
    wing_curvature: float = 2.0
    hard_mining: bool = False
    topk: int = 8  # OHKM: worst keypoints per sample that enter the loss
    sample_gamma: float = 1.0  # hard-sample re-weighting strength (0 = off)
    max_sample_weight: float = 4.0


def per_keypoint_error(pred: torch.Tensor, target: torch.Tensor, kind: str, wing_width: float = 10.0,
                       wing_curvature: float = 2.0) -> torch.Tensor:
    """[B, K] loss per keypoint from [B, K, 2] predictions and targets in percent of the crop side."""
    diff = pred - target  # [B, K, 2]
    if kind == "l1":
        return diff.abs().sum(-1)
    if kind == "mse":
        return diff.pow(2).sum(-1) / 10.0  # scaled so that a few-percent error costs single digits, as L1 does
    if kind == "wing":
        return wing_loss(diff.abs(), wing_width, wing_curvature).sum(-1)
    raise ValueError(f"unknown keypoint loss {kind!r}; use l1, mse or wing")


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor,
                  cfg: KeypointLossConfig = KeypointLossConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked keypoint loss and the per-sample losses.

    pred, target: [B, K, 2] in percent of the crop side; visibility: [B, K] (> 0 = labelled).
    Returns (scalar loss, [B] per-sample loss, detached). Samples without any
    labelled keypoint get zero loss and no weight.
    """
    err = per_keypoint_error(pred.float(), target.float(), cfg.kind, cfg.wing_width, cfg.wing_curvature)  # [B, K]
    mask = (visibility > 0).float()  # [B, K]
    if cfg.hard_mining:
        sample_loss = ohkm(err, mask, cfg.topk)  # [B]
    else:
        sample_loss = (err * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B]
    labelled = (mask.sum(1) > 0).float()  # [B]
    weights = labelled
    if cfg.hard_mining and cfg.sample_gamma > 0:
        weights = hard_sample_weights(sample_loss.detach(), labelled, cfg.sample_gamma, cfg.max_sample_weight)
    loss = (sample_loss * weights).sum() / labelled.sum().clamp(min=1.0)
    return loss, sample_loss.detach()


def ohkm(err: torch.Tensor, mask: torch.Tensor, topk: int) -> torch.Tensor:
    """[B] mean of the top-k largest labelled keypoint losses of each sample.

    err, mask: [B, K]. A sample with fewer than k labelled keypoints averages all of them.
    """
    k = max(1, min(int(topk), err.shape[1]))
    masked = err.masked_fill(mask <= 0, float("-inf"))  # unlabelled keypoints are never "worst"
    top, _ = masked.topk(k, dim=1)  # [B, k]
    valid = torch.isfinite(top)
    top = torch.where(valid, top, torch.zeros_like(top))
    return top.sum(1) / valid.sum(1).clamp(min=1)


def hard_sample_weights(sample_loss: torch.Tensor, labelled: torch.Tensor, gamma: float,
                        max_weight: float) -> torch.Tensor:
    """[B] weights ~ (loss / batch mean) ** gamma over labelled samples, clipped, mean 1 (no gradient)."""
    n = labelled.sum().clamp(min=1.0)
    mean = (sample_loss * labelled).sum() / n
    w = (sample_loss / mean.clamp(min=1e-12)).clamp(min=1e-6).pow(gamma)
    w = w.clamp(1.0 / max_weight, max_weight) * labelled
    return w * n / w.sum().clamp(min=1e-12)


def classification_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with optional per-class weights (the seed's `--class_weights`)."""
    weight = class_weights.to(logits.device, logits.dtype) if class_weights is not None else None
    return F.cross_entropy(logits.float(), target, weight=None if weight is None else weight.float(),
                           label_smoothing=label_smoothing)
