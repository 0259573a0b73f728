"""Export a model for deployment.

    python -m components.export onnx --model_type blazehand_full --weights mediapipe \\
        --output_path outputs/export/blazehand_full.onnx --dynamic_batch --verify
    python -m components.export onnx --model_type blazehand_full --precision int8 \\
        --calibration_dir ../shared/data/hagrid_train --test_dir ../shared/data/hagrid_sample \\
        --output_path outputs/export/blazehand_full_int8.onnx

`--precision int8` (BlazeHand): ONNX Runtime static quantization (QDQ, per-channel s8
weights, u8 activations) calibrated on hand crops the MediaPipe teacher cuts from real
photos; the layers whose quantization moves the landmarks most stay in float (a per-layer
sensitivity sweep), and the result is verified against the float model on held-out real
crops of other people (landmark px mean / p99, hands found), and the whole pipeline's gesture
accuracy on the labelled test photos (HaGRID or YOLO layout) within 0.01 of the float model's,
with the same number of hands on every photo. A model that misses a tolerance is not written:
exit 2, naming the tolerance; the float model is kept.

The palm detector (`--model_type blazepalm_full`) is calibrated on the photos themselves,
letterboxed as it sees them; its sweep keeps whole modules in float, and it is verified palm
for palm after its post-processing (the same number of palms on every held-out photo, or
`--tol_photos_differ`; box and keypoint px at 192). The timm / G-MAE classifiers: every layer
but the head int8, top-1 agreement >= 0.99 on held-out crops.

One subcommand per target format (`onnx` now; `tensorrt` plugs in the same way:
a config dataclass, a stage function in shared/, a `_run_<target>` here).
Inputs are NCHW float RGB in [0, 1]; tensor names come from shared/models/specs.py.
A JSON summary is written next to the exported file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.config import add_config_args, check_writable, load_config
from shared.errors import UserError, run_cli
from shared.inference.gesture_eval import end_to_end_check
from shared.inference.gestures import landmark_gesture_reader
from shared.inference.real_crops import real_crops, real_frames
from shared.models.export import OnnxExportConfig, export_onnx_stage
from shared.models.tensorrt import TensorRTExportConfig, describe, export_tensorrt


def _run_onnx(args: argparse.Namespace) -> int:
    cfg = load_config(OnnxExportConfig, args.config, args)
    check_writable(cfg.output_path, "--output_path", "file")  # before the model is built
    check_writable(Path(cfg.output_path).with_suffix(".json"), "--output_path (its summary)", "file")
    # int8: the pipeline's gesture (the shipped model) on each side's landmarks, and the whole pipeline's
    # gesture accuracy on the labelled test photos, must stay the float model's
    int8 = cfg.precision == "int8"
    result = export_onnx_stage(cfg, real_crops, gestures=landmark_gesture_reader() if int8 else None,
                               end_to_end=end_to_end_check(cfg.test_dir, backend=cfg.runtime) if int8 else None,
                               model=_fine_tuned_classifier(cfg), real_frames=real_frames)
    print(f"wrote {result.onnx_path} ({result.model_type}, {result.parameters:,} parameters, opset {result.opset}"
          f"{', dynamic batch' if result.dynamic_batch else ''})")
    if result.load_report:
        print(f"weights: {result.load_report}")
    for name, diff in result.max_abs_diff.items():
        if name == "fp16":
            print(f"fp16: max |fp16 - fp32| = {diff['abs']:.2e} on a random input (outputs up to {diff['ref']:.3g}); "
                  f"float model kept at {result.float_path}")
            continue
        print(f"verify {name:16s} max |onnxruntime - torch| = {diff['abs']:.2e} (outputs up to {diff['ref']:.3g})")
    if result.precision == "int8":
        print(f"int8 model {result.onnx_path} (float model kept at {result.float_path})")
    print(f"summary: {result.summary_path}")
    return 0


def _fine_tuned_classifier(cfg):
    """A fine-tuned G-MAE classifier (`--model_type gmae_classifier_* --weights best.pt`), read from its
    checkpoint (the size and switches it was trained with come from the file); None otherwise."""
    if not cfg.model_type.startswith("gmae_classifier") or cfg.weights in ("", "none", "random"):
        return None
    if cfg.weights == "mediapipe":  # the export's default, which only the blaze* models have
        raise UserError(f"--model_type {cfg.model_type} needs --weights: the best.pt of its fine-tuning "
                        "(python -m components.train gmae_finetune ...), or 'none' for random weights")
    from shared.training.callbacks import load_checkpoint

    model, ckpt = load_checkpoint(cfg.weights)
    if ckpt.get("model_name") and ckpt["model_name"] != cfg.model_type:
        raise UserError(f"--weights {cfg.weights} holds {ckpt['model_name']}, not {cfg.model_type}; pass "
                        f"--model_type {ckpt['model_name']}")
    return model


def _run_tensorrt(args: argparse.Namespace) -> int:
    cfg = load_config(TensorRTExportConfig, args.config, args)
    check_writable(cfg.output_path, "--output_path", "file")  # before the engine is built (minutes)
    for line in describe(export_tensorrt(cfg, real_crops)):
        print(line)
    return 0


# target name -> (config dataclass, runner); a new target adds one entry.
TARGETS = {"onnx": (OnnxExportConfig, _run_onnx), "tensorrt": (TensorRTExportConfig, _run_tensorrt)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="target", required=True, metavar="{" + ",".join(TARGETS) + "}")
    for name, (cls, runner) in TARGETS.items():
        p = sub.add_parser(name, help=f"export to {name}")
        p.add_argument("--config", help=f"YAML with {cls.__name__} keys (flags override it)")
        add_config_args(p, cls)
        p.set_defaults(run=runner)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    run_cli(main)
