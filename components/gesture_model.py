"""Build the landmark gesture model that `HandPipeline` uses by default.

    python -m components.gesture_model --input_dir ../shared/data/hagrid_train \
        --test_dir ../shared/data/hagrid_sample ../shared/data/roboflow_gestures_v6 \
        --test_review benchmarks/review/roboflow_gestures_v6.yaml --output_dir shared/weights/gesture_landmarks

1. The MediaPipe teacher labels the photos (`components.autolabel`; or pass `--data D`, a
   dataset it wrote). Its landmarks of the gesture hands of mapped folders are the real
   training data (HaGRID: fist, pointer, normal_hand).
2. Classes real photos lack come from the synthetic hand model's keypoints (`pinch`);
   `2_hands` is not one hand's shape but a pair (shared.inference.gestures.TwoHandsRule).
3. An MLP on the normalised landmarks (shared.inference.gestures.landmark_features) is
   trained, full batch, mirrored copies and keypoint jitter as augmentation, fixed seed:
   the same inputs and seed give the same weights, bit for bit.
4. Scored on the teacher's held-out split and, end to end (the default static pipeline,
   misses counted as errors), on every `--test_dir` (photos of other people); the weights,
   a `card.json` and a `MODEL_CARD.md` with those figures are written to `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from shared.config import add_config_args, check_outputs, load_config, option, save_config
from shared.data.labels import list_images, read_labels
from shared.errors import UserError, run_cli
from shared.hand import GESTURE_TO_ID, GESTURES, LABEL_NAMES, NUM_KEYPOINTS, UNKNOWN_HAND, UNKNOWN_HAND_ID
from shared.inference.gestures import OTHER, LandmarkGestureClassifier, landmark_features, mirror_features

CLASSES = ("fist", "normal_hand", "pinch", "pointer")  # what one hand's landmarks can show
OTHER_ID = -1  # class id of `other` hands in the training arrays


@dataclass
class GestureModelConfig:
    input_dir: str = option("", "photos in gesture folders, labelled by the teacher first (or use --data)")
    data: str = option("", "a dataset written by components.autolabel (skips the teacher)")
    output_dir: str = option("outputs/gesture_model", "where weights.npz, card.json and MODEL_CARD.md go",
                             output="dir")
    work_dir: str = option("outputs/gesture_model_teacher", "where the teacher's dataset is written", output="dir")
    test_dir: list[str] = option([], "real test sets of other people (HaGRID layout or a YOLO export), one or more")
    test_review: list[str] = option([], "label reviews of the test sets (YAML: image stem -> why its label is wrong, "
                                        "e.g. benchmarks/review/*.yaml): accuracy is reported with and without them")
    synthetic_per_class: int = option(300, "synthetic hands for each class the real data lacks", min=0)
    synthetic_views: int = option(0, "synthetic hands added to each class real data HAS (other views: tilted, "
                                     "from the back, lying flat), 0 = real only")
    hidden: list[int] = option([64, 64], "hidden layer widths")
    epochs: int = option(600, "full-batch steps", min=1)
    lr: float = option(3e-3, "AdamW learning rate", min=0.0)
    weight_decay: float = option(1e-3, "AdamW weight decay", min=0.0)
    jitter: float = option(0.03, "keypoint noise (x the wrist-middle knuckle length) added each step", min=0.0)
    other: bool = option(False, "learn an 'other' class from the raised hands of folders whose gesture is none of "
                               "ours (call, like, peace, ...): such hands come out 'unknown', not the nearest class")
    other_weight: float = option(0.25, "loss weight of the 'other' class relative to a balanced one")
    threshold: float = option(0.5, "below this best probability the gesture is 'unknown'", min=0.0, max=1.0)
    seed: int = option(0, "seed of the synthetic hands, the init and the augmentation")
    overwrite: bool = option(False, "replace the teacher dataset in work_dir")


@dataclass
class GestureModelResult:
    output_dir: str
    counts: dict
    val_accuracy: float
    test: dict = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- data
def teacher_hands(data: Path, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks [N, 21, 2] (pixels) and class ids of every gesture-labelled hand in `splits`
    of an autolabel dataset (hands labelled `hand` are skipped: their gesture is unknown)."""
    xy, cls = [], []
    for split in splits:
        images = data / split / "images"
        if not images.is_dir():
            continue
        for image in list_images(images):
            labels, issues = read_labels(data / split / "labels" / f"{image.stem}.txt", num_classes=len(LABEL_NAMES))
            if issues:
                raise UserError(f"{issues[0]} (the dataset must be one written by components.autolabel)")
            with Image.open(image) as im:
                w, h = im.size
            for lb in labels:
                if lb.cls == UNKNOWN_HAND_ID or not (lb.keypoints[:, 2] > 0).all():
                    continue
                xy.append(lb.keypoints[:, :2] * [w, h])
                cls.append(lb.cls)
    return np.asarray(xy, np.float64).reshape(-1, NUM_KEYPOINTS, 2), np.asarray(cls, np.int64)


def other_hands(data: Path, splits: tuple[str, ...], min_raise: float = 0.25) -> np.ndarray:
    """[N, 21, 2] landmarks of the RAISED hand of every photo from a folder whose gesture is
    none of ours (the autolabel manifest lists folder -> label; those folders' hands are all
    labelled `hand`): hands showing some other gesture, the `other` class."""
    from components.autolabel import gesture_hand

    manifest = json.loads((data / "manifest.json").read_text())
    folders = [f for f, name in manifest.get("gesture_map", {}).get("folders", {}).items() if name == UNKNOWN_HAND]
    out = []
    for split in splits:
        images = data / split / "images"
        if not images.is_dir():
            continue
        for image in list_images(images):
            if not any(image.stem.startswith(f"{f}_") for f in folders):
                continue
            labels, _ = read_labels(data / split / "labels" / f"{image.stem}.txt", num_classes=len(LABEL_NAMES))
            if not labels or not all((lb.keypoints[:, 2] > 0).all() for lb in labels):
                continue
            with Image.open(image) as im:
                w, h = im.size
            kp = np.stack([lb.keypoints[:, :2] * [w, h] for lb in labels])
            which, _ = gesture_hand(kp, min_raise)
            if which is not None:
                out.append(kp[which])
    return np.asarray(out, np.float64).reshape(-1, NUM_KEYPOINTS, 2)


def synthetic_hands(gesture: str, count: int, seed: int) -> np.ndarray:
    """[count, 21, 2] keypoints of single synthetic hands showing `gesture`."""
    from shared.data.synthetic import SyntheticConfig, render_image

    weights = [1.0 if g == gesture else 0.0 for g in GESTURES]
    cfg = SyntheticConfig(image_size=192, gesture_weights=weights, min_hands=1, max_hands=1)
    out, index = [], 0
    while len(out) < count and index < count * 3:
        for lb in render_image(seed, index, cfg).labels:
            if lb.cls == GESTURE_TO_ID[gesture] and (lb.keypoints[:, 2] > 0).all():
                out.append(lb.keypoints[:, :2] * 192.0)
        index += 1
    return np.asarray(out[:count], np.float64).reshape(-1, NUM_KEYPOINTS, 2)


# --------------------------------------------------------------------------- training
def train_mlp(xy: np.ndarray, cls: np.ndarray, cfg: GestureModelConfig) -> LandmarkGestureClassifier:
    """Full-batch AdamW on landmark features; deterministic for a seed."""
    import torch

    classes = tuple(c for c in CLASSES if (cls == GESTURE_TO_ID[c]).any()) + ((OTHER,) if (cls < 0).any() else ())
    target = np.array([classes.index(GESTURES[c] if c >= 0 else OTHER) for c in cls], np.int64)
    base = landmark_features(xy)
    both = np.concatenate([base, mirror_features(base)])
    mean, std = both.mean(0), both.std(0) + 1e-3
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    dims = [base.shape[1], *cfg.hidden, len(classes)]
    layers: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    counts = np.bincount(target, minlength=len(classes)).astype(np.float64)
    balanced = counts.sum() / (len(classes) * np.maximum(counts, 1))
    if OTHER in classes:  # `other` is a catch-all: let it win only where our classes clearly do not fit
        balanced[classes.index(OTHER)] *= cfg.other_weight
    weight = torch.tensor(balanced, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    y = torch.tensor(np.concatenate([target, target]))
    scale = np.linalg.norm(xy[:, 9] - xy[:, 0], axis=-1)[:, None, None]  # [N, 1, 1] hand length, px
    m_t, s_t = torch.tensor(mean), torch.tensor(std)
    for _ in range(cfg.epochs):
        noise = torch.randn(xy.shape, generator=g, dtype=torch.float64).numpy() * cfg.jitter * scale
        f = landmark_features(xy + noise)
        x = (torch.tensor(np.concatenate([f, mirror_features(f)])) - m_t) / s_t
        loss = torch.nn.functional.cross_entropy(net(x), y, weight=weight, label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linear]
    return LandmarkGestureClassifier(weights, mean.astype(np.float32), std.astype(np.float32), classes, cfg.threshold)


def accuracy(clf: LandmarkGestureClassifier, xy: np.ndarray, cls: np.ndarray) -> float:
    if len(cls) == 0:
        return float("nan")
    pred, _ = clf.predict(xy)
    return float((pred == cls).mean())


# --------------------------------------------------------------------------- the stage
def build_gesture_model(cfg: GestureModelConfig) -> GestureModelResult:
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    check_outputs(cfg)
    for d in [*cfg.test_dir, *cfg.test_review]:
        if not Path(d).exists():
            raise UserError(f"{d} does not exist (--test_dir / --test_review)")
    if cfg.data:
        data = Path(cfg.data)
        if not (data / "data.yaml").is_file():
            raise UserError(f"--data {data} has no data.yaml; pass a dataset written by components.autolabel")
    elif cfg.input_dir:
        from components.autolabel import AutolabelConfig, autolabel

        data = Path(cfg.work_dir)
        autolabel(AutolabelConfig(input_dir=cfg.input_dir, output_dir=str(data), overwrite=cfg.overwrite,
                                  seed=cfg.seed, tiles=0))  # gesture hands come from the whole photo only
    else:
        raise UserError("pass --input_dir (photos in gesture folders) or --data (an autolabel dataset)")

    xy, cls = teacher_hands(data, ("train",))
    val_xy, val_cls = teacher_hands(data, ("val", "test"))
    if len(cls) == 0:
        raise UserError(f"{data}: no hand with a gesture label in train/; the folders map to none of our gestures "
                        "(see the gesture map)")
    counts = {GESTURES[c]: int((cls == c).sum()) for c in np.unique(cls)}
    sources = {name: "teacher (real photos)" for name in counts}
    for gesture in CLASSES:
        n = cfg.synthetic_views if gesture in counts else cfg.synthetic_per_class
        if n > 0:
            syn = synthetic_hands(gesture, n, cfg.seed)
            xy = np.concatenate([xy, syn])
            cls = np.concatenate([cls, np.full(len(syn), GESTURE_TO_ID[gesture])])
            sources[gesture] = ("teacher (real photos) + " if gesture in counts else "") + "synthetic keypoints"
            counts[gesture] = counts.get(gesture, 0) + len(syn)
    if cfg.other:
        other = other_hands(data, ("train",))
        if len(other):
            xy = np.concatenate([xy, other])
            cls = np.concatenate([cls, np.full(len(other), OTHER_ID)])
            counts[OTHER], sources[OTHER] = len(other), "teacher (raised hand of photos of other gestures)"
    clf = train_mlp(xy, cls, cfg)
    val_acc = accuracy(clf, val_xy, val_cls)

    test = {}
    if cfg.test_dir:
        from shared.data.realsets import read_gesture_test_set
        from shared.inference.gesture_eval import evaluate_gestures
        from shared.inference.pipeline import HandPipeline, PipelineConfig

        clf.save(out)  # the pipeline loads it from the folder, as users will
        pipe = HandPipeline(PipelineConfig(static=True, gesture_model=str(out)))
        samples = [s for d in cfg.test_dir for s in read_gesture_test_set(d)]
        report = evaluate_gestures(pipe, samples)
        test = {"sets": list(cfg.test_dir), **report.as_dict()}
        print(report.table())
        if cfg.test_review:
            excluded = {stem for f in cfg.test_review for stem in (yaml.safe_load(Path(f).read_text()) or {})}
            reviewed = evaluate_gestures(pipe, [s for s in samples if s.path.stem not in excluded])
            test["reviewed"] = {"reviews": list(cfg.test_review), **reviewed.as_dict()}
            print(f"without the {len(samples) - sum(s.path.stem not in excluded for s in samples)} photo(s) whose "
                  f"labels the review rejects:\n{reviewed.table()}")
    card = {
        "name": "gesture_landmarks", "task": "gesture from 21 MediaPipe landmarks (one hand)",
        "classes": list(clf.classes), "two_hands": "pair rule, shared.inference.gestures.TwoHandsRule",
        "data": {"teacher_dataset": str(data), "train_hands": counts, "sources": sources,
                 "held_out_hands": int(len(val_cls))},
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("input_dir", "data", "output_dir", "work_dir",
                                                                      "test_dir", "overwrite")},
        "metrics": {"teacher_val_accuracy": round(val_acc, 4),
                    "real_test": _summary(test),
                    "real_test_reviewed": _summary(test.get("reviewed") or {})},
    }
    clf.save(out, card)
    (out / "MODEL_CARD.md").write_text(model_card_markdown(card))
    save_config(cfg, out / "gesture_model_config.yaml")
    seconds = time.perf_counter() - t0
    return GestureModelResult(str(out), counts, val_acc, test, seconds)


def _summary(test: dict) -> dict:
    keys = ("sets", "reviews", "accuracy", "targets", "missed", "unknown", "per_class", "confusion", "confusion_labels")
    return {k: test[k] for k in keys if k in test}


def model_card_markdown(card: dict) -> str:
    m = card["metrics"]
    lines = [f"# {card['name']}: {card['task']}", "",
             f"Classes: {', '.join(card['classes'])}; `2_hands` from the {card['two_hands']}.", "",
             "## Data", ""]
    for name, n in card["data"]["train_hands"].items():
        lines.append(f"- {name}: {n} hands, {card['data']['sources'][name]}")
    lines += ["", "## Recipe", "", "```json", json.dumps(card["recipe"], indent=1), "```", "",
              "Rebuild: `python -m components.gesture_model --input_dir ../shared/data/hagrid_train "
              "--test_dir ../shared/data/hagrid_sample ../shared/data/roboflow_gestures_v6 "
              "--test_review benchmarks/review/roboflow_gestures_v6.yaml "
              "--output_dir shared/weights/gesture_landmarks --overwrite`", "",
              "## Metrics", "", f"- teacher held-out split (same people as training): {m['teacher_val_accuracy']}"]
    rt = m.get("real_test") or {}
    if rt:
        lines.append(f"- real photos of other people, end to end (misses and `unknown` count as errors): "
                     f"**{rt['accuracy']}** on {rt['targets']} hands ({', '.join(rt['sets'])})")
        for name, pc in rt["per_class"].items():
            lines.append(f"  - {name}: {pc['accuracy']} ({pc['targets']} hands)")
    rv = m.get("real_test_reviewed") or {}
    if rv:
        lines.append(f"- the same without the photos whose labels a review rejects ({', '.join(rv['reviews'])}): "
                     f"**{rv['accuracy']}** on {rv['targets']} hands ({rv['missed']} missed by the detector)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.gesture_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with GestureModelConfig keys (flags override it)")
    add_config_args(parser, GestureModelConfig)
    args = parser.parse_args(argv)
    cfg = load_config(GestureModelConfig, args.config, args)
    result = build_gesture_model(cfg)
    print(f"train hands {result.counts}; teacher held-out accuracy {result.val_accuracy:.4f}")
    if result.test:
        print(f"real test accuracy {result.test['accuracy']:.4f} on {result.test['targets']} hands "
              f"(missed {result.test['missed']}, unknown {result.test['unknown']})")
    print(f"model: {result.output_dir} ({result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
