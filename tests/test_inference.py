"""The hand pipeline, its backends and the inference CLI, on real photos from ../shared/data.

The networks are MediaPipe's own (converted, cached by `make weights`); nothing is mocked.
Slow parts (model loading, ONNX export) happen once per module.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.infer import InferConfig, main, pipeline_config, run_inference
from shared.data.hagrid import read_hagrid
from shared.data.labels import read_labels
from shared.drawing import Annotator
from shared.errors import UserError
from shared.geometry import Roi, apply_affine, iou_matrix
from shared.hand import GESTURES, NUM_KEYPOINTS
from shared.inference.backends import ModelRef, create_crop_model
from shared.inference.detectors import create_detector
from shared.inference.io import read_results
from shared.inference.pipeline import HandPipeline, PipelineConfig, crops_batch, roi_from_landmarks, suppress_duplicates
from shared.results import HandResults
from tests.conftest import real_photos

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mediapipe_hands.json"
PALM_DIR = DATA / "hagrid_sample" / "images" / "palm"


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def shifted_sequence(image: np.ndarray, frames: int, step: float = 3.0) -> list[np.ndarray]:
    """A short "video": the photo sliding right by `step` px per frame (a moving hand)."""
    h, w = image.shape[:2]
    return [cv2.warpAffine(image, np.float32([[1, 0, step * i], [0, 1, 0]]), (w, h), borderMode=cv2.BORDER_REFLECT)
            for i in range(frames)]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def models(work_dir):
    """Detector and crop model per backend, built once (ONNX exported into a temp dir)."""
    out = {}
    for backend in ("torch", "onnxruntime"):
        out[backend] = (
            create_detector("blazepalm", backend=backend, max_detections=4, work_dir=work_dir, threads=1),
            create_crop_model(backend, ModelRef("blazehand", "mediapipe", img_size=224, work_dir=work_dir, threads=1)),
        )
    return out


def make_pipeline(models, backend: str = "onnxruntime", **overrides) -> HandPipeline:
    detector, crop_model = models[backend]
    return HandPipeline(PipelineConfig(backend=backend, **overrides), detector=detector, crop_model=crop_model)


class CountingDetector:
    """The real detector, counting its calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.name = inner, 0, inner.name

    def __call__(self, images):
        self.calls += 1
        return self.inner(images)


# --------------------------------------------------------------------------- pure geometry


def _upright_hand(cx: float = 100.0, cy: float = 100.0, scale: float = 10.0, angle: float = 0.0) -> np.ndarray:
    """21 points of a schematic open hand, fingers up, rotated counter-clockwise on screen by `angle`."""
    pts = [(0, 0)]  # wrist
    for fx, tilt in ((-3, -1.0), (-1.5, -0.2), (0, 0), (1.5, 0.2), (3, 0.4)):  # thumb .. pinky
        pts += [(fx + tilt * k, -3 - 1.5 * k) for k in range(4)]
    local = np.array(pts, float) * scale  # [21, 2], y down
    c, s = math.cos(angle), math.sin(angle)
    return local @ np.array([[c, s], [-s, c]]).T + [cx, cy]


@pytest.mark.parametrize("angle", [
    0.0,  # fingers up: no rotation
    math.pi / 2,  # hand turned a quarter counter-clockwise (fingers to the left)
    -math.pi / 3,  # leaning right
    math.pi,  # upside down
])
def test_roi_from_landmarks_follows_hand_rotation(angle):
    kp = _upright_hand(angle=angle)
    roi = roi_from_landmarks(kp)
    assert abs((roi.angle - angle + math.pi) % (2 * math.pi) - math.pi) < 0.1
    # The ROI centre lies on the hand, between the wrist and the fingertips.
    wrist, tips = kp[0], kp[[8, 12, 16]].mean(0)
    along = np.dot(np.array([roi.cx, roi.cy]) - wrist, tips - wrist) / np.dot(tips - wrist, tips - wrist)
    assert 0.2 < along < 0.8
    # Every landmark lies inside the square (MediaPipe's 2x palm-landmark extent covers fingertips).
    from shared.geometry import image_to_crop

    crop_pts = image_to_crop(kp, roi, 224)
    assert (crop_pts >= 0).all() and (crop_pts <= 224).all()


def test_compiled_crop_warp_is_the_reference_bit_for_bit():
    # warp_roi's compiled fixed-point map (numba) against the documented numpy one (OpenCV 3.4's
    # warpPerspective positions, which rotated ROIs reach through a ~1e-19 perspective term), and its
    # crops against the two-step numpy reference (map, then the integer blend): every position and
    # pixel equal, for ROIs inside, across and outside the image, tiny and huge, rotated any way,
    # both borders, every crop size the pipeline uses
    from shared.geometry import (
        _fixed_point_map_compiled,
        _output_to_image,
        fixed_point_map,
        sample_fixed_point_numpy,
        warp_roi,
    )

    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(20, 700, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        roi = Roi(float(rng.uniform(-80, w + 80)), float(rng.uniform(-80, h + 80)), float(rng.uniform(3, 1200)),
                  float(rng.uniform(-4, 4)))
        for size in (224, 192, 37):
            xy = fixed_point_map(roi, size, size)
            compiled = _fixed_point_map_compiled(np.array(_output_to_image(roi, size, size)), size, size)
            assert all(np.array_equal(a, b) for a, b in zip(xy, compiled)), (roi, size)
            for border in ("replicate", "zero"):
                want = sample_fixed_point_numpy(image, *xy, border=border)
                got, _ = warp_roi(image, roi, size, border)
                assert np.array_equal(got, want), (roi, size, border)


def _pixels(image: np.ndarray, yy: np.ndarray, xx: np.ndarray, border: str) -> np.ndarray:
    """float64 pixels at integer positions; outside the image the edge pixel or 0."""
    h, w = image.shape[:2]
    inside = ((xx >= 0) & (xx < w) & (yy >= 0) & (yy < h))[..., None]
    v = image[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)].astype(np.float64)
    return v if border == "replicate" else v * inside


def test_exact_crop_is_the_unrounded_blend_and_continuous():
    # warp_roi_exact against a numpy bilinear blend at the same (unrounded) positions, both borders;
    # within ~1.5 grey levels of MediaPipe's fixed-point crop; a 1e-4 px ROI shift moves it by
    # hundredths of a grey level at most (MediaPipe's crop moves whole grey levels)
    from shared.geometry import _output_to_image, warp_roi, warp_roi_exact

    rng = np.random.default_rng(3)
    for _ in range(8):
        h, w = (int(v) for v in rng.integers(30, 300, 2))
        image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 2)
        roi = Roi(float(rng.uniform(-20, w + 20)), float(rng.uniform(-20, h + 20)), float(rng.uniform(10, 400)),
                  float(rng.uniform(-3, 3)))
        m = np.array(_output_to_image(roi, 48, 48)).reshape(3, 3)
        v, u = np.mgrid[0:48, 0:48].astype(np.float64)
        d = m[2, 0] * u + m[2, 1] * v + m[2, 2]
        x, y = (m[0, 0] * u + m[0, 1] * v + m[0, 2]) / d, (m[1, 0] * u + m[1, 1] * v + m[1, 2]) / d
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = (x - x0)[..., None], (y - y0)[..., None]
        for border in ("replicate", "zero"):
            def px(yy, xx):
                return _pixels(image, yy, xx, border)  # noqa: B023 - used within this iteration only
            want = ((1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1))
                    + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1)))
            got, _ = warp_roi_exact(image, roi, 48, border)
            assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-3, (roi, border)
        fixed, _ = warp_roi(image, roi, 48)
        exact, _ = warp_roi_exact(image, roi, 48)
        assert np.abs(exact - fixed).max() < 2.0
        moved, _ = warp_roi_exact(image, Roi(roi.cx + 1e-4, roi.cy, roi.size, roi.angle), 48)
        assert np.abs(moved - exact).max() < 0.05


@pytest.mark.skipif(not PALM_DIR.is_dir(), reason="needs ../shared/data (real photos)")
def test_exact_crops_make_torch_and_onnxruntime_agree_on_photos():
    # With MediaPipe's crop, torch's palm ROI (6e-5 px from ONNX Runtime's) moves 156 pixels of this
    # hand's crop by 1-2 grey levels and its landmarks by 0.12 px; exact crops: within 0.01 px
    photos = [DATA / "hagrid_sample" / "images" / "dislike" / "2bd1b211-9088-4a6f-92f4-0ff8514827ed.jpg",
              *real_photos(PALM_DIR)[:4]]
    pipes = {b: HandPipeline(PipelineConfig(static=True, backend=b, threads=1, crop_sampling="exact"))
             for b in ("onnxruntime", "torch")}
    worst = 0.0
    for path in photos:
        rgb = read_rgb(path)
        a, b = pipes["onnxruntime"](rgb), pipes["torch"](rgb)
        assert len(a) == len(b) >= 1
        worst = max(worst, float(np.abs(a.keypoints[..., :2] - b.keypoints[..., :2]).max()))
    assert worst <= 0.01, worst


def test_crops_batch_maps_points_back():
    image = np.zeros((200, 300, 3), np.uint8)
    cv2.circle(image, (120, 80), 4, (255, 255, 255), -1)
    rois = [Roi(120, 80, 60, 0.0), Roi(120, 80, 90, 0.7)]
    x, inverse = crops_batch(image, rois, 64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    for i in range(2):
        ys, xs = np.nonzero(x[i, 0] > 0.5)
        spot = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]])  # pixel centres
        back = apply_affine(spot, inverse[i])[0]
        assert np.allclose(back, [120, 80], atol=1.5)


@pytest.mark.parametrize("boxes,scores,keep", [
    ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0]),  # same hand twice: the better one stays
    ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.7, 0.8], [1]),
    ([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1]),  # two hands
    ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], [0, 1]),  # IoU 1/3: neighbours, both kept
])
def test_suppress_duplicates(boxes, scores, keep):
    got = suppress_duplicates(np.array(boxes, float), np.array(scores), 0.5)
    assert sorted(got.tolist()) == keep


# --------------------------------------------------------------------------- backends and modes


def test_torch_and_onnxruntime_agree(models):
    paths = real_photos(PALM_DIR)[:3]
    outs = {}
    for backend in ("torch", "onnxruntime"):
        pipe = make_pipeline(models, backend, static=True)
        outs[backend] = [pipe.process(read_rgb(p)) for p in paths]
    for a, b in zip(outs["torch"], outs["onnxruntime"]):
        assert len(a) == len(b) >= 1
        assert np.abs(a.keypoints[..., :2] - b.keypoints[..., :2]).max() < 1.0  # pixels
        assert np.abs(a.score - b.score).max() < 1e-3
        assert (a.handedness == b.handedness).all()


def test_tracking_mode_skips_detector_on_confident_frames(models):
    frames = shifted_sequence(read_rgb(real_photos(PALM_DIR)[0]), 8)
    detector = CountingDetector(models["onnxruntime"][0])
    pipe = HandPipeline(PipelineConfig(max_hands=1, detect_interval=0), detector=detector,
                        crop_model=models["onnxruntime"][1])
    results = [pipe.process(f) for f in frames]
    assert all(len(r) == 1 for r in results)
    assert detector.calls == 1 == pipe.detector_calls  # first frame only; then ROIs from landmarks
    assert not pipe.last_timing.detector_ran
    ids = {int(r.track_id[0]) for r in results}
    assert ids == {1}  # one hand, one id, every frame
    # The hand moves right by 3 px per frame: the keypoints follow it (smoothing lags a little).
    dx = results[-1].keypoints[0, 0, 0] - results[0].keypoints[0, 0, 0]
    assert 10 < dx < 30


def test_tracking_mode_detects_while_fewer_hands_than_max(models):
    frames = shifted_sequence(read_rgb(real_photos(PALM_DIR)[0]), 4)
    detector = CountingDetector(models["onnxruntime"][0])
    pipe = HandPipeline(PipelineConfig(max_hands=2, detect_interval=0), detector=detector,
                        crop_model=models["onnxruntime"][1])
    for f in frames:
        pipe.process(f)
    assert detector.calls == len(frames)  # one hand followed < max_hands 2: look for another each frame

    detector.calls = 0
    pipe = HandPipeline(PipelineConfig(max_hands=1, detect_interval=2), detector=detector,
                        crop_model=models["onnxruntime"][1])
    for f in frames:
        pipe.process(f)
    assert detector.calls == 2  # frames 0 and 2: the periodic re-detection


def test_streams_batched_together_answer_as_each_stream_alone(models):
    """`process_streams`: 3 streams (two photos, one of them twice, different frame counts) share one
    detector call and one crop-model call per step, yet each keeps its own ids and hands."""
    from shared.inference.pipeline import process_streams

    photos = real_photos(PALM_DIR)
    videos = [shifted_sequence(read_rgb(photos[0]), 6), shifted_sequence(read_rgb(photos[1]), 6, step=-2.0),
              shifted_sequence(read_rgb(photos[0]), 6, step=1.0)]
    alone = []
    for video in videos:
        pipe = make_pipeline(models, max_hands=2)
        alone.append([pipe.process(f) for f in video])
    detector = CountingDetector(models["onnxruntime"][0])
    pipes = [HandPipeline(PipelineConfig(max_hands=2), detector=detector, crop_model=models["onnxruntime"][1])
             for _ in videos]
    together = [process_streams(pipes, [v[t] for v in videos]) for t in range(6)]
    assert detector.calls == 6  # one call per step for all three streams (each looks for a 2nd hand)
    for k, video in enumerate(videos):
        for t in range(len(video)):
            got, want = together[t][k], alone[k][t]
            assert len(got) == len(want) > 0
            np.testing.assert_array_equal(got.track_id, want.track_id)
            np.testing.assert_allclose(got.keypoints[..., :2], want.keypoints[..., :2], atol=1e-3)
    with pytest.raises(ValueError, match="appears twice"):
        process_streams([pipes[0], pipes[0]], [videos[0][0]] * 2)


def test_results_iterate_per_hand_plot_and_save_themselves(models, tmp_path):
    rgb = read_rgb(real_photos(PALM_DIR)[0])
    hands = make_pipeline(models, static=True)(rgb)
    assert len(hands) >= 1
    per_hand = list(hands)
    assert len(per_hand) == len(hands) and all(len(h) == 1 for h in per_hand)
    np.testing.assert_array_equal(per_hand[0].xyxy[0], hands.xyxy[0])
    before = rgb.copy()
    drawn = hands.plot(rgb)
    assert drawn.shape == rgb.shape and (drawn != rgb).any()
    np.testing.assert_array_equal(rgb, before)  # the input is never drawn on
    jpg = hands.save(tmp_path / "out" / "hands.jpg", rgb)
    assert cv2.imread(str(jpg)).shape == rgb.shape
    assert json.loads(hands.save(tmp_path / "hands.json").read_text()) == hands.to_json()
    with pytest.raises(ValueError, match="needs the image"):
        hands.save(tmp_path / "x.png")


def test_a_new_detector_is_one_file_and_one_registry_line(models):
    """What a new `shared/inference/detectors/<name>.py` holds (here: a toy that calls the image's
    centre square a hand), registered with one line, runs in process (HandPipeline) and in the
    served python steps (pre/post-processing, the BLS detector) with nothing else changed."""
    from shared.geometry import roi_from_box
    from shared.inference import detectors
    from shared.serving import models as hm
    from tests.test_triton_pipeline import hagrid_patch

    class CentreDetector:
        name = "centre"

        def __call__(self, images):
            return [self.one(im.shape[:2]) for im in images]

        @staticmethod
        def one(hw):
            h, w = hw
            side = min(h, w)
            box = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2], np.float32)
            return detectors.Detections(box[None], np.ones(1, np.float32), [roi_from_box(box, expand_ratio=0.0)])

    class CentreKind:
        name, model_option = "centre", ""

        def create(self, **settings):
            return CentreDetector()

        def from_runner(self, runner, spec):
            return CentreDetector()

        def preprocess(self, image, spec):
            return np.zeros((3, 8, 8), np.float32), np.array([1, 1, 0, 0], np.float32)

        def postprocess(self, outputs, lb, image_hw, spec):
            return CentreDetector.one(image_hw)

        def served(self, model, work_dir, max_batch, max_detections, settings):
            raise NotImplementedError("a toy has no network")

    detectors.register_detector(CentreKind())
    try:
        rgb = hagrid_patch("palm", "0141f713", 224)  # one real hand in the middle of the frame
        pipe = HandPipeline(PipelineConfig(detector="centre", static=True), crop_model=models["onnxruntime"][1])
        hands = pipe(rgb)
        assert len(hands) == 1 and hands.score[0] > 0.5
        spec = detectors.DetectorSpec(kind="centre")
        x, lb = hm.detector_preprocess(rgb, spec)
        assert len(hm.detector_postprocess({}, lb, rgb.shape[:2], spec)) == 1
        assert isinstance(hm.make_detector(spec, runner=None), CentreDetector)
    finally:
        detectors.DETECTORS.pop("centre")
    with pytest.raises(UserError, match="unknown detector 'centre'; choose one of blazepalm, yolo"):
        detectors.create_detector("centre")


def test_static_mode_runs_detector_every_frame_without_ids(models):
    frames = shifted_sequence(read_rgb(real_photos(PALM_DIR)[0]), 4)
    detector = CountingDetector(models["onnxruntime"][0])
    pipe = HandPipeline(PipelineConfig(static=True, max_hands=1), detector=detector,
                        crop_model=models["onnxruntime"][1])
    results = [pipe.process(f) for f in frames]
    assert detector.calls == len(frames)
    assert all(len(r) == 1 and (r.track_id == -1).all() for r in results)
    # Batched static frames give the same hands as one by one.
    batched = pipe.process_batch(frames)
    for a, b in zip(results, batched):
        assert np.allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_yolo_detector_path(tmp_path, models):
    """An (untrained) Ultralytics model through the whole pipeline: boxes -> square ROIs
    expanded by expand_ratio -> crops -> hands. The weights are random, so the threshold is
    near zero: this checks the plumbing, not accuracy."""
    from ultralytics import YOLO

    weights = tmp_path / "yolo_untrained.pt"
    YOLO("yolo11n.yaml").save(str(weights))
    detector = create_detector("yolo", yolo_model=str(weights), score_threshold=1e-6, max_detections=2,
                               expand_ratio=0.3)
    image = read_rgb(real_photos(PALM_DIR)[0])
    dets = detector([image])[0]
    assert 1 <= len(dets) <= 2 and (np.diff(dets.score) <= 0).all()
    box = dets.xyxy[0]
    assert dets.rois[0].size == pytest.approx(max(box[2] - box[0], box[3] - box[1]) * 1.3, rel=1e-4)
    pipe = HandPipeline(PipelineConfig(detector="yolo", static=True, max_hands=2, min_presence=0.0),
                        detector=detector, crop_model=models["onnxruntime"][1])
    res = pipe.process(image)
    assert 1 <= len(res) <= 2 and res.keypoints.shape[1:] == (NUM_KEYPOINTS, 3)


def test_onnx_pipeline_runs_without_torch(models, work_dir):
    """The Triton Python backend has no torch: the pipeline on exported files must not import it."""
    import subprocess
    import sys

    assert models  # the fixture exported both networks into work_dir
    code = f"""
import builtins, glob, sys
real = builtins.__import__
def guard(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        raise ImportError("torch is blocked in this test")
    return real(name, *args, **kwargs)
builtins.__import__ = guard
import cv2
from shared.inference.backends import CropModel, ModelRef, OnnxRunner
from shared.inference.detectors import PalmDetector
from shared.inference.pipeline import HandPipeline, PipelineConfig
files = sorted(glob.glob({work_dir!r} + "/*.onnx"))
palm = next(f for f in files if "blazepalm" in f)
hand = next(f for f in files if "blazehand" in f)
detector = PalmDetector(OnnxRunner(ModelRef("blazepalm_full", palm, img_size=192)))
crop = CropModel(OnnxRunner(ModelRef("blazehand_full", hand, img_size=224)), 224, gesture_trained=False)
pipe = HandPipeline(PipelineConfig(backend="onnxruntime"), detector=detector, crop_model=crop)
image = cv2.cvtColor(cv2.imread({str(real_photos(PALM_DIR)[0])!r}), cv2.COLOR_BGR2RGB)
print(len(pipe.process(image)), "torch" in sys.modules)
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "False"]


def test_tensorrt_backend_is_skipped_cleanly_without_gpu():
    from shared.errors import UserError
    from shared.inference.backends import available_runners, create_runner, tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is usable here: see test_tensorrt_matches_torch")
    assert "tensorrt" not in available_runners()
    with pytest.raises(UserError, match="tensorrt"):
        create_runner("tensorrt", ModelRef("blazehand", "mediapipe"))


@pytest.mark.gpu
def test_tensorrt_matches_torch(tmp_path):
    from shared.inference.backends import create_runner, tensorrt_available

    if not tensorrt_available():
        pytest.skip("needs the tensorrt package and a CUDA GPU")
    x = np.random.default_rng(0).random((3, 3, 224, 224), dtype=np.float32)
    ref = ModelRef("blazehand", "mediapipe", img_size=224, work_dir=str(tmp_path), max_batch=4, device="cuda")
    trt_out = create_runner("tensorrt", ref)(x)
    torch_out = create_runner("torch", ref)(x)
    assert np.abs(trt_out["landmarks"] - torch_out["landmarks"]).max() < 0.5
    assert np.abs(trt_out["presence"] - torch_out["presence"]).max() < 1e-2


def test_annotator_draws_without_touching_input():
    image = np.full((120, 160, 3), 50, np.uint8)
    kp = np.concatenate([_upright_hand(80, 90, 4.0), np.ones((NUM_KEYPOINTS, 1))], axis=1)
    res = HandResults(xyxy=[[50, 40, 110, 95]], score=[0.9], keypoints=kp[None], gesture=[GESTURES.index("fist")],
                      gesture_score=[0.8], handedness=[1], track_id=[3])
    before = image.copy()
    out = Annotator(draw_skeleton=True).annotate(image, res)
    assert (image == before).all()
    assert (out != before).any(axis=2).sum() > 200
    assert Annotator._text(res, 0) == "#3 fist 0.80 R"


# --------------------------------------------------------------------------- the CLI


def test_infer_outputs_and_corrupt_frame(tmp_path, work_dir, capsys):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(shifted_sequence(read_rgb(real_photos(PALM_DIR)[1]), 3)):
        cv2.imwrite(str(frames_dir / f"{i * 2:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (frames_dir / "0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # between frames 0 and 2
    out = tmp_path / "out"
    cfg = InferConfig(input_dir=str(frames_dir), sequence=True, output_dir=str(out), draw_skeleton=True,
                      pipeline={"work_dir": work_dir})  # the defaults: onnxruntime, 1 thread
    result = run_inference(cfg)
    assert "0001.jpg" in capsys.readouterr().err  # reported ...
    assert (result.frames, result.skipped) == (3, 1)  # ... and skipped; the run went on

    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == ["frame", "image", "hands"]
    assert [json.loads(x)["frame"] for x in lines] == [0, 2, 3]  # positions in the folder
    assert [json.loads(x)["image"] for x in lines] == ["0000.jpg", "0002.jpg", "0004.jpg"]
    hand = first["hands"][0]
    assert list(hand) == ["xyxy", "score", "keypoints", "gesture", "gesture_score", "handedness", "track_id"]
    assert len(hand["xyxy"]) == 4 and all(isinstance(v, float) for v in hand["xyxy"])
    assert len(hand["keypoints"]) == 21 and all(len(p) == 3 for p in hand["keypoints"])
    # MediaPipe's weights have no gesture head: the shipped landmark model gives the gesture, or "unknown"
    assert hand["gesture"] in (*GESTURES, "unknown") and hand["gesture_score"] > 0
    assert hand["handedness"] in ("left", "right") and hand["track_id"] == 1
    h, w = cv2.imread(str(frames_dir / "0000.jpg")).shape[:2]
    xs, ys = np.array(hand["keypoints"])[:, 0], np.array(hand["keypoints"])[:, 1]
    assert 0 <= xs.min() and xs.max() <= w and 0 <= ys.min() and ys.max() <= h  # original pixels
    assert [len(r[2]) for r in read_results(out / "results.jsonl")] == [len(json.loads(x)["hands"]) for x in lines]

    mot = [line.split(",") for line in (out / "tracks.txt").read_text().splitlines()]
    assert [row[0] for row in mot] == ["1", "3", "4"] and {row[1] for row in mot} == {"1"}
    assert all(len(row) == 10 for row in mot)
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["0000.jpg", "0002.jpg", "0004.jpg"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["skipped"] == 1 and summary["hands"] == 3
    assert (summary["mode"], summary["backend"], summary["threads"]) == ("tracking", "onnxruntime", 1)
    assert summary["skipped_frames"][0]["image"] == "0001.jpg" and summary["fps"] > 0
    assert set(summary["stage_ms"]) >= {"detector", "crops", "crop_model", "tracker", "total"}


def test_infer_video(tmp_path, work_dir):
    video = tmp_path / "clip.mp4"
    frames = shifted_sequence(read_rgb(real_photos(PALM_DIR)[0]), 5)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    result = run_inference(InferConfig(video=str(video), output_dir=str(out), backend="onnxruntime", threads=1,
                                       max_hands=1, pipeline={"work_dir": work_dir}))
    assert result.frames == 5 and result.hands == 5
    rows = read_results(out / "results.jsonl")
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4] and rows[0][1] == "clip.mp4"
    assert (out / "annotated.mp4").stat().st_size > 0
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_infer_folder_of_photos_is_static_by_default(tmp_path, work_dir):
    """No flags: a folder is unrelated photos, each on its own (static: detector on every image,
    no track ids), on the fast defaults (onnxruntime, 1 thread); --sequence tracks the same folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in real_photos(PALM_DIR)[:3]:
        (photos / path.name).symlink_to(path)
    assert InferConfig().backend == PipelineConfig().backend == "onnxruntime"
    assert PipelineConfig().runtime_threads() == pipeline_config(InferConfig(input_dir="x")).runtime_threads() == 1
    # OpenVINO splits each network over the cores: every core is its fastest for one stream
    assert PipelineConfig(backend="openvino").runtime_threads() == 0
    assert PipelineConfig(backend="openvino", threads=1).runtime_threads() == 1
    runs = {}
    for name, extra in (("static", {}), ("sequence", {"sequence": True})):
        out = tmp_path / name
        runs[name] = run_inference(InferConfig(input_dir=str(photos), output_dir=str(out), annotate=False,
                                               pipeline={"work_dir": work_dir}, **extra))
        runs[name + "_summary"] = json.loads((out / "summary.json").read_text())
    static = runs["static_summary"]
    assert static["mode"] == "static" and static["backend"] == "onnxruntime" and static["threads"] == 1
    assert static["detector_calls"] == 3 and runs["static"].hands >= 3
    rows = read_results(tmp_path / "static" / "results.jsonl")
    assert all((r.track_id == -1).all() for _, _, r in rows)  # no ids: the images are unrelated
    assert runs["sequence_summary"]["mode"] == "tracking" and runs["sequence"].frames == 3


def test_infer_takes_one_image_or_a_glob_and_never_mixes_runs(tmp_path, work_dir, capsys):
    photos = real_photos(PALM_DIR)[:3]
    out = tmp_path / "out"

    def run(spec: str, **extra) -> tuple:
        result = run_inference(InferConfig(input_dir=spec, output_dir=str(out), annotate=False,
                                           pipeline={"work_dir": work_dir}, **extra))
        return Path(result.output_dir), [r[1] for r in read_results(Path(result.output_dir) / "results.jsonl")]

    assert run(str(photos[0])) == (out, [photos[0].name])  # one image
    # an earlier run in `out`: the next run goes to a fresh sibling, the first stays as it was
    where, names = run(str(PALM_DIR / "*.jpg"))  # a glob
    assert where == tmp_path / "out2" and len(names) == len(list(PALM_DIR.glob("*.jpg")))
    assert "holds an earlier run" in capsys.readouterr().err
    assert [r[1] for r in read_results(out / "results.jsonl")] == [photos[0].name]
    assert run(str(photos[1]), exist_ok=True) == (out, [photos[1].name])  # --exist_ok writes into it
    with pytest.raises(UserError, match="matches no image"):
        run(str(tmp_path / "nothing" / "*.jpg"))


@pytest.mark.parametrize("argv,needle", [
    (["--input_dir", "/no/such/folder", "--output_dir", "OUT"], "does not exist"),  # missing folder
    (["--output_dir", "OUT"], "exactly one of --input_dir"),  # no input at all
    (["--video", "/no/such.mp4", "--output_dir", "OUT"], "no such file"),  # missing video
    (["--input_dir", str(PALM_DIR), "--output_dir", "OUT", "--model_weights", "/no/such.pth"], "not found"),
    (["--input_dir", str(PALM_DIR), "--output_dir", "OUT", "--detector", "yolo"], "needs --yolo_model"),
    (["--input_dir", str(PALM_DIR), "--output_dir", str(PALM_DIR / "out")], "inside --input_dir"),
    (["--input_dir", str(PALM_DIR), "--output_dir", "OUT", "--sequence", "--static"], "contradict"),
    (["--video", str(PALM_DIR / "x.mp4"), "--output_dir", "OUT", "--sequence"], "--sequence applies to --input_dir"),
])
def test_cli_bad_input_is_one_clear_error(argv, needle, tmp_path, capsys):
    from shared.errors import run_cli

    if str(PALM_DIR) in argv and not PALM_DIR.is_dir():
        pytest.skip(f"needs real photos in {PALM_DIR} (../shared/data beside the project)")

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start


# --------------------------------------------------------------------------- real-image sanity


def ground_truth() -> dict[str, np.ndarray]:
    """Ground-truth hand boxes (pixels) of every real image, keyed by path relative to DATA."""
    boxes: dict[str, np.ndarray] = {}
    images, _ = read_hagrid(DATA / "hagrid_sample")
    fixture = json.loads(FIXTURE.read_text())["images"]
    for im in images:
        rel = im.image_path.relative_to(DATA).as_posix()
        w, h = fixture[rel]["width"], fixture[rel]["height"]
        boxes[rel] = np.array([[x * w, y * h, (x + bw) * w, (y + bh) * h] for x, y, bw, bh in
                               (hand.bbox for hand in im.hands)]).reshape(-1, 4)
    root = DATA / "roboflow_gestures_v6"
    for path in sorted((root / "images").iterdir()):
        rel = path.relative_to(DATA).as_posix()
        w, h = fixture[rel]["width"], fixture[rel]["height"]
        labels, issues = read_labels(root / "labels" / f"{path.stem}.txt", num_classes=5)
        assert not issues
        boxes[rel] = np.array([lb.xyxy(w, h) for lb in labels]).reshape(-1, 4)
    return boxes


def match_rates(found: dict[str, np.ndarray], truth: dict[str, np.ndarray], iou_min: float = 0.3) -> dict:
    """Recall of ground-truth hands, share of images with a hand found, and how many found
    boxes overlap a ground-truth hand (and how well)."""
    hit = total = on_hand = boxes = 0
    ious = []
    for key, gt in truth.items():
        pred = found.get(key, np.zeros((0, 4)))
        iou = iou_matrix(pred, gt)  # [P, G]
        total += len(gt)
        boxes += len(pred)
        if iou.size:
            hit += int((iou.max(0) >= iou_min).sum())
            best = iou.max(1)
            on_hand += int((best >= iou_min).sum())
            ious += best[best >= iou_min].tolist()
    return {"recall": hit / total, "images": sum(1 for k in truth if len(found.get(k, []))) / len(truth),
            "precision": on_hand / max(boxes, 1), "mean_iou": float(np.mean(ious)) if ious else 0.0}


@pytest.mark.skipif(not (DATA / "hagrid_sample").is_dir(), reason="needs ../shared/data (real photos)")
def test_real_images_found_about_as_well_as_mediapipe(models):
    """Default settings (BlazePalm + MediaPipe's landmark weights), every real image on its own,
    against MediaPipe Hands 0.10.21 on the same images (tests/fixtures/make_mediapipe_hands.py).
    The backend is ONNX Runtime for speed; test_torch_and_onnxruntime_agree holds it to torch."""
    fixture = json.loads(FIXTURE.read_text())["images"]
    truth = ground_truth()
    assert len(truth) == len(fixture) == 209
    pipe = make_pipeline(models, "onnxruntime", static=True)
    ours, handedness = {}, {}
    for rel in truth:
        res = pipe.process(read_rgb(DATA / rel))
        ours[rel], handedness[rel] = res.xyxy, res.handedness
    theirs = {rel: np.array([h["xyxy"] for h in row["hands"]]).reshape(-1, 4) for rel, row in fixture.items()}
    ours_rate, mp_rate = match_rates(ours, truth), match_rates(theirs, truth)
    print(f"\nreal images: ours {ours_rate}\n             mediapipe {mp_rate}")
    assert mp_rate["recall"] > 0.8  # the fixture is sane
    assert ours_rate["recall"] >= mp_rate["recall"] - 0.1
    assert ours_rate["images"] >= mp_rate["images"] - 0.1
    assert ours_rate["precision"] >= 0.9  # what we find are hands ...
    assert ours_rate["mean_iou"] >= 0.6  # ... and our boxes sit on them

    # Handedness agrees with MediaPipe's on hands both found ("Left" in MediaPipe's selfie
    # convention is a right hand on these unmirrored photos).
    agree = n = 0
    for rel, row in fixture.items():
        if not row["hands"] or not len(ours[rel]):
            continue
        mp_boxes = np.array([h["xyxy"] for h in row["hands"]])
        iou = iou_matrix(ours[rel], mp_boxes)
        for i, j in enumerate(iou.argmax(1)):
            if iou[i, j] >= 0.3:
                n += 1
                agree += int(handedness[rel][i] == (1 if row["hands"][j]["label"] == "Left" else 0))
    assert n > 150 and agree / n >= 0.85, (agree, n)


def test_settings_have_one_home():
    """Every tracker setting is a pipeline setting (PipelineConfig embeds TrackerConfig) and
    reaches the tracker; infer's flags that are pipeline settings carry PipelineConfig's help,
    default and choices, and a run passes each of them on."""
    import dataclasses

    from components.infer import PASSED_ON, pipeline_config
    from shared.tracking import TrackerConfig

    tracker_fields = {f.name for f in dataclasses.fields(TrackerConfig)}
    assert tracker_fields <= {f.name for f in dataclasses.fields(PipelineConfig)}
    changed = {"one_euro_beta": 5.0, "gesture_window": 3, "track_max_age": 7, "low_score_threshold": 0.2}
    tracker = PipelineConfig(**changed).tracker_config()
    assert {k: getattr(tracker, k) for k in changed} == changed
    with pytest.raises(UserError, match="track_min_hits"):  # the tracker's own checks run for the pipeline too
        PipelineConfig(track_min_hits=0)

    pipe_fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    for f in dataclasses.fields(InferConfig):
        if f.name in PASSED_ON:
            assert dict(f.metadata) == dict(pipe_fields[f.name].metadata), f.name
            assert f.default == pipe_fields[f.name].default, f.name
    cfg = InferConfig(input_dir="x.jpg", threads=2, max_hands=3, track_max_age=9, gesture_threshold=0.7)
    pipe = pipeline_config(cfg)
    assert (pipe.threads, pipe.max_hands, pipe.track_max_age, pipe.gesture_threshold) == (2, 3, 9, 0.7)


def test_close_up_steps_find_a_hand_that_fills_the_frame(work_dir):
    # MediaPipe's palm detector misses a hand that fills a 224-px close-up (so do we by default: the
    # parity); close_up_steps looks at the whole frame and finds it, in static and in tracking mode,
    # where the next frame follows it from its landmarks; an empty frame stays empty

    photo = real_photos("roboflow_gestures_v6/images", "IMG-20230312-WA0652*.jpg")[0]
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    base = dict(backend="onnxruntime", threads=1, work_dir=work_dir)
    assert len(HandPipeline(PipelineConfig(static=True, **base))(rgb)) == 0
    found = HandPipeline(PipelineConfig(static=True, close_up_steps=2, **base))(rgb)
    assert len(found) == 1 and found.score[0] > 0.9 and found.to_json()[0]["gesture"] == "normal_hand"
    x1, y1, x2, y2 = found.xyxy[0]
    assert (x2 - x1) * (y2 - y1) > 0.4 * rgb.shape[0] * rgb.shape[1]  # the hand fills the frame
    tracking = HandPipeline(PipelineConfig(close_up_steps=2, **base))
    first, second = tracking(rgb), tracking(rgb)
    assert len(first) == len(second) == 1 and first.track_id[0] == second.track_id[0]
    assert tracking.detector_calls == 2  # max_hands 4: MediaPipe's rule looks for more hands every frame
    blank = np.full((224, 224, 3), 127, np.uint8)
    assert len(HandPipeline(PipelineConfig(static=True, close_up_steps=2, **base))(blank)) == 0


@pytest.mark.parametrize("pipeline,needle", [
    ("{close_up_steps: -1}", "pipeline: close_up_steps = -1: expected int >= 0"),  # out of range
    ("{gesture_threshold: high}", "pipeline: gesture_threshold = 'high'"),  # wrong type
    ("{detect_intervall: 10}", "unknown config key(s) detect_intervall"),  # a typo, named
    ("[1, 2]", "pipeline = [1, 2]: expected a mapping"),  # not a mapping (the YAML loader names the file)
])
def test_infer_yaml_pipeline_settings_are_checked(pipeline, needle, tmp_path, capsys):
    # the YAML's `pipeline:` extras go through the same checks as every other setting (also at deploy)
    from components.deploy import DeployConfig, pipeline_settings
    from shared.errors import run_cli

    config = tmp_path / "infer.yaml"
    config.write_text(f"infer:\n  pipeline: {pipeline}\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit) as exc:
        run_cli(main, ["--config", str(config), "--input_dir", str(photos), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    import yaml

    value = yaml.safe_load(pipeline)
    if isinstance(value, dict):
        with pytest.raises(UserError, match=re.escape(needle)):
            pipeline_settings(DeployConfig(pipeline=value))
