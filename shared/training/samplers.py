"""Samplers for imbalanced gesture data.

`--use_weighted_sampler` draws every class equally often (with replacement), so
a rare gesture (the seed weights `pointer` 8x) is seen every few batches rather
than a few times per epoch. Under DDP, Lightning wraps this sampler in its
`DistributedSamplerWrapper`, so each rank draws its own share.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[C] number of samples per class."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def balanced_sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[N] weight per sample, 1 / (count of its class): each class gets the same total mass."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    return 1.0 / np.maximum(counts[np.asarray(labels, dtype=np.int64)], 1.0)


def balanced_sampler(labels: np.ndarray, num_classes: int, num_samples: int | None = None,
                     seed: int = 0) -> WeightedRandomSampler:
    """A class-balanced sampler with replacement; an epoch is `num_samples` draws (default: len(labels))."""
    weights = torch.as_tensor(balanced_sample_weights(labels, num_classes), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=num_samples or len(weights), replacement=True,
                                 generator=generator)
