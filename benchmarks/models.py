"""Model size and CPU latency: PyTorch vs onnxruntime fp32 / int8 vs OpenVINO fp32 / int8, batch 1 and 4.

    python -m benchmarks.models [--models blazehand_full ...] [--iters 30] [--threads 2] [--no_int8]
        [--no_openvino]

Per model: parameters, then the median, p90 and best wall time of one forward pass
in PyTorch (eval, no_grad), in onnxruntime (the exported deployment graph, dynamic
batch, CPU provider) and in onnxruntime int8 (the export's recipe,
`shared.models.quantize.quantize_default`: QDQ, 7-bit per-channel weights, u8
activations, heads and BlazeHand's first modules in float), and the same two files on
OpenVINO (`--backend openvino`: fp32 exported with PReLU as one op, which OpenVINO fuses;
the int8 file as it is), after warm-up. Random
weights and random calibration: latency does not depend on the values (the int8
accuracy is the export's check, on real crops). Prints a table and writes
benchmarks/results/models.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table, write_results
from shared.errors import UserError
from shared.models.openvino_int8 import openvino_available

DEFAULT_MODELS = ("blazehand_full", "blazehand_lite", "blazepalm_full", "blazepalm_lite",
                  "timm:mobilenetv3_small_100", "gmae_classifier_small")


def _time(fn, iters: int, warmup: int) -> dict[str, float]:
    """Median, p90 and best wall time in ms. On a shared machine the best of N is the
    steadiest figure (closest to an unloaded run); the median shows what load does."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)), "min": float(np.min(times))}


def bench_model(name: str, batches: tuple[int, ...], iters: int, warmup: int, threads: int,
                work_dir: Path, int8: bool = True, openvino: bool = True) -> dict:
    import onnxruntime as ort

    from shared.models.export import export_onnx, export_wrapper
    from shared.models.quantize import quantize_default, recipe
    from shared.models.registry import create_model
    from shared.models.specs import spec_for

    model = create_model(name).eval()
    spec = spec_for(name, model)
    wrapper = export_wrapper(model).eval()
    onnx_path = export_onnx(wrapper, spec, work_dir / f"{name.replace(':', '_')}.onnx", dynamic_batch=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    int8_session = None
    if int8:
        calib = np.random.default_rng(0).random((16, 3, spec.img_size, spec.img_size), dtype=np.float32)
        cfg = recipe("blazehand" if name.startswith("blazehand") else "classifier")  # the export's recipe
        int8_path = quantize_default(onnx_path, onnx_path.with_name(f"{onnx_path.stem}_int8.onnx"), calib, cfg)
        int8_session = ort.InferenceSession(str(int8_path), opts, providers=["CPUExecutionProvider"])
    ov = ov_int8 = None
    if openvino:
        from shared.models.openvino_int8 import OpenVinoModel

        ov = OpenVinoModel(export_onnx(wrapper, spec, work_dir / f"{name.replace(':', '_')}_prelu.onnx",
                                       dynamic_batch=True, prelu_as_clamps=False), threads)
        ov_int8 = OpenVinoModel(int8_path, threads) if int8 else None
        try:
            if ov_int8 is not None:
                ov_int8.compile(1)
        except UserError as exc:  # e.g. BlazePalm's clamp-PReLU QDQ file: OpenVINO mis-fuses it
            print(f"{name}: no OpenVINO int8 column: {exc}")
            ov_int8 = None
    row = {"model": name, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
           "input": f"{spec.img_size}x{spec.img_size}", "onnx_MB": round(onnx_path.stat().st_size / 1e6, 2)}
    for batch in batches:
        x = torch.rand(batch, 3, spec.img_size, spec.img_size)
        feed = {spec.input_names[0]: x.numpy()}
        with torch.no_grad():
            row[f"torch_b{batch}"] = _time(lambda x=x: wrapper(x), iters, warmup)
        row[f"ort_b{batch}"] = _time(lambda feed=feed: session.run(None, feed), iters, warmup)
        if int8_session is not None:
            row[f"int8_b{batch}"] = _time(lambda feed=feed: int8_session.run(None, feed), iters, warmup)
            row[f"int8_speedup_b{batch}"] = round(row[f"ort_b{batch}"]["median"] / row[f"int8_b{batch}"]["median"], 2)
        if ov is not None:
            row[f"openvino_b{batch}"] = _time(lambda x=x: ov(x.numpy()), iters, warmup)
        if ov_int8 is not None:
            row[f"openvino_int8_b{batch}"] = _time(lambda x=x: ov_int8(x.numpy()), iters, warmup)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime intra-op threads (1: steadier on a shared machine)")
    parser.add_argument("--no_int8", action="store_true", help="leave out the int8 columns")
    parser.add_argument("--no_openvino", action="store_true", help="leave out the OpenVINO columns")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_openvino and not openvino_available():
        print("warning: openvino does not import; no OpenVINO columns")
        args.no_openvino = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(bench_model(name, tuple(args.batches), args.iters, args.warmup, args.threads, Path(tmp),
                                    int8=not args.no_int8, openvino=not args.no_openvino))
            print(f"{name}: done", flush=True)
    # "median (best)" per cell; full figures (p90 too) in the JSON.
    short = [{k: (f"{v['median']:.1f} ({v['min']:.1f})" if isinstance(v, dict) else v) for k, v in r.items()}
             for r in rows]
    print_table(f"CPU latency in ms, median (best) of {args.iters} ({args.threads} thread(s))", short)
    write_results("models", {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
