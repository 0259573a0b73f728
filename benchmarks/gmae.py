"""G-MAE: pretraining speed with and without masking, and whether pretraining helps fine-tuning.

    python -m benchmarks.gmae [--pretrain_images 3000 --pretrain_epochs 8 --labelled_per_class 30 ...]
    python -m benchmarks.gmae --real [...]   # real hands: see benchmarks/gmae_real.py

1. Pretraining images/s (one optimizer step: forward, backward, AdamW) of
   `gmae_tiny` at 64 px, mask 0.6 vs 0.0. The encoder sees only the visible
   tokens, so masking must make it clearly faster.
2. Fine-tune accuracy from G-MAE pretraining vs from scratch, at equal
   fine-tune steps, on synthetic hand crops (`shared.data.synthetic`):
   pretrain on an unlabelled pool, fine-tune on a few labelled crops per
   gesture, report accuracy / macro-F1 on a held-out test set (`last.pt`, so no
   model selection on test). The real stages run (`run_pretrain`,
   `run_finetune`, `evaluate_checkpoint`).

Writes benchmarks/results/gmae.json and prints the tables (markdown-ready).
Sized for ~10 minutes on 2 CPU cores; `--quick` is a one-minute smoke run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.common import print_table, write_results


# --------------------------------------------------------------------------- 1. speed
def bench_pretrain_speed(ratios: tuple[float, ...] = (0.6, 0.0), batch_size: int = 32, img_size: int = 64,
                         steps: int = 12) -> list[dict]:
    """Step time per mask ratio, the ratios interleaved step by step so that a busy, shared machine
    slows them alike; "best" is the fastest step (the least disturbed), "median" the typical one."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from shared.models.gmae import gmae_tiny

    torch.manual_seed(0)
    model = gmae_tiny(img_size=img_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, img_size, img_size)

    def step(ratio: float) -> None:
        loss, _, _ = model(x, mask_ratio=ratio)
        opt.zero_grad()
        loss.backward()
        opt.step()

    flops = {}
    for r in ratios:
        with FlopCounterMode(display=False) as counter:
            step(r)
        flops[r] = counter.get_total_flops()
    wall: dict[float, list[float]] = {r: [] for r in ratios}
    cpu: dict[float, list[float]] = {r: [] for r in ratios}
    for i in range(steps + 1):
        for r in ratios:
            w0, c0 = time.perf_counter(), time.process_time()
            step(r)
            if i:  # the first round warms up allocations and kernels
                wall[r].append(time.perf_counter() - w0)
                cpu[r].append(time.process_time() - c0)
    return [{"mask_ratio": r, "batch": batch_size, "img_size": img_size,
             "visible_tokens": int((img_size // 8) ** 2 * (1 - r)), "gflop_per_image": flops[r] / batch_size / 1e9,
             "best_step_ms": min(wall[r]) * 1000, "images_per_s_best": batch_size / min(wall[r]),
             "images_per_s_median": batch_size / statistics.median(wall[r]),
             "images_per_cpu_s_best": batch_size / min(cpu[r])} for r in ratios]


# --------------------------------------------------------------------------- 2. data
def write_synthetic_crops(root: Path, seed: int, per_class: int | None, total: int | None, crop: int = 72) -> dict:
    """Hand crops (box + 30% context, square) of synthetic images as an ImageFolder tree.

    `per_class`: stop when every gesture has that many (balanced labelled sets);
    `total`: stop after that many crops (the unlabelled pretraining pool).
    """
    from shared.data.synthetic import SyntheticConfig, render_image
    from shared.geometry import roi_from_box, warp_crop
    from shared.hand import GESTURES

    cfg = SyntheticConfig(image_size=160, min_hands=1, max_hands=2)
    counts = dict.fromkeys(GESTURES, 0)
    i = 0
    while True:
        sample = render_image(seed, i, cfg)
        i += 1
        h, w = sample.image.shape[:2]
        for j, label in enumerate(sample.labels):
            name = GESTURES[label.cls]
            if per_class is not None and counts[name] >= per_class:
                continue
            image = warp_crop(sample.image, roi_from_box(label.xyxy(w, h), expand_ratio=0.3), crop)
            (root / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / f"{seed}_{i:06d}_{j}.png"), image)
            counts[name] += 1
        done = sum(counts.values())
        if (per_class is not None and min(counts.values()) >= per_class) or (total is not None and done >= total):
            return counts


# --------------------------------------------------------------------------- 3. pretrain vs scratch
def bench_transfer(work: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    from components.classify import evaluate_checkpoint
    from components.pretrain import PretrainConfig, run_pretrain
    from components.tasks.gmae_finetune import GMAEFinetuneConfig, run_finetune

    start = time.perf_counter()
    pool = write_synthetic_crops(work / "pool", seed=101, per_class=None, total=args.pretrain_images)
    labelled = write_synthetic_crops(work / "labelled" / "train", seed=202, per_class=args.labelled_per_class,
                                     total=None)
    write_synthetic_crops(work / "labelled" / "val", seed=303, per_class=10, total=None)
    test = write_synthetic_crops(work / "test", seed=404, per_class=args.test_per_class, total=None)
    data_s = time.perf_counter() - start
    print(f"data: pool {sum(pool.values())}, labelled {labelled}, test {sum(test.values())} ({data_s:.0f} s)")

    common = dict(num_workers=args.workers, progress_bar=False, accelerator="cpu", seed=0)
    start = time.perf_counter()
    pre = run_pretrain(PretrainConfig(
        data_dir=str(work / "pool"), output_dir=str(work / "pretrain"), model="gmae_tiny", img_size=64,
        epochs=args.pretrain_epochs, batch_size=64, learning_rate=1e-3, mask_ratio=0.6, warmup_epochs=1,
        norm_pix_loss=bool(args.norm_pix_loss), save_every=max(args.pretrain_epochs, 1), preview_count=6, **common))
    pretrain_s = time.perf_counter() - start
    losses = [h["train/loss"] for h in pre.history]
    print(f"pretrain: {pretrain_s:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    rows = []
    runs = [(name, weights, lr) for lr in args.finetune_lrs
            for name, weights in (("from G-MAE pretraining", pre.encoder_weights), ("from scratch", ""))]
    for name, weights, lr in runs:
        start = time.perf_counter()
        out = work / f"{name.replace(' ', '_')}_lr{lr:g}"
        ft = run_finetune(GMAEFinetuneConfig(
            data_dir=str(work / "labelled"), output_dir=str(out), pretrained_weights=weights,
            model="gmae_classifier_tiny", img_size=64, epochs=args.finetune_epochs, batch_size=args.finetune_batch,
            learning_rate=lr, layer_decay=0.75 if weights else 1.0, warmup_epochs=1, plots=False,
            evaluate_test=False, **common))
        m = evaluate_checkpoint(out / "last.pt", work / "test", out / "test_eval", batch_size=128)
        rows.append({"run": name, "lr": lr, "layer_decay": 0.75 if weights else 1.0,
                     "steps": int(ft.metrics.get("step", 0)), "test_accuracy": m["accuracy"],
                     "test_macro_f1": m["macro_f1"], "val_accuracy_last": ft.metrics.get("val/accuracy"),
                     "seconds": time.perf_counter() - start})
        print(f"{name}, lr {lr:g}: test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
    info = {"data_seconds": data_s, "pretrain_seconds": pretrain_s, "pretrain_images": sum(pool.values()),
            "pretrain_epochs": args.pretrain_epochs, "pretrain_loss_first_epoch": losses[0],
            "pretrain_loss_last_epoch": losses[-1], "labelled_per_class": labelled,
            "test_images": sum(test.values()), "finetune_epochs": args.finetune_epochs,
            "finetune_batch": args.finetune_batch, "preview": pre.previews[-1] if pre.previews else ""}
    return rows, info


def main() -> None:
    import sys

    if "--real" in sys.argv[1:]:  # real hands: its own benchmark (benchmarks/gmae_real.py)
        from benchmarks.gmae_real import main as real_main

        real_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain_images", type=int, default=4000, help="unlabelled synthetic crops")
    parser.add_argument("--pretrain_epochs", type=int, default=5)
    parser.add_argument("--norm_pix_loss", type=int, default=1, help="1: pretrain on per-patch normalised pixels "
                        "(MAE's better-transferring target), 0: raw pixels (the seed's default)")
    parser.add_argument("--labelled_per_class", type=int, default=60, help="labelled crops per gesture")
    parser.add_argument("--test_per_class", type=int, default=60)
    parser.add_argument("--finetune_epochs", type=int, default=15)
    parser.add_argument("--finetune_batch", type=int, default=32)
    parser.add_argument("--finetune_lrs", type=float, nargs="+", default=[1e-4, 1e-3],
                        help="peak learning rates, each run from pretraining and from scratch (seed: 1e-4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default); one thread plus "
                        "one data worker fills 2 cores without OpenMP barrier stalls")
    parser.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    parser.add_argument("--keep", default="", help="keep the work folder here (default: a temp dir, removed)")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    args = parser.parse_args()
    if args.quick:
        args.pretrain_images, args.pretrain_epochs, args.labelled_per_class = 300, 1, 6
        args.test_per_class, args.finetune_epochs = 10, 2

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    speed = bench_pretrain_speed()
    speedup = speed[0]["images_per_s_best"] / speed[1]["images_per_s_best"]
    median_speedup = speed[0]["images_per_s_median"] / speed[1]["images_per_s_median"]
    cpu_speedup = speed[0]["images_per_cpu_s_best"] / speed[1]["images_per_cpu_s_best"]
    flop_ratio = speed[1]["gflop_per_image"] / speed[0]["gflop_per_image"]
    print_table("Pretraining step speed, gmae_tiny 64 px (forward + backward + AdamW)", speed)
    print(f"masking 0.6 vs 0.0: {speedup:.2f}x images/s (best step), {median_speedup:.2f}x (median step), "
          f"{cpu_speedup:.2f}x per CPU second, {flop_ratio:.2f}x fewer FLOPs")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows, info = bench_transfer(work, args)
    print_table("Fine-tuning at equal steps, synthetic hand crops (test set, last.pt)", rows)
    print("\n| run | lr | steps | test accuracy | test macro-F1 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['lr']:g} | {r['steps']} | {r['test_accuracy']:.3f} | {r['test_macro_f1']:.3f} |")
    write_results("gmae", {"speed": speed, "masking_speedup": speedup, "masking_speedup_median": median_speedup,
                           "masking_speedup_cpu_time": cpu_speedup,
                           "masking_flop_ratio": flop_ratio, "transfer": rows, "transfer_setup": info,
                           "torch_threads": torch.get_num_threads(), "loadavg_before": load_before,
                           "loadavg_after": os.getloadavg(), "quick": args.quick})


if __name__ == "__main__":
    main()
