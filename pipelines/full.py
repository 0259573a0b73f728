"""The full hand-perception pipeline, as a ClearML pipeline.

    python pipelines/full.py                      # no ClearML server configured: offline, demo preset, this process
    python pipelines/full.py --preset full        # with a server: enqueue controller + steps on agent queues
    python pipelines/full.py --local              # with a server: steps as local subprocesses
    python pipelines/full.py --offline --preset tiny --set num_images=40
    python pipelines/full.py --preset real --set input_dir=../shared/data/hagrid_train \
        --set test_dir=../shared/data/hagrid_sample,../shared/data/roboflow_gestures_v6   # real photos

ingest -> augment -> pretrain (G-MAE) -> train (detector; gesture classifier, from timm or from the
G-MAE encoder; relabel when asked; multitask BlazeHand from MediaPipe weights) -> evaluate (quality
gates) -> export (ONNX, TensorRT where available) -> deploy (Triton repository, smoke request).

Steps pass small dicts of paths and ids (`pipelines/store.py`): as paths when every step runs in
this process, as ClearML datasets and models when they run on agents elsewhere.
"""


import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python pipelines/full.py` puts pipelines/ first, not the repo
    sys.path.insert(0, str(ROOT))

from pipelines.config import PipelineConfig, load_pipeline_config  # noqa: E402

# ============================================================================ steps
# Each step is a plain function: imports inside (an agent runs it as a standalone script),
# arguments and return values are small dicts of paths/ids/metrics.

def ingest_dataset(cfg: dict) -> dict:
    import dataclasses as _dc

    from components.ingest import IngestConfig, ingest
    from pipelines.store import publish_dataset

    out = os.path.join(cfg["output_dir"], "dataset")
    if cfg["source"] == "teacher":  # real photos in gesture folders, labelled by the MediaPipe teacher
        from components.autolabel import AutolabelConfig, autolabel

        acfg = AutolabelConfig(input_dir=cfg["input_dir"], output_dir=out, seed=cfg["seed"], overwrite=True,
                               tiles=cfg["teacher_tiles"])
        result = autolabel(acfg)
        log_metrics("ingest", {**{f"{split}/images": c["images"] for split, c in result.counts.items()},
                               "rejected": result.rejected})
        manifest = json.loads(Path(result.manifest).read_text())
        return {"dataset": publish_dataset(cfg, out, "dataset"),
                "content_hash": manifest["content_hash"], "counts": result.counts, "rejected": result.rejected,
                "contact_sheet": result.contact_sheet, "config": _dc.asdict(acfg)}
    icfg = IngestConfig(source=cfg["source"], input_dir=cfg["input_dir"], output_dir=out,
                        num_images=cfg["num_images"], sequences=cfg["sequences"], frames=cfg["frames"],
                        image_size=cfg["image_size"], seed=cfg["seed"], overwrite=True,
                        api_key=cfg["roboflow_api_key"], workspace=cfg["roboflow_workspace"],
                        project=cfg["roboflow_project"], version=cfg["roboflow_version"])
    result = ingest(icfg)
    log_metrics("ingest", {f"{split}/images": c["images"] for split, c in result.counts.items()})
    return {"dataset": publish_dataset(cfg, out, "dataset"),
            "content_hash": result.content_hash, "counts": result.counts, "config": _dc.asdict(icfg)}


def augment_dataset(cfg: dict, ingested: dict) -> dict:
    from components.augment import AugmentConfig, augment
    from pipelines.store import fetch_folder, publish_dataset

    data = fetch_folder(ingested["dataset"])
    out = os.path.join(cfg["output_dir"], "augmented_train")
    if cfg["num_augmentations"] <= 0:
        return {"train_images": str(data / "train" / "images"), "train_labels": str(data / "train" / "labels"),
                "folder": None}
    result = augment(AugmentConfig(images_dir=str(data / "train" / "images"),
                                   labels_dir=str(data / "train" / "labels"), output_dir=out,
                                   num_augmentations=cfg["num_augmentations"], aug_type=cfg["aug_type"],
                                   save_original=True, seed=cfg["seed"]))
    log_metrics("augment", {"images_out": result.images_out, "hands_dropped": result.hands_dropped})
    ref = publish_dataset(cfg, out, "augmented_train")
    return {"folder": ref, "train_images": os.path.join(ref["path"], "images"),
            "train_labels": os.path.join(ref["path"], "labels")}


def pretrain_encoder(cfg: dict, ingested: dict) -> dict:
    from components.pretrain import PretrainConfig, run_pretrain
    from pipelines.store import fetch_folder, register_model

    if cfg["pretrain_epochs"] <= 0:
        return {"encoder": None, "metrics": {}}
    data = fetch_folder(ingested["dataset"])
    out = os.path.join(cfg["output_dir"], "pretrain")
    real = cfg["source"] == "teacher"
    # Real photos (the teacher's dataset): EVERY hand of every photo, gesture or not, cut where its 21
    # landmarks put it (source "teacher"). Rendered data (source "yolo"): box crops split 70% / 30%.
    pcfg = PretrainConfig(source="teacher" if real else "yolo", data_dir=str(data), output_dir=out,
                          model=cfg["gmae_model"], epochs=cfg["pretrain_epochs"],
                          batch_size=cfg["pretrain_batch_size"], img_size=cfg["gmae_img_size"],
                          crop_size=max(96, cfg["gmae_img_size"]), seed=cfg["seed"], num_workers=0,
                          progress_bar=False, save_every=max(1, cfg["pretrain_epochs"]))
    result = run_pretrain(pcfg)
    # Fine-tuning reads the class folders: the rendered corpus's finetune part, or the real crops'
    # gesture folders (the teacher's `hand` crops, whose gesture is unknown, only pretrain).
    finetune_dir = os.path.join(result.corpus_dir, "finetune_dataset")
    if real:
        from shared.data.corpus import class_view
        from shared.hand import GESTURES

        finetune_dir = str(class_view({f.name: sorted(f.iterdir()) for f in Path(result.corpus_dir).iterdir()
                                       if f.name in GESTURES}, os.path.join(out, "finetune_view")))
    log_metrics("pretrain", result.metrics)
    ref = register_model(result.encoder_weights, "gmae_encoder", ["gmae", "encoder", cfg["preset"]],
                         {"metrics": result.metrics, "model": cfg["gmae_model"], "img_size": cfg["gmae_img_size"],
                          "dataset_hash": ingested["content_hash"]})
    return {"encoder": ref, "metrics": result.metrics, "corpus_dir": result.corpus_dir, "finetune_dir": finetune_dir}


def train_detector_model(cfg: dict, ingested: dict) -> dict:
    from components.tasks.detector import DetectorConfig, train_detector
    from pipelines.store import fetch_folder, register_model

    if cfg["detector_epochs"] <= 0:
        return {"model": None, "metrics": {}}
    data = fetch_folder(ingested["dataset"])
    real = cfg["source"] == "teacher"
    if real:
        # One class (`hand`) on the teacher's boxes; the validation split is the FIRST test set (real
        # photos of other people, like the teacher's), so Ultralytics' per-epoch validation IS the
        # recall curve on real test hands. Nothing is selected on it: last.pt is registered and
        # reported, and then measured on every test set on its own (`recall_by_set`).
        from shared.data.realsets import build_detector_view

        view = Path(cfg["output_dir"]) / "detector_view"
        build_detector_view(data, test_dirs(cfg)[:1], view, pose="pose" in Path(cfg["detector_model"]).stem)
        data = view
    dcfg = DetectorConfig(data=str(data), model=cfg["detector_model"], imgsz=cfg["detector_imgsz"],
                          epochs=cfg["detector_epochs"], batch_size=cfg["detector_batch_size"], seed=cfg["seed"],
                          workers=0, checkpoint_dir=os.path.join(cfg["output_dir"], "detector"),
                          **({"patience": cfg["detector_epochs"] + 1} if real else {}))
    result = train_detector(dcfg)
    metrics = dict(result.metrics)
    if real:
        metrics["recall_curve"] = recall_curve(Path(result.extra["results_csv"]))
        last = metrics["recall_curve"][-1] if metrics["recall_curve"] else {}
        metrics.update({"recall": last.get("recall"), "map50": last.get("map50")})
        metrics["recall_by_set"] = recall_by_set(result.last, test_dirs(cfg), Path(cfg["output_dir"]) / "detector_test",
                                                 cfg["detector_imgsz"])
    log_metrics("detector", {k: v for k, v in metrics.items() if k != "recall_by_set"})
    ref = register_model(result.last if real else result.best, "hand_detector", ["detector", cfg["preset"]],
                         {"metrics": {k: v for k, v in metrics.items() if k != "recall_curve"},
                          "imgsz": cfg["detector_imgsz"], "dataset_hash": ingested["content_hash"]})
    return {"model": ref, "metrics": metrics}


def test_dirs(cfg: dict) -> list[str]:
    """The real test sets of `--set test_dir=A,B`."""
    return [d.strip() for d in cfg.get("test_dir", "").split(",") if d.strip()]


def recall_by_set(weights: str | Path, sets: list[str], root: Path, imgsz: int) -> dict[str, dict]:
    """Recall and mAP50 at IoU 0.5 (Ultralytics' validation) of the detector on each test set alone."""
    import yaml
    from ultralytics import YOLO

    from shared.data.realsets import put_test_set

    model, out = YOLO(str(weights)), {}
    for d in sets:
        split = put_test_set(d, root / Path(d).name)
        data = split / "data.yaml"
        data.write_text(yaml.safe_dump({"path": str(split.resolve()), "train": "images", "val": "images",
                                        "names": {0: "hand"}}))
        r = model.val(data=str(data), imgsz=imgsz, batch=16, workers=0, verbose=False, plots=False,
                      project=str(root / "runs"), name=Path(d).name, exist_ok=True)
        out[Path(d).name] = {"recall": round(float(r.box.mr), 4), "map50": round(float(r.box.map50), 4),
                             "images": len(list((split / "images").iterdir()))}
    return out


def recall_curve(results_csv: Path) -> list[dict]:
    """Per epoch: recall and mAP50 at IoU 0.5 on the validation split (Ultralytics' results.csv)."""
    import csv

    if not results_csv.is_file():
        return []
    rows = list(csv.DictReader(results_csv.open()))
    return [{"epoch": int(float(r["epoch"])), "recall": round(float(r["metrics/recall(B)"]), 4),
             "map50": round(float(r["metrics/mAP50(B)"]), 4)} for r in rows]


def train_gesture_classifier(cfg: dict, ingested: dict, augmented: dict, pretrained: dict) -> dict:
    from pipelines.store import fetch_folder, fetch_model, register_model

    if cfg["classifier_epochs"] <= 0:
        return {"model": None, "metrics": {}, "kind": None}
    data = fetch_folder(ingested["dataset"])
    out = os.path.join(cfg["output_dir"], "classifier")
    if cfg["classifier_source"] == "landmarks":
        # The landmark MLP that ships by default, rebuilt on this dataset's teacher landmarks and
        # measured end to end (default static pipeline, misses counted) on the real test photos.
        from components.gesture_model import GestureModelConfig, build_gesture_model

        result = build_gesture_model(GestureModelConfig(data=str(data), output_dir=out, test_dir=test_dirs(cfg),
                                                        seed=cfg["seed"]))
        test = result.test or {}
        metrics = {"teacher_val_accuracy": result.val_accuracy,
                   **{k: test[k] for k in ("accuracy", "targets", "missed", "unknown", "per_class", "confusion",
                                           "confusion_labels") if k in test}}
        log_metrics("classifier", metrics)
        ref = register_model(os.path.join(out, "weights.npz"), "gesture_landmarks",
                             ["classifier", "landmarks", cfg["preset"]],
                             {"metrics": metrics, "kind": "landmarks", "folder": out,
                              "dataset_hash": ingested["content_hash"]})
        return {"model": ref, "metrics": metrics, "kind": "landmarks", "name": "gesture_landmarks", "folder": out}
    if cfg["classifier_source"] == "gmae" and pretrained.get("encoder"):
        from components.tasks.gmae_finetune import GMAEFinetuneConfig, run_finetune

        fcfg = GMAEFinetuneConfig(data_dir=pretrained["finetune_dir"],
                                  pretrained_weights=str(fetch_model(pretrained["encoder"])), output_dir=out,
                                  epochs=cfg["classifier_epochs"],
                                  model=cfg["gmae_model"].replace("gmae_", "gmae_classifier_"),
                                  batch_size=cfg["batch_size"], seed=cfg["seed"], num_workers=0, progress_bar=False)
        result = run_finetune(fcfg)
        kind, name = "gmae", cfg["gmae_model"]
    else:
        from components.tasks.classifier import ClassifierConfig, train_classifier

        ccfg = ClassifierConfig(data=str(data), train_images=augmented["train_images"],
                                train_labels=augmented["train_labels"], epochs=cfg["classifier_epochs"],
                                batch_size=cfg["batch_size"], model_name=cfg["classifier_model"], output_dir=out,
                                num_workers=0, progress_bar=False, seed=cfg["seed"])
        result = train_classifier(ccfg)
        kind, name = "timm", cfg["classifier_model"]
    log_metrics("classifier", result.metrics)
    ref = register_model(result.best, "gesture_classifier", ["classifier", kind, cfg["preset"]],
                         {"metrics": result.metrics, "model": name, "kind": kind,
                          "dataset_hash": ingested["content_hash"]})
    return {"model": ref, "metrics": result.metrics, "kind": kind, "name": name}


def relabel_gestures(cfg: dict, augmented: dict, classifier: dict) -> dict:
    from components.relabel import RelabelConfig, relabel
    from pipelines.store import fetch_model

    if not cfg["relabel"] or not classifier.get("model") or classifier.get("kind") != "timm":
        return {"train_labels": augmented["train_labels"], "changed": 0}
    out = os.path.join(cfg["output_dir"], "relabeled_train_labels")
    result = relabel(RelabelConfig(images_dir=augmented["train_images"], labels_dir=augmented["train_labels"],
                                   model_weights=str(fetch_model(classifier["model"])), model_type="timm",
                                   model_name=classifier["name"], output_dir=out,
                                   min_confidence=cfg["relabel_min_confidence"]))
    log_metrics("relabel", {"changed": result.changed})
    return {"train_labels": result.labels_dir, "changed": result.changed}


def train_hand_model(cfg: dict, ingested: dict, augmented: dict, relabeled: dict) -> dict:
    from components.tasks.landmarks import MultitaskConfig, train_multitask
    from pipelines.store import fetch_folder, register_model

    if cfg["multitask_epochs"] <= 0:  # MediaPipe's landmark network as it is (exactly MediaPipe's answers)
        return {"model": None, "metrics": {}, "weights": "mediapipe"}
    data = fetch_folder(ingested["dataset"])
    mcfg = MultitaskConfig(train_images=augmented["train_images"], train_labels=relabeled["train_labels"],
                           val_images=str(data / "val" / "images"), val_labels=str(data / "val" / "labels"),
                           model_type=cfg["hand_model"], pretrained_weights=cfg["hand_pretrained_weights"],
                           epochs=cfg["multitask_epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                           head_lr=cfg["head_lr"], kps_weight=cfg["kps_weight"],
                           use_weighted_sampler=True, num_workers=0, progress_bar=False, seed=cfg["seed"],
                           checkpoint_dir=os.path.join(cfg["output_dir"], "hand_model"))
    result = train_multitask(mcfg)
    log_metrics("hand_model", result.metrics)
    ref = register_model(result.best, "hand_landmarks", ["multitask", cfg["hand_model"], cfg["preset"]],
                         {"metrics": result.metrics, "img_size": 224, "gestures": cfg["gesture_names"],
                          "init": cfg["hand_pretrained_weights"], "dataset_hash": ingested["content_hash"]})
    return {"model": ref, "metrics": result.metrics}


def evaluate_models(cfg: dict, ingested: dict, detector: dict, hand_model: dict, classifier: dict) -> dict:
    from components.evaluate import EvaluateConfig, evaluate
    from pipelines.store import fetch_folder, fetch_model

    if cfg["source"] == "teacher":
        return evaluate_real(cfg, detector, classifier)
    data = fetch_folder(ingested["dataset"])
    ecfg = EvaluateConfig(data=str(data), hand_model=str(fetch_model(hand_model["model"])),
                          model_type=cfg["hand_model"],
                          detector=str(fetch_model(detector["model"])) if detector.get("model") else "",
                          output_dir=os.path.join(cfg["output_dir"], "evaluation"), gates=cfg["gates"],
                          latency_frames=cfg["latency_frames"])
    result = evaluate(ecfg)
    log_metrics("evaluate", {f"{section}/{k}": v for section, values in result.metrics.items()
                             for k, v in (values or {}).items()})
    return {"report": result.report_json, "markdown": result.report_md, "metrics": result.metrics,
            "passed": result.passed, "failures": result.failures}


def evaluate_real(cfg: dict, detector: dict, classifier: dict) -> dict:
    """The real preset's report: gesture accuracy and confusion matrix on real photos of other
    people (end to end, misses counted), the YOLO detector's recall / mAP50 there and its recall
    curve over epochs; then the quality gates."""
    from components.evaluate import apply_gates

    out = Path(cfg["output_dir"]) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    gm, dm = classifier.get("metrics") or {}, detector.get("metrics") or {}
    metrics = {"gestures": {k: gm[k] for k in ("accuracy", "targets", "missed", "unknown", "teacher_val_accuracy")
                            if k in gm},
               "detector": {k: dm[k] for k in ("recall", "map50") if dm.get(k) is not None}}
    failures = apply_gates(metrics, cfg["gates"])
    curve = dm.get("recall_curve") or []
    plots = []
    if curve:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["epoch"] for r in curve], [r["recall"] for r in curve], marker="o", label="recall @ IoU 0.5")
        ax.plot([r["epoch"] for r in curve], [r["map50"] for r in curve], marker=".", label="mAP50")
        ax.set_xlabel("epoch")
        ax.set_title("YOLO on real test hands (other people)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "detector_recall_curve.png", dpi=100)
        plt.close(fig)
        plots.append(str(out / "detector_recall_curve.png"))
    report = {"metrics": metrics, "per_class": gm.get("per_class"), "confusion": gm.get("confusion"),
              "confusion_labels": gm.get("confusion_labels"), "recall_curve": curve, "test_dir": test_dirs(cfg),
              "detector_by_set": dm.get("recall_by_set") or {},
              "passed": not failures, "failures": failures}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# Real-photo evaluation", "", f"Test sets (other people): {', '.join(test_dirs(cfg)) or 'none'}", "",
             f"- gesture accuracy (misses and `unknown` count as errors): {metrics['gestures'].get('accuracy')} "
             f"on {metrics['gestures'].get('targets')} hands",
             f"- YOLO recall @ IoU 0.5 on {(test_dirs(cfg) or ['its validation split'])[0]} (the gate): "
             f"{metrics['detector'].get('recall')}, mAP50 {metrics['detector'].get('map50')}",
             *[f"- YOLO on {name} alone: recall {v['recall']}, mAP50 {v['map50']} ({v['images']} photos)"
               for name, v in (dm.get("recall_by_set") or {}).items()],
             "", "| truth \\ predicted | " + " | ".join(gm.get("confusion_labels") or []) + " |",
             "|---|" + "---|" * len(gm.get("confusion_labels") or [])]
    for name, row in zip(cfg["gesture_names"], gm.get("confusion") or []):
        if sum(row):
            lines.append(f"| {name} | " + " | ".join(map(str, row)) + " |")
    lines += ["", "| epoch | recall | mAP50 |", "|---|---|---|"]
    lines += [f"| {r['epoch']} | {r['recall']} | {r['map50']} |" for r in curve]
    lines += ["", "Quality gates: " + ("passed" if not failures else "FAILED: " + "; ".join(failures))]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    log_metrics("evaluate", {f"{section}/{k}": v for section, values in metrics.items() for k, v in values.items()})
    return {"report": str(out / "report.json"), "markdown": str(out / "report.md"), "metrics": metrics,
            "passed": not failures, "failures": failures, "plots": plots}


def export_models(cfg: dict, hand_model: dict, detector: dict, evaluation: dict) -> dict:
    from pipelines.store import fetch_model, publish_model, register_model
    from shared.models.export import OnnxExportConfig, export_onnx_stage
    from shared.models.tensorrt import TensorRTExportConfig, export_tensorrt, tensorrt_available

    out = Path(cfg["output_dir"]) / "export"
    exports: dict = {}
    weights = str(fetch_model(hand_model["model"])) if hand_model.get("model") else "mediapipe"
    hand = export_onnx_stage(OnnxExportConfig(model_type=cfg["hand_model"], weights=weights,
                                              output_path=str(out / "hand_landmarks.onnx"), dynamic_batch=True,
                                              verify=True))
    hand_path, precision, quantization = hand.onnx_path, "fp32", {}
    if cfg.get("precision", "fp32") == "int8":
        hand_path, quantization = int8_hand_model(cfg, weights, out)
        precision = "int8"
    exports["hand_landmarks_onnx"] = register_model(
        hand_path, "hand_landmarks_onnx", ["onnx", "multitask", precision, cfg["preset"]],
        {"source": hand_model["model"]["path"] if hand_model.get("model") else "mediapipe",
         "precision": precision, "quantization": quantization,
         "metrics": evaluation["metrics"].get("keypoints", {}),
         "inputs": hand.inputs, "outputs": hand.outputs, "max_abs_diff": hand.max_abs_diff})
    palm = export_onnx_stage(OnnxExportConfig(model_type="blazepalm_full", weights="mediapipe",
                                              output_path=str(out / "blazepalm.onnx"), dynamic_batch=True))
    exports["blazepalm_onnx"] = register_model(palm.onnx_path, "blazepalm_onnx", ["onnx", "detector", cfg["preset"]],
                                               {"source": "mediapipe palm_detection_full", "inputs": palm.inputs,
                                                "outputs": palm.outputs})
    if tensorrt_available():  # GPU hosts only
        trt = export_tensorrt(TensorRTExportConfig(onnx_path=hand.onnx_path, fp16=True,
                                                   output_path=str(out / "hand_landmarks_fp16.plan")))
        exports["hand_landmarks_trt"] = register_model(trt.engine_path, "hand_landmarks_trt_fp16",
                                                       ["tensorrt", "fp16", cfg["preset"]],
                                                       {"source": hand.onnx_path, "accuracy": trt.accuracy})
    # This step runs only when the quality gates passed: publish what is about to be deployed.
    for ref in [hand_model.get("model"), detector.get("model"), *exports.values()]:
        if ref:
            publish_model(ref)
    return exports


def int8_hand_model(cfg: dict, weights: str, out: Path) -> tuple[str, dict]:
    """The int8 crop model for `precision: int8`: ONNX Runtime QDQ quantization of the exported
    crop model (`weights`), calibrated on real photos (calibration_dir, else input_dir) and verified
    on test_dir; the export refuses a model that misses its tolerances. Returns (path, report)."""
    from shared.errors import UserError
    from shared.inference.gesture_eval import end_to_end_check
    from shared.inference.gestures import landmark_gesture_reader
    from shared.inference.real_crops import real_crops
    from shared.models.export import OnnxExportConfig, export_onnx_stage

    calibration = cfg.get("calibration_dir") or cfg.get("input_dir")
    if not calibration:
        raise UserError("precision int8 needs real photos of hands to calibrate on: "
                        "--set calibration_dir=PATH (or input_dir)")
    tests = test_dirs(cfg)
    # MediaPipe's weights: the gesture comes from the landmarks (the shipped model); a trained head speaks itself
    result = export_onnx_stage(OnnxExportConfig(model_type=cfg["hand_model"], weights=weights, precision="int8",
                                                output_path=str(out / "hand_landmarks_int8.onnx"), dynamic_batch=True,
                                                calibration_dir=[calibration], test_dir=tests,
                                                qat_epochs=int(cfg.get("int8_qat_epochs", 0))), real_crops,
                               gestures=landmark_gesture_reader() if weights == "mediapipe" else None,
                               end_to_end=end_to_end_check(tests))
    return result.onnx_path, result.quantization


def deploy_models(cfg: dict, exports: dict) -> dict:
    from components.deploy import DeployConfig, deploy
    from pipelines.store import fetch_model

    dcfg = DeployConfig(triton_repo=cfg["triton_repo"], backend=cfg["deploy_backend"],
                        onnx=str(fetch_model(exports["hand_landmarks_onnx"])),
                        palm_onnx=str(fetch_model(exports["blazepalm_onnx"])),
                        smoke_test=cfg["smoke_test"])
    result = deploy(dcfg)
    return dataclasses.asdict(result)


def log_metrics(step: str, metrics: dict) -> None:
    """Report a step's final numbers to the pipeline task (offline: into the session zip)."""
    from clearml import Task

    task = Task.current_task()
    if task is None:
        return
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            title, _, series = f"{step}/{key}".partition("/")
            task.get_logger().report_scalar(title=title, series=series, value=float(value), iteration=0)


# ============================================================================ wiring
OPENCV = "opencv-python-headless==4.11.0.86"  # the crop warp's library: the same version in every venv
STEP_PACKAGES = {
    "data": ["numpy", OPENCV, "albumentations", "pillow", "pyyaml", "tqdm", "clearml"],
    # source teacher: ingest runs the MediaPipe teacher (its ONNX files are exported from torch on first use)
    "teacher": ["numpy", OPENCV, "albumentations", "pillow", "pyyaml", "tqdm", "torch==2.14.1", "onnx", "onnxruntime",
                "numba", "scipy", "tflite", "clearml"],
    "torch": ["torch==2.14.1", "torchvision==0.29.1", "lightning", "timm", "numpy", OPENCV,
              "albumentations", "pyyaml", "tqdm", "scipy", "numba", "matplotlib", "tflite", "clearml"],
    "detector": ["ultralytics", "torch==2.14.1", "torchvision==0.29.1", "numpy", OPENCV, "pyyaml", "clearml"],
    "export": ["torch==2.14.1", "onnx", "onnxruntime", "numpy", OPENCV, "numba", "tflite", "clearml"],
    "deploy": ["numpy", "onnx", "onnxruntime", OPENCV, "scipy", "numba", "tritonclient[grpc]", "pyyaml", "clearml"],
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One node of the DAG; both orchestrators (ClearML here, Kubeflow in pipelines/kfp.py) read STEPS."""

    name: str
    fn: object  # the stage function
    output: str  # name of its return value, an input of later steps
    inputs: tuple  # names of earlier outputs ("config" is the pipeline parameter), in argument order
    task_type: str  # ClearML task type
    queue: str  # queue kind: cpu | gpu (training and export) -> cfg.queues, or a GPU request on Kubeflow
    packages: str  # key of STEP_PACKAGES
    cached: bool  # inputs determine outputs
    gated: bool = False  # runs only when the quality gates passed


STEPS = [
    Step("ingest_dataset", ingest_dataset, "ingested", ("config",), "data_processing", "cpu", "data", True),
    Step("augment_dataset", augment_dataset, "augmented", ("config", "ingested"), "data_processing", "cpu", "data",
         True),
    Step("pretrain_encoder", pretrain_encoder, "pretrained", ("config", "ingested"), "training", "gpu", "torch",
         True),
    Step("train_detector_model", train_detector_model, "detector", ("config", "ingested"), "training", "gpu",
         "detector", True),
    Step("train_gesture_classifier", train_gesture_classifier, "classifier",
         ("config", "ingested", "augmented", "pretrained"), "training", "gpu", "torch", True),
    Step("relabel_gestures", relabel_gestures, "relabeled", ("config", "augmented", "classifier"),
         "data_processing", "gpu", "torch", True),
    Step("train_hand_model", train_hand_model, "hand_model", ("config", "ingested", "augmented", "relabeled"),
         "training", "gpu", "torch", True),
    Step("evaluate_models", evaluate_models, "evaluation", ("config", "ingested", "detector", "hand_model",
                                                             "classifier"), "qc", "gpu", "torch", False),
    Step("export_models", export_models, "exports", ("config", "hand_model", "detector", "evaluation"), "custom",
         "gpu", "export", False, gated=True),
    Step("deploy_models", deploy_models, "deployment", ("config", "exports"), "custom", "cpu", "deploy", False,
         gated=True),
]
GATE = "evaluation"  # the output whose "passed" / "failures" decide the gated steps


class GateFailed(RuntimeError):
    pass


def step_packages(step: Step, cfg: PipelineConfig) -> str:
    """The key of STEP_PACKAGES an agent installs for `step`: ingest with the teacher needs the inference stack."""
    return "teacher" if step.name == "ingest_dataset" and cfg.source == "teacher" else step.packages


def build_pipeline(cfg: PipelineConfig):
    """Decorate the steps with this run's queues and return the pipeline function."""
    from clearml import PipelineDecorator

    steps = {}
    for step in STEPS:
        steps[step.name] = PipelineDecorator.component(
            return_values=[step.output], cache=step.cached, task_type=step.task_type, name=step.name,
            execution_queue=cfg.queues.get(step.queue, step.queue), packages=STEP_PACKAGES[step_packages(step, cfg)],
            helper_functions=[log_metrics, test_dirs, recall_curve, recall_by_set, evaluate_real, int8_hand_model],
            repo=None)(step.fn)

    @PipelineDecorator.pipeline(name=f"hand-perception-{cfg.preset}", project=cfg.project, version="1.0",
                                pipeline_execution_queue=cfg.queues.get("services", "services"),
                                add_pipeline_tags=True)
    def hand_pipeline(config: dict) -> dict:
        from clearml import Task

        task = Task.current_task()
        folder = task.get_offline_mode_folder() if task is not None and task.is_offline() else None
        session = {"task_id": task.id if task is not None else None,
                   "offline_zip": f"{folder}.zip" if folder else None}
        values = {"config": config}
        for step in STEPS:
            if step.gated and not values[GATE]["passed"]:
                raise GateFailed("quality gate failed, export and deploy skipped: "
                                 + "; ".join(values[GATE]["failures"]))
            values[step.output] = steps[step.name](*(values[name] for name in step.inputs))
        del values["config"]
        return {"session": session, **values}

    return hand_pipeline


def run_offline(cfg: PipelineConfig) -> dict:
    """The same pipeline, offline, every step in this process (no server needed)."""
    from clearml import PipelineDecorator, Task

    from shared.logger import pin_clearml_requirements

    Task.set_offline(True)
    # The SDK reports through a forked background process by default; in one offline process
    # that fork can deadlock on inherited thread locks and then stall Task.close() for its full
    # timeout (~5 min). Report from this process instead (sdk.development.report_use_subprocess).
    from clearml.backend_interface.task.task import Task as _BackendTask

    _BackendTask._report_subprocess_enabled = False
    pin_clearml_requirements()  # not the SDK's import scan, which races the steps' imports
    PipelineDecorator.debug_pipeline()
    pipeline = build_pipeline(cfg)
    start = time.time()
    error: Exception | None = None
    result: dict = {}
    try:
        result = pipeline(config=cfg.as_step_dict()) or {}
    except GateFailed as exc:
        error = exc
    task = Task.current_task()
    session = (result.get("session") or {}).get("offline_zip")
    if task is not None:
        if session is None and task.get_offline_mode_folder():
            session = f"{task.get_offline_mode_folder()}.zip"
        task.close()  # writes the offline session zip
    summary = {"preset": cfg.preset, "seconds": round(time.time() - start, 1), "output_dir": cfg.output_dir,
               "offline_session": session, "error": str(error) if error else None, "result": result}
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / "pipeline_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if error:
        raise error
    return summary


def print_summary(summary: dict) -> None:
    r = summary["result"]
    ev = r.get("evaluation") or {}
    print("\n=== pipeline finished in", summary["seconds"], "s ===")
    print("dataset        ", (r.get("ingested") or {}).get("dataset", {}).get("path"))
    for key in ("detector", "classifier", "hand_model", "pretrained"):
        ref = (r.get(key) or {}).get("model") or (r.get(key) or {}).get("encoder")
        if ref:
            print(f"{key:15s}", ref["path"])
    print("report         ", ev.get("markdown"))
    for name, ref in (r.get("exports") or {}).items():
        print(f"{name:15s}", ref["path"])
    dep = r.get("deployment") or {}
    print("triton_repo    ", dep.get("triton_repo"), "| smoke request:", dep.get("smoke"))
    print("offline session", summary["offline_session"])
    print("summary        ", Path(summary["output_dir"]) / "pipeline_summary.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python pipelines/full.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="demo | full | tiny | a YAML path (default: demo offline, "
                                                       "full with a server)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys (repeatable: --set a=1 --set b=2 is --set a=1 b=2)")
    parser.add_argument("--offline", action="store_true", help="run offline in this process even with a server")
    parser.add_argument("--local", action="store_true", help="with a server: run steps as local subprocesses")
    args = parser.parse_args(argv)

    from pipelines.store import check_server, configured_server
    from shared.errors import UserError

    host = None if args.offline else configured_server()
    from shared.config import check_outputs

    try:  # every value checked (types, ranges, keys) and the outputs writable, before ClearML starts
        cfg = load_pipeline_config(args.preset or ("full" if host else "demo"), args.set)
        check_outputs(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if host is None:
        if not args.offline:
            print("No ClearML server configured (clearml.conf / CLEARML_API_HOST): running the pipeline offline "
                  f"in this process on the '{cfg.preset}' preset.")
        try:
            summary = run_offline(cfg)
        except GateFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print_summary(summary)
        return 0
    problem = check_server(host)
    if problem:
        print(f"error: {problem}; fix clearml.conf / CLEARML_API_* or run offline with --offline", file=sys.stderr)
        return 2
    from clearml import PipelineDecorator

    if args.local:  # the steps run as subprocesses here, on this machine's files
        cfg = dataclasses.replace(cfg, hand_over="paths")
    pipeline = build_pipeline(cfg)
    if args.local:
        PipelineDecorator.run_locally()
    pipeline(config=cfg.as_step_dict())
    print("pipeline started on the ClearML server:", host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
