"""The hand pipeline: detector -> ROI -> one batched crop-model call -> image pixels -> tracker.

    pipe = HandPipeline(PipelineConfig())          # BlazePalm + BlazeHand, MediaPipe's weights
    for image in frames:                           # RGB uint8 [H, W, 3]
        hands = pipe.process(image)                # shared.results.HandResults, pixels of `image`
        print(pipe.last_timing)                    # per-stage milliseconds of that frame

Per frame:
1. ROIs. In tracking mode (the default, MediaPipe's video mode) each hand kept in the
   previous frame gives this frame's ROI from its landmarks (MediaPipe's
   HandLandmarksToRect: rotation from the wrist to the middle knuckles, a square around
   the palm landmarks, scaled 2x and shifted towards the fingers), and the detector is
   skipped. It runs when fewer hands are followed than `max_hands` (a hand was lost, its
   presence dropped, or there may be a new one), and, when `detect_interval` > 0, every
   that many frames (with every slot taken, new detections then compete with the followed
   hands on presence). `static=True` is MediaPipe's static_image_mode: the detector on
   every frame, no state, no tracker. Palm ROIs and followed ROIs are then deduplicated
   as MediaPipe's AssociationNormRect does it (`associate_rois`: IoU of the unrotated
   squares > `roi_association_iou`, the later ROI wins, followed ROIs come last).
2. Crops: every ROI cut out as MediaPipe's ImageToTensor does it, bit for bit
   (`shared.geometry.warp_roi`: fixed-point bilinear, replicated border), all hands of
   the frame stacked into ONE [B, 3, S, S] batch: one crop-model call however many hands
   (MediaPipe runs its landmark model once per hand).
3. Back to pixels: landmarks through the crop's affine; hands whose presence is not above
   `min_presence` are dropped; with `duplicate_iou` >= 0 (off by default, as in
   MediaPipe) two hands whose landmark boxes overlap more are merged; at most `max_hands`
   (the most present) stay.
4. Tracker (ids, One-Euro keypoint smoothing, gesture/handedness smoothing) in tracking mode.

Static mode with the defaults gives MediaPipe Hands 0.10.21's answers (static_image_mode,
model_complexity 1, the same thresholds and max_num_hands) to within a few thousandths of
a pixel: `tests/test_mediapipe_live_parity.py`, docs/parity.md. The options that differ
from MediaPipe on purpose are named there: `palm_letterbox="area"`, `duplicate_iou`,
`detect_interval`, `smooth_keypoints` (tracking mode), `landmark_roi="keypoints"`,
`close_up_steps` (a hand that fills the frame, which MediaPipe's palm detector misses).

Timing per stage (detector / crops / crop model / post / tracker) is kept for the last
frame (`last_timing`) and summed (`timing_totals`), for the benchmark and the CLI summary.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.config import option
from shared.errors import UserError
from shared.geometry import Roi, hand_angle, iou_matrix, roi_from_keypoints, warp_roi, warp_roi_exact
from shared.hand import GESTURE_UNKNOWN, NUM_KEYPOINTS
from shared.inference.backends import CropModel, ModelRef, create_crop_model, crop_model_weights
from shared.inference.detectors import DETECTORS, Detections, Detector, create_detector
from shared.inference.gestures import TwoHandsRule, load_gesture_model
from shared.results import HandResults
from shared.tracking import HandTracker, TrackerConfig

# MediaPipe's HandLandmarksToRectCalculator uses the palm and the finger bases only: they
# move little when fingers bend, so the ROI does not breathe with every gesture.
PALM_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "triton")
MODEL_TYPES = ("blazehand", "blazehand_full", "blazehand_lite")


@dataclass
class PipelineConfig(TrackerConfig):
    """HandPipeline's settings: its tracker's (every TrackerConfig field: ids, Kalman, One-Euro
    smoothing, gesture/handedness windows, used in tracking mode) and then its own."""

    detector: str = option("blazepalm", "hand detector (shared.inference.detectors): blazepalm (MediaPipe's palm "
                                        "detector) or yolo (Ultralytics)",
                           metadata={"choices": list(DETECTORS)})
    yolo_model: str = option("", "--detector yolo: a trained Ultralytics .pt or .onnx")
    model_type: str = option("blazehand", "crop model: blazehand (= blazehand_full) or blazehand_lite",
                             metadata={"choices": list(MODEL_TYPES)})
    model_weights: str = option("mediapipe", "crop-model weights: 'mediapipe', a .pth (or .onnx/.engine for "
                                             "those backends)")
    backend: str = option("onnxruntime", "network runtime: onnxruntime (default: the same weights exported to ONNX "
                                         "once into work_dir; 2.5-3.6x faster than torch per frame on CPU), openvino "
                                         "(the same ONNX files on OpenVINO's CPU runtime: the same answers, faster on "
                                         "x86, the fastest int8), torch, tensorrt or triton",
                          metadata={"choices": list(BACKENDS)})
    precision: str = option("fp32", "crop-model precision: fp32, or int8 (--backend openvino or onnxruntime): the "
                                    "shipped int8 BlazeHand (shared/weights/blazehand_full_int8, verified on both), or "
                                    "--model_weights an int8 .onnx from `components.export onnx --precision int8`",
                            metadata={"choices": ["fp32", "int8"]})
    device: str = option("cpu", "torch/onnxruntime device: cpu, cuda or auto")
    threads: int = option(-1, "CPU threads for torch / onnxruntime / openvino: -1 = the fastest for one stream "
                              "as measured (README, Latency): 1 on onnxruntime and torch (on a 2-core machine one "
                              "stream runs as fast as on 2 with onnxruntime, within 10%, and torch's 2 threads stall "
                              "when other processes share the cores), every core on openvino (its kernels split each "
                              "network over them: 1.75-1.95x faster per network on 2 cores); 0 = the library's default "
                              "(all cores); N = N", min=-1)
    img_size: int = option(224, "crop side fed to the crop model (BlazeHand: 224)")
    max_hands: int = option(4, "at most this many hands per frame")
    expand_ratio: float = option(0.3, "YOLO box -> crop: the longer side grown by this ratio, squared")
    grayscale: bool = option(False, "convert frames to grayscale (3 equal channels) before everything")
    static: bool = option(False, "every frame independent: detector each frame, no tracking "
                                 "(MediaPipe's static_image_mode)")
    detector_score_threshold: float = option(0.5, "minimum detector score (MediaPipe's min_detection_confidence)")
    palm_onnx: str = option("", "the palm detector as an ONNX file, e.g. an int8 one from `components.export onnx "
                                "--model_type blazepalm_full --precision int8` (--backend onnxruntime or openvino); "
                                "'' = MediaPipe's palm detector")
    palm_letterbox: str = option("mediapipe", "palm-detector input: 'mediapipe' (MediaPipe's ImageToTensor, bit for "
                                              "bit: point-sampled bilinear, aliases on large photos) or 'area' (area-"
                                              "averaged resize: smoother, other palm scores and boxes on big images)",
                                 metadata={"choices": ["mediapipe", "area"]})
    min_presence: float = option(0.5, "hands whose crop-model presence is not above this are dropped (and, in "
                                      "tracking mode, detected again next frame; MediaPipe's min_tracking_confidence, "
                                      "which it applies in static mode too)")
    roi_association_iou: float = option(0.5, "two ROIs (palm or followed) whose unrotated squares overlap more than "
                                             "this are one hand: the later one stays, followed ROIs come after palm "
                                             "ones (MediaPipe's AssociationNormRect, min_similarity_threshold 0.5)")
    detect_interval: int = option(0, "tracking mode: also run the detector every N frames to pick up new hands "
                                     "when max_hands are already followed (0 = only when fewer are followed: "
                                     "MediaPipe's rule; e.g. 30 lets a new hand take a slot within a second at 30 "
                                     "fps, for one palm detection per 30 frames)")
    landmark_roi: str = option("mediapipe", "next-frame ROI from landmarks: 'mediapipe' (palm landmarks, x2, "
                                            "shifted to the fingers) or 'keypoints' (all 21, x(1+expand))",
                               metadata={"choices": ["mediapipe", "keypoints"]})
    landmark_roi_scale: float = option(2.0, "mediapipe landmark ROI: side = palm-landmark extent x this")
    landmark_roi_shift: float = option(-0.1, "mediapipe landmark ROI: shift along the hand axis, in ROI heights "
                                             "(negative = towards the fingers)")
    close_up_steps: int = option(0, "when no hand is found in a frame (tracking mode: none followed and none "
                                    "detected), look for one hand that fills the frame: the crop model on the whole "
                                    "frame (a centred square on its long side), then this many re-crops from its own "
                                    "landmarks (the landmark ROI rule of tracking mode). 0 = off, MediaPipe's "
                                    "behaviour: its palm detector misses most hands that fill the frame. 2 finds 4 of "
                                    "the 5 such hands of the real test photos (README, Gestures); it costs 1 crop-"
                                    "model call on a frame where no hand is found, 1 + steps when it finds one", min=0)
    crop_sampling: str = option("mediapipe", "hand crop: 'mediapipe' = MediaPipe's crop bit for bit (source positions "
                                             "in 1/32 px, uint8 pixels); 'exact' = the same positions unrounded, "
                                             "float pixels: continuous in the ROI, so backends whose networks differ "
                                             "by 1e-4 px (torch, ONNX Runtime) give answers that close on photos; "
                                             "not MediaPipe's crop: landmarks a median 0.03 px, on some hands up to "
                                             "1.7 px from MediaPipe's (docs/parity.md)",
                                choices=["mediapipe", "exact"])
    keypoint_roi_expand: float = option(1.0, "'keypoints' landmark ROI: side = keypoint extent x (1 + this)")
    box_pad: float = option(0.1, "output box = landmark extent grown by this fraction on each side (landmarks "
                                 "are joint centres, the hand's skin reaches beyond them)")
    gesture_model: str = option("default", "gesture from landmarks when the crop model has no trained gesture head: "
                                           "'default' (the shipped model, shared/weights/gesture_landmarks), a "
                                           "folder written by components.gesture_model, or 'none'")
    gesture_threshold: float = option(0.5, "a hand whose best gesture probability is below this gets gesture "
                                           "'unknown' (with its score), never a guess", min=0.0, max=1.0)
    two_hands_gap: float = option(0.1, "landmark gesture model: two hands whose boxes are closer than this x the "
                                       "smaller box side form one 2_hands gesture (negative = off)")
    duplicate_iou: float = option(-1.0, "after the landmarks, two hands whose landmark boxes overlap more than this "
                                        "are one hand, the more present stays (negative = off, as MediaPipe; 0.5 was "
                                        "our earlier default: no duplicate hands when two ROIs converge on one hand "
                                        "in tracking mode, but one of two overlapping hands can be lost)")
    work_dir: str = option("", "where exported ONNX / TensorRT files are cached ('' = <cache>/exports; "
                                       "cache: $HANDOPS_CACHE, the checkout's .cache or ~/.cache/handops)")
    triton_url: str = option("127.0.0.1:8001", "--backend triton: gRPC address of a Triton serving the deployed "
                                               "detector and hand_landmarks (components.deploy / components.serve)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_hands < 1:
            raise UserError(f"--max_hands must be >= 1, got {self.max_hands}")
        if self.img_size < 32:
            raise UserError(f"--img_size must be >= 32, got {self.img_size}")
        if self.expand_ratio < -0.5:
            raise UserError(f"--expand_ratio must be > -0.5, got {self.expand_ratio}")
        from shared.inference.backends import RUNNERS

        # Backends: the built-in ones plus any registered since (e.g. "triton").
        backends = tuple(dict.fromkeys(BACKENDS + tuple(RUNNERS)))
        for name, value, choices in (("detector", self.detector, DETECTORS), ("backend", self.backend, backends),
                                     ("model_type", self.model_type, MODEL_TYPES),
                                     ("landmark_roi", self.landmark_roi, ("mediapipe", "keypoints")),
                                     ("palm_letterbox", self.palm_letterbox, ("mediapipe", "area")),
                                     ("precision", self.precision, ("fp32", "int8"))):
            if value not in choices:
                raise UserError(f"--{name} {value!r} is not one of {', '.join(choices)}")

        if self.palm_onnx:
            if self.detector != "blazepalm":
                raise UserError(f"--palm_onnx is the blazepalm detector's file; --detector {self.detector} does not "
                                "use it")
            if self.backend not in ("onnxruntime", "openvino"):
                raise UserError(f"--palm_onnx {self.palm_onnx}: an ONNX palm detector runs on --backend onnxruntime or "
                                f"openvino, not {self.backend}")
            if not Path(self.palm_onnx).is_file():
                raise UserError(f"--palm_onnx {self.palm_onnx}: no such file (leave it empty for MediaPipe's palm "
                                "detector)")

    def runtime_threads(self) -> int:
        """`threads` for the runtimes: -1 resolved for the backend (openvino: 0, every core; else 1)."""
        if self.threads >= 0:
            return self.threads
        return 0 if self.backend == "openvino" else 1

    def tracker_config(self) -> TrackerConfig:
        """The tracker's part of these settings."""
        return TrackerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrackerConfig)})


@dataclass
class FrameTiming:
    """Milliseconds per stage for one frame (batched frames share their batch's time evenly)."""

    detector: float = 0.0  # ROIs: from the last landmarks, plus the detector (letterbox, network, NMS) when it ran
    crops: float = 0.0  # ROI warps into one float batch
    crop_model: float = 0.0  # the one batched landmark/gesture call
    post: float = 0.0  # landmarks to pixels, presence filter, duplicates
    tracker: float = 0.0  # ids, Kalman, smoothing
    total: float = 0.0
    detector_ran: bool = False
    hands: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


STAGES = ("detector", "crops", "crop_model", "post", "tracker", "total")


# --------------------------------------------------------------------------- pure geometry


def roi_from_landmarks(keypoints: np.ndarray, scale: float = 2.0, shift_y: float = -0.1) -> Roi:
    """MediaPipe's next-frame hand ROI from 21 landmarks ([21, 2+] pixels).

    Rotation: wrist -> the mean of the middle knuckle and the index/ring knuckles' midpoint
    points up. Extent: the palm landmarks in that rotated frame. Then the rectangle is
    shifted by `shift_y` of its height along the hand axis, squared on its long side and
    scaled (HandLandmarksToRectCalculator + RectTransformationCalculator: 2.0, -0.1).
    """
    kp = np.asarray(keypoints, dtype=np.float64)[:, :2]
    target = ((kp[5] + kp[13]) / 2 + kp[9]) / 2
    angle = hand_angle(kp[0], target)
    c, s = math.cos(angle), math.sin(angle)
    # Into the upright hand frame (the inverse of Roi.corners' rotation), extents there.
    local = kp[list(PALM_LANDMARKS)] @ np.array([[c, -s], [s, c]]).T
    lo, hi = local.min(0), local.max(0)
    width, height = hi - lo
    centre = ((lo + hi) / 2) @ np.array([[c, s], [-s, c]]).T
    # The hand's "down" axis on screen is (sin, cos); a negative shift moves towards the fingers.
    centre = centre + shift_y * height * np.array([s, c])
    return Roi(float(centre[0]), float(centre[1]), max(float(max(width, height)) * scale, 1.0), angle)


def crops_batch(image: np.ndarray, rois: list[Roi], size: int, sampling: str = "mediapipe"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Upright crops [B, 3, S, S] float32 in [0, 1] and their crop->image affines [B, 2, 3].

    `sampling` "mediapipe": MediaPipe's hand crop (ImageToTensorCalculator on CPU, border
    replicated), bit for bit and the same with any OpenCV/NumPy version
    (`shared.geometry.warp_roi`); "exact": its positions unrounded (`warp_roi_exact`)."""
    exact = sampling == "exact"
    batch = np.empty((len(rois), size, size, 3), dtype=np.float32 if exact else np.uint8)
    inverse = np.empty((len(rois), 2, 3), dtype=np.float64)
    for i, roi in enumerate(rois):
        batch[i], inverse[i] = (warp_roi_exact if exact else warp_roi)(image, roi, size, border="replicate")
    x = np.multiply(batch.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), dtype=np.float32)  # [B, 3, S, S]
    return x, inverse


def associate_rois(rois: list[Roi], iou_threshold: float = 0.5) -> list[int]:
    """MediaPipe's AssociationNormRectCalculator: indices of the ROIs that stay, in its order.

    Each ROI in turn removes the ones already kept whose unrotated squares (centre, side;
    the rotation is ignored) overlap it with IoU > threshold, and is appended: of two
    ROIs on one hand the LATER one stays. MediaPipe passes the palm ROIs (best palm
    first) and then the previous frame's landmark ROIs, so a followed hand keeps its
    landmark ROI and a palm ROI only adds a hand not followed yet.
    """
    if iou_threshold < 0:
        return list(range(len(rois)))
    boxes = np.array([[r.cx - r.size / 2, r.cy - r.size / 2, r.cx + r.size / 2, r.cy + r.size / 2] for r in rois],
                     np.float64).reshape(-1, 4)
    iou = iou_matrix(boxes, boxes)
    kept: list[int] = []
    for i in range(len(rois)):
        kept = [j for j in kept if iou[i, j] <= iou_threshold] + [i]
    return kept


def suppress_duplicates(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices to keep, best score first, greedy: a box overlapping a kept one is dropped."""
    order = np.argsort(-score, kind="stable")
    iou = iou_matrix(xyxy, xyxy)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Frame:
    """One frame's hands before the tracker, with what tracking mode needs next frame."""

    results: HandResults
    raw_keypoints: np.ndarray  # [N, 21, 3] unsmoothed, for the next ROIs
    gesture_probs: np.ndarray | None  # [N, G]
    origins: np.ndarray  # [N] track id whose landmarks gave the hand's ROI (-1: the detector's)


def checkpoint_roi_convention(cfg: PipelineConfig) -> PipelineConfig:
    """Follow hands with the crops the model was trained on.

    Our training checkpoints record their crop convention (`ckpt["roi"]`: upright, keypoint
    extent x (1 + expand_ratio)); MediaPipe's weights expect MediaPipe's palm-based ROI. A
    model fed crops of another scale than it learned loses accuracy, so a checkpoint's
    convention wins over the default.
    """
    path = Path(cfg.model_weights)
    if path.suffix not in (".pt", ".pth", ".ckpt") or not path.is_file():
        return cfg
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a plain state dict of another format: keep the configured ROI
        return cfg
    roi = ckpt.get("roi") if isinstance(ckpt, dict) else None
    if isinstance(roi, dict) and roi.get("source") == "keypoints" and "expand_ratio" in roi:
        return dataclasses.replace(cfg, landmark_roi="keypoints", keypoint_roi_expand=float(roi["expand_ratio"]))
    return cfg


class HandPipeline:
    """Detector + crop model + tracker for ONE stream (the tracker and the followed hands are
    per stream: use one pipeline per video, or `reset()` between sequences)."""

    def __init__(self, cfg: PipelineConfig | None = None, detector: Detector | None = None,
                 crop_model: CropModel | None = None) -> None:
        self.cfg = cfg = checkpoint_roi_convention(cfg or PipelineConfig())
        if crop_model is None:
            weights = crop_model_weights(cfg.model_type, cfg.model_weights, cfg.precision, cfg.backend)
            ref = ModelRef(cfg.model_type, weights, img_size=cfg.img_size, device=cfg.device,
                           work_dir=cfg.work_dir, threads=cfg.runtime_threads(), options={"url": cfg.triton_url})
            crop_model = create_crop_model(cfg.backend, ref)
        if detector is None:
            detector = create_detector(cfg.detector, backend=cfg.backend, yolo_model=cfg.yolo_model,
                                       expand_ratio=cfg.expand_ratio, score_threshold=cfg.detector_score_threshold,
                                       max_detections=cfg.max_hands, device=cfg.device, work_dir=cfg.work_dir,
                                       threads=cfg.runtime_threads(), options={"url": cfg.triton_url},
                                       palm_letterbox=cfg.palm_letterbox, palm_weights=cfg.palm_onnx or "mediapipe")
        self.detector = detector
        self.crop_model = crop_model
        self.tracker = HandTracker(cfg.tracker_config())
        # Gestures from landmarks when the crop model has none of its own (MediaPipe's weights).
        self.gesture_model = None if crop_model.gesture_trained else load_gesture_model(cfg.gesture_model)
        self.two_hands = TwoHandsRule(max_gap=cfg.two_hands_gap) if cfg.two_hands_gap >= 0 else None
        self.reset()

    def reset(self) -> None:
        """Start a new stream: forget followed hands and tracks (ids restart at 1)."""
        self.tracker.reset()
        self._followed: np.ndarray = np.zeros((0, NUM_KEYPOINTS, 3))  # raw keypoints of last frame's hands
        self._followed_ids: np.ndarray = np.zeros(0, np.int64)  # and their track ids (-1: none yet)
        self._since_detect = 0
        self.frames = 0
        self.detector_calls = 0
        self.timing_totals = {k: 0.0 for k in STAGES}
        self.last_timing = FrameTiming()
        self.last_timings: list[FrameTiming] = []
        self.last_gesture_probs: list[np.ndarray | None] = []

    # ------------------------------------------------------------------ public
    @classmethod
    def from_defaults(cls, **overrides: Any) -> HandPipeline:
        """`components.infer`'s defaults (MediaPipe's networks on ONNX Runtime, 1 thread, the shipped
        gesture model; tracking across frames) with any `PipelineConfig` field overridden, e.g.
        `from_defaults(static=True)` for unrelated photos."""
        return cls(PipelineConfig(**overrides))

    def __call__(self, image: np.ndarray, timestamp: float | None = None) -> HandResults:
        """Same as `process`."""
        return self.process(image, timestamp)

    def process(self, image: np.ndarray, timestamp: float | None = None) -> HandResults:
        """Hands in one RGB uint8 frame [H, W, 3], pixels of that frame (checked by process_batch / _begin)."""
        if self.cfg.static:
            return self.process_batch([image])[0]
        return process_streams([self], [image], [timestamp])[0]

    def process_batch(self, images: list[np.ndarray]) -> list[HandResults]:
        """Several frames. Static mode batches them (one detector call, one crop-model call
        for all hands of all frames); tracking mode is sequential by nature (a frame's ROIs
        come from the previous frame), so it processes them one by one."""
        if not self.cfg.static:
            return [self.process(im) for im in images]
        if not images:
            return []
        for im in images:
            _check_image(im)
        t0 = time.perf_counter()
        images = [self._prepare(im) for im in images]
        detections = self.detector(images)
        self.detector_calls += 1
        # MediaPipe: the best max_num_hands palms (ClipDetectionVectorSize), then AssociationNormRect.
        rois = []
        for d in detections:
            palms = d.rois[: self.cfg.max_hands]
            rois.append([palms[i] for i in associate_rois(palms, self.cfg.roi_association_iou)])
        t1 = time.perf_counter()
        frames, t_crops, t_model = self._landmarks(images, rois)
        t_crops, t_model = self._close_ups(images, frames, [True] * len(frames), t_crops, t_model)
        t4 = time.perf_counter()
        n = len(images)
        t_post = (t4 - t1) - t_crops - t_model
        self._record([FrameTiming(detector=(t1 - t0) * 1e3 / n, crops=t_crops * 1e3 / n, crop_model=t_model * 1e3 / n,
                                  post=t_post * 1e3 / n, tracker=0.0, total=(t4 - t0) * 1e3 / n, detector_ran=True,
                                  hands=len(f.results)) for f in frames])
        self.last_gesture_probs = [f.gesture_probs for f in frames]  # per frame [N, G] or None
        return [f.results for f in frames]

    # ------------------------------------------------------------------ stages
    def _begin(self, image: np.ndarray) -> _Step:
        """Tracking mode, before the networks: the followed hands' ROIs and whether to look for more."""
        _check_image(image)
        cfg = self.cfg
        rois = self._rois_from_followed()
        origins = [int(t) for t in self._followed_ids[: len(rois)]]
        periodic = cfg.detect_interval > 0 and self._since_detect >= cfg.detect_interval
        return _Step(self._prepare(image), rois, origins, len(rois) < cfg.max_hands or periodic)

    def _merge_detections(self, step: _Step, detections: Detections) -> None:
        self.detector_calls += 1
        self._since_detect = 0
        # A periodic look with every slot taken lets a new hand compete: all candidates
        # go through the crop model and the max_hands most present ones stay.
        limit = self.cfg.max_hands + (len(detections) if len(step.rois) >= self.cfg.max_hands else 0)
        step.rois, step.origins = self._merge(step.rois, step.origins, detections, limit)

    def _finish(self, frame: _Frame, timestamp: float | None) -> HandResults:
        """Tracking mode, after the networks: the tracker, and the hands to follow next frame."""
        self._since_detect += 1
        # A hand whose ROI came from a track's landmarks continues that track (identity by
        # ROI, as in MediaPipe); the tracker matches only the detector's hands by IoU (and
        # runs its Kalman steps only then, see HandTracker._sync).
        hands = self.tracker.update(frame.results, timestamp=timestamp, gesture_probs=frame.gesture_probs,
                                    track_hints=frame.origins)
        self._followed, self._followed_ids = frame.raw_keypoints, hands.track_id
        if frame.gesture_probs is not None:  # the smoothed gesture obeys the threshold too
            hands.gesture[(hands.gesture >= 0) & (hands.gesture_score < self.cfg.gesture_threshold)] = GESTURE_UNKNOWN
        return hands

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if self.cfg.grayscale:
            return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        return image

    def _rois_from_followed(self) -> list[Roi]:
        return [self._landmark_roi(kp) for kp in self._followed[: self.cfg.max_hands]]

    def _landmark_roi(self, keypoints: np.ndarray) -> Roi:
        """The next crop of a hand from its landmarks [21, 2+] (tracking mode's rule)."""
        cfg = self.cfg
        if cfg.landmark_roi == "mediapipe":
            return roi_from_landmarks(keypoints, cfg.landmark_roi_scale, cfg.landmark_roi_shift)
        return roi_from_keypoints(keypoints, expand_ratio=cfg.keypoint_roi_expand, rotate=True)

    def _close_ups(self, images: list[np.ndarray], frames: list[_Frame], eligible: list[bool], t_crops: float,
                   t_model: float) -> tuple[float, float]:
        """`close_up_steps`: in each eligible frame where no hand was found, one hand that fills the
        frame (the crop model on a centred square on the long side, then re-cropped from its own
        landmarks `close_up_steps` times; a re-crop that loses the hand keeps the last answer).
        Replaces those frames in place; returns the crop / crop-model seconds with these calls added."""
        steps = self.cfg.close_up_steps
        todo = [i for i, (f, ok) in enumerate(zip(frames, eligible)) if ok and steps > 0 and not len(f.results)]
        rois = [[Roi(im.shape[1] / 2, im.shape[0] / 2, float(max(im.shape[:2])), 0.0)]
                for im in (images[i] for i in todo)]
        for _ in range(1 + steps):
            if not todo:
                break
            found, dt_crops, dt_model = self._landmarks([images[i] for i in todo], rois)
            t_crops, t_model = t_crops + dt_crops, t_model + dt_model
            hit = [k for k, f in enumerate(found) if len(f.results)]
            for k in hit:
                frames[todo[k]] = found[k]
            todo = [todo[k] for k in hit]
            rois = [[self._landmark_roi(found[k].raw_keypoints[0])] for k in hit]
        return t_crops, t_model

    def _merge(self, followed: list[Roi], origins: list[int], detections: Detections, limit: int
               ) -> tuple[list[Roi], list[int]]:
        """MediaPipe's AssociationNormRect over the palm ROIs (the best `max_hands`) then the
        followed ROIs: a palm ROI only adds a hand that is not followed yet (landmark ROIs
        win), and two followed ROIs that converged on one hand become one. At most `limit`
        ROIs, followed ones first. Returns the ROIs and, per ROI, its track id (-1: palm)."""
        palms = detections.rois[: self.cfg.max_hands]
        both = list(palms) + list(followed)
        tags = [-1] * len(palms) + list(origins)
        keep = associate_rois(both, self.cfg.roi_association_iou)
        keep = [i for i in keep if i >= len(palms)] + [i for i in keep if i < len(palms)]
        keep = keep[:limit]
        return [both[i] for i in keep], [tags[i] for i in keep]

    def _landmarks(self, images: list[np.ndarray], rois: list[list[Roi]],
                   origins: list[list[int]] | None = None) -> tuple[list[_Frame], float, float]:
        """Crops of all ROIs of all images -> one crop-model call -> per-image hands.
        `origins`: per ROI, the track id it was built from (-1 or None: the detector's).
        Returns the frames and the seconds spent on crops and on the crop model."""
        cfg = self.cfg
        origin = np.asarray([o for per in (origins or [[-1] * len(r) for r in rois]) for o in per], np.int64)
        size = self.crop_model.img_size
        t0 = time.perf_counter()
        parts = [crops_batch(im, r, size, cfg.crop_sampling) for im, r in zip(images, rois) if r]
        x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3, size, size), np.float32)
        inverse = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 2, 3))
        t1 = time.perf_counter()
        out = self.crop_model(x)  # one call for every hand of every image
        t2 = time.perf_counter()

        # Landmarks crop pixels -> image pixels, all hands at once.
        lm = out["landmarks"][..., :2].astype(np.float64)  # [B, 21, 2]
        xy = np.einsum("bkj,bij->bki", lm, inverse[:, :, :2]) + inverse[:, None, :, 2]  # [B, 21, 2]
        presence = out["presence"].astype(np.float32)  # [B]
        probs = out["gesture_probs"] if self.crop_model.gesture_trained else None
        if probs is None and self.gesture_model is not None:
            probs = self.gesture_model.full_probabilities(self.gesture_model.probabilities(xy))  # [B, G]

        frames, start = [], 0
        for image, r in zip(images, rois):
            idx = np.arange(start, start + len(r))
            start += len(r)
            idx = idx[presence[idx] > cfg.min_presence]  # MediaPipe's ThresholdingCalculator: strictly above
            # Visibility column = presence: the network gives one confidence per hand, not per point.
            kp = np.concatenate([xy[idx], np.repeat(presence[idx, None, None], NUM_KEYPOINTS, 1)], axis=-1)
            boxes = _boxes_from_keypoints(xy[idx], cfg.box_pad, image.shape[1], image.shape[0])
            keep = _keep_hands(boxes, presence[idx], cfg.duplicate_iou, cfg.max_hands)
            idx, kp, boxes = idx[keep], kp[keep], boxes[keep]
            hand_probs = None if probs is None else probs[idx]
            if hand_probs is not None and len(idx):
                if self.gesture_model is not None and self.two_hands is not None:
                    hand_probs = self.two_hands.apply_probs(boxes, hand_probs)
                gesture, gesture_score = hand_probs.argmax(-1), hand_probs.max(-1)
                gesture = np.where(gesture_score >= cfg.gesture_threshold, gesture, GESTURE_UNKNOWN)
            else:
                gesture, gesture_score = np.full(len(idx), -1), np.zeros(len(idx))
            results = HandResults(xyxy=boxes, score=presence[idx], keypoints=kp, gesture=gesture,
                                  gesture_score=gesture_score,
                                  handedness=(out["handedness"][idx] > 0.5).astype(np.int64))
            frames.append(_Frame(results, kp, hand_probs, origin[idx]))
        return frames, t1 - t0, t2 - t1

    def _record(self, timings: list[FrameTiming]) -> None:
        for t in timings:
            for k in STAGES:
                self.timing_totals[k] += getattr(t, k)
        self.frames += len(timings)
        self.last_timing = timings[-1]
        self.last_timings = timings

    def mean_timing(self) -> dict[str, float]:
        """Mean milliseconds per frame and stage since construction."""
        return {k: v / max(self.frames, 1) for k, v in self.timing_totals.items()}


@dataclass
class _Step:
    """One tracking-mode frame of one stream between the stages of `process_streams`."""

    image: np.ndarray
    rois: list[Roi]
    origins: list[int]
    run_detector: bool


def process_streams(pipes: list[HandPipeline], images: list[np.ndarray],
                    timestamps: list[float | None] | None = None) -> list[HandResults]:
    """One tracking-mode frame for each of several streams, as one batch: each stream keeps its
    own followed hands and tracker, but the streams that need the palm detector share one
    detector call and every hand of every stream goes through one crop-model call.

    `pipes` must share one detector, crop model and config (e.g. the streams of one served
    model); one stream may appear only once. Each stream's answer is what its own `process`
    gives (the networks see the same inputs, in a larger batch).
    """
    if not pipes:
        return []
    lead = pipes[0]
    cfg = lead.cfg
    if len({id(p) for p in pipes}) != len(pipes):
        raise ValueError("process_streams: a stream appears twice; send its frames one call after another")
    if any(p.detector is not lead.detector or p.crop_model is not lead.crop_model or p.cfg != cfg for p in pipes):
        raise ValueError("process_streams: the streams must share one detector, crop model and config")
    if cfg.static:
        raise ValueError("process_streams is for tracking mode; static mode batches with process_batch")
    timestamps = list(timestamps) if timestamps is not None else [None] * len(pipes)
    t0 = time.perf_counter()
    steps = [p._begin(im) for p, im in zip(pipes, images)]
    looking = [i for i, st in enumerate(steps) if st.run_detector]
    if looking:
        detections = lead.detector([steps[i].image for i in looking])
        for i, det in zip(looking, detections):
            pipes[i]._merge_detections(steps[i], det)
    t1 = time.perf_counter()
    frames, t_crops, t_model = lead._landmarks([st.image for st in steps], [st.rois for st in steps],
                                               [st.origins for st in steps])
    t_crops, t_model = lead._close_ups([st.image for st in steps], frames,
                                       [st.run_detector for st in steps], t_crops, t_model)
    t4 = time.perf_counter()
    n = len(pipes)
    t_post = ((t4 - t1) - t_crops - t_model) / n
    out = []
    for pipe, step, frame, ts in zip(pipes, steps, frames, timestamps):
        t_track = time.perf_counter()
        hands = pipe._finish(frame, ts)
        t5 = time.perf_counter()
        pipe._record([FrameTiming(detector=(t1 - t0) * 1e3 / n, crops=t_crops * 1e3 / n,
                                  crop_model=t_model * 1e3 / n, post=t_post * 1e3, tracker=(t5 - t_track) * 1e3,
                                  total=((t4 - t0) / n + t5 - t_track) * 1e3, detector_ran=step.run_detector,
                                  hands=len(hands))])
        out.append(hands)
    return out


def make_detector(cfg: PipelineConfig | None = None) -> Callable[[np.ndarray], HandResults]:
    """Frame -> hands without the tracker, for tools that run their own (e.g.
    `python -m benchmarks.tracking --detector shared.inference.pipeline:make_detector`):
    a callable taking a BGR uint8 image (OpenCV's order) and returning static-mode hands."""
    pipe = HandPipeline(replace(cfg or PipelineConfig(), static=True))

    def detect(image_bgr: np.ndarray) -> HandResults:
        return pipe.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))

    return detect


def _keep_hands(boxes: np.ndarray, presence: np.ndarray, duplicate_iou: float, max_hands: int) -> np.ndarray:
    """Which hands of one frame stay. MediaPipe (duplicate_iou < 0): all, in ROI order, the
    `max_hands` most present when there are more (tracking mode: palms added to followed
    hands). Else: most present first, duplicates (landmark boxes overlapping more than
    duplicate_iou) dropped, at most max_hands."""
    if duplicate_iou >= 0:
        return suppress_duplicates(boxes, presence, duplicate_iou)[:max_hands]
    keep = np.arange(len(presence))
    if len(keep) > max_hands:
        keep = np.sort(np.argsort(-presence, kind="stable")[:max_hands])
    return keep


def _boxes_from_keypoints(xy: np.ndarray, pad: float, width: int, height: int) -> np.ndarray:
    """[N, 4] xyxy around [N, 21, 2] points, grown by `pad` x extent on each side, clipped
    to the image (a hand at the border: its box stays on the image, its points may not)."""
    if len(xy) == 0:
        return np.zeros((0, 4), np.float32)
    lo, hi = xy.min(1), xy.max(1)  # [N, 2]
    margin = (hi - lo) * pad
    boxes = np.concatenate([lo - margin, hi + margin], axis=1)  # [N, 4]
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got "
                         f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")


__all__ = ["FrameTiming", "HandPipeline", "PipelineConfig", "STAGES", "associate_rois", "crops_batch",
           "make_detector", "roi_from_landmarks", "suppress_duplicates"]
