"""Gesture accuracy on real photos of people a model never saw, end to end.

    samples = read_gesture_test_set("../shared/data/hagrid_sample")      # HaGRID layout
    samples += read_gesture_test_set("../shared/data/roboflow_gestures_v6")  # YOLO export
    report = evaluate_gestures(HandPipeline(PipelineConfig(static=True)), samples)

Each sample is one photo and its annotated gesture hands (box + our class, through the
gesture map). HaGRID's idle `no_gesture` hands and hands of classes the map drops are not
targets. A target counts as correct only when the pipeline finds a hand on it (IoU >= 0.3
with the annotated box, or the annotated box holding most of ours) AND gives it the right
gesture: a missed hand is an error, an `unknown` answer is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from shared.data.realsets import GestureSample
from shared.errors import UserError
from shared.geometry import iou_matrix
from shared.hand import GESTURES

MATCH_IOU = 0.3


@dataclass
class GestureReport:
    accuracy: float
    targets: int
    correct: int
    missed: int
    unknown: int
    per_class: dict[str, dict] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows: truth (GESTURES), cols: GESTURES + miss + unknown
    confusion_labels: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("accuracy", "targets", "correct", "missed", "unknown", "per_class",
                                              "confusion", "confusion_labels", "errors")}

    def table(self) -> str:
        head = "truth \\ predicted".ljust(18) + "".join(f"{c:>12s}" for c in self.confusion_labels)
        lines = [head]
        for name, row in zip(GESTURES, self.confusion):
            if sum(row):
                lines.append(name.ljust(18) + "".join(f"{v:12d}" for v in row))
        return "\n".join(lines)


def evaluate_gestures(pipe, samples: list[GestureSample]) -> GestureReport:
    """Run `pipe` (a static-mode HandPipeline, or any callable RGB -> HandResults) on every
    photo and score its gesture hands (boxes in the samples are normalised xyxy)."""
    process = getattr(pipe, "process", pipe)
    labels = list(GESTURES) + ["missed", "unknown"]
    confusion = np.zeros((len(GESTURES), len(labels)), np.int64)
    errors = []
    for sample in samples:
        bgr = cv2.imread(str(sample.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"{sample.path}: unreadable image in the test set")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        hands = process(rgb)
        truth_px = sample.boxes * np.array([w, h, w, h])
        match = match_hands(truth_px, hands.xyxy)
        for k, cls in enumerate(sample.classes):
            j = match[k]
            if j < 0:
                col = labels.index("missed")
            elif hands.gesture[j] >= 0:
                col = int(hands.gesture[j])
            else:
                col = labels.index("unknown")
            confusion[cls, col] += 1
            if col != cls:
                errors.append({"image": str(sample.path), "truth": GESTURES[cls], "predicted": labels[col],
                               "score": None if j < 0 else round(float(hands.gesture_score[j]), 3)})
    targets = int(confusion.sum())
    correct = int(np.trace(confusion[:, :len(GESTURES)]))
    per_class = {}
    for c, name in enumerate(GESTURES):
        n = int(confusion[c].sum())
        if n:
            per_class[name] = {"targets": n, "accuracy": round(float(confusion[c, c]) / n, 4)}
    return GestureReport(accuracy=round(correct / max(targets, 1), 4), targets=targets, correct=correct,
                         missed=int(confusion[:, -2].sum()), unknown=int(confusion[:, -1].sum()),
                         per_class=per_class, confusion=confusion.tolist(), confusion_labels=labels, errors=errors)


def match_hands(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per truth box, the index of the predicted hand on it (-1: none); one-to-one, greedy by IoU.
    A prediction mostly inside the truth box counts too (annotated boxes are often loose)."""
    out = np.full(len(truth), -1, np.int64)
    if len(pred) == 0 or len(truth) == 0:
        return out
    iou = iou_matrix(truth.astype(np.float64), pred.astype(np.float64))  # [T, P]
    inter_w = np.clip(np.minimum(truth[:, None, 2], pred[None, :, 2]) - np.maximum(truth[:, None, 0], pred[None, :, 0]),
                      0, None)
    inter_h = np.clip(np.minimum(truth[:, None, 3], pred[None, :, 3]) - np.maximum(truth[:, None, 1], pred[None, :, 1]),
                      0, None)
    pred_area = np.maximum((pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]), 1e-6)
    inside = inter_w * inter_h / pred_area[None, :]
    score = np.where((iou >= MATCH_IOU) | (inside >= 0.6), iou + inside, 0.0)
    used: set[int] = set()
    for t, p in sorted(((t, p) for t in range(len(truth)) for p in range(len(pred)) if score[t, p] > 0),
                       key=lambda tp: -score[tp]):
        if out[t] < 0 and p not in used:
            out[t] = p
            used.add(p)
    return out


def end_to_end_check(test_dirs: list[str], backend: str = "onnxruntime", **pipeline_options):
    """For the INT8 export's verification (`shared.models.quantize.EndToEnd`): a function crop-model
    ONNX file -> {test set: accuracy, labelled hands, hands found per photo} of the static pipeline
    (MediaPipe's palm detector, that crop model, the shipped gesture model) on the labelled photos
    of `test_dirs` (HaGRID layout or a YOLO export; folders of unlabelled photos are left out), both
    networks on `backend` (the runtime the int8 file is made for: onnxruntime or openvino).
    None when no folder is labelled."""
    from pathlib import Path

    from shared.data.realsets import read_gesture_test_set
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    sets = {}
    for d in test_dirs:
        root = Path(d)
        if not ((root / "annotations").is_dir() or (root / "data.yaml").is_file()):
            continue  # photos without labels: their crops are checked, not the gestures
        samples = read_gesture_test_set(root)
        if samples:
            sets[root.name] = samples
    if not sets:
        return None

    def run(model_path) -> dict[str, dict]:
        pipe = HandPipeline(PipelineConfig(static=True, backend=backend, model_weights=str(model_path),
                                           **pipeline_options))
        out = {}
        for name, samples in sets.items():
            hands: list[int] = []

            def process(rgb, hands=hands):
                found = pipe.process(rgb)
                hands.append(len(found.xyxy))
                return found

            report = evaluate_gestures(process, samples)
            out[name] = {"accuracy": report.accuracy, "targets": report.targets, "hands": hands}
        return out

    return run


__all__ = ["GestureReport", "end_to_end_check", "evaluate_gestures", "match_hands"]
