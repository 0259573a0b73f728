"""What every served python model shares: bad requests, reading a request's inputs, the
model's settings, BLS calls to other served models, the detector steps, and `ServedModel`,
the base of the classes model.py wraps (shared/serving/triton_model.py).

Nothing here imports Triton: model.py hands in an `Inputs` getter per request and a BLS
function (`bls_infer(pb_utils)`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.inference.detectors import DetectorSpec, detector_kind
from shared.serving.models.tensors import TIMESTAMP
from shared.tensors import TensorSpec

MIN_IMAGE_SIDE = 16  # smaller frames are a client bug (or a padding slot's garbage), not a picture
MAX_IMAGE_SIDE = 8192  # larger frames are a client bug too: 8K is the biggest camera frame we take

Inputs = Callable[[str], "np.ndarray | None"]  # one request's input by name (None = not sent)
BlsInfer = Callable[[str, dict[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


class RequestError(ValueError):
    """A bad request. It gets its own error response; the batch and the server go on."""


# --------------------------------------------------------------------------- inputs


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


def error_message(model: str, exc: Exception) -> str:
    """The text of an error response: a RequestError as written, anything else with its type
    (the server log holds the traceback)."""
    if isinstance(exc, RequestError):
        return str(exc)
    return f"{model}: {type(exc).__name__}: {exc}"
