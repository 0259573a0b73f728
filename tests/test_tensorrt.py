"""TensorRT export (shared/models/tensorrt/).

Everything that needs no GPU runs everywhere: the calibration inputs (real images through
the models' own preprocessing), the accuracy comparison, profile checks, the one-line
message where TensorRT does not import. Engine builds (FP16, INT8 with a reused
calibration cache) run only where `tensorrt` and a CUDA buffer library import (`gpu` mark).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.errors import UserError
from shared.inference.real_crops import real_crops
from shared.models import tensorrt as trt_export
from shared.models.tensorrt import engines as trt_engines

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA = PROJECT_ROOT.parent / "shared" / "data"
needs_tensorrt = pytest.mark.skipif(not trt_export.tensorrt_available(),
                                    reason=f"TensorRT: {trt_export.tensorrt_import_error()}")


def _fake_onnx(path: Path, outputs: list[str], batch: int | None = None, side: int = 224) -> Path:
    """A graph with the input/output names of a spec (Identity ops): enough for model_family."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch or "batch", 3, side, side])
    ys = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    nodes = [helper.make_node("Identity", ["image"], [n]) for n in outputs]
    path.write_bytes(helper.make_model(helper.make_graph(nodes, "g", [x], ys)).SerializeToString())
    return path


@pytest.mark.parametrize("outputs, family", [
    # BlazeHand's spec names
    (["landmarks", "world_landmarks", "presence", "handedness", "gesture_probs"], "blazehand"),
    # BlazePalm's
    (["boxes", "keypoints", "scores"], "blazepalm"),
    # a timm classifier's
    (["gesture_probs"], "classifier"),
])
def test_model_family_from_tensor_names(tmp_path, outputs, family):
    got, side, inputs, outs = trt_export.model_family(_fake_onnx(tmp_path / "m.onnx", outputs))
    assert (got, side, inputs, outs) == (family, 224, ["image"], outputs)


def test_model_family_needs_a_dynamic_batch(tmp_path):
    with pytest.raises(UserError, match="dynamic batch"):
        trt_export.model_family(_fake_onnx(tmp_path / "m.onnx", ["landmarks"], batch=1))
    with pytest.raises(UserError, match="no such file"):
        trt_export.model_family(tmp_path / "missing.onnx")


def _pose_dataset(root: Path, images: int = 3) -> int:
    """A tiny YOLO-pose dataset (images/ + labels/) of rendered hands; returns the hand count."""
    from shared.data.labels import write_labels
    from shared.data.synthetic import SyntheticConfig, render_image

    hands = 0
    for i in range(images):
        sample = render_image(seed=5, index=i, cfg=SyntheticConfig(image_size=256, min_hands=1, max_hands=2))
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i}.png"), sample.image)
        write_labels(root / "labels" / f"{i}.txt", sample.labels)
        hands += len(sample.labels)
    return hands


def test_calibration_inputs_are_hand_crops_with_keypoints(tmp_path):
    hands = _pose_dataset(tmp_path / "data")
    x, labels = trt_export.calibration_inputs(tmp_path / "data", "blazehand", 224, max_inputs=100,
                                              real_crops=real_crops)
    assert x.shape == (hands, 3, 224, 224) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05  # RGB in [0, 1], real content
    assert labels is not None and labels.shape == (hands, 21, 3)
    seen = labels[..., 2] > 0
    inside = (labels[..., :2] >= 0) & (labels[..., :2] <= 224)
    assert inside.all(-1)[seen].mean() > 0.95  # the labelled keypoints land in their crop
    x2, _ = trt_export.calibration_inputs(tmp_path / "data", "blazehand", 224, max_inputs=2, real_crops=real_crops)
    assert len(x2) == 2


def test_calibration_inputs_palm_letterbox_real_photos():
    folder = DATA / "hagrid_sample" / "images" / "palm"
    if not folder.is_dir():
        pytest.skip(f"no {folder}")
    from shared.data.labels import list_images
    from shared.models.blazepalm_post import letterbox

    x, labels = trt_export.calibration_inputs(folder, "blazepalm", 192, max_inputs=3)
    first = cv2.cvtColor(cv2.imread(str(list_images(folder)[0])), cv2.COLOR_BGR2RGB)
    want = letterbox(first, 192)[0].transpose(2, 0, 1).astype(np.float32) / 255.0  # as PalmDetector feeds it
    assert x.shape == (3, 3, 192, 192) and labels is None
    np.testing.assert_allclose(x[0], want, atol=1e-6)


def test_calibration_inputs_from_box_labels_and_bad_folders(tmp_path):
    roboflow = DATA / "roboflow_gestures_v6"
    if roboflow.is_dir():
        # boxes only (human labels): the MediaPipe teacher places the crops, as for the ONNX
        # Runtime INT8 export (shared.inference.real_crops), and gives their landmarks
        x, labels = trt_export.calibration_inputs(roboflow, "blazehand", 224, max_inputs=5, real_crops=real_crops)
        assert x.shape == (5, 3, 224, 224) and labels is not None and labels.shape == (5, 21, 3)
    with pytest.raises(UserError, match="not a folder"):
        trt_export.calibration_inputs(tmp_path / "nope", "blazehand", 224, 10, real_crops=real_crops)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no hand found"):
        trt_export.calibration_inputs(tmp_path / "empty", "blazehand", 224, 10, real_crops=real_crops)
    with pytest.raises(UserError, match="no images"):
        trt_export.calibration_inputs(tmp_path / "empty", "classifier", 224, 10)


def test_calibration_batches_fill_the_last_batch():
    x = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((5, 3, 2, 2), np.float32)
    batches = trt_engines._calibration_batches(x, 2)
    assert batches.shape == (3, 2, 3, 2, 2)
    assert batches[:, :, 0, 0, 0].tolist() == [[0, 1], [2, 3], [4, 0]]
    with pytest.raises(UserError, match="calib_batch_size"):
        trt_engines._calibration_batches(x, 0)


@pytest.mark.parametrize("profile, ok", [
    ((1, 4, 16), True),
    ((1, 1, 1), True),
    ((2, 1, 4), False),  # min > opt
    ((0, 4, 8), False),  # a batch of 0
    ((1, 8, 4), False),  # opt > max
])
def test_optimization_profile_checks(profile, ok):
    if ok:
        trt_engines.check_profile(*profile)
    else:
        with pytest.raises(UserError, match="min_batch <= --opt_batch <= --max_batch"):
            trt_engines.check_profile(*profile)


def test_accuracy_comparison_counts_what_changed():
    rng = np.random.default_rng(0)
    ref = {"landmarks": rng.uniform(0, 224, (4, 21, 3)).astype(np.float32),
           "presence": rng.random((4, 1)).astype(np.float32),
           "gesture_probs": np.eye(5, dtype=np.float32)[[0, 1, 2, 3]]}
    eng = {k: v.copy() for k, v in ref.items()}
    eng["landmarks"][0, :, 0] += 30.0  # one crop's keypoints 30 px off: > 2% of 224, > 10% of its hand size
    eng["gesture_probs"][3] = np.eye(5)[4]  # one gesture flips
    labels = ref["landmarks"].copy()
    labels[..., 2] = 2.0
    acc = trt_export.compare_outputs("blazehand", eng, ref, 224, labels)
    assert acc["pck_agreement"] == pytest.approx(0.75)
    assert acc["max_keypoint_px"] == pytest.approx(30.0, abs=1e-4)
    assert acc["gesture_agreement"] == pytest.approx(0.75)
    assert acc["pck@0.1/onnxruntime"] == 1.0 and acc["pck@0.1/change"] < 0  # the engine lost accuracy
    palm = {"boxes": np.array([[[0, 0, 1, 1], [2, 2, 3, 3]]], np.float32), "scores": np.array([[0.9, 0.8]])}
    moved = {"boxes": palm["boxes"] + [[[0, 0, 0, 0], [0.5, 0, 0.5, 0]]], "scores": np.array([[0.9, 0.3]])}
    acc = trt_export.compare_outputs("blazepalm", moved, palm, 192)
    assert acc["anchor_agreement"] == pytest.approx(0.5) and acc["mean_box_iou"] == pytest.approx(1.0)


def test_without_tensorrt_one_clear_line(tmp_path):
    if trt_export.tensorrt_available():
        pytest.skip("TensorRT imports here")
    message = trt_export.tensorrt_import_error()
    assert message and "\n" not in message and "tensorrt" in message
    cfg = trt_export.TensorRTExportConfig(onnx_path=str(_fake_onnx(tmp_path / "m.onnx", ["landmarks"])),
                                          output_path=str(tmp_path / "m.plan"), fp16=True)
    with pytest.raises(UserError, match="tensorrt"):
        trt_export.export_tensorrt(cfg)
    from components import export

    if "tensorrt" not in export.TARGETS:
        pytest.skip("components.export has no tensorrt subcommand yet")
    done = subprocess.run([sys.executable, "-m", "components.export", "tensorrt", "--onnx_path", cfg.onnx_path,
                           "--output_path", cfg.output_path, "--fp16"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "tensorrt" in done.stderr


# ---------------------------------------------------------------------------------------------
# GPU: real engines
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hand_onnx(tmp_path_factory):
    from shared.models.export import OnnxExportConfig, export_onnx_stage

    out = tmp_path_factory.mktemp("onnx") / "blazehand.onnx"
    export_onnx_stage(OnnxExportConfig(model_type="blazehand_full", weights="mediapipe", output_path=str(out),
                                       dynamic_batch=True))
    return out


@pytest.mark.gpu
@needs_tensorrt
def test_fp16_engine_agrees_with_onnxruntime(hand_onnx, tmp_path):
    hands = _pose_dataset(tmp_path / "data", images=4)
    cfg = trt_export.TensorRTExportConfig(onnx_path=str(hand_onnx), output_path=str(tmp_path / "hand_fp16.plan"),
                                          fp16=True, calib_images=str(tmp_path / "data"), min_batch=1, opt_batch=4,
                                          max_batch=8)
    result = trt_export.export_tensorrt(cfg)
    assert Path(result.engine_path).is_file() and result.precision == "fp16"
    assert result.profile["max"] == [8, 3, 224, 224] and result.accuracy["inputs"] == hands
    assert result.accuracy["pck_agreement"] >= 0.99 and result.accuracy["max_keypoint_px"] < 3.0
    runner = trt_export.EngineRunner(result.engine_path)
    out = runner(np.random.default_rng(0).random((8, 3, 224, 224), dtype=np.float32))
    assert out["landmarks"].shape == (8, 21, 3)
    with pytest.raises(ValueError, match="max batch"):
        runner(np.zeros((9, 3, 224, 224), np.float32))


@pytest.mark.gpu
@needs_tensorrt
def test_int8_calibrates_once_then_reuses_the_cache(hand_onnx, tmp_path):
    _pose_dataset(tmp_path / "data", images=6)
    cache = tmp_path / "hand.calib"
    cfg = trt_export.TensorRTExportConfig(onnx_path=str(hand_onnx), output_path=str(tmp_path / "a.plan"), int8=True,
                                          calib_images=str(tmp_path / "data"), calib_batch_size=4,
                                          calib_cache=str(cache), max_batch=8)
    first = trt_export.export_tensorrt(cfg)
    assert cache.is_file() and not first.calib_cache_reused
    assert first.accuracy["pck_agreement"] > 0.8  # INT8 moves keypoints, but not wildly
    written = cache.read_bytes()
    cfg.output_path, cfg.calib_images = str(tmp_path / "b.plan"), ""  # no images: the cache must do
    second = trt_export.export_tensorrt(cfg)
    assert second.calib_cache_reused and cache.read_bytes() == written
