"""The served models' names and tensors (`TensorSpec`s), and one frame's hands as tensors.

components.deploy writes every config.pbtxt from these specs, the python models answer with
them and the clients (shared.serving.triton_backend, components.client) read them back, so
a tensor is named and shaped in this one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shared.hand import GESTURES, NUM_KEYPOINTS
from shared.inference.triton_client import SERVED_DETECTOR, SERVED_LANDMARKS
from shared.results import HandResults
from shared.tensors import TensorSpec

# --------------------------------------------------------------------------- names and tensors

MODEL_DETECTOR = SERVED_DETECTOR
MODEL_LANDMARKS = SERVED_LANDMARKS
MODEL_PREPROCESS = "detector_preprocess"
MODEL_POSTPROCESS = "detector_postprocess"
MODEL_DETECTION = "hand_detection"
MODEL_TRACKER = "tracker"
MODEL_PIPELINE = "hand_pipeline"
MODEL_HANDS = "hands"  # stateless: one image in, its hands out (no sequence id needed)
MODELS = (MODEL_DETECTOR, MODEL_LANDMARKS, MODEL_PREPROCESS, MODEL_POSTPROCESS, MODEL_DETECTION, MODEL_TRACKER,
          MODEL_PIPELINE, MODEL_HANDS)

IMAGE = TensorSpec("IMAGE", "uint8", (-1, -1, 3), "one RGB frame [H, W, 3]")
TIMESTAMP = TensorSpec("TIMESTAMP", "float64", (1,), "frame time in seconds; optional (default: frame index / fps)")
LETTERBOX = TensorSpec("LETTERBOX", "float32", (4,), "scale_x, scale_y, pad_x, pad_y: input = image * scale + pad")
IMAGE_HW = TensorSpec("IMAGE_HW", "int64", (2,), "height, width of IMAGE (YOLO boxes are clipped to it)")
ROIS = TensorSpec("ROIS", "float32", (-1, 4), "crop ROI per hand: centre x, centre y, side (pixels), angle (radians)")
GESTURE_PROBS = TensorSpec("GESTURE_PROBS", "float32", (-1, -1), "optional [N, G] gesture probabilities (smoothing)")

# One frame's hands (`shared.results.HandResults`), one tensor per field; the batch axis
# Triton adds is the request's single frame, so a response holds [1, N, ...] arrays.
HAND_TENSORS = (
    TensorSpec("XYXY", "float32", (-1, 4), "hand boxes, pixels of IMAGE"),
    TensorSpec("SCORE", "float32", (-1,), "presence / detection score"),
    TensorSpec("KEYPOINTS", "float32", (-1, NUM_KEYPOINTS, 3), "x, y in pixels + visibility"),
    TensorSpec("GESTURE", "int64", (-1,), "index into shared.hand.GESTURES; -2 = unknown (below the gesture "
               "threshold), -1 = no gesture model"),
    TensorSpec("GESTURE_SCORE", "float32", (-1,), "probability of GESTURE"),
    TensorSpec("HANDEDNESS", "int64", (-1,), "0 left, 1 right, -1 unknown"),
    TensorSpec("TRACK_ID", "int64", (-1,), "stable within a stream, -1 = not (yet) tracked"),
)
RESULT_FIELDS = {"XYXY": "xyxy", "SCORE": "score", "KEYPOINTS": "keypoints", "GESTURE": "gesture",
                 "GESTURE_SCORE": "gesture_score", "HANDEDNESS": "handedness", "TRACK_ID": "track_id"}

# = shared.inference.pipeline.STAGES (a test checks), written out to keep this import light
TIMING_STAGES = ("detector", "crops", "crop_model", "post", "tracker", "total")
TIMING = TensorSpec("TIMING", "float32", (len(TIMING_STAGES),),
                    "server-side milliseconds of this frame: detector, crops, crop_model, post, tracker, total")

PIPELINE_INPUTS = (IMAGE, TIMESTAMP)
PIPELINE_OUTPUTS = (*HAND_TENSORS, TIMING)
# hands (stateless) also answers every hand's gesture probabilities, [1, N, G] per request. Its label
# file repeats our gesture names once per hand slot, so Triton's classification extension (which
# ranks all N x G values of the request) gives "score:index:gesture" with hand = index // G.
HANDS_GESTURE_PROBS = TensorSpec("GESTURE_PROBS", "float32", (-1, len(GESTURES)),
                                 "per hand, the probability of each gesture of shared.hand.GESTURES (0 without a "
                                 "gesture model); class_count=K: the K best (hand, gesture) pairs, hand = index // G")
HANDS_OUTPUTS = (*PIPELINE_OUTPUTS, HANDS_GESTURE_PROBS)
PIPELINE_OPTIONAL = frozenset({TIMESTAMP.name})
# The tracker's inputs are a detector's hands: the same tensors, named DET_* (a Triton model's
# input and output names must differ), without TRACK_ID.
DETECTION_PREFIX = "DET_"
TRACKER_INPUTS = (*(TensorSpec(DETECTION_PREFIX + s.name, s.dtype, s.shape, s.doc) for s in HAND_TENSORS[:-1]),
                  GESTURE_PROBS, TIMESTAMP)
TRACKER_OPTIONAL = frozenset({GESTURE_PROBS.name, TIMESTAMP.name})
DETECTION_OUTPUTS = (HAND_TENSORS[0], HAND_TENSORS[1], ROIS)
# hand_pipeline with `networks: local` carries copies of the two ONNX files under these names.
LOCAL_FILES = {MODEL_DETECTOR: "detector.onnx", MODEL_LANDMARKS: "hand_landmarks.onnx"}


# --------------------------------------------------------------------------- tensors <-> HandResults


def results_to_tensors(hands: HandResults) -> dict[str, np.ndarray]:
    """One frame's hands as response tensors with the batch axis: {name: [1, N, ...]}."""
    return {spec.name: np.ascontiguousarray(getattr(hands, RESULT_FIELDS[spec.name]), dtype=spec.np_dtype)[None]
            for spec in HAND_TENSORS}


def results_from_tensors(get: Callable[[str], np.ndarray | None]) -> HandResults:
    """The inverse of `results_to_tensors` (one frame; the batch axis is dropped).
    Fields the response lacks keep HandResults' defaults (e.g. TRACK_ID of the detection model)."""
    values = {}
    for spec in HAND_TENSORS:
        value = get(spec.name)
        if value is not None:
            values[RESULT_FIELDS[spec.name]] = np.asarray(value)[0]
    return HandResults(**values)


def empty_hands() -> dict[str, np.ndarray]:
    return results_to_tensors(HandResults())


def timing_tensor(timing: Any | None) -> np.ndarray:
    """TIMING [1, stages] of one frame from its `FrameTiming` (zeros for None: a padding slot)."""
    if timing is None:
        return np.zeros((1, len(TIMING_STAGES)), np.float32)
    t = timing.as_dict()
    return np.array([[t[k] for k in TIMING_STAGES]], np.float32)
