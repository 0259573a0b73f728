"""The hand pipeline's Triton python models: their tensors and their array logic.

Every python model in the repository that `components.deploy` writes is the same small
`model.py` (shared.serving.model_templates) around one class of this module; the class
does the work with numpy and the in-process code of `shared.inference` and
`shared.tracking`, so it is tested without a server and behaves exactly like the
in-process pipeline. Nothing here imports Triton: model.py hands in an `Inputs` getter
per request and a BLS function (`bls_infer(pb_utils)`).

Served models (names in `MODELS`):

    detector              the detector network (BlazePalm, or a YOLO ONNX), dynamic batching;
                          tensorrt_plan / onnxruntime_onnx / python (`OnnxModel`: onnxruntime
                          inside the python backend)
    hand_landmarks        the crop network (BlazeHand), dynamic batching, same three backends
    detector_preprocess   python: IMAGE -> the detector's input tensor + LETTERBOX
    detector_postprocess  python: raw detector outputs -> hands (XYXY, SCORE) and crop ROIS
                          (NMS, palm -> hand ROI, back to image pixels)
    hand_detection        ensemble preprocess -> detector -> postprocess: stateless detection
                          of one image (static mode, labelling tools)
    tracker               python, sequence batching: HandTracker per stream for clients that
                          bring their own detections (boxes + keypoints in, track ids out)
    hand_pipeline         python, sequence batching, BLS: the whole tracking-mode pipeline of
                          one video stream per correlation id; clients call this one

Why `hand_pipeline` is a python model and not an ensemble: an ensemble is a fixed graph
of whole-tensor steps, but the pipeline's middle is data dependent. Its ROIs come either
from the detector or from the previous frame's landmarks of the same stream (the detector
is skipped while hands are followed), a frame has 0..max_hands crops that are warped out
of the image one by one, and the step after the crop model (landmarks back to pixels,
presence filter, duplicates, tracker) needs the crops' affine maps and the stream's
tracker state. So `hand_pipeline` keeps one `shared.inference.pipeline.HandPipeline` per
correlation id (START resets it, END frees it, idle streams expire with Triton's
`max_sequence_idle_microseconds`): the in-process code itself, hence the same results.
Its two networks run one of two ways (`networks` in its params, deploy
--pipeline_networks):

- `bls`: BLS calls to the served `detector` and `hand_landmarks`, which are versioned and
  dynamically batched across streams, and may be TensorRT plans on a GPU Triton (the
  default for the tensorrt / onnxruntime backends);
- `local`: onnxruntime inside `hand_pipeline` on copies of the same ONNX files (the default
  for the `python` backend, where the networks are onnxruntime on the same CPU anyway and
  a BLS call is one more round trip between processes per network; benchmarks/triton.py
  measures both).

Per frame that is one gRPC request (the image in the message, or in a shared-memory
region for a client on the same host) and, with `bls`, at most two BLS calls (none to the
detector while every hand is followed). Each response also carries TIMING, the
pipeline's own milliseconds per stage, so a client can tell serving overhead from compute.

Each python model's version folder holds its settings (`params.json`, see PARAMS_FILE).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.hand import GESTURES, NUM_KEYPOINTS
from shared.inference.detectors import DetectorSpec, detector_kind
from shared.inference.triton_client import SERVED_DETECTOR, SERVED_LANDMARKS
from shared.results import HandResults
from shared.serving.sequences import SequenceControls, SequenceStore, idle_timeout_s, read_controls
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

MIN_IMAGE_SIDE = 16  # smaller frames are a client bug (or a padding slot's garbage), not a picture
MAX_IMAGE_SIDE = 8192  # larger frames are a client bug too: 8K is the biggest camera frame we take

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

Inputs = Callable[[str], "np.ndarray | None"]  # one request's input by name (None = not sent)
BlsInfer = Callable[[str, dict[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


class RequestError(ValueError):
    """A bad request. It gets its own error response; the batch and the server go on."""


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


def single_item(get: Inputs, spec: TensorSpec, model: str) -> np.ndarray | None:
    """The request's one batch item of input `spec`; None if it was not sent.

    Stateful models take one frame per request: the frames of a stream depend on each
    other, so a request carrying two would be ambiguous about their order.
    """
    value = get(spec.name)
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] != 1:
        raise RequestError(f"{model}: input {spec.name} has batch size {value.shape[0] if value.ndim else 0}; "
                           f"send exactly one frame per request")
    return value[0]


def require(get: Inputs, spec: TensorSpec, model: str) -> np.ndarray:
    value = single_item(get, spec, model)
    if value is None:
        raise RequestError(f"{model}: missing input {spec.name} ({spec.doc})")
    return value


def check_image(image: np.ndarray, model: str) -> np.ndarray:
    """A frame as the pipeline wants it (RGB uint8 [H, W, 3], contiguous), or a RequestError."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RequestError(f"{model}: IMAGE must be RGB uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise RequestError(f"{model}: IMAGE is {w}x{h} pixels; frames must be at least "
                           f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    if h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE:
        raise RequestError(f"{model}: IMAGE is {w}x{h} pixels; frames must be at most "
                           f"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} (resize it before sending)")
    return np.ascontiguousarray(image)


def optional_timestamp(get: Inputs, model: str) -> float | None:
    value = single_item(get, TIMESTAMP, model)
    if value is None:
        return None
    t = float(np.asarray(value).reshape(-1)[0])
    if not math.isfinite(t):
        raise RequestError(f"{model}: TIMESTAMP must be a finite number of seconds, got {t}")
    return t


def empty_hands() -> dict[str, np.ndarray]:
    return results_to_tensors(HandResults())


def timing_tensor(timing: Any | None) -> np.ndarray:
    """TIMING [1, stages] of one frame from its `FrameTiming` (zeros for None: a padding slot)."""
    if timing is None:
        return np.zeros((1, len(TIMING_STAGES)), np.float32)
    t = timing.as_dict()
    return np.array([[t[k] for k in TIMING_STAGES]], np.float32)


# --------------------------------------------------------------------------- model config


# Each python model's version folder carries its settings: Triton has one config.pbtxt per
# model for all its versions, so settings kept only there would change under an older version
# that is still loaded (version_policy keeps N) and could break it. config.pbtxt holds the
# newest version's copy, for people and for tools that read configs.
PARAMS_FILE = "params.json"


def model_parameters(model_config: dict[str, Any]) -> dict[str, Any]:
    """The JSON `config` parameter components.deploy writes into a model's config.pbtxt
    (`parameters { key: "config" value: { string_value: "{...}" } }`)."""
    raw = model_config.get("parameters", {}).get("config", {}).get("string_value", "{}")
    return json.loads(raw)


def io_names(model_config: dict[str, Any]) -> tuple[list[str], list[str]]:
    return [t["name"] for t in model_config.get("input", [])], [t["name"] for t in model_config.get("output", [])]


# --------------------------------------------------------------------------- BLS


def bls_infer(pb_utils: Any) -> BlsInfer:
    """`infer(model, {input: array}, output_names) -> {output: array}` over Triton's BLS
    (call from a python model's initialize, passing its `triton_python_backend_utils`).

    Outputs are requested in CPU memory, so a `tensorrt_plan` model behind BLS returns numpy
    arrays here as well. A failed call raises with the served model's own message.
    """
    extra: dict[str, Any] = {}
    if hasattr(pb_utils, "PreferredMemory"):
        extra["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    def infer(model: str, inputs: dict[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=list(output_names),
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in inputs.items()], **extra)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"BLS call to {model} failed: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names}

    return infer


class BlsRunner:
    """A `shared.inference.backends.Runner` whose network is a served model (BLS call)."""

    def __init__(self, infer: BlsInfer, model: str, input_name: str, output_names: Sequence[str],
                 max_batch: int | None) -> None:
        self.name = f"triton:{model}"
        self.infer = infer
        self.model = model
        self.input_name = input_name
        self.output_names = list(output_names)
        self.max_batch = max_batch or None

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer(self.model, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}, self.output_names)


# --------------------------------------------------------------------------- detectors


def make_detector(spec: DetectorSpec, runner: Any) -> Any:
    """The in-process detector of `spec.kind` over `runner` (a BLS runner on the server)."""
    return detector_kind(spec.kind).from_runner(runner, spec)


def detector_preprocess(image: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
    """IMAGE -> (detector input [3, S, S] float32, LETTERBOX [4]), as the detector does it in process."""
    return detector_kind(spec.kind).preprocess(image, spec)


def detector_postprocess(outputs: dict[str, np.ndarray], lb: np.ndarray, image_hw: tuple[int, int],
                         spec: DetectorSpec) -> Any:
    """One image's raw detector outputs (no batch axis) + LETTERBOX -> Detections in image pixels."""
    return detector_kind(spec.kind).postprocess(outputs, lb, image_hw, spec)


# --------------------------------------------------------------------------- the served models


class ServedModel:
    """Base of the classes model.py wraps: `execute(list of Inputs) -> list of (outputs | error)`."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        self.model_config = model_config
        self.name = model_config.get("name", type(self).__name__)
        self.model_dir = Path(model_dir)
        own = self.model_dir / PARAMS_FILE
        self.params = json.loads(own.read_text()) if own.is_file() else model_parameters(model_config)
        self.infer = infer

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        out: list[dict[str, np.ndarray] | Exception] = []
        for get in requests:
            try:
                out.append(self.execute_one(get))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                out.append(exc)
        return out

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def finalize(self) -> None:
        pass


class OnnxModel(ServedModel):
    """An ONNX network run by onnxruntime inside the python backend (the `python` deploy
    backend), through the in-process `OnnxRunner` (same session options, same numbers).
    Requests Triton's dynamic batcher merged run as one batch per input shape."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.inference.backends import ModelRef, OnnxRunner

        path = self.model_dir / self.params.get("onnx_file", "model.onnx")
        self.runner = OnnxRunner(ModelRef(self.params.get("model_type", self.name), weights=str(path),
                                          threads=int(self.params.get("threads", 0))))
        self.input_names, self.output_names = io_names(model_config)
        if self.input_names != [self.runner.input_name]:
            raise ValueError(f"{self.name}: config inputs {self.input_names} but {path.name} takes "
                             f"[{self.runner.input_name!r}]; redeploy so config and file agree")

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        name = self.input_names[0]
        results: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, get in enumerate(requests):
            x = get(name)
            if x is None:  # Triton rejects this before the model; keep the message clear if it ever does not
                results[i] = RequestError(f"{self.name}: missing input {name}")
                continue
            x = np.asarray(x)
            if x.dtype.kind == "f" and not np.isfinite(x).all():  # the client's fault, not the model's
                results[i] = RequestError(f"{self.name}: input {name} holds NaN or infinite values")
                continue
            groups.setdefault((x.shape[1:], x.dtype.str), []).append((i, x))
        for members in groups.values():
            try:
                outs = self.runner(np.concatenate([x for _, x in members]))
            except Exception as exc:  # noqa: BLE001 - every request of the group gets the error
                for i, _ in members:
                    results[i] = exc
                continue
            start = 0
            for i, x in members:
                results[i] = {n: np.ascontiguousarray(outs[n][start:start + len(x)]) for n in self.output_names}
                start += len(x)
        return results


class PreprocessModel(ServedModel):
    """detector_preprocess: IMAGE -> the detector's input + LETTERBOX (for hand_detection)."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        self.spec = DetectorSpec.from_dict(self.params["detector"])

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        image = check_image(require(get, IMAGE, self.name), self.name)
        x, lb = detector_preprocess(image, self.spec)
        return {self.spec.input_name: x[None], LETTERBOX.name: lb[None],
                IMAGE_HW.name: np.array([image.shape[:2]], np.int64)}



class PostprocessModel(ServedModel):
    """detector_postprocess: raw detector outputs + LETTERBOX -> XYXY, SCORE, ROIS."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        self.spec = DetectorSpec.from_dict(self.params["detector"])

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        outputs = {n: require(get, TensorSpec(n, "float32", ()), self.name) for n in self.spec.output_names}
        lb = require(get, LETTERBOX, self.name)
        hw = require(get, IMAGE_HW, self.name)
        det = detector_postprocess(outputs, lb, (int(hw[0]), int(hw[1])), self.spec)
        rois = np.array([r.as_array() for r in det.rois], np.float32).reshape(-1, 4)
        return {"XYXY": det.xyxy.astype(np.float32)[None], "SCORE": det.score.astype(np.float32)[None],
                ROIS.name: rois[None]}


class TrackerModel(ServedModel):
    """tracker: one `HandTracker` per correlation id (START resets, END frees, idle expiry).

    Inputs are one frame's hands (DET_XYXY, DET_SCORE, DET_KEYPOINTS, DET_GESTURE,
    DET_GESTURE_SCORE, DET_HANDEDNESS, optional GESTURE_PROBS and TIMESTAMP); the answer is
    the same hands in the same order (XYXY, ..., TRACK_ID) with track ids and, for tracked
    hands, smoothed keypoints / gesture / handedness.
    """

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.tracking import HandTracker, TrackerConfig

        cfg = TrackerConfig(**self.params.get("tracker", {}))
        self.streams = SequenceStore(factory=lambda: HandTracker(cfg), idle_timeout_s=idle_timeout_s(model_config),
                                     clock=clock)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        self.streams.expire()
        return super().execute(requests)

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        ctl = read_controls(get)
        if not ctl.ready:  # a padding slot of the direct strategy: answer, leave the state alone
            return empty_hands()
        fields = {RESULT_FIELDS[s.name[len(DETECTION_PREFIX):]]: require(get, s, self.name)
                  for s in TRACKER_INPUTS[:len(HAND_TENSORS) - 1]}
        n = len(fields["xyxy"])
        try:
            hands = HandResults(**fields)
        except ValueError as exc:
            raise RequestError(f"{self.name}: inputs disagree on the number of hands ({n} boxes): {exc}") from None
        if not (np.isfinite(hands.xyxy).all() and np.isfinite(hands.keypoints).all()):
            raise RequestError(f"{self.name}: DET_XYXY and DET_KEYPOINTS must be finite (stream {ctl.corrid})")
        probs = single_item(get, GESTURE_PROBS, self.name)
        if probs is not None and probs.shape[0] != n:
            raise RequestError(f"{self.name}: GESTURE_PROBS has {probs.shape[0]} rows for {n} hands")
        timestamp = optional_timestamp(get, self.name)
        tracker = self.streams.get(ctl.corrid, start=ctl.start)
        try:
            tracked = tracker.update(hands, timestamp=timestamp, gesture_probs=probs)
        finally:
            if ctl.end:
                self.streams.end(ctl.corrid)
        return results_to_tensors(tracked)


class HandPipelineModel(ServedModel):
    """hand_pipeline: the tracking-mode `HandPipeline` of one stream per correlation id.

    Its two networks run either through BLS calls to the served `detector` and
    `hand_landmarks` (`networks: bls`, see the module docstring) or, `networks: local`, with
    onnxruntime inside this model on copies of the same ONNX files (deploy's default for the
    `python` backend on CPU, where each BLS hop is a round trip between processes that costs
    more than it saves; the served networks stay available to other clients).
    """

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.inference.backends import CropModel, ModelRef, OnnxRunner
        from shared.inference.pipeline import PipelineConfig

        self.pipeline_cfg = PipelineConfig(**self.params.get("pipeline", {}))
        det = DetectorSpec.from_dict(self.params["detector"])
        lm = self.params["landmarks"]
        self.networks = self.params.get("networks", "bls")
        if self.networks == "local":
            threads = int(self.params.get("threads", 0))
            det_runner = OnnxRunner(ModelRef(det.kind, str(self.model_dir / LOCAL_FILES[MODEL_DETECTOR]),
                                             img_size=det.img_size, threads=threads))
            lm_runner = OnnxRunner(ModelRef("blazehand", str(self.model_dir / LOCAL_FILES[MODEL_LANDMARKS]),
                                            img_size=int(lm["img_size"]), threads=threads))
        elif self.networks == "bls":
            if infer is None:
                raise ValueError("hand_pipeline with networks=bls needs a BLS infer function")
            det_runner = BlsRunner(infer, det.model, det.input_name, det.output_names, det.max_batch)
            lm_runner = BlsRunner(infer, lm.get("model", MODEL_LANDMARKS), lm["input_name"], lm["output_names"],
                                  lm.get("max_batch"))
        else:
            raise ValueError(f"hand_pipeline: networks must be 'bls' or 'local', got {self.networks!r}")
        self.detector = make_detector(det, det_runner)
        self.crop_model = CropModel(lm_runner, img_size=int(lm["img_size"]),
                                    gesture_trained=bool(lm["gesture_trained"]))
        self.streams = SequenceStore(factory=self._new_stream, idle_timeout_s=idle_timeout_s(model_config),
                                     clock=clock)

    def _new_stream(self):
        from shared.inference.pipeline import HandPipeline

        return HandPipeline(self.pipeline_cfg, detector=self.detector, crop_model=self.crop_model)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        """The frames of all streams in this batch (Triton's sequence batcher puts at most one
        request of a stream in a batch) go through the networks together: one detector call for
        the streams that look for hands, one crop-model call for every hand of every stream
        (`process_streams`); each stream keeps its own tracker. A bad request gets its own error."""
        from shared.inference.pipeline import process_streams

        self.streams.expire()
        out: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        batch: list[tuple[int, SequenceControls, np.ndarray, float | None]] = []
        for i, get in enumerate(requests):
            try:
                ctl = read_controls(get)
                if not ctl.ready:  # a padding slot of the direct strategy
                    out[i] = {**empty_hands(), TIMING.name: timing_tensor(None)}
                    continue
                batch.append((i, ctl, check_image(require(get, IMAGE, self.name), self.name),
                              optional_timestamp(get, self.name)))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                out[i] = exc
        while batch:  # one round per frame of a stream (never two frames of one stream in one call)
            now, later, seen = [], [], set()
            for b in batch:
                (later if b[1].corrid in seen else now).append(b)
                seen.add(b[1].corrid)
            batch = later
            pipes = [self.streams.get(ctl.corrid, start=ctl.start) for _, ctl, _, _ in now]
            try:
                results = process_streams(pipes, [im for _, _, im, _ in now], [ts for _, _, _, ts in now])
            except Exception as exc:  # noqa: BLE001 - the networks failed: every request of the round hears it
                results = [exc] * len(now)
            for (i, ctl, _, _), pipe, hands in zip(now, pipes, results):
                if ctl.end:
                    self.streams.end(ctl.corrid)
                if isinstance(hands, Exception):
                    out[i] = hands
                    continue
                out[i] = {**results_to_tensors(hands), TIMING.name: timing_tensor(pipe.last_timing)}
        return out


class HandsModel(HandPipelineModel):
    """hands: the static-mode `HandPipeline` (MediaPipe's static_image_mode), stateless: every
    request is one photo on its own, no correlation id, so a generic client, a health probe or
    `curl` can ask what hands are in an image. The same networks and settings as hand_pipeline
    (deployed with `static: true`), so it answers as `components.infer` does on a photo."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(model_config, model_dir, infer, clock)
        from shared.inference.pipeline import HandPipeline

        self.pipeline = HandPipeline(self.pipeline_cfg, detector=self.detector, crop_model=self.crop_model)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        """The photos of a dynamic batch go through the static pipeline as one batch (one detector
        call, one crop-model call); a bad request gets its own error."""
        out: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        good: list[tuple[int, np.ndarray]] = []
        for i, get in enumerate(requests):
            try:
                good.append((i, check_image(require(get, IMAGE, self.name), self.name)))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                out[i] = exc
        if not good:
            return out
        try:
            results = self.pipeline.process_batch([im for _, im in good])
        except Exception as exc:  # noqa: BLE001
            for i, _ in good:
                out[i] = exc
            return out
        for (i, _), hands, timing, probs in zip(good, results, self.pipeline.last_timings,
                                                self.pipeline.last_gesture_probs):
            probs = np.zeros((len(hands), len(GESTURES)), np.float32) if probs is None else probs
            out[i] = {**results_to_tensors(hands), TIMING.name: timing_tensor(timing),
                      HANDS_GESTURE_PROBS.name: probs.astype(np.float32)[None]}
        return out


# model.py names its class with one of these keys (model_templates.python_model_source).
SERVED_CLASSES: dict[str, type[ServedModel]] = {
    "onnx": OnnxModel,
    "preprocess": PreprocessModel,
    "postprocess": PostprocessModel,
    "tracker": TrackerModel,
    "hand_pipeline": HandPipelineModel,
    "hands": HandsModel,
}


def load_served_model(kind: str, args: dict[str, Any], model_file: str, infer: BlsInfer | None = None) -> ServedModel:
    """What model.py's initialize(args) calls: the served class for `kind`, set up from
    Triton's `args` (model_config JSON) and the version directory of `model_file`."""
    if kind not in SERVED_CLASSES:
        raise ValueError(f"unknown served model kind {kind!r}; expected one of {sorted(SERVED_CLASSES)}")
    config = json.loads(args["model_config"])
    return SERVED_CLASSES[kind](config, Path(model_file).resolve().parent, infer)


def error_message(model: str, exc: Exception) -> str:
    """The text of an error response: a RequestError as written, anything else with its type
    (the server log holds the traceback)."""
    if isinstance(exc, RequestError):
        return str(exc)
    return f"{model}: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the in-process twin


def served_parameters(repo: str | Path, model: str) -> dict[str, Any]:
    """The JSON `config` parameter of a deployed model's config.pbtxt (parsed with Triton's schema)."""
    from shared.serving.triton_config import parse_pbtxt

    proto = parse_pbtxt((Path(repo) / model / "config.pbtxt").read_text())
    return json.loads(proto.parameters["config"].string_value) if "config" in proto.parameters else {}


def local_pipeline(repo: str | Path, threads: int = 0) -> Any:
    """The in-process twin of a deployed `hand_pipeline`: a `HandPipeline` with the same
    settings, running the same ONNX files (newest versions) with onnxruntime. Benchmarks and
    tests compare the server against it. Needs an onnxruntime or python deployment (a
    tensorrt one holds no ONNX file)."""
    from shared.inference.backends import CropModel, ModelRef, OnnxRunner
    from shared.inference.pipeline import HandPipeline, PipelineConfig
    from shared.serving.repository import model_versions

    repo = Path(repo)
    params = served_parameters(repo, MODEL_PIPELINE)
    det = DetectorSpec.from_dict(params["detector"])
    lm = params["landmarks"]

    def onnx_file(name: str) -> str:
        versions = model_versions(repo, name)
        path = repo / name / str(versions[-1]) / "model.onnx" if versions else repo / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX file (a tensorrt deployment has only plans)")
        return str(path)

    detector = make_detector(det, OnnxRunner(ModelRef(det.kind, onnx_file(det.model), img_size=det.img_size,
                                                      threads=threads)))
    crop = CropModel(OnnxRunner(ModelRef("blazehand", onnx_file(lm.get("model", MODEL_LANDMARKS)),
                                         img_size=int(lm["img_size"]), threads=threads)),
                     img_size=int(lm["img_size"]), gesture_trained=bool(lm["gesture_trained"]))
    return HandPipeline(PipelineConfig(**params["pipeline"]), detector=detector, crop_model=crop)
