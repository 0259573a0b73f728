"""Input/output tensors of every exportable model, declared once.

The ONNX exporter names its tensors from these specs, the export wrappers
(`BlazeHandExport`, `BlazePalmExport`, `ClassifierExport`) return outputs in
this order, and Triton's `config.pbtxt` files are generated from them. Shapes
leave out the batch axis. Every model takes NCHW float RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

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
    raise KeyError(f"no tensor spec for model type {model_type!r}")
