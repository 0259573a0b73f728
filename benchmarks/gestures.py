"""Which gesture model to ship: two designs on the same real photos of other people.

    python -m benchmarks.gestures --data D --test_dir ../shared/data/hagrid_sample ../shared/data/roboflow_gestures_v6

(a) `crop_head`: BlazeHand's backbone frozen (MediaPipe's weights, so the landmarks stay
    MediaPipe's exactly) and a linear gesture head on its pooled 1152-d features of the
    hand crop (the crop MediaPipe's tracking ROI cuts from the teacher's landmarks);
(b) `landmark_mlp`: the MLP on normalised landmarks that the pipeline ships
    (`shared.inference.gestures`), trained the same way as `components.gesture_model`.

Both learn from the same teacher-labelled hands of `--data` (an autolabel dataset, train
split; classes real photos have: fist, normal_hand, pointer), with mirrored copies. Both
are tested on the same hands found by the same static pipeline in `--test_dir`; misses
are counted as errors for both (they are the detector's, identical for the two), and the
accuracy on found hands is printed too. Also a plain linear model on the landmarks (the
floor the issue names). Writes benchmarks/results/gestures.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from components.gesture_model import GestureModelConfig, teacher_hands, train_mlp
from shared.data.labels import list_images, read_labels
from shared.data.realsets import read_gesture_test_set
from shared.geometry import crop_matrix
from shared.hand import GESTURE_TO_ID, GESTURES, LABEL_NAMES, UNKNOWN_HAND_ID
from shared.inference.gesture_eval import match_hands
from shared.inference.gestures import landmark_features, mirror_features
from shared.inference.pipeline import HandPipeline, PipelineConfig, roi_from_landmarks

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = ("fist", "normal_hand", "pointer")


def _features(model, rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """[2, 1152]: BlazeHand features of the hand's crop and of its mirror image."""
    import torch

    roi = roi_from_landmarks(keypoints)
    crop = cv2.warpAffine(rgb, crop_matrix(roi, 224), (224, 224), flags=cv2.INTER_LINEAR)
    x = np.stack([crop, crop[:, ::-1]]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    with torch.no_grad():
        return model.forward_features(torch.from_numpy(x)).numpy()


def _train_linear(x: np.ndarray, y: np.ndarray, classes: int, seed: int, steps: int = 500) -> tuple:
    import torch

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-3
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y)
    lin = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(lin(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    return lambda f: ((f - mean) / std @ w.T + b).argmax(-1)


def main() -> None:
    import torch

    from shared.models.registry import create_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--test_dir", nargs="+", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    data = Path(args.data)
    blazehand = create_model("blazehand_full", pretrained_weights="mediapipe").eval()

    # Training hands: landmarks (b) and crop features (a), the same hands.
    t0 = time.perf_counter()
    feats, labels_a = [], []
    for split in ("train",):
        for image in list_images(data / split / "images"):
            labels, _ = read_labels(data / split / "labels" / f"{image.stem}.txt", num_classes=len(LABEL_NAMES))
            keep = [lb for lb in labels if lb.cls != UNKNOWN_HAND_ID and GESTURES[lb.cls] in CLASSES]
            if not keep:
                continue
            rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            for lb in keep:
                f = _features(blazehand, rgb, lb.keypoints[:, :2] * [w, h])
                feats += [f[0], f[1]]
                labels_a += [CLASSES.index(GESTURES[lb.cls])] * 2
    head = _train_linear(np.asarray(feats), np.asarray(labels_a), len(CLASSES), args.seed)
    t_a = time.perf_counter() - t0

    t0 = time.perf_counter()
    xy, cls = teacher_hands(data, ("train",))
    keep = np.isin(cls, [GESTURE_TO_ID[c] for c in CLASSES])
    mlp = train_mlp(xy[keep], cls[keep], GestureModelConfig(seed=args.seed))
    t_b = time.perf_counter() - t0
    f_lin = landmark_features(xy[keep])
    y_lin = np.array([CLASSES.index(GESTURES[c]) for c in cls[keep]])
    linear = _train_linear(np.concatenate([f_lin, mirror_features(f_lin)]), np.concatenate([y_lin, y_lin]),
                           len(CLASSES), args.seed, steps=1000)

    # Test: the same found hands for every design.
    pipe = HandPipeline(PipelineConfig(static=True, gesture_model="none"))
    samples = [s for d in args.test_dir for s in read_gesture_test_set(d)]
    rows = {"crop_head": [], "landmark_mlp": [], "landmark_linear": []}
    missed = 0
    for s in samples:
        if not np.isin(s.classes, [GESTURE_TO_ID[c] for c in CLASSES]).any():
            continue
        rgb = cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        hands = pipe.process(rgb)
        match = match_hands(s.boxes * [w, h, w, h], hands.xyxy)
        for k, c in enumerate(s.classes):
            if GESTURES[c] not in CLASSES:
                continue
            if match[k] < 0:
                missed += 1
                continue
            kp = hands.keypoints[match[k]][:, :2]
            truth = CLASSES.index(GESTURES[c])
            rows["crop_head"].append(int(head(_features(blazehand, rgb, kp)[:1])[0]) == truth)
            g, _ = mlp.predict(kp[None], threshold=0.0)
            rows["landmark_mlp"].append(int(g[0]) == GESTURE_TO_ID[CLASSES[truth]])
            rows["landmark_linear"].append(int(linear(landmark_features(kp[None]))[0]) == truth)
    found = len(rows["crop_head"])
    result = {"test_sets": args.test_dir, "classes": list(CLASSES), "targets": found + missed, "missed": missed,
              "train_hands": int(keep.sum()), "train_seconds": {"crop_head": round(t_a, 1),
                                                                "landmark_mlp": round(t_b, 1)},
              "designs": {}}
    print(f"{'design':16s} {'acc (misses = errors)':>22s} {'acc on found hands':>19s}")
    for name, ok in rows.items():
        acc_all = sum(ok) / max(found + missed, 1)
        acc_found = sum(ok) / max(found, 1)
        result["designs"][name] = {"accuracy": round(acc_all, 4), "accuracy_found": round(acc_found, 4)}
        print(f"{name:16s} {acc_all:22.4f} {acc_found:19.4f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gestures.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
