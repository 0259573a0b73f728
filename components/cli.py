"""`handops`: one command whose sub-commands are the stages.

    handops infer --input_dir photos/ --output_dir out/     # = python -m components.infer ...
    handops pipeline --offline --preset tiny                # = python pipelines/full.py ...
    handops STAGE --help                                    # the stage's own flags

Each sub-command runs the stage's own `main` with the rest of the command line, so flags,
config files, messages and exit codes are the stage's (bad input: one `error:` line, exit 2).
"""

from __future__ import annotations

import importlib
import sys

from shared.errors import run_cli

# sub-command -> (module with main(argv), one line of help); a new stage adds one entry.
STAGES: dict[str, tuple[str, str]] = {
    "pipeline": ("pipelines.full", "the whole pipeline: ingest -> train -> evaluate -> export -> deploy (ClearML)"),
    "kfp": ("pipelines.kfp", "the same pipeline compiled for Kubeflow Pipelines v2"),
    "ingest": ("components.ingest", "one normalised YOLO-pose dataset from synthetic, folder, Roboflow or HaGRID data"),
    "autolabel": ("components.autolabel", "real photos labelled by the MediaPipe teacher, with a contact sheet"),
    "gesture-model": ("components.gesture_model", "rebuild the landmark gesture model from folders of gestures"),
    "augment": ("components.augment", "offline augmentation of a dataset"),
    "train": ("components.train", "training: detector, classifier, keypoints, multitask, gmae_finetune"),
    "pretrain": ("components.pretrain", "G-MAE self-supervised pretraining"),
    "relabel": ("components.relabel", "set gestures from a classifier"),
    "classify": ("components.classify", "gesture classifier evaluation / folder prediction"),
    "evaluate": ("components.evaluate", "report and quality gates"),
    "infer": ("components.infer", "hands, keypoints, gestures on photos (static) or videos (tracked)"),
    "export": ("components.export", "ONNX (fp32 / fp16 / int8) and TensorRT"),
    "deploy": ("components.deploy", "write a versioned Triton model repository"),
    "serve": ("components.serve", "run the bundled tritonserver"),
    "client": ("components.client", "stream frames to Triton"),
    "weights": ("components.weights", "MediaPipe's hand models: fetch, convert, describe"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    lines = [__doc__.strip(), "", "sub-commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        print(f"error: unknown sub-command {name!r}; one of: {', '.join(STAGES)} (handops --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[name][0])
    run_cli(module.main, rest)  # exits with the stage's status
    return 0


def entry() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
