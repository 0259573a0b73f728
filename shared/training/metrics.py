"""Evaluation metrics shared by training, evaluation and benchmarks (numpy, no framework)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
                           names: tuple[str, ...] | list[str] | None = None) -> dict:
    """accuracy, macro_f1 (over classes present in y_true or y_pred), per-class F1, confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support + predicted) > 0
    names = list(names) if names is not None else [str(i) for i in range(num_classes)]
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": {names[i]: float(f1[i]) for i in range(num_classes)},
        "confusion_matrix": cm.tolist(),
    }


def keypoint_metrics(pred: np.ndarray, target: np.ndarray, visibility: np.ndarray, box_size: np.ndarray,
                     thresholds: tuple[float, ...] = (0.05, 0.1, 0.2)) -> dict:
    """PCK@t (share of labelled keypoints within t x box size) and NME (mean error / box size).

    pred, target: [N, 21, 2] pixels; visibility: [N, 21] (>0 = labelled); box_size: [N] pixels
    (the longer side of the hand's box).
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    target = np.asarray(target, dtype=np.float64)[..., :2]
    mask = np.asarray(visibility) > 0
    size = np.maximum(np.asarray(box_size, dtype=np.float64), 1e-6)[:, None]
    err = np.linalg.norm(pred - target, axis=-1) / size  # [N, 21]
    out: dict = {}
    n = int(mask.sum())
    for t in thresholds:
        out[f"pck@{t:g}"] = float(((err <= t) & mask).sum() / n) if n else 0.0
    out["nme"] = float(err[mask].mean()) if n else 0.0
    return out
