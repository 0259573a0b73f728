"""Inference backends: one small interface over PyTorch, ONNX Runtime and TensorRT.

Two layers:

- a **runner** executes one network: `runner(x [B, 3, S, S] float32 RGB in [0, 1]) ->
  {output name: numpy array}`, names and order from `shared.models.specs`. Runners
  exist for `torch`, `onnxruntime` and `tensorrt` (`shared.models.tensorrt`'s engine
  runner; where TensorRT does not import, choosing it is one clear error);
  `register_runner(name, factory)` is THE registration point for more; `triton` (a gRPC
  client of a served network, `shared.inference.triton_client`) is built in;
- **models** built on a runner: `CropModel` (BlazeHand: landmarks, presence,
  handedness, gesture for a batch of hand crops); the hand detectors, one file each, are
  in `shared.inference.detectors` (a registry, built on these runners).

A `ModelRef` says which network and weights; each runner factory takes what it needs
from it (the torch module, an ONNX file exported and cached on first use, a TensorRT
engine built from that ONNX). Exported files are cached under `work_dir`, keyed by the
model type, the weights file (path, size, mtime) and the input size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shared.errors import UserError
from shared.geometry import Roi
from shared.hand import NUM_KEYPOINTS
from shared.inference.triton_client import TritonRunner
from shared.models.registry import create_model, no_gesture_head, resolve_name
from shared.models.specs import spec_for
from shared.tensors import run_batched

__all__ = [
    "CropModel", "ModelRef", "Runner", "available_runners", "create_crop_model", "create_runner", "export_onnx",
    "register_runner", "run_batched", "tensorrt_available",
]


class Runner(Protocol):
    """Executes one network on a batch. `max_batch` is None when any batch size works."""

    name: str
    max_batch: int | None

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


# --------------------------------------------------------------------------- what to run


@dataclass
class ModelRef:
    """One network to run: a registered model type and its weights.

    weights: "mediapipe" (converted from MediaPipe's files), a `.pth` state dict, or an
    already exported `.onnx` (onnxruntime / tensorrt) or `.engine` / `.plan` (tensorrt).
    """

    model_type: str  # "blazehand_full", "blazepalm_full", ... (registry names and aliases)
    weights: str = "mediapipe"
    img_size: int = 224
    device: str = "cpu"
    work_dir: str = ""  # where exported ONNX / engines are cached ("" = <cache>/exports)
    max_batch: int = 16  # largest batch a TensorRT engine is built for
    fp16: bool = False  # TensorRT: build with FP16 kernels
    threads: int = 0  # CPU threads for torch / onnxruntime (0 = the library's default)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific extras (e.g. a Triton url)
    _module: Any = field(default=None, repr=False)

    @property
    def family(self) -> str:
        return "blazepalm" if self.model_type.startswith("blazepalm") else "blazehand"

    @property
    def suffix(self) -> str:
        return Path(self.weights).suffix.lower() if self.weights != "mediapipe" else ""

    def spec(self) -> Any:
        return spec_for(resolve_name(self.model_type), self._module, self.img_size)

    def torch_model(self) -> Any:
        """The network in eval mode (built once), weights loaded."""
        if self._module is None:
            if self.suffix in (".onnx", ".engine", ".plan"):
                raise UserError(f"{self.weights}: an exported {self.suffix} file cannot run on the torch backend; "
                                "pass a .pth or 'mediapipe', or choose --backend onnxruntime/tensorrt")
            if self.weights != "mediapipe" and not Path(self.weights).is_file():
                raise UserError(f"{self.weights}: weights file not found; pass an existing .pth or 'mediapipe'")
            self._module = create_model(self.model_type, pretrained_weights=self.weights).eval()
        return self._module

    def export_module(self) -> Any:
        """The deployment view (probabilities / decoded boxes) in the order of the spec."""
        model = self.torch_model()
        if self.family == "blazepalm":
            from shared.models.blazepalm import BlazePalmExport

            return BlazePalmExport(model).eval()
        from shared.models.blazehand import BlazeHandExport

        return BlazeHandExport(model).eval()

    def cache_dir(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir)
        from shared.models.mediapipe_import import default_cache_dir

        return default_cache_dir().parent / "exports"

    def cache_key(self, native_prelu: bool = False) -> str:
        if self.weights == "mediapipe":
            ident = "mediapipe"
        else:
            st = Path(self.weights).stat()
            ident = f"{Path(self.weights).resolve()}|{st.st_size}|{st.st_mtime_ns}"
        name = resolve_name(self.model_type)
        text = f"{name}|{ident}|{self.img_size}|static-pads|{'prelu' if native_prelu else 'clamp-prelu'}"
        return f"{name}_{self.img_size}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"

    def onnx_path(self, native_prelu: bool = False) -> Path:
        """The model as ONNX: the given file, or exported once into the cache. `native_prelu`: PReLU
        as one op (OpenVINO fuses it into the convolution; ONNX Runtime wants it as clamps)."""
        if self.suffix == ".onnx":
            path = Path(self.weights)
            if not path.is_file():
                raise UserError(f"{path}: ONNX file not found; export one with `python -m components.export`")
            return path
        if self.weights != "mediapipe" and not Path(self.weights).is_file():  # before its stat() in cache_key
            raise UserError(f"{self.weights}: weights file not found; pass an existing .pth or 'mediapipe'")
        path = self.cache_dir() / f"{self.cache_key(native_prelu)}.onnx"
        if not path.is_file():
            export_onnx(self.export_module(), self.spec(), path, native_prelu=native_prelu)
        return path


# The shipped INT8 crop model (MediaPipe's BlazeHand full, `make int8-model`): one QDQ file that passed the
# export's tolerances on real photos of other people on both runtimes (model.json: ONNX Runtime,
# openvino.json: OpenVINO; its model card beside it).
INT8_DIR = Path(__file__).resolve().parents[1] / "weights" / "blazehand_full_int8"
INT8_MODEL = INT8_DIR / "model.onnx"
INT8_RUNTIMES = ("onnxruntime", "openvino")


def crop_model_weights(model_type: str, weights: str, precision: str, backend: str) -> str:
    """The crop-model weights to run for `precision`: fp32 keeps `weights`; int8 runs an int8 .onnx (the
    one given, or the one shipped for MediaPipe's BlazeHand full) on OpenVINO or ONNX Runtime."""
    if precision == "fp32":
        return weights
    if precision != "int8":
        raise UserError(f"--precision {precision!r} is not one of fp32, int8")
    if backend == "triton":
        raise UserError("--precision int8 with --backend triton: the server runs what was deployed; deploy with "
                        "`python -m components.deploy --precision int8` and leave --precision out here")
    if backend not in INT8_RUNTIMES:
        raise UserError(f"--precision int8 runs on --backend openvino (fastest on a CPU) or onnxruntime (their int8 "
                        f"kernels), not {backend}")
    if Path(weights).suffix.lower() == ".onnx":
        return weights  # the user's own int8 export
    if weights != "mediapipe":
        raise UserError(f"--precision int8 with --model_weights {weights}: quantize it first (python -m "
                        "components.export onnx --precision int8 --weights ... --calibration_dir PHOTOS"
                        f"{' --runtime openvino' if backend == 'openvino' else ''}) and pass the int8 .onnx as "
                        "--model_weights")
    if resolve_name(model_type) != "blazehand_full":
        raise UserError(f"--precision int8 ships for blazehand (full) only, not {model_type}; export your own "
                        "with components.export --precision int8")
    if not INT8_MODEL.is_file():
        raise UserError(f"--precision int8: the shipped int8 BlazeHand {INT8_MODEL} is missing from this "
                        "copy; rebuild it with `make int8-model`, or export your own and pass it: python -m "
                        "components.export onnx --precision int8 --dynamic_batch --calibration_dir PHOTOS --test_dir "
                        f"OTHER_PEOPLE --runtime {backend} --output_path hand_int8.onnx, then --model_weights "
                        "hand_int8.onnx")
    return str(INT8_MODEL)


def export_onnx(module: Any, spec: Any, path: str | Path, opset: int = 17, native_prelu: bool = False) -> Path:
    """Export an export-wrapper module to ONNX with a dynamic batch axis, atomically (two
    processes exporting the same cache entry never see half a file). The export itself is
    `shared.models.export.export_onnx`."""
    from shared.models.export import export_onnx as export_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    print(f"exporting {spec.model_type} to ONNX (once): {path}", file=sys.stderr)
    export_model(module, spec, tmp, dynamic_batch=True, opset=opset, prelu_as_clamps=not native_prelu)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- runners


class TorchRunner:
    name = "torch"
    max_batch = None

    def __init__(self, ref: ModelRef) -> None:
        import torch

        self.torch = torch
        if ref.threads > 0:
            torch.set_num_threads(ref.threads)  # process-wide: torch has no per-module pool
        device = ref.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # oneDNN's depthwise kernels want NHWC: ~1.4x faster on CPU for these MobileNets.
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.module = ref.export_module().to(self.device, memory_format=self.memory_format)
        self.output_names = ref.spec().output_names

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            inp = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            outs = self.module(inp.contiguous(memory_format=self.memory_format))
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs)}


class OnnxRunner:
    name = "onnxruntime"
    max_batch = None

    def __init__(self, ref: ModelRef) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("--backend onnxruntime needs the onnxruntime package; pip install onnxruntime") from None
        path = ref.onnx_path()
        providers = ["CPUExecutionProvider"]
        if ref.device.startswith("cuda") or ref.device == "auto":
            providers = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()] + providers
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if ref.threads > 0:
            opts.intra_op_num_threads = ref.threads
        # Busy-waiting worker threads steal the CPU from everything else in a video loop
        # (decoding, drawing, the detector) and collapse on a shared machine.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc}); re-export it") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.session.get_inputs()[0].shape[0] == 1:  # exported without --dynamic_batch: one crop a call
            self.max_batch = 1

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.output_names, outs))


class OpenVinoRunner:
    """The ONNX file on OpenVINO's CPU runtime (`shared.models.openvino_int8.OpenVinoModel`): the
    same fp32 answers as ONNX Runtime (~1e-4 px on crops), faster per call on x86 (its depthwise and
    fused PReLU kernels), and the faster runtime of int8 files. One crop a call: on 1 thread a batch
    is no faster per crop here (BlazeHand fp32 7.2 ms at batch 1, 7.0 at 3), and every new batch size
    would cost a compilation (~0.3 s) in the middle of a stream; the one model is compiled up front."""

    name = "openvino"
    max_batch = 1

    def __init__(self, ref: ModelRef) -> None:
        from shared.models.openvino_int8 import OpenVinoModel  # optional runtime: only when chosen

        if ref.device not in ("cpu", "auto"):
            raise UserError(f"--backend openvino runs on the CPU; --device {ref.device} is for torch / onnxruntime")
        self.model = OpenVinoModel(ref.onnx_path(native_prelu=True), ref.threads)
        self.output_names = self.model.output_names
        self.model.compile(1)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.model(x)


def tensorrt_available() -> bool:
    """TensorRT and a CUDA buffer library import (see `shared.models.tensorrt`)."""
    from shared.models.tensorrt import tensorrt_available as available  # optional GPU runtime: only when asked

    return available()


def TensorRTRunner(ref: ModelRef) -> Runner:  # noqa: N802 - a factory named like the runner it returns
    """`shared.models.tensorrt.EngineRunner` over `ref`: a given `.engine` / `.plan`, or one
    built once from the ONNX export (FP32, or FP16 with `ref.fp16`; batch 1..`ref.max_batch`)
    and cached. Where TensorRT does not import this raises one clear UserError."""
    from shared.models.tensorrt import EngineRunner, build_engine, require_tensorrt  # optional GPU runtime

    require_tensorrt()
    if ref.suffix in (".engine", ".plan"):
        engine_path = Path(ref.weights)
        if not engine_path.is_file():
            raise UserError(f"{engine_path}: TensorRT engine not found; build one with "
                            "`python -m components.export tensorrt`")
    else:
        precision = "fp16" if ref.fp16 else "fp32"
        engine_path = ref.cache_dir() / f"{ref.cache_key()}_b{ref.max_batch}_{precision}.engine"
        if not engine_path.is_file():
            build_engine(ref.onnx_path(), engine_path, fp16=ref.fp16, min_batch=1,
                         opt_batch=min(4, ref.max_batch), max_batch=ref.max_batch)
    return EngineRunner(engine_path)


# THE registration point: backend name -> factory(ModelRef) -> Runner. "triton" reads its url
# and served model name from `ModelRef.options` (shared.inference.triton_client).
def _triton_runner(ref: ModelRef) -> Runner:
    return TritonRunner(ref)


RUNNERS: dict[str, Callable[[ModelRef], Runner]] = {
    "torch": TorchRunner,
    "onnxruntime": OnnxRunner,
    "openvino": OpenVinoRunner,
    "tensorrt": TensorRTRunner,
    "triton": _triton_runner,  # a network served by Triton (url: ModelRef.options["url"] / $TRITON_URL)
}


def register_runner(name: str, factory: Callable[[ModelRef], Runner]) -> None:
    RUNNERS[name] = factory


def available_runners() -> list[str]:
    """Backends usable on this machine (tensorrt only where it imports and a GPU exists)."""
    return [n for n in RUNNERS if n != "tensorrt" or tensorrt_available()]


def create_runner(backend: str, ref: ModelRef) -> Runner:
    if backend not in RUNNERS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(RUNNERS)}")
    return RUNNERS[backend](ref)


# --------------------------------------------------------------------------- crop model


class CropModel:
    """BlazeHand on any runner: `model(crops [B, 3, S, S] float32) -> dict of numpy arrays`:

    landmarks [B, 21, 3] (crop pixels), presence [B], handedness [B] (MediaPipe's score:
    > 0.5 = right hand on an unmirrored image), gesture_probs [B, G], world_landmarks [B, 21, 3].
    `gesture_trained` is False when the gesture head kept its random init (MediaPipe's
    weights have none), so callers report the gesture as unknown instead of noise.
    """

    def __init__(self, runner: Runner, img_size: int, gesture_trained: bool = True) -> None:
        self.runner = runner
        self.img_size = img_size
        self.gesture_trained = gesture_trained

    @property
    def backend(self) -> str:
        return self.runner.name

    def __call__(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        n = len(crops)
        if n == 0:
            g = 0
            return {"landmarks": np.zeros((0, NUM_KEYPOINTS, 3), np.float32), "presence": np.zeros(0, np.float32),
                    "handedness": np.zeros(0, np.float32), "gesture_probs": np.zeros((0, g), np.float32),
                    "world_landmarks": np.zeros((0, NUM_KEYPOINTS, 3), np.float32)}
        out = run_batched(self.runner, crops)
        return {
            "landmarks": out["landmarks"].reshape(n, NUM_KEYPOINTS, 3),
            "world_landmarks": out["world_landmarks"].reshape(n, NUM_KEYPOINTS, 3),
            "presence": out["presence"].reshape(n),
            "handedness": out["handedness"].reshape(n),
            "gesture_probs": out["gesture_probs"].reshape(n, -1),
        }


def gesture_trained_from_summary(onnx_path: Path) -> bool:
    """An exported ONNX: its export summary (`<file>.json`, components.export / deploy) tells which
    weights it came from; MediaPipe's have no gesture head. No summary: assume trained."""
    try:
        info = json.loads(Path(onnx_path).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return True
    if "gesture_head_trained" in info:
        return bool(info["gesture_head_trained"])
    return not no_gesture_head(info.get("weights", ""))


def _gesture_head_trained(ref: ModelRef) -> bool:
    """Whether the weights carry a trained gesture head. MediaPipe's do not; an exported file
    says so in its export summary (e.g. the shipped int8 model), else it is assumed to."""
    if ref.weights == "mediapipe" or ref.suffix in (".tflite", ".whl"):
        return False
    if ref.suffix == ".pth":
        report = getattr(ref.torch_model(), "load_report", None)
        return not any(k.startswith("gesture.") for k in getattr(report, "missing_keys", []))
    if ref.suffix == ".onnx":
        return gesture_trained_from_summary(Path(ref.weights))
    return True


def create_crop_model(backend: str, ref: ModelRef) -> CropModel:
    return CropModel(create_runner(backend, ref), ref.img_size, _gesture_head_trained(ref))


def roi_iou(a: Roi, b: Roi) -> float:
    """IoU of the two ROIs' axis-aligned bounding boxes (enough to tell the same hand)."""
    from shared.geometry import iou_matrix

    return float(iou_matrix(a.bounding_xyxy()[None], b.bounding_xyxy()[None])[0, 0])

