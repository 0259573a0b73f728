"""Serving overhead: the hand pipeline over gRPC (Triton) vs the same pipeline in-process.

    python -m benchmarks.triton [--frames 60] [--warmup 5] [--repeats 2] [--threads 0] [--streams 1 4 8 16]
                                [--variants local/off local/on] [--sequence_strategy oldest]

Deploys the pipeline (`components.deploy --backend python`: MediaPipe's BlazePalm and
BlazeHand as ONNX, run by onnxruntime inside Triton's python backend) into a temporary
repository, starts the tritonserver bundled in `.venv-triton` on loopback, and sends the
same frames (640x480, one real hand drifting, benchmarks/latency.py's frames) through

- in-process: `models.local_pipeline` (HandPipeline + onnxruntime on the very ONNX
  files that were deployed, same settings), one `HandPipeline` per stream, streams in
  threads sharing the sessions;
- gRPC: `TritonHandClient`, one stream = one sequence id of `hand_pipeline`, one client
  per stream, streams in threads. Variants NETWORKS/SHM: hand_pipeline runs its networks
  `local`ly (onnxruntime inside it) or through `bls` calls to the served detector and
  hand_landmarks; the frame travels inside the gRPC message (`off`) or through a system
  shared-memory region (`on`, clients on the server's host).

for 1, 4, 8 and 16 concurrent streams. hand_pipeline's sequence batcher (deploy's default `oldest`)
puts the waiting frames of several streams into one call, which runs them as one batch
(`process_streams`); `scaling` is each system's frames/s at N streams over its frames/s at 1
(aim: >= 1.5x at 8 streams for Triton). Latency is per frame as the caller sees it (for gRPC: the
request round trip, image upload included); `server_p50_ms` is the pipeline's own time
inside Triton (the TIMING output), so round trip minus it is transport + scheduling.
frames/s is all streams' frames over the wall time. Every variant's server runs from the
start and each round visits the in-process baseline and every variant in turn, so load from
other processes hits them alike; the load average before and after is recorded (on a shared 2-core machine it moves the
figures far more than any variant does: compare rows of one run only). Aim: gRPC p50 <=
1.3 x in-process p50 with 1 stream. Prints the table, writes benchmarks/results/triton.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, write_results


def run_in_process(local, frames: np.ndarray, streams: int, warmup: int) -> tuple[list[float], float, float]:
    """(per-frame ms, wall s, hands per frame) for `streams` concurrent in-process pipelines."""
    from shared.inference.pipeline import HandPipeline

    pipes = [HandPipeline(local.cfg, detector=local.detector, crop_model=local.crop_model) for _ in range(streams)]
    for frame in frames[:warmup]:
        pipes[0].process(frame)
    pipes[0].reset()
    latencies: list[list[float]] = [[] for _ in range(streams)]
    hands = [0] * streams

    def work(i: int) -> None:
        for frame in frames:
            t0 = time.perf_counter()
            hands[i] += len(pipes[i].process(frame))
            latencies[i].append((time.perf_counter() - t0) * 1e3)

    wall = _threads(work, streams)
    return [x for lat in latencies for x in lat], wall, sum(hands) / (streams * len(frames))


def run_grpc(url: str, frames: np.ndarray, streams: int, warmup: int, first_id: int, shared_memory: str
             ) -> tuple[list[float], float, float, list[float]]:
    """Like run_in_process, plus the server-side pipeline ms of every frame (TIMING output)."""
    from shared.serving.triton_backend import TritonHandClient

    clients = [TritonHandClient(url, timing=True, shared_memory=shared_memory) for _ in range(streams)]
    try:
        warm = clients[0].stream(first_id + streams)
        for k, frame in enumerate(frames[:warmup]):
            warm.send(frame, last=k == warmup - 1)
        latencies: list[list[float]] = [[] for _ in range(streams)]
        server_ms: list[list[float]] = [[] for _ in range(streams)]
        hands = [0] * streams

        def work(i: int) -> None:
            stream = clients[i].stream(first_id + i)
            for k, frame in enumerate(frames):
                t0 = time.perf_counter()
                hands[i] += len(stream.send(frame, last=k == len(frames) - 1))
                latencies[i].append((time.perf_counter() - t0) * 1e3)
                server_ms[i].append(clients[i].last_timing.get("total", float("nan")))

        wall = _threads(work, streams)
    finally:
        for c in clients:
            c.close()
    return ([x for lat in latencies for x in lat], wall, sum(hands) / (streams * len(frames)),
            [x for ms in server_ms for x in ms])


def _threads(work, n: int) -> float:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per stream")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds over all scenarios")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime threads per network, in-process and in Triton alike (0 = its default)")
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--sequence_strategy", default="oldest", choices=["oldest", "direct"],
                        help="hand_pipeline's sequence batcher (components.deploy --sequence_strategy)")
    parser.add_argument("--pipeline_instances", type=int, default=2, help="hand_pipeline instances in Triton "
                                                                          "(components.deploy's default: 2)")
    parser.add_argument("--variants", nargs="+", default=["local/off", "local/on"],
                        help="served variants as NETWORKS/SHM: hand_pipeline's networks (deploy --pipeline_networks "
                             "local|bls; one server each) and whether frames go through shared memory (on|off)")
    args = parser.parse_args()

    from benchmarks.latency import make_frames
    from components.deploy import DeployConfig, deploy
    from shared.serving.models import local_pipeline
    from shared.serving.server import TritonServer

    variants: dict[str, list[str]] = {}
    for v in args.variants:
        networks, _, shm = v.partition("/")
        if networks not in ("local", "bls") or shm not in ("on", "off"):
            parser.error(f"--variants {v!r}: expected local|bls / on|off, e.g. local/on")
        variants.setdefault(networks, []).append(shm)

    load_before = os.getloadavg()
    frames = make_frames(1, args.frames)
    tmp = Path(tempfile.mkdtemp(prefix="bench_triton_"))
    samples: dict[tuple[str, int], dict] = {}
    version = None

    def add(system: str, streams: int, lat: list[float], wall: float, hands: float, server_ms: list[float]) -> None:
        s = samples.setdefault((system, streams), {"lat": [], "frames": 0, "wall": 0.0, "hands": [], "server": [],
                                                   "round_p50": []})
        s["round_p50"].append(float(np.median(lat)))
        s["lat"] += lat
        s["frames"] += len(lat)
        s["wall"] += wall
        s["hands"].append(hands)
        s["server"] += server_ms

    servers = {}
    with contextlib.ExitStack() as stack:
        for networks in variants:  # every variant's server up front: each round visits all of them
            deployed = deploy(DeployConfig(triton_repo=str(tmp / networks), backend="python", threads=args.threads,
                                           max_streams=max(8, max(args.streams)), pipeline_networks=networks,
                                           pipeline_instances=args.pipeline_instances,
                                           sequence_strategy=args.sequence_strategy))
            servers[networks] = stack.enter_context(
                TritonServer(deployed.triton_repo, log_path=tmp / f"tritonserver-{networks}.log"))
            version = servers[networks].server_version()
        local = local_pipeline(tmp / next(iter(variants)), threads=args.threads)
        next_id = 1
        for _ in range(args.repeats):
            for streams in args.streams:
                add("in-process", streams, *run_in_process(local, frames, streams, args.warmup), [])
                for networks, shm_modes in variants.items():
                    for shm in shm_modes:
                        system = f"gRPC {networks}{' +shm' if shm == 'on' else ''}"
                        add(system, streams, *run_grpc(servers[networks].grpc_url, frames, streams, args.warmup,
                                                       next_id, shared_memory=shm))
                        next_id += streams + 1
    load_after = os.getloadavg()

    rows = []
    for (system, streams), s in samples.items():
        lat = np.asarray(s["lat"])
        rows.append({"system": system, "streams": streams, "frames": s["frames"],
                     "fps": s["frames"] / s["wall"], "p50_ms": float(np.median(lat)),
                     "p95_ms": float(np.percentile(lat, 95)), "mean_ms": float(lat.mean()),
                     "hands_per_frame": float(np.mean(s["hands"])),
                     # the pipeline's own time inside Triton; round trip - this = transport + scheduling
                     "server_p50_ms": float(np.nanmedian(s["server"])) if s["server"] else None})
    rows.sort(key=lambda r: (r["streams"], r["system"] != "in-process"))
    by = {(r["system"], r["streams"]): r for r in rows}
    overhead: dict[str, dict] = {}
    for (system, streams), b in by.items():
        a = by.get(("in-process", streams))
        if system != "in-process" and a:
            # p50 overhead: the median over rounds of each round's ratio (a round's scenarios ran
            # back to back, so they shared the machine's load), and of the pooled p50s.
            paired = [y / x - 1 for x, y in zip(samples[("in-process", streams)]["round_p50"],
                                               samples[(system, streams)]["round_p50"])]
            ratio = {"p50": float(np.median(paired)), "p50_pooled": b["p50_ms"] / a["p50_ms"] - 1,
                     "p50_per_round": paired, "p95": b["p95_ms"] / a["p95_ms"] - 1, "fps": b["fps"] / a["fps"] - 1}
            overhead[f"{system}/{streams} stream(s)"] = ratio
            b["p50_overhead"] = ratio["p50"]
    for r in rows:  # throughput at N streams over the same system's at 1 stream
        one = by.get((r["system"], 1))
        r["scaling"] = r["fps"] / one["fps"] if one else None
    scaling = {f"{r['system']}/{r['streams']}": r["scaling"] for r in rows if r["scaling"] is not None}
    print_table(f"Hand pipeline, in-process vs Triton gRPC ({args.frames} frames x {args.repeats} rounds per "
                f"scenario, 640x480, 1 hand; load {load_before[0]:.1f} -> {load_after[0]:.1f})", rows)
    for key, ratio in overhead.items():
        if key.endswith("/1 stream(s)"):
            verdict = "meets" if ratio["p50"] <= 0.30 else "misses"
            rounds = ", ".join(f"{r * 100:+.0f}%" for r in ratio["p50_per_round"])
            print(f"{key.split('/')[0]}, 1 stream: p50 overhead {ratio['p50'] * 100:+.1f}% over in-process "
                  f"(median of rounds: {rounds}; {verdict} the <= 30% aim)")
    for r in rows:
        if r["system"] != "in-process" and r["streams"] == 8 and r["scaling"] is not None:
            verdict = "meets" if r["scaling"] >= 1.5 else "misses"
            print(f"{r['system']}: {r['scaling']:.2f}x the frames/s of 1 stream at 8 streams "
                  f"({verdict} the >= 1.5x aim)")
    write_results("triton", {
        "scaling": scaling, "scaling_aim": "Triton frames/s at 8 streams >= 1.5 x at 1 stream",
        "config": vars(args), "triton": version, "backend": "python (onnxruntime inside the python backend)",
        "load_average_before": load_before, "load_average_after": load_after, "rows": rows, "overhead": overhead,
        "aim": "gRPC p50 overhead <= 30% over in-process with 1 stream",
    })


if __name__ == "__main__":
    main()
