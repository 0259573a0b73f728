"""Stream a video or an image folder through the served hand pipeline (Triton, gRPC).

    python -m components.serve --triton_repo triton_repo &          # prints "ready: ... grpc 127.0.0.1:8001"
    python -m components.client --url 127.0.0.1:8001 --video clip.mp4 --stream_id 1 --output_dir outputs/clip
    python -m components.client --url 127.0.0.1:8001 --input_dir frames/ --stream_id 2 --output_dir outputs/cam2

The frames are one stream: each is one request to the stateful `hand_pipeline` model with
`sequence_id = --stream_id`, the first carrying START and the last END (the client reads one
frame ahead to know which is last), so the server keeps this stream's tracks apart from
every other stream's. Writes the same outputs as `python -m components.infer`:
`results.jsonl`, `tracks.txt` (MOTChallenge), annotated images (`annotated/`) or
`annotated.mp4`, and `summary.json` (frames, hands, fps, request latency p50/p95).
A frame that cannot be decoded, or that the server rejects, is reported and skipped.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from shared.config import add_config_args, check_writable, load_config, option, save_config
from shared.errors import UserError, run_cli
from shared.serving.models import MODEL_PIPELINE
from shared.serving.triton_backend import DEFAULT_URL


@dataclass
class ClientConfig:
    url: str = option(DEFAULT_URL, "the Triton server's gRPC address (host:port)")
    input_dir: str = option("", "folder of images, sent in sorted order as one stream")
    video: str = option("", "a video file, or a camera index (0, 1, ...)")
    stream_id: int = option(1, "this stream's id (Triton sequence id, >= 1); concurrent streams need different ids")
    output_dir: str = option("outputs/client", "where results.jsonl, tracks.txt, annotated media, summary.json go")
    model: str = option(MODEL_PIPELINE, "the served pipeline model")
    timeout_s: float = option(30.0, "give up on one request after this long")
    shared_memory: str = option("auto", "frames through system shared memory: auto (when the server is on this "
                                        "host), on, or off (inside the gRPC message)",
                                metadata={"choices": ["auto", "on", "off"]})
    draw_skeleton: bool = option(False, "draw the hand skeleton on the annotated output")
    annotate: bool = option(True, "write annotated images / annotated.mp4")


@dataclass
class ClientResult:
    output_dir: str
    results_jsonl: str
    tracks_txt: str
    summary_json: str
    annotated: str
    frames: int
    skipped: int
    hands: int
    fps: float
    latency_ms: dict = field(default_factory=dict)  # p50, p95, mean of one request (client side)


def run_client(cfg: ClientConfig) -> ClientResult:
    """Stream the frames, write results like components.infer does."""
    from shared.drawing import Annotator
    from shared.inference.io import AnnotatedWriter, MotWriter, ResultsWriter, open_source, write_json
    from shared.serving.triton_backend import TritonHandClient, check_stream_id

    check_stream_id(cfg.stream_id)
    check_writable(cfg.output_dir, "--output_dir")
    if cfg.input_dir:
        inp, out_dir = Path(cfg.input_dir).resolve(), Path(cfg.output_dir).resolve()
        if out_dir == inp or inp in out_dir.parents:
            raise UserError(f"--output_dir {cfg.output_dir} lies inside --input_dir {cfg.input_dir}; choose a "
                            "separate folder")
    source = open_source(cfg.input_dir, cfg.video)  # bad paths fail before anything is written
    # ... and an absent server / model here
    client = TritonHandClient(cfg.url, cfg.model, cfg.timeout_s, shared_memory=cfg.shared_memory)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    is_video = bool(cfg.video)
    results_w = ResultsWriter(out / "results.jsonl")
    mot_w = MotWriter(out / "tracks.txt")
    annotated_path = out / ("annotated.mp4" if is_video else "annotated")
    media_w = AnnotatedWriter(annotated_path, video=is_video, fps=source.fps or 30.0) if cfg.annotate else None
    annotator = Annotator(draw_skeleton=cfg.draw_skeleton)
    stream = client.stream(cfg.stream_id)
    latencies: list[float] = []
    skipped: list[dict] = []
    frames = hands = 0
    progress = tqdm(total=len(source) or None, unit="frame", desc=f"stream {cfg.stream_id}", dynamic_ncols=True)

    def send(frame, last: bool) -> None:
        nonlocal frames, hands
        from tritonclient.utils import InferenceServerException

        t0 = time.perf_counter()
        try:
            res = stream.send(frame.image, last=last, timestamp=frame.timestamp)
        except InferenceServerException as exc:
            if "StatusCode.UNAVAILABLE" in str(exc.status()) or "unavailable" in exc.message().lower():
                raise UserError(f"the Triton server at {cfg.url} went away ({exc.message()})") from None
            progress.write(f"warning: frame {frame.index} ({frame.name}) rejected by the server: {exc.message()}; "
                           "skipped")
            skipped.append({"frame": frame.index, "image": frame.name, "reason": exc.message()})
            return
        latencies.append((time.perf_counter() - t0) * 1e3)
        results_w.write(frame.index, frame.name, res)
        mot_w.write(frame.index, res)
        if media_w is not None:
            media_w.write(frame.name, annotator.annotate(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), res))
        frames += 1
        hands += len(res)

    start = time.perf_counter()
    try:
        pending = None  # one frame of look-ahead: the last frame must carry END
        for frame in source:
            progress.update(1)
            if frame.image is None:
                progress.write(f"warning: {frame.error}; skipped")
                skipped.append({"frame": frame.index, "image": frame.name, "reason": frame.error})
                continue
            if pending is not None:
                send(pending, last=False)
            pending = frame
            progress.set_postfix(hands=hands, refresh=False)
        if pending is not None:
            send(pending, last=True)
    finally:
        progress.close()
        results_w.close()
        mot_w.close()
        if media_w is not None:
            media_w.close()
        client.close()
    wall = time.perf_counter() - start

    lat = np.asarray(latencies) if latencies else np.zeros(1)
    latency = {"p50": round(float(np.percentile(lat, 50)), 3), "p95": round(float(np.percentile(lat, 95)), 3),
               "mean": round(float(lat.mean()), 3)}
    summary = {
        "source": str(cfg.video or cfg.input_dir), "frames": frames, "skipped": len(skipped),
        "skipped_frames": skipped, "hands": hands, "hands_per_frame": round(hands / frames, 4) if frames else 0.0,
        "fps": round(frames / wall, 3) if wall > 0 else 0.0, "latency_ms": latency, "backend": "triton",
        "url": cfg.url, "model": cfg.model, "stream_id": cfg.stream_id, "mode": "tracking",
        "shared_memory": client.uses_shared_memory,
    }
    write_json(out / "summary.json", summary)
    save_config(cfg, out / "client_config.yaml")
    return ClientResult(str(out), str(out / "results.jsonl"), str(out / "tracks.txt"), str(out / "summary.json"),
                        str(annotated_path) if media_w is not None else "", frames, len(skipped), hands,
                        summary["fps"], latency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with ClientConfig keys (flags override it)")
    add_config_args(parser, ClientConfig)
    args = parser.parse_args(argv)
    cfg = load_config(ClientConfig, args.config, args)
    result = run_client(cfg)
    print(f"stream {cfg.stream_id}: {result.frames} frame(s), {result.hands} hand(s), {result.skipped} skipped, "
          f"{result.fps:.1f} fps, request p50 {result.latency_ms['p50']:.1f} ms, p95 {result.latency_ms['p95']:.1f} ms")
    from shared.inference.io import report_outputs

    return report_outputs(result)


if __name__ == "__main__":
    run_cli(main)
