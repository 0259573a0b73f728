"""The hand pipeline's Triton python models: their tensors and their array logic.

Every python model in the repository that `components.deploy` writes is the same small
`model.py` (shared/serving/triton_model.py) around one class of this package, named by the
`served_kind` parameter of its config.pbtxt (`SERVED_CLASSES`; `python_model_parameters`
writes it); the class does the work with numpy and the in-process code of
`shared.inference` and `shared.tracking`, so it is tested without a server and behaves
exactly like the in-process pipeline. Nothing here imports Triton: model.py hands in an
`Inputs` getter per request and a BLS function (`bls_infer(pb_utils)`).

Served models (names in `MODELS`; kind and module in brackets):

    detector              the detector network (BlazePalm, or a YOLO ONNX), dynamic batching;
                          tensorrt_plan / onnxruntime_onnx / python (`OnnxModel`: onnxruntime
                          inside the python backend) [onnx, onnx_model]
    hand_landmarks        the crop network (BlazeHand), dynamic batching, same three backends
    detector_preprocess   python: IMAGE -> the detector's input tensor + LETTERBOX
                          [preprocess, preprocess]
    detector_postprocess  python: raw detector outputs -> hands (XYXY, SCORE) and crop ROIS
                          (NMS, palm -> hand ROI, back to image pixels) [postprocess, postprocess]
    hand_detection        ensemble preprocess -> detector -> postprocess: stateless detection
                          of one image (static mode, labelling tools)
    tracker               python, sequence batching: HandTracker per stream for clients that
                          bring their own detections (boxes + keypoints in, track ids out)
                          [tracker, tracker]
    hand_pipeline         python, sequence batching, BLS: the whole tracking-mode pipeline of
                          one video stream per correlation id; clients call this one
                          [hand_pipeline, hand_pipeline: why it is not an ensemble]
    hands                 python, stateless: the static-mode pipeline, one image in, its hands
                          out [hands, hands]

The rest: `tensors` (model names, TensorSpecs, HandResults <-> tensors), `base` (bad
requests, input helpers, settings, BLS, the detector steps, `ServedModel`), `local` (the
in-process twin of a deployment). Each python model's version folder holds its settings
(`params.json`, see PARAMS_FILE).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.serving.models.base import (
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    PARAMS_FILE,
    BlsInfer,
    BlsRunner,
    Inputs,
    RequestError,
    ServedModel,
    bls_infer,
    check_image,
    detector_postprocess,
    detector_preprocess,
    error_message,
    io_names,
    make_detector,
    model_parameters,
    optional_timestamp,
    require,
    single_item,
)
from shared.serving.models.hand_pipeline import HandPipelineModel
from shared.serving.models.hands import HandsModel
from shared.serving.models.local import local_pipeline, served_parameters
from shared.serving.models.onnx_model import OnnxModel
from shared.serving.models.postprocess import PostprocessModel
from shared.serving.models.preprocess import PreprocessModel
from shared.serving.models.tensors import (
    DETECTION_OUTPUTS,
    DETECTION_PREFIX,
    GESTURE_PROBS,
    HAND_TENSORS,
    HANDS_GESTURE_PROBS,
    HANDS_OUTPUTS,
    IMAGE,
    IMAGE_HW,
    LETTERBOX,
    LOCAL_FILES,
    MODEL_DETECTION,
    MODEL_DETECTOR,
    MODEL_HANDS,
    MODEL_LANDMARKS,
    MODEL_PIPELINE,
    MODEL_POSTPROCESS,
    MODEL_PREPROCESS,
    MODEL_TRACKER,
    MODELS,
    PIPELINE_INPUTS,
    PIPELINE_OPTIONAL,
    PIPELINE_OUTPUTS,
    RESULT_FIELDS,
    ROIS,
    TIMESTAMP,
    TIMING,
    TIMING_STAGES,
    TRACKER_INPUTS,
    TRACKER_OPTIONAL,
    empty_hands,
    results_from_tensors,
    results_to_tensors,
    timing_tensor,
)
from shared.serving.models.tracker import TrackerModel

# Which class a python model runs: its config.pbtxt's string parameter KIND_PARAMETER, one of
# these keys (written by components.deploy through python_model_parameters; the model.py of every
# python model is the same file, shared/serving/triton_model.py).
KIND_PARAMETER = "served_kind"
SERVED_CLASSES: dict[str, type[ServedModel]] = {
    "onnx": OnnxModel,
    "preprocess": PreprocessModel,
    "postprocess": PostprocessModel,
    "tracker": TrackerModel,
    "hand_pipeline": HandPipelineModel,
    "hands": HandsModel,
}


def python_model_parameters(kind: str, payload: dict[str, Any]) -> dict[str, str]:
    """The config.pbtxt parameters of a python model: its class (`kind`, a SERVED_CLASSES key)
    and its settings (`payload`, read back by `model_parameters`)."""
    if kind not in SERVED_CLASSES:
        raise ValueError(f"unknown served model kind {kind!r}; expected one of {sorted(SERVED_CLASSES)}")
    return {"config": json.dumps(payload, sort_keys=True), KIND_PARAMETER: kind}


def load_served_model(args: dict[str, Any], model_file: str, infer: BlsInfer | None = None) -> ServedModel:
    """What model.py's initialize(args) calls: the served class named by the model config's
    KIND_PARAMETER, set up from Triton's `args` (model_config JSON) and the version directory
    of `model_file`."""
    config = json.loads(args["model_config"])
    kind = config.get("parameters", {}).get(KIND_PARAMETER, {}).get("string_value", "")
    if kind not in SERVED_CLASSES:
        raise ValueError(f"{config.get('name', 'model')}: parameter {KIND_PARAMETER} is {kind!r}, not one of "
                         f"{sorted(SERVED_CLASSES)}; redeploy with components.deploy")
    return SERVED_CLASSES[kind](config, Path(model_file).resolve().parent, infer)


__all__ = [
    # names and tensors (tensors)
    "MODEL_DETECTOR", "MODEL_LANDMARKS", "MODEL_PREPROCESS", "MODEL_POSTPROCESS", "MODEL_DETECTION", "MODEL_TRACKER",
    "MODEL_PIPELINE", "MODEL_HANDS", "MODELS", "IMAGE", "TIMESTAMP", "LETTERBOX", "IMAGE_HW", "ROIS", "GESTURE_PROBS",
    "HAND_TENSORS", "RESULT_FIELDS", "TIMING_STAGES", "TIMING", "PIPELINE_INPUTS", "PIPELINE_OUTPUTS",
    "HANDS_GESTURE_PROBS", "HANDS_OUTPUTS", "PIPELINE_OPTIONAL", "DETECTION_PREFIX", "TRACKER_INPUTS",
    "TRACKER_OPTIONAL", "DETECTION_OUTPUTS", "LOCAL_FILES", "results_to_tensors", "results_from_tensors",
    "empty_hands", "timing_tensor",
    # requests, settings, BLS, detector steps, the base class (base)
    "MIN_IMAGE_SIDE", "MAX_IMAGE_SIDE", "Inputs", "BlsInfer", "RequestError", "single_item", "require",
    "check_image", "optional_timestamp", "PARAMS_FILE", "model_parameters", "io_names", "bls_infer", "BlsRunner",
    "make_detector", "detector_preprocess", "detector_postprocess", "ServedModel", "error_message",
    # the served classes and their registry
    "OnnxModel", "PreprocessModel", "PostprocessModel", "TrackerModel", "HandPipelineModel", "HandsModel",
    "SERVED_CLASSES", "KIND_PARAMETER", "python_model_parameters", "load_served_model",
    # the in-process twin (local)
    "served_parameters", "local_pipeline",
]
