"""Per-track smoothing: One-Euro filter for keypoints, a short window for gestures.

Jitter is the first complaint about MediaPipe Hands: a landmark model run on a fresh crop
every frame returns points that shake by a few pixels even on a still hand. The One-Euro
filter (Casiez et al., CHI 2012) is a low-pass filter whose cutoff rises with speed: a
still hand is smoothed hard, a moving one follows with little lag.

Units: the speed that raises the cutoff is measured in *hand sizes per second* (the
caller passes the hand's size in pixels as `scale`), as MediaPipe does with its
object-scale-normalised filter, so `beta` means the same for a near and a far hand.

`one_euro_step` is a pure function batched over leading dimensions; `OneEuroFilter` is
the small stateful wrapper for one point set. The tracker keeps the filter state on each
track and calls `one_euro_step` once per frame for all matched tracks.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from shared.hand import NUM_GESTURES

# Time between frames below which we treat timestamps as equal (avoids a division by 0).
_MIN_DT = 1e-6


def smoothing_alpha(cutoff: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass filter with `cutoff` Hz."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro_step(
    x: np.ndarray,
    x_prev: np.ndarray,
    dx_prev: np.ndarray,
    dt: np.ndarray | float,
    scale: np.ndarray | float = 1.0,
    min_cutoff: float = 1.0,
    beta: float = 10.0,
    d_cutoff: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the One-Euro filter for point sets.

    x, x_prev: [..., P, D] new raw points and the previous filtered ones (P points, D coords)
    dx_prev:   [..., P, D] previous filtered velocity (scale units per second)
    dt:        seconds since the previous sample, scalar or [...]
    scale:     object size in the units of x (hand size, pixels), scalar or [...]
    Returns (filtered x [..., P, D], filtered velocity [..., P, D]).

    The velocity is low-passed as a signed vector (as in the paper) and only then turned
    into a speed, so measurement noise averages out instead of reading as motion; both
    coordinates of a point share one cutoff from that speed.

    Written for few numpy calls (the tracker runs it every frame on a handful of hands,
    where each call's overhead outweighs its arithmetic): a scalar `dt` stays a Python
    float, and the smoothing factor 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff), is
    computed as w / (w + 1) with w = 2 pi dt cutoff.
    """
    if np.ndim(dt) == 0:
        dt = max(float(dt), _MIN_DT)
    else:
        dt = np.maximum(np.asarray(dt, dtype=np.float64), _MIN_DT)[..., None, None]  # [..., 1, 1]
    if np.ndim(scale) == 0:
        scale = max(float(scale), 1e-9)
    else:
        scale = np.maximum(np.asarray(scale, dtype=np.float64), 1e-9)[..., None, None]  # [..., 1, 1]
    delta = x - x_prev  # [..., P, D]
    a_d = smoothing_alpha(d_cutoff, dt)  # scalar or [..., 1, 1]
    dx_hat = dx_prev + a_d * (delta / (dt * scale) - dx_prev)  # [..., P, D]
    if dx_hat.shape[-1] == 2:
        speed = np.hypot(dx_hat[..., :1], dx_hat[..., 1:])  # [..., P, 1]
    else:
        speed = np.sqrt(np.square(dx_hat).sum(-1, keepdims=True))  # [..., P, 1]
    two_pi_dt = 2.0 * math.pi * dt
    w = (min_cutoff * two_pi_dt) + (beta * two_pi_dt) * speed  # [..., P, 1] = 2 pi dt cutoff
    x_hat = x_prev + (w / (w + 1.0)) * delta  # [..., P, D]
    return x_hat, dx_hat


class OneEuroFilter:
    """Stateful One-Euro filter for one set of points, e.g. a hand's [21, 2] keypoints.

    Give `timestamp` in seconds, or leave it out and the filter steps `1 / fps` per call.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 10.0, d_cutoff: float = 1.0, fps: float = 30.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.fps = fps
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None
        self.t_prev = 0.0

    def __call__(self, x: np.ndarray, timestamp: float | None = None, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = self.t_prev + 1.0 / self.fps if timestamp is None else float(timestamp)
        if self.x_prev is None:
            # The first sample is the best estimate there is: no lag, no smoothing.
            self.x_prev, self.dx_prev = x.copy(), np.zeros_like(x)
        else:
            self.x_prev, self.dx_prev = one_euro_step(
                x, self.x_prev, self.dx_prev, dt=t - self.t_prev, scale=scale,
                min_cutoff=self.min_cutoff, beta=self.beta, d_cutoff=self.d_cutoff,
            )
        self.t_prev = t
        return self.x_prev.copy()


class GestureSmoother:
    """Gesture over the last `window` frames: mean class probability, then argmax.

    Fed either full probabilities [G] (what the crop model really outputs) or, when only
    the top-1 is known, (class index, score), which counts as a one-hot of that score, so
    the result is a score-weighted majority vote. Frames with an unknown gesture (-1) are
    skipped. A window of 1 turns smoothing off. The tracker uses a second one with two
    classes to vote a track's handedness.

    Plain Python lists on purpose: with 5 classes and a window of 5 the numpy call
    overhead would dominate (this runs for every tracked hand, every frame).
    """

    def __init__(self, window: int = 5, num_classes: int = NUM_GESTURES):
        self.window = max(1, int(window))
        self.num_classes = num_classes
        self.history: deque[list[float]] = deque(maxlen=self.window)  # each [G]
        self._sum = [0.0] * num_classes
        self._current = (-1, 0.0)

    def update(self, gesture: int, score: float, probs: np.ndarray | list[float] | None = None) -> tuple[int, float]:
        """Add one frame, return the smoothed (gesture index, mean probability of it).
        `probs`: the frame's [G] class probabilities, if known (then `gesture` and `score`
        are not used)."""
        if probs is None:
            if not 0 <= gesture < self.num_classes:
                return self._current
            row = [0.0] * self.num_classes
            row[gesture] = float(score)
        else:
            row = probs.tolist() if isinstance(probs, np.ndarray) else [float(p) for p in probs]
            if len(row) != self.num_classes:
                raise ValueError(f"GestureSmoother: got {len(row)} probabilities for {self.num_classes} classes")
        total = self._sum
        if len(self.history) == self.window:
            for k, p in enumerate(self.history[0]):
                total[k] -= p
        self.history.append(row)
        for k, p in enumerate(row):
            total[k] += p
        best = max(range(self.num_classes), key=total.__getitem__)
        self._current = (best, total[best] / len(self.history))
        return self._current

    def current(self) -> tuple[int, float]:
        """(gesture index, mean probability), (-1, 0.0) before any known gesture."""
        return self._current
