"""OpenVINO's CPU runtime: running an ONNX file there, and INT8 made for it (NNCF).

    model = OpenVinoModel("hand.onnx", threads=1)       # fp32 or an NNCF int8 file
    outputs = model(x)                                    # {output name: array}
    quantize_nncf("hand.onnx", "hand_int8.onnx", calibration_crops, ignored=[...])

Why a second runtime: ONNX Runtime's int8 kernels gain little on these MobileNets at batch 1
(depthwise convolutions, and BlazePalm's PReLUs, which it runs in float between int8 ops;
docs/benchmarks.md, INT8). OpenVINO fuses PReLU and residual additions into its int8
convolutions: on the 2-core AVX-512 VNNI machine BlazeHand full runs 8.75 ms (ONNX Runtime
fp32) -> 7.3 (OpenVINO fp32) -> 3.7 (OpenVINO int8) per crop, 1 thread.

The int8 file is still ONNX (QDQ nodes placed by NNCF for OpenVINO's fusions): the same file
format, summary and verification as ONNX Runtime's int8 (`shared.models.quantize`,
`QuantizeConfig.runtime`); ONNX Runtime can read it but runs it slowly. fp32 stays fp32 on
every CPU: the inference precision is pinned to f32 (OpenVINO would pick bf16 where the CPU
has it), so fp32 answers match ONNX Runtime's (~1e-4 px on crops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import UserError

# BlazeHand's modules kept in float for OpenVINO: the stem and first block (112x112). Measured on
# real crops of other people (hagrid_sample 135 / roboflow 75), 800 teacher crops of hagrid_train,
# NNCF MIXED preset, heads float, mean / p99 px at 224, ms per crop (1 thread): everything int8
# 0.69 / 0.62, p99 5.7 / 3.8 (fast bias correction), 0.52 / 0.45, p99 3.95 / 3.34 (full), 3.46 ms;
# stem + first block float 0.37 / 0.37, p99 2.4 / 1.9, 3.68 ms (fast), 0.41 / 0.42 (full); + blocks 0-2
# float 0.31 / 0.31, 4.09 ms (docs/benchmarks.md).
OPENVINO_FLOAT_MODULES = ("stem", "first_block")
# The export wrappers' own arithmetic around the network (input normalisation, box / landmark decoding)
# is named outside /model/: it stays in float.
WRAPPER_NODES = r"/(?!model/).*"
# Ops NNCF quantizes the inputs of besides the convolutions: left float when only some layers are int8
BETWEEN_OPS = ("Add", "Mul", "Concat", "Resize", "MaxPool", "AveragePool", "Pad", "GlobalAveragePool")


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise UserError("OpenVINO is not installed; pip install openvino (and nncf to quantize for it)") from None
    return ov


def openvino_available() -> bool:
    """Whether OpenVINO imports here (the benchmarks leave its rows out where it does not)."""
    try:
        _openvino()
    except UserError:
        return False
    return True


def _reason(exc: Exception) -> str:
    """OpenVINO's message without its stack of "Exception from <source file>" lines, cut short."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from")]
    return " ".join(lines)[:200] or type(exc).__name__


class OpenVinoModel:
    """An ONNX file compiled for OpenVINO's CPU plugin: `model(x [B, ...] float32) -> {name: array}`.
    One compiled model per batch size seen (static shapes: faster than dynamic ones at batch 1)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        ov = _openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: ONNX file not found")
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                       "INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own for a bad file
            raise UserError(f"{self.path}: OpenVINO cannot read it ({_reason(exc)}); re-export it") from None
        self.input_name = self.model.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        first = self.model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = first.get_length() if first.is_static else None
        self._requests: dict[int, Any] = {}

    def compile(self, batch: int) -> Any:
        """The infer request for `batch` inputs a call (compiled on first use: ~0.3 s)."""
        request = self._requests.get(batch)
        if request is None:
            model = self.model.clone()
            shape = model.inputs[0].get_partial_shape()
            shape[0] = batch
            model.reshape({self.input_name: shape})
            try:
                request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            except Exception as exc:  # a graph OpenVINO reads but cannot compile (e.g. a QDQ pattern it mis-fuses)
                raise UserError(f"{self.path}: OpenVINO cannot compile it ({_reason(exc)}); run it with "
                                "--backend onnxruntime, or export it for OpenVINO (components.export ... --runtime "
                                "openvino)") from None
            self._requests[batch] = request
        return request

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        request = self.compile(len(x))
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        # Copies: the request's output buffers are overwritten by its next call.
        return {n: np.array(request.get_output_tensor(i).data) for i, n in enumerate(self.output_names)}


def quantize_nncf(float_path: str | Path, out_path: str | Path, calib_x: np.ndarray, ignored: list[str],
                  quantizable: list[str], only: list[str] | None = None, fast_bias_correction: bool = True) -> Path:
    """NNCF post-training quantization of an ONNX file for OpenVINO (MIXED preset: symmetric per-channel
    8-bit weights, asymmetric activations; ranges and (fast) bias correction from `calib_x`, one input
    a step):
    every quantizable node int8 but the `ignored` ones (and, with `only`, every one not in `only`), the
    wrappers' own arithmetic float. Writes `out_path`, an ONNX file with QDQ nodes."""
    try:
        import nncf
        import onnx
    except ImportError:
        raise UserError("int8 for OpenVINO needs NNCF; pip install nncf") from None
    model = onnx.load(str(float_path))
    name = model.graph.input[0].name
    keep = set(only) if only is not None else None
    names = list(ignored) + ([n for n in quantizable if n not in keep] if keep is not None else [])
    dataset = nncf.Dataset([{name: calib_x[i:i + 1]} for i in range(len(calib_x))])
    # `only`: nothing else quantized, activations included: NNCF would still put input quantizers on the
    # residual additions, concatenations, resizes and pads between them, unless `only` names them
    # (measured on BlazePalm: one head "alone" then moved as many palms as the whole int8 model)
    if keep is not None:
        names += [n.name for n in model.graph.node if n.op_type in BETWEEN_OPS and n.name not in keep]
    scope = nncf.IgnoredScope(names=names, patterns=[WRAPPER_NODES], validate=False)
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib_x),
                              fast_bias_correction=fast_bias_correction, ignored_scope=scope)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(out_path))
    return out_path


__all__ = ["OPENVINO_FLOAT_MODULES", "OpenVinoModel", "openvino_available", "quantize_nncf"]
