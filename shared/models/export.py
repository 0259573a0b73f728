"""Export registered models to ONNX and check the result against PyTorch.

Each model is exported through its deployment wrapper (probabilities, decoded
boxes) with tensor names from `shared.models.specs`, so ONNX files, TensorRT
engines and Triton configs agree on one definition. The stage function
`export_onnx_stage` writes the model, and a JSON summary next to it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.config import option
from shared.errors import UserError
from shared.hand import NUM_GESTURES
from shared.models.qat import QatConfig, distill_for_int8
from shared.models.quantize import QUANTIZERS, RUNTIMES, float_modules_for, quantize_stage
from shared.models.quantize_palm import quantize_palm_stage
from shared.models.registry import create_model, no_gesture_head, resolve_name
from shared.models.specs import ModelSpec, spec_for


@dataclass
class OnnxExportConfig:
    model_type: str = option("blazehand_full", "registered model: blazehand_full|lite, blazepalm_full|lite, "
                                               "timm:<name>")
    weights: str = option("mediapipe", "'mediapipe', a .tflite, one of our .pth files, 'timm' (timm's "
                                       "cached ImageNet weights), a G-MAE classifier's fine-tuned best.pt "
                                       "(--model_type gmae_classifier_*) or 'none' (random init)")
    output_path: str = option("outputs/export/model.onnx", "where to write the .onnx file")
    img_size: int | None = option(None, "input side in pixels (default: the model's own, 224 hand / 192 palm)")
    batch_size: int = option(1, "batch size of the example input (the fixed batch without --dynamic_batch)")
    dynamic_batch: bool = option(False, "make the batch axis dynamic")
    opset: int = option(17, "ONNX opset version")
    verify: bool = option(False, "run the file in onnxruntime and compare with PyTorch")
    atol: float = option(1e-4, "--verify accepts |onnxruntime - PyTorch| <= atol + rtol * |PyTorch|")
    rtol: float = option(1e-6, "relative part of the --verify tolerance (pixel outputs reach ~200)")
    num_gestures: int = option(NUM_GESTURES, "gesture classes of the hand model / classes of a timm classifier")
    precision: str = option("fp32", "fp32; fp16 (weights and math in half precision, for GPUs: slower on a CPU); "
                                    "int8 (static QDQ quantization calibrated on real photos: hand crops for BlazeHand "
                                    "and the timm / G-MAE classifiers, whole photos for the palm detector; needs "
                                    "--calibration_dir)",
                      choices=["fp32", "fp16", "int8"])
    calibration_dir: list[str] = option([], "int8: folders of real photos of hands (or YOLO-pose datasets with "
                                            "keypoints, e.g. from components.autolabel) to calibrate on")
    test_dir: list[str] = option([], "int8: folders of real photos of OTHER people to verify the int8 model on "
                                     "(default: a held-out part of --calibration_dir)")
    calibration_limit: int = option(1024, "int8: use at most this many calibration crops (ranges from 1,000 crops "
                                          "held where 300 flipped a borderline hand's presence)", min=8)
    test_limit: int = option(128, "int8: verify on at most this many crops per --test_dir", min=1)
    runtime: str = option("onnxruntime", "int8: the runtime the file is verified and timed on: onnxruntime or "
                                         "openvino (run it with --backend openvino: its int8 kernels are the faster "
                                         "ones on this CPU)", choices=list(RUNTIMES))
    quantizer: str = option("onnxruntime", "int8: who places the QDQ nodes: onnxruntime (static quantization with "
                                           "the per-layer sweep; the file runs well on both runtimes) or nncf (NNCF's "
                                           "post-training quantization for OpenVINO: 10 % faster there, slow on ONNX "
                                           "Runtime)", choices=list(QUANTIZERS))
    float_modules: list[str] = option(["auto"], "int8: BlazeHand modules kept in float ('none' = every convolution "
                                      "int8; 'auto' = the quantizer's measured default: stem, first_block, "
                                      "blocks.0-2 for onnxruntime, stem, first_block for nncf): its first, "
                                      "high-resolution layers hold most of the error and little of the speed-up "
                                      "(shared.models.quantize)")
    qat_epochs: int = option(0, "int8: quantization-aware fine-tuning epochs on the calibration crops, the float "
                                "model as teacher (shared.models.qat); 0 = post-training quantization. Measured "
                                "all-int8: 2.1 -> 1.1 px mean in 6 epochs (17 min here), but the tuned weights "
                                "drift from the original's, so the float-module recipe (0.7 px) is the default",
                             min=0)
    qat_lr: float = option(2e-5, "int8: peak learning rate of the fine-tuning", min=0)
    weight_bits: int = option(7, "int8: weight bits, 7 (ONNX Runtime reduce_range: exact on every x86 CPU) or 8 "
                                 "(overflows ONNX Runtime's 16-bit sums on CPUs without AVX-512 VNNI)", choices=[7, 8])
    max_float_layers: int = option(24, "int8: keep at most this many of the most sensitive layers in float (the "
                                       "palm detector: modules, 19 in all)", min=0)
    tol_mean_px: float = option(1.0, "int8 vs fp32 landmarks: mean error tolerance, px at 224", min=0)
    tol_p99_px: float = option(4.0, "int8 vs fp32 landmarks: 99th percentile tolerance, px at 224", min=0)
    tol_photos_differ: float = option(0.0, "int8 palm detector: the fraction of held-out photos on which it may find "
                                           "another number of palms than fp32 (0 = the same hands on every photo; "
                                           "its box and keypoint error is held to --tol_mean_px / --tol_p99_px, px "
                                           "at 192)", min=0.0, max=1.0)


@dataclass
class OnnxExportResult:
    onnx_path: str
    model_type: str
    weights: str
    opset: int
    dynamic_batch: bool
    inputs: list[dict]
    outputs: list[dict]
    parameters: int
    export_seconds: float
    load_report: str = ""
    max_abs_diff: dict[str, dict[str, float]] = field(default_factory=dict)  # per output: abs, ref (--verify)
    summary_path: str = ""
    precision: str = "fp32"
    float_path: str = ""  # fp16 / int8: the float model it was made from (kept beside it)
    quantization: dict = field(default_factory=dict)  # int8: shared.models.quantize.QuantizeReport as a dict
    # BlazeHand: whether its gesture head was trained (MediaPipe's was not: the pipeline then reads the
    # gesture from the landmarks); shared.inference.backends reads it from this summary
    gesture_head_trained: bool | None = None


def build_model(model_type: str, weights: str | None, num_gestures: int = NUM_GESTURES) -> nn.Module:
    """A registered model with `weights` loaded ("none"/None = random init). Layers the weights do not
    cover (MediaPipe's BlazeHand has no gesture head) are initialised from seed 0, so that the same
    command exports the same file; the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build_model(model_type, weights, num_gestures)


def _build_model(model_type: str, weights: str | None, num_gestures: int) -> nn.Module:
    model_type = resolve_name(model_type)
    weights = None if weights in (None, "", "none", "random") else weights
    if model_type.startswith("timm:"):
        if weights == "mediapipe":
            raise UserError(f"--weights mediapipe is for the blaze* models, not {model_type}; use 'timm', a .pth "
                            "or 'none'")
        return create_model(model_type, num_classes=num_gestures, pretrained=weights == "timm",
                            pretrained_weights=None if weights == "timm" else weights)
    if model_type.startswith("blazehand"):
        return create_model(model_type, num_gestures=num_gestures, pretrained_weights=weights)
    if model_type.startswith("gmae_classifier"):
        if weights:
            raise UserError(f"--weights {weights}: a fine-tuned G-MAE classifier is read from its checkpoint by "
                            "`python -m components.export` (or pass the loaded model to export_onnx_stage)")
        return create_model(model_type, num_classes=num_gestures)
    return create_model(model_type, pretrained_weights=weights)


def export_wrapper(model: nn.Module) -> nn.Module:
    """The deployment view of a model: outputs as in its spec."""
    from shared.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD
    from shared.models.blazehand import BlazeHand, BlazeHandExport
    from shared.models.blazepalm import BlazePalm, BlazePalmExport
    from shared.models.classifier import ClassifierExport, TimmClassifier
    from shared.models.gmae import GMAEClassifier

    if isinstance(model, BlazeHand):
        return BlazeHandExport(model)
    if isinstance(model, BlazePalm):
        return BlazePalmExport(model)
    if isinstance(model, TimmClassifier):
        return ClassifierExport(model)
    if isinstance(model, GMAEClassifier):  # fine-tuned on ImageNet-normalised crops (components.tasks.gmae_finetune)
        return ClassifierExport(model, IMAGENET_MEAN, IMAGENET_STD)
    raise UserError(f"no export wrapper for {type(model).__name__}")


def _prelu_as_clamps(module: nn.Module) -> nn.Module:
    """A copy of `module` whose PReLUs read max(x, 0) + a * min(x, 0) (exactly PReLU).

    ONNX Runtime's PRelu kernel broadcasts the per-channel slope generically and cannot
    stay in its blocked (NCHWc) layout; in BlazePalm that one op took half the run time.
    Clip / Mul / Add are vectorised per channel: the palm detector runs ~1.6x faster.
    """
    import copy

    class ClampPReLU(nn.Module):
        def __init__(self, prelu: nn.PReLU) -> None:
            super().__init__()
            self.register_buffer("slope", prelu.weight.detach().reshape(1, -1, 1, 1).clone())  # [1, C, 1, 1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x, min=0) + self.slope * torch.clamp(x, max=0)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.PReLU):
                setattr(parent, name, ClampPReLU(child))
            else:
                swap(child)

    if not any(isinstance(m, nn.PReLU) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    swap(module)
    return module


def export_onnx(wrapper: nn.Module, spec: ModelSpec, output_path: str | Path, batch_size: int = 1,
                dynamic_batch: bool = False, opset: int = 17, prelu_as_clamps: bool = True) -> Path:
    """Trace `wrapper` on a random [batch, 3, S, S] input and write an ONNX file named by `spec`
    (PReLUs written as clamps unless `prelu_as_clamps` is False, see `_prelu_as_clamps`)."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = (_prelu_as_clamps(wrapper) if prelu_as_clamps else wrapper).eval()
    example = torch.rand(batch_size, *spec.inputs[0].shape)
    axes = {name: {0: "batch"} for name in spec.input_names + spec.output_names} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns about shape arithmetic that it turns into
        # constants; our spatial sizes are fixed per model, so that is intended.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(output_path), input_names=spec.input_names,
                          output_names=spec.output_names, opset_version=opset, dynamic_axes=axes,
                          do_constant_folding=True, dynamo=False)
    return output_path


def verify_onnx(onnx_path: str | Path, wrapper: nn.Module, spec: ModelSpec, batch_size: int = 2,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """Per output on a random batch: max |onnxruntime - PyTorch| ("abs") and the largest
    reference magnitude ("ref"), so a caller can apply atol + rtol * |ref|."""
    import onnxruntime as ort

    x = torch.rand(batch_size, *spec.inputs[0].shape, generator=torch.Generator().manual_seed(seed))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(spec.output_names, {spec.input_names[0]: x.numpy()})
    with torch.no_grad():
        want = wrapper.eval()(x)
    want = want if isinstance(want, (tuple, list)) else (want,)
    if len(got) != len(want) or any(g.shape != tuple(w.shape) for g, w in zip(got, want)):
        raise UserError(f"{onnx_path}: outputs {[g.shape for g in got]} differ in shape from PyTorch's "
                        f"{[tuple(w.shape) for w in want]}")
    return {name: {"abs": float(np.abs(g - w.numpy()).max()), "ref": float(np.abs(w.numpy()).max())}
            for name, g, w in zip(spec.output_names, got, want)}


def to_fp16(float_path: Path, out_path: Path) -> dict[str, float]:
    """`float_path` with float16 weights and math (inputs and outputs stay float32) written to
    `out_path`; returns its largest |fp16 - fp32| output difference on a random input."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (float_path, out_path)]
    inp = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    a, b = (s.run(None, {inp.name: x}) for s in sessions)
    return {"abs": float(max(np.abs(u.astype(np.float64) - v).max() for u, v in zip(a, b))),
            "ref": float(max(np.abs(u).max() for u in a))}


def int8_fine_tune(model: nn.Module, spec: Any, cfg: OnnxExportConfig, crops: np.ndarray, val: np.ndarray,
                   final: Path) -> Path:
    """Quantization-aware fine-tuning of `model` on the calibration crops (shared.models.qat), exported
    beside the output as `<stem>_qat_fp32.onnx`: the float file that is then quantized."""
    qcfg = QatConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, weight_bits=cfg.weight_bits,
                     float_modules=float_modules_for(cfg.float_modules, cfg.quantizer))
    tuned = distill_for_int8(model, crops, qcfg, val=val)
    return export_onnx(export_wrapper(tuned), spec, final.with_name(f"{final.stem}_qat_fp32{final.suffix}"),
                       cfg.batch_size, cfg.dynamic_batch, cfg.opset)


def within_tolerance(diff: dict[str, float], atol: float, rtol: float) -> bool:
    return diff["abs"] <= atol + rtol * diff["ref"]


def gesture_head_trained(model: nn.Module, weights: str) -> bool | None:
    """BlazeHand: whether `weights` gave it a trained gesture head (None: not a BlazeHand)."""
    if not hasattr(model, "gesture"):
        return None
    if no_gesture_head(weights):
        return False
    report = getattr(model, "load_report", None)
    return not any(k.startswith("gesture.") for k in getattr(report, "missing_keys", []))


def export_onnx_stage(cfg: OnnxExportConfig, real_crops: Callable[..., Any] | None = None,
                      gestures: Callable[[np.ndarray], np.ndarray] | None = None,
                      end_to_end: Callable[[Path], dict] | None = None,
                      model: nn.Module | None = None,
                      real_frames: Callable[..., Any] | None = None) -> OnnxExportResult:
    """Build, load, export, optionally verify; write `<output>.json` next to the model.
    `--precision int8` needs `real_crops` (the calibration crop reader) and checks gestures with
    `gestures` (landmarks -> gesture ids) and `end_to_end` (crop model -> the pipeline's gesture
    accuracy on labelled photos, `shared.inference.gesture_eval.end_to_end_check`) when given;
    components.export passes all three, and `real_frames` (the letterboxed-photo reader the palm
    detector is calibrated on, `shared.inference.real_crops.real_frames`). `model`: a model already
    loaded (a fine-tuned G-MAE classifier read from its checkpoint) instead of building
    `cfg.model_type` with `cfg.weights`."""
    start = time.perf_counter()
    model = (model if model is not None else build_model(cfg.model_type, cfg.weights, cfg.num_gestures)).eval()
    if cfg.img_size and cfg.model_type.startswith("blazepalm") and cfg.img_size != model.img_size:
        raise UserError(f"--img_size {cfg.img_size}: the palm model's anchors are fixed to {model.img_size}")
    if cfg.batch_size < 1:
        raise UserError(f"--batch_size {cfg.batch_size}: must be >= 1")
    try:
        spec = spec_for(resolve_name(cfg.model_type), model, cfg.img_size)
    except KeyError:
        raise UserError(f"--model_type {cfg.model_type}: no export spec yet; add one to "
                        "shared/models/specs.py") from None
    if cfg.precision == "int8" and real_crops is None:
        raise ValueError("precision int8: export_onnx_stage needs real_crops, the calibration crop reader "
                         "(shared.inference.real_crops.real_crops); components.export passes it")
    if cfg.precision == "int8" and not cfg.calibration_dir:
        raise UserError("--precision int8 needs --calibration_dir: a folder of real photos of hands (or a "
                        "components.autolabel dataset); the int8 ranges are measured on them")
    classifier = cfg.model_type.startswith(("timm:", "gmae_classifier"))
    palm = resolve_name(cfg.model_type).startswith("blazepalm")
    if cfg.precision == "int8" and not (cfg.model_type.startswith("blazehand") or classifier or palm):
        raise UserError(f"--precision int8 is implemented for BlazeHand, BlazePalm and the timm / G-MAE crop "
                        f"classifiers, not {cfg.model_type}; export it with --precision fp32")
    if cfg.precision == "int8" and palm and real_frames is None:
        raise ValueError("precision int8 of the palm detector: export_onnx_stage needs real_frames, the letterboxed "
                         "photo reader (shared.inference.real_crops.real_frames); components.export passes it")
    if cfg.precision == "int8" and (classifier or palm) and cfg.qat_epochs:
        raise UserError("--qat_epochs: quantization-aware fine-tuning is implemented for BlazeHand; leave it out "
                        f"for {cfg.model_type}")
    wrapper = export_wrapper(model)
    final = Path(cfg.output_path)
    # fp16 / int8: the float model is exported (and verified) beside the output and kept.
    float_out = final if cfg.precision == "fp32" else final.with_name(f"{final.stem}_fp32{final.suffix}")
    # OpenVINO fuses a native PReLU into its int8 convolutions (the palm detector's activations); ONNX
    # Runtime wants them as clamps (`_prelu_as_clamps`)
    native_prelu = palm and cfg.precision == "int8" and cfg.runtime == "openvino"
    path = export_onnx(wrapper, spec, float_out, cfg.batch_size, cfg.dynamic_batch, cfg.opset,
                       prelu_as_clamps=not native_prelu)
    diffs: dict[str, dict[str, float]] = {}
    if cfg.verify:
        # A dynamic-batch file is checked at a batch size other than the traced one.
        diffs = verify_onnx(path, wrapper, spec, batch_size=cfg.batch_size + 1 if cfg.dynamic_batch else cfg.batch_size)
    quantization: dict = {}
    head = gesture_head_trained(model, cfg.weights)

    def side_summary(onnx_path: str | Path, precision: str, **extra: Any) -> None:
        """`<file>.json` beside an ONNX file other than the output: what it is, and whether its gesture
        head was trained (shared.inference.backends reads that when the file is run)."""
        Path(onnx_path).with_suffix(".json").write_text(json.dumps(
            {"onnx_path": str(onnx_path), "model_type": cfg.model_type, "weights": cfg.weights,
             "precision": precision, "gesture_head_trained": head, **extra}, indent=2))

    if path != final:
        # The kept float model gets its own summary (the int8 check below runs the pipeline on it, and so may
        # a user).
        side_summary(path, "fp32", dynamic_batch=cfg.dynamic_batch)
    if cfg.precision == "fp16":
        diffs["fp16"] = to_fp16(path, final)
    elif cfg.precision == "int8":
        tune = (lambda x, val: int8_fine_tune(model, spec, cfg, x, val, final)) if cfg.qat_epochs else None
        side_summary(final, "int8")  # for the checks that run it; the full summary replaces it below
        if classifier:
            quantization = quantize_stage(cfg, path, final, real_crops, kind="classifier", size=spec.img_size)
        elif palm:
            quantization = quantize_palm_stage(cfg, path, final, real_frames, size=spec.img_size)
        else:
            quantization = quantize_stage(cfg, path, final, real_crops, gestures, tune=tune, end_to_end=end_to_end)
    result = OnnxExportResult(
        onnx_path=str(final), model_type=cfg.model_type, weights=cfg.weights, opset=cfg.opset,
        dynamic_batch=cfg.dynamic_batch,
        inputs=[{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.inputs],
        outputs=[{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.outputs],
        parameters=sum(p.numel() for p in model.parameters()),
        export_seconds=round(time.perf_counter() - start, 2),
        load_report=str(getattr(model, "load_report", "")), max_abs_diff=diffs,
        summary_path=str(final.with_suffix(".json")), precision=cfg.precision,
        float_path=str(path) if path != final else "", quantization=quantization, gesture_head_trained=head)
    Path(result.summary_path).write_text(json.dumps(asdict(result), indent=2))
    if quantization.get("failed"):
        # the rejected file keeps a summary of its own: what it is (a user may still run it to look) and why not
        side_summary(quantization["int8_path"], "int8", rejected=quantization["failed"])
        data = "photos" if palm else "crops"
        raise UserError(f"{final}: not written: the int8 model misses a tolerance on real {data} "
                        f"({quantization['failed']}); the float model is {path}, the rejected int8 model "
                        f"{quantization['int8_path']}, the report {result.summary_path}. "
                        f"{'' if classifier else 'Allow more float layers (--max_float_layers), '}calibrate on more "
                        "photos, or keep --precision fp32")
    failed = [name for name, d in diffs.items() if name != "fp16" and not within_tolerance(d, cfg.atol, cfg.rtol)]
    if failed:
        d = diffs[failed[0]]
        raise UserError(f"{path}: onnxruntime differs from PyTorch by {d['abs']:.2e} on {failed[0]!r} "
                        f"(> {cfg.atol} + {cfg.rtol} * {d['ref']:.1f}); see {result.summary_path}")
    return result
