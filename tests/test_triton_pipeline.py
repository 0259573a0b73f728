"""The hand pipeline deployed into a Triton repository and served by a REAL tritonserver
(the CPU build bundled in nvidia-pytriton, python backend): components.deploy,
shared/serving/models/ (the python models' logic), the gRPC client and the CLI.

Frames: real hands (HaGRID photos from ../shared/data, cut around the labelled hand and moved
across a plain canvas, so BlazePalm finds them and the tracker can follow them) and one
rendered synthetic sequence. The in-process reference is `models.local_pipeline`:
HandPipeline + onnxruntime on the very ONNX files that were deployed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.errors import UserError
from shared.inference import detectors
from shared.results import HandResults
from shared.serving import models as hm
from tests.conftest import real_photos as photos_of

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HAGRID = PROJECT_ROOT.parent / "shared" / "data" / "hagrid_sample"
NUM_FRAMES = 10
# stream id -> what it shows (the frames are built in `streams`)
ONE_HAND, TWO_HANDS, SYNTHETIC = 11, 22, 33


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------
def hagrid_patch(gesture: str, uuid_prefix: str, side: int) -> np.ndarray:
    """RGB square around the labelled hand of one HaGRID photo (2.2x its box), `side` pixels."""
    if not HAGRID.is_dir():
        pytest.skip(f"needs real photos in {HAGRID} (../shared/data beside the project)")
    for ann in sorted((HAGRID / "annotations").glob(f"*/{gesture}.json")):
        for uuid, item in json.loads(ann.read_text()).items():
            if uuid.startswith(uuid_prefix):
                bgr = cv2.imread(str(HAGRID / "images" / gesture / f"{uuid}.jpg"))
                h, w = bgr.shape[:2]
                x, y, bw, bh = item["bboxes"][item["labels"].index(gesture)]
                cx, cy, s = (x + bw / 2) * w, (y + bh / 2) * h, max(bw * w, bh * h) * 2.2
                m = np.float32([[side / s, 0, side / 2 - cx * side / s], [0, side / s, side / 2 - cy * side / s]])
                return cv2.warpAffine(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), m, (side, side),
                                      borderMode=cv2.BORDER_REFLECT)
    raise FileNotFoundError(f"HaGRID {gesture}/{uuid_prefix}* not in {HAGRID}")


@pytest.fixture(scope="module")
def streams() -> dict[int, list[np.ndarray]]:
    if not HAGRID.is_dir():
        pytest.skip(f"no {HAGRID}")
    from shared.data.synthetic import SyntheticConfig, render_sequence

    palm = hagrid_patch("palm", "0141f713", 160)
    ok, fist = hagrid_patch("ok", "147c1f76", 140), hagrid_patch("fist", "0c39c49b", 140)
    one, two = [], []
    for t in range(NUM_FRAMES):
        a = np.full((240, 320, 3), 90, np.uint8)
        a[40:200, 20 + 8 * t:180 + 8 * t] = palm  # one hand moving right
        b = np.full((300, 360, 3), 90, np.uint8)
        b[5:145, 10 + 6 * t:150 + 6 * t] = ok  # two hands moving apart in opposite directions
        b[155:295, 210 - 6 * t:350 - 6 * t] = fist
        one.append(a)
        two.append(b)
    synthetic = [cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
                 for f in render_sequence(3, 0, NUM_FRAMES, SyntheticConfig(image_size=256, max_hands=2))]
    return {ONE_HAND: one, TWO_HANDS: two, SYNTHETIC: synthetic}


def run_local(repo: Path, frames: list[np.ndarray]) -> list[HandResults]:
    pipe = hm.local_pipeline(repo)
    return [pipe.process(f) for f in frames]


def assert_same_hands(got: list[HandResults], want: list[HandResults], atol: float, what: str) -> None:
    assert len(got) == len(want), what
    for t, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w), f"{what} frame {t}: {len(g)} hands, expected {len(w)}"
        np.testing.assert_array_equal(g.track_id, w.track_id, err_msg=f"{what} frame {t}")
        np.testing.assert_allclose(g.xyxy, w.xyxy, atol=atol, rtol=0, err_msg=f"{what} frame {t}")
        np.testing.assert_allclose(g.keypoints[..., :2], w.keypoints[..., :2], atol=atol, rtol=0,
                                   err_msg=f"{what} frame {t}")
        np.testing.assert_array_equal(g.gesture, w.gesture, err_msg=f"{what} frame {t}")


def assert_stable_ids(results: list[HandResults], hands: int) -> None:
    """Every frame has `hands` hands; each hand (told apart by its vertical position) keeps
    one id over the whole stream, and the stream's ids are 1..hands (ids belong to a stream)."""
    ids_per_hand: dict[int, set[int]] = {}
    for t, r in enumerate(results):
        assert len(r) == hands, f"frame {t}: {len(r)} hands, expected {hands}"
        for box, tid in zip(r.xyxy, r.track_id):
            ids_per_hand.setdefault(int((box[1] + box[3]) / 2 > 150), set()).add(int(tid))
    assert sorted(min(ids) for ids in ids_per_hand.values()) == list(range(1, hands + 1)), ids_per_hand
    assert all(len(ids) == 1 for ids in ids_per_hand.values()), ids_per_hand


# ---------------------------------------------------------------------------------------------
# deployment (no server)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from components.deploy import DeployConfig, deploy

    root = tmp_path_factory.mktemp("deploy")
    # ONNX exports of BlazeHand and BlazePalm with MediaPipe's weights, made by deploy itself;
    # hand_pipeline calls the served networks through BLS (the last test redeploys it `local`).
    result = deploy(DeployConfig(triton_repo=str(root / "repo"), backend="python", work_dir=str(root / "exports"),
                                 max_streams=4, keep_versions=2, pipeline_networks="bls"))
    return Path(result.triton_repo), result


def model_config(repo: Path, name: str) -> dict:
    """The model config as Triton hands it to initialize(): JSON of the parsed config.pbtxt."""
    from google.protobuf.json_format import MessageToDict

    from shared.serving.triton_config import parse_pbtxt

    return MessageToDict(parse_pbtxt((repo / name / "config.pbtxt").read_text()), preserving_proto_field_name=True)


def test_deploy_writes_every_model_from_the_specs(deployed):
    from shared.serving.triton_config import parse_pbtxt

    repo, result = deployed
    assert result.models == {name: 1 for name in (hm.MODEL_DETECTOR, hm.MODEL_LANDMARKS, hm.MODEL_PREPROCESS,
                                                  hm.MODEL_POSTPROCESS, hm.MODEL_DETECTION, hm.MODEL_TRACKER,
                                                  hm.MODEL_PIPELINE, hm.MODEL_HANDS)}
    configs = {name: parse_pbtxt((repo / name / "config.pbtxt").read_text()) for name in result.models}
    landmarks = configs[hm.MODEL_LANDMARKS]
    # the crop model: ONNX in the python backend, dynamic batching, tensors named by shared/models/specs.py
    assert landmarks.backend == "python" and landmarks.HasField("dynamic_batching") and landmarks.max_batch_size == 8
    assert [t.name for t in landmarks.output] == ["landmarks", "world_landmarks", "presence", "handedness",
                                                  "gesture_probs"]
    assert (repo / hm.MODEL_LANDMARKS / "1" / "model.onnx").is_file()
    assert (repo / hm.MODEL_LANDMARKS / "1" / "shared" / "serving" / "models" / "__init__.py").is_file()
    for name in (hm.MODEL_PIPELINE, hm.MODEL_TRACKER):  # the stateful ones
        sb = configs[name].sequence_batching
        assert {c.name for c in sb.control_input} == {"START", "END", "READY", "CORRID"}, name
        assert configs[name].max_batch_size == 4 and configs[name].version_policy.latest.num_versions == 2
    params = json.loads(configs[hm.MODEL_PIPELINE].parameters["config"].string_value)
    assert params["landmarks"]["gesture_trained"] is False  # MediaPipe's weights carry no gesture head
    assert [s.model_name for s in configs[hm.MODEL_DETECTION].ensemble_scheduling.step] == [
        hm.MODEL_PREPROCESS, hm.MODEL_DETECTOR, hm.MODEL_POSTPROCESS]
    summary = json.loads((repo / "deploy.json").read_text())
    assert summary["models"] == result.models and summary["backend"] == "python"


def test_deploy_a_registered_model_by_id_or_name(deployed, tmp_path):
    """`--model_id` / `--model_name --model_version` resolve through the offline model store (the
    model_store.jsonl records the pipeline writes beside its weights); what was deployed is in
    every served config (`served_model`); an unknown id is one clear error."""
    from components.deploy import DeployConfig, deploy
    from shared.serving.triton_config import parse_pbtxt

    _, first = deployed
    store = tmp_path / "outputs" / "export"
    store.mkdir(parents=True)
    onnx = store / "hand_landmarks.onnx"
    shutil.copyfile(first.files["hand_onnx"], onnx)
    record = {"path": str(onnx), "model_id": "offline-1111", "framework": "ONNX", "name": "hand_landmarks_onnx",
              "tags": ["export"], "metadata": {"metrics": {"gestures/accuracy": 0.81}, "precision": "fp32"}}
    (store / "model_store.jsonl").write_text(json.dumps(record) + "\n" +
                                             json.dumps({**record, "model_id": "offline-2222"}) + "\n")
    common = dict(backend="python", palm_onnx=first.files["detector_onnx"], model_store=str(tmp_path / "outputs"))
    for i, (how, want_id, want_version) in enumerate([({"model_id": "offline-1111"}, "offline-1111", 1),
                                                      ({"model_name": "hand_landmarks_onnx"}, "offline-2222", 2),
                                                      ({"model_name": "hand_landmarks_onnx", "model_version": 1},
                                                       "offline-1111", 1)]):
        repo = tmp_path / f"repo{i}"
        deploy(DeployConfig(triton_repo=str(repo), **common, **how))
        for name in (hm.MODEL_LANDMARKS, hm.MODEL_PIPELINE, hm.MODEL_HANDS):
            config = parse_pbtxt((repo / name / "config.pbtxt").read_text())
            served = json.loads(config.parameters["served_model"].string_value)
            assert (served["id"], served["version"], served["precision"]) == (want_id, want_version, "fp32"), how
            assert served["metrics"] == {"gestures/accuracy": 0.81}
        assert json.loads((repo / "deploy.json").read_text())["registered_model"]["path"] == str(onnx)
    with pytest.raises(UserError, match="no such registered model.*hand_landmarks_onnx v1 \\(offline-1111\\)"):
        deploy(DeployConfig(triton_repo=str(tmp_path / "bad"), **common, model_id="offline-9999"))


def test_redeploy_adds_versions_and_keeps_the_last_n(deployed, tmp_path):
    from components.deploy import DeployConfig, deploy
    from shared.serving.repository import model_versions
    from shared.serving.triton_config import parse_pbtxt

    _, first = deployed
    cfg = DeployConfig(triton_repo=str(tmp_path / "repo"), backend="onnxruntime", onnx=first.files["hand_onnx"],
                       palm_onnx=first.files["detector_onnx"], keep_versions=2)
    results = [deploy(cfg) for _ in range(3)]  # given ONNX files: nothing is exported again
    assert results[-1].models[hm.MODEL_PIPELINE] == 3
    for name in results[-1].models:
        assert model_versions(tmp_path / "repo", name) == [2, 3], name
    det = parse_pbtxt((tmp_path / "repo" / hm.MODEL_DETECTOR / "config.pbtxt").read_text())
    assert det.platform == "onnxruntime_onnx" and det.version_policy.latest.num_versions == 2
    assert (tmp_path / "repo" / hm.MODEL_DETECTOR / "3" / "model.onnx").is_file()


def test_deploy_tensorrt_with_a_given_plan(deployed, tmp_path):
    from components.deploy import DeployConfig, deploy
    from shared.models.tensorrt import tensorrt_available
    from shared.serving.triton_config import parse_pbtxt

    if tensorrt_available():
        pytest.skip("TensorRT imports here: deploy would build the detector plan too")
    _, first = deployed
    plan = tmp_path / "hand_fp16.plan"
    plan.write_bytes(b"a serialized engine")  # deploy copies plans; only a GPU Triton loads them
    result = deploy(DeployConfig(triton_repo=str(tmp_path / "repo"), backend="tensorrt", engine=str(plan),
                                 onnx=first.files["hand_onnx"], palm_onnx=first.files["detector_onnx"]))
    repo = tmp_path / "repo"
    lm = parse_pbtxt((repo / hm.MODEL_LANDMARKS / "config.pbtxt").read_text())
    assert lm.platform == "tensorrt_plan" and lm.instance_group[0].kind == lm.instance_group[0].KIND_GPU
    assert (repo / hm.MODEL_LANDMARKS / "1" / "model.plan").read_bytes() == b"a serialized engine"
    # no detector plan and no TensorRT to build one: the palm net goes to onnxruntime on the same Triton
    assert result.detector_backend == "onnxruntime"
    assert parse_pbtxt((repo / hm.MODEL_DETECTOR / "config.pbtxt").read_text()).platform == "onnxruntime_onnx"
    params = json.loads((repo / hm.MODEL_PIPELINE / "1" / hm.PARAMS_FILE).read_text())
    assert params["networks"] == "bls"  # GPU backends: hand_pipeline calls the served networks


def _fixed_batch_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 224, 224])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "g", [x], [y]))
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("case, message", [
    ("tensorrt_without_engine", "--engine"),  # no TensorRT on this host: name the way out
    ("fixed_batch_onnx", "dynamic batch"),
    ("palm_onnx_as_hand_model", "differ from the blazehand_full spec"),
    ("batch_below_max_hands", "--max_batch_size 2 < --max_hands 4"),
    ("yolo_without_model", "--yolo_model"),
    ("missing_onnx", "no such .onnx file"),
    ("missing_weights", "expected 'mediapipe' or an existing .pth"),
])
def test_deploy_rejects_bad_input_with_the_fix(deployed, tmp_path, case, message):
    from components.deploy import DeployConfig, deploy
    from shared.models.tensorrt import tensorrt_available

    _, first = deployed
    given = dict(triton_repo=str(tmp_path / "repo"), onnx=first.files["hand_onnx"],
                 palm_onnx=first.files["detector_onnx"])
    if case == "tensorrt_without_engine" and tensorrt_available():
        pytest.skip("TensorRT imports here: deploy would build the engine")
    cfg = {
        "tensorrt_without_engine": DeployConfig(**given, backend="tensorrt"),
        "fixed_batch_onnx": DeployConfig(**{**given, "onnx": str(_fixed_batch_onnx(tmp_path / "fixed.onnx"))}),
        "palm_onnx_as_hand_model": DeployConfig(**{**given, "onnx": first.files["detector_onnx"]}),
        "batch_below_max_hands": DeployConfig(**given, max_batch_size=2),
        "yolo_without_model": DeployConfig(**given, detector="yolo"),
        "missing_onnx": DeployConfig(**{**given, "onnx": str(tmp_path / "nope.onnx")}),
        "missing_weights": DeployConfig(**{**given, "onnx": "", "model_weights": str(tmp_path / "nope.pth")}),
    }[case]
    with pytest.raises(UserError, match=message):
        deploy(cfg)
    assert not (tmp_path / "repo" / hm.MODEL_PIPELINE).exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------
# the python models' classes, without a server (BLS replaced by direct calls)
# ---------------------------------------------------------------------------------------------
def local_bls(repo: Path):
    """A BLS stand-in: the served network classes (OnnxModel) called directly."""
    nets = {name: hm.OnnxModel(model_config(repo, name), repo / name / "1")
            for name in (hm.MODEL_DETECTOR, hm.MODEL_LANDMARKS)}

    def infer(model, inputs, output_names):
        (out,) = nets[model].execute([inputs.get])
        if isinstance(out, Exception):
            raise out
        return {n: out[n] for n in output_names}

    return infer


def request(**arrays):
    """One request's inputs: controls as [1, 1] tensors like Triton sends them."""
    values = {k: np.asarray(v) for k, v in arrays.items()}
    for key in ("START", "END", "READY"):
        values[key] = np.array([[int(arrays.get(key, key == "READY"))]], np.int32)
    values["CORRID"] = np.array([[arrays.get("CORRID", 0)]], np.uint64)
    return values.get


def pipeline_model(repo: Path, networks: str, tmp_path: Path, clock=None) -> hm.HandPipelineModel:
    """hand_pipeline's class as deployed (`bls`), or switched to `local` networks: its version
    folder then holds the ONNX copies, as deploy --pipeline_networks local writes it."""
    config = model_config(repo, hm.MODEL_PIPELINE)
    model_dir = repo / hm.MODEL_PIPELINE / "1"
    if networks == "local":
        params = {**hm.model_parameters(config), "networks": "local"}
        model_dir = tmp_path / "local"
        model_dir.mkdir()
        (model_dir / hm.PARAMS_FILE).write_text(json.dumps(params))
        for name, file in hm.LOCAL_FILES.items():
            (model_dir / file).symlink_to(repo / name / "1" / "model.onnx")
    extra = {} if clock is None else {"clock": clock}
    return hm.HandPipelineModel(config, model_dir, infer=local_bls(repo), **extra)


@pytest.mark.parametrize("networks", ["bls", "local"])
def test_pipeline_model_matches_in_process_and_keeps_streams_apart(deployed, streams, networks, tmp_path):
    repo, _ = deployed
    now = [0.0]
    model = pipeline_model(repo, networks, tmp_path, clock=lambda: now[0])
    got: dict[int, list[HandResults]] = {ONE_HAND: [], TWO_HANDS: []}
    for t in range(NUM_FRAMES):
        reqs = [request(IMAGE=streams[sid][t][None], CORRID=sid, START=t == 0, END=t == NUM_FRAMES - 1)
                for sid in got]
        reqs.append(request(IMAGE=np.zeros((1, 1, 1, 3), np.uint8), READY=False))  # a padding slot
        outs = model.execute(reqs)
        for sid, out in zip(got, outs):
            assert not isinstance(out, Exception), out
            got[sid].append(hm.results_from_tensors(out.get))
        assert len(hm.results_from_tensors(outs[-1].get)) == 0  # padding: answered, no state touched
        assert outs[0]["TIMING"].shape == (1, len(hm.TIMING_STAGES)) and outs[0]["TIMING"][0, -1] > 0
        assert len(model.streams) == (0 if t == NUM_FRAMES - 1 else 2)  # END freed both streams
    for sid, results in got.items():
        assert_same_hands(results, run_local(repo, streams[sid]), atol=1e-4, what=f"stream {sid}")
    assert_stable_ids(got[ONE_HAND], 1)
    assert_stable_ids(got[TWO_HANDS], 2)

    # idle streams expire with the timeout Triton uses (max_sequence_idle_microseconds = 30 s)
    model.execute([request(IMAGE=streams[ONE_HAND][0][None], CORRID=5, START=True)])
    now[0] = 31.0
    model.execute([request(IMAGE=streams[ONE_HAND][1][None], CORRID=6, START=True)])
    assert model.streams.ids() == [6] and model.streams.expired == 1


def test_timing_stages_are_the_pipelines():
    from shared.inference.pipeline import STAGES

    assert hm.TIMING_STAGES == STAGES


@pytest.mark.parametrize("inputs, message", [
    # two frames in one request of a stateful model
    ({"IMAGE": np.zeros((2, 64, 64, 3), np.uint8)}, "send exactly one frame per request"),
    # a frame too small to hold a hand
    ({"IMAGE": np.zeros((1, 8, 8, 3), np.uint8)}, "at least 16x16"),
    # a timestamp that is not a number
    ({"IMAGE": np.zeros((1, 64, 64, 3), np.uint8), "TIMESTAMP": np.array([[np.nan]])}, "TIMESTAMP must be a finite"),
    # no image at all
    ({}, "missing input IMAGE"),
])
def test_pipeline_model_answers_bad_requests_with_an_error(deployed, inputs, message, tmp_path):
    repo, _ = deployed
    model = pipeline_model(repo, "bls", tmp_path)
    good = request(IMAGE=np.zeros((1, 64, 64, 3), np.uint8), CORRID=2, START=True)
    bad, ok = model.execute([request(**inputs, CORRID=1, START=True), good])
    assert isinstance(bad, hm.RequestError) and message in hm.error_message("hand_pipeline", bad), bad
    assert isinstance(ok, dict) and len(hm.results_from_tensors(ok.get)) == 0  # the batch goes on


def test_tracker_model_matches_hand_tracker_per_stream(deployed):
    from shared.tracking import HandTracker, TrackerConfig, synthetic_tracks

    repo, _ = deployed
    config = model_config(repo, hm.MODEL_TRACKER)
    model = hm.TrackerModel(config, repo / hm.MODEL_TRACKER / "1")
    tracker_cfg = TrackerConfig(**hm.model_parameters(config)["tracker"])
    seqs = {1: synthetic_tracks(seed=1, num_frames=30), 2: synthetic_tracks(seed=2, num_frames=30)}
    local = {sid: HandTracker(tracker_cfg) for sid in seqs}
    for t in range(30):
        for sid, frames in seqs.items():
            hands = HandResults(xyxy=frames[t].xyxy, score=np.full(len(frames[t].ids), 0.9))
            inputs = {hm.DETECTION_PREFIX + s.name: getattr(hands, hm.RESULT_FIELDS[s.name])[None]
                      for s in hm.HAND_TENSORS[:-1]}
            (out,) = model.execute([request(**inputs, CORRID=sid, START=t == 0)])
            want = local[sid].update(hands)
            np.testing.assert_array_equal(out["TRACK_ID"][0], want.track_id, err_msg=f"stream {sid} frame {t}")
    bad = {hm.DETECTION_PREFIX + "XYXY": np.zeros((1, 2, 4), np.float32)}
    bad.update({hm.DETECTION_PREFIX + s.name: np.zeros((1, 3, *s.shape[1:]), s.dtype)
                for s in hm.HAND_TENSORS[1:-1]})
    (err,) = model.execute([request(**bad, CORRID=9, START=True)])
    assert isinstance(err, hm.RequestError) and "disagree" in str(err)


def test_detection_pre_and_postprocess_match_the_palm_detector(deployed, streams):
    repo, _ = deployed
    pre = hm.PreprocessModel(model_config(repo, hm.MODEL_PREPROCESS), repo / hm.MODEL_PREPROCESS / "1")
    net = hm.OnnxModel(model_config(repo, hm.MODEL_DETECTOR), repo / hm.MODEL_DETECTOR / "1")
    post = hm.PostprocessModel(model_config(repo, hm.MODEL_POSTPROCESS), repo / hm.MODEL_POSTPROCESS / "1")
    frame = streams[TWO_HANDS][0]
    (x,) = pre.execute([request(IMAGE=frame[None])])
    (raw,) = net.execute([x.get])
    (out,) = post.execute([{**raw, **x}.get])
    want = hm.local_pipeline(repo).detector([frame])[0]
    assert len(want) == 2
    np.testing.assert_allclose(out["XYXY"][0], want.xyxy, atol=1e-4)
    np.testing.assert_allclose(out["ROIS"][0], [r.as_array() for r in want.rois], atol=1e-4)


@pytest.mark.parametrize("hw", [(480, 640), (512, 384), (300, 300), (1080, 1920)])
def test_yolo_letterbox_matches_ultralytics(hw):
    from ultralytics.data.augment import LetterBox

    image = np.random.default_rng(hw[0]).integers(0, 255, (*hw, 3), dtype=np.uint8)
    x, lb = detectors.yolo_letterbox(image, 640)
    want = LetterBox(new_shape=(640, 640), auto=False)(image=image)  # what Ultralytics' predictor feeds
    np.testing.assert_array_equal(np.round(x * 255).astype(np.uint8).transpose(1, 2, 0), want)
    assert lb[0] == pytest.approx(lb[1], rel=0.01) and lb[2] >= 0 and lb[3] >= 0


def test_yolo_decode_matches_ultralytics_nms():
    """Served YOLO post-processing vs Ultralytics' own NMS + rescaling on a pose output with
    overlapping candidates (one class, 21 keypoints)."""
    import torch
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(0)
    anchors, k = 50, 21
    pred = np.zeros((4 + 1 + k * 3, anchors), np.float32)
    centres = rng.uniform(100, 540, (anchors, 2))
    centres[10:20] = centres[0] + rng.normal(0, 4, (10, 2))  # a cluster NMS must merge
    pred[0:2] = centres.T
    pred[2:4] = rng.uniform(60, 160, (2, anchors))
    pred[4] = rng.uniform(0, 1, anchors)  # distinct scores
    kp = np.concatenate([centres[:, None] + rng.normal(0, 30, (anchors, k, 2)), rng.uniform(0, 1, (anchors, k, 1))],
                        -1)
    pred[5:] = kp.reshape(anchors, -1).T
    image_hw = (480, 640)
    lb = np.array([1.0, 1.0, 0.0, 80.0], np.float32)  # 640x480 letterboxed into 640x640: pad 80 at the top
    spec = detectors.DetectorSpec(kind="yolo", input_name="images", output_names=("output0",), img_size=640,
                           score_threshold=0.25, nms_threshold=0.7, max_detections=10, num_classes=1,
                           kpt_shape=(k, 3))
    got = detectors.yolo_decode(pred, lb, image_hw, spec)
    (want,) = non_max_suppression(torch.from_numpy(pred[None]), conf_thres=0.25, iou_thres=0.7, max_det=10, nc=1)
    want = want.numpy()
    boxes = ops.scale_boxes((640, 640), want[:, :4].copy(), image_hw)
    assert len(got) == len(want) > 3
    np.testing.assert_allclose(got.score, want[:, 4], atol=1e-6)
    np.testing.assert_allclose(got.xyxy, boxes, atol=1e-3)
    assert all(r.size > 0 for r in got.rois)


# ---------------------------------------------------------------------------------------------
# a real tritonserver
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(start_triton, deployed):
    repo, _ = deployed
    # explicit: every model loads at start, and the last test can reload hand_pipeline after a redeploy
    return start_triton(repo, model_control_mode="explicit")


@pytest.fixture
def client(server):
    from shared.serving.triton_backend import TritonHandClient

    c = TritonHandClient(server.grpc_url)
    yield c
    c.close()


REFERENCE = """
import sys
import numpy as np
from shared.serving.models import local_pipeline

repo, frames, out = sys.argv[1:4]
data, results = np.load(frames), {}
for key in data.files:  # one stream per key
    pipe = local_pipeline(repo)
    for t, frame in enumerate(data[key]):
        hands = pipe.process(frame)
        for field in ("xyxy", "keypoints", "track_id", "gesture"):
            results[f"{key}/{t}/{field}"] = getattr(hands, field)
np.savez(out, **results)
"""


@pytest.fixture(scope="module")
def reference(triton_install, deployed, streams, tmp_path_factory) -> dict[int, list[HandResults]]:
    """The in-process pipeline run by the interpreter the server's python models use: the
    same numpy/OpenCV/onnxruntime builds, so any difference is the serving path's."""
    repo, _ = deployed
    return reference_in_server_venv(triton_install, repo, streams, tmp_path_factory.mktemp("reference"))


def reference_in_server_venv(install, repo: Path, streams: dict, tmp_path: Path) -> dict[int, list[HandResults]]:
    np.savez(tmp_path / "frames.npz", **{str(k): np.stack(v) for k, v in streams.items()})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    subprocess.run([str(install.python), "-c", REFERENCE, str(repo), str(tmp_path / "frames.npz"),
                    str(tmp_path / "ref.npz")], cwd=PROJECT_ROOT, env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
                   check=True, timeout=300)
    data = np.load(tmp_path / "ref.npz")
    return {sid: [HandResults(**{f: data[f"{sid}/{t}/{f}"] for f in ("xyxy", "keypoints", "track_id", "gesture")})
                  for t in range(len(frames))] for sid, frames in streams.items()}


@pytest.mark.triton
def test_server_loads_every_model(server, client):
    index = {m.name: m.state for m in client.client.get_model_repository_index().models}
    assert index == {name: "READY" for name in hm.MODELS}


@pytest.mark.triton
def test_hands_answers_a_plain_rest_request_without_a_sequence_id(server, deployed):
    """`hands` (stateless): a generic client POSTs one photo as JSON to Triton's HTTP/REST v2 API
    (what `curl` sends; no correlation id, no handops code on the client) and gets the hands
    `components.infer` finds in static mode; the label names are in the model's config."""
    import urllib.request

    from shared.inference.pipeline import HandPipeline, PipelineConfig

    repo, _ = deployed
    bgr = cv2.imread(str(photos_of(HAGRID / "images" / "palm")[0]))
    rgb = cv2.cvtColor(cv2.resize(bgr, (192, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    body = {"inputs": [{"name": "IMAGE", "shape": [1, *rgb.shape], "datatype": "UINT8", "data": rgb.ravel().tolist()}],
            "outputs": [{"name": n} for n in ("XYXY", "KEYPOINTS", "GESTURE", "GESTURE_SCORE", "TRACK_ID")]}
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{hm.MODEL_HANDS}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in json.load(resp)["outputs"]}
    served = hm.served_parameters(repo, hm.MODEL_HANDS)["pipeline"]
    assert served["static"] is True
    want = HandPipeline(PipelineConfig(**served)).process(rgb)
    assert len(want) >= 1 and got["XYXY"].shape == (1, len(want), 4)
    np.testing.assert_allclose(got["XYXY"][0], want.xyxy, atol=0.01, rtol=0)
    np.testing.assert_allclose(got["KEYPOINTS"][0][..., :2], want.keypoints[..., :2], atol=0.01, rtol=0)
    np.testing.assert_array_equal(got["GESTURE"][0], want.gesture)
    assert (got["GESTURE"][0] >= 0).all() and (got["TRACK_ID"][0] == -1).all()  # a gesture each, no tracks
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{hm.MODEL_HANDS}/config", timeout=30) as resp:
        params = json.load(resp)["parameters"]
    names = json.loads(params["gesture_names"]["string_value"])
    assert names[str(int(got["GESTURE"][0][0]))] in ("2_hands", "fist", "normal_hand", "pinch", "pointer")
    assert names["-2"] == "unknown" and json.loads(params["handedness_names"]["string_value"])["1"] == "right"

    # The binary extension (README: a real frame as raw bytes after a JSON header, what
    # `curl --data-binary` sends with an Inference-Header-Content-Length header).
    full = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    head = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1, *full.shape], "datatype": "UINT8",
                                   "parameters": {"binary_data_size": full.nbytes}}],
                       "outputs": [{"name": "XYXY", "parameters": {"binary_data": False}},
                                   {"name": "GESTURE", "parameters": {"binary_data": False}}]}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{hm.MODEL_HANDS}/infer",
                                     data=head + full.tobytes(),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Inference-Header-Content-Length": str(len(head))})
    with urllib.request.urlopen(request, timeout=60) as resp:
        got = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in json.load(resp)["outputs"]}
    want = HandPipeline(PipelineConfig(**served)).process(full)
    np.testing.assert_allclose(got["XYXY"][0], want.xyxy, atol=0.01, rtol=0)
    np.testing.assert_array_equal(got["GESTURE"][0], want.gesture)


@pytest.mark.triton
def test_hands_over_tritonclient_http_with_gesture_labels(server):
    """Plain `tritonclient.http`, no sequence id: `hands` finds the hand of a real photo, and
    `class_count` on GESTURE_PROBS names its gesture ("score:index:label", hand = index // G)."""
    import tritonclient.http as httpclient

    from shared.hand import GESTURES

    bgr = cv2.imread(str(photos_of(HAGRID / "images" / "palm")[0]))
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None])
    client = httpclient.InferenceServerClient(server.http_url)
    image = httpclient.InferInput("IMAGE", list(rgb.shape), "UINT8")
    image.set_data_from_numpy(rgb, binary_data=True)  # the binary extension: raw bytes, not JSON numbers
    outputs = [httpclient.InferRequestedOutput("GESTURE"), httpclient.InferRequestedOutput("GESTURE_SCORE"),
               httpclient.InferRequestedOutput("XYXY"),
               httpclient.InferRequestedOutput("GESTURE_PROBS", binary_data=False, class_count=1)]
    result = client.infer(hm.MODEL_HANDS, [image], outputs=outputs)
    boxes, gesture = result.as_numpy("XYXY")[0], result.as_numpy("GESTURE")[0]
    assert len(boxes) >= 1 and gesture[0] >= 0
    top = np.asarray(result.as_numpy("GESTURE_PROBS")).reshape(-1)[0]  # JSON: str, binary: bytes
    score, index, label = (top.decode() if isinstance(top, bytes) else str(top)).split(":")
    hand, cls = divmod(int(index), len(GESTURES))
    assert label == GESTURES[cls] and hand < len(boxes)
    assert label == GESTURES[gesture[hand]]
    assert abs(float(score) - float(result.as_numpy("GESTURE_SCORE")[0][hand])) < 1e-4
    client.close()


@pytest.mark.triton
def test_gesture_probabilities_come_with_their_names(server, client, deployed):
    """Triton's classification extension on the crop model: `class_count` gives "score:index:label"."""
    import tritonclient.grpc as grpcclient

    from shared.hand import GESTURES

    repo, _ = deployed
    assert (repo / hm.MODEL_LANDMARKS / "gesture_probs.labels.txt").read_text().split() == list(GESTURES)
    meta = client.client.get_model_metadata(hm.MODEL_LANDMARKS)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    inp = grpcclient.InferInput(meta.inputs[0].name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.client.infer(hm.MODEL_LANDMARKS, [inp],
                                 outputs=[grpcclient.InferRequestedOutput("gesture_probs", class_count=3)])
    top = [v.decode().split(":") for v in result.as_numpy("gesture_probs").reshape(-1)]
    assert len(top) == 3 and all(label == GESTURES[int(index)] for _, index, label in top)
    assert [float(score) for score, _, _ in top] == sorted((float(score) for score, _, _ in top), reverse=True)


@pytest.mark.triton
def test_interleaved_streams_match_the_in_process_pipeline(server, client, deployed, streams, reference):
    from shared.serving.triton_backend import TritonHandClient

    repo, _ = deployed
    got: dict[int, list[HandResults]] = {sid: [] for sid in streams}
    for t in range(NUM_FRAMES):  # one request per stream in turn: the streams interleave on the server
        for sid, frames in streams.items():
            got[sid].append(client.infer(frames[t], stream_id=sid, start=t == 0, end=t == NUM_FRAMES - 1))
    for sid in streams:
        assert_same_hands(got[sid], reference[sid], atol=1e-2, what=f"stream {sid}")
    assert_stable_ids(got[ONE_HAND], 1)
    assert_stable_ids(got[TWO_HANDS], 2)
    assert sum(len(r) for r in got[SYNTHETIC]) > 0  # BlazePalm finds the rendered hands too

    # Against the in-process pipeline of THIS interpreter (numpy 2; the server's has numpy<2):
    # the same answer, since both venvs pin one OpenCV (test_both_venvs_pin_the_same_crop_libraries).
    for sid in (ONE_HAND, TWO_HANDS):
        assert_same_hands(got[sid], run_local(repo, streams[sid]), atol=1e-2, what=f"stream {sid} (this venv)")

    # The same streams sent concurrently from two threads (new ids), frames inside the gRPC
    # messages this time: Triton batches the streams' requests into one execute() of
    # hand_pipeline, and the answers do not change.
    concurrent: dict[int, list[HandResults]] = {}
    errors: list[BaseException] = []

    assert client.uses_shared_memory  # a loopback server: frames went through /dev/shm above

    def run(sid: int, frames: list[np.ndarray]) -> None:
        try:
            with TritonHandClient(server.grpc_url, shared_memory="off") as c:  # frames inside the messages
                s = c.stream(sid)
                concurrent[sid] = [s.send(f, last=i == len(frames) - 1) for i, f in enumerate(frames)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(100 + sid, streams[sid])) for sid in (ONE_HAND, TWO_HANDS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    for sid in (ONE_HAND, TWO_HANDS):
        assert_same_hands(concurrent[100 + sid], reference[sid], atol=1e-2, what=f"concurrent stream {sid}")


@pytest.mark.triton
def test_sixteen_concurrent_streams_keep_their_own_tracks(server, deployed, streams, reference):
    """16 streams at once from 16 threads (8 showing one hand, 8 showing two): Triton's `oldest`
    sequence batcher puts frames of several streams into one batched hand_pipeline call, and
    every stream still gets exactly its own answers (ids 1..hands, no cross-talk)."""
    from shared.serving.triton_backend import TritonHandClient
    from shared.serving.triton_config import parse_pbtxt

    repo, _ = deployed
    config = parse_pbtxt((repo / hm.MODEL_PIPELINE / "config.pbtxt").read_text())
    assert config.sequence_batching.HasField("oldest") and config.max_batch_size >= 2
    kinds = {300 + k: (ONE_HAND, TWO_HANDS)[k % 2] for k in range(16)}

    def counts() -> tuple[int, int]:
        with TritonHandClient(server.grpc_url) as c:
            st = c.client.get_inference_statistics(hm.MODEL_PIPELINE).model_stats[0]
        return st.inference_count, st.execution_count

    before = counts()
    got: dict[int, list[HandResults]] = {}
    errors: list[BaseException] = []

    def run(sid: int) -> None:
        try:
            with TritonHandClient(server.grpc_url, shared_memory="off", timing=True) as c:
                s = c.stream(sid)
                frames = streams[kinds[sid]]
                got[sid] = [s.send(f, last=i == len(frames) - 1) for i, f in enumerate(frames)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(sid,)) for sid in kinds]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    after = counts()
    frames, calls = after[0] - before[0], after[1] - before[1]
    assert frames == 16 * NUM_FRAMES and calls < frames  # streams shared calls
    for sid, kind in kinds.items():
        assert_same_hands(got[sid], reference[kind], atol=1e-2, what=f"stream {sid}")
        assert_stable_ids(got[sid], 1 if kind == ONE_HAND else 2)


@pytest.mark.triton
@pytest.mark.parametrize("case, message", [
    ("wrong_dtype", "expects 'UINT8'"),
    ("wrong_shape", "unexpected shape for input 'IMAGE'"),
    ("no_batch_axis", "batch-size must be <= 4"),
    ("missing_stream_id", "correlation ID"),
    ("two_frames_in_one_request", "must specify batch-size 1"),  # the sequence batcher itself
    ("tiny_image", "at least 16x16"),
    ("no_start", "must specify the START flag"),
])
def test_malformed_requests_get_clear_errors(server, client, streams, case, message):
    from tritonclient.utils import InferenceServerException

    from shared.serving.triton_backend import make_input

    frame = streams[ONE_HAND][0]

    def send(image, sid, start=True):
        return client.client.infer(hm.MODEL_PIPELINE, [make_input("IMAGE", image)], sequence_id=sid,
                                   sequence_start=start, sequence_end=True)

    calls = {
        "wrong_dtype": lambda: send(frame[None].astype(np.float32), 901),
        "wrong_shape": lambda: send(frame[None, :, :, 0], 902),  # [1, H, W]: no channel axis
        "no_batch_axis": lambda: send(frame, 903),  # [H, W, 3]: H is read as the batch size
        "missing_stream_id": lambda: send(frame[None], 0),
        "two_frames_in_one_request": lambda: send(np.stack([frame, frame]), 904),
        "tiny_image": lambda: send(frame[None, :8, :8], 905),
        "no_start": lambda: send(frame[None], 906, start=False),
    }
    with pytest.raises(InferenceServerException, match=message):
        calls[case]()
    # ... and the server keeps serving
    hands = client.infer(frame, stream_id=907, start=True, end=True)
    assert len(hands) == 1 and hands.track_id.tolist() == [1]


@pytest.mark.triton
def test_tracker_and_detection_models_over_grpc(server, client, deployed, streams):
    from shared.serving.triton_backend import make_input
    from shared.tracking import HandTracker, TrackerConfig, synthetic_tracks

    repo, _ = deployed
    frame = streams[TWO_HANDS][0]
    r = client.client.infer(hm.MODEL_DETECTION, [make_input("IMAGE", frame[None])])
    want = hm.local_pipeline(repo).detector([frame])[0]
    np.testing.assert_allclose(r.as_numpy("XYXY")[0], want.xyxy, atol=1e-3)
    np.testing.assert_allclose(r.as_numpy("ROIS")[0], [roi.as_array() for roi in want.rois], atol=1e-3)

    tracker_cfg = TrackerConfig(**hm.model_parameters(model_config(repo, hm.MODEL_TRACKER))["tracker"])
    seqs = {801: synthetic_tracks(seed=4, num_frames=20), 802: synthetic_tracks(seed=5, num_frames=20)}
    local = {sid: HandTracker(tracker_cfg) for sid in seqs}
    for t in range(20):
        for sid, frames in seqs.items():
            hands = HandResults(xyxy=frames[t].xyxy, score=np.full(len(frames[t].ids), 0.9))
            inputs = [make_input(hm.DETECTION_PREFIX + s.name, getattr(hands, hm.RESULT_FIELDS[s.name])[None])
                      for s in hm.HAND_TENSORS[:-1]]
            out = client.client.infer(hm.MODEL_TRACKER, inputs, sequence_id=sid, sequence_start=t == 0,
                                      sequence_end=t == 19)
            np.testing.assert_array_equal(out.as_numpy("TRACK_ID")[0], local[sid].update(hands).track_id)


@pytest.mark.triton
def test_client_cli_writes_what_infer_writes(server, deployed, streams, tmp_path):
    from shared.inference.io import read_results

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t, frame in enumerate(streams[ONE_HAND]):
        cv2.imwrite(str(frames_dir / f"{t:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (frames_dir / "999_corrupt.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "components.client", "--url", server.grpc_url, "--input_dir",
                           str(frames_dir), "--stream_id", "77", "--output_dir", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_results(out / "results.jsonl")
    assert [(i, name) for i, name, _ in rows] == [(t, f"{t:03d}.png") for t in range(NUM_FRAMES)]
    assert_stable_ids([r for _, _, r in rows], 1)
    assert len((out / "tracks.txt").read_text().splitlines()) == NUM_FRAMES
    assert len(list((out / "annotated").glob("*.png"))) == NUM_FRAMES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == NUM_FRAMES and summary["skipped"] == 1 and summary["hands"] == NUM_FRAMES
    # no server: one line naming the fix
    from shared.serving.server import free_port

    done = subprocess.run([sys.executable, "-m", "components.client", "--url", f"127.0.0.1:{free_port()}",
                           "--input_dir", str(frames_dir), "--output_dir", str(tmp_path / "out2")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "components.serve" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.triton
def test_triton_runner_serves_the_crop_model_to_an_in_process_pipeline(server, deployed, streams):
    from shared.inference.backends import ModelRef, create_crop_model
    from shared.inference.pipeline import HandPipeline
    from shared.serving.triton_backend import register

    repo, _ = deployed
    register()
    crop = create_crop_model("triton", ModelRef("blazehand_full", "mediapipe", options={"url": server.grpc_url}))
    local = hm.local_pipeline(repo)
    assert crop.backend == "triton" and crop.runner.max_batch == 8 and not crop.gesture_trained
    pipe = HandPipeline(local.cfg, detector=local.detector, crop_model=crop)
    got = [pipe.process(f) for f in streams[TWO_HANDS]]
    assert_same_hands(got, run_local(repo, streams[TWO_HANDS]), atol=1e-3, what="triton runner")


# ---------------------------------------------------------------------------------------------
# one answer everywhere: Triton vs in-process onnxruntime vs in-process torch, real frames
# ---------------------------------------------------------------------------------------------
ROBOFLOW = PROJECT_ROOT.parent / "shared" / "data" / "roboflow_gestures_v6"
PARITY_PX = 0.01  # landmarks and boxes, pixels of the frame


def real_photos() -> list[np.ndarray]:
    """Unrelated real photos (RGB): the first HaGRID image of every gesture folder (512x683 or
    683x512, people with one or two hands) and every 10th Roboflow image (224x224 hand shots)."""
    hagrid = [sorted((HAGRID / "images" / g.name).glob("*.jpg"))[0] for g in sorted((HAGRID / "images").iterdir())]
    roboflow = sorted((ROBOFLOW / "images").glob("*.jpg"))[::10]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in hagrid + roboflow]


def real_video(num_frames: int = 16) -> list[np.ndarray]:
    """A video-like sequence: one HaGRID photo with two hands (four/0ef1d374), a 480x360 window
    around both panned and zoomed over it."""
    image = cv2.cvtColor(cv2.imread(str(next((HAGRID / "images" / "four").glob("0ef1d374*.jpg")))),
                         cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    frames = []
    for t in range(num_frames):
        scale = 0.6 + 0.01 * t  # zoom in
        cx, cy = w * (0.58 + 0.004 * t), h * (0.56 - 0.003 * t)  # pan
        m = np.float32([[scale, 0, 240 - scale * cx], [0, scale, 180 - scale * cy]])
        frames.append(cv2.warpAffine(image, m, (480, 360), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames


def max_px_diff(got: list[HandResults], want: list[HandResults]) -> float:
    """Largest landmark / box difference (pixels) over frames whose hand counts agree."""
    diffs = [0.0] + [float(max(np.abs(g.keypoints[..., :2] - w.keypoints[..., :2]).max(),
                               np.abs(g.xyxy - w.xyxy).max()))
                     for g, w in zip(got, want) if len(g) == len(w) and len(g)]
    return max(diffs)


def assert_same_ids_and_gestures(got: list[HandResults], want: list[HandResults], what: str) -> None:
    assert len(got) == len(want), what
    for t, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w), f"{what} frame {t}: {len(g)} hands, expected {len(w)}"
        np.testing.assert_array_equal(g.track_id, w.track_id, err_msg=f"{what} frame {t}: track ids")
        np.testing.assert_array_equal(g.gesture, w.gesture, err_msg=f"{what} frame {t}: gestures")


def test_both_venvs_pin_the_same_crop_libraries(triton_install):
    """The crop warp (cv2.warpAffine) and the palm letterbox (cv2.resize) run in this venv and
    in the Triton venv: one OpenCV build for both (5.x warps differ from 4.11 by up to 5 grey
    levels, which moved landmarks by 0.85 px on photos and 2.2 px on a tracked video), and one
    onnxruntime. Both requirement files pin them; both venvs import them."""
    import re

    import onnxruntime

    pins = {}
    for name in ("requirements.txt", "requirements-triton.txt"):
        text = (PROJECT_ROOT / name).read_text()
        pins[name] = {pkg: set(re.findall(rf"^{pkg}==(\S+)", text, re.M))
                      for pkg in ("opencv-python-headless", "opencv-python", "onnxruntime")}
    main, triton = pins["requirements.txt"], pins["requirements-triton.txt"]
    assert len(main["opencv-python-headless"]) == 1 and main["opencv-python"] == main["opencv-python-headless"], main
    assert triton["opencv-python-headless"] == main["opencv-python-headless"], pins
    assert triton["onnxruntime"] == main["onnxruntime"], pins
    (cv_pin,) = main["opencv-python-headless"]
    here = (cv2.__version__, onnxruntime.__version__)
    done = subprocess.run([str(triton_install.python), "-c",
                           "import cv2, onnxruntime; print(cv2.__version__, onnxruntime.__version__)"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert tuple(done.stdout.split()) == here, f"triton venv {done.stdout.split()} vs this venv {here}"
    assert cv_pin.startswith(cv2.__version__ + "."), f"cv2 {cv2.__version__} imported, {cv_pin} pinned"


@pytest.mark.triton
def test_triton_onnxruntime_and_torch_give_one_answer_on_real_frames(server, client, deployed, monkeypatch):
    """43 real frames (27 photos, one per stream: START + END; a 16-frame tracked video) through
    the deployed hand_pipeline (tritonserver, .venv-triton, numpy 1.26) and through the
    in-process pipeline of this venv (numpy 2) built from the user's config
    (`PipelineConfig(backend=...)`, own ONNX exports), on onnxruntime and on torch.

    - onnxruntime: the same hands, track ids and gestures, landmarks within 0.01 px (with one
      OpenCV they are bit-identical: 0.0 px; with OpenCV 5.0/5.1 here they were 0.85 / 2.2 px apart).
    - torch: the same hands, track ids and gestures; its networks give onnxruntime's landmarks
      and palm ROIs within 0.01 px on the same inputs (measured 1.5e-4 px). End to end its
      landmarks are not held to 0.01 px: a 1e-4 px difference in a ROI moves pixels of the
      uint8 crop warp (OpenCV interpolates at 1/32 px steps), which moved landmarks by up to
      0.1 px on a photo; in tracking mode each frame's ROI comes from the last landmarks and
      the difference grows (1.5 px after 16 frames, on one hand of the video)."""
    import shared.inference.pipeline as pipeline_module
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    if not ROBOFLOW.is_dir():
        pytest.skip(f"no {ROBOFLOW}")
    repo, _ = deployed
    # the settings hand_pipeline was deployed with, as a user would write them in-process
    served = PipelineConfig(**hm.served_parameters(repo, hm.MODEL_PIPELINE)["pipeline"])
    photos, video = real_photos(), real_video()
    assert len(photos) + len(video) >= 24

    served_photos = [client.infer(p, stream_id=500 + i, start=True, end=True) for i, p in enumerate(photos)]
    stream = client.stream(600)
    served_video = [stream.send(f, last=i == len(video) - 1) for i, f in enumerate(video)]
    assert sum(len(r) for r in served_photos) >= len(photos) // 2  # hands on most photos
    assert all(len(r) == 2 for r in served_video[1:])  # both hands followed through the video

    # every crop batch the in-process pipelines build, with its crop -> image affines
    crops: list[tuple[np.ndarray, np.ndarray]] = []
    crops_batch = pipeline_module.crops_batch

    def recording_crops_batch(image, rois, size, sampling="mediapipe"):
        x, inverse = crops_batch(image, rois, size, sampling)
        crops.append((x, inverse))
        return x, inverse

    monkeypatch.setattr(pipeline_module, "crops_batch", recording_crops_batch)
    local, pipes = {}, {}
    for backend in ("onnxruntime", "torch"):
        pipes[backend] = pipe = HandPipeline(dataclasses.replace(served, backend=backend))
        local_photos = []
        for p in photos:
            pipe.reset()
            local_photos.append(pipe.process(p))
        pipe.reset()
        local[backend] = (local_photos, [pipe.process(f) for f in video])
    print("max px difference triton vs in-process (photos, video):",
          {b: (max_px_diff(served_photos, ph), max_px_diff(served_video, vi)) for b, (ph, vi) in local.items()})

    ort_photos, ort_video = local["onnxruntime"]
    assert_same_ids_and_gestures(served_photos, ort_photos, "photos, triton vs in-process onnxruntime")
    assert_same_ids_and_gestures(served_video, ort_video, "video, triton vs in-process onnxruntime")
    for what, got, want in (("photos", served_photos, ort_photos), ("video", served_video, ort_video)):
        diff = max_px_diff(got, want)
        assert diff <= PARITY_PX, f"{what}: triton and in-process onnxruntime differ by up to {diff:.4f} px"

    torch_photos, torch_video = local["torch"]
    assert_same_ids_and_gestures(served_photos, torch_photos, "photos, triton vs in-process torch")
    assert_same_ids_and_gestures(served_video, torch_video, "video, triton vs in-process torch")
    # the torch networks on the very inputs onnxruntime saw: crop model (landmarks in frame
    # pixels through each crop's affine) and palm detector (ROI corners in pixels)
    lm_diff = 0.0
    for x, inverse in crops:
        a, b = (pipes[k].crop_model(x)["landmarks"][..., :2].astype(np.float64) for k in ("onnxruntime", "torch"))
        lm_diff = max(lm_diff, float(np.abs(np.einsum("bkj,bij->bki", a - b, inverse[:, :, :2])).max()))
    roi_diff = 0.0
    for frame in photos + video:
        a, b = (pipes[k].detector([frame])[0] for k in ("onnxruntime", "torch"))
        assert len(a) == len(b)
        for ra, rb in zip(a.rois, b.rois):
            roi_diff = max(roi_diff, float(np.abs(ra.corners() - rb.corners()).max()))
    print(f"torch vs onnxruntime on the same inputs: landmarks {lm_diff:.2e} px, palm ROIs {roi_diff:.2e} px "
          f"({len(crops)} crop batches)")
    assert lm_diff <= PARITY_PX and roi_diff <= PARITY_PX, (lm_diff, roi_diff)


@pytest.mark.triton
def test_redeploy_with_local_networks_is_picked_up(server, client, deployed, streams, reference):
    # Runs last in this module: hand_pipeline becomes version 2, running its networks in-process.
    from components.deploy import DeployConfig, deploy

    repo, first = deployed
    result = deploy(DeployConfig(triton_repo=str(repo), backend="python", onnx=first.files["hand_onnx"],
                                 palm_onnx=first.files["detector_onnx"], max_streams=4, keep_versions=2,
                                 pipeline_networks="local"))
    assert result.models[hm.MODEL_PIPELINE] == 2
    assert (repo / hm.MODEL_PIPELINE / "2" / hm.LOCAL_FILES[hm.MODEL_LANDMARKS]).is_file()
    # explicit mode: reload = read the new version; version 1 (still kept) reloads with its own
    # params.json, which says bls, although config.pbtxt now carries version 2's settings
    client.client.load_model(hm.MODEL_PIPELINE)
    assert client.client.is_model_ready(hm.MODEL_PIPELINE, "1") and client.client.is_model_ready(hm.MODEL_PIPELINE, "2")
    stream = client.stream(401)
    got = [stream.send(f, last=i == NUM_FRAMES - 1) for i, f in enumerate(streams[TWO_HANDS])]
    assert_same_hands(got, reference[TWO_HANDS], atol=1e-2, what="hand_pipeline v2 (local networks)")
    stats = client.client.get_inference_statistics(hm.MODEL_PIPELINE).model_stats
    assert {s.version for s in stats if s.inference_count} >= {"2"}


@pytest.mark.triton
def test_int8_deployed_to_triton_gives_the_in_process_int8_answer(start_triton, tmp_path):
    """`components.deploy --precision int8` serves the shipped int8 BlazeHand: real photos through a
    real tritonserver give what `HandPipeline(precision="int8")` gives in-process (same hands and
    gestures, landmarks within 0.01 px), and the int8 model is what was served."""
    from components.deploy import DeployConfig, deploy
    from shared.inference.backends import INT8_MODEL
    from shared.inference.pipeline import HandPipeline, PipelineConfig
    from shared.serving.triton_backend import TritonHandClient

    if not ROBOFLOW.is_dir():
        pytest.skip(f"no {ROBOFLOW}")
    result = deploy(DeployConfig(triton_repo=str(tmp_path / "repo"), backend="python", precision="int8",
                                 work_dir=str(tmp_path / "exports"), max_streams=2, pipeline_networks="local"))
    repo = Path(result.triton_repo)
    served_files = list(repo.rglob("*.onnx"))
    assert any(p.read_bytes() == INT8_MODEL.read_bytes() for p in served_files), served_files
    server = start_triton(repo)
    client = TritonHandClient(server.grpc_url)
    try:
        photos = real_photos()
        served = [client.infer(p, stream_id=700 + i, start=True, end=True) for i, p in enumerate(photos)]
    finally:
        client.close()
    cfg = PipelineConfig(**hm.served_parameters(repo, hm.MODEL_PIPELINE)["pipeline"])
    pipe = HandPipeline(dataclasses.replace(cfg, backend="onnxruntime", precision="int8"))
    local = []
    for p in photos:
        pipe.reset()
        local.append(pipe.process(p))
    assert sum(len(r) for r in served) >= len(photos) // 2
    assert_same_ids_and_gestures(served, local, "photos, triton int8 vs in-process int8")
    diff = max_px_diff(served, local)
    assert diff <= PARITY_PX, f"triton int8 and in-process int8 differ by up to {diff:.4f} px"
