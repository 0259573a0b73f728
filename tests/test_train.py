"""Training: crops, losses, samplers, and a few real steps of every task.

The data is a tiny synthetic YOLO-pose dataset rendered in the test (1-2 hands
per 128-px image). The tasks run for real (Lightning, timm, Ultralytics) but
for a handful of steps; the checks are behavioural: the loss goes down, the
files a later stage reads exist and reload to identical outputs, the seed's
command line parses to the seed's values, and nothing is written into the
input dataset.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from components.tasks.classifier import ClassifierConfig, train_classifier
from components.tasks.landmarks import (
    KeypointsConfig,
    MultitaskConfig,
    centre_landmark_head,
    train_keypoints,
    train_multitask,
)
from shared.data.crops import CropAugment, HandCropDataset, ImageFolderCrops, hand_roi
from shared.data.labels import HandLabel, write_labels
from shared.data.splits import split_dirs
from shared.geometry import roi_from_keypoints
from shared.hand import GESTURES, NUM_KEYPOINTS
from shared.training.callbacks import load_checkpoint
from shared.training.losses import KeypointLossConfig, hard_sample_weights, keypoint_loss, ohkm, wing_loss
from shared.training.modules import LandmarkLossConfig, LandmarkModule, OptimConfig, build_optimizer, lr_lambdas
from shared.training.samplers import balanced_sampler

FAST = dict(num_workers=0, progress_bar=False, plots=True, patience=0, seed=0)


def _mediapipe_cached() -> bool:
    from shared.models.mediapipe_import import default_cache_dir, find_wheel

    return find_wheel() is not None or any(default_cache_dir().glob("hand_landmark_lite.*.pth"))


needs_mediapipe = pytest.mark.skipif(not _mediapipe_cached(), reason="MediaPipe weights not cached (make weights)")


def write_dataset(root: Path, splits: dict[str, int], image_size: int = 128, seed: int = 7) -> Path:
    """A YOLO-pose dataset of synthetic hands: root/{split}/{images,labels} + data.yaml."""
    from shared.data.synthetic import SyntheticConfig, render_image

    cfg = SyntheticConfig(image_size=image_size, min_hands=1, max_hands=2, occlusion_prob=0.0, blur_prob=0.0)
    index = 0
    for split, count in splits.items():
        for i in range(count):
            sample = render_image(seed, index, cfg)
            index += 1
            name = f"{split}_{i:03d}"
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "images" / f"{name}.png"), sample.image)
            write_labels(root / split / "labels" / f"{name}.txt", sample.labels)
    (root / "data.yaml").write_text(yaml.safe_dump({
        "path": str(root), "train": "train/images", "val": "val/images", "kpt_shape": [NUM_KEYPOINTS, 3],
        "flip_idx": list(range(NUM_KEYPOINTS)), "names": dict(enumerate(GESTURES))}))
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two spinning OpenMP threads run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("hands"), {"train": 8, "val": 4})


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ crops

def dot_image(size: int = 240) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """A black image with 21 well separated, uniquely coloured dots laid out like an upright hand."""
    rng = np.random.default_rng(0)
    grid = np.array([(x, y) for y in range(5) for x in range(5)])[:NUM_KEYPOINTS]  # [21, 2]
    pts = 80 + grid * 20.0  # 80..160 px
    pts[[0, 9]] = [[120, 170], [120, 110]]  # wrist below the middle-finger base: upright
    colours = [tuple(int(c) for c in rng.integers(60, 256, 3)) for _ in range(NUM_KEYPOINTS)]
    image = np.zeros((size, size, 3), np.uint8)
    for (x, y), colour in zip(pts, colours):
        cv2.circle(image, (int(x), int(y)), 4, colour, -1)
    return image, pts, colours


def test_augmented_crop_keeps_each_keypoint_on_its_dot(tmp_path):
    image, pts, colours = dot_image()
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    kp = np.concatenate([pts, np.full((NUM_KEYPOINTS, 1), 2.0)], 1)
    write_labels(tmp_path / "labels" / "a.txt", [HandLabel.from_xyxy(2, [70, 70, 170, 180], 240, 240, kp)])
    # Geometry only (rotation, scale, shift, always mirrored): colour effects would change the dots.
    aug = CropAugment(rotation_deg=40, scale=0.2, shift=0.1, hflip=1.0, color=0, blur=0, noise=0, occlusion=0)
    ds = HandCropDataset(tmp_path / "images", tmp_path / "labels", img_size=128, expand_ratio=0.8, augment=aug)
    checked = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        crop = (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # RGB
        for k, (x, y) in enumerate(item["keypoints"].numpy()):
            if not (3 <= x < 125 and 3 <= y < 125):
                continue
            pixel = crop[int(round(y)), int(round(x))].astype(int)
            bgr = np.array(colours[k])
            assert np.abs(pixel[::-1] - bgr).max() <= 40, f"epoch {epoch}: keypoint {k} is not on its dot"
            checked += 1
    assert checked > 60


def test_crop_is_upright_and_keypoints_match_the_geometry(dataset):
    train = split_dirs(dataset, "train")
    ds = HandCropDataset(train.images, train.labels, img_size=224, expand_ratio=0.5)
    record = ds.records[0]
    item = ds[0]
    image = cv2.imread(str(record.image))
    h, w = image.shape[:2]
    roi = hand_roi(record.label, w, h, 0.5, rotate=True, use_box=False)
    kp = item["keypoints"].numpy()
    vis = item["visibility"].numpy() > 0
    from shared.geometry import image_to_crop

    expected = image_to_crop(record.label.keypoints_px(w, h), roi, 224)[:, :2]
    assert np.allclose(kp[vis], expected[vis], atol=1e-3)
    if vis[0] and vis[9] and record.label.cls != 0:  # wrist below the middle-finger base after the warp
        assert kp[0, 1] > kp[9, 1]
        assert abs(kp[0, 0] - kp[9, 0]) < 0.25 * abs(kp[0, 1] - kp[9, 1]) + 1


def test_two_hands_roi_covers_the_whole_box():
    # Keypoints of the left hand only; the box spans both hands (a 2_hands object).
    kp = np.zeros((NUM_KEYPOINTS, 3))
    kp[:, 0] = np.linspace(40, 80, NUM_KEYPOINTS)
    kp[:, 1] = np.linspace(160, 80, NUM_KEYPOINTS)
    kp[:, 2] = 2
    kp[9] = [60, 110, 2]
    label = HandLabel.from_xyxy(0, [35, 75, 200, 165], 240, 240, kp)
    roi = hand_roi(label, 240, 240, 0.3, rotate=True, use_box=False)
    plain = roi_from_keypoints(label.keypoints_px(240, 240), 0.3)
    assert roi.size > plain.size
    x1, y1, x2, y2 = roi.bounding_xyxy()
    assert x1 <= 35 and x2 >= 200
    single = HandLabel.from_xyxy(2, [38, 78, 82, 162], 240, 240, kp)  # a box around its own keypoints
    assert hand_roi(single, 240, 240, 0.3, rotate=True, use_box=False) == plain


def test_imagefolder_reads_gesture_folders_and_rejects_unknown_ones(tmp_path):
    from shared.errors import UserError

    for name in ("fist", "pointer"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "x.png"), np.full((30, 50, 3), 128, np.uint8))
    ds = ImageFolderCrops(tmp_path, img_size=64)
    assert sorted(ds.gestures.tolist()) == [GESTURES.index("fist"), GESTURES.index("pointer")]
    assert ds[0]["image"].shape == (3, 64, 64)
    (tmp_path / "fists").mkdir()
    with pytest.raises(UserError, match="fists"):
        ImageFolderCrops(tmp_path, img_size=64)


# ------------------------------------------------------------------------------------------ losses

@pytest.mark.parametrize("error", [0.5, 9.999, 10.0, 10.001, 50.0])
def test_wing_loss_is_continuous_and_log_then_linear(error):
    e = torch.tensor([error - 1e-4, error, error + 1e-4])
    values = wing_loss(e)
    assert (values[1] - values[0]).abs() < 1e-2 and (values[2] - values[1]).abs() < 1e-2
    if error > 10:  # linear part: slope 1
        assert torch.isclose(wing_loss(torch.tensor(error + 1.0)) - wing_loss(torch.tensor(error)), torch.tensor(1.0))


def test_keypoint_loss_ignores_unlabelled_keypoints():
    pred = torch.rand(3, NUM_KEYPOINTS, 2)
    target = torch.rand(3, NUM_KEYPOINTS, 2)
    vis = torch.full((3, NUM_KEYPOINTS), 2.0)
    vis[:, 5:9] = 0
    base, _ = keypoint_loss(pred, target, vis)
    moved = target.clone()
    moved[:, 5:9] += 100.0  # garbage where nothing is labelled
    again, _ = keypoint_loss(pred, moved, vis)
    assert torch.isclose(base, again)
    vis[2] = 0  # a sample without any labelled keypoint adds nothing
    a, per_sample = keypoint_loss(pred, target, vis)
    b, _ = keypoint_loss(pred[:2], target[:2], vis[:2])
    assert torch.isclose(a, b) and per_sample[2] == 0


def test_ohkm_averages_the_worst_labelled_keypoints():
    err = torch.tensor([[1.0, 5.0, 3.0, 9.0, 0.0], [2.0, 2.0, 8.0, 1.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.float32)
    # sample 0: 9 is unlabelled, worst two labelled are 5 and 3; sample 1: 8 and 7.
    assert torch.allclose(ohkm(err, mask, topk=2), torch.tensor([4.0, 7.5]))
    few = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.allclose(ohkm(err, few, topk=3), torch.tensor([1.0, 0.0]))


def test_hard_samples_weigh_more_and_weights_average_one():
    loss = torch.tensor([0.1, 0.2, 0.4, 0.8])
    w = hard_sample_weights(loss, torch.ones(4), gamma=1.0, max_weight=4.0)
    assert torch.isclose(w.mean(), torch.tensor(1.0)) and (w.diff() > 0).all()
    pred, target = torch.zeros(4, NUM_KEYPOINTS, 2), torch.zeros(4, NUM_KEYPOINTS, 2)
    target[:, :, 0] = loss[:, None]
    vis = torch.ones(4, NUM_KEYPOINTS)
    plain, _ = keypoint_loss(pred, target, vis, KeypointLossConfig(hard_mining=True, sample_gamma=0.0))
    mined, _ = keypoint_loss(pred, target, vis, KeypointLossConfig(hard_mining=True, sample_gamma=1.0))
    assert mined > plain  # the batch leans towards its hardest samples


def test_optimizer_groups_and_linear_probe_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    cfg = OptimConfig(lr=1e-5, head_lr=1e-3, probe_epochs=1.0, warmup_ratio=0.0)
    optimizer = build_optimizer(model.named_parameters(), {"1.weight", "1.bias"}, cfg)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"backbone": 1e-5, "backbone_no_decay": 1e-5, "head": 1e-3, "head_no_decay": 1e-3}
    names = [g["name"] for g in optimizer.param_groups]
    lambdas = dict(zip(names, lr_lambdas(names, total_steps=40, epochs=4, cfg=cfg)))
    # 10 steps per epoch: the pretrained weights wait one epoch while the new head trains, then join.
    assert [lambdas["backbone"](s) for s in (0, 9)] == [0.0, 0.0] and lambdas["backbone"](10) > 0.9
    assert lambdas["head"](0) > 0.9 and lambdas["head"](39) < lambdas["head"](10)


def test_balanced_sampler_draws_rare_classes_as_often():
    labels = np.array([0] * 90 + [1] * 10)
    drawn = np.array(labels)[list(balanced_sampler(labels, 2, num_samples=4000, seed=0))]
    assert abs((drawn == 1).mean() - 0.5) < 0.05


# ------------------------------------------------------------------------------------------ tasks

def mean_val_loss(module: LandmarkModule, loader) -> float:
    module.eval()
    with torch.no_grad():
        losses = [module.compute_loss(module(b["image"]), b, train=False)["loss"] for b in loader]
    return float(torch.stack(losses).mean())


@needs_mediapipe
def test_multitask_reduces_loss_and_checkpoints_reload_identically(dataset, tmp_path):
    from components.tasks.landmarks import build_crop_model

    torch.manual_seed(0)
    # The seed's starting point: MediaPipe's landmark weights and a new gesture head.
    model, _, new_params, _ = build_crop_model("blazehand_lite", len(GESTURES), "mediapipe")
    assert new_params == {"gesture.weight", "gesture.bias"}
    dirs = split_dirs(dataset, "train")
    cfg = MultitaskConfig(train_images=str(dirs.images), train_labels=str(dirs.labels),
                          val_images=str(dirs.images), val_labels=str(dirs.labels), model_type="blazehand_lite",
                          pretrained_weights="mediapipe", epochs=3, batch_size=4, lr=3e-4, head_lr=3e-4,
                          augment=False, use_weighted_sampler=True, class_weights=[2.0, 2.0, 1.0, 2.0, 8.0],
                          checkpoint_dir=str(tmp_path / "mt"), **FAST)
    before_files = snapshot(dataset)
    loss_cfg = LandmarkLossConfig(kps_weight=1.0, cls_weight=2.0, class_weights=cfg.class_weights)
    probe = LandmarkModule(model, OptimConfig(), loss_cfg, img_size=224)
    ds = HandCropDataset(dirs.images, dirs.labels, img_size=224, expand_ratio=cfg.expand_ratio)
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    before = mean_val_loss(probe, loader)

    result = train_multitask(cfg, model=model.train())

    after = mean_val_loss(probe, loader)  # `model` now holds the trained weights
    assert after < 0.8 * before, (before, after)
    out = Path(result.output_dir)
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.json", "metrics.jsonl", "train_summary.json",
                 "plots/confusion_matrix.png", "plots/keypoint_error.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val/macro_f1", "val/accuracy", "val/pck@0.05", "val/pck@0.1", "val/pck@0.2", "val/nme",
                "val/loss", "train/loss"):
        assert key in metrics, key
    assert json.loads((out / "train_summary.json").read_text())["best"] == str(out / "best.pt")
    epochs = {json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"series": "macro_f1"' in line}
    assert epochs == {0, 1, 2}

    reloaded, ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_name"] == "blazehand_lite" and ckpt["task"] == "multitask"
    batch = next(iter(loader))["image"]
    model.eval()
    with torch.no_grad():
        a, b = model(batch), reloaded(batch)
    for key in ("landmarks", "gesture_logits", "presence_logit"):
        assert torch.equal(a[key], b[key]), key
    assert snapshot(dataset) == before_files  # nothing written into the input dataset


def test_keypoints_with_hard_mining_and_wing_loss_reduces_loss_and_resumes(dataset, tmp_path):
    from shared.models.registry import create_model

    torch.manual_seed(1)
    model = create_model("blazehand_lite", num_gestures=len(GESTURES))
    centre_landmark_head(model)
    cfg = KeypointsConfig(data=str(dataset), model_type="blazehand_lite", pretrained_weights="none", epochs=2,
                          batch_size=4, lr=1e-3, head_lr=1e-3, use_hard_mining=True, kps_loss="wing",
                          augment=True, checkpoint_dir=str(tmp_path / "kp"), **FAST)
    loss_cfg = LandmarkLossConfig(keypoints=KeypointLossConfig(kind="wing"))
    probe = LandmarkModule(model, OptimConfig(), loss_cfg, img_size=224)
    val = split_dirs(dataset, "val")
    loader = torch.utils.data.DataLoader(HandCropDataset(val.images, val.labels, img_size=224,
                                                         expand_ratio=cfg.expand_ratio, require_keypoints=True),
                                         batch_size=8)
    before = mean_val_loss(probe, loader)
    result = train_keypoints(cfg, model=model.train())
    after = mean_val_loss(probe, loader)
    assert after < before, (before, after)
    assert "val/pck@0.1" in result.metrics and "val/macro_f1" not in result.metrics
    # --resume continues from Lightning's checkpoint: one more epoch, not three from scratch.
    cfg.epochs, cfg.resume = 3, "last"
    resumed = train_keypoints(cfg, model=model.train())
    assert resumed.metrics["epoch"] == 2


def test_classifier_on_label_crops_reduces_loss_and_reloads(dataset, tmp_path):
    cfg = ClassifierConfig(data=str(dataset), model_name="mobilenetv3_small_050", img_size=64, epochs=4,
                           batch_size=4, lr=1e-3, label_smoothing=0.0, augment=False,
                           output_dir=str(tmp_path / "cls"), **FAST)
    from components.tasks.classifier import create_classifier

    torch.manual_seed(0)
    model = create_classifier(cfg.model_name, 5, False)
    train = split_dirs(dataset, "train")
    ds = HandCropDataset(train.images, train.labels, img_size=64, expand_ratio=0.3, rotate=False, use_box=True)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=64)))

    def loss() -> float:
        # Batch statistics, not running ones: a dozen steps leave BN's running averages near their init.
        probe = copy.deepcopy(model).train()  # a copy: train-mode forwards move the running averages
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(probe(batch["image"]), batch["gesture"]))

    before = loss()
    result = train_classifier(cfg, model=model)
    assert loss() < before
    reloaded, ckpt = load_checkpoint(result.last)
    assert ckpt["roi"] == {"expand_ratio": 0.3, "rotate": False, "source": "box"}
    with torch.no_grad():
        assert torch.equal(model.eval()(batch["image"]), reloaded(batch["image"]))
    assert {"val/accuracy", "val/macro_f1", "val/f1_pointer"} <= set(result.metrics)


def test_classifier_reads_an_imagefolder_tree_with_a_stratified_split(tmp_path):
    rng = np.random.default_rng(0)
    for c, name in enumerate(GESTURES):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            image = np.full((40, 40, 3), 40 * c + 20, np.uint8) + rng.integers(0, 10, (40, 40, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "data" / name / f"{i}.png"), image)
    cfg = ClassifierConfig(data_dir=str(tmp_path / "data"), model_name="mobilenetv3_small_050", img_size=32,
                           epochs=1, batch_size=8, output_dir=str(tmp_path / "cls"), **FAST)
    result = train_classifier(cfg)
    assert result.extra["train_crops"] == 20 and result.extra["val_crops"] == 5  # one image per class held out
    assert Path(result.best).is_file()


def test_classifier_reads_the_seeds_yolo_split_folder(dataset, tmp_path):
    # The seed's `--data_dir dataset/train`: a YOLO split; validation comes from the sibling `val/`.
    cfg = ClassifierConfig(data_dir=str(dataset / "train"), model_name="mobilenetv3_small_050", img_size=32,
                           epochs=1, batch_size=8, output_dir=str(tmp_path / "cls"), **FAST)
    result = train_classifier(cfg)
    hands = {split: sum(len(p.read_text().splitlines()) for p in (dataset / split / "labels").glob("*.txt"))
             for split in ("train", "val")}
    assert (result.extra["train_crops"], result.extra["val_crops"]) == (hands["train"], hands["val"])


def test_detector_trains_one_tiny_epoch_offline(dataset, tmp_path):
    from components.tasks.detector import DetectorConfig, train_detector

    before = snapshot(dataset)
    cfg = DetectorConfig(data=str(dataset), imgsz=64, epochs=1, batch_size=4, workers=0, device="cpu",
                         checkpoint_dir=str(tmp_path / "det"))
    result = train_detector(cfg)
    assert Path(result.best).is_file() and Path(result.last).is_file()
    for key in ("val/box_map50", "val/box_map50_95", "val/pose_map50"):
        assert key in result.metrics and 0.0 <= result.metrics[key] <= 1.0
    # The run saw 21 keypoints per hand, and read the dataset through links, never writing to it.
    assert torch.load(result.best, map_location="cpu", weights_only=False)["model"].yaml["kpt_shape"] == [21, 3]
    assert snapshot(dataset) == before


def test_seed_multitask_command_parses_to_the_seed_values(tmp_path):
    from shared.training.run import parse_task_args

    argv = ("--train_images D/train/images --train_labels D/train/labels --val_images D/val/images "
            "--val_labels D/val/labels --model_type blazehand --pretrained_weights blazehand_landmark.pth "
            "--epochs 3 --batch_size 32 --lr 1e-5 --kps_weight 1.0 --cls_weight 2.0 --use_weighted_sampler "
            f"--class_weights 2.0 2.0 1.0 2.0 8.0 --checkpoint_dir {tmp_path}").split()
    cfg = parse_task_args(MultitaskConfig, "multitask", argv, "")
    assert (cfg.model_type, cfg.pretrained_weights, cfg.epochs, cfg.batch_size) == \
        ("blazehand", "blazehand_landmark.pth", 3, 32)
    assert math.isclose(cfg.lr, 1e-5) and cfg.use_weighted_sampler and cfg.class_weights == [2.0, 2.0, 1.0, 2.0, 8.0]
    assert (cfg.kps_weight, cfg.cls_weight, cfg.train_labels) == (1.0, 2.0, "D/train/labels")


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    from components.train import main

    with pytest.raises(SystemExit):
        main(["--task", "nope"])
    from shared.errors import UserError

    with pytest.raises(UserError, match="folder not found"):
        main(["--task", "multitask", "--train_images", str(tmp_path / "missing"), "--val_images",
              str(tmp_path / "missing"), "--pretrained_weights", "none", "--checkpoint_dir", str(tmp_path / "c")])
    with pytest.raises(UserError, match="class_weights"):
        main(["--task", "multitask", "--data", str(tmp_path), "--class_weights", "1", "2",
              "--checkpoint_dir", str(tmp_path / "c")])
