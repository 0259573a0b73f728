"""BlazePalm: MediaPipe's palm detector in PyTorch, with its decoding, NMS and hand ROI.

The network reads a 192x192 RGB image in [0, 1] (NCHW; NOT [-1, 1], which runs
but gives garbage) and predicts, for each of 2016 SSD anchors, a box and 7 palm
keypoints (18 regressors: cx, cy, w, h, then x, y per keypoint, in input pixels
relative to the anchor centre) and one logit. Anchors: a 24x24 grid with 2 per
cell (stride 8) and a 12x12 grid with 6 per cell (three stride-16 layers of 2),
all of unit size ("fixed_anchor_size"), exactly as MediaPipe's
`SsdAnchorsCalculator` builds them for this model.

Post-processing follows MediaPipe's palm-detection graph: sigmoid scores with
logits clipped to +-100, a score threshold (0.5), weighted NMS at IoU 0.3, and
the hand ROI: rotation from the wrist (palm keypoint 0) to the middle-finger
base (keypoint 2), box shifted by half its height towards the fingers, squared
on its long side and scaled 2.6x (`palm_detection_detection_to_roi`). Arbitrary
images are letterboxed into 192x192 as MediaPipe's ImageToTensor does it (bit for
bit, see `letterbox`) and mapped back (`unletterbox`).
Those pure NumPy steps live in `shared.models.blazepalm_post` (no torch import,
for serving) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.models.blazepalm_post import (
    NUM_PALM_KEYPOINTS,
    NUM_REGRESSORS,
    PALM_MIDDLE_MCP,
    PALM_WRIST,
    Letterbox,
    PalmDetections,
    letterbox,
    palm_to_roi,
    postprocess,
    ssd_anchors,
    unletterbox,
    weighted_nms,
)
from shared.models.layers import BlazeBlock, Conv2dSame
from shared.models.mediapipe_import import LoadReport, load_pretrained

# The NumPy post-processing lives in blazepalm_post (torch-free); re-exported here.
__all__ = ["BlazePalm", "BlazePalmConfig", "BlazePalmExport", "PalmDetections", "Letterbox", "blazepalm_full",
           "blazepalm_lite", "letterbox", "unletterbox", "ssd_anchors", "weighted_nms", "palm_to_roi",
           "load_pretrained", "LoadReport", "postprocess", "NUM_PALM_KEYPOINTS", "NUM_REGRESSORS", "PALM_WRIST",
           "PALM_MIDDLE_MCP"]


@dataclass(frozen=True)
class BlazePalmConfig:
    variant: str = "full"  # "full" | "lite"
    img_size: int = 192
    blocks_per_stage: int = 4  # lite: 3
    channels: tuple[int, ...] = (32, 64, 128, 256, 256)  # at strides 2, 4, 8, 16, 32
    kernel_size: int = 5
    # MediaPipe's palm-detection graph defaults
    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    score_clip: float = 100.0
    roi_scale: float = 2.6
    roi_shift_y: float = -0.5

    @property
    def mediapipe_model(self) -> str:
        return f"palm_detection_{self.variant}"


class BlazePalm(nn.Module):
    def __init__(self, cfg: BlazePalmConfig) -> None:
        super().__init__()
        if cfg.variant not in ("full", "lite"):
            raise ValueError(f"unknown BlazePalm variant {cfg.variant!r}; use 'full' or 'lite'")
        self.cfg = cfg
        self.img_size = cfg.img_size
        self.mediapipe_model = cfg.mediapipe_model
        c2, c4, c8, c16, c32 = cfg.channels
        k, n = cfg.kernel_size, cfg.blocks_per_stage

        def stage(channels: int) -> nn.Sequential:
            return nn.Sequential(*[BlazeBlock(channels, channels, k) for _ in range(n)])

        self.stem = Conv2dSame(3, c2, 5, stride=2)
        self.stem_act = nn.PReLU(c2)
        self.stage2, self.down4 = stage(c2), BlazeBlock(c2, c4, k, stride=2)
        self.stage4, self.down8 = stage(c4), BlazeBlock(c4, c8, k, stride=2)
        self.stage8, self.down16 = stage(c8), BlazeBlock(c8, c16, k, stride=2)
        self.stage16, self.down32 = stage(c16), BlazeBlock(c16, c32, k, stride=2)
        self.stage32 = stage(c32)
        # Top-down path: upsample, 1x1 conv + PReLU, add the lateral feature, two blocks.
        self.up16 = nn.Sequential(nn.Conv2d(c32, c16, 1), nn.PReLU(c16))
        self.fuse16 = nn.Sequential(BlazeBlock(c16, c16, k), BlazeBlock(c16, c16, k))
        self.up8 = nn.Sequential(nn.Conv2d(c16, c8, 1), nn.PReLU(c8))
        self.fuse8 = nn.Sequential(BlazeBlock(c8, c8, k), BlazeBlock(c8, c8, k))
        # Heads: 2 anchors per stride-8 cell, 6 per stride-16 cell.
        self.classifier8 = nn.Conv2d(c8, 2, 1)
        self.regressor8 = nn.Conv2d(c8, 2 * NUM_REGRESSORS, 1)
        self.classifier16 = nn.Conv2d(c16, 6, 1)
        self.regressor16 = nn.Conv2d(c16, 6 * NUM_REGRESSORS, 1)
        self.register_buffer("anchors", torch.from_numpy(ssd_anchors(cfg.img_size)), persistent=False)

    def mediapipe_layers(self) -> list[tuple[nn.Module, str | None]]:
        layers: list[nn.Module] = [self.stem, self.stem_act]
        for seq in (self.stage2, [self.down4], self.stage4, [self.down8], self.stage8, [self.down16],
                    self.stage16, [self.down32], self.stage32):
            for block in seq:
                layers += block.mediapipe_layers()
        layers += [*self.up16]
        for block in self.fuse16:
            layers += block.mediapipe_layers()
        layers += [self.classifier16, self.regressor16, *self.up8]
        for block in self.fuse8:
            layers += block.mediapipe_layers()
        layers += [self.classifier8, self.regressor8]
        return [(m, None) for m in layers]

    def new_layer_prefixes(self) -> tuple[str, ...]:
        return ()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem_act(self.stem(x))  # [B, 32, 96, 96]
        x = self.stage2(x)
        x = self.stage4(self.down4(x))  # [B, 64, 48, 48]
        c8 = self.stage8(self.down8(x))  # [B, 128, 24, 24]
        c16 = self.stage16(self.down16(c8))  # [B, 256, 12, 12]
        c32 = self.stage32(self.down32(c16))  # [B, 256, 6, 6]
        # Bilinear x2 with half-pixel centres (TF's RESIZE_BILINEAR here) = align_corners=False.
        p16 = self.fuse16(c16 + self.up16(F.interpolate(c32, scale_factor=2.0, mode="bilinear",
                                                        align_corners=False)))  # [B, 256, 12, 12]
        p8 = self.fuse8(c8 + self.up8(F.interpolate(p16, scale_factor=2.0, mode="bilinear",
                                                    align_corners=False)))  # [B, 128, 24, 24]
        return p8, p16

    @staticmethod
    def _flatten(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
        # NHWC order, as the TFLite RESHAPE saw it: anchor index = (y * W + x) * A + a.
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_anchor)

    def forward_head(self, p8: torch.Tensor, p16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regressors = torch.cat([self._flatten(self.regressor8(p8), NUM_REGRESSORS),
                                self._flatten(self.regressor16(p16), NUM_REGRESSORS)], dim=1)  # [B, 2016, 18]
        logits = torch.cat([self._flatten(self.classifier8(p8), 1),
                            self._flatten(self.classifier16(p16), 1)], dim=1)  # [B, 2016, 1]
        return regressors, logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, 192, 192] RGB in [0, 1] -> (regressors [B, 2016, 18], logits [B, 2016, 1])."""
        return self.forward_head(*self.forward_features(x))

    def decode(self, regressors: torch.Tensor, logits: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs -> (boxes [B, N, 4] xyxy, keypoints [B, N, 7, 2], scores [B, N]),
        coordinates normalised to the 192 input (multiply by img_size for pixels)."""
        r = regressors / self.img_size
        anchors = self.anchors.to(r.dtype)  # [N, 2]
        centre = r[..., 0:2] + anchors
        half = r[..., 2:4] / 2
        boxes = torch.cat([centre - half, centre + half], dim=-1)
        keypoints = r[..., 4:].unflatten(-1, (NUM_PALM_KEYPOINTS, 2)) + anchors[:, None, :]
        clip = self.cfg.score_clip
        scores = torch.sigmoid(logits[..., 0].clamp(-clip, clip))
        return boxes, keypoints, scores

    @torch.no_grad()
    def detect(self, images: torch.Tensor | np.ndarray | list[np.ndarray], score_threshold: float | None = None,
               nms_threshold: float | None = None, max_detections: int | None = None) -> list[PalmDetections]:
        """Palms per image, in pixels of the image given.

        images: a tensor [B, 3, 192, 192] in [0, 1] (already letterboxed), or one
        RGB uint8 image [H, W, 3] / a list of them (any size; letterboxed here).
        """
        score_threshold = self.cfg.score_threshold if score_threshold is None else score_threshold
        nms_threshold = self.cfg.nms_threshold if nms_threshold is None else nms_threshold
        fits: list[Letterbox | None]  # how each image was letterboxed (None: given as model input)
        if isinstance(images, torch.Tensor):
            batch, fits = images, [None] * len(images)
        else:
            arrays = [images] if isinstance(images, np.ndarray) else list(images)
            if not arrays:
                return []
            padded, fits = [], []
            for image in arrays:
                if image.ndim != 3 or image.shape[2] != 3:
                    raise ValueError(f"expected RGB images [H, W, 3], got shape {image.shape}")
                out, lb = letterbox(image, self.img_size)
                padded.append(out)
                fits.append(lb)
            batch = torch.from_numpy(np.stack(padded)).permute(0, 3, 1, 2).float() / 255.0
        param = next(self.parameters())
        boxes, keypoints, scores = self.decode(*self(batch.to(param.device, param.dtype)))
        identity = Letterbox(1.0, 1.0, 0.0, 0.0, self.img_size)  # a given input: pixels of that input
        return [postprocess(*(t[i].float().cpu().numpy() for t in (boxes, keypoints, scores)), lb or identity,
                            score_threshold, nms_threshold, max_detections) for i, lb in enumerate(fits)]


class BlazePalmExport(nn.Module):
    """Deployment view: decoded boxes/keypoints (normalised to the input) and sigmoid scores,
    in the order of `shared.models.specs`; NMS stays outside the graph (`weighted_nms`)."""

    def __init__(self, model: BlazePalm) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.decode(*self.model(image))


# --------------------------------------------------------------------------- factories


def _build(variant: str, blocks_per_stage: int, pretrained_weights: str | None) -> BlazePalm:
    model = BlazePalm(BlazePalmConfig(variant=variant, blocks_per_stage=blocks_per_stage))
    if pretrained_weights:
        model.load_report = load_pretrained(model, pretrained_weights)
    return model


def blazepalm_full(pretrained_weights: str | None = None) -> BlazePalm:
    """MediaPipe palm detection "full". `pretrained_weights`: "mediapipe", .tflite or .pth."""
    return _build("full", 4, pretrained_weights)


def blazepalm_lite(pretrained_weights: str | None = None) -> BlazePalm:
    """MediaPipe palm detection "lite"."""
    return _build("lite", 3, pretrained_weights)
