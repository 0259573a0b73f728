"""Building blocks shared by BlazeHand and BlazePalm.

MediaPipe's networks were trained in TensorFlow, whose "SAME" padding is not
symmetric: at stride 2 on an even input the extra row/column goes to the
bottom/right. PyTorch's `padding=` is always symmetric, so every strided
layer here pads explicitly with `F.pad` (zeros for convolutions, -inf for max
pooling) and then runs unpadded. Getting this wrong shifts every feature map by
half a pixel and the imported weights silently lose accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis.

    `int(size)` freezes the size while tracing for export: spatial sizes are fixed
    per model (only the batch is dynamic), and constant pads let ONNX Runtime fold
    each Pad into its Conv instead of computing it from Shape/Gather at run time.
    """
    size = int(size)
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad [B, C, H, W] so that an unpadded kernel/stride gives TF "SAME" output."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TF "SAME" padding; `groups=channels` makes it depthwise.

    At stride 1 with an odd kernel "SAME" is symmetric, so the convolution pads
    itself (no extra copy); only strided layers pad explicitly.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if symmetric else 0, groups=groups, bias=bias)
        self.explicit_pad = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_pad:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def max_pool_same(x: torch.Tensor, kernel: int = 2, stride: int = 2) -> torch.Tensor:
    """TF max pooling with "SAME" padding: padded cells are -inf, never the maximum."""
    return F.max_pool2d(pad_same(x, kernel, stride, value=float("-inf")), kernel, stride)


class InvertedResidual(nn.Module):
    """MobileNetV2 block as in MediaPipe's hand-landmark network.

    expand 1x1 (ReLU6) -> depthwise kxk (ReLU6) -> project 1x1 (linear), plus a
    shortcut: identity when shape is kept; max-pool when only the stride changes
    (the lite model's one downsampling shortcut); none otherwise. Batch norm is
    already folded into the convolutions' biases by MediaPipe's converter.
    `expand_channels == in_channels` with `expand=False` skips the 1x1 expansion
    (the stem's first block).
    """

    def __init__(self, in_channels: int, expand_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, shortcut: str = "auto", expand: bool = True) -> None:
        super().__init__()
        if shortcut == "auto":
            shortcut = "identity" if (stride == 1 and in_channels == out_channels) else "none"
        if shortcut not in ("identity", "maxpool", "none"):
            raise ValueError(f"unknown shortcut {shortcut!r}")
        if shortcut == "maxpool" and in_channels != out_channels:
            raise ValueError("a max-pool shortcut needs in_channels == out_channels")
        self.shortcut = shortcut
        self.stride = stride
        self.expand = Conv2dSame(in_channels, expand_channels, 1) if expand else None
        self.depthwise = Conv2dSame(expand_channels, expand_channels, kernel_size, stride=stride,
                                    groups=expand_channels)
        self.project = Conv2dSame(expand_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = F.relu6(self.depthwise(y))
        y = self.project(y)
        if self.shortcut == "identity":
            y = y + x
        elif self.shortcut == "maxpool":
            y = y + max_pool_same(x, self.stride, self.stride)
        return y

    def mediapipe_layers(self) -> list[nn.Module]:
        """Weighted layers in the order MediaPipe's graph runs them."""
        return [m for m in (self.expand, self.depthwise, self.project) if m is not None]


class BlazeBlock(nn.Module):
    """BlazeFace/BlazePalm block: depthwise kxk -> 1x1 conv, + shortcut, then PReLU.

    A strided block's shortcut is a 2x2 max-pool; when the channel count grows,
    the shortcut is zero-padded on the channel axis (TF's PAD on the last, NHWC
    axis, i.e. our axis 1), as in MediaPipe's graph.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("BlazeBlock cannot reduce channels")
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.depthwise = Conv2dSame(in_channels, in_channels, kernel_size, stride=stride, groups=in_channels)
        self.pointwise = Conv2dSame(in_channels, out_channels, 1)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        shortcut = max_pool_same(x, self.stride, self.stride) if self.stride > 1 else x
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(y + shortcut)

    def mediapipe_layers(self) -> list[nn.Module]:
        return [self.depthwise, self.pointwise, self.act]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
