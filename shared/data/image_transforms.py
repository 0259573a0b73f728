"""Train / val image transforms of the G-MAE seed (src/data/transforms.py), PIL in, tensor out.

train: random resized crop that keeps the aspect ratio (square crops of the
       source resized to a square, so a hand is never stretched), horizontal
       flip, colour jitter, ImageNet normalisation;
val:   resize the shorter side to size / crop_pct, centre crop, normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(img_size: int, min_scale: float = 0.35, hflip: float = 0.5, color_jitter: float = 0.4,
                    hue: float = 0.1) -> Callable:
    """Square random-resized crop (area `min_scale`..1 of the image), flip, jitter, normalise.

    A horizontal flip is safe for our gestures: none of them is defined by which hand shows it.
    """
    ops: list = [T.RandomResizedCrop(img_size, scale=(min_scale, 1.0), ratio=(1.0, 1.0),
                                     interpolation=T.InterpolationMode.BICUBIC)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        ops.append(T.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=hue))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def val_transform(img_size: int, crop_pct: float = 0.875, mean: tuple[float, ...] = IMAGENET_MEAN,
                  std: tuple[float, ...] = IMAGENET_STD) -> Callable:
    """Resize the shorter side to img_size / crop_pct, centre crop img_size, normalise."""
    return T.Compose([
        T.Resize(int(round(img_size / crop_pct)), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def denormalize(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] or [B, C, H, W] normalised tensor -> uint8 RGB [H, W, 3] or [B, H, W, 3]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    img = (x.detach() * std + mean).clamp(0, 1) * 255.0
    img = img.round().to(torch.uint8).cpu()
    return img.permute(0, 2, 3, 1).numpy() if img.ndim == 4 else img.permute(1, 2, 0).numpy()
