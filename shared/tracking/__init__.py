"""Hand tracking: stateless Kalman filter, IoU/ByteTrack tracker, keypoint and gesture smoothing."""

from shared.tracking.mot_eval import evaluate_tracking, noisy_detections, run_tracker, synthetic_tracks
from shared.tracking.smoothing import GestureSmoother, OneEuroFilter, one_euro_step
from shared.tracking.tracker import HandTracker, Track, TrackerConfig, TrackState, linear_assignment

__all__ = [
    "GestureSmoother",
    "HandTracker",
    "OneEuroFilter",
    "Track",
    "TrackState",
    "TrackerConfig",
    "evaluate_tracking",
    "linear_assignment",
    "noisy_detections",
    "one_euro_step",
    "run_tracker",
    "synthetic_tracks",
]
