"""How fast a YOLO hand detector learns REAL hands from the teacher's boxes: recall at IoU 0.5
on real test photos of other people, against epochs.

    python -m benchmarks.detector_real --data D --test_dir ../shared/data/hagrid_sample \
        ../shared/data/roboflow_gestures_v6 --model yolo11n.yaml --imgsz 320 --epochs 15 --name cpu320

`--data` is a dataset written by `components.autolabel` (all its splits train: the test
set is the other people of `--test_dir`). Every hand is one class, `hand` (the detector's
job is hands; gestures are the landmark model's). The test set's annotated hands
(HaGRID's `no_gesture` hands included) are the validation split, so Ultralytics' per-epoch
validation is the curve: `metrics/recall(B)` (at its F1-best confidence) and mAP50.
Writes `benchmarks/results/detector_real_<name>.json` and a PNG of the curve.

`--teacher_only` measures the teacher itself instead (no training): the share of the test
sets' annotated hands that the MediaPipe teacher's boxes match at IoU 0.5, on the whole
photo (`components.autolabel`'s default) and with `--tiles` (writes
`detector_real_teacher.json`). A detector that learns the teacher's boxes is bounded by it.

`--build_only DIR` writes the dataset view (images copied, long side resized to
`--resize`) and stops, so a GPU machine can train on it without the sources
(`--view DIR` trains on such a view).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import yaml

from shared.data.realsets import build_detector_view

RESULTS = Path(__file__).resolve().parent / "results"


def train(data_yaml: Path, args: argparse.Namespace, out_dir: Path) -> list[dict]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    dict.update(SETTINGS, {"sync": False, "clearml": False, "tensorboard": False, "wandb": False, "mlflow": False})
    info = yaml.safe_load(data_yaml.read_text())
    info["path"] = str(data_yaml.parent.resolve())  # a view built elsewhere
    data_yaml.write_text(yaml.safe_dump(info, sort_keys=False))
    _results_csv_without_polars()
    if args.resume:  # a run stopped part-way (a session's end): Ultralytics restores its settings and schedule
        model = YOLO(str(out_dir / args.name / "weights" / "last.pt"))
        model.train(resume=True)
        return _curve(Path(model.trainer.save_dir))
    model = YOLO(args.model)
    amp = "bf16" if args.device not in ("cpu", "") else False
    # --model WEIGHTS.pt: go on from a trained detector (a second phase, e.g. on a better teacher's labels)
    tuned = {"optimizer": "AdamW", "lr0": args.lr0} if args.lr0 else {}
    model.train(data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device=args.device,
                workers=args.workers, seed=0, project=str(out_dir), name=args.name, exist_ok=True, plots=False,
                pretrained=str(args.model).endswith(".pt"), amp=amp, **tuned, mosaic=args.mosaic,
                close_mosaic=args.close_mosaic, rect=args.rect,
                scale=args.scale, cache=True, verbose=False, patience=1000, time=args.hours or None)
    return _curve(Path(model.trainer.save_dir))


def _curve(save_dir: Path) -> list[dict]:
    rows = list(csv.DictReader(open(save_dir / "results.csv")))
    return [{"epoch": int(float(r["epoch"])), "recall": float(r["metrics/recall(B)"]),
             "precision": float(r["metrics/precision(B)"]), "map50": float(r["metrics/mAP50(B)"]),
             "seconds": float(r.get("time", 0.0))} for r in rows]


def _results_csv_without_polars() -> None:
    """Ultralytics reads results.csv with polars; where polars is not installed (a bare GPU
    image), read it with the csv module instead (same dict of columns)."""
    try:
        import polars  # noqa: F401
        return
    except ImportError:
        from ultralytics.engine.trainer import BaseTrainer

    def read_results_csv(self) -> dict:
        rows = list(csv.DictReader(open(self.csv)))
        return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

    BaseTrainer.read_results_csv = read_results_csv


def teacher_recall(test_dir: Path, tiles: int, max_hands: int = 2) -> dict:
    """Recall at IoU 0.5 of the MediaPipe teacher's boxes (as `components.autolabel` finds them, before
    its per-photo rejections; `tiles` as its flag) against every annotated hand of a test set; the
    misses' sizes too."""
    import cv2
    import numpy as np
    from tqdm import tqdm

    from components.autolabel import AutolabelConfig, _teacher, teacher_hands
    from shared.data.realsets import read_hand_boxes
    from shared.models.blazepalm_post import iou_one_to_many

    cfg = AutolabelConfig(tiles=tiles, max_hands=max_hands)
    pipe = _teacher(cfg)
    best, sides, extra, photos = [], [], 0, read_hand_boxes(test_dir)
    t0 = time.perf_counter()
    for path, boxes in tqdm(photos, desc=f"teacher tiles={tiles} {test_dir.name}", unit="img"):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        hands, _ = teacher_hands(pipe, rgb, tiles, cfg.min_presence)
        found = np.asarray(hands.xyxy, np.float64).reshape(-1, 4)
        truth = np.asarray(boxes, np.float64) * [w, h, w, h]
        for box in truth:
            best.append(float(iou_one_to_many(box, found).max()) if len(found) else 0.0)
            sides.append(float(max(box[2] - box[0], box[3] - box[1]) / max(w, h)))
        extra += sum(1 for box in found if not len(truth) or iou_one_to_many(box, truth).max() < 0.5)
    best_a, sides_a = np.array(best), np.array(sides)
    missed = best_a < 0.5
    return {"test_set": test_dir.name, "tiles": tiles, "photos": len(photos), "hands": len(best),
            "recall": round(float((~missed).mean()), 3) if best else None,
            "teacher_boxes_matching_no_hand": extra,
            "missed_hand_side_fraction_median": round(float(np.median(sides_a[missed])), 3) if missed.any() else None,
            "ms_per_photo": round(1000 * (time.perf_counter() - t0) / max(len(photos), 1), 1)}


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        ax.plot([r["epoch"] for r in rows], [r["recall"] for r in rows], label=name)
    ax.axhline(0.55, ls=":", c="grey")
    ax.axhline(0.85, ls="--", c="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("recall @ IoU 0.5, real test hands")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a dataset written by components.autolabel")
    p.add_argument("--test_dir", nargs="+", default=[])
    p.add_argument("--view", help="train on a view built by --build_only")
    p.add_argument("--build_only", help="write the view here and stop")
    p.add_argument("--resize", type=int, default=0, help="--build_only: long image side (0 = copy as is)")
    p.add_argument("--pose", action="store_true", help="pose targets: the teacher's 21 keypoints too")
    p.add_argument("--model", default="yolo11n.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mosaic", type=float, default=1.0)
    p.add_argument("--close_mosaic", type=int, default=10)
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--rect", action="store_true")
    p.add_argument("--hours", type=float, default=0.0, help="wall-clock budget (Ultralytics' time=)")
    p.add_argument("--lr0", type=float, default=0.0,
                   help="AdamW at this learning rate (0: Ultralytics' 'auto' optimizer); lower for a second phase")
    p.add_argument("--name", default="run")
    p.add_argument("--resume", action="store_true",
                   help="continue the run --name from its last epoch (fixed --epochs runs; --hours restarts its clock)")
    p.add_argument("--teacher_only", action="store_true", help="measure the teacher's own recall, no training")
    p.add_argument("--tiles", type=int, default=2, help="--teacher_only: the tiled teacher's N")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    pose = args.pose or "pose" in args.model
    for d in [*args.test_dir, *([args.data] if args.data else [])]:
        if not Path(d).is_dir():
            p.error(f"{d} is not a folder (--test_dir: HaGRID or YOLO test photos; --data: an autolabel dataset)")
    if args.teacher_only:
        rows = [teacher_recall(Path(d), t) for d in args.test_dir for t in (0, args.tiles)]
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "detector_real_teacher.json").write_text(json.dumps(rows, indent=2))
        print(f"{'test set':24s} {'tiles':>5s} {'hands':>5s} {'recall':>6s} {'no-hand boxes':>13s} {'ms/photo':>8s}")
        for r in rows:
            print(f"{r['test_set']:24s} {r['tiles']:5d} {r['hands']:5d} {r['recall']:6.3f} "
                  f"{r['teacher_boxes_matching_no_hand']:13d} {r['ms_per_photo']:8.1f}")
        return
    if args.build_only:
        build_detector_view(Path(args.data), [Path(d) for d in args.test_dir], Path(args.build_only), pose, args.resize)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / f"_detector_real_{args.name}"
    if args.resume and not (work / args.name / "weights" / "last.pt").is_file():
        p.error(f"--resume: no run {args.name!r} to continue ({work / args.name / 'weights' / 'last.pt'} is missing)")
    if args.resume and not args.view:
        data_yaml = work / "view" / "data.yaml"  # the run's own view, as it was
    else:
        data_yaml = Path(args.view) / "data.yaml" if args.view else build_detector_view(
            Path(args.data), [Path(d) for d in args.test_dir], work / "view", pose)
    t0 = time.perf_counter()
    rows = train(data_yaml, args, work)
    if args.resume:  # the report names the run's own settings, not this command's defaults
        run_args = yaml.safe_load((work / args.name / "args.yaml").read_text())
        for key in ("imgsz", "batch", "epochs", "mosaic", "rect", "device"):
            setattr(args, key, run_args.get(key, getattr(args, key)))
    result = {"name": args.name, "model": args.model, "imgsz": args.imgsz, "batch": args.batch, "pose": pose,
              "device": args.device, "mosaic": args.mosaic, "rect": args.rect, "epochs": args.epochs,
              "seconds": round(time.perf_counter() - t0, 1), "curve": rows,
              "test_sets": args.test_dir, "final_recall": rows[-1]["recall"] if rows else None,
              "best_recall": max((r["recall"] for r in rows), default=None)}
    (out / f"detector_real_{args.name}.json").write_text(json.dumps(result, indent=2))
    plot({args.name: rows}, out / f"detector_real_{args.name}.png")
    print(f"{'epoch':>5s} {'recall':>7s} {'mAP50':>7s}")
    for r in rows:
        print(f"{r['epoch']:5d} {r['recall']:7.3f} {r['map50']:7.3f}")


if __name__ == "__main__":
    main()

