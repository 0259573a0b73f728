"""BlazeHand: MediaPipe's hand-landmark network in PyTorch, plus our gesture head.

The network reads one upright 224x224 RGB hand crop in [0, 1] (NCHW) and
returns, like MediaPipe's `hand_landmark_{full,lite}.tflite`:

- 21 landmarks (x, y in crop pixels of the 224 input, z in the same scale,
  relative to the wrist),
- 21 world landmarks in metres (origin near the hand's centre),
- a presence logit (sigmoid = MediaPipe's "hand flag"),
- a handedness logit (sigmoid = MediaPipe's `Identity_2`, the score of "Left" on
  a mirrored selfie image, i.e. > 0.5 means a right hand on an unmirrored photo),

and, new here, gesture logits from a linear head on the same pooled features.
The body is a MobileNetV2 (inverted residuals, ReLU6, batch norm folded); full
and lite differ only in the block table. Weights come from MediaPipe's own
TFLite files (`shared.models.mediapipe_import`) or from our `.pth` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.hand import NUM_GESTURES, NUM_KEYPOINTS
from shared.models.layers import Conv2dSame, InvertedResidual
from shared.models.mediapipe_import import LoadReport, load_pretrained

__all__ = ["BlazeHand", "BlazeHandConfig", "BlazeHandExport", "blazehand_full", "blazehand_lite", "load_pretrained",
           "LoadReport"]


class Block(NamedTuple):
    expand: int  # channels after the 1x1 expansion
    out: int
    kernel: int
    stride: int
    shortcut: str = "auto"  # "auto" = identity when the shape is kept


# Block tables read off MediaPipe's graphs (op by op; see mediapipe_import.describe_graph).
FULL_BLOCKS: tuple[Block, ...] = (
    Block(64, 24, 3, 2), Block(144, 24, 3, 1),
    Block(144, 40, 5, 2), Block(240, 40, 5, 1),
    Block(240, 80, 3, 2), Block(480, 80, 3, 1), Block(480, 80, 3, 1),
    Block(480, 112, 5, 1), Block(672, 112, 5, 1), Block(672, 112, 5, 1),
    Block(672, 192, 5, 2), Block(1152, 192, 5, 1), Block(1152, 192, 5, 1), Block(1152, 192, 5, 1),
)
LITE_BLOCKS: tuple[Block, ...] = (
    Block(64, 16, 3, 2, "maxpool"), Block(96, 16, 3, 1),
    Block(96, 24, 5, 2), Block(144, 24, 5, 1),
    Block(144, 48, 3, 2), Block(288, 48, 3, 1), Block(288, 48, 3, 1),
    Block(288, 64, 5, 1), Block(384, 64, 5, 1), Block(384, 64, 5, 1),
    Block(384, 112, 5, 2), Block(672, 112, 5, 1), Block(672, 112, 5, 1), Block(672, 112, 5, 1),
)


@dataclass(frozen=True)
class BlazeHandConfig:
    variant: str = "full"  # "full" | "lite": picks the block table and MediaPipe file
    img_size: int = 224
    stem_channels: int = 24
    first_channels: int = 16  # after the stem's depthwise block
    head_channels: int = 1152  # width of the pooled features (lite: 672)
    num_gestures: int = NUM_GESTURES
    gesture_dropout: float = 0.0

    @property
    def blocks(self) -> tuple[Block, ...]:
        return FULL_BLOCKS if self.variant == "full" else LITE_BLOCKS

    @property
    def mediapipe_model(self) -> str:
        return f"hand_landmark_{self.variant}"


class BlazeHand(nn.Module):
    def __init__(self, cfg: BlazeHandConfig) -> None:
        super().__init__()
        if cfg.variant not in ("full", "lite"):
            raise ValueError(f"unknown BlazeHand variant {cfg.variant!r}; use 'full' or 'lite'")
        self.cfg = cfg
        self.img_size = cfg.img_size
        self.num_gestures = cfg.num_gestures
        self.mediapipe_model = cfg.mediapipe_model

        self.stem = Conv2dSame(3, cfg.stem_channels, 3, stride=2)
        # MobileNetV2's first block has no expansion: depthwise then project.
        self.first_block = InvertedResidual(cfg.stem_channels, cfg.stem_channels, cfg.first_channels, 3, 1,
                                            expand=False)
        blocks, channels = [], cfg.first_channels
        for b in cfg.blocks:
            blocks.append(InvertedResidual(channels, b.expand, b.out, b.kernel, b.stride, b.shortcut))
            channels = b.out
        self.blocks = nn.Sequential(*blocks)
        # The last stage expands and filters but does not project before pooling.
        self.head_expand = Conv2dSame(channels, cfg.head_channels, 1)
        self.head_depthwise = Conv2dSame(cfg.head_channels, cfg.head_channels, 3, groups=cfg.head_channels)

        self.handedness = nn.Linear(cfg.head_channels, 1)
        self.presence = nn.Linear(cfg.head_channels, 1)
        self.landmarks = nn.Linear(cfg.head_channels, NUM_KEYPOINTS * 3)
        self.world_landmarks = nn.Linear(cfg.head_channels, NUM_KEYPOINTS * 3)
        self.gesture_dropout = nn.Dropout(cfg.gesture_dropout)
        self.gesture = nn.Linear(cfg.head_channels, cfg.num_gestures)

    # Layers MediaPipe has weights for, in graph order, with a name check for
    # the four heads whose shapes alone cannot tell them apart.
    def mediapipe_layers(self) -> list[tuple[nn.Module, str | None]]:
        convs = [self.stem, *self.first_block.mediapipe_layers()]
        for block in self.blocks:
            convs += block.mediapipe_layers()
        convs += [self.head_expand, self.head_depthwise]
        heads = [(self.handedness, "conv_handedness"), (self.presence, "conv_handflag"),
                 (self.landmarks, "conv_landmarks"), (self.world_landmarks, "conv_world_landmarks")]
        return [(m, None) for m in convs] + heads

    def new_layer_prefixes(self) -> tuple[str, ...]:
        """Our own layers, absent from MediaPipe's weights (missing on import by design)."""
        return ("gesture.",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(x))  # [B, 24, 112, 112]
        x = self.first_block(x)  # [B, 16, 112, 112]
        x = self.blocks(x)  # [B, 192, 7, 7] (lite: 112)
        x = F.relu6(self.head_expand(x))
        x = F.relu6(self.head_depthwise(x))  # [B, 1152, 7, 7]
        return x.mean(dim=(2, 3))  # [B, 1152]

    def forward_head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "landmarks": self.landmarks(features).unflatten(-1, (NUM_KEYPOINTS, 3)),  # [B, 21, 3] crop pixels
            "world_landmarks": self.world_landmarks(features).unflatten(-1, (NUM_KEYPOINTS, 3)),  # [B, 21, 3] metres
            "presence_logit": self.presence(features)[:, 0],  # [B]
            "handedness_logit": self.handedness(features)[:, 0],  # [B]
            "gesture_logits": self.gesture(self.gesture_dropout(features)),  # [B, G]
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: [B, 3, H, W] RGB in [0, 1] (H = W = img_size for MediaPipe's scale)."""
        return self.forward_head(self.forward_features(x))


class BlazeHandExport(nn.Module):
    """Deployment view: probabilities instead of logits, a tuple in the order of
    `shared.models.specs` (landmarks, world_landmarks, presence, handedness, gesture_probs)."""

    def __init__(self, model: BlazeHand) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return (
            out["landmarks"],  # [B, 21, 3]
            out["world_landmarks"],  # [B, 21, 3]
            torch.sigmoid(out["presence_logit"])[:, None],  # [B, 1]
            torch.sigmoid(out["handedness_logit"])[:, None],  # [B, 1]
            torch.softmax(out["gesture_logits"], dim=-1),  # [B, G]
        )


def _build(variant: str, num_gestures: int, pretrained_weights: str | None, gesture_dropout: float,
           head_channels: int) -> BlazeHand:
    model = BlazeHand(BlazeHandConfig(variant=variant, num_gestures=num_gestures, gesture_dropout=gesture_dropout,
                                      head_channels=head_channels))
    if pretrained_weights:
        model.load_report = load_pretrained(model, pretrained_weights)
    return model


def blazehand_full(num_gestures: int = NUM_GESTURES, pretrained_weights: str | None = None,
                   gesture_dropout: float = 0.0) -> BlazeHand:
    """MediaPipe hand landmark "full" (2.7M parameters). `pretrained_weights`:
    "mediapipe", a `.tflite` file or one of our `.pth` files."""
    return _build("full", num_gestures, pretrained_weights, gesture_dropout, head_channels=1152)


def blazehand_lite(num_gestures: int = NUM_GESTURES, pretrained_weights: str | None = None,
                   gesture_dropout: float = 0.0) -> BlazeHand:
    """MediaPipe hand landmark "lite" (1.0M parameters)."""
    return _build("lite", num_gestures, pretrained_weights, gesture_dropout, head_channels=672)
