"""Constant-velocity Kalman filter for hand boxes, as stateless functions.

State (ByteTrack's parameterisation, not SORT's):

    mean = [x, y, a, h, vx, vy, va, vh]    x, y box centre, a = w / h aspect, h height (pixels)

Why ByteTrack's [x, y, a, h] rather than SORT's [cx, cy, s = area, r = aspect]:
- A hand changes shape fast (open palm -> fist -> pinch, wrist rotation). SORT keeps the
  aspect ratio constant (no velocity on r) and lets the *area* have a velocity, which
  can go negative when a hand closes quickly and then yields NaN boxes; here both the
  aspect and the height have their own velocity and stay linear.
- The noise is proportional to the box height, so the filter behaves the same for a
  hand close to the camera (300 px) and one across the room (30 px). SORT's fixed
  pixel noise is tuned for pedestrians of one typical size.

The filter object keeps no per-track state (SORT / ByteTrack style): every function takes
`(mean, cov)` and returns new arrays, so a track is just the pair it carries around and a
caller can predict "what would this track look like next frame" without touching it.
Every function is batched over leading dimensions: `mean [..., 8]`, `cov [..., 8, 8]`,
`measurement [..., 4]`, so the tracker predicts and updates all its tracks in one call.
One time step is one frame.
"""

from __future__ import annotations

import functools

import numpy as np

NDIM = 4  # measured: x, y, a, h
STATE_DIM = 2 * NDIM  # plus one velocity per measured value

# Noise as a fraction of the box height (ByteTrack's values). They are the defaults of
# every function below and can be changed per call: TrackerConfig forwards its own, with a
# 4x larger velocity noise for hands (see kalman_std_velocity there).
STD_WEIGHT_POSITION = 1.0 / 20
STD_WEIGHT_VELOCITY = 1.0 / 160

# x' = F x with F = [[I, I], [0, I]]: position += velocity, per frame.
_MOTION = np.eye(STATE_DIM)
_MOTION[:NDIM, NDIM:] = np.eye(NDIM)
_MOTION_T = _MOTION.T.copy()


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """[..., 4] corners -> [..., 4] centre x, centre y, aspect w/h, height."""
    xyxy = np.asarray(xyxy, dtype=np.float64)
    wh = xyxy[..., 2:] - xyxy[..., :2]  # [..., 2]
    # A degenerate (zero-height) box would make the aspect infinite; clamp the height.
    h = np.maximum(wh[..., 1:], 1e-6)  # [..., 1]
    return np.concatenate([xyxy[..., :2] + wh / 2, wh[..., :1] / h, h], axis=-1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """[..., >=4] centre x, centre y, aspect, height (a state's first 4 values) -> [..., 4] corners."""
    xyah = np.asarray(xyah, dtype=np.float64)
    half_h = np.maximum(xyah[..., 3:4], 0.0) / 2  # [..., 1]
    half = np.concatenate([np.maximum(xyah[..., 2:3], 0.0) * half_h, half_h], axis=-1)  # [..., 2] half w, h
    return np.concatenate([xyah[..., :2] - half, xyah[..., :2] + half], axis=-1)


@functools.lru_cache(maxsize=16)
def _weights(std_position: float, std_velocity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(initial std per unit height [8], process variance per unit height^2 [8],
    measurement variance per unit height^2 [4]), cached: a process uses a handful of
    settings and these run every frame. The aspect ratio's noise does not scale with the
    height; those entries are 0 here and come from the constants below. Read-only."""
    p, v = std_position, std_velocity
    init_std = np.array([2 * p, 2 * p, 0.0, 2 * p, 10 * v, 10 * v, 0.0, 10 * v])
    process_var = np.square(np.array([p, p, 0.0, p, v, v, 0.0, v]))
    measure_var = np.square(np.array([p, p, 0.0, p]))
    return init_std, process_var, measure_var


# Aspect-ratio noise, absolute (an aspect has no pixel scale).
_INIT_STD_CONST = np.array([0.0, 0.0, 1e-2, 0.0, 0.0, 0.0, 1e-5, 0.0])
_PROCESS_VAR_CONST = np.square(np.array([0.0, 0.0, 1e-2, 0.0, 0.0, 0.0, 1e-5, 0.0]))
_MEASURE_VAR_CONST = np.square(np.array([0.0, 0.0, 1e-1, 0.0]))
_DIAG8 = np.arange(STATE_DIM)
_DIAG4 = np.arange(NDIM)


def initiate(
    measurement: np.ndarray,
    std_position: float = STD_WEIGHT_POSITION,
    std_velocity: float = STD_WEIGHT_VELOCITY,
) -> tuple[np.ndarray, np.ndarray]:
    """A new track from an unassociated measurement [..., 4] (x, y, a, h).

    Returns mean [..., 8] (velocities zero) and a diagonal cov [..., 8, 8]. The velocity
    is unknown, so its std is large (10x the velocity noise); the position's is twice
    the measurement noise.
    """
    measurement = np.asarray(measurement, dtype=np.float64)
    mean = np.concatenate([measurement, np.zeros_like(measurement)], axis=-1)  # [..., 8]
    init_std, _, _ = _weights(std_position, std_velocity)
    std = measurement[..., 3:4] * init_std + _INIT_STD_CONST  # [..., 8]
    return mean, _diag(np.square(std))


def predict(
    mean: np.ndarray,
    cov: np.ndarray,
    std_position: float = STD_WEIGHT_POSITION,
    std_velocity: float = STD_WEIGHT_VELOCITY,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: mean' = F mean, cov' = F cov F^T + Q, Q scaled by the box height."""
    mean = np.asarray(mean, dtype=np.float64)
    _, process_var, _ = _weights(std_position, std_velocity)
    q = np.square(mean[..., 3:4]) * process_var + _PROCESS_VAR_CONST  # [..., 8]
    new_mean = mean @ _MOTION_T  # [..., 8]
    new_cov = _MOTION @ cov @ _MOTION_T  # [..., 8, 8]
    new_cov[..., _DIAG8, _DIAG8] += q
    return new_mean, new_cov


def project(
    mean: np.ndarray, cov: np.ndarray, std_position: float = STD_WEIGHT_POSITION
) -> tuple[np.ndarray, np.ndarray]:
    """State -> measurement space: (H mean [..., 4], H cov H^T + R [..., 4, 4]).

    H = [I 0] simply takes the first four values, so no matrix product is needed.
    """
    _, _, measure_var = _weights(std_position, STD_WEIGHT_VELOCITY)
    r = np.square(mean[..., 3:4]) * measure_var + _MEASURE_VAR_CONST  # [..., 4]
    projected_cov = cov[..., :NDIM, :NDIM].copy()  # [..., 4, 4]
    projected_cov[..., _DIAG4, _DIAG4] += r
    return mean[..., :NDIM], projected_cov


def update(
    mean: np.ndarray,
    cov: np.ndarray,
    measurement: np.ndarray,
    std_position: float = STD_WEIGHT_POSITION,
) -> tuple[np.ndarray, np.ndarray]:
    """Correct the predicted state with a measurement [..., 4] (x, y, a, h).

    With H = [I 0]: S = H P H^T + R, K = P H^T S^-1, and since S is symmetric
    K^T = S^-1 (H P):
        mean' = mean + K (z - H mean)
        cov'  = P - K S K^T = P - (H P)^T S^-1 (H P)
    S is diagonal here: F, Q and R never couple two measured values (x with y, a or h),
    and `initiate` starts diagonal, so the 4 measured values stay uncorrelated (P is four
    independent [value, velocity] 2x2 blocks) and S^-1 is a division, not a solve.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    _, _, measure_var = _weights(std_position, STD_WEIGHT_VELOCITY)
    r = np.square(mean[..., 3:4]) * measure_var + _MEASURE_VAR_CONST  # [..., 4]
    hp = cov[..., :NDIM, :]  # [..., 4, 8] = H P
    gain_t = hp / (cov[..., _DIAG4, _DIAG4] + r)[..., None]  # [..., 4, 8] = K^T = S^-1 H P
    innovation = np.asarray(measurement, dtype=np.float64) - mean[..., :NDIM]  # [..., 4]
    new_mean = mean + (innovation[..., None, :] @ gain_t)[..., 0, :]  # [..., 8]
    new_cov = cov - np.swapaxes(hp, -1, -2) @ gain_t  # [..., 8, 8]
    return new_mean, new_cov


def _diag(values: np.ndarray) -> np.ndarray:
    """[..., n] -> [..., n, n] diagonal matrices (np.diag only does one)."""
    n = values.shape[-1]
    out = np.zeros(values.shape + (n,), dtype=values.dtype)
    idx = np.arange(n)
    out[..., idx, idx] = values
    return out
