"""`--precision int8` in HandPipeline, components.infer and components.deploy: it runs an int8
ONNX file from `components.export onnx --precision int8` (tests/test_quantize.py runs one end to
end) on ONNX Runtime, and every other combination is one clear error. With MediaPipe's weights
it runs the shipped int8 BlazeHand (shared/weights/blazehand_full_int8, `make int8-model`).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.deploy import DeployConfig, hand_model_onnx
from components.infer import InferConfig, pipeline_config
from shared.errors import UserError
from shared.inference import backends
from shared.inference.backends import INT8_MODEL, crop_model_weights
from shared.inference.pipeline import HandPipeline, PipelineConfig

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hagrid_sample"


def test_int8_on_a_backend_without_it_is_one_error():
    with pytest.raises(UserError, match="backend openvino .* or onnxruntime"):
        HandPipeline(PipelineConfig(precision="int8", backend="torch"))
    with pytest.raises(UserError, match="components.deploy --precision int8"):
        crop_model_weights("blazehand", "mediapipe", "int8", "triton")
    with pytest.raises(UserError, match="quantize it first"):
        crop_model_weights("blazehand", "checkpoints/hand.pth", "int8", "onnxruntime")
    with pytest.raises(UserError, match="TensorRT"):
        hand_model_onnx(DeployConfig(precision="int8", backend="tensorrt"))
    with pytest.raises(UserError, match="is not one of"):
        PipelineConfig(precision="int4")


def test_int8_without_the_shipped_model_says_how_to_get_one(monkeypatch, tmp_path):
    # a copy without the shipped file (e.g. a sparse checkout): one error naming the file and the fix
    monkeypatch.setattr(backends, "INT8_MODEL", tmp_path / "missing" / "model.onnx")
    for make in (lambda: HandPipeline(PipelineConfig(precision="int8")),
                 lambda: hand_model_onnx(DeployConfig(precision="int8"))):
        with pytest.raises(UserError, match="shipped int8 BlazeHand .*missing.*make int8-model.*--precision int8"):
            make()


def test_the_shipped_int8_model_is_verified_and_runs_by_default_with_precision_int8():
    card = (INT8_MODEL.parent / "MODEL_CARD.md").read_text()
    summary = json.loads(INT8_MODEL.with_suffix(".json").read_text())
    q = summary["quantization"]
    assert summary["precision"] == "int8" and q["passed"] and summary["gesture_head_trained"] is False
    for name, m in q["tests"].items():  # the export's tolerances, on crops of other people
        assert m["mean_px"] <= 1.0 and m["p99_px"] <= 4.0 and m["presence_agreement"] == 1.0, name
        assert name in card
    for name, e in q["end_to_end"].items():
        assert abs(e["int8_accuracy"] - e["fp32_accuracy"]) <= 0.01 and e["photos_hands_differ"] == 0, name
    assert crop_model_weights("blazehand", "mediapipe", "int8", "onnxruntime") == str(INT8_MODEL)
    path, _, trained = hand_model_onnx(DeployConfig(precision="int8"))  # deploy picks it up, landmark gestures
    assert path == INT8_MODEL and trained is False


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="needs ../shared/data (real photos)")
def test_the_shipped_int8_model_gives_the_float_answers_on_real_photos():
    fp32 = HandPipeline(PipelineConfig(static=True))
    int8 = HandPipeline(PipelineConfig(static=True, precision="int8"))
    photos = sorted((SAMPLE / "images").rglob("*.jpg"))[::10][:10]
    for photo in photos:
        rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        a, b = fp32(rgb), int8(rgb)
        assert len(a) == len(b), photo
        if len(a):
            assert np.abs(a.keypoints[..., :2] - b.keypoints[..., :2]).max() < 0.05 * max(rgb.shape), photo
            assert (b.gesture != -1).all()  # the landmark gesture model ran


def test_fp32_and_a_given_int8_file_pass_through():
    assert crop_model_weights("blazehand", "mediapipe", "fp32", "torch") == "mediapipe"
    assert crop_model_weights("blazehand", "my/hand_int8.onnx", "int8", "onnxruntime") == "my/hand_int8.onnx"
    # components.infer passes the flag on to the pipeline
    assert pipeline_config(InferConfig(input_dir="photos/", precision="int8")).precision == "int8"


def test_int8_end_to_end_check_holds_gesture_accuracy_and_hands_per_photo():
    # the export's last check: the whole pipeline on labelled photos, float vs int8 crop model
    from shared.models.quantize import compare_end_to_end

    ref = {"photos": {"accuracy": 0.90, "targets": 50, "hands": [1, 2, 1]}}
    table, failed = compare_end_to_end(ref, {"photos": {"accuracy": 0.91, "targets": 50, "hands": [1, 2, 1]}})
    assert failed == "" and table["photos"]["hands_fp32"] == 4 and table["photos"]["photos_hands_differ"] == 0
    _, failed = compare_end_to_end(ref, {"photos": {"accuracy": 0.88, "targets": 50, "hands": [1, 2, 1]}})
    assert "gesture accuracy 0.880 int8 vs 0.900 fp32 on 50 labelled hands" in failed
    _, failed = compare_end_to_end(ref, {"photos": {"accuracy": 0.90, "targets": 50, "hands": [1, 1, 1]}})
    assert "differs on 1 of 3 photos" in failed
