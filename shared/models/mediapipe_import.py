"""Import MediaPipe's hand models (TFLite) into our PyTorch modules, offline and exactly.

Source: the `mediapipe==0.10.21` wheel on PyPI, the last one that bundles
`hand_landmark_{full,lite}.tflite` and `palm_detection_{full,lite}.tflite`
(Apache-2.0). The wheel is fetched once at set-up (`python -m components.weights
fetch`, `make weights`) into the cache; nothing here downloads at run time.
The files are parsed with the pure-Python `tflite` package, no TensorFlow.

What a faithful import has to handle (measured on these files):
- weights are fp16 constants behind DEQUANTIZE ops: folded here to fp32 (exact);
- conv weights are OHWI -> OIHW; depthwise [1, KH, KW, C*m] -> [C*m, 1, KH, KW];
  PReLU slopes [1, 1, C] -> [C]; fully-connected [out, in] is already ours;
- batch norm is folded and activations fused, so a layer is (weight, bias);
- layers are matched to our modules in graph order, each checked for kind,
  shape and stride, so an architecture mistake fails loudly, not numerically.

Converted weights are cached as `.pth` next to the wheel; the cache is keyed by
`FORMAT_VERSION`, bumped whenever our module layout changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.errors import UserError
from shared.paths import cache_root

MEDIAPIPE_VERSION = "0.10.21"
FORMAT_VERSION = 1
CACHE_ENV = "HANDOPS_CACHE"

# Our name for each network -> its member path inside the wheel.
WHEEL_MEMBERS: dict[str, str] = {
    "hand_landmark_full": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
    "hand_landmark_lite": "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
    "palm_detection_full": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "palm_detection_lite": "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
}

FETCH_HINT = ("run `make weights` or `python -m components.weights fetch` (downloads the mediapipe=="
              f"{MEDIAPIPE_VERSION} wheel from PyPI into the cache), or pass a .tflite file instead")


# --------------------------------------------------------------------------- cache and wheel


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """`<cache root>/mediapipe` (`shared.paths.cache_root`: $HANDOPS_CACHE, the checkout's .cache,
    or ~/.cache/handops for an installed package)."""
    return cache_root() / "mediapipe"


def find_wheel(cache_dir: str | Path | None = None) -> Path | None:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    wheels = sorted(cache.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    return wheels[0] if wheels else None


def fetch_wheel(cache_dir: str | Path | None = None, timeout: float = 600.0) -> Path:
    """Download the wheel with pip (no dependencies, binary only) unless it is cached."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    found = find_wheel(cache)
    if found:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
           "--only-binary=:all:", "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"could not run `{' '.join(cmd)}`: {exc}; check network access to PyPI") from None
    found = find_wheel(cache)
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"pip could not download mediapipe=={MEDIAPIPE_VERSION} into {cache}: {tail[0]}; "
                        "check network access to PyPI, or pass a .tflite file")
    return found


def read_tflite(name: str, source: str | Path | None = None, cache_dir: str | Path | None = None) -> bytes:
    """The bytes of MediaPipe network `name` from a .tflite file, a wheel, or the cached wheel."""
    if name not in WHEEL_MEMBERS:
        raise ValueError(f"unknown MediaPipe network {name!r}; known: {', '.join(WHEEL_MEMBERS)}")
    if source is not None and Path(source).suffix == ".tflite":
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: TFLite file not found; pass an existing {name}.tflite")
        return path.read_bytes()
    wheel = Path(source) if source is not None else find_wheel(cache_dir)
    if wheel is None:
        raise UserError(f"MediaPipe weights are not cached in {Path(cache_dir) if cache_dir else default_cache_dir()}"
                        f"; {FETCH_HINT}")
    if not wheel.is_file():
        raise UserError(f"{wheel}: file not found; pass the mediapipe wheel or a .tflite file")
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(WHEEL_MEMBERS[name])
    except (zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{wheel}: not a mediapipe {MEDIAPIPE_VERSION} wheel with {WHEEL_MEMBERS[name]} ({exc}); "
                        f"delete it and {FETCH_HINT}") from None


# --------------------------------------------------------------------------- TFLite parsing


@dataclass
class TFLiteTensor:
    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None  # constants only (fp32 after folding DEQUANTIZE)


@dataclass
class TFLiteOp:
    kind: str  # builtin operator name, e.g. "CONV_2D"
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]  # in execution order, DEQUANTIZE ops folded away
    inputs: list[int]
    outputs: list[int]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return counts


_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}


def _options(op: Any, kind: str) -> dict[str, Any]:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return {}

    def read(cls: Any) -> Any:
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = read(tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions)
        out = {"stride": (o.StrideH(), o.StrideW()), "padding": _PADDING[o.Padding()],
               "activation": _ACTIVATION.get(o.FusedActivationFunction(), "other"),
               "dilation": (o.DilationHFactor(), o.DilationWFactor())}
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = read(tflite.Pool2DOptions)
        return {"kernel": (o.FilterHeight(), o.FilterWidth()), "stride": (o.StrideH(), o.StrideW()),
                "padding": _PADDING[o.Padding()]}
    if kind in ("ADD", "FULLY_CONNECTED", "CONCATENATION"):
        cls = {"ADD": tflite.AddOptions, "FULLY_CONNECTED": tflite.FullyConnectedOptions,
               "CONCATENATION": tflite.ConcatenationOptions}[kind]
        o = read(cls)
        out = {"activation": _ACTIVATION.get(o.FusedActivationFunction(), "other")}
        if kind == "CONCATENATION":
            out["axis"] = o.Axis()
        return out
    if kind == "RESIZE_BILINEAR":
        o = read(tflite.ResizeBilinearOptions)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    return {}


def parse_tflite(buf: bytes) -> TFLiteGraph:
    """Parse the first subgraph of a .tflite flatbuffer; fold fp16 DEQUANTIZE into fp32 constants."""
    import tflite

    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
    except Exception as exc:  # the flatbuffer library raises assorted errors on garbage
        raise UserError(f"not a TFLite model ({exc}); pass a MediaPipe .tflite file") from None

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        data = None
        buffer = model.Buffers(t.Buffer())
        if buffer is not None and buffer.DataLength() > 0 and t.Type() in _TFLITE_DTYPES:
            data = buffer.DataAsNumpy().view(_TFLITE_DTYPES[t.Type()]).reshape(shape).copy()
        tensors.append(TFLiteTensor(t.Name().decode(), shape, data))

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Newer files keep small codes in the deprecated field too; the larger one is right.
        kind = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs, outputs = [int(j) for j in op.InputsAsNumpy()], [int(j) for j in op.OutputsAsNumpy()]
        if kind == "DEQUANTIZE" and tensors[inputs[0]].data is not None:
            # fp16 -> fp32 is exact; TFLite does the same once at load time.
            tensors[outputs[0]].data = tensors[inputs[0]].data.astype(np.float32)
            continue
        ops.append(TFLiteOp(kind, inputs, outputs, _options(op, kind)))
    return TFLiteGraph(tensors, ops, [int(j) for j in graph.InputsAsNumpy()],
                       [int(j) for j in graph.OutputsAsNumpy()])


@dataclass
class WeightLayer:
    """One weighted TFLite op, its arrays already in PyTorch layout."""

    kind: str  # CONV_2D | DEPTHWISE_CONV_2D | FULLY_CONNECTED | PRELU
    name: str  # the weight tensor's name, for checks and messages
    weight: np.ndarray
    bias: np.ndarray | None
    options: dict[str, Any]


def weight_layers(graph: TFLiteGraph) -> list[WeightLayer]:
    layers = []
    for op in graph.ops:
        if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "PRELU"):
            continue
        w_t = graph.tensors[op.inputs[1]]
        b = graph.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if w_t.data is None:
            raise UserError(f"TFLite op {op.kind} ({w_t.name}) has non-constant weights; not a supported model")
        w = w_t.data.astype(np.float32)
        if op.kind == "CONV_2D":
            w = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        elif op.kind == "DEPTHWISE_CONV_2D":
            if op.options.get("depth_multiplier", 1) != 1:
                raise UserError(f"{w_t.name}: depth multiplier {op.options['depth_multiplier']} is not supported")
            w = w.transpose(3, 0, 1, 2)  # [1, KH, KW, C] -> [C, 1, KH, KW]
        elif op.kind == "PRELU":
            w = w.reshape(-1)  # [1, 1, C] -> [C]
        layers.append(WeightLayer(op.kind, w_t.name, np.ascontiguousarray(w),
                                  None if b is None else b.astype(np.float32), op.options))
    return layers


def describe_graph(graph: TFLiteGraph) -> str:
    """One line per op (constants and DEQUANTIZE hidden), for reading an architecture off a file."""
    lines = []
    for i, op in enumerate(graph.ops):
        ins = [graph.tensors[j].shape for j in op.inputs if j >= 0 and graph.tensors[j].data is None]
        outs = [graph.tensors[j].shape for j in op.outputs]
        consts = [graph.tensors[j].shape for j in op.inputs if j >= 0 and graph.tensors[j].data is not None]
        lines.append(f"{i:3d} {op.kind:18s} {ins} -> {outs} const={consts} {op.options}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- matching to our modules


def _expected_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "DEPTHWISE_CONV_2D" if module.groups > 1 and module.groups == module.in_channels else "CONV_2D"
    if isinstance(module, nn.Linear):
        return "FULLY_CONNECTED"
    if isinstance(module, nn.PReLU):
        return "PRELU"
    raise TypeError(f"no TFLite counterpart for {type(module).__name__}")


def convert_graph(model: nn.Module, graph: TFLiteGraph, source: str) -> dict[str, torch.Tensor]:
    """State dict for `model` from a parsed graph; `model.mediapipe_layers()` lists our
    modules in graph order as (module, expected name fragment or None)."""
    targets = model.mediapipe_layers()
    layers = weight_layers(graph)
    model_name = getattr(model, "mediapipe_model", type(model).__name__)
    if len(targets) != len(layers):
        raise UserError(f"{source}: {len(layers)} weighted layers, but {model_name} needs {len(targets)}; "
                        f"pass {model_name}.tflite")
    names = {id(m): n for n, m in model.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for index, ((module, fragment), layer) in enumerate(zip(targets, layers)):
        where = f"{source}: layer {index} ({layer.name})"
        kind = _expected_kind(module)
        if layer.kind != kind:
            raise UserError(f"{where} is {layer.kind}, {model_name} expects {kind}; pass {model_name}.tflite")
        if fragment is not None and fragment not in layer.name:
            raise UserError(f"{where} is not {fragment!r}; pass {model_name}.tflite")
        if tuple(layer.weight.shape) != tuple(module.weight.shape):
            raise UserError(f"{where} has shape {layer.weight.shape}, {model_name} expects "
                            f"{tuple(module.weight.shape)}; pass {model_name}.tflite")
        if isinstance(module, nn.Conv2d) and tuple(layer.options["stride"]) != tuple(module.stride):
            raise UserError(f"{where} has stride {layer.options['stride']}, ours {module.stride}")
        prefix = names[id(module)]
        state[f"{prefix}.weight"] = torch.from_numpy(layer.weight.copy())
        if layer.bias is not None:
            state[f"{prefix}.bias"] = torch.from_numpy(layer.bias.copy())
    return state


def mediapipe_state_dict(model: nn.Module, source: str | Path | None = None,
                         cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """MediaPipe's weights in `model`'s layout (without our own new layers).

    `source`: None (the cached wheel; the converted result is cached as .pth),
    a wheel path or a .tflite path (converted every time, never cached).
    """
    name = model.mediapipe_model
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache / f"{name}.v{FORMAT_VERSION}.pth"
    if source is None and cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    buf = read_tflite(name, source, cache)
    graph = parse_tflite(buf)
    state = convert_graph(model, graph, str(source or f"{name}.tflite"))
    if source is None:
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        tmp.replace(cached)  # atomic: parallel workers never see half a file
    return state


# --------------------------------------------------------------------------- loading into a model


@dataclass
class LoadReport:
    """What `load_pretrained` did: keys the model kept its own init for, keys ignored."""

    source: str
    missing_keys: list[str]
    unexpected_keys: list[str]
    expected_missing: list[str] = field(default_factory=list)  # our new layers, absent by design

    @property
    def ok(self) -> bool:
        return not self.unexpected_keys and set(self.missing_keys) <= set(self.expected_missing)

    def __str__(self) -> str:
        parts = [f"loaded {self.source}"]
        if self.expected_missing:
            parts.append(f"new (randomly initialised): {', '.join(self.expected_missing)}")
        other = [k for k in self.missing_keys if k not in self.expected_missing]
        if other:
            parts.append(f"missing: {', '.join(other)}")
        if self.unexpected_keys:
            parts.append(f"unexpected: {', '.join(self.unexpected_keys)}")
        return "; ".join(parts)


def _unwrap_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # Lightning checkpoint
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: not a state dict (or a checkpoint holding one); save with "
                        "torch.save(model.state_dict(), path)")
    return obj


def _align_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop or add one wrapper prefix ("model.", "net.") when that makes the keys match ours,
    so a Lightning checkpoint or a bare timm state dict loads into our wrapper."""
    if set(state) & model_keys:
        return state
    heads = {key.split(".", 1)[0] + "." for key in list(state) + list(model_keys) if "." in key}
    for head in sorted(heads):
        stripped = {k[len(head):]: v for k, v in state.items() if k.startswith(head)}
        if set(stripped) & model_keys:
            return stripped
        added = {head + k: v for k, v in state.items()}
        if set(added) & model_keys:
            return added
    return state


def load_pretrained(model: nn.Module, weights: str | Path, cache_dir: str | Path | None = None) -> LoadReport:
    """Load "mediapipe" (converted from the cached wheel), a .tflite file, or a .pth state
    dict into `model` (non-strict; shapes must match). Returns what was missing/unexpected;
    our new layers missing from MediaPipe's weights are expected, not an error."""
    source = str(weights)
    expected: list[str] = []
    prefixes = model.new_layer_prefixes() if hasattr(model, "new_layer_prefixes") else ()
    if source == "mediapipe" or source.endswith((".tflite", ".whl")):
        if not hasattr(model, "mediapipe_layers"):
            raise UserError(f"{source}: MediaPipe weights exist only for the blazehand/blazepalm models, not "
                            f"{type(model).__name__}; pass a .pth file")
        state = mediapipe_state_dict(model, None if source == "mediapipe" else source, cache_dir)
        expected = [k for k in model.state_dict() if k.startswith(prefixes)]
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: weights file not found; pass an existing .pth, a .tflite file or 'mediapipe'")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle/zip errors of every kind
            raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {exc}); "
                            "pass a .pth state dict") from None
        state = _align_prefix(_unwrap_checkpoint(obj, path), set(model.state_dict()))
    own = model.state_dict()
    if not set(state) & set(own):
        name = getattr(model, "mediapipe_model", type(model).__name__)
        raise UserError(f"{source}: no parameter names in common with {name} (e.g. {next(iter(state), '-')!r} vs "
                        f"{next(iter(own))!r}); it is a different architecture, pass weights saved from this model")
    bad = [f"{k} {tuple(v.shape)} vs ours {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise UserError(f"{source}: shapes do not match the model ({'; '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''}); pick the matching --model_type / num_gestures")
    result = model.load_state_dict(state, strict=False)
    return LoadReport(source, list(result.missing_keys), list(result.unexpected_keys), expected)
