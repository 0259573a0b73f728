"""What a TensorRT engine is calibrated and checked on: the ONNX file's model family, and real
images through that model's own preprocessing (`calibration_inputs`). For BlazeHand, upright 224
hand crops, RGB in [0, 1], from the caller's `CropReader` (`shared.inference.real_crops`, the
reader the ONNX Runtime INT8 export uses too: one calibration set for both); for a classifier,
crops from box labels (else the whole image letterboxed); the 192 letterbox for BlazePalm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.data.labels import label_path_for, list_images, read_labels
from shared.errors import UserError
from shared.geometry import crop_matrix, warp_crop
from shared.models.blazepalm_post import letterbox
from shared.models.quantize import CropReader


def model_family(onnx_path: str | Path) -> tuple[str, int, list[str], list[str]]:
    """(family, input side, input names, output names) read from the ONNX file's tensors,
    whose names come from shared/models/specs.py."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise UserError(f"--onnx_path {path}: no such file; export one with `python -m components.export onnx "
                        "--dynamic_batch`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from None
    init = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in init]
    outputs = [v.name for v in model.graph.output]
    if len(inputs) != 1:
        raise UserError(f"{path}: {len(inputs)} inputs; the TensorRT export handles one image input")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise UserError(f"{path}: input {inputs[0].name!r} has shape {dims}; expected [batch, 3, S, S]")
    if dims[0] != -1:
        raise UserError(f"{path}: the batch axis is fixed to {dims[0]}; an optimization profile needs a dynamic "
                        "batch (components.export onnx --dynamic_batch)")
    family = ("blazehand" if "landmarks" in outputs else "blazepalm" if "boxes" in outputs
              else "classifier" if outputs == ["gesture_probs"] else "other")
    return family, int(dims[3]), [inputs[0].name], outputs


def calibration_inputs(images_dir: str | Path, family: str, img_size: int, max_inputs: int,
                       real_crops: CropReader | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Real images through the model's own preprocessing -> ([N, 3, S, S] float32 RGB in [0, 1],
    keypoint labels [N, 21, 3] in input pixels or None).

    blazehand: `real_crops(folder, size=, limit=)`, passed in by the caller:
    `shared.inference.real_crops.real_crops` (keypoint labels, else the MediaPipe teacher).
    classifier: a YOLO-pose dataset folder (images/ + labels/) gives one upright
    crop per labelled hand, the crop model's ROI (`shared.data.crops.hand_roi`); an unlabelled
    folder gives each image letterboxed to a square (a folder of hand crops). blazepalm: each
    image letterboxed to 192 (`shared.models.blazepalm_post.letterbox`), as PalmDetector feeds it.
    """
    import cv2


    root = Path(images_dir)
    if not root.is_dir():
        raise UserError(f"--calib_images {root}: not a folder; pass a folder of real images")
    if family == "blazehand":
        # The same reader as the ONNX Runtime INT8 export (shared.models.quantize): one calibration
        # set for both. Crops placed as the tracking pipeline places them, from keypoint labels or
        # from the MediaPipe teacher on unlabelled photos.
        if real_crops is None:
            raise ValueError("BlazeHand calibration needs real_crops, the hand-crop reader "
                             "(shared.inference.real_crops.real_crops); components.export passes it")
        crops = real_crops(root, size=img_size, limit=max_inputs)
        return crops.x, crops.keypoints
    images_root = root / "images" if (root / "images").is_dir() else root
    labels_root = images_root.parent / "labels" if images_root.name == "images" else None
    paths = list_images(images_root)
    if not paths:
        raise UserError(f"--calib_images {root}: no images found (.jpg, .png, ...)")
    xs: list[np.ndarray] = []
    kps: list[np.ndarray] = []
    has_kp = True
    for path in paths:
        if len(xs) >= max_inputs:
            break
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue  # a corrupt file only shrinks the calibration set
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        if family == "blazepalm":
            xs.append(letterbox(rgb, img_size)[0])
            has_kp = False
            continue
        labels = []
        if labels_root is not None:
            label_file = label_path_for(path, images_root, labels_root)
            if label_file.is_file():
                labels, _ = read_labels(label_file)
        if not labels:
            from shared.data.crops import letterbox_square

            xs.append(letterbox_square(rgb, img_size))
            has_kp = False
            continue
        from shared.data.crops import hand_roi

        for label in labels:
            roi = hand_roi(label, w, h, expand_ratio=0.3, rotate=True, use_box=False)
            xs.append(warp_crop(rgb, roi, img_size))
            if label.has_keypoints:
                m = crop_matrix(roi, img_size)
                kp = label.keypoints_px(w, h).astype(np.float64)
                kp[:, :2] = kp[:, :2] @ m[:, :2].T + m[:, 2]
                kps.append(kp)
            else:
                has_kp = False
    if not xs:
        raise UserError(f"--calib_images {root}: none of the images could be read")
    xs = xs[:max_inputs]
    x = np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)  # [N, 3, S, S]
    labels_out = np.stack(kps)[: len(x)] if has_kp and len(kps) == len(x) else None
    return x, labels_out
