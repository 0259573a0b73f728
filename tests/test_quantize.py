"""INT8 on the CPU: `components.export onnx --precision int8` calibrates BlazeHand on real hand
crops (the MediaPipe teacher's, `shared.inference.real_crops`), keeps the most sensitive layers
in float and verifies the result against the float model on crops of other people; a model that
misses a tolerance is never written. The palm detector alike, on whole photos, palm for palm.
Also fp16 and the bad inputs.

Real photos from ../shared/data: hagrid_train (calibration), hagrid_sample (other people).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from components.export import main as export_main
from shared.errors import run_cli
from shared.inference.real_crops import real_crops

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN = DATA / "hagrid_train" / "images"
SAMPLE = DATA / "hagrid_sample"
ROBOFLOW = DATA / "roboflow_gestures_v6"
pytestmark = pytest.mark.skipif(not TRAIN.is_dir() or not SAMPLE.is_dir(), reason="needs ../shared/data (real photos)")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Small folders of real photos: calibration (train people), test (other people), and a labelled
    test set (8 Roboflow photos of `one` / `five` hands, its YOLO export layout)."""
    root = tmp_path_factory.mktemp("int8")
    cal, test, labelled = root / "cal", root / "test", root / "labelled"
    for folder in ("fist", "one", "palm", "like", "peace"):
        (cal / folder).mkdir(parents=True)
        for p in sorted((TRAIN / folder).glob("*.jpg"))[:6]:
            shutil.copyfile(p, cal / folder / p.name)
    test.mkdir()
    for p in sorted((SAMPLE / "images").rglob("*.jpg"))[::8][:12]:
        shutil.copyfile(p, test / p.name)
    (labelled / "images").mkdir(parents=True)
    (labelled / "labels").mkdir()
    shutil.copyfile(ROBOFLOW / "data.yaml", labelled / "data.yaml")
    names = ["five", "four", "one", "three", "two"]

    def classes(label: Path) -> set[str]:
        return {names[int(line.split()[0])] for line in label.read_text().splitlines() if line.strip()}

    picked = [lab for lab in sorted((ROBOFLOW / "labels").glob("*.txt")) if classes(lab) <= {"one", "five"}]
    for lab in picked[:8]:
        shutil.copyfile(lab, labelled / "labels" / lab.name)
        shutil.copyfile(ROBOFLOW / "images" / f"{lab.stem}.jpg", labelled / "images" / f"{lab.stem}.jpg")
    return {"cal": cal, "test": test, "labelled": labelled}


def _export(tmp_path: Path, *extra: str) -> int:
    """The CLI as `python -m components.export` runs it: its exit status."""
    with pytest.raises(SystemExit) as done:
        run_cli(export_main, ["onnx", "--model_type", "blazehand_full", "--output_path", str(tmp_path / "hand.onnx"),
                              *extra])
    return done.value.code


def test_real_crops_are_hands_the_teacher_found(photos):
    crops = real_crops(photos["cal"], size=224, limit=20)
    assert len(crops) == 20 and crops.x.shape == (20, 3, 224, 224) and crops.how == "teacher"
    assert 0.0 <= crops.x.min() and crops.x.max() <= 1.0
    # the crop is placed by the landmarks: they sit inside it, the wrist below the fingertips (upright)
    kp = crops.keypoints[..., :2]
    assert ((kp > 0) & (kp < 224)).mean() > 0.95
    assert np.median(kp[:, 0, 1] - kp[:, 12, 1]) > 40


def test_int8_export_that_misses_the_tolerance_is_not_written(photos, tmp_path, capsys):
    # every convolution int8 (no float modules or layers allowed) moves the landmarks by ~2 px mean
    code = _export(tmp_path, "--precision", "int8", "--calibration_dir", str(photos["cal"]),
                   "--test_dir", str(photos["test"]), "--max_float_layers", "0", "--calibration_limit", "24",
                   "--qat_epochs", "0", "--float_modules", "none")
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "misses a tolerance" in err and "px" in err
    assert not (tmp_path / "hand.onnx").exists()  # never a silently degraded model
    assert (tmp_path / "hand_fp32.onnx").is_file() and (tmp_path / "hand_int8_rejected.onnx").is_file()
    rejected = json.loads((tmp_path / "hand_int8_rejected.json").read_text())  # says what it is and why not
    assert rejected["gesture_head_trained"] is False and "px" in rejected["rejected"]
    summary = json.loads((tmp_path / "hand.json").read_text())
    assert summary["precision"] == "int8" and summary["quantization"]["passed"] is False


def test_int8_export_within_its_tolerance_runs_and_is_quantized(photos, tmp_path, capsys):
    code = _export(tmp_path, "--precision", "int8", "--calibration_dir", str(photos["cal"]),
                   "--test_dir", str(photos["test"]), "--max_float_layers", "0", "--calibration_limit", "24",
                   "--tol_mean_px", "20", "--tol_p99_px", "200", "--qat_epochs", "0")  # fixed batch 1
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "hand.json").read_text())
    q = summary["quantization"]
    if code == 2:  # the only other tolerance: the same hands found on every test crop
        assert "hands found differ" in q["failed"]
        pytest.skip(f"presence flipped on a test crop at all-int8: {q['failed']}")
    assert code == 0 and "held-out crops, int8 vs fp32" in out
    assert q["end_to_end"] == {}  # unlabelled photos: the crops' gesture agreement is held instead
    path = tmp_path / "hand.onnx"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    (test_metrics,) = q["tests"].values()
    assert test_metrics["crops"] >= 8 and 0 < test_metrics["mean_px"] < 20
    assert q["speed_ms"]["int8"] > 0 and q["calibration_crops"] > 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = real_crops(photos["test"], size=224, limit=1).x
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    assert outputs["landmarks"].shape[-2:] == (21, 3) and outputs["presence"][0, 0] > 0.5
    # --precision int8 runs it in the pipeline; its export summary says MediaPipe's weights, so the
    # gesture comes from the landmark model, as with fp32
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    photo = sorted(photos["test"].glob("*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    fp32 = HandPipeline(PipelineConfig(static=True))(rgb)
    int8 = HandPipeline(PipelineConfig(static=True, precision="int8", model_weights=str(path)))(rgb)
    assert len(int8) == len(fp32) >= 1 and (int8.gesture != -1).all()  # -1: no gesture model ran


def test_int8_sensitivity_sweep_ranks_every_layer_and_keeps_the_worst_in_float(photos, tmp_path, capsys):
    # a tolerance the all-int8 model misses on the validation crops starts the sweep: each convolution
    # quantized alone, ranked by the error it brings, the most sensitive kept in float (at most 2 here;
    # 0.01 px cannot be met, so the model is refused and the report says why)
    code = _export(tmp_path, "--precision", "int8", "--calibration_dir", str(photos["cal"]), "--test_dir",
                   str(photos["test"]), "--calibration_limit", "24", "--float_modules", "none",
                   "--max_float_layers", "2", "--tol_mean_px", "0.01")
    out = capsys.readouterr().out
    q = json.loads((tmp_path / "hand.json").read_text())["quantization"]
    assert code == 2 and "landmark mean error" in q["failed"]
    assert len(q["sensitivity"]) == 47 and {s["op_type"] for s in q["sensitivity"]} == {"Conv"}  # heads: float
    ranked = sorted(q["sensitivity"], key=lambda s: (-s["mean_px"], -s["p99_px"]))
    assert [f["node"] for f in q["float_layers"]] == [s["node"] for s in ranked[:2]]
    assert ranked[0]["mean_px"] > ranked[-1]["mean_px"] >= 0
    assert "2 layer(s) kept in float" in out and "each one's error when quantized alone" in out


def test_int8_export_holds_the_pipelines_gesture_accuracy_on_labelled_photos(photos, tmp_path, capsys):
    # a labelled test set (YOLO export layout) also runs the whole static pipeline with each crop model:
    # gesture accuracy within 0.01 of fp32 and the same number of hands on every photo, or no file
    code = _export(tmp_path, "--precision", "int8", "--calibration_dir", str(photos["cal"]), "--dynamic_batch",
                   "--test_dir", str(photos["labelled"]), "--max_float_layers", "0", "--calibration_limit", "24",
                   "--tol_mean_px", "20", "--tol_p99_px", "200")
    out, err = capsys.readouterr()
    q = json.loads((tmp_path / "hand.json").read_text())["quantization"]
    e2e = q["end_to_end"]["labelled"]
    assert e2e["photos"] == 8 and e2e["targets"] >= 8 and e2e["hands_fp32"] >= 6
    assert 0.5 <= e2e["fp32_accuracy"] <= 1 and 0 <= e2e["int8_accuracy"] <= 1
    assert "the whole pipeline (static, shipped gesture model)" in out
    within = abs(e2e["int8_accuracy"] - e2e["fp32_accuracy"]) <= 0.01 and e2e["photos_hands_differ"] == 0
    if code == 0:
        assert within and (tmp_path / "hand.onnx").is_file()
    else:  # refused: by this check or by the crops' tolerances, named in the one error line
        assert code == 2 and "misses a tolerance" in err and not (tmp_path / "hand.onnx").exists()
        assert not within or "hands found differ" in q["failed"]


def test_int8_fine_tuning_is_checked_against_the_original_model(photos, tmp_path, capsys):
    # quantization-aware fine-tuning (one short epoch here): the tuned float file is kept beside the
    # output, and every check compares the int8 model with the ORIGINAL float model, not the tuned one
    code = _export(tmp_path, "--precision", "int8", "--calibration_dir", str(photos["cal"]),
                   "--test_dir", str(photos["test"]), "--max_float_layers", "0", "--calibration_limit", "24",
                   "--tol_mean_px", "20", "--tol_p99_px", "200", "--qat_epochs", "1")
    out = capsys.readouterr().out
    assert "int8 fine-tune epoch 1/1" in out and "simulated int8 validation mean" in out
    assert (tmp_path / "hand_qat_fp32.onnx").is_file()
    q = json.loads((tmp_path / "hand.json").read_text())["quantization"]
    assert Path(q["float_path"]).name == "hand_fp32.onnx" and q["config"]["weight_bits"] == 7
    assert code == 0 or "hands found differ" in q["failed"]


def test_quantization_simulation_matches_onnx_runtime(photos):
    # shared.models.qat's simulation rounds where and as ONNX Runtime's QDQ int8 model does: the
    # fine-tuning trains against the error the shipped file will really have
    import tempfile

    import torch

    from shared.inference.backends import ModelRef
    from shared.models.qat import QuantSim
    from shared.models.quantize import QuantizeConfig, preprocess, quantizable_nodes, quantize_static_qdq, run_model
    from shared.models.registry import create_model

    crops = real_crops(photos["cal"], size=224, limit=24).x
    model = create_model("blazehand_full", pretrained_weights="mediapipe").eval()
    sim = QuantSim(model, weight_bits=7)
    sim.calibrate(torch.from_numpy(crops))
    with torch.no_grad():
        simulated = sim(torch.from_numpy(crops))["landmarks"].numpy()
        float_out = model(torch.from_numpy(crops))["landmarks"].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess(ModelRef("blazehand_full").onnx_path(), Path(tmp) / "pre.onnx")
        heads = [n for n, op in quantizable_nodes(pre) if op == "Gemm"]
        q = quantize_static_qdq(pre, Path(tmp) / "q.onnx", crops, Path(tmp) / "r.json", QuantizeConfig(), heads)
        real = run_model(q, crops)["landmarks"]
    sim_vs_ort = np.abs(simulated - real)[..., :2].mean()
    int8_vs_float = np.abs(real - float_out)[..., :2].mean()
    assert sim_vs_ort < 0.25 * int8_vs_float, (sim_vs_ort, int8_vs_float)


def test_int8_classifier_export_is_checked_on_top1_agreement(photos, tmp_path, capsys):
    # a timm crop classifier: calibrated on real crops at its own input size, verified on crops of other
    # people by its top-1 agreement with the float model. Random weights give near-uniform probabilities,
    # whose argmax int8 rounding flips: the export must refuse that model, not ship it.
    with pytest.raises(SystemExit) as done:
        run_cli(export_main, ["onnx", "--model_type", "timm:mobilenetv3_small_100", "--weights", "none",
                              "--output_path", str(tmp_path / "cls.onnx"), "--dynamic_batch", "--precision", "int8",
                              "--calibration_dir", str(photos["cal"]), "--calibration_limit", "16",
                              "--test_dir", str(photos["test"])])
    out, err = capsys.readouterr()
    assert "top-1 agree" in out and "the head in float" in out
    q = json.loads((tmp_path / "cls.json").read_text())["quantization"]
    assert q["kind"] == "classifier" and q["tests"]["test"]["crops"] >= 8 and q["speed_ms"]["int8"] > 0
    assert q["tests"]["test"]["prob_max_diff"] < 0.05  # the probabilities themselves barely move
    if q["tests"]["test"]["top1_agreement"] < 0.99:
        assert done.value.code == 2 and "top-1 agreement" in err and not (tmp_path / "cls.onnx").exists()
    else:
        assert done.value.code == 0 and (tmp_path / "cls.onnx").is_file()
    ops = {n.op_type for n in onnx.load(q["int8_path"]).graph.node}
    assert "QuantizeLinear" in ops


def test_pipeline_int8_step_quantizes_with_the_same_checks(photos, tmp_path):
    # pipelines/full.py `precision: int8`: the exported crop model quantized on calibration_dir and checked on
    # test_dir (crops of other people + the whole pipeline on the labelled set); a miss is one clear error
    from pipelines.full import int8_hand_model
    from shared.errors import UserError

    cfg = {"hand_model": "blazehand_full", "calibration_dir": str(photos["cal"]),
           "test_dir": f"{photos['test']},{photos['labelled']}"}
    try:
        path, q = int8_hand_model(cfg, "mediapipe", tmp_path)
    except UserError as exc:
        assert "misses a tolerance" in str(exc) and not (tmp_path / "hand_landmarks_int8.onnx").exists()
        q = json.loads((tmp_path / "hand_landmarks_int8.json").read_text())["quantization"]
        assert q["passed"] is False
    else:
        assert Path(path).is_file() and q["passed"] and q["config"]["float_modules"][-1] == "blocks.2"
    assert set(q["tests"]) == {"test", "labelled"} and set(q["end_to_end"]) == {"labelled"}
    assert q["calibration_crops"] >= 20


def test_gmae_classifier_exports_from_its_checkpoint_in_fp32_and_int8(photos, tmp_path, capsys):
    # a fine-tuned G-MAE classifier (a portable best.pt; here a tiny one with a confident random head):
    # its ONNX export matches PyTorch (ImageNet normalisation built in), and its int8 export is checked
    # on real crops at its own 64-px input like any classifier
    import torch

    from shared.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD
    from shared.models.registry import create_model
    from shared.training.callbacks import CHECKPOINT_FORMAT, save_checkpoint

    torch.manual_seed(0)
    model = create_model("gmae_classifier_tiny", num_classes=5).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    ckpt = save_checkpoint({"format": CHECKPOINT_FORMAT, "model_name": "gmae_classifier_tiny",
                            "model_kwargs": {"num_classes": 5}, "state_dict": model.state_dict(),
                            "gesture_names": ["2_hands", "fist", "normal_hand", "pinch", "pointer"]},
                           tmp_path / "best.pt")
    with pytest.raises(SystemExit) as done:  # the export's default weights are MediaPipe's: one clear error
        run_cli(export_main, ["onnx", "--model_type", "gmae_classifier_tiny",
                              "--output_path", str(tmp_path / "x.onnx")])
    assert done.value.code == 2 and "needs --weights: the best.pt" in capsys.readouterr().err
    common = ["onnx", "--model_type", "gmae_classifier_tiny", "--weights", str(ckpt), "--dynamic_batch"]
    with pytest.raises(SystemExit) as done:
        run_cli(export_main, [*common, "--output_path", str(tmp_path / "fp32" / "g.onnx"), "--verify"])
    assert done.value.code == 0 and "verify gesture_probs" in capsys.readouterr().out
    x = real_crops(photos["test"], size=64, limit=4).x
    sess = ort.InferenceSession(str(tmp_path / "fp32" / "g.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    with torch.no_grad():
        want = torch.softmax(model((torch.from_numpy(x) - mean) / std), -1).numpy()
    assert np.abs(got - want).max() < 1e-4
    with pytest.raises(SystemExit) as done:
        run_cli(export_main, [*common, "--output_path", str(tmp_path / "int8" / "g.onnx"), "--precision", "int8",
                              "--calibration_dir", str(photos["cal"]), "--calibration_limit", "16",
                              "--test_dir", str(photos["test"])])
    q = json.loads((tmp_path / "int8" / "g.json").read_text())["quantization"]
    assert q["kind"] == "classifier" and q["tests"]["test"]["crops"] >= 8
    assert done.value.code == (0 if q["tests"]["test"]["top1_agreement"] >= 0.99 else 2)
    ops = {n.op_type for n in onnx.load(q["int8_path"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_fp16_export_keeps_the_float_model(tmp_path, capsys):
    assert _export(tmp_path, "--precision", "fp16") == 0
    out = capsys.readouterr().out
    assert "fp16: max |fp16 - fp32|" in out
    weights = [t for t in onnx.load(str(tmp_path / "hand.onnx")).graph.initializer if t.data_type == 10]  # FLOAT16
    assert weights and (tmp_path / "hand_fp32.onnx").is_file()


@pytest.mark.parametrize("case", ["no_calibration", "no_hands", "palm_no_hands", "missing_folder"])
def test_int8_bad_input_is_one_error(case, tmp_path, capsys):
    # one `error:` line naming the problem and the fix, exit 2, nothing half-written
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(3):
        cv2.imwrite(str(empty / f"{i}.jpg"), np.full((240, 320, 3), 90 + 40 * i, np.uint8))
    args = {"no_calibration": ["--precision", "int8"],
            "no_hands": ["--precision", "int8", "--calibration_dir", str(empty)],
            "palm_no_hands": ["--precision", "int8", "--calibration_dir", str(empty), "--model_type", "blazepalm_full"],
            "missing_folder": ["--precision", "int8", "--calibration_dir", str(tmp_path / "nope")]}[case]
    code = _export(tmp_path, *args)
    err = capsys.readouterr().err
    expected = {"no_calibration": "needs --calibration_dir", "no_hands": "no hand found",
                "palm_no_hands": "palm detector finds no hand", "missing_folder": "no such folder"}[case]
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "hand.onnx").exists()


def _export_palm(tmp_path: Path, photos: dict[str, Path], *extra: str) -> int:
    with pytest.raises(SystemExit) as done:
        run_cli(export_main, ["onnx", "--model_type", "blazepalm_full", "--output_path", str(tmp_path / "palm.onnx"),
                              "--precision", "int8", "--calibration_dir", str(photos["cal"]), "--test_dir",
                              str(photos["test"]), "--calibration_limit", "24", *extra])
    return done.value.code


def test_palm_comparison_counts_photos_whose_palms_differ():
    from shared.models.quantize_palm import compare_palm, missed_palm

    anchors = 8
    boxes = np.tile(np.array([0.2, 0.2, 0.4, 0.4], np.float32), (2, anchors, 1))  # 2 photos, one palm each
    boxes[:, 4:] += 0.5  # a second place, far from the first
    ref = {"boxes": boxes, "keypoints": np.full((2, anchors, 7, 2), 0.3, np.float32),
           "scores": np.zeros((2, anchors), np.float32)}
    ref["scores"][:, 0] = 0.9
    ref["scores"][:, 5] = 0.52  # a second palm just above the threshold on both photos
    same = compare_palm(ref, ref)
    assert same["photos_differ"] == 0 and same["palms_fp32"] == 4 and same["mean_px"] == 0.0
    assert missed_palm(same, 1.0, 4.0) == ""
    out = {k: v.copy() for k, v in ref.items()}
    out["scores"][1, 5] = 0.49  # photo 1 loses its second palm
    out["boxes"][0, 0] += 1.0 / 192  # photo 0's first palm moves by 1 px
    m = compare_palm(out, ref)
    assert m["photos_differ"] == 1 and m["palms_int8"] == 3 and 0.0 < m["mean_px"] <= 1.0
    assert "differs on 1 of 2 photos" in missed_palm(m, 1.0, 4.0)
    assert missed_palm(m, 1.0, 4.0, tol_photos=0.5) == ""  # half the photos allowed to differ


def test_int8_palm_detector_is_verified_palm_for_palm_and_runs_in_the_pipeline(photos, tmp_path, capsys):
    # every module int8, tolerances opened wide: written, quantized, and the pipeline runs it
    code = _export_palm(tmp_path, photos, "--max_float_layers", "0", "--tol_photos_differ", "1",
                        "--tol_mean_px", "50", "--tol_p99_px", "500")
    out = capsys.readouterr().out
    assert code == 0 and "held-out photos, int8 vs fp32 palms" in out
    q = json.loads((tmp_path / "palm.json").read_text())["quantization"]
    assert q["kind"] == "palm" and q["passed"] and q["calibration_crops"] > 0
    (test_metrics,) = q["tests"].values()
    assert test_metrics["photos"] == 12 and test_metrics["palms_fp32"] >= 8  # photos of hands: palms found
    assert 0.0 < test_metrics["mean_px"] < 50
    path = tmp_path / "palm.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    photo = sorted(photos["test"].glob("*.jpg"))[0]
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    fp32 = HandPipeline(PipelineConfig(static=True, backend="onnxruntime"))(rgb)
    int8 = HandPipeline(PipelineConfig(static=True, backend="onnxruntime", palm_onnx=str(path)))(rgb)
    assert len(fp32) >= 1 and len(int8) >= 1
    assert np.abs(int8.xyxy[0] - fp32.xyxy[0]).max() < 0.1 * (fp32.xyxy[0, 2] - fp32.xyxy[0, 0])


def test_int8_palm_detector_that_misses_the_tolerance_is_not_written(photos, tmp_path, capsys):
    # the sweep ranks all 19 modules, keeps the 2 worst in float; 0 px is still missed: refused
    code = _export_palm(tmp_path, photos, "--max_float_layers", "2", "--tol_photos_differ", "1",
                        "--tol_mean_px", "0")
    err = capsys.readouterr().err
    assert code == 2 and "misses a tolerance" in err and "palm box / keypoint mean error" in err
    assert not (tmp_path / "palm.onnx").exists() and (tmp_path / "palm_int8_rejected.onnx").is_file()
    q = json.loads((tmp_path / "palm.json").read_text())["quantization"]
    ranked = sorted(q["sensitivity"], key=lambda s: (-s["photos_differ"], -s["mean_px"], -s["p99_px"]))
    assert len(q["sensitivity"]) == 19 and [f["node"] for f in q["float_layers"]] == [s["node"] for s in ranked[:2]]


def test_int8_palm_detector_with_every_module_float_is_refused(photos, tmp_path, capsys):
    # 0 px allowed: the fewest-float search ends with all 19 modules float, which is no int8 model at all
    code = _export_palm(tmp_path, photos, "--max_float_layers", "19", "--tol_photos_differ", "1",
                        "--tol_mean_px", "0")
    err = capsys.readouterr().err
    assert code == 2 and "no module can be int8" in err
    assert not (tmp_path / "palm.onnx").exists()
    q = json.loads((tmp_path / "palm.json").read_text())["quantization"]
    assert len(q["float_layers"]) == 19 and not q["passed"]


def test_palm_onnx_bad_settings_are_one_error(tmp_path):
    from shared.errors import UserError
    from shared.inference.pipeline import PipelineConfig

    with pytest.raises(UserError, match="no such file"):
        PipelineConfig(palm_onnx=str(tmp_path / "nope.onnx"), backend="onnxruntime")
    (tmp_path / "palm.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="onnxruntime or openvino"):
        PipelineConfig(palm_onnx=str(tmp_path / "palm.onnx"), backend="torch")
    from shared.inference.pipeline import HandPipeline

    hand = Path(__file__).resolve().parents[1] / "shared" / "weights" / "blazehand_full_int8" / "model.onnx"
    # another model: one error up front
    with pytest.raises(UserError, match="differ from the blazepalm_full spec.*not another model.s"):
        HandPipeline(PipelineConfig(palm_onnx=str(hand), backend="onnxruntime"))
