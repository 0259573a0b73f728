"""Hand tracker: Kalman-predicted boxes, Hungarian IoU matching, ByteTrack's second pass.

One `HandTracker` per video stream. Call `update(hands)` once per frame, even with no
detections: that is what ages tracks and eventually removes them. It returns the same
hands with `track_id` filled in (and, when enabled, smoothed keypoints, gesture and
handedness). Ids belong to the tracker instance (`reset()` starts again at 1), never to
a global counter, so two streams in one process (Triton serves many) never share ids.

Track lifecycle (`TrackState`):

    TENTATIVE --(min_hits matches)--> CONFIRMED --(missed a frame)--> LOST
        |                               ^                            |  |
        |                               +-------(matched again)------+  |
        +--(missed before confirmed)--> REMOVED <--(missed > max_age)---+

A tentative track that misses a frame is dropped at once: a lone false positive never
gets an id. Tracks born in the tracker's first frame are confirmed at once (ByteTrack):
there is no earlier frame to corroborate them, and a stream's first frame without ids
looks broken.

Matching per frame (ByteTrack, Zhang et al. 2022, plus OC-SORT's recovery):
1. detections with score >= high_score_threshold vs confirmed + lost tracks, IoU of the
   Kalman prediction >= track_iou_threshold;
2. detections with low_score_threshold <= score < high_score_threshold vs the tracks still
   unmatched (IoU >= low_score_iou_threshold): a half-occluded or motion-blurred hand
   often scores low, and dropping it would break its track;
3. remaining high detections vs the tracks still unmatched, by their *last observed* box
   (a hand that stopped or turned back), then by centre distance in hand sizes
   (a small fast hand that shares little area with its prediction);
4. remaining high, then low detections vs tentative tracks;
5. remaining high detections start new tentative tracks.
Setting high_score_threshold == low_score_threshold turns step 2 off (plain SORT), as do
observation_recovery=False and track_max_distance=0 for step 3. `benchmarks/tracking.py`
measures each step's effect (ablation table).

For the tracking-mode pipeline (MediaPipe-style: next frame's ROI from this frame's
landmarks, detector skipped) the tracker exposes `confirmed_tracks()` (confirmed and
matched this frame); each `Track` carries its Kalman box (`xyxy`), next-frame prediction
(`predicted_xyxy()`), velocity, last raw and smoothed keypoints (`keypoints`,
`smoothed_keypoints`: build the next ROI from the raw ones, as MediaPipe does), presence
score (`score`), gesture history and handedness. A typical loop:

    out = tracker.update(hands)                      # hands: detector or ROI-crop results
    rois = [roi_from_keypoints(t.keypoints) for t in tracker.confirmed_tracks()
            if t.score >= presence_threshold]
    run_detector_next = (frame % N == 0 or len(rois) < max_hands)

Cost: the pipeline calls `update()` right after its crop model, when the CPU caches hold
the model's data. So the Kalman steps wait until a detection needs matching (`_sync`),
the One-Euro and Kalman arithmetic are compiled kernels (kernels.py), and the per-hand
bookkeeping is plain Python on lists. With 4 hands the tracker's share of a frame is
~0.13 ms (benchmarks/latency.py), its warm compute ~0.08 ms (benchmarks/tracking.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from shared.config import option
from shared.errors import UserError
from shared.geometry import iou_matrix
from shared.hand import NUM_KEYPOINTS
from shared.results import HandResults
from shared.tracking import kalman
from shared.tracking.kernels import kalman_predict_rows, kalman_update_rows, one_euro_rows
from shared.tracking.kernels import warm_up as _warm_up_kernels
from shared.tracking.smoothing import GestureSmoother

# Frames of Kalman steps the tracker may hold back before applying them (see HandTracker._sync).
KALMAN_LOG_FRAMES = 30


class TrackState(enum.IntEnum):
    TENTATIVE = 0
    CONFIRMED = 1
    LOST = 2
    REMOVED = 3


@dataclass
class TrackerConfig:
    track_max_age: int = option(3, "frames a confirmed track survives without a matched detection before removal")
    track_min_hits: int = option(2, "matched frames before a new track is confirmed and its id is output")
    track_iou_threshold: float = option(0.3, "minimum IoU between a predicted track box and a detection to match")
    high_score_threshold: float = option(0.5, "detections at or above this score are matched first and may "
                                              "start new tracks")
    low_score_threshold: float = option(0.1, "detections below this score are ignored; those between low and high "
                                             "only continue existing tracks (ByteTrack's second pass; set equal "
                                             "to high_score_threshold to disable)")
    low_score_iou_threshold: float = option(0.5, "minimum IoU to match a low-score detection (second pass)")
    observation_recovery: bool = option(True, "also match unmatched tracks by their last observed box, not only "
                                              "the Kalman prediction (OC-SORT; helps hands that stop or turn)")
    track_max_distance: float = option(1.0, "fallback match of still-unmatched tracks by centre distance, in "
                                            "hand sizes (0 = off)")
    output_tentative: bool = option(False, "also output ids of tentative (not yet confirmed) tracks")
    kalman_std_position: float = option(kalman.STD_WEIGHT_POSITION,
                                        "Kalman position noise, as a fraction of the box height")
    # ByteTrack's 1/160 is tuned for walking people; hands start, stop and turn back far
    # more abruptly for their size. 1/40 gave the best IDF1 on noisy moving boxes
    # (1/160: 0.875, 1/40: 0.886, 1/10: 0.872, other settings equal).
    kalman_std_velocity: float = option(1.0 / 40, "Kalman velocity noise, as a fraction of the box height")
    # Off by default: MediaPipe's Hands graph does not smooth, and the defaults give its answer
    # (docs/parity.md: on, the landmarks lag it by a median 0.84 px on a panned sequence).
    smooth_keypoints: bool = option(False, "One-Euro filter the keypoints of tracked hands: steadier, a little lag "
                                           "(off = MediaPipe's raw landmarks)")
    # One-Euro defaults, measured on 21 points with 1.5%-of-hand-size noise at 30 fps (RMSE
    # to the truth relative to the raw points'): still hand 0.49, moving 3 hand sizes/s
    # 1.10, waving 1 Hz 1.63. Lower beta smooths still hands more and lags moving ones
    # more (beta 5: 0.43 / 1.42 / 2.28).
    one_euro_min_cutoff: float = option(1.0, "One-Euro minimum cutoff (Hz): lower = smoother still hands, more lag")
    one_euro_beta: float = option(10.0, "One-Euro speed coefficient (per hand-size/second): higher = less lag "
                                        "when moving, more jitter")
    one_euro_d_cutoff: float = option(1.0, "One-Euro cutoff (Hz) of the velocity estimate")
    fps: float = option(30.0, "frame rate assumed for smoothing when update() gets no timestamp")
    gesture_window: int = option(5, "frames over which a track's gesture probabilities are averaged (1 = off)")
    handedness_window: int = option(15, "frames over which a track's handedness is voted (1 = off)")

    def __post_init__(self) -> None:
        if self.track_max_age < 0:
            raise UserError(f"tracker config: track_max_age must be >= 0 frames, got {self.track_max_age}")
        if self.track_min_hits < 1:
            raise UserError(f"tracker config: track_min_hits must be >= 1, got {self.track_min_hits}")
        for name in ("track_iou_threshold", "low_score_iou_threshold", "low_score_threshold", "high_score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"tracker config: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.low_score_threshold > self.high_score_threshold:
            raise UserError(f"tracker config: low_score_threshold ({self.low_score_threshold}) must be <= "
                            f"high_score_threshold ({self.high_score_threshold})")
        if self.fps <= 0 or self.track_max_distance < 0:
            raise UserError("tracker config: fps must be > 0 and track_max_distance >= 0")


class Track:
    """One hand followed over time.

    Its numeric state lives in the tracker's per-track arrays (one batched Kalman step
    for all tracks instead of one per track); `mean`, `cov`, `last_xyxy`, `keypoints`,
    `smoothed_keypoints` and `keypoint_velocity` are views of this track's row and change
    as the tracker runs (`mean` and `cov` bring the tracker's lazy Kalman steps up to date
    first, see HandTracker). Once the track is removed they keep their last values.
    """

    def __init__(self, track_id: int, frame: int, cfg: TrackerConfig, tracker: HandTracker | None = None):
        self.track_id = track_id
        self.state = TrackState.TENTATIVE
        self.start_frame = frame
        self.last_hit_frame = frame  # the last frame with a matched detection
        self.hits = 1  # frames with a matched detection
        self.score = 0.0  # last matched detection / presence score
        self.has_keypoints = False  # whether any matched detection carried keypoints
        self.gesture_smoother = GestureSmoother(cfg.gesture_window)
        self.handedness_smoother = GestureSmoother(cfg.handedness_window, num_classes=2)
        self._std = (cfg.kalman_std_position, cfg.kalman_std_velocity)
        self._tracker = tracker  # None once removed: the values below are then frozen
        self._frame = frame  # the frame a removed track stopped at
        # Views into HandTracker's arrays, set by HandTracker._bind_views().
        self._mean: np.ndarray  # [8] x, y, a, h and their velocities (see kalman.py)
        self._cov: np.ndarray  # [8, 8]
        self.last_xyxy: np.ndarray  # [4] last matched detection box
        self._keypoints: np.ndarray  # [21, 3] last raw keypoints
        self._smoothed: np.ndarray  # [21, 3] One-Euro filtered keypoints
        self.keypoint_velocity: np.ndarray  # [21, 2] filtered keypoint velocity, hand sizes / second

    def _now(self) -> int:
        return self._tracker.frame_count if self._tracker is not None else self._frame

    @property
    def age(self) -> int:
        """Frames since birth, the birth frame counting as 1."""
        return self._now() - self.start_frame + 1

    @property
    def time_since_update(self) -> int:
        """Frames since the last matched detection (0: matched in the current frame)."""
        return self._now() - self.last_hit_frame

    @property
    def mean(self) -> np.ndarray:
        """[8] Kalman state after the current frame (x, y, a, h and velocities, kalman.py)."""
        if self._tracker is not None:
            self._tracker._sync()
        return self._mean

    @property
    def cov(self) -> np.ndarray:
        """[8, 8] Kalman covariance after the current frame."""
        if self._tracker is not None:
            self._tracker._sync()
        return self._cov

    @property
    def is_confirmed(self) -> bool:
        return self.state == TrackState.CONFIRMED

    @property
    def keypoints(self) -> np.ndarray | None:
        """[21, 3] last raw keypoints (pixels + visibility), None if never seen."""
        return self._keypoints if self.has_keypoints else None

    @property
    def smoothed_keypoints(self) -> np.ndarray | None:
        """[21, 3] One-Euro filtered keypoints, None if never seen."""
        return self._smoothed if self.has_keypoints else None

    @property
    def xyxy(self) -> np.ndarray:
        """[4] current Kalman box (after this frame's update, or the prediction if missed)."""
        return kalman.xyah_to_xyxy(self.mean)

    def predicted_xyxy(self) -> np.ndarray:
        """[4] where the Kalman filter expects the hand in the *next* frame (track unchanged)."""
        mean, _ = kalman.predict(self.mean, self.cov, *self._std)
        return kalman.xyah_to_xyxy(mean)

    @property
    def velocity(self) -> np.ndarray:
        """[2] box-centre velocity, pixels per frame."""
        return self.mean[4:6].copy()

    @property
    def gesture(self) -> int:
        return self.gesture_smoother.current()[0]

    @property
    def gesture_score(self) -> float:
        return self.gesture_smoother.current()[1]

    @property
    def gesture_history(self) -> list[list[float]]:
        """Last `gesture_window` class-probability vectors, oldest first."""
        return [list(p) for p in self.gesture_smoother.history]

    @property
    def handedness(self) -> int:
        return self.handedness_smoother.current()[0]

    def __repr__(self) -> str:
        return (f"Track(id={self.track_id}, {self.state.name}, hits={self.hits}, "
                f"since_update={self.time_since_update}, box={np.round(self.xyxy, 1).tolist()})")


def linear_assignment(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching that maximises total IoU among pairs with IoU >= threshold.

    iou: [T, D]. Returns (matches [K, 2] of (row, col), unmatched rows, unmatched cols).
    """
    return min_cost_assignment(1.0 - iou, iou >= threshold)


def min_cost_assignment(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching over the `valid` pairs of a [T, D] cost matrix.

    Invalid pairs get a prohibitive cost instead of being dropped after the solve, so the
    solver first maximises the number of valid matches, then minimises their total cost,
    and never trades a valid match for an invalid one.
    """
    # Imported here: scipy.optimize takes about a second to import, which every CLI that
    # only builds a TrackerConfig for its --help would pay; afterwards this is a dict lookup.
    from scipy.optimize import linear_sum_assignment

    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.zeros((0, 2), dtype=np.int64), np.arange(rows), np.arange(cols)
    r, c = linear_sum_assignment(np.where(valid, cost, 1e6))
    keep = valid[r, c]
    matches = np.stack([r[keep], c[keep]], axis=1)  # [K, 2]
    # Python sets: for the handful of hands per frame they beat numpy's set routines.
    taken_rows, taken_cols = set(matches[:, 0].tolist()), set(matches[:, 1].tolist())
    free_rows = np.array([i for i in range(rows) if i not in taken_rows], dtype=np.int64)
    free_cols = np.array([j for j in range(cols) if j not in taken_cols], dtype=np.int64)
    return matches, free_rows, free_cols


class HandTracker:
    """Multi-hand tracker. Call `update()` once per frame, even with no detections."""

    def __init__(self, cfg: TrackerConfig | None = None):
        self.cfg = cfg or TrackerConfig()
        # scipy.optimize takes ~0.3 s to import: pay it here, not in the first frame that
        # needs a Hungarian match (see min_cost_assignment).
        import scipy.optimize  # noqa: F401

        _warm_up_kernels()  # compile / load the numba kernels now, not in the first frame

        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new video / stream)."""
        self.tracks: list[Track] = []  # all not-removed tracks, any state; row i of the arrays below
        self.frame_count = 0
        self._next_id = 1
        # Kalman steps not yet applied to _means / _covs (see _sync): per frame a predict
        # entry (rows of lost tracks) and, when tracks were matched, an update entry
        # (rows, boxes [M, 4]).
        self._kalman_log: list[tuple] = []
        self._lost: list[Track] = []  # tracks lost after the last frame (their predict differs)
        # Per-track state, one row per entry of self.tracks (structure of arrays: the
        # Kalman step and the keypoint filter run once per frame for all tracks).
        self._means = np.zeros((0, kalman.STATE_DIM))  # [T, 8]
        self._covs = np.zeros((0, kalman.STATE_DIM, kalman.STATE_DIM))  # [T, 8, 8]
        self._last_xyxy = np.zeros((0, 4))  # [T, 4]
        self._keypoints = np.zeros((0, NUM_KEYPOINTS, 3))  # [T, 21, 3]
        self._smoothed = np.zeros((0, NUM_KEYPOINTS, 3))  # [T, 21, 3]
        self._kp_velocity = np.zeros((0, NUM_KEYPOINTS, 2))  # [T, 21, 2]
        self._kp_time = np.zeros(0)  # [T] seconds of the last keypoint sample

    # ------------------------------------------------------------------ queries
    def confirmed_tracks(self) -> list[Track]:
        """Confirmed tracks matched in the current frame: the hands the pipeline can follow
        from their landmarks in the next frame without running the detector."""
        return [t for t in self.tracks if t.state == TrackState.CONFIRMED and t.time_since_update == 0]

    def active_tracks(self) -> list[Track]:
        """Confirmed and lost tracks (lost ones may still come back within max_age)."""
        return [t for t in self.tracks if t.state in (TrackState.CONFIRMED, TrackState.LOST)]

    # ------------------------------------------------------------------ update
    def update(
        self,
        results: HandResults,
        timestamp: float | None = None,
        gesture_probs: np.ndarray | None = None,
        track_hints: np.ndarray | None = None,
    ) -> HandResults:
        """Advance one frame. Call it once per frame, even with no detections.

        results:       this frame's hands (pixels); not modified.
        timestamp:     seconds, for keypoint smoothing; default frame_count / cfg.fps.
        gesture_probs: optional [N, G] class probabilities (better gesture smoothing than
                       the top-1 `gesture` / `gesture_score`).
        track_hints:   optional [N] track ids (-1 = none): the track a hand is known to
                       continue (tracking mode: its crop came from that track's landmarks
                       of the last frame, MediaPipe's identity by ROI). Such a hand goes to
                       that track, if it is still confirmed or lost, without IoU matching;
                       the other hands are matched as usual.
        Returns a new HandResults, same hands in the same order, with `track_id` set for
        hands on confirmed tracks (-1 otherwise, unless cfg.output_tentative), and, for
        tracked hands, smoothed keypoints, gesture and handedness when enabled.
        """
        cfg = self.cfg
        if gesture_probs is not None:
            gesture_probs = np.asarray(gesture_probs, dtype=np.float64)
            if gesture_probs.shape[0] != len(results):
                raise ValueError(f"gesture_probs has {gesture_probs.shape[0]} rows for {len(results)} hands")
        if track_hints is not None and len(track_hints) != len(results):
            raise ValueError(f"track_hints has {len(track_hints)} entries for {len(results)} hands")
        self.frame_count += 1
        now = self.frame_count / cfg.fps if timestamp is None else float(timestamp)

        if self.tracks:
            # The Kalman predict of every track, logged, not run (see _sync).
            self._kalman_log.append((self._lost,))
        hinted_rows, hinted_dets = self._match_hints(track_hints) if track_hints is not None else ([], [])
        matched_rows, matched_dets, new_dets = self._associate(results, hinted_rows, hinted_dets)
        matched_rows, matched_dets = hinted_rows + matched_rows, hinted_dets + matched_dets
        if matched_rows:
            # Row order lets the per-track arrays be indexed by a slice in the usual case
            # where every track was matched (see _rows).
            matched_rows, matched_dets = (list(x) for x in zip(*sorted(zip(matched_rows, matched_dets))))
        self._update_matched(results, matched_rows, matched_dets)
        removed = self._age_unmatched()
        first_new_row = len(self.tracks)
        self._start_tracks(results, new_dets)
        rows = matched_rows + list(range(first_new_row, len(self.tracks)))
        dets = matched_dets + new_dets
        out = self._output(results, rows, dets, now, gesture_probs)
        if removed:
            self._drop_removed()
        if len(self._kalman_log) > 2 * KALMAN_LOG_FRAMES:
            self._sync()
        return out

    # ------------------------------------------------------------------ steps
    def _sync(self) -> None:
        """Apply the logged Kalman steps to the per-track arrays, in frame order.

        The Kalman state is needed only to match detections that no ROI hint places (and by
        whoever reads a track's `mean`, `cov` or `xyxy`). In tracking mode most frames have
        none, so the steps wait in a log and run here, back to back, when they are needed or
        the log holds KALMAN_LOG_FRAMES frames: one cold pass through the filter's code for
        many frames instead of one per frame (after the crop model, whatever runs first pays
        for bringing its code back into the CPU caches). The steps are the compiled
        `kalman.predict` / `kalman.update` (kernels.py), in frame order, so the result is that
        of stepping every frame. Rows stay valid while the log is kept: tracks are added and
        dropped only after a sync.
        """
        if not self._kalman_log:
            return
        log, self._kalman_log = self._kalman_log, []
        _, process_var, measure_var = kalman._weights(self.cfg.kalman_std_position, self.cfg.kalman_std_velocity)
        means, covs = self._means, self._covs
        for entry in log:
            if len(entry) == 1:
                # Predict; ByteTrack: a lost track keeps drifting in x, y but stops growing or
                # shrinking. The lost tracks' rows are stable until this sync.
                lost = np.array([self.tracks.index(t) for t in entry[0]], dtype=np.int64)
                kalman_predict_rows(means, covs, lost, process_var, kalman._PROCESS_VAR_CONST)
            else:
                kalman_update_rows(means, covs, entry[0], entry[1], measure_var, kalman._MEASURE_VAR_CONST)

    def _match_hints(self, track_hints: np.ndarray) -> tuple[list[int], list[int]]:
        """(track rows, hand indices) of the hands whose hinted track is confirmed or lost."""
        row_of = {t.track_id: i for i, t in enumerate(self.tracks)
                  if t.state in (TrackState.CONFIRMED, TrackState.LOST)}
        rows: list[int] = []
        dets: list[int] = []
        for det, track_id in enumerate(np.asarray(track_hints).tolist()):
            row = row_of.pop(track_id, None)  # pop: one hand per track
            if row is not None:
                rows.append(row)
                dets.append(det)
        return rows, dets

    def _associate(self, results: HandResults, taken_rows: list[int] = (),
                   taken_dets: list[int] = ()) -> tuple[list[int], list[int], list[int]]:
        """Match this frame's detections to tracks (see the module docstring's steps),
        leaving out tracks and detections already paired (`taken_*`, from hints).
        Returns (track rows, their detection indices, detections that start new tracks)."""
        cfg = self.cfg
        scores = results.score
        if len(taken_dets) == len(scores):
            return [], [], []  # every hand continues a known track
        free = np.ones(len(scores), dtype=bool)
        free[list(taken_dets)] = False
        det_xyxy = results.xyxy.astype(np.float64)  # [N, 4]
        high = np.flatnonzero((scores >= cfg.high_score_threshold) & free)
        if not self.tracks:
            return [], [], high.tolist()
        low = np.flatnonzero((scores >= cfg.low_score_threshold) & (scores < cfg.high_score_threshold) & free)
        taken = set(taken_rows)
        pool = np.array([i for i, t in enumerate(self.tracks) if t.state != TrackState.TENTATIVE and i not in taken],
                        dtype=np.int64)
        tentative = np.array([i for i, t in enumerate(self.tracks) if t.state == TrackState.TENTATIVE],
                             dtype=np.int64)
        # One IoU matrix of every (predicted track, detection) pair serves all passes.
        self._sync()
        iou = iou_matrix(kalman.xyah_to_xyxy(self._means), det_xyxy)  # [T, N]
        rows: list[int] = []
        dets: list[int] = []

        def take(track_rows: np.ndarray, det_idx: np.ndarray, m: np.ndarray) -> None:
            rows.extend(track_rows[m[:, 0]].tolist())
            dets.extend(det_idx[m[:, 1]].tolist())

        # 1. High-score detections vs confirmed and lost tracks.
        m, um, um_high = linear_assignment(iou[pool][:, high], cfg.track_iou_threshold)
        take(pool, high, m)
        leftover, high = pool[um], high[um_high]

        # 2. Low-score detections vs the confirmed and lost tracks still unmatched. Unlike
        # ByteTrack (pedestrians), lost tracks take part too: a hand that was missed for a
        # frame is often the same hand now half-occluded, and at IoU >= 0.5 with its
        # prediction a false detection is unlikely (measured on benchmarks/tracking.py's
        # noisy ground truth: IDF1 0.74 -> 0.80, id switches 0.33 -> 0.19 per 100).
        if len(low) and len(leftover):
            m, um, um_low = linear_assignment(iou[leftover][:, low], cfg.low_score_iou_threshold)
            take(leftover, low, m)
            leftover, low = leftover[um], low[um_low]

        # 3a. Observation-centric recovery (OC-SORT): a hand that stopped or turned back
        # (waving) is far from where constant velocity put it, but still near where it was
        # last seen, so try the last observed box of the tracks still unmatched.
        if cfg.observation_recovery and len(leftover) and len(high):
            m, um, um_high = linear_assignment(iou_matrix(self._last_xyxy[leftover], det_xyxy[high]),
                                               cfg.track_iou_threshold)
            take(leftover, high, m)
            leftover, high = leftover[um], high[um_high]

        # 3b. Centre distance for fast small hands: a hand moving half its size per frame
        # that turns or skips a detection shares little area with its prediction, but its
        # centre is still within about one hand size of it.
        if cfg.track_max_distance > 0 and len(leftover) and len(high):
            dist = self._distance_cost(leftover, det_xyxy[high])  # [L, D]
            m, _, um_high = min_cost_assignment(dist, dist <= cfg.track_max_distance)
            take(leftover, high, m)
            high = high[um_high]

        # 4. Remaining high-score detections vs tentative tracks, then remaining low-score
        # ones (a hand entering the frame is half visible and often scores low; the
        # tentative track it would confirm was started by a high-score detection).
        if len(tentative) and len(high):
            m, um, um_high = linear_assignment(iou[tentative][:, high], cfg.track_iou_threshold)
            take(tentative, high, m)
            tentative, high = tentative[um], high[um_high]
        if len(tentative) and len(low):
            m, _, _ = linear_assignment(iou[tentative][:, low], cfg.low_score_iou_threshold)
            take(tentative, low, m)
        return rows, dets, high.tolist()

    def _update_matched(self, results: HandResults, rows: list[int], dets: list[int]) -> None:
        """Kalman update of every matched track in one batched call, then the lifecycle."""
        if not rows:
            return
        idx = self._rows(rows)
        det_xyxy = results.xyxy[dets].astype(np.float64)  # [M, 4]
        self._kalman_log.append((np.array(rows, dtype=np.int64), det_xyxy))  # the Kalman update itself: _sync()
        self._last_xyxy[idx] = det_xyxy
        min_hits, now, scores = self.cfg.track_min_hits, self.frame_count, results.score.tolist()
        for row, det in zip(rows, dets):
            track = self.tracks[row]
            track.hits += 1
            track.last_hit_frame = now
            track.score = scores[det]
            if track.state == TrackState.LOST or (track.state == TrackState.TENTATIVE and track.hits >= min_hits):
                track.state = TrackState.CONFIRMED

    def _age_unmatched(self) -> bool:
        """Tentative tracks that missed die, confirmed ones become lost, old lost ones go.
        Returns whether any track was removed; keeps the lost ones for the next predict."""
        max_age, now = self.cfg.track_max_age, self.frame_count
        lost, removed = [], False
        for track in self.tracks:
            if track.last_hit_frame == now:
                continue
            if track.state == TrackState.TENTATIVE or now - track.last_hit_frame > max_age:
                track.state = TrackState.REMOVED
                removed = True
            else:
                track.state = TrackState.LOST
                lost.append(track)
        self._lost = lost
        return removed

    def _start_tracks(self, results: HandResults, dets: list[int]) -> None:
        """5. New tentative tracks from unmatched high-score detections."""
        if not dets:
            return
        cfg = self.cfg
        self._sync()  # before the arrays grow
        det_xyxy = results.xyxy[dets].astype(np.float64)  # [K, 4]
        means, covs = kalman.initiate(kalman.xyxy_to_xyah(det_xyxy), cfg.kalman_std_position,
                                      cfg.kalman_std_velocity)
        for det in dets:
            track = Track(self._next_id, self.frame_count, cfg, self)
            self._next_id += 1
            track.score = float(results.score[det])
            # Hands present when the stream starts have nothing earlier to corroborate them.
            if cfg.track_min_hits <= 1 or self.frame_count == 1:
                track.state = TrackState.CONFIRMED
            self.tracks.append(track)
        k = len(dets)
        self._means = np.concatenate([self._means, means])
        self._covs = np.concatenate([self._covs, covs])
        self._last_xyxy = np.concatenate([self._last_xyxy, det_xyxy])
        self._keypoints = np.concatenate([self._keypoints, np.zeros((k, NUM_KEYPOINTS, 3))])
        self._smoothed = np.concatenate([self._smoothed, np.zeros((k, NUM_KEYPOINTS, 3))])
        self._kp_velocity = np.concatenate([self._kp_velocity, np.zeros((k, NUM_KEYPOINTS, 2))])
        self._kp_time = np.concatenate([self._kp_time, np.zeros(k)])
        self._bind_views()

    def _drop_removed(self) -> None:
        keep = [i for i, t in enumerate(self.tracks) if t.state != TrackState.REMOVED]
        self._sync()  # its rows are about to move
        for t in self.tracks:
            if t.state == TrackState.REMOVED:
                # Detach from the shared arrays so the removed track keeps its last values.
                t._tracker, t._frame = None, self.frame_count
                t._mean, t._cov, t.last_xyxy = t._mean.copy(), t._cov.copy(), t.last_xyxy.copy()
                t._keypoints, t._smoothed, t.keypoint_velocity = (t._keypoints.copy(), t._smoothed.copy(),
                                                               t.keypoint_velocity.copy())
        self.tracks = [self.tracks[i] for i in keep]
        self._means, self._covs = self._means[keep], self._covs[keep]
        self._last_xyxy, self._keypoints, self._smoothed = (self._last_xyxy[keep], self._keypoints[keep],
                                                            self._smoothed[keep])
        self._kp_velocity, self._kp_time = self._kp_velocity[keep], self._kp_time[keep]
        self._bind_views()

    def _rows(self, rows: list[int]) -> slice | np.ndarray:
        """Index for a sorted list of track rows: a slice when it is a contiguous run
        (cheaper than fancy indexing, and the common case), else an index array."""
        if rows[-1] - rows[0] == len(rows) - 1:
            return slice(rows[0], rows[-1] + 1)
        return np.array(rows, dtype=np.intp)

    def _bind_views(self) -> None:
        """Point every track's array attributes at its row (after the arrays were rebuilt)."""
        for i, t in enumerate(self.tracks):
            t._mean, t._cov, t.last_xyxy = self._means[i], self._covs[i], self._last_xyxy[i]
            t._keypoints, t._smoothed, t.keypoint_velocity = self._keypoints[i], self._smoothed[i], self._kp_velocity[i]

    def _distance_cost(self, rows: np.ndarray, dets: np.ndarray) -> np.ndarray:
        """[T, D] centre distance in hand sizes, the smaller of the distances to the Kalman
        prediction and to the last observation; inf where the sizes differ by more than 2x."""
        det_c = (dets[:, :2] + dets[:, 2:]) / 2  # [D, 2]
        det_size = np.sqrt(np.prod(np.maximum(dets[:, 2:] - dets[:, :2], 1e-6), axis=1))  # [D]
        last = self._last_xyxy[rows]  # [T, 4]
        last_size = np.sqrt(np.prod(np.maximum(last[:, 2:] - last[:, :2], 1e-6), axis=1))  # [T]
        best = np.full((len(rows), len(dets)), np.inf)
        for c in (self._means[rows, :2], (last[:, :2] + last[:, 2:]) / 2):  # [T, 2] each
            dist = np.linalg.norm(c[:, None] - det_c[None], axis=-1) / last_size[:, None]  # [T, D]
            best = np.minimum(best, dist)
        ratio = last_size[:, None] / det_size[None]  # [T, D]
        best[(ratio > 2.0) | (ratio < 0.5)] = np.inf
        return best

    def _output(
        self,
        results: HandResults,
        rows: list[int],
        dets: list[int],
        now: float,
        gesture_probs: np.ndarray | None,
    ) -> HandResults:
        """Copy the input, fill ids, and apply the per-track smoothing.

        This runs right after the crop model in every frame, when the CPU caches hold the
        model's data, not ours: each numpy call then costs several times its warm time.
        So the per-hand values go through Python lists and each array is written once.
        """
        cfg = self.cfg
        n = len(results)
        keypoints = results.keypoints.copy()
        if not rows:
            return HandResults(xyxy=results.xyxy.copy(), score=results.score.copy(), keypoints=keypoints,
                               gesture=results.gesture.copy(), gesture_score=results.gesture_score.copy(),
                               handedness=results.handedness.copy(), track_id=np.full(n, -1, dtype=np.int64))

        track_id = [-1] * n
        gesture, gesture_score = results.gesture.tolist(), results.gesture_score.tolist()
        handedness = results.handedness.tolist()
        probs = None if gesture_probs is None else gesture_probs.tolist()
        has_kp = keypoints[:, :, 2].max(axis=1).tolist()  # [N] > 0: the hand has keypoints
        smooth_rows, smooth_dets, first_rows, first_dets = [], [], [], []
        for row, det in zip(rows, dets):
            track = self.tracks[row]
            if track.state == TrackState.CONFIRMED or cfg.output_tentative:
                track_id[det] = track.track_id
            if has_kp[det] > 0:
                if cfg.smooth_keypoints and track.has_keypoints:
                    smooth_rows.append(row)
                    smooth_dets.append(det)
                else:
                    first_rows.append(row)
                    first_dets.append(det)
                track.has_keypoints = True
            gesture[det], gesture_score[det] = track.gesture_smoother.update(
                gesture[det], gesture_score[det], None if probs is None else probs[det])
            if 0 <= handedness[det] <= 1:
                handedness[det] = track.handedness_smoother.update(handedness[det], 1.0)[0]
            else:
                handedness[det] = track.handedness_smoother.current()[0]

        if smooth_rows:
            self._smooth(results, keypoints, smooth_rows, smooth_dets, now)
        if first_rows:
            # First keypoints of a track (or smoothing off): nothing to smooth against.
            raw = results.keypoints[first_dets]  # [F, 21, 3]
            self._smoothed[first_rows] = raw
            self._keypoints[first_rows] = raw
            self._kp_velocity[first_rows] = 0.0
            self._kp_time[first_rows] = now

        return HandResults(xyxy=results.xyxy.copy(), score=results.score.copy(), keypoints=keypoints,
                           gesture=np.array(gesture, dtype=np.int64),
                           gesture_score=np.array(gesture_score, dtype=np.float32),
                           handedness=np.array(handedness, dtype=np.int64), track_id=np.array(track_id, dtype=np.int64))

    def _smooth(self, results: HandResults, keypoints: np.ndarray, rows: list[int], dets: list[int],
                now: float) -> None:
        """One One-Euro step over the matched hands that had keypoints before: writes their
        smoothed points into `keypoints` (the output) and the tracks' filter state. A
        compiled kernel (see kernels.py for why), held to `one_euro_step` by the tests."""
        cfg = self.cfg
        one_euro_rows(results.keypoints, results.xyxy, np.array(rows, dtype=np.int64), np.array(dets, dtype=np.int64),
                      now, self._kp_time, self._smoothed, self._kp_velocity, self._keypoints,
                      cfg.one_euro_min_cutoff, cfg.one_euro_beta, cfg.one_euro_d_cutoff, keypoints)
