"""Batch inference with tracking (the seed's batch_inference): frames -> hands, ids, gestures.

    python -m components.infer --input_dir ../shared/data/hagrid_sample/images/palm --output_dir outputs/infer
    python -m components.infer --video clip.mp4 --output_dir outputs/clip --draw_skeleton
    python -m components.infer --input_dir frames/ --sequence --output_dir out/ --detector yolo --yolo_model best.pt \\
        --model_weights checkpoints/blazehand.pth --max_hands 2

Modes: a folder is a set of unrelated photos, each processed on its own (static mode:
MediaPipe's static_image_mode, the detector on every image, no track ids); a `--video`, or
a folder of ordered frames with `--sequence`, is tracked (ids, landmark ROIs;
`--smooth_keypoints` adds One-Euro smoothing). `--static` processes a video frame by frame too.

Defaults are the fast ones: ONNX Runtime (the networks are exported to ONNX once, from the
cached MediaPipe weights, into .cache/exports; nothing is downloaded) on 1 CPU thread.

Defaults need nothing trained: MediaPipe's palm detector and hand-landmark network
(`--detector blazepalm --model_weights mediapipe`), and the shipped landmark gesture model
(`--gesture_model default`, shared/weights/gesture_landmarks) for every hand's gesture; a
hand below `--gesture_threshold` is "unknown" with its score. A trained `.pth` with its own
gesture head takes over the gesture.

`--input_dir` also takes one image or a quoted glob pattern ('shots/**/*.jpg'). Each run gets
its own folder: when `--output_dir` already holds an earlier run, the next free `<name>2`,
`<name>3`, ... is used (said on stderr) unless `--exist_ok`.

Writes to `--output_dir`: `results.jsonl` (one line per frame: {"frame", "image", "hands":
[{"xyxy", "score", "keypoints", "gesture", "gesture_score", "handedness", "track_id"}]}, pixels
of the original image), annotated images (`annotated/`) or `annotated.mp4`, `tracks.txt`
(MOTChallenge), `summary.json` (frames, hands, fps, per-stage ms) and `infer_config.yaml`.
A frame that cannot be decoded is reported and skipped; the run goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from shared.config import (
    FLAGS,
    add_config_args,
    build_config,
    check_writable,
    config_to_dict,
    load_config,
    option,
    option_like,
    read_yaml,
    save_config,
)
from shared.errors import UserError, run_cli
from shared.inference.pipeline import HandPipeline, PipelineConfig


@dataclass
class InferConfig:
    input_dir: str = option("", "folder of images, one image, or a glob pattern ('photos/*.jpg', quoted): unrelated "
                                "photos, each on its own (static mode); with --sequence the frames of one video, "
                                "tracked in sorted order")
    video: str = option("", "a video file, or a camera index (0, 1, ...)")
    output_dir: str = option("outputs/infer", "where results.jsonl, annotated media, tracks.txt, summary.json go; "
                                              "a folder holding an earlier run gets a fresh sibling (infer2, ...)")
    exist_ok: bool = option(False, "write into --output_dir even when it holds an earlier run (its files are "
                                   "replaced, others stay)")
    # The HandPipeline settings a run passes on keep their one home in PipelineConfig (help, default,
    # choices); more of them go in the YAML's `pipeline:` mapping.
    detector: str = option_like(PipelineConfig, "detector")
    yolo_model: str = option_like(PipelineConfig, "yolo_model")
    palm_onnx: str = option_like(PipelineConfig, "palm_onnx")
    model_weights: str = option_like(PipelineConfig, "model_weights")
    model_type: str = option_like(PipelineConfig, "model_type")
    backend: str = option_like(PipelineConfig, "backend")
    precision: str = option_like(PipelineConfig, "precision")
    img_size: int = option_like(PipelineConfig, "img_size")
    max_hands: int = option_like(PipelineConfig, "max_hands")
    expand_ratio: float = option_like(PipelineConfig, "expand_ratio")
    grayscale: bool = option_like(PipelineConfig, "grayscale")
    draw_skeleton: bool = option(False, "draw the hand skeleton on the annotated output")
    gesture_model: str = option_like(PipelineConfig, "gesture_model")
    gesture_threshold: float = option_like(PipelineConfig, "gesture_threshold")
    close_up_steps: int = option_like(PipelineConfig, "close_up_steps")
    track_max_age: int = option_like(PipelineConfig, "track_max_age")
    track_iou_threshold: float = option_like(PipelineConfig, "track_iou_threshold")
    smooth_keypoints: bool = option_like(PipelineConfig, "smooth_keypoints")
    sequence: bool = option(False, "--input_dir holds the ordered frames of one video: track them (ids, landmark "
                                   "ROIs, gesture smoothing) instead of processing each image on its own")
    static: bool = option(False, "--video: every frame independent, detector each frame, no tracking (MediaPipe's "
                                 "static_image_mode; a folder without --sequence is static anyway)")
    batch_size: int = option(1, "static mode: images per detector / crop-model call")
    device: str = option_like(PipelineConfig, "device")
    threads: int = option_like(PipelineConfig, "threads")
    triton_url: str = option_like(PipelineConfig, "triton_url")
    annotate: bool = option(True, "write annotated images / annotated.mp4")
    pipeline: dict = option({}, "more HandPipeline settings (YAML only), e.g. {detect_interval: 10, min_presence: "
                                "0.6}; see shared/inference/pipeline.py")


# InferConfig fields that are HandPipeline settings, passed on as they are (`static` is decided by is_static).
PASSED_ON = tuple(f.name for f in dataclasses.fields(InferConfig)
                  if f.name in PipelineConfig.__dataclass_fields__ and f.name != "static")


@dataclass
class InferResult:
    output_dir: str
    results_jsonl: str
    tracks_txt: str
    summary_json: str
    annotated: str
    frames: int  # frames processed
    skipped: int  # frames that could not be decoded
    hands: int
    fps: float
    stage_ms: dict = field(default_factory=dict)


def is_static(cfg: InferConfig) -> bool:
    """Static mode (each image on its own) for a folder of photos or with --static; tracking
    for a video or a folder of frames given --sequence."""
    if cfg.sequence and cfg.static:
        raise UserError("--sequence (track the frames) and --static (each frame on its own) contradict; pass one")
    if cfg.sequence and not cfg.input_dir:
        raise UserError("--sequence applies to --input_dir (a folder of ordered frames); a --video is tracked anyway")
    return cfg.static or (bool(cfg.input_dir) and not cfg.sequence)


def pipeline_config(cfg: InferConfig) -> PipelineConfig:
    """The HandPipeline settings of an inference run (flags first, then the YAML extras)."""
    values = {name: getattr(cfg, name) for name in PASSED_ON}
    values["static"] = is_static(cfg)
    # The YAML extras through the config loader's checks: unknown keys, types and ranges
    return build_config(PipelineConfig, [(FLAGS, values), ("pipeline", cfg.pipeline)])


def _check_paths(cfg: InferConfig) -> None:
    if cfg.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {cfg.batch_size}")
    is_static(cfg)  # --sequence / --static contradictions, before anything is opened
    check_writable(cfg.output_dir, "--output_dir")
    if cfg.input_dir and not any(c in cfg.input_dir for c in "*?[") and Path(cfg.input_dir).is_dir():
        inp, out = Path(cfg.input_dir).resolve(), Path(cfg.output_dir).resolve()
        if out == inp or inp in out.parents:
            raise UserError(f"--output_dir {cfg.output_dir} lies inside --input_dir {cfg.input_dir}; choose a "
                            "separate folder (inputs are never modified, and outputs would be read as frames)")


def run_dir(out: Path, exist_ok: bool) -> Path:
    """`out`, or when it already holds files and `exist_ok` is off, the first free `out2`, `out3`, ...
    so that one run's files never mix with an earlier run's."""
    if exist_ok or not out.is_dir() or not any(out.iterdir()):
        return out
    n = 2
    while (fresh := out.with_name(f"{out.name}{n}")).exists() and any(fresh.iterdir()):
        n += 1
    print(f"{out} holds an earlier run: writing to {fresh} (--exist_ok writes into {out})", file=sys.stderr)
    return fresh


def run_inference(cfg: InferConfig) -> InferResult:
    """The stage: read frames, run the hand pipeline, write results, tracks, media and a summary."""
    from shared.drawing import Annotator
    from shared.inference.io import AnnotatedWriter, MotWriter, ResultsWriter, open_source, write_json

    _check_paths(cfg)
    source = open_source(cfg.input_dir, cfg.video)  # bad paths fail here, before any output exists
    pipe = HandPipeline(pipeline_config(cfg))  # ... and bad weights / models here
    out = run_dir(Path(cfg.output_dir), cfg.exist_ok)
    out.mkdir(parents=True, exist_ok=True)
    is_video = bool(cfg.video)
    fps_in = source.fps or pipe.cfg.fps

    results_w = ResultsWriter(out / "results.jsonl")
    mot_w = MotWriter(out / "tracks.txt")
    annotated_path = out / ("annotated.mp4" if is_video else "annotated")
    media_w = AnnotatedWriter(annotated_path, video=is_video, fps=fps_in) if cfg.annotate else None
    annotator = Annotator(draw_skeleton=cfg.draw_skeleton)

    frames = hands = 0
    skipped: list[dict] = []
    # Static mode batches frames into one model call; tracking is sequential.
    batch_size = cfg.batch_size if pipe.cfg.static else 1
    start = time.perf_counter()
    progress = tqdm(total=len(source) or None, unit="frame", desc="infer", dynamic_ncols=True)
    try:
        batch = []
        for frame in source:
            progress.update(1)
            if frame.image is None:
                progress.write(f"warning: {frame.error}; skipped", file=sys.stderr)
                skipped.append({"frame": frame.index, "image": frame.name, "reason": frame.error})
                continue
            batch.append(frame)
            if len(batch) < batch_size:
                continue
            frames, hands = _run_batch(pipe, batch, results_w, mot_w, media_w, annotator, frames, hands)
            batch = []
            progress.set_postfix(hands=hands, refresh=False)
        if batch:
            frames, hands = _run_batch(pipe, batch, results_w, mot_w, media_w, annotator, frames, hands)
    finally:
        progress.close()
        results_w.close()
        mot_w.close()
        if media_w is not None:
            media_w.close()
    wall = time.perf_counter() - start

    stage_ms = {k: round(v, 3) for k, v in pipe.mean_timing().items()}
    summary = {
        "source": str(cfg.video or cfg.input_dir),
        "frames": frames,
        "skipped": len(skipped),
        "skipped_frames": skipped,
        "hands": hands,
        "hands_per_frame": round(hands / frames, 4) if frames else 0.0,
        "fps": round(frames / wall, 3) if wall > 0 else 0.0,
        "pipeline_fps": round(1000.0 / stage_ms["total"], 3) if stage_ms.get("total") else 0.0,
        "stage_ms": stage_ms,
        "detector_calls": pipe.detector_calls,
        "backend": cfg.backend,
        "detector": cfg.detector,
        "threads": pipe.cfg.runtime_threads(),  # 0: the runtime's default, every core
        "mode": "static" if pipe.cfg.static else "tracking",
        "gesture_head": pipe.crop_model.gesture_trained,
        "gesture_model": None if pipe.gesture_model is None else (pipe.gesture_model.card or {}).get("name", "custom"),
        "config": config_to_dict(pipe.cfg),
    }
    write_json(out / "summary.json", summary)
    save_config(cfg, out / "infer_config.yaml")
    return InferResult(str(out), str(out / "results.jsonl"), str(out / "tracks.txt"), str(out / "summary.json"),
                       str(annotated_path) if media_w is not None else "", frames, len(skipped), hands,
                       summary["fps"], stage_ms)


def _run_batch(pipe, batch, results_w, mot_w, media_w, annotator, frames: int, hands: int) -> tuple[int, int]:
    if len(batch) == 1:
        outs = [pipe.process(batch[0].image, timestamp=batch[0].timestamp)]
    else:
        outs = pipe.process_batch([f.image for f in batch])
    for frame, res in zip(batch, outs):
        results_w.write(frame.index, frame.name, res)
        mot_w.write(frame.index, res)
        if media_w is not None:
            media_w.write(frame.name, annotator.annotate(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), res))
        hands += len(res)
    return frames + len(batch), hands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with InferConfig keys, flat or under an `infer:` section "
                                         "(e.g. configs/inference.yaml); flags override it")
    add_config_args(parser, InferConfig, skip=("pipeline",))
    args = parser.parse_args(argv)
    section = "infer" if args.config and "infer" in read_yaml(args.config) else None
    cfg = load_config(InferConfig, args.config, args, section=section)
    result = run_inference(cfg)
    print(f"{result.frames} frame(s), {result.hands} hand(s), {result.skipped} skipped, {result.fps:.1f} fps "
          f"(pipeline {result.stage_ms.get('total', 0.0):.1f} ms/frame)")
    from shared.inference.io import report_outputs

    return report_outputs(result)


if __name__ == "__main__":
    run_cli(main)
