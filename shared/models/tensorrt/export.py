"""The TensorRT export stage: build the engine, check it against onnxruntime, write a JSON summary.

    python -m components.export tensorrt --onnx_path hand.onnx --output_path hand_fp16.plan --fp16
    python -m components.export tensorrt --onnx_path hand.onnx --output_path hand_int8.plan --int8 \\
        --calib_images data/val/images --calib_cache hand_int8.cache

`TensorRTExportConfig` holds the command's options, `export_tensorrt` runs the stage and
`describe` gives the lines the command prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shared.config import option
from shared.errors import UserError
from shared.models.quantize import CropReader
from shared.models.tensorrt.calibration import calibration_inputs, model_family
from shared.models.tensorrt.checks import PCK_AGREEMENT, check_engine
from shared.models.tensorrt.engines import build_engine, check_profile
from shared.models.tensorrt.runtime import require_tensorrt


@dataclass
class TensorRTExportConfig:
    onnx_path: str = option("", "the ONNX file to build from (dynamic batch axis)")
    output_path: str = option("outputs/export/model.plan", "where to write the serialized engine (.plan/.engine)")
    img_size: int | None = option(None, "input side (default: read from the ONNX file)")
    fp16: bool = option(False, "allow FP16 kernels")
    int8: bool = option(False, "INT8 with entropy calibration on --calib_images (FP16 allowed as fallback)")
    calib_images: str = option("", "folder of real images for INT8 calibration and for the accuracy check")
    calib_batch_size: int = option(8, "images per calibration batch")
    max_calib_images: int = option(512, "use at most this many calibration inputs (crops / letterboxed images)")
    calib_cache: str = option("", "INT8 calibration cache; read when it exists, written otherwise "
                                  "('' = <output_path>.calib)")
    min_batch: int = option(1, "optimization profile: smallest batch")
    opt_batch: int = option(4, "optimization profile: the batch TensorRT tunes for")
    max_batch: int = option(16, "optimization profile: largest batch")
    workspace: float = option(2.0, "builder workspace limit in GiB")
    verify: bool = option(True, "run the engine next to onnxruntime and report the accuracy change")
    verify_images: int = option(64, "inputs used by the check (calibration inputs first, else random)")


@dataclass
class TensorRTExportResult:
    engine_path: str
    family: str  # blazehand | blazepalm | classifier | other
    precision: str  # fp32 | fp16 | int8
    profile: dict[str, list[int]]  # min / opt / max input shapes
    build_seconds: float
    calib_cache: str = ""
    calib_cache_reused: bool = False
    calibration_inputs: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    summary_path: str = ""


# --------------------------------------------------------------------------- the stage


def export_tensorrt(cfg: TensorRTExportConfig, real_crops: CropReader | None = None) -> TensorRTExportResult:
    """Build the engine, check it against onnxruntime, write `<output>.json` next to it
    (`real_crops`: BlazeHand's calibration crop reader, see `calibration_inputs`)."""
    require_tensorrt()
    if cfg.fp16 and cfg.int8:
        print("note: --int8 already allows FP16 fallback kernels; --fp16 adds nothing")
    check_profile(cfg.min_batch, cfg.opt_batch, cfg.max_batch)
    family, side, _, _ = model_family(cfg.onnx_path)
    img_size = cfg.img_size or side
    output = Path(cfg.output_path)
    cache = Path(cfg.calib_cache) if cfg.calib_cache else output.with_suffix(".calib")
    cache_existed = cache.is_file()
    inputs = labels = None
    if cfg.calib_images:
        inputs, labels = calibration_inputs(cfg.calib_images, family, img_size, cfg.max_calib_images,
                                            real_crops)
    elif cfg.int8 and not cache_existed:
        raise UserError("--int8 needs --calib_images (a folder of real images) or an existing --calib_cache")
    start = time.perf_counter()
    build_engine(cfg.onnx_path, output, img_size=img_size, fp16=cfg.fp16, int8=cfg.int8,
                 calib_batch_size=cfg.calib_batch_size, calib_cache=cache, min_batch=cfg.min_batch,
                 opt_batch=cfg.opt_batch, max_batch=cfg.max_batch, workspace=cfg.workspace, calib_inputs=inputs)
    build_s = time.perf_counter() - start
    shape = [3, img_size, img_size]
    result = TensorRTExportResult(
        engine_path=str(output), family=family, precision="int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32",
        profile={"min": [cfg.min_batch, *shape], "opt": [cfg.opt_batch, *shape], "max": [cfg.max_batch, *shape]},
        build_seconds=round(build_s, 2), calib_cache=str(cache) if cfg.int8 else "",
        calib_cache_reused=bool(cfg.int8 and cache_existed),
        calibration_inputs=0 if inputs is None else len(inputs), summary_path=str(output.with_suffix(".json")))
    if cfg.verify:
        if inputs is None:  # no real images: random inputs still show numeric drift
            inputs = np.random.default_rng(0).random((min(cfg.verify_images, 16), *shape), dtype=np.float32)
        n = min(cfg.verify_images, len(inputs))
        result.accuracy = check_engine(output, cfg.onnx_path, inputs[:n], family,
                                       None if labels is None else labels[:n])
    Path(result.summary_path).write_text(json.dumps(asdict(result), indent=2))
    return result


def describe(result: TensorRTExportResult) -> list[str]:
    """The lines `python -m components.export tensorrt` prints."""
    lines = [f"wrote {result.engine_path} ({result.family}, {result.precision}, batch {result.profile['min'][0]}/"
             f"{result.profile['opt'][0]}/{result.profile['max'][0]}, built in {result.build_seconds:.1f} s)"]
    if result.calib_cache:
        how = "reused" if result.calib_cache_reused else f"written from {result.calibration_inputs} inputs"
        lines.append(f"calibration cache: {result.calib_cache} ({how})")
    acc = result.accuracy
    if acc:
        if result.family == "blazehand":
            lines.append(f"vs onnxruntime on {int(acc['inputs'])} inputs: PCK@{PCK_AGREEMENT} agreement "
                         f"{acc['pck_agreement']:.4f}, max keypoint diff {acc['max_keypoint_px']:.2f} px, gesture "
                         f"agreement {acc['gesture_agreement']:.4f}")
            if "pck@0.1/change" in acc:
                lines.append(f"PCK@0.1 vs labels: onnxruntime {acc['pck@0.1/onnxruntime']:.4f} -> engine "
                             f"{acc['pck@0.1/engine']:.4f} (change {acc['pck@0.1/change']:+.4f})")
        elif result.family == "blazepalm":
            lines.append(f"vs onnxruntime on {int(acc['inputs'])} inputs: palm anchors above 0.5 agree "
                         f"{acc['anchor_agreement']:.4f}, mean box IoU {acc['mean_box_iou']:.4f}")
        elif "top1_agreement" in acc:
            lines.append(f"vs onnxruntime: top-1 agreement {acc['top1_agreement']:.4f}")
        for key, value in acc.items():
            if key.startswith("max_abs_diff/"):
                lines.append(f"  max |engine - onnxruntime| {key.split('/', 1)[1]:16s} {value:.3e}")
    lines.append(f"summary: {result.summary_path}")
    return lines
