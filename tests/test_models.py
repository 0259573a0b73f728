"""Models: shapes, gradients, ONNX round trip, weight import, palm post-processing, ROI.

Tests that need MediaPipe's weights use the cached wheel (`make weights`) and
skip when it is absent; everything else runs on random initialisation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.geometry import crop_to_image, hand_angle, warp_crop
from shared.models.blazepalm_post import (
    Letterbox,
    decode,
    letterbox,
    palm_to_roi,
    ssd_anchors,
    unletterbox,
    weighted_nms,
)
from shared.models.layers import BlazeBlock, max_pool_same, same_padding
from shared.models.mediapipe_import import find_wheel, load_pretrained
from shared.models.registry import create_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAGRID = DATA / "hagrid_sample"
needs_wheel = pytest.mark.skipif(find_wheel() is None, reason="MediaPipe wheel not cached (make weights)")

# model type -> (input side, number of gesture/class outputs or None for the palm detector)
MODELS = {
    "blazehand_full": 224,
    "blazehand_lite": 224,
    "blazepalm_full": 192,
    "blazepalm_lite": 192,
    "timm:mobilenetv3_small_100": 224,
}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: create_model(name) for name in MODELS}


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x)
    if isinstance(out, dict):
        return out
    if isinstance(out, tuple):
        return {"regressors": out[0], "logits": out[1]}
    return {"logits": out}


# ----------------------------------------------------------------------------- shapes, gradients, ONNX


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shapes_and_finite(models, name):
    model = models[name].eval()
    size = MODELS[name]
    assert model.img_size == size
    with torch.no_grad():
        out = _outputs(model, torch.rand(2, 3, size, size))
    expected = {
        "blazehand": {"landmarks": (2, 21, 3), "world_landmarks": (2, 21, 3), "presence_logit": (2,),
                      "handedness_logit": (2,), "gesture_logits": (2, 5)},
        "blazepalm": {"regressors": (2, 2016, 18), "logits": (2, 2016, 1)},
        "timm": {"logits": (2, 5)},
    }[name.split("_")[0].split(":")[0]]
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    for key, value in out.items():
        assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_reach_every_parameter(models, name):
    model = models[name].train()
    model.zero_grad()
    # A smaller input keeps this quick; every layer still runs (global pooling / conv heads).
    out = _outputs(model, torch.rand(2, 3, 128, 128))
    sum(v.float().square().mean() for v in out.values()).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient reaches {dead[:5]}"
    model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_dynamic_batch_matches_torch(models, name, tmp_path):
    from shared.models.export import export_onnx, export_wrapper, verify_onnx
    from shared.models.specs import spec_for

    model = models[name].eval()
    spec = spec_for(name, model)
    wrapper = export_wrapper(model)
    path = export_onnx(wrapper, spec, tmp_path / "model.onnx", batch_size=1, dynamic_batch=True)
    diffs = verify_onnx(path, wrapper, spec, batch_size=3)  # traced at 1, run at 3
    assert set(diffs) == set(spec.output_names)
    for out_name, d in diffs.items():
        # 1e-4 absolute, on pixel outputs (up to ~200) relative to their size.
        assert d["abs"] <= 1e-4 * max(1.0, d["ref"] / 100), (out_name, d)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 3, 2, (0, 1)),  # even input, stride 2: TF puts the extra row at the bottom
    (56, 5, 2, (1, 2)),
    (7, 3, 1, (1, 1)),  # stride 1: symmetric
    (5, 3, 2, (1, 1)),  # odd input, stride 2: symmetric again
    (12, 2, 2, (0, 0)),  # the palm model's 2x2 max-pool: no padding
])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_max_pool_same_pads_with_minus_infinity():
    x = -torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative, odd size -> padded
    out = max_pool_same(x)
    assert out.shape == (1, 1, 2, 2)
    # the bottom-right window holds only x[2, 2] = -9 and padding; zero padding would give 0
    assert out[0, 0, 1, 1].item() == -9.0


def test_blaze_block_pads_shortcut_channels():
    block = BlazeBlock(4, 8, stride=2)
    for p in (block.depthwise.weight, block.depthwise.bias, block.pointwise.weight, block.pointwise.bias):
        torch.nn.init.zeros_(p)
    torch.nn.init.ones_(block.act.weight)  # PReLU slope 1 = identity
    x = torch.rand(1, 4, 6, 6)
    y = block(x)
    assert y.shape == (1, 8, 3, 3)
    assert torch.allclose(y[:, :4], torch.nn.functional.max_pool2d(x, 2))
    assert torch.all(y[:, 4:] == 0)


# ----------------------------------------------------------------------------- palm post-processing


def test_ssd_anchors_layout():
    anchors = ssd_anchors(192)
    assert anchors.shape == (2016, 2)
    # 24x24 grid, 2 per cell, then 12x12 grid, 6 per cell, row-major (NHWC order)
    assert np.allclose(anchors[0], [0.5 / 24, 0.5 / 24]) and np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [1.5 / 24, 0.5 / 24])
    assert np.allclose(anchors[48], [0.5 / 24, 1.5 / 24])
    assert np.allclose(anchors[1152:1158], [0.5 / 12, 0.5 / 12])
    assert np.allclose(anchors[-1], [11.5 / 12, 11.5 / 12])


def test_decode_applies_anchors_and_scale(models):
    palm = models["blazepalm_full"]
    reg = torch.zeros(1, 2016, 18)
    reg[0, 5, :4] = torch.tensor([19.2, -9.6, 38.4, 19.2])  # +0.1, -0.05, w 0.2, h 0.1 of the input
    reg[0, 5, 4:6] = torch.tensor([9.6, 9.6])  # keypoint 0 at +0.05, +0.05
    logits = torch.full((1, 2016, 1), -1000.0)
    boxes, kps, scores = palm.decode(reg, logits)
    ax, ay = ssd_anchors(192)[5]
    assert np.allclose(boxes[0, 5].numpy(), [ax, ay - 0.1, ax + 0.2, ay], atol=1e-6)
    assert np.allclose(kps[0, 5, 0].numpy(), [ax + 0.05, ay + 0.05], atol=1e-6)
    assert np.allclose(kps[0, 5, 1].numpy(), [ax, ay], atol=1e-6)
    # logits are clipped to +-100 before the sigmoid, as MediaPipe does
    assert torch.allclose(scores[0, 0], torch.sigmoid(torch.tensor(-100.0)))
    # the NumPy twin (for serving without torch) agrees
    for ours, theirs in zip(decode(reg.numpy(), logits.numpy(), ssd_anchors(192)), (boxes, kps, scores)):
        assert np.allclose(ours, theirs.numpy(), atol=1e-6)


def test_palm_post_processing_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, shared.models.blazepalm_post; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def _palms(boxes, scores):
    boxes = np.asarray(boxes, np.float32)
    kps = np.repeat(boxes[:, None, :2], 7, axis=1)  # keypoint = box corner, to follow the averaging
    return boxes, kps, np.asarray(scores, np.float32)


@pytest.mark.parametrize("boxes,scores,expected_boxes,expected_scores", [
    # two heavily overlapping boxes merge into their score-weighted mean, keeping the best score
    ([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.3], [[0.25, 0, 10.25, 10]], [0.9]),
    # disjoint boxes both survive, best first
    ([[0, 0, 10, 10], [20, 20, 30, 30]], [0.6, 0.8], [[20, 20, 30, 30], [0, 0, 10, 10]], [0.8, 0.6]),
    # IoU exactly at the threshold does not merge (MediaPipe uses ">")
    ([[0, 0, 10, 10], [0, 0, 10, 3]], [0.9, 0.8], [[0, 0, 10, 10], [0, 0, 10, 3]], [0.9, 0.8]),
    # nothing in, nothing out
    (np.zeros((0, 4)), [], np.zeros((0, 4)), []),
])
def test_weighted_nms(boxes, scores, expected_boxes, expected_scores):
    b, k, s = weighted_nms(*_palms(boxes, scores), iou_threshold=0.3)
    assert np.allclose(b, np.asarray(expected_boxes).reshape(-1, 4), atol=1e-5)
    assert np.allclose(s, expected_scores)
    assert np.allclose(k[:, 0], b[:, :2], atol=1e-5)  # keypoints averaged with the same weights


def test_weighted_nms_max_detections():
    b, _, s = weighted_nms(*_palms([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], [0.5, 0.7, 0.6]),
                           max_detections=2)
    assert np.allclose(s, [0.7, 0.6]) and len(b) == 2


def _palm_keypoints(wrist, middle):
    kps = np.zeros((7, 2))
    kps[0], kps[2] = wrist, middle
    return kps


@pytest.mark.parametrize("wrist,middle,angle", [
    ((50, 80), (50, 20), 0.0),  # fingers up: no rotation
    ((20, 50), (80, 50), -math.pi / 2),  # fingers pointing right: turn clockwise on screen
    ((80, 50), (20, 50), math.pi / 2),  # fingers pointing left
])
def test_palm_to_roi_rotation_shift_and_scale(wrist, middle, angle):
    box = np.array([30.0, 40.0, 70.0, 60.0])  # w 40, h 20
    roi = palm_to_roi(box, _palm_keypoints(wrist, middle))
    assert math.isclose(roi.angle, angle, abs_tol=1e-9)
    assert math.isclose(roi.angle, hand_angle(np.array(wrist), np.array(middle)), abs_tol=1e-9)
    assert math.isclose(roi.size, 2.6 * 40)
    # the centre moves half the box height towards the fingers
    direction = (np.array(middle) - np.array(wrist)) / np.linalg.norm(np.subtract(middle, wrist))
    assert np.allclose([roi.cx, roi.cy], np.array([50.0, 50.0]) + 10.0 * direction)


@pytest.mark.parametrize("shape", [(100, 50, 3), (50, 100, 3), (400, 300, 3), (192, 192, 3)])
def test_letterbox_round_trip(shape):
    image = np.zeros(shape, np.uint8)
    h, w = shape[:2]
    x, y = int(w * 0.7), int(h * 0.2)
    image[y, x] = 255
    out, lb = letterbox(image, 192)
    assert out.shape == (192, 192, 3) and isinstance(lb, Letterbox)
    assert max(round(w * lb.scale_x), round(h * lb.scale_y)) == 192
    ys, xs = np.nonzero(out[..., 0])
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # pixel centre, continuous coordinates
    back = unletterbox(centre, lb)
    assert np.allclose(back, [x + 0.5, y + 0.5], atol=1.0 / min(lb.scale_x, 1.0))


# ----------------------------------------------------------------------------- weights


@needs_wheel
def test_mediapipe_import_reports_only_the_gesture_head_missing():
    model = create_model("blazehand_full", pretrained_weights="mediapipe")
    report = model.load_report
    assert report.missing_keys == ["gesture.weight", "gesture.bias"] and not report.unexpected_keys
    assert report.ok and "gesture.weight" in str(report)
    palm = create_model("blazepalm_lite", pretrained_weights="mediapipe")
    assert palm.load_report.missing_keys == [] and palm.load_report.ok


@needs_wheel
def test_pth_round_trip_through_components_weights(tmp_path):
    from components.weights import main

    assert main(["convert", "--models", "blazehand_lite", "--output_dir", str(tmp_path)]) == 0
    path = tmp_path / "blazehand_lite.pth"
    a = create_model("blazehand_lite", pretrained_weights="mediapipe").eval()
    b = create_model("blazehand_lite", pretrained_weights=str(path)).eval()
    assert b.load_report.missing_keys == [] and b.load_report.unexpected_keys == []
    a.gesture.load_state_dict(b.gesture.state_dict())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


@needs_wheel
def test_weights_cli_fetch_uses_the_cache_and_describe_reads_the_graph(capsys):
    from components.weights import main

    assert main(["fetch"]) == 0  # cached: no network needed
    assert str(find_wheel()) in capsys.readouterr().out
    assert main(["describe", "--network", "hand_landmark_lite"]) == 0
    text = capsys.readouterr().out
    # the lite model's one max-pool shortcut, and no DEQUANTIZE left after folding
    assert "MAX_POOL_2D" in text and "DEQUANTIZE" not in text and "'CONV_2D': 31" in text


@needs_wheel
def test_wrong_tflite_for_model_is_a_user_error(tmp_path):
    from shared.models.mediapipe_import import read_tflite

    palm_file = tmp_path / "palm_detection_lite.tflite"
    palm_file.write_bytes(read_tflite("palm_detection_lite"))
    with pytest.raises(UserError, match="hand_landmark_full"):
        load_pretrained(create_model("blazehand_full"), str(palm_file))


def test_mediapipe_weights_not_cached_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="components.weights fetch"):
        load_pretrained(create_model("blazepalm_lite"), "mediapipe", cache_dir=tmp_path)


@pytest.mark.parametrize("make_file,match", [
    (None, "not found"),  # missing file
    (lambda p: p.write_text("garbage"), "cannot read weights"),  # not a torch file
    (lambda p: torch.save(create_model("blazehand_lite", num_gestures=3).state_dict(), p), "shapes do not match"),
    # another architecture's weights (e.g. the seed's old blazehand_landmark.pth) must not load silently
    (lambda p: torch.save({"backbone1.0.weight": torch.zeros(3)}, p), "no parameter names in common"),
])
def test_bad_weight_files_are_user_errors(tmp_path, make_file, match):
    path = tmp_path / "weights.pth"
    if make_file:
        make_file(path)
    with pytest.raises(UserError, match=match):
        load_pretrained(create_model("blazehand_lite"), str(path))


@pytest.mark.parametrize("name,wrap", [
    # our training checkpoint layout: metadata + a "state_dict" whose keys carry the module's attribute name
    ("blazehand_lite", lambda sd: {"format": 1, "model_name": "blazehand_lite",
                                   "state_dict": {f"model.{k}": v for k, v in sd.items()}}),
    # a bare timm state dict loads into our normalising wrapper (keys gain "model.")
    ("timm:mobilenetv3_small_100", lambda sd: {k.removeprefix("model."): v for k, v in sd.items()}),
])
def test_checkpoint_layouts_load_completely(tmp_path, name, wrap):
    source = create_model(name)
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(source.state_dict()), path)
    target = create_model(name)
    report = load_pretrained(target, str(path))
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


# ----------------------------------------------------------------------------- real images


def _hagrid_hands(gesture: str, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, xyxy pixel box of the gesturing hand) from the HaGRID sample."""
    found = []
    for ann_file in sorted((HAGRID / "annotations").glob(f"*/{gesture}.json")):
        for uuid, ann in sorted(json.loads(ann_file.read_text()).items()):
            path = HAGRID / "images" / gesture / f"{uuid}.jpg"
            if not path.is_file():
                continue
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = image.shape[:2]
            i = ann["labels"].index(gesture)
            x, y, bw, bh = ann["bboxes"][i]
            found.append((image, np.array([x * w, y * h, (x + bw) * w, (y + bh) * h])))
            if len(found) == limit:
                return found
    return found


@needs_wheel
def test_palm_detector_and_landmarks_find_real_hands():
    if not HAGRID.is_dir():
        pytest.skip("no ../shared/data")
    palm = create_model("blazepalm_full", pretrained_weights="mediapipe").eval()
    hand = create_model("blazehand_full", pretrained_weights="mediapipe").eval()
    samples = _hagrid_hands("palm", 2) + _hagrid_hands("stop", 2)
    assert samples
    for image, box in samples:
        palms = palm.detect(image)[0]
        assert len(palms) >= 1
        # the best palm lies inside the annotated hand box
        cx, cy = palms.xyxy[0].reshape(2, 2).mean(0)
        assert box[0] <= cx <= box[2] and box[1] <= cy <= box[3], (palms.xyxy[0], box)
        roi = palms.rois()[0]
        crop = torch.from_numpy(warp_crop(image, roi, 224)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out = hand(crop)
        assert torch.sigmoid(out["presence_logit"]).item() > 0.9
        points = crop_to_image(out["landmarks"][0].numpy(), roi, 224)
        margin = 0.25 * (box[2:] - box[:2])
        inside = np.all((points[:, :2] >= box[:2] - margin) & (points[:, :2] <= box[2:] + margin), axis=1)
        assert inside.mean() > 0.9


# ----------------------------------------------------------------------------- timm classifier


def test_timm_pretrained_without_local_weights_is_a_user_error(tmp_path, monkeypatch):
    from shared.models.classifier import create_timm_classifier

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError, match="not in the local cache"):
        create_timm_classifier("mobilenetv3_small_100", pretrained=True, hf_cache_dir=str(tmp_path / "hf"))


def test_timm_pretrained_loads_from_local_hf_cache(tmp_path):
    import timm
    from safetensors.torch import save_file

    from shared.models.classifier import create_timm_classifier

    # Lay out a Hugging Face cache entry the way `huggingface_hub` writes one.
    source = timm.create_model("mobilenetv3_small_100", pretrained=False)
    hub_id = source.pretrained_cfg["hf_hub_id"]
    repo = tmp_path / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, snapshot / "model.safetensors")

    model = create_timm_classifier("mobilenetv3_small_100", num_classes=5, pretrained=True, hf_cache_dir=str(tmp_path))
    assert torch.equal(model.model.conv_stem.weight, source.conv_stem.weight)
    assert model.model.get_classifier().out_features == 5


def test_timm_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown timm model"):
        create_model("timm:no_such_net_v9")


# ----------------------------------------------------------------------------- export CLI


def test_export_cli_writes_model_and_summary(tmp_path):
    from components.export import main

    out = tmp_path / "palm.onnx"
    assert main(["onnx", "--model_type", "blazepalm_lite", "--weights", "none", "--output_path", str(out),
                 "--dynamic_batch", "--verify"]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["outputs"][0]["name"] == "boxes" and summary["dynamic_batch"]
    assert set(summary["max_abs_diff"]) == {"boxes", "keypoints", "scores"}


def test_export_cli_rejects_mediapipe_weights_for_timm(tmp_path):
    from components.export import main

    with pytest.raises(UserError, match="blaze"):
        main(["onnx", "--model_type", "timm:mobilenetv3_small_100", "--weights", "mediapipe",
              "--output_path", str(tmp_path / "x.onnx")])
