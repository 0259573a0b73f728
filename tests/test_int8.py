"""`--precision int8` in HandPipeline, components.infer and components.deploy: it runs an int8
ONNX file from `components.export onnx --precision int8` (tests/test_quantize.py runs one end to
end) on ONNX Runtime, and every other combination is one clear error. No int8 model ships yet:
asking for MediaPipe's weights in int8 says so and how to export one.
"""

from __future__ import annotations

import pytest

from components.deploy import DeployConfig, hand_model_onnx
from components.infer import InferConfig, pipeline_config
from shared.errors import UserError
from shared.inference.backends import INT8_MODEL, crop_model_weights
from shared.inference.pipeline import HandPipeline, PipelineConfig


def test_int8_on_a_backend_without_it_is_one_error():
    with pytest.raises(UserError, match="backend onnxruntime"):
        HandPipeline(PipelineConfig(precision="int8", backend="torch"))
    with pytest.raises(UserError, match="components.deploy --precision int8"):
        crop_model_weights("blazehand", "mediapipe", "int8", "triton")
    with pytest.raises(UserError, match="quantize it first"):
        crop_model_weights("blazehand", "checkpoints/hand.pth", "int8", "onnxruntime")
    with pytest.raises(UserError, match="TensorRT"):
        hand_model_onnx(DeployConfig(precision="int8", backend="tensorrt"))
    with pytest.raises(UserError, match="is not one of"):
        PipelineConfig(precision="int4")


@pytest.mark.skipif(INT8_MODEL.is_file(), reason="an int8 model ships")
def test_int8_without_a_shipped_model_says_how_to_export_one():
    for make in (lambda: HandPipeline(PipelineConfig(precision="int8")),
                 lambda: hand_model_onnx(DeployConfig(precision="int8"))):
        with pytest.raises(UserError, match="no int8 BlazeHand ships yet.*--precision int8"):
            make()


def test_fp32_and_a_given_int8_file_pass_through():
    assert crop_model_weights("blazehand", "mediapipe", "fp32", "torch") == "mediapipe"
    assert crop_model_weights("blazehand", "my/hand_int8.onnx", "int8", "onnxruntime") == "my/hand_int8.onnx"
    # components.infer passes the flag on to the pipeline
    assert pipeline_config(InferConfig(input_dir="photos/", precision="int8")).precision == "int8"
