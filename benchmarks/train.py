"""Training throughput per task: samples per second on this machine.

    python -m benchmarks.train [--tasks data classifier keypoints multitask detector] [--steps 6]
                               [--threads 1] [--device cpu|cuda]

- data: hand crops per second out of `HandCropDataset` (read image, ROI, warp, augment), for the
  upright landmark crop with augmentation and for the classifier's box crop;
- classifier / keypoints / multitask: optimizer steps of the real Lightning module's loss
  (forward, backward, AdamW) on real crops, after warm-up; samples/s = batch x steps / time;
- detector: Ultralytics YOLO11n-pose, images/s over one training epoch (timed from the
  epoch-start to the epoch-end callback, so set-up and validation are not counted).

Random initial weights (speed does not depend on them). Prints a table and writes
benchmarks/results/train.json. On a shared CPU use --threads 1: two OpenMP threads
spinning on two busy cores were measured 5-20x slower than one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import print_table, write_results


def render_dataset(root: Path, images: int, size: int) -> Path:
    import cv2
    import yaml

    from shared.data.labels import write_labels
    from shared.data.synthetic import SyntheticConfig, render_image
    from shared.hand import GESTURES, NUM_KEYPOINTS

    cfg = SyntheticConfig(image_size=size, min_hands=1, max_hands=3)
    for split, n in (("train", images), ("val", max(4, images // 4))):
        for i in range(n):
            sample = render_image(11, i + (0 if split == "train" else 10_000), cfg)
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "images" / f"{i:04d}.jpg"), sample.image)
            write_labels(root / split / "labels" / f"{i:04d}.txt", sample.labels)
    (root / "data.yaml").write_text(yaml.safe_dump({
        "path": str(root), "train": "train/images", "val": "val/images", "kpt_shape": [NUM_KEYPOINTS, 3],
        "names": dict(enumerate(GESTURES))}))
    return root


def bench_data(root: Path, repeats: int) -> list[dict[str, Any]]:
    from shared.data.crops import CropAugment, HandCropDataset

    rows = []
    images, labels = root / "train" / "images", root / "train" / "labels"
    for name, kwargs in (("landmark crop 224 + augment", dict(img_size=224, expand_ratio=0.5, augment=CropAugment())),
                         ("landmark crop 224", dict(img_size=224, expand_ratio=0.5)),
                         ("box crop 224 (classifier)", dict(img_size=224, expand_ratio=0.3, rotate=False,
                                                            use_box=True))):
        ds = HandCropDataset(images, labels, **kwargs)
        ds[0]  # warm-up (imports albumentations)
        start = time.perf_counter()
        n = 0
        for _ in range(repeats):
            for i in range(len(ds)):
                ds[i]
                n += 1
        rows.append({"task": "data", "what": name, "batch": 1, "samples_per_s": n / (time.perf_counter() - start)})
    return rows


def _crop_batch(root: Path, batch: int, img_size: int, use_box: bool) -> dict[str, torch.Tensor]:
    from shared.data.crops import HandCropDataset

    ds = HandCropDataset(root / "train" / "images", root / "train" / "labels", img_size=img_size,
                         expand_ratio=0.3 if use_box else 0.5, rotate=not use_box, use_box=use_box)
    items = [ds[i % len(ds)] for i in range(batch)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _time_steps(step, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_module(task: str, model_name: str, root: Path, batch: int, steps: int, device: str) -> dict[str, Any]:
    from shared.models.registry import create_model
    from shared.training.losses import classification_loss
    from shared.training.modules import LandmarkLossConfig, LandmarkModule, OptimConfig, build_optimizer

    if task == "classifier":
        model = create_model(f"timm:{model_name}", num_classes=5).to(device).train()
        data = {k: v.to(device) for k, v in _crop_batch(root, batch, 224, use_box=True).items()}

        def loss_fn() -> torch.Tensor:
            return classification_loss(model(data["image"]), data["gesture"])
    else:
        model = create_model(model_name, num_gestures=5).to(device).train()
        loss_cfg = LandmarkLossConfig(cls_weight=2.0 if task == "multitask" else 0.0)
        module = LandmarkModule(model, OptimConfig(), loss_cfg, img_size=224)
        data = {k: v.to(device) for k, v in _crop_batch(root, batch, 224, use_box=False).items()}

        def loss_fn() -> torch.Tensor:
            return module.compute_loss(model(data["image"]), data, train=True)["loss"]

    optimizer = build_optimizer(model.named_parameters(), set(), OptimConfig(lr=1e-4))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    seconds = _time_steps(step, steps, warmup=2, device=device)
    return {"task": task, "what": model_name, "batch": batch, "samples_per_s": batch * steps / seconds}


def bench_detector(root: Path, imgsz: int, batch: int, device: str) -> dict[str, Any]:
    from components.tasks.detector import build_dataset_view, ultralytics_offline

    times: dict[str, float] = {}
    with ultralytics_offline(keep_clearml=False), tempfile.TemporaryDirectory() as tmp:
        from ultralytics import YOLO

        data_yaml, counts = build_dataset_view(root, Path(tmp) / "dataset", pose=True)
        model = YOLO("yolo11n-pose.yaml")
        model.add_callback("on_train_epoch_start", lambda t: times.setdefault("start", time.perf_counter()))
        model.add_callback("on_train_epoch_end", lambda t: times.setdefault("end", time.perf_counter()))
        model.train(data=str(data_yaml), epochs=1, imgsz=imgsz, batch=batch, device=device if device != "cuda"
                    else "0", workers=0, val=False, plots=False, amp=False, project=tmp, name="run",
                    exist_ok=True, verbose=False, pretrained=False)
    return {"task": "detector", "what": f"yolo11n-pose imgsz {imgsz}", "batch": batch,
            "samples_per_s": counts["train"] / (times["end"] - times["start"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["data", "classifier", "keypoints", "multitask", "detector"])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per model")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=32, help="synthetic images to render for the data")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # before Ultralytics, which sets its own
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = render_dataset(Path(tmp) / "hands", args.images, 320)
        if "data" in args.tasks:
            rows += bench_data(root, repeats=1)
        if "classifier" in args.tasks:
            rows.append(bench_module("classifier", "mobilenetv3_small_100", root, args.batch_size, args.steps,
                                     args.device))
        for task in ("keypoints", "multitask"):
            if task in args.tasks:
                for name in ("blazehand_full", "blazehand_lite"):
                    rows.append(bench_module(task, name, root, args.batch_size, args.steps, args.device))
        if "detector" in args.tasks:
            rows.append(bench_detector(root, 320, 8, args.device))
    for row in rows:
        row["device"] = args.device
        print(f"{row['task']:<10} {row['what']:<30} {row['samples_per_s']:8.1f} samples/s", flush=True)
    print_table(f"training throughput ({args.device}, torch threads {threads})", rows)
    write_results("train", {"device": args.device, "threads": threads, "steps": args.steps, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
