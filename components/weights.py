"""Fetch MediaPipe's hand models and convert them to our PyTorch weights.

    python -m components.weights fetch [--cache_dir .cache/mediapipe]
    python -m components.weights convert [--models blazehand_full blazepalm_full ...]
        [--source path/to/mediapipe.whl|model.tflite] [--output_dir .cache/mediapipe]
    python -m components.weights describe --network hand_landmark_full [--source ...]

`fetch` is a set-up step (`make weights`): it downloads the mediapipe==0.10.21
wheel from PyPI with pip (no dependencies, never installed) into the cache.
`convert` writes one `<model_type>.pth` state dict per model; load one with
`--pretrained_weights <file>.pth`, or say `mediapipe` to convert on the fly.
`describe` prints a TFLite graph op by op (how the block tables were read off).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from shared.errors import UserError, run_cli
from shared.models.mediapipe_import import (
    MEDIAPIPE_VERSION,
    WHEEL_MEMBERS,
    default_cache_dir,
    describe_graph,
    fetch_wheel,
    mediapipe_state_dict,
    parse_tflite,
    read_tflite,
)

CONVERTIBLE = ("blazehand_full", "blazehand_lite", "blazepalm_full", "blazepalm_lite")


def fetch(cache_dir: str | Path | None = None) -> Path:
    return fetch_wheel(cache_dir)


def convert(models: list[str], output_dir: str | Path | None = None, source: str | None = None,
            cache_dir: str | Path | None = None) -> dict[str, str]:
    """Write `<output_dir>/<model>.pth` for each model; returns model -> path."""
    from shared.models.registry import create_model

    out_dir = Path(output_dir) if output_dir else default_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in models:
        if name not in CONVERTIBLE:
            raise UserError(f"--models {name}: not a MediaPipe model; choose from {', '.join(CONVERTIBLE)}")
        model = create_model(name)
        state = mediapipe_state_dict(model, source, cache_dir)
        # Our new layers (the gesture head) keep their fresh initialisation so the
        # file loads strictly into a model with the default number of gestures.
        full = model.state_dict()
        full.update(state)
        path = out_dir / f"{name}.pth"
        torch.save(full, path)
        written[name] = str(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help=f"download the mediapipe=={MEDIAPIPE_VERSION} wheel into the cache")
    p_fetch.add_argument("--cache_dir", default=None, help=f"cache folder (default: {default_cache_dir()})")
    p_conv = sub.add_parser("convert", help="write our .pth files from MediaPipe's TFLite models")
    p_conv.add_argument("--models", nargs="+", default=list(CONVERTIBLE), help="model types to convert")
    p_conv.add_argument("--source", default=None, help="a mediapipe wheel or a .tflite (default: the cached wheel)")
    p_conv.add_argument("--output_dir", default=None, help="where to write <model>.pth (default: the cache)")
    p_conv.add_argument("--cache_dir", default=None, help="cache folder holding the wheel")
    p_desc = sub.add_parser("describe", help="print a MediaPipe TFLite graph op by op")
    p_desc.add_argument("--network", choices=list(WHEEL_MEMBERS), default="hand_landmark_full")
    p_desc.add_argument("--source", default=None, help="a mediapipe wheel or a .tflite (default: the cached wheel)")
    p_desc.add_argument("--cache_dir", default=None, help="cache folder holding the wheel")
    args = parser.parse_args(argv)
    if args.command == "describe":
        graph = parse_tflite(read_tflite(args.network, args.source, args.cache_dir))
        print(describe_graph(graph))
        print(f"ops: {graph.op_counts()}")
        return 0
    if args.command == "fetch":
        print(f"mediapipe wheel: {fetch(args.cache_dir)}")
        return 0
    if args.source and args.source.endswith(".tflite") and len(args.models) != 1:
        raise UserError(f"--source {args.source}: a .tflite holds one network; pass exactly one --models")
    written = convert(args.models, args.output_dir, args.source, args.cache_dir)
    print(json.dumps(written, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
