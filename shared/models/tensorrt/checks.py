"""The accuracy check of a built engine: it runs next to onnxruntime on the same inputs (the
calibration images, or random inputs when none are given) and the change is measured: keypoint
PCK and gesture agreement for BlazeHand (and PCK against the labels for both, when there are
labels), detection agreement for BlazePalm, top-1 agreement for a classifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.geometry import iou_matrix
from shared.models.tensorrt.runtime import EngineRunner
from shared.tensors import run_batched

PCK_AGREEMENT = 0.02  # engine vs onnxruntime: a keypoint agrees within 2% of the crop side (4.5 px at 224)
PCK_LABELS = 0.1  # against labels: within 10% of the hand's box size (the usual hand PCK@0.1)


def compare_outputs(family: str, engine: dict[str, np.ndarray], reference: dict[str, np.ndarray], img_size: int,
                    labels: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy of the engine's outputs next to onnxruntime's on the same inputs.

    blazehand: PCK agreement (keypoints within 2% of the crop side of onnxruntime's), max
    keypoint |diff| in pixels, gesture (argmax) agreement, max presence |diff|; with labels, PCK@0.1
    of both against the labels and its change. blazepalm: palms above 0.5 found by both,
    box IoU of matched palms. classifier: top-1 agreement.
    """
    out: dict[str, float] = {"inputs": float(len(next(iter(reference.values()))))}
    for name in reference:
        out[f"max_abs_diff/{name}"] = float(np.abs(engine[name].astype(np.float64) - reference[name]).max())
    if family == "blazehand":
        a, b = engine["landmarks"][..., :2], reference["landmarks"][..., :2]  # [N, 21, 2] crop pixels
        dist = np.linalg.norm(a - b, axis=-1)
        out["pck_agreement"] = float((dist <= PCK_AGREEMENT * img_size).mean())
        out["max_keypoint_px"] = float(dist.max())
        out["gesture_agreement"] = float((engine["gesture_probs"].argmax(-1) == reference["gesture_probs"].argmax(-1))
                                         .mean())
        if labels is not None:
            seen = labels[..., 2] > 0  # [N, 21]
            lo, hi = labels[..., :2].min(1), labels[..., :2].max(1)
            size = np.maximum((hi - lo).max(-1), 1.0)[:, None]  # [N, 1] hand size, crop pixels
            for key, pred in (("engine", a), ("onnxruntime", b)):
                ok = np.linalg.norm(pred - labels[..., :2], axis=-1) <= PCK_LABELS * size
                out[f"pck@0.1/{key}"] = float(ok[seen].mean()) if seen.any() else float("nan")
            out["pck@0.1/change"] = out["pck@0.1/engine"] - out["pck@0.1/onnxruntime"]
    elif family == "blazepalm":
        found_e, found_r, matched, ious = 0, 0, 0, []
        for i in range(len(reference["scores"])):
            e, r = engine["scores"][i] >= 0.5, reference["scores"][i] >= 0.5
            found_e, found_r = found_e + int(e.sum()), found_r + int(r.sum())
            both = e & r
            matched += int(both.sum())
            if both.any():
                iou = iou_matrix(engine["boxes"][i][both], reference["boxes"][i][both])
                ious.append(np.diag(iou))
        out["anchor_agreement"] = matched / max(found_r, found_e, 1)
        out["mean_box_iou"] = float(np.concatenate(ious).mean()) if ious else float("nan")
    elif "gesture_probs" in reference:
        out["top1_agreement"] = float((engine["gesture_probs"].argmax(-1) == reference["gesture_probs"].argmax(-1))
                                      .mean())
    return out


def check_engine(engine_path: str | Path, onnx_path: str | Path, inputs: np.ndarray, family: str,
                 labels: np.ndarray | None = None) -> dict[str, float]:
    """Run the engine and onnxruntime on `inputs` ([N, 3, S, S]) in engine-sized chunks; compare."""
    import onnxruntime as ort


    runner = EngineRunner(engine_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    in_name = session.get_inputs()[0].name

    class _Ort:
        name, max_batch = "onnxruntime", runner.max_batch

        def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {in_name: x})))

    engine_out = run_batched(runner, inputs)
    reference = run_batched(_Ort(), inputs)
    return compare_outputs(family, engine_out, reference, inputs.shape[-1], labels)
