"""Evaluate the trained models on a held-out split; write one report and apply the quality gates.

    python -m components.evaluate --data D --hand_model C/best.pt [--detector det/best.pt] \
        --output_dir E [--gates '{"gestures/macro_f1": 0.9, "keypoints/pck@0.1": 0.9}']

Measures: detector mAP50 / mAP50-95 (when a YOLO detector is given), keypoints PCK@0.05/0.1/0.2
and NME and gestures accuracy / macro-F1 / confusion matrix on ground-truth crops of the test
split, tracking MOTA / IDF1 / ID switches on the dataset's synthetic sequences (the full hand
pipeline, and the tracker alone on noisy ground-truth boxes), and per-frame latency. Writes
`report.json`, `report.md` and PNG plots; a failing gate names the metric. Exit code 3 when a
gate fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import add_config_args, check_gates, check_outputs, load_config, option, save_config
from shared.data.images import report_skipped
from shared.errors import UserError, run_cli
from shared.hand import GESTURES, KEYPOINT_NAMES
from shared.logger import get_logger


@dataclass
class EvaluateConfig:
    data: str = option("", "dataset folder written by components.ingest")
    split: str = option("test", "split to evaluate (falls back to val when empty)")
    hand_model: str = option("mediapipe", "crop-model weights: best.pt / .pth from training, or 'mediapipe'")
    model_type: str = option("blazehand_full", "crop model: blazehand_full | blazehand_lite")
    detector: str = option("", "a trained YOLO .pt for mAP and the pipeline ('' = skip mAP, BlazePalm in the pipeline)")
    detector_imgsz: int = option(320, "YOLO evaluation image size", min=32)
    batch_size: int = option(32, "crops per batch", min=1)
    backend: str = option("onnxruntime", "runtime of the hand pipeline for tracking and latency: torch | onnxruntime "
                                         "| openvino")
    expand_ratio: float = option(1.0, "ground-truth crop: keypoint extent x (1 + this), as in training", min=0.0)
    tracking: bool = option(True, "evaluate tracking on D/sequences when present")
    pipeline_detector: str = option("blazepalm", "detector of the hand pipeline for tracking/latency: blazepalm | "
                                                 "yolo (the --detector weights)",
                                    metadata={"choices": ["blazepalm", "yolo"]})
    latency_frames: int = option(20, "frames timed for latency (0 = skip)", min=0)
    output_dir: str = option("outputs/evaluation", "where report.json, report.md and plots go", output="dir")
    gates: dict = option({}, "metric -> minimum (or {'max': v} for lower-is-better); failing gates are listed",
                         check=check_gates)


@dataclass
class EvaluateResult:
    metrics: dict[str, Any]
    passed: bool
    failures: list[str]
    report_json: str
    report_md: str
    plots: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- measurements
def _split_dirs(data: Path, split: str) -> tuple[Path, Path]:
    for s in (split, "val"):
        images = data / s / "images"
        if images.is_dir() and any(images.iterdir()):
            return images, data / s / "labels"
    raise UserError(f"{data}: no images in the {split} (or val) split; pass --data with a dataset from ingest")


def evaluate_crops(cfg: EvaluateConfig, data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keypoint and gesture metrics of the crop model on ground-truth crops."""
    import torch

    from components.tasks.landmarks import build_crop_model
    from shared.data.crops import HandCropDataset
    from shared.training.metrics import classification_metrics, keypoint_metrics

    images, labels = _split_dirs(data, cfg.split)
    dataset = HandCropDataset(images, labels, img_size=224, expand_ratio=cfg.expand_ratio, rotate=True)
    report_skipped(dataset.skipped)  # files that do not decode: skipped, named, counted in report.json
    model, _, _, _ = build_crop_model(cfg.model_type, len(GESTURES), cfg.hand_model)
    model.eval()
    preds, targets, vis, sizes, g_true, g_pred = [], [], [], [], [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    with torch.inference_mode():
        for batch in loader:
            out = model(batch["image"])
            preds.append(out["landmarks"][..., :2].numpy())
            targets.append(batch["keypoints"].numpy())
            vis.append(batch["visibility"].numpy())
            sizes.append(batch["box_size"].numpy())
            g_true.append(batch["gesture"].numpy())
            g_pred.append(out["gesture_logits"].argmax(-1).numpy())
    pred, target, v = np.concatenate(preds), np.concatenate(targets), np.concatenate(vis)
    size = np.concatenate(sizes)
    kp = keypoint_metrics(pred, target, v, size)
    err = np.linalg.norm(pred - target, axis=-1) / np.maximum(size, 1e-6)[:, None]
    mask = v > 0
    kp["per_keypoint_nme"] = [float(err[:, k][mask[:, k]].mean()) if mask[:, k].any() else None
                              for k in range(err.shape[1])]
    kp["hands"] = int(len(pred))
    gestures = classification_metrics(np.concatenate(g_true), np.concatenate(g_pred), len(GESTURES), GESTURES)
    return kp, gestures


def evaluate_detector(cfg: EvaluateConfig, data: Path, work: Path) -> dict[str, Any]:
    from components.tasks.detector import build_dataset_view, ultralytics_offline

    with ultralytics_offline(keep_clearml=False):
        from ultralytics import YOLO

        model = YOLO(cfg.detector)
        pose = getattr(model, "task", "detect") == "pose"
        view_yaml, counts = build_dataset_view(data, work / "detector_view", pose=pose)
        split = cfg.split if counts.get(cfg.split) else "val"
        metrics = model.val(data=str(view_yaml), split=split, imgsz=cfg.detector_imgsz, batch=8, workers=0,
                            plots=False, verbose=False, project=str(work), name="detector_val", exist_ok=True)
    out = {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}
    if pose and hasattr(metrics, "pose"):
        out["pose_map50"] = float(metrics.pose.map50)
        out["pose_map50_95"] = float(metrics.pose.map)
    return out


def _read_sequence(seq_dir: Path) -> tuple[list[np.ndarray], list[Any]]:
    import cv2

    from shared.data.images import read_image
    from shared.data.synthetic import read_mot
    from shared.tracking.mot_eval import FrameBoxes

    frames = sorted((seq_dir / "images").glob("*.jpg"))
    gt_map = read_mot(seq_dir / "gt" / "gt.txt")
    images, gt = [], []
    for f, path in enumerate(frames, 1):
        images.append(cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB))  # a bad frame: one error naming it
        rows = gt_map.get(f, [])
        gt.append(FrameBoxes(ids=[r[0] for r in rows], xyxy=np.array([r[1] for r in rows]).reshape(-1, 4)))
    return images, gt


def evaluate_tracking_and_latency(cfg: EvaluateConfig, data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from shared.inference.pipeline import HandPipeline, PipelineConfig
    from shared.tracking.mot_eval import FrameBoxes, evaluate_tracking, noisy_detections, run_tracker
    from shared.tracking.tracker import HandTracker

    seq_dirs = sorted(p for p in (data / "sequences").glob("seq_*") if (p / "gt" / "gt.txt").is_file()) \
        if (data / "sequences").is_dir() else []
    if not seq_dirs:
        return {}, {}
    use_yolo = cfg.pipeline_detector == "yolo" and bool(cfg.detector)
    pcfg = PipelineConfig(detector="yolo" if use_yolo else "blazepalm", yolo_model=cfg.detector if use_yolo else "",
                          model_type=cfg.model_type, model_weights=cfg.hand_model, backend=cfg.backend)
    pipeline = HandPipeline(pcfg)
    gts, hyps, noisy_hyps, names = [], [], [], []
    timed = 0
    first_images: list[np.ndarray] = []  # reused for the latency measurement
    for k, seq_dir in enumerate(seq_dirs):
        images, gt = _read_sequence(seq_dir)
        first_images = first_images or images
        pipeline.reset()
        hyp = [FrameBoxes.tracked(pipeline.process(image)) for image in images]
        timed += len(images)
        h, w = images[0].shape[:2]
        gts.append(gt)
        hyps.append(hyp)
        noisy_hyps.append(run_tracker(HandTracker(pcfg.tracker_config()), noisy_detections(gt, seed=k,
                                                                                            image_size=(w, h))))
        names.append(seq_dir.name)
    pipe = evaluate_tracking(gts, hyps, names=names)["overall"]
    noisy = evaluate_tracking(gts, noisy_hyps, names=names)["overall"]
    tracking = {"idf1": pipe["idf1"], "mota": pipe["mota"], "id_switches": pipe["id_switches"],
                "noisy_gt_idf1": noisy["idf1"], "noisy_gt_mota": noisy["mota"],
                "noisy_gt_id_switches_per_100": noisy["id_switches_per_100"],
                "detector": pcfg.detector, "sequences": len(seq_dirs), "frames": timed}
    latency: dict[str, Any] = {}
    if cfg.latency_frames > 0:
        images = first_images[: cfg.latency_frames]
        pipeline.reset()
        start = time.perf_counter()
        for image in images:
            pipeline.process(image)
        latency = {"ms_per_frame": 1000 * (time.perf_counter() - start) / max(len(images), 1),
                   **{f"ms_{k}": v for k, v in pipeline.mean_timing().items()}}
    return tracking, latency


# --------------------------------------------------------------------------- gates and report
def apply_gates(metrics: dict[str, Any], gates: dict[str, Any]) -> list[str]:
    failures = []
    for name, rule in gates.items():
        section, _, key = name.partition("/")
        value = (metrics.get(section) or {}).get(key) if key else metrics.get(section)
        if isinstance(rule, dict):
            bound, higher_is_better = float(rule.get("max", rule.get("min", 0))), "max" not in rule
        else:
            bound, higher_is_better = float(rule), True
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            failures.append(f"{name} was not measured (gate {'>=' if higher_is_better else '<='} {bound})")
        elif higher_is_better and value < bound:
            failures.append(f"{name} = {value:.4f} < {bound}")
        elif not higher_is_better and value > bound:
            failures.append(f"{name} = {value:.4f} > {bound}")
    return failures


def _plots(metrics: dict[str, Any], out: Path) -> list[str]:
    from matplotlib.figure import Figure

    paths = []
    cm = np.asarray(metrics["gestures"]["confusion_matrix"])
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(GESTURES)), GESTURES, rotation=45, ha="right")
    ax.set_yticks(range(len(GESTURES)), GESTURES)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("gesture confusion matrix")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    paths.append(str(out / "confusion_matrix.png"))
    per_kp = [v if v is not None else 0.0 for v in metrics["keypoints"]["per_keypoint_nme"]]
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    ax.bar(range(len(per_kp)), per_kp)
    ax.set_xticks(range(len(per_kp)), KEYPOINT_NAMES, rotation=90, fontsize=7)
    ax.set_ylabel("error / hand size")
    ax.set_title("keypoint error per joint")
    fig.tight_layout()
    fig.savefig(out / "keypoint_error.png", dpi=100)
    paths.append(str(out / "keypoint_error.png"))
    return paths


def _markdown(metrics: dict[str, Any], failures: list[str], gates: dict[str, Any]) -> str:
    lines = ["# Evaluation report", ""]
    for section in ("detector", "keypoints", "gestures", "tracking", "latency"):
        values = metrics.get(section)
        if not values:
            continue
        lines += [f"## {section}", "", "| metric | value |", "|---|---|"]
        for key, value in values.items():
            if isinstance(value, (int, float)):
                lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
        if section == "gestures":
            lines += ["", "per-class F1: " + ", ".join(f"{k} {v:.3f}" for k, v in values["per_class_f1"].items())]
        lines.append("")
    lines += ["## quality gates", ""]
    lines += [f"- {name}: {rule}" for name, rule in gates.items()] or ["- none"]
    lines += ["", "**passed**" if not failures else "**failed**: " + "; ".join(failures), ""]
    return "\n".join(lines)


def evaluate(cfg: EvaluateConfig, logger: Any = None) -> EvaluateResult:
    data = Path(cfg.data)
    if not (data / "data.yaml").is_file():
        raise UserError(f"--data {data}: no data.yaml; pass a dataset folder written by components.ingest")
    check_outputs(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = logger or get_logger(out)
    metrics: dict[str, Any] = {}
    metrics["keypoints"], metrics["gestures"] = evaluate_crops(cfg, data)
    if cfg.detector:
        metrics["detector"] = evaluate_detector(cfg, data, out)
    if cfg.tracking:
        metrics["tracking"], metrics["latency"] = evaluate_tracking_and_latency(cfg, data)
    failures = apply_gates(metrics, cfg.gates)
    plots = _plots(metrics, out)
    report = {"config": asdict(cfg), "metrics": metrics, "gates": cfg.gates, "passed": not failures,
              "failures": failures}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(_markdown(metrics, failures, cfg.gates))
    save_config(cfg, out / "evaluate_config.yaml")
    for section, values in metrics.items():
        logger.log_scalars({f"{section}/{k}": v for k, v in (values or {}).items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=0)
    logger.log_matrix("gesture confusion", metrics["gestures"]["confusion_matrix"], list(GESTURES))
    for p in plots:
        logger.log_image(Path(p).stem, p)
    return EvaluateResult(metrics, not failures, failures, str(out / "report.json"), str(out / "report.md"), plots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with EvaluateConfig keys (flags override it)")
    add_config_args(parser, EvaluateConfig, skip=("gates",))
    parser.add_argument("--gates", default=None, help="JSON: metric -> minimum, e.g. '{\"gestures/macro_f1\": 0.9}'")
    args = parser.parse_args(argv)
    cfg = load_config(EvaluateConfig, args.config, args)
    result = evaluate(cfg)
    print(Path(result.report_md).read_text())
    if not result.passed:
        print("quality gate failed: " + "; ".join(result.failures), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    run_cli(main)
