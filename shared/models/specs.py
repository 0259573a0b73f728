"""Input/output tensors of every exportable model, declared once.

The ONNX exporter names its tensors from these specs, the export wrappers
(`BlazeHandExport`, `BlazePalmExport`, `ClassifierExport`) return outputs in
this order, and Triton's `config.pbtxt` files are generated from them. Shapes
leave out the batch axis. Every model takes NCHW float RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.hand import NUM_GESTURES, NUM_KEYPOINTS
from shared.tensors import TensorSpec

INPUT_NAME = "image"


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def img_size(self) -> int:
        return self.inputs[0].shape[-1]


def image_input(img_size: int, doc: str) -> TensorSpec:
    return TensorSpec(INPUT_NAME, "float32", (3, img_size, img_size), doc)


def blazehand_spec(model_type: str = "blazehand_full", img_size: int = 224,
                   num_gestures: int = NUM_GESTURES) -> ModelSpec:
    return ModelSpec(model_type, (image_input(img_size, "upright hand crop, RGB in [0, 1]"),), (
        TensorSpec("landmarks", "float32", (NUM_KEYPOINTS, 3), "x, y in crop pixels of the input, z same scale"),
        TensorSpec("world_landmarks", "float32", (NUM_KEYPOINTS, 3), "metres, origin near the hand centre"),
        TensorSpec("presence", "float32", (1,), "probability that the crop holds a hand"),
        TensorSpec("handedness", "float32", (1,), "MediaPipe's score; > 0.5 = right hand on an unmirrored image"),
        TensorSpec("gesture_probs", "float32", (num_gestures,), "softmax over shared.hand.GESTURES"),
    ))


def blazepalm_spec(model_type: str = "blazepalm_full", img_size: int = 192, num_anchors: int = 2016,
                   num_keypoints: int = 7) -> ModelSpec:
    return ModelSpec(model_type, (image_input(img_size, "letterboxed image, RGB in [0, 1]"),), (
        TensorSpec("boxes", "float32", (num_anchors, 4), "xyxy per anchor, normalised to the input"),
        TensorSpec("keypoints", "float32", (num_anchors, num_keypoints, 2), "palm keypoints, normalised"),
        TensorSpec("scores", "float32", (num_anchors,), "sigmoid palm score; NMS is done outside the graph"),
    ))


def classifier_spec(model_type: str = "timm:mobilenetv3_small_100", img_size: int = 224,
                    num_classes: int = NUM_GESTURES) -> ModelSpec:
    return ModelSpec(model_type, (image_input(img_size, "hand crop, RGB in [0, 1]"),), (
        TensorSpec("gesture_probs", "float32", (num_classes,), "softmax over the classes"),
    ))


def spec_for(model_type: str, model: object | None = None, img_size: int | None = None) -> ModelSpec:
    """The spec of a registered model type; class counts and sizes read from `model` when given."""
    if model_type.startswith("blazehand"):
        return blazehand_spec(model_type, img_size or getattr(model, "img_size", 224),
                              getattr(model, "num_gestures", NUM_GESTURES))
    if model_type.startswith("blazepalm"):
        anchors = getattr(model, "anchors", None)
        return blazepalm_spec(model_type, img_size or getattr(model, "img_size", 192),
                              int(anchors.shape[0]) if anchors is not None else 2016)
    if model_type.startswith("timm:"):
        return classifier_spec(model_type, img_size or getattr(model, "img_size", 224),
                               getattr(model, "num_classes", NUM_GESTURES))
    if model_type.startswith("gmae_classifier"):  # G-MAE's fine-tuned classifier (shared.models.gmae)
        cfg = getattr(model, "cfg", None)
        return classifier_spec(model_type, img_size or (cfg.encoder.img_size if cfg else 224),
                               cfg.num_classes if cfg else NUM_GESTURES)
    raise KeyError(f"no tensor spec for model type {model_type!r}")


# --------------------------------------------------------------------------- ONNX files
def onnx_io(path: Path, dynamic_batch: bool = True) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """Inputs and outputs of an ONNX file (batch axis dropped) and its metadata; the batch must be
    dynamic (Triton's) unless `dynamic_batch` is False (a file run in process)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc}); re-export it") from None
    init = {t.name for t in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        if not dims or (dynamic_batch and dims[0] != -1):
            raise UserError(f"{path}: tensor {value.name!r} has a fixed batch axis {dims[:1]}; Triton batches "
                            "requests, so export with a dynamic batch (components.export onnx --dynamic_batch)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        return TensorSpec(value.name, dtype, tuple(dims[1:]))

    inputs = [spec(v) for v in model.graph.input if v.name not in init]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs, {p.key: p.value for p in model.metadata_props}


def check_against_spec(path: Path, expected: Any, dynamic_batch: bool = True) -> None:
    """The file's tensors must be the spec's (names and order; shapes where the file states
    them): config.pbtxt is generated from the spec, so a mismatch would only fail when the
    server loads the model. `dynamic_batch`: as `onnx_io`."""
    inputs, outputs, _ = onnx_io(path, dynamic_batch)
    got = [t.name for t in inputs + outputs]
    want = [t.name for t in (*expected.inputs, *expected.outputs)]
    if got != want:
        how = "export it with `python -m components.export onnx --dynamic_batch`" if dynamic_batch else \
            f"pass a {expected.model_type} file written by `python -m components.export onnx`, not another model's"
        raise UserError(f"{path}: tensors {got} differ from the {expected.model_type} spec {want} "
                        f"(shared/models/specs.py); {how}")
    for have, spec in zip(inputs + outputs, (*expected.inputs, *expected.outputs)):
        # The exporter's shape inference leaves some output dims symbolic (-1): compare the known ones.
        if len(have.shape) != len(spec.shape) or any(a > 0 and b > 0 and a != b for a, b in zip(have.shape,
                                                                                                spec.shape)):
            raise UserError(f"{path}: tensor {have.name!r} has shape {list(have.shape)}, the spec says "
                            f"{list(spec.shape)}; re-export it (or pass the matching --img_size)")
