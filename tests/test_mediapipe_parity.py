"""Our PyTorch BlazeHand/BlazePalm against MediaPipe's own TFLite files, run by the
TFLite interpreter (`ai-edge-litert`), on real hand crops from ../shared/data.

Targets: max |delta| <= 1e-3 px on landmarks/regressors and <= 1e-4 on scores.
Skips when the interpreter is not installed or the MediaPipe wheel is not cached.
Run with `-s` to see the measured differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from shared.geometry import roi_from_box, warp_crop
from shared.models.blazepalm import letterbox
from shared.models.mediapipe_import import find_wheel, read_tflite
from shared.models.registry import create_model

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (TFLite runtime) not installed")
pytestmark = pytest.mark.skipif(find_wheel() is None, reason="MediaPipe wheel not cached (make weights)")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAGRID = DATA / "hagrid_sample"
ROBOFLOW = DATA / "roboflow_gestures_v6" / "images"


def _real_images() -> list[tuple[np.ndarray, np.ndarray]]:
    """A few (RGB image, xyxy hand box) pairs: HaGRID annotations, plus one Roboflow photo."""
    out = []
    for gesture in ("palm", "fist", "one"):
        ann_file = next(iter(sorted((HAGRID / "annotations").glob(f"*/{gesture}.json"))), None)
        if ann_file is None:
            continue
        uuid, ann = sorted(json.loads(ann_file.read_text()).items())[0]
        path = HAGRID / "images" / gesture / f"{uuid}.jpg"
        if path.is_file():
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = image.shape[:2]
            x, y, bw, bh = ann["bboxes"][0]
            out.append((image, np.array([x * w, y * h, (x + bw) * w, (y + bh) * h])))
    roboflow = sorted(ROBOFLOW.glob("*.jpg"))[:1] if ROBOFLOW.is_dir() else []
    for path in roboflow:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        out.append((image, np.array([40.0, 40.0, 184.0, 184.0])))
    if not out:
        pytest.skip("no real images in ../shared/data")
    return out


@pytest.fixture(scope="module")
def images() -> list[tuple[np.ndarray, np.ndarray]]:
    return _real_images()


def _tflite(name: str, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = litert.Interpreter(model_content=read_tflite(name))
    interpreter.allocate_tensors()
    outputs = []
    for sample in x_nhwc:  # the files have a fixed batch of 1
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        outputs.append({d["name"]: interpreter.get_tensor(d["index"])[0].copy()
                        for d in interpreter.get_output_details()})
    return {k: np.stack([o[k] for o in outputs]) for k in outputs[0]}


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_blazehand_matches_tflite(images, variant):
    crops = np.stack([warp_crop(image, roi_from_box(box, 0.3), 224) for image, box in images])
    x = crops.astype(np.float32) / 255.0  # [N, 224, 224, 3]
    ref = _tflite(f"hand_landmark_{variant}", x)
    model = create_model(f"blazehand_{variant}", pretrained_weights="mediapipe").eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    n = len(x)
    deltas = {
        "landmarks_px": np.abs(out["landmarks"].numpy().reshape(n, 63) - ref["Identity"]).max(),
        "world_landmarks_m": np.abs(out["world_landmarks"].numpy().reshape(n, 63) - ref["Identity_3"]).max(),
        "presence": np.abs(torch.sigmoid(out["presence_logit"]).numpy() - ref["Identity_1"][:, 0]).max(),
        "handedness": np.abs(torch.sigmoid(out["handedness_logit"]).numpy() - ref["Identity_2"][:, 0]).max(),
    }
    print(f"\nblazehand_{variant} vs TFLite on {n} real crops: " + ", ".join(f"{k} {v:.2e}" for k, v in deltas.items()))
    assert deltas["landmarks_px"] <= 1e-3 and deltas["world_landmarks_m"] <= 1e-3
    assert deltas["presence"] <= 1e-4 and deltas["handedness"] <= 1e-4
    assert (ref["Identity_1"][:, 0] > 0.5).sum() >= n - 1  # the crops really hold hands


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_blazepalm_matches_tflite(images, variant):
    x = np.stack([letterbox(image, 192)[0] for image, _ in images]).astype(np.float32) / 255.0
    ref = _tflite(f"palm_detection_{variant}", x)
    model = create_model(f"blazepalm_{variant}", pretrained_weights="mediapipe").eval()
    with torch.no_grad():
        regressors, logits = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    scores, ref_scores = torch.sigmoid(logits).numpy(), 1 / (1 + np.exp(-ref["Identity_1"]))
    deltas = {
        "regressors_px": np.abs(regressors.numpy() - ref["Identity"]).max(),
        "logits": np.abs(logits.numpy() - ref["Identity_1"]).max(),
        "scores": np.abs(scores - ref_scores).max(),
    }
    print(f"\nblazepalm_{variant} vs TFLite on {len(x)} real images: "
          + ", ".join(f"{k} {v:.2e}" for k, v in deltas.items()))
    assert deltas["regressors_px"] <= 1e-3 and deltas["scores"] <= 1e-4
    assert (ref_scores.max(axis=(1, 2)) > 0.5).sum() >= len(x) - 1  # palms are there to be found
