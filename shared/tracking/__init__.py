"""Hand tracking: stateless Kalman filter, IoU/ByteTrack tracker, keypoint and gesture smoothing,
and the MOT metrics (MOTA, IDF1, ID switches) that measure it."""

from shared.tracking import kalman
from shared.tracking.mot_eval import (
    FrameBoxes,
    evaluate_tracking,
    gt_from_sequence,
    noisy_detections,
    run_tracker,
    synthetic_tracks,
)
from shared.tracking.smoothing import GestureSmoother, OneEuroFilter, one_euro_step
from shared.tracking.tracker import (
    HandTracker,
    Track,
    TrackerConfig,
    TrackState,
    linear_assignment,
    min_cost_assignment,
)

__all__ = [
    "FrameBoxes",
    "GestureSmoother",
    "HandTracker",
    "OneEuroFilter",
    "Track",
    "TrackState",
    "TrackerConfig",
    "evaluate_tracking",
    "gt_from_sequence",
    "kalman",
    "linear_assignment",
    "min_cost_assignment",
    "noisy_detections",
    "one_euro_step",
    "run_tracker",
    "synthetic_tracks",
]
