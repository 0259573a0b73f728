"""Quantization-aware fine-tuning of BlazeHand for ONNX Runtime INT8, distilled from the float model.

    tuned = distill_for_int8(model, crops_x, QatConfig(epochs=6))   # a float BlazeHand, same layout

Static INT8 quantization of MediaPipe's landmark network moves its landmarks by ~1.5-2 px at 224
(the error is spread over the backbone: every per-tensor u8 activation rounds a little). Here the
network learns to live with that rounding: `QuantSim` runs BlazeHand the way ONNX Runtime's QDQ
graph does (same quantization points, same range and rounding rules), and the weights are
fine-tuned, straight-through, so that the simulated int8 network gives the float network's
answers (landmarks, world landmarks, presence, handedness) on real hand crops. The float model
is the teacher; no labels are needed. The result is a float BlazeHand that ONNX Runtime then
quantizes (`shared.models.quantize`) with the usual calibration: its INT8 file stays close to the
ORIGINAL float model.

What the simulation copies from ONNX Runtime's QDQ quantizer (`quantize_static`, minmax):
- float: the modules of `float_modules` (BlazeHand's first, high-resolution layers by default,
  as `shared.models.quantize.FLOAT_MODULES`) and the heads;
- activations: u8, asymmetric, one range per tensor = [min(0, min), max(0, max)] over the
  calibration crops, at the network input, after every convolution (after its ReLU6, which ONNX
  Runtime folds into the range) and after every residual sum; the heads (Gemm) stay float;
- weights: s8 symmetric, one scale per output channel, `weight_bits` = 7 by default (64 levels
  each side of 0; 8 bits: 127): ONNX Runtime's `reduce_range`. On x86 CPUs without AVX-512 VNNI its u8 x s8 kernels
  add pairs of products in saturating 16-bit registers; 8-bit weights overflow there (measured
  here on an AVX2 EPYC: 1.47 px median per crop instead of the simulated 0.91 px), 7-bit ones cannot,
  so one file is exact on every CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.config import option
from shared.models.quantize import FLOAT_MODULES

WEIGHT_LEVELS = {7: 64, 8: 127}  # s8 weight levels each side of 0: ONNX Runtime's reduce_range (7 bits) or not


@dataclass
class QatConfig:
    epochs: int = option(6, "quantization-aware fine-tuning epochs over the calibration crops (0 = plain "
                            "post-training quantization)", min=0)
    lr: float = option(1e-4, "peak learning rate (one-cycle schedule)", min=0)
    batch_size: int = option(32, "crops per step", min=1)
    weight_bits: int = option(7, "weight bits as in the quantization (shared.models.quantize.QuantizeConfig): 7 "
                                 "(ONNX Runtime reduce_range, exact on CPUs without VNNI) or 8", choices=[7, 8])
    seed: int = option(0, "shuffling / augmentation seed")
    threads: int = option(0, "torch CPU threads (0 = torch's default)", min=0)
    float_modules: list[str] = option(list(FLOAT_MODULES), "modules kept in float, as in the "
                                      "quantization (shared.models.quantize.FLOAT_MODULES; 'none' = none)")


class QuantSim:
    """BlazeHand's forward pass with ONNX Runtime's QDQ rounding (see the module doc).

    mode "float": the plain network; "observe": float, recording each quantization point's range;
    "quant": fake-quantized with the recorded ranges (straight-through gradients)."""

    def __init__(self, model: Any, weight_bits: int = 7, float_modules: tuple[str, ...] = ()) -> None:
        self.model = model
        self.weight_levels = WEIGHT_LEVELS[weight_bits]  # each side of 0
        # keys of float modules; the network input is quantized only when the stem is
        self.float_modules = tuple(m for m in float_modules if m and m != "none")
        if "stem" in self.float_modules:
            self.float_modules += ("input",)
        self.mode = "float"
        self.ranges: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ quantization points
    def is_float(self, key: str) -> bool:
        return any(key == m or key.startswith(m + ".") for m in self.float_modules)

    def act(self, key: str, y: Any) -> Any:
        import torch

        if self.is_float(key):
            return y
        if self.mode == "observe":
            lo, hi = self.ranges.get(key, (0.0, 0.0))
            self.ranges[key] = (min(lo, float(y.min())), max(hi, float(y.max())))
        elif self.mode == "quant":
            lo, hi = self.ranges[key]
            scale = max(hi - lo, 1e-8) / 255.0
            zero = int(round(-lo / scale))
            y = torch.fake_quantize_per_tensor_affine(y, scale, zero, 0, 255)
        return y

    def conv(self, key: str, conv: Any, x: Any, relu6: bool) -> Any:
        import torch
        import torch.nn.functional as F

        from shared.models.layers import pad_same

        w = conv.weight
        if self.mode == "quant" and not self.is_float(key):
            q = self.weight_levels
            scale = (w.detach().abs().amax(dim=(1, 2, 3)) / q).clamp_min(1e-12)
            w = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -q, q)
        if conv.explicit_pad:
            x = pad_same(x, conv.kernel_size[0], conv.stride[0])
        y = F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self.act(key, F.relu6(y) if relu6 else y)

    def block(self, key: str, block: Any, x: Any) -> Any:
        if block.shortcut not in ("identity", "none"):
            raise ValueError(f"QuantSim: shortcut {block.shortcut!r} (blazehand_lite) is not simulated")
        y = self.conv(f"{key}.expand", block.expand, x, True) if block.expand is not None else x
        y = self.conv(f"{key}.depthwise", block.depthwise, y, True)
        y = self.conv(f"{key}.project", block.project, y, False)
        if block.shortcut == "identity":
            y = self.act(f"{key}.add", y + x)
        return y

    def __call__(self, x: Any) -> dict[str, Any]:
        m = self.model
        x = self.act("input", x)
        x = self.conv("stem", m.stem, x, True)
        x = self.block("first_block", m.first_block, x)
        for i, b in enumerate(m.blocks):
            x = self.block(f"blocks.{i}", b, x)
        x = self.conv("head_expand", m.head_expand, x, True)
        x = self.conv("head_depthwise", m.head_depthwise, x, True)
        return m.forward_head(x.mean(dim=(2, 3)))

    def calibrate(self, x: Any, batch: int = 64) -> None:
        """Ranges from the FLOAT network on `x` (what ONNX Runtime's calibration will measure)."""
        import torch

        self.mode, self.ranges = "observe", {}
        with torch.no_grad():
            for i in range(0, len(x), batch):
                self(x[i:i + batch])
        self.mode = "quant"


def augment(x: Any, generator: Any) -> Any:
    """Label-free jitter of u8-valued crops [B, 3, S, S] in [0, 1]: rotation +-15 deg, scale +-10 %,
    shift +-5 %, mirror, brightness/contrast; rounded back to u8 levels like a real crop."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def rand(*shape: int) -> Any:
        return torch.rand(*shape, generator=generator)

    angle = (rand(b) - 0.5) * math.radians(30)
    scale = 1 + (rand(b) - 0.5) * 0.2
    tx, ty = (rand(2, b) - 0.5) * 0.1
    theta = torch.stack([torch.stack([scale * torch.cos(angle), -scale * torch.sin(angle), tx], -1),
                         torch.stack([scale * torch.sin(angle), scale * torch.cos(angle), ty], -1)], 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x * (0.8 + 0.4 * rand(b, 1, 1, 1)) + (rand(b, 1, 1, 1) - 0.5) * 0.1
    return (x.clamp(0, 1) * 255).round() / 255


def distill_loss(out: dict[str, Any], ref: dict[str, Any]) -> Any:
    """Student vs float teacher: landmark px (weighted by the teacher's presence), depth, world
    landmarks (metres, x10), presence, handedness and gesture probabilities (a trained gesture head
    keeps its answers; MediaPipe's untrained one costs nothing)."""
    import torch.nn.functional as F

    w = ref["presence_logit"].sigmoid()[:, None, None]
    d = (out["landmarks"] - ref["landmarks"]).abs() * w
    return (d[..., :2].mean() + 0.1 * d[..., 2].mean()
            + 10 * (out["world_landmarks"] - ref["world_landmarks"]).abs().mean()
            + F.binary_cross_entropy_with_logits(out["presence_logit"], ref["presence_logit"].sigmoid())
            + F.binary_cross_entropy_with_logits(out["handedness_logit"], ref["handedness_logit"].sigmoid())
            + F.kl_div(out["gesture_logits"].log_softmax(-1), ref["gesture_logits"].log_softmax(-1), log_target=True,
                       reduction="batchmean"))


def sim_error(sim: QuantSim, teacher: Any, x: Any) -> float:
    """Mean landmark error (px) of the simulated int8 network vs the teacher on crops it finds hands in."""
    import torch

    with torch.no_grad():
        ref, out = teacher(x), sim(x)
    present = ref["presence_logit"].sigmoid() >= 0.5
    err = (out["landmarks"][..., :2] - ref["landmarks"][..., :2]).norm(dim=-1)[present]
    return float(err.mean()) if err.numel() else 0.0


def distill_for_int8(model: Any, crops: np.ndarray, cfg: QatConfig | None = None, val: np.ndarray | None = None,
                     log=print) -> Any:
    """A copy of BlazeHand `model` fine-tuned so its int8 version (ONNX Runtime QDQ, ranges from
    `crops`) answers like `model` does; `crops` [N, 3, S, S] float in [0, 1] (real hand crops),
    `val` (other photos) only to log the simulated error per epoch."""
    import torch
    from tqdm import tqdm

    cfg = cfg or QatConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    student = copy.deepcopy(model).eval()  # eval: no dropout; the network has no batch norm
    teacher = copy.deepcopy(model).eval()  # the caller's model is left as it was
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in student.parameters():
        p.requires_grad_(True)
    sim = QuantSim(student, cfg.weight_bits, tuple(cfg.float_modules))
    x = torch.from_numpy(np.ascontiguousarray(crops)).float()
    xv = torch.from_numpy(np.ascontiguousarray(val)).float() if val is not None and len(val) else None
    sim.calibrate(x)
    if xv is not None:
        log(f"int8 simulation before fine-tuning: validation mean {sim_error(sim, teacher, xv):.2f} px")
    steps_per_epoch = max(len(x) // cfg.batch_size, 1)
    if cfg.epochs == 0:
        return student
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"int8 fine-tune {epoch + 1}/{cfg.epochs}", unit="step",
                   leave=False)
        for step in bar:
            batch = augment(x[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]], generator)
            with torch.no_grad():
                ref = teacher(batch)
            loss = distill_loss(sim(batch), ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{total / (step + 1):.3f}")
        sim.calibrate(x)  # the ranges follow the weights, as a new calibration will
        line = f"int8 fine-tune epoch {epoch + 1}/{cfg.epochs}: loss {total / steps_per_epoch:.3f}"
        if xv is not None:
            line += f", simulated int8 validation mean {sim_error(sim, teacher, xv):.2f} px"
        log(line)
    return student.eval()
