"""Tracking quality: MOTA, IDF1 and ID switches with `motmetrics`, plus the inputs to measure them.

- `FrameBoxes`: ids + boxes of one frame (ground truth or tracker output).
- `synthetic_tracks`: cheap moving-box sequences with ground-truth ids (no images), for
  tests and for benchmarking the tracker alone.
- `gt_from_sequence`: ground truth from rendered synthetic sequences
  (`shared.data.synthetic.render_sequence` frames: `.labels`, `.track_ids`, `.image`).
- `noisy_detections`: what a decent detector would output for that ground truth: jittered
  corners, missed hands, some low scores, a few false positives.
- `run_tracker`: feed a tracker frame by frame and collect its ids.
- `evaluate_tracking`: the metrics, overall and per sequence.

motmetrics is imported inside `evaluate_tracking` only (it pulls in pandas), and its own
IoU helper is not used: it calls `np.asfarray`, gone in NumPy 2; distances come from
`shared.geometry.iou_matrix` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.geometry import iou_matrix
from shared.results import HandResults


@dataclass
class FrameBoxes:
    """Ids and boxes of one frame: ids [K] int64, xyxy [K, 4] pixels."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        if len(self.ids) != len(self.xyxy):
            raise ValueError(f"FrameBoxes: {len(self.ids)} ids for {len(self.xyxy)} boxes")

    @classmethod
    def tracked(cls, results: HandResults) -> FrameBoxes:
        """The hands of a tracker's output that have an id (track_id >= 0)."""
        keep = results.track_id >= 0
        return cls(ids=results.track_id[keep], xyxy=results.xyxy[keep])


def synthetic_tracks(
    seed: int,
    num_frames: int = 150,
    num_hands: int = 2,
    image_size: tuple[int, int] = (640, 480),
    size_range: tuple[float, float] = (60.0, 140.0),
    speed_range: tuple[float, float] = (2.0, 10.0),
    gap_rate: float = 0.01,
    max_gap: int = 3,
) -> list[FrameBoxes]:
    """Boxes of `num_hands` hands moving around a `image_size` (w, h) frame.

    Each hand drifts with a random velocity plus a little acceleration noise, bounces off
    the borders (so hands cross each other), opens and closes (its aspect ratio and size
    oscillate, as a hand's box does), and with probability `gap_rate` per frame hides for
    1..`max_gap` frames (occlusion) keeping its ground-truth id.
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    size = rng.uniform(*size_range, num_hands)  # [H]
    centre = np.stack([rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)], 1)
    angle = rng.uniform(0, 2 * np.pi, num_hands)
    speed = rng.uniform(*speed_range, num_hands)
    velocity = np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]  # [H, 2] px / frame
    phase = rng.uniform(0, 2 * np.pi, num_hands)
    period = rng.uniform(20, 60, num_hands)  # frames per open/close cycle
    hidden = np.zeros(num_hands, dtype=np.int64)  # frames left hidden

    frames = []
    for f in range(num_frames):
        velocity += rng.normal(0, 0.3, velocity.shape)
        centre += velocity
        osc = np.sin(2 * np.pi * f / period + phase)
        aspect = 0.85 + 0.2 * osc  # w / h
        h = size * (1.0 + 0.1 * osc)
        w = h * aspect
        for axis, limit, extent in ((0, width, w), (1, height, h)):
            low, high = extent / 2, limit - extent / 2
            bounce = (centre[:, axis] < low) | (centre[:, axis] > high)
            velocity[bounce, axis] *= -1
            centre[:, axis] = np.clip(centre[:, axis], low, high)
        start_gap = (hidden == 0) & (rng.random(num_hands) < gap_rate)
        hidden[start_gap] = rng.integers(1, max_gap + 1, int(start_gap.sum()))
        visible = hidden == 0
        hidden = np.maximum(hidden - 1, 0)
        xyxy = np.stack([centre[:, 0] - w / 2, centre[:, 1] - h / 2, centre[:, 0] + w / 2, centre[:, 1] + h / 2], 1)
        frames.append(FrameBoxes(ids=np.arange(1, num_hands + 1)[visible], xyxy=xyxy[visible]))
    return frames


def gt_from_sequence(sequence: Sequence[Any]) -> list[FrameBoxes]:
    """Ground truth in pixels from rendered frames with `.labels` (normalised HandLabel),
    `.track_ids` and `.image` [H, W, (C)] (`shared.data.synthetic.render_sequence`)."""
    frames = []
    for frame in sequence:
        height, width = frame.image.shape[:2]
        boxes = [label.xyxy(width, height) for label in frame.labels]
        frames.append(FrameBoxes(ids=list(frame.track_ids), xyxy=np.array(boxes).reshape(-1, 4)))
    return frames


def noisy_detections(
    gt: Sequence[FrameBoxes],
    seed: int,
    jitter: float = 0.04,
    miss_rate: float = 0.1,
    low_score_rate: float = 0.1,
    false_positives_per_frame: float = 0.05,
    image_size: tuple[int, int] | None = None,
) -> list[HandResults]:
    """Simulated detector output for ground-truth boxes.

    jitter:     std of the Gaussian noise on each box corner, as a fraction of the box size
    miss_rate:  probability that a hand is not detected in a frame
    low_score_rate: probability that a detected hand scores low (0.15..0.5: partial
                occlusion, blur), so only ByteTrack's second pass can use it
    false_positives_per_frame: mean number (Poisson) of spurious boxes, hand-sized,
                anywhere in the frame, scoring 0.3..0.8
    image_size: (w, h) for the false positives; default the extent of the ground truth
    Detections are shuffled so their order carries no id information.
    """
    rng = np.random.default_rng(seed)
    if image_size is None:
        all_boxes = np.concatenate([f.xyxy for f in gt] + [np.zeros((1, 4))])
        image_size = (float(all_boxes[:, 2].max()) or 640.0, float(all_boxes[:, 3].max()) or 480.0)
    width, height = image_size
    sizes = np.concatenate([f.xyxy[:, 2:] - f.xyxy[:, :2] for f in gt] + [np.full((1, 2), 80.0)])
    typical = np.median(sizes, axis=0)  # [2] a hand-sized box for false positives

    out = []
    for frame in gt:
        keep = rng.random(len(frame.ids)) >= miss_rate
        boxes = frame.xyxy[keep]  # [K, 4]
        wh = boxes[:, 2:] - boxes[:, :2]  # [K, 2]
        boxes = boxes + rng.normal(0, jitter, boxes.shape) * np.tile(wh, 2)
        scores = rng.uniform(0.5, 1.0, len(boxes))
        low = rng.random(len(boxes)) < low_score_rate
        scores[low] = rng.uniform(0.15, 0.5, int(low.sum()))
        num_fp = rng.poisson(false_positives_per_frame)
        if num_fp:
            fp_wh = typical * rng.uniform(0.7, 1.3, (num_fp, 1))
            fp_xy = rng.uniform(0, 1, (num_fp, 2)) * (np.array([width, height]) - fp_wh)
            boxes = np.concatenate([boxes, np.concatenate([fp_xy, fp_xy + fp_wh], 1)])
            scores = np.concatenate([scores, rng.uniform(0.3, 0.8, num_fp)])
        order = rng.permutation(len(boxes))
        out.append(HandResults(xyxy=boxes[order], score=scores[order]))
    return out


def run_tracker(tracker: Any, detections: Sequence[HandResults], reset: bool = True) -> list[FrameBoxes]:
    """Feed `tracker.update` one frame at a time; keep the hands it gave an id."""
    if reset:
        tracker.reset()
    out = []
    for dets in detections:
        out.append(FrameBoxes.tracked(tracker.update(dets)))
    return out


def evaluate_tracking(
    gt: Sequence[Sequence[FrameBoxes]],
    hyp: Sequence[Sequence[FrameBoxes]],
    iou_threshold: float = 0.5,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """CLEAR-MOT and identity metrics over one or more sequences.

    gt, hyp: per sequence, per frame `FrameBoxes` (same number of frames each).
    A tracker box counts as a hit for a ground-truth box when their IoU >= iou_threshold.
    Returns {"overall": {...}, "sequences": {name: {...}}} with mota, motp (mean IoU of
    hits), idf1, idp, idr, precision, recall, id_switches, id_switches_per_100 (per 100
    ground-truth track-frames), false_positives, misses, fragmentations, gt_track_frames,
    mostly_tracked, mostly_lost, num_gt_ids.
    """
    import motmetrics as mm

    if len(gt) != len(hyp):
        raise ValueError(f"evaluate_tracking: {len(gt)} ground-truth sequences for {len(hyp)} tracker outputs")
    names = list(names) if names is not None else [f"seq{i:03d}" for i in range(len(gt))]
    accumulators = []
    for seq_gt, seq_hyp in zip(gt, hyp, strict=True):
        if len(seq_gt) != len(seq_hyp):
            raise ValueError(f"evaluate_tracking: {len(seq_gt)} ground-truth frames for {len(seq_hyp)} tracker frames")
        acc = mm.MOTAccumulator(auto_id=True)
        for g, h in zip(seq_gt, seq_hyp, strict=True):
            iou = iou_matrix(g.xyxy, h.xyxy)  # [G, H]
            dist = np.where(iou >= iou_threshold, 1.0 - iou, np.nan)  # motmetrics: NaN = cannot match
            acc.update(g.ids.tolist(), h.ids.tolist(), dist)
        accumulators.append(acc)

    metrics = ["mota", "motp", "idf1", "idp", "idr", "precision", "recall", "num_switches", "num_false_positives",
               "num_misses", "num_fragmentations", "num_objects", "mostly_tracked", "mostly_lost",
               "num_unique_objects"]
    summary = mm.metrics.create().compute_many(accumulators, metrics=metrics, names=names, generate_overall=True)

    def row(name: str) -> dict[str, Any]:
        r = summary.loc[name]
        objects = int(r["num_objects"])
        return {
            "mota": _finite(r["mota"]),
            "motp": _finite(1.0 - r["motp"]) if objects else 0.0,  # motmetrics' motp is a mean distance
            "idf1": _finite(r["idf1"]),
            "idp": _finite(r["idp"]),
            "idr": _finite(r["idr"]),
            "precision": _finite(r["precision"]),
            "recall": _finite(r["recall"]),
            "id_switches": int(r["num_switches"]),
            "id_switches_per_100": 100.0 * int(r["num_switches"]) / max(objects, 1),
            "false_positives": int(r["num_false_positives"]),
            "misses": int(r["num_misses"]),
            "fragmentations": int(r["num_fragmentations"]),
            "gt_track_frames": objects,
            "mostly_tracked": int(r["mostly_tracked"]),
            "mostly_lost": int(r["mostly_lost"]),
            "num_gt_ids": int(r["num_unique_objects"]),
        }

    return {"overall": row("OVERALL"), "sequences": {name: row(name) for name in names}}


def _finite(value: Any) -> float:
    value = float(value)
    return value if np.isfinite(value) else 0.0
