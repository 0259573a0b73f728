"""G-MAE on real hands: label efficiency, block ablation, mask ratio, pretraining cost.

    python -m benchmarks.gmae --real [--part prepare|curve|ablation|report|all] [--work W]

Data (cut once into `--work`, reused by every part):
- unlabelled pool: every hand the MediaPipe teacher finds in all 18 gesture folders of
  `../shared/data/hagrid_train` (`components.pretrain --source teacher`, the real CLI path);
- labelled pool: the teacher-labelled hagrid_train (`components.autolabel`: the raised hand
  carries the folder's gesture), crops of `fist`, `normal_hand` (palm, stop) and `pointer`
  (one); a fixed validation set of `--val_per_class` crops per class is held out of it;
- test: real photos of OTHER people, `hagrid_sample` (HaGRID test/val subjects) and
  `roboflow_gestures_v6` (without the photos of benchmarks/review), gesture hands matched to
  the teacher's hands, cut the same way. Hands the teacher misses are counted, not scored: every
  row shares the teacher, so the rows compare the classifiers only.

Parts:
- `prepare`: the data above, and the pretraining speed at mask 0.6 vs 0.0 on real crops;
- `curve`: pretrain G-MAE (gmae_tiny, 64 px, mask 0.6), then fine-tune with 5, 10, 25 and all
  labels per class, 3 seeds each: G-MAE pretrained, the same GMST from scratch, a timm
  MobileNetV3 from scratch, and a linear probe of the frozen pretrained encoder; the same
  labelled images in every row. Then the pretraining-length trend: 10 labels per class from
  encoder snapshots of the same run.
- `ablation`: pretrain without MHSA / MSC-FFN / MSDC, with mask 0.4 and 0.75, and on half the
  pool (the unlabelled-data trend); each fine-tuned with `--ablation_labels` per class, 3 seeds.
- `report`: tables, `benchmarks/results/gmae_real.json` and `gmae_real_curve.png`.

Every fine-tune runs the same number of optimizer steps (`--steps`) and is scored from
`last.pt` (no model selection on test). Threads: 1 per process (two parts can run side by side).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import RESULTS_DIR, print_table
from shared.data.corpus import class_view

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLASSES = ("fist", "normal_hand", "pointer")
TEST_SETS = ("hagrid_sample", "roboflow_gestures_v6")
BUDGETS = ("5", "10", "25", "all")
ABLATIONS = {  # name -> (architecture switches, mask ratio, share of the pool)
    "no MHSA": ({"use_mhsa": False}, 0.6, 1.0),
    "no MSC-FFN": ({"use_mscffn": False}, 0.6, 1.0),
    "no MSDC": ({"use_msdc": False}, 0.6, 1.0),
    "mask 0.4": ({}, 0.4, 1.0),
    "mask 0.75": ({}, 0.75, 1.0),
    "half the unlabelled pool": ({}, 0.6, 0.5),
}


# --------------------------------------------------------------------------- data
def write_test_crops(root: Path, out: Path, size: int, teacher) -> dict:
    """Gesture hands of a real test set, matched to the teacher's hands and cut like the pool."""
    from shared.data.realsets import read_gesture_test_set
    from shared.hand import GESTURES
    from shared.inference.gesture_eval import match_hands
    from shared.inference.real_crops import crop_from_landmarks

    review = ROOT / "benchmarks" / "review" / f"{root.name}.yaml"
    samples = read_gesture_test_set(root, review=review if review.is_file() else None)
    counts = {"hands": 0, "missed": 0, "per_class": dict.fromkeys(CLASSES, 0)}
    for s in samples:
        rgb = cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        found = teacher.process(rgb)
        truth = np.asarray(s.boxes, np.float64) * [w, h, w, h]
        pred = np.zeros((0, 4)) if found.keypoints is None else found.xyxy
        for t, p in enumerate(match_hands(truth, pred)):
            name = GESTURES[int(s.classes[t])]
            if name not in CLASSES:
                continue
            counts["hands"] += 1
            if p < 0:
                counts["missed"] += 1
                continue
            crop, _ = crop_from_landmarks(rgb, np.asarray(found.keypoints[p], np.float64), size)
            (out / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / name / f"{s.path.stem}_{t}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            counts["per_class"][name] += 1
    return counts


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present: the test sets are mostly
    open palms, so a model that always says `normal_hand` has a high accuracy and a balanced one of 1/3)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    recalls = [float((pred[truth == c] == c).mean()) for c in np.unique(truth)]
    return {"acc": float((pred == truth).mean()), "bal": float(np.mean(recalls))}


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """Pool, labelled crops, validation set and test crops (each reused when already there)."""
    from components.autolabel import AutolabelConfig, autolabel
    from components.pretrain import CorpusOptions, build_teacher_crops
    from shared.inference.real_crops import _teacher, write_hand_crops

    info_path = work / "data.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    t0 = time.perf_counter()
    train_photos = DATA / "hagrid_train"
    pool = build_teacher_crops(CorpusOptions(source="teacher", crop_size=args.crop), train_photos,
                               work / "pretrain_corpus", progress=True)
    labelled_ds = work / "teacher_labels"
    if not (labelled_ds / "data.yaml").is_file():
        autolabel(AutolabelConfig(input_dir=str(train_photos), output_dir=str(labelled_ds), overwrite=True,
                                  threads=1))
    labelled = work / "labelled_crops"
    if not labelled.is_dir():
        write_hand_crops(labelled_ds, labelled, size=args.crop, use="fine-tuning")
    rng = np.random.default_rng(1234)
    val, rest = {}, {}
    for cls in CLASSES:
        files = sorted((labelled / cls).glob("*.png"))
        files = [files[i] for i in rng.permutation(len(files))]
        val[cls], rest[cls] = files[: args.val_per_class], files[args.val_per_class:]
    class_view(val, work / "val")
    teacher = _teacher()
    tests = {name: write_test_crops(DATA / name, work / "test" / name, args.crop, teacher) for name in TEST_SETS}
    for name in TEST_SETS:
        class_view({c: sorted((work / "test" / name / c).glob("*.png")) for c in CLASSES
                    if (work / "test" / name / c).is_dir()}, work / "test" / "all")
    info = {"pool_dir": str(pool), "pool_crops": sum(1 for _ in pool.rglob("*.png")),
            "pool_folders": len([p for p in pool.iterdir() if p.is_dir()]),
            "labelled_pool": {c: len(v) for c, v in rest.items()}, "val_per_class": args.val_per_class,
            "labelled_files": {c: [str(p) for p in v] for c, v in rest.items()},
            "test": tests, "crop_size": args.crop, "seconds": time.perf_counter() - t0}
    info_path.write_text(json.dumps(info, indent=2))
    return info


def split_dir(work: Path, info: dict, budget: str, seed: int) -> Path:
    """train/ (`budget` images per class, picked by `seed`, the same for every row) + val/ (fixed)."""
    out = work / "splits" / f"{budget}_s{seed}"
    if not (out / "train").is_dir():
        rng = np.random.default_rng(seed)
        pick = {}
        for cls, files in info["labelled_files"].items():
            order = [Path(files[i]) for i in rng.permutation(len(files))]
            pick[cls] = order if budget == "all" else order[: int(budget)]
        class_view(pick, out / "train")
    if not (out / "val").exists():
        os.symlink((work / "val").resolve(), out / "val")
    return out


def pretrain_speed(pool: Path, img_size: int, steps: int = 10) -> list[dict]:
    """Images/s of one pretraining step (forward, backward, AdamW) on real crops, mask 0.6 vs 0.0."""
    import torch

    from shared.data.corpus import ImageFolderDataset
    from shared.data.image_transforms import train_transform
    from shared.models.gmae import gmae_tiny

    ds = ImageFolderDataset(pool, train_transform(img_size, 0.2), labelled=False)
    x = torch.stack([ds[i][0] for i in range(32)])
    torch.manual_seed(0)
    model = gmae_tiny(img_size=img_size, norm_pix_loss=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[float, list[float]] = {0.6: [], 0.0: []}
    for i in range(steps + 1):
        for r in times:  # interleaved, so a busy machine slows both alike
            t0 = time.perf_counter()
            loss, _, _ = model(x, mask_ratio=r)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times[r].append(time.perf_counter() - t0)
    return [{"mask_ratio": r, "batch": 32, "img_size": img_size, "images_per_s_median": 32 / statistics.median(t),
             "images_per_s_best": 32 / min(t)} for r, t in times.items()]


# --------------------------------------------------------------------------- training runs
def _epochs(n_train: int, args: argparse.Namespace, steps: int = 0) -> int:
    return max(1, math.ceil((steps or args.steps) / max(1, math.ceil(n_train / args.batch))))


def _n_train(split: Path) -> int:
    return sum(1 for _ in (split / "train").rglob("*.png"))


def run_pretrain_variant(work: Path, info: dict, name: str, args: argparse.Namespace, arch: dict | None = None,
                         mask: float = 0.6, share: float = 1.0) -> tuple[str, dict]:
    from components.pretrain import PretrainConfig, run_pretrain

    out = work / "pretrain" / name.replace(" ", "_")
    enc = out / "encoder.pt"
    summary = out / "pretrain_summary.json"
    if summary.is_file():
        return str(enc), json.loads(summary.read_text())
    data = Path(info["pool_dir"])
    if share < 1.0:  # a seeded share of every folder of the pool
        rng = np.random.default_rng(0)
        files = {f.name: sorted(f.glob("*.png")) for f in data.iterdir() if f.is_dir()}
        data = class_view({k: [v[i] for i in rng.permutation(len(v))[: max(1, round(len(v) * share))]]
                           for k, v in files.items()}, work / f"pool_{share:g}")
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = run_pretrain(PretrainConfig(
        data_dir=str(data), output_dir=str(out), model="gmae_tiny", img_size=args.img,
        epochs=args.pretrain_epochs, batch_size=64, learning_rate=1e-3, warmup_epochs=2, mask_ratio=mask,
        norm_pix_loss=True, save_every=max(1, args.pretrain_epochs // 3), keep_snapshots=True, preview_count=8,
        num_workers=0, threads=1, progress_bar=False, accelerator="cpu", seed=0, **(arch or {})))
    hist = [h["train/loss"] for h in result.history]
    meta = {"seconds": time.perf_counter() - t0, "images": sum(1 for _ in data.rglob("*.png")),
            "loss_first_epoch": hist[0], "loss_last_epoch": hist[-1], "previews": result.previews}
    summary.write_text(json.dumps(meta, indent=2))
    return str(enc), meta


def finetune_gmae(split: Path, out: Path, weights: str, args: argparse.Namespace, seed: int,
                  arch: dict | None = None, steps: int = 0, min_scale: float = 0.35) -> dict[str, float]:
    from components.classify import evaluate_checkpoint
    from components.tasks.gmae_finetune import GMAEFinetuneConfig, run_finetune

    epochs = _epochs(_n_train(split), args, steps)
    run_finetune(GMAEFinetuneConfig(
        data_dir=str(split), output_dir=str(out), pretrained_weights=weights, model="gmae_classifier_tiny",
        img_size=args.img, class_names=list(CLASSES), epochs=epochs, batch_size=args.batch,
        learning_rate=args.lr, layer_decay=0.75 if weights else 1.0, warmup_epochs=epochs * 0.1,
        evaluate_test=False, plots=False, num_workers=0, threads=1, progress_bar=False, accelerator="cpu",
        seed=seed, patience=0, min_scale=min_scale, **(arch or {})))
    scores = {}
    for name in (*TEST_SETS, "all"):
        cm = np.asarray(evaluate_checkpoint(out / "last.pt", args.work / "test" / name, out / f"eval_{name}",
                                            batch_size=64, device="cpu")["confusion_matrix"])
        truth = np.repeat(np.arange(len(cm)), cm.sum(1))
        pred = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
        scores[name] = _scores(pred, truth)
    return scores


def _read_crops(folder: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3, S, S] float32 RGB in [0, 1] (letterboxed like ImageFolderCrops) and class ids in CLASSES."""
    from shared.data.crops import letterbox_square

    xs, ys = [], []
    for ci, cls in enumerate(CLASSES):
        for p in sorted((folder / cls).glob("*.png")) if (folder / cls).is_dir() else []:
            rgb = cv2.cvtColor(letterbox_square(cv2.imread(str(p)), size), cv2.COLOR_BGR2RGB)
            xs.append(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)
            ys.append(ci)
    return np.stack(xs), np.array(ys)


def finetune_timm(split: Path, out: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """timm MobileNetV3-small from scratch with the product's classifier trainer (its own augmentation)."""
    import torch

    from components.tasks.classifier import ClassifierConfig, train_classifier
    from shared.hand import GESTURES
    from shared.training.callbacks import load_checkpoint

    epochs = _epochs(_n_train(split), args)
    train_classifier(ClassifierConfig(
        data_dir=str(split / "train"), val_dir=str(split / "val"), model_name="mobilenetv3_small_100",
        pretrained=False, img_size=args.img, epochs=epochs, batch_size=args.batch, lr=1e-3, output_dir=str(out),
        num_workers=0, threads=1, progress_bar=False, plots=False, accelerator="cpu", seed=seed, patience=0))
    model, _ = load_checkpoint(out / "last.pt")
    ids = [GESTURES.index(c) for c in CLASSES]
    scores = {}
    for name in (*TEST_SETS, "all"):
        x, y = _read_crops(args.work / "test" / name, args.img)
        with torch.inference_mode():
            logits = model(torch.from_numpy(x))[:, ids]  # the 3 classes of this benchmark
        scores[name] = _scores(logits.argmax(1).numpy(), y)
    return scores


def linear_probe(split: Path, weights: str, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Logistic regression on the frozen encoder's pooled tokens (no augmentation)."""
    import torch

    from shared.data.corpus import ImageFolderDataset
    from shared.data.image_transforms import val_transform
    from shared.models.gmae import gmae_classifier_tiny, load_pretrained_encoder

    model = gmae_classifier_tiny(num_classes=len(CLASSES), img_size=args.img).eval()
    load_pretrained_encoder(model.encoder, weights)

    def features(folder: Path) -> tuple[np.ndarray, np.ndarray]:
        ds = ImageFolderDataset(folder, val_transform(args.img), classes=list(CLASSES))
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        with torch.inference_mode():
            return model.encoder(x).mean(1).numpy(), np.array(ds.targets())

    fx, fy = features(split / "train")
    torch.manual_seed(seed)
    mean, std = fx.mean(0), fx.std(0) + 1e-3
    lin = torch.nn.Linear(fx.shape[1], len(CLASSES))
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=1e-2)
    xt, yt = torch.tensor((fx - mean) / std, dtype=torch.float32), torch.tensor(fy)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(lin(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = {}
    for name in (*TEST_SETS, "all"):
        tx, ty = features(args.work / "test" / name)
        with torch.no_grad():
            pred = lin(torch.tensor((tx - mean) / std, dtype=torch.float32)).argmax(1).numpy()
        scores[name] = _scores(pred, ty)
    return scores


def _record(path: Path, key: str, fn) -> dict:
    """Run `fn` once per key; the results file makes a part resumable after an interruption."""
    done = json.loads(path.read_text()) if path.is_file() else {}
    if key not in done:
        t0 = time.perf_counter()
        done[key] = {**fn(), "seconds": round(time.perf_counter() - t0, 1)}
        path.write_text(json.dumps(done, indent=2))
        print(f"[{key}] {done[key]}", flush=True)
    return done[key]


def curve(work: Path, info: dict, args: argparse.Namespace) -> None:
    enc, meta = run_pretrain_variant(work, info, "gmae", args)
    runs = work / "curve_runs.json"
    for budget in BUDGETS:
        for seed in args.seeds:
            split = split_dir(work, info, budget, seed)
            tag = f"{budget}/s{seed}"
            _record(runs, f"pretrained/{tag}", partial(
                finetune_gmae, split, work / "ft" / f"pretrained_{budget}_s{seed}", enc, args, seed))
            _record(runs, f"scratch/{tag}", partial(
                finetune_gmae, split, work / "ft" / f"scratch_{budget}_s{seed}", "", args, seed))
            _record(runs, f"mobilenetv3/{tag}", partial(
                finetune_timm, split, work / "ft" / f"mobilenet_{budget}_s{seed}", args, seed))
            _record(runs, f"linear_probe/{tag}", partial(linear_probe, split, enc, args, seed))
    snaps = sorted((Path(enc).parent / "snapshots").glob("encoder_epoch_*.pt"))
    for snap in snaps[:-1]:  # the last snapshot is encoder.pt itself (the curve's 10-label row)
        epoch = int(snap.stem.rsplit("_", 1)[-1])
        for seed in args.seeds:
            split = split_dir(work, info, args.ablation_labels, seed)
            _record(runs, f"snapshot_e{epoch}/{args.ablation_labels}/s{seed}", partial(
                finetune_gmae, split, work / "ft" / f"snapshot{epoch}_s{seed}", str(snap), args, seed))


def longer(work: Path, info: dict, args: argparse.Namespace) -> None:
    """Is it the fine-tuning budget? 4x the steps and milder random crops (min_scale 0.8, so a crop
    keeps the pointing finger), pretrained vs scratch, 10 and all labels, the first seed."""
    enc, _ = run_pretrain_variant(work, info, "gmae", args)
    runs = work / "longer_runs.json"
    seed = args.seeds[0]
    for budget in ("10", "all"):
        split = split_dir(work, info, budget, seed)
        for name, weights in (("pretrained", enc), ("scratch", "")):
            _record(runs, f"{name}/{budget}/s{seed}", partial(
                finetune_gmae, split, work / "ft" / f"longer_{name}_{budget}_s{seed}", weights, args, seed,
                steps=4 * args.steps, min_scale=0.8))


def ablation(work: Path, info: dict, args: argparse.Namespace) -> None:
    runs = work / "ablation_runs.json"
    for name, (arch, mask, share) in ABLATIONS.items():
        enc, _ = run_pretrain_variant(work, info, name, args, arch, mask, share)
        for seed in args.seeds:
            split = split_dir(work, info, args.ablation_labels, seed)
            _record(runs, f"{name}/{args.ablation_labels}/s{seed}", partial(
                finetune_gmae, split, work / "ft" / f"abl_{name.replace(' ', '_')}_s{seed}", enc, args, seed, arch))


# --------------------------------------------------------------------------- report
def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _agg(runs: dict, keys: list[str]) -> dict | None:
    """Mean (and sd) over seeds of balanced accuracy and accuracy on both test sets together, and per set."""
    got = [runs[k] for k in keys if k in runs]
    if not got:
        return None
    bal, sd = _mean_sd([g["all"]["bal"] for g in got])
    return {"seeds": len(got), "balanced_accuracy": round(bal, 4), "sd": round(sd, 4),
            "accuracy": round(statistics.fmean(g["all"]["acc"] for g in got), 4),
            **{f"balanced_{t}": round(statistics.fmean(g[t]["bal"] for g in got), 4) for t in TEST_SETS}}


def report(work: Path, info: dict, args: argparse.Namespace) -> dict:
    def load(name: str) -> dict:
        path = work / name
        return json.loads(path.read_text()) if path.is_file() else {}

    curve_runs, abl_runs, long_runs = load("curve_runs.json"), load("ablation_runs.json"), load("longer_runs.json")
    seeds = [f"s{s}" for s in args.seeds]
    rows, table = [], {}
    for name in ("pretrained", "scratch", "mobilenetv3", "linear_probe"):
        for budget in BUDGETS:
            agg = _agg(curve_runs, [f"{name}/{budget}/{s}" for s in seeds])
            if agg:
                table[(name, budget)] = agg
                rows.append({"row": name, "labels_per_class": budget, **agg})
    print_table("G-MAE on real hands: test balanced accuracy / accuracy (hagrid_sample + roboflow, "
                "teacher-found hands), mean of seeds", rows)
    k = args.ablation_labels
    trend = []
    epochs = sorted({int(r.split("/")[0].removeprefix("snapshot_e")) for r in curve_runs if r.startswith("snapshot_e")})
    for e in epochs:
        agg = _agg(curve_runs, [f"snapshot_e{e}/{k}/{s}" for s in seeds])
        if agg:
            trend.append({"pretrain_epochs": e, **agg})
    if ("pretrained", k) in table:
        trend.append({"pretrain_epochs": args.pretrain_epochs, **table[("pretrained", k)]})
    if trend:
        print_table(f"Pretraining length (encoder snapshots of one run), {k} labels per class", trend)
    abl = [{"variant": "G-MAE (all blocks, mask 0.6, whole pool)", **table[("pretrained", k)]}] \
        if ("pretrained", k) in table else []
    for name in ABLATIONS:
        agg = _agg(abl_runs, [f"{name}/{k}/{s}" for s in seeds])
        if agg:
            abl.append({"variant": name, **agg})
    if abl:
        print_table(f"Ablation, mask ratio and unlabelled-pool size, {k} labels per class (pretrained)", abl)
    longer_rows = []
    for name in ("pretrained", "scratch"):
        for budget in ("10", "all"):
            agg = _agg(long_runs, [f"{name}/{budget}/s{args.seeds[0]}"])
            if agg:
                longer_rows.append({"row": name, "labels_per_class": budget, **agg})
    if longer_rows:
        print_table(f"Longer fine-tuning ({4 * args.steps} steps, random crops keep >= 80% of the hand), seed "
                    f"{args.seeds[0]}", longer_rows)
    pre = {p.parent.name: json.loads(p.read_text()) for p in (work / "pretrain").glob("*/pretrain_summary.json")}
    verdict = {}
    for metric in ("balanced_accuracy", "accuracy"):
        if ("pretrained", "10") in table and ("scratch", "10") in table:
            gain = table[("pretrained", "10")][metric] - table[("scratch", "10")][metric]
            verdict[f"{metric}: gain at 10 labels, points (target >= 10)"] = round(100 * gain, 1)
        if ("pretrained", "all") in table:
            verdict[f"{metric}: all labels (target >= 0.90)"] = table[("pretrained", "all")][metric]
    print("verdict:", json.dumps(verdict, indent=1))
    out = {"setup": {k2: v for k2, v in info.items() if k2 not in ("labelled_files", "speed")} | {
        "model": "gmae_tiny", "img_size": args.img, "pretrain_epochs": args.pretrain_epochs, "steps": args.steps,
        "batch": args.batch, "lr": args.lr, "seeds": args.seeds, "classes": list(CLASSES),
        "machine": "2-core CPU (AVX-512 VNNI), 1 torch thread per process"},
        "curve": rows, "pretraining_trend": trend, "ablation": abl, "longer_finetuning": longer_rows,
        "pretraining": pre,
        "speed": info.get("speed", []), "verdict": verdict, "runs": {"curve": curve_runs, "ablation": abl_runs,
                                                                      "longer": long_runs}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "gmae_real.json").write_text(json.dumps(out, indent=2))
    _plot(rows, RESULTS_DIR / "gmae_real_curve.png")
    print(f"wrote {RESULTS_DIR / 'gmae_real.json'} and {RESULTS_DIR / 'gmae_real_curve.png'}")
    return out


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"pretrained": "G-MAE pretrained", "scratch": "GMST from scratch", "mobilenetv3": "MobileNetV3 scratch",
              "linear_probe": "linear probe (frozen G-MAE)"}
    for name, label in labels.items():
        pts = [(i, r["balanced_accuracy"], r["sd"]) for i, b in enumerate(BUDGETS) for r in rows
               if r["row"] == name and r["labels_per_class"] == b]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                        label=label)
    ax.set_xticks(range(len(BUDGETS)), [f"{b}" for b in BUDGETS])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("balanced test accuracy (3 classes, real photos)")
    ax.axhline(1 / len(CLASSES), color="grey", lw=0.8, ls=":", label="chance")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="store_true", help="(given by benchmarks.gmae)")
    p.add_argument("--part", default="all", choices=["prepare", "curve", "ablation", "longer", "report", "all"])
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "gmae_real", help="data and runs (reused)")
    p.add_argument("--crop", type=int, default=96, help="side of the saved crops")
    p.add_argument("--img", type=int, default=64, help="training side")
    p.add_argument("--pretrain_epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps of every fine-tune")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning peak lr (G-MAE rows)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--val_per_class", type=int, default=8)
    p.add_argument("--ablation_labels", default="10", help="labels per class of the ablation and trend rows")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    info = prepare(work, args)
    if "speed" not in info:
        info["speed"] = pretrain_speed(Path(info["pool_dir"]), args.img)
        (work / "data.json").write_text(json.dumps(info, indent=2))
    if args.part == "prepare":
        print(json.dumps({k: v for k, v in info.items() if k != "labelled_files"}, indent=2))
    if args.part in ("curve", "all"):
        curve(work, info, args)
    if args.part in ("ablation", "all"):
        ablation(work, info, args)
    if args.part in ("longer", "all"):
        longer(work, info, args)
    if args.part in ("report", "all"):
        report(work, info, args)


if __name__ == "__main__":
    main()
