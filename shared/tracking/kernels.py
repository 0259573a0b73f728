"""Compiled per-frame kernels of the tracker (numba).

Why compiled: in the hand pipeline the tracker runs right after the crop model, whose
weights and activations have pushed everything else out of the CPU caches. There each
*distinct* numpy call costs 8-15 us to bring its code back (measured on the 2-core CI
machine: one float add 17 us cold, 1 us warm), so the One-Euro step of 4 hands, written
as some fifteen numpy calls plus masks and write-backs, took ~90 us of the frame. One
compiled loop touches a few KB of code: ~15 us cold, 2 us warm.

The same holds for the Kalman steps the tracker replays (see HandTracker._sync): the
numpy filter takes ~35 us per frame warm, almost all of it call overhead on [4, 8, 8].

Each kernel has a numpy reference that stays the documented, general implementation and
that the tests hold it to (`shared.tracking.smoothing.one_euro_step`, `kalman.predict`,
`kalman.update`).
"""

from __future__ import annotations

import math

import numpy as np

from shared.jit import compiled as _compiled
from shared.tracking.smoothing import _MIN_DT


@_compiled
def one_euro_rows(
    keypoints: np.ndarray,
    xyxy: np.ndarray,
    rows: np.ndarray,
    dets: np.ndarray,
    now: float,
    kp_time: np.ndarray,
    smoothed: np.ndarray,
    velocity: np.ndarray,
    last_raw: np.ndarray,
    min_cutoff: float,
    beta: float,
    d_cutoff: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested against the numpy reference
    """One-Euro step of the tracks `rows` with the hands `dets`, in place.

    keypoints [N, 21, 3], xyxy [N, 4]: this frame's hands (pixels, visibility).
    rows, dets [M]: track row m observed hand dets[m].
    kp_time [T], smoothed [T, 21, 3], velocity [T, 21, 2], last_raw [T, 21, 3]: the
    tracks' filter state (time of the last sample, filtered points + visibility,
    filtered velocity in hand sizes per second, last raw points); updated.
    out [N, 21, 3]: the output keypoints; x, y of the hands `dets` are overwritten.

    The same arithmetic as `one_euro_step` (float64), per point: a point absent now
    (v <= 0) is passed through, and one absent before starts afresh.
    """
    two_pi = 2.0 * math.pi
    for m in range(rows.shape[0]):
        row, det = rows[m], dets[m]
        dt = max(now - kp_time[row], _MIN_DT)
        w = float(xyxy[det, 2]) - float(xyxy[det, 0])
        h = float(xyxy[det, 3]) - float(xyxy[det, 1])
        rate = 1.0 / (dt * math.sqrt(max(w * h, 1.0)))  # 1 / (seconds * hand size)
        a_d = 1.0 / (1.0 + 1.0 / (two_pi * d_cutoff * dt))
        w_min, w_beta = min_cutoff * (two_pi * dt), beta * (two_pi * dt)
        for p in range(keypoints.shape[1]):
            x, y, v = float(keypoints[det, p, 0]), float(keypoints[det, p, 1]), float(keypoints[det, p, 2])
            if v > 0.0 and smoothed[row, p, 2] > 0.0:
                dx, dy = x - smoothed[row, p, 0], y - smoothed[row, p, 1]
                vx = velocity[row, p, 0] + a_d * (dx * rate - velocity[row, p, 0])
                vy = velocity[row, p, 1] + a_d * (dy * rate - velocity[row, p, 1])
                cut = w_min + w_beta * math.hypot(vx, vy)  # 2 pi dt cutoff
                alpha = cut / (cut + 1.0)
                smoothed[row, p, 0] += alpha * dx
                smoothed[row, p, 1] += alpha * dy
            else:
                smoothed[row, p, 0], smoothed[row, p, 1] = x, y
                vx = vy = 0.0
            smoothed[row, p, 2] = v
            velocity[row, p, 0], velocity[row, p, 1] = vx, vy
            last_raw[row, p, 0], last_raw[row, p, 1], last_raw[row, p, 2] = x, y, v
            out[det, p, 0], out[det, p, 1] = smoothed[row, p, 0], smoothed[row, p, 1]
        kp_time[row] = now


@_compiled
def kalman_predict_rows(
    means: np.ndarray, covs: np.ndarray, lost_rows: np.ndarray, process_var: np.ndarray, process_const: np.ndarray
) -> None:  # pragma: no cover - compiled; tested against kalman.predict
    """`kalman.predict` of every track [T, 8] / [T, 8, 8], in place; the tracks `lost_rows`
    first stop growing or shrinking (height velocity 0, ByteTrack)."""
    n = means.shape[1] // 2
    for row in lost_rows:
        means[row, 7] = 0.0
    for t in range(means.shape[0]):
        h2 = means[t, 3] * means[t, 3]
        for i in range(n):  # mean' = F mean: position += velocity
            means[t, i] += means[t, n + i]
        # cov' = F cov F^T with F = [[I, I], [0, I]]: rows i += rows n+i, then the same for columns.
        for i in range(n):
            for j in range(2 * n):
                covs[t, i, j] += covs[t, n + i, j]
        for i in range(2 * n):
            for j in range(n):
                covs[t, i, j] += covs[t, i, n + j]
        for i in range(2 * n):
            covs[t, i, i] += h2 * process_var[i] + process_const[i]


@_compiled
def kalman_update_rows(
    means: np.ndarray, covs: np.ndarray, rows: np.ndarray, boxes: np.ndarray, measure_var: np.ndarray,
    measure_const: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested against kalman.update
    """`kalman.update` of the tracks `rows` with the boxes [M, 4] (x1, y1, x2, y2), in place.
    S is diagonal (see kalman.update), so K^T = (H P) / diag(S)."""
    n = means.shape[1] // 2
    z = np.empty(n)
    s = np.empty(n)
    hp = np.empty((n, 2 * n))
    for m in range(rows.shape[0]):
        t = rows[m]
        w = boxes[m, 2] - boxes[m, 0]
        h_raw = boxes[m, 3] - boxes[m, 1]
        h = max(h_raw, 1e-6)  # kalman.xyxy_to_xyah
        z[0], z[1], z[2], z[3] = boxes[m, 0] + w / 2, boxes[m, 1] + h_raw / 2, w / h, h
        h2 = means[t, 3] * means[t, 3]
        for k in range(n):
            s[k] = covs[t, k, k] + h2 * measure_var[k] + measure_const[k]
            z[k] -= means[t, k]  # the innovation
            for j in range(2 * n):
                hp[k, j] = covs[t, k, j]
        for j in range(2 * n):
            gain = 0.0
            for k in range(n):
                gain += z[k] * hp[k, j] / s[k]
            means[t, j] += gain
        for i in range(2 * n):
            for j in range(2 * n):
                acc = 0.0
                for k in range(n):
                    acc += hp[k, i] * hp[k, j] / s[k]
                covs[t, i, j] -= acc


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel once per process, so that the
    first frame does not pay it (0.1-1 s)."""
    global _warm
    if _warm:
        return
    kp = np.zeros((1, 21, 3), np.float32)
    state = np.zeros((1, 21, 3))
    one_euro_rows(kp, np.zeros((1, 4), np.float32), np.zeros(1, np.int64), np.zeros(1, np.int64), 1.0,
                  np.zeros(1), state, np.zeros((1, 21, 2)), state.copy(), 1.0, 1.0, 1.0, kp.copy())
    means, covs, rows = np.ones((1, 8)), np.zeros((1, 8, 8)), np.zeros(1, np.int64)
    kalman_predict_rows(means, covs, rows, np.ones(8), np.zeros(8))
    kalman_update_rows(means, covs, rows, np.ones((1, 4)), np.ones(4), np.zeros(4))
    _warm = True
