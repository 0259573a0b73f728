"""TensorRT export: ONNX -> a serialized engine (FP32 / FP16 / INT8), then a check against onnxruntime.

    python -m components.export tensorrt --onnx_path hand.onnx --output_path hand_fp16.plan --fp16
    python -m components.export tensorrt --onnx_path hand.onnx --output_path hand_int8.plan --int8 \\
        --calib_images data/val/images --calib_cache hand_int8.cache

- One optimization profile over the batch axis: `--min_batch <= --opt_batch <= --max_batch`
  (spatial sizes are the model's own; TensorRT tunes its kernels for the opt batch).
- INT8: an `IInt8EntropyCalibrator2` fed with REAL images passed through the model's own
  preprocessing (`calibration_inputs`): for BlazeHand, upright 224 hand crops, RGB in [0, 1],
  placed by keypoint labels or by the MediaPipe teacher (`shared.inference.real_crops`, the
  reader the ONNX Runtime INT8 export uses too: one calibration set for both); for a
  classifier, crops from box labels (else the whole image letterboxed); the 192 letterbox
  for BlazePalm. The scales land in `--calib_cache`; a
  cache that exists is read instead of calibrating again (delete it to recalibrate). INT8
  layers may fall back to FP16 (both flags are set): that is TensorRT's usual recipe.
- After the build the engine runs on the calibration images (or random inputs when none are
  given) next to onnxruntime, and the accuracy change is printed: keypoint PCK and gesture
  agreement for BlazeHand (and PCK against the labels for both, when the folder has them),
  detection agreement for BlazePalm, top-1 agreement for a classifier.

Written against TensorRT 10's Python API (`build_serialized_network`, named I/O tensors,
`execute_async_v3`; calibration-based INT8 is deprecated since 10.1 and gone in 11, where
explicit Q/DQ quantization replaces it); device buffers through cuda-python
(`cuda.bindings.runtime`, or the older `cuda.cudart`), or pycuda (requirements-gpu.txt). Nothing imports TensorRT at
module level: where it does not import, `tensorrt_import_error()` says why in one line and
`require_tensorrt()` raises that as a UserError.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.config import option
from shared.errors import UserError
from shared.models.quantize import CropReader

PCK_AGREEMENT = 0.02  # engine vs onnxruntime: a keypoint agrees within 2% of the crop side (4.5 px at 224)
PCK_LABELS = 0.1  # against labels: within 10% of the hand's box size (the usual hand PCK@0.1)


@dataclass
class TensorRTExportConfig:
    onnx_path: str = option("", "the ONNX file to build from (dynamic batch axis)")
    output_path: str = option("outputs/export/model.plan", "where to write the serialized engine (.plan/.engine)")
    img_size: int | None = option(None, "input side (default: read from the ONNX file)")
    fp16: bool = option(False, "allow FP16 kernels")
    int8: bool = option(False, "INT8 with entropy calibration on --calib_images (FP16 allowed as fallback)")
    calib_images: str = option("", "folder of real images for INT8 calibration and for the accuracy check")
    calib_batch_size: int = option(8, "images per calibration batch")
    max_calib_images: int = option(512, "use at most this many calibration inputs (crops / letterboxed images)")
    calib_cache: str = option("", "INT8 calibration cache; read when it exists, written otherwise "
                                  "('' = <output_path>.calib)")
    min_batch: int = option(1, "optimization profile: smallest batch")
    opt_batch: int = option(4, "optimization profile: the batch TensorRT tunes for")
    max_batch: int = option(16, "optimization profile: largest batch")
    workspace: float = option(2.0, "builder workspace limit in GiB")
    verify: bool = option(True, "run the engine next to onnxruntime and report the accuracy change")
    verify_images: int = option(64, "inputs used by the check (calibration inputs first, else random)")


@dataclass
class TensorRTExportResult:
    engine_path: str
    family: str  # blazehand | blazepalm | classifier | other
    precision: str  # fp32 | fp16 | int8
    profile: dict[str, list[int]]  # min / opt / max input shapes
    build_seconds: float
    calib_cache: str = ""
    calib_cache_reused: bool = False
    calibration_inputs: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    summary_path: str = ""


# --------------------------------------------------------------------------- availability


def tensorrt_import_error() -> str | None:
    """None when TensorRT and a way to allocate CUDA buffers import; else one line saying why."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA install raising OSError
        return (f"the tensorrt package does not import ({type(exc).__name__}: {exc}); TensorRT needs an NVIDIA GPU "
                "host with `pip install -r requirements-gpu.txt` (tensorrt + pycuda)")
    try:
        _cuda_api()
    except ImportError as exc:
        return f"tensorrt imports but no CUDA buffer library does ({exc}); pip install pycuda (or cuda-python)"
    return None


def tensorrt_available() -> bool:
    return tensorrt_import_error() is None


def require_tensorrt() -> Any:
    error = tensorrt_import_error()
    if error:
        raise UserError(error)
    import tensorrt as trt

    return trt


# --------------------------------------------------------------------------- CUDA buffers


def _cuda_api() -> tuple[str, Any]:
    """("cuda-python", cudart) or ("pycuda", pycuda.driver)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        return "cuda-python", cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return "cuda-python", cudart
    except ImportError:
        pass
    try:
        import pycuda.autoinit  # noqa: F401 - creates the context
        import pycuda.driver as cuda
        return "pycuda", cuda
    except ImportError as exc:
        raise ImportError(f"neither cuda-python nor pycuda imports ({exc})") from None


class CudaBuffers:
    """Device allocations, copies and one stream, over cuda-python or pycuda."""

    def __init__(self) -> None:
        self.kind, self.api = _cuda_api()
        self._allocs: list[Any] = []
        if self.kind == "cuda-python":
            self.stream = self._check(self.api.cudaStreamCreate())
        else:
            self.stream = self.api.Stream()

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = self.api.cudaGetErrorName(err)[1] if hasattr(self.api, "cudaGetErrorName") else err
            raise RuntimeError(f"CUDA call failed: {name}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        if self.kind == "cuda-python":
            return int(self.stream) if hasattr(self.stream, "__int__") else int(self.stream.getPtr())
        return self.stream.handle

    def alloc(self, nbytes: int) -> int:
        """Device pointer (int) of `nbytes` bytes, freed by `free_all`."""
        nbytes = max(int(nbytes), 1)
        if self.kind == "cuda-python":
            ptr = self._check(self.api.cudaMalloc(nbytes))
            self._allocs.append(ptr)
            return int(ptr)
        mem = self.api.mem_alloc(nbytes)
        self._allocs.append(mem)
        return int(mem)

    def to_device(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if self.kind == "cuda-python":
            kind = self.api.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(self.api.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))
            self.synchronize()  # the host array may go away after this call
        else:
            self.api.memcpy_htod_async(ptr, array, self.stream)
            self.stream.synchronize()

    def to_host(self, array: np.ndarray, ptr: int) -> None:
        """Copy into `array` (contiguous, preallocated) from the device; call `synchronize()` after."""
        if self.kind == "cuda-python":
            kind = self.api.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(self.api.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))
        else:
            self.api.memcpy_dtoh_async(array, ptr, self.stream)

    def synchronize(self) -> None:
        if self.kind == "cuda-python":
            self._check(self.api.cudaStreamSynchronize(self.stream))
        else:
            self.stream.synchronize()

    def free_all(self) -> None:
        for mem in self._allocs:
            if self.kind == "cuda-python":
                self.api.cudaFree(mem)
            else:
                mem.free()
        self._allocs = []


# --------------------------------------------------------------------------- calibration inputs


def model_family(onnx_path: str | Path) -> tuple[str, int, list[str], list[str]]:
    """(family, input side, input names, output names) read from the ONNX file's tensors,
    whose names come from shared/models/specs.py."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise UserError(f"--onnx_path {path}: no such file; export one with `python -m components.export onnx "
                        "--dynamic_batch`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from None
    init = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in init]
    outputs = [v.name for v in model.graph.output]
    if len(inputs) != 1:
        raise UserError(f"{path}: {len(inputs)} inputs; the TensorRT export handles one image input")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise UserError(f"{path}: input {inputs[0].name!r} has shape {dims}; expected [batch, 3, S, S]")
    if dims[0] != -1:
        raise UserError(f"{path}: the batch axis is fixed to {dims[0]}; an optimization profile needs a dynamic "
                        "batch (components.export onnx --dynamic_batch)")
    family = ("blazehand" if "landmarks" in outputs else "blazepalm" if "boxes" in outputs
              else "classifier" if outputs == ["gesture_probs"] else "other")
    return family, int(dims[3]), [inputs[0].name], outputs


def calibration_inputs(images_dir: str | Path, family: str, img_size: int, max_inputs: int,
                       real_crops: CropReader | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Real images through the model's own preprocessing -> ([N, 3, S, S] float32 RGB in [0, 1],
    keypoint labels [N, 21, 3] in input pixels or None).

    blazehand: `real_crops(folder, size=, limit=)`, passed in by the caller:
    `shared.inference.real_crops.real_crops` (keypoint labels, else the MediaPipe teacher).
    classifier: a YOLO-pose dataset folder (images/ + labels/) gives one upright
    crop per labelled hand, the crop model's ROI (`shared.data.crops.hand_roi`); an unlabelled
    folder gives each image letterboxed to a square (a folder of hand crops). blazepalm: each
    image letterboxed to 192 (`shared.models.blazepalm_post.letterbox`), as PalmDetector feeds it.
    """
    import cv2

    from shared.data.labels import label_path_for, list_images, read_labels
    from shared.geometry import crop_matrix, warp_crop

    root = Path(images_dir)
    if not root.is_dir():
        raise UserError(f"--calib_images {root}: not a folder; pass a folder of real images")
    if family == "blazehand":
        # The same reader as the ONNX Runtime INT8 export (shared.models.quantize): one calibration
        # set for both. Crops placed as the tracking pipeline places them, from keypoint labels or
        # from the MediaPipe teacher on unlabelled photos.
        if real_crops is None:
            raise ValueError("BlazeHand calibration needs real_crops, the hand-crop reader "
                             "(shared.inference.real_crops.real_crops); components.export passes it")
        crops = real_crops(root, size=img_size, limit=max_inputs)
        return crops.x, crops.keypoints
    images_root = root / "images" if (root / "images").is_dir() else root
    labels_root = images_root.parent / "labels" if images_root.name == "images" else None
    paths = list_images(images_root)
    if not paths:
        raise UserError(f"--calib_images {root}: no images found (.jpg, .png, ...)")
    xs: list[np.ndarray] = []
    kps: list[np.ndarray] = []
    has_kp = True
    for path in paths:
        if len(xs) >= max_inputs:
            break
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue  # a corrupt file only shrinks the calibration set
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        if family == "blazepalm":
            from shared.models.blazepalm_post import letterbox

            xs.append(letterbox(rgb, img_size)[0])
            has_kp = False
            continue
        labels = []
        if labels_root is not None:
            label_file = label_path_for(path, images_root, labels_root)
            if label_file.is_file():
                labels, _ = read_labels(label_file)
        if not labels:
            from shared.data.crops import letterbox_square

            xs.append(letterbox_square(rgb, img_size))
            has_kp = False
            continue
        from shared.data.crops import hand_roi

        for label in labels:
            roi = hand_roi(label, w, h, expand_ratio=0.3, rotate=True, use_box=False)
            xs.append(warp_crop(rgb, roi, img_size))
            if label.has_keypoints:
                m = crop_matrix(roi, img_size)
                kp = label.keypoints_px(w, h).astype(np.float64)
                kp[:, :2] = kp[:, :2] @ m[:, :2].T + m[:, 2]
                kps.append(kp)
            else:
                has_kp = False
    if not xs:
        raise UserError(f"--calib_images {root}: none of the images could be read")
    xs = xs[:max_inputs]
    x = np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)  # [N, 3, S, S]
    labels_out = np.stack(kps)[: len(x)] if has_kp and len(kps) == len(x) else None
    return x, labels_out


# --------------------------------------------------------------------------- build


def _check_profile(min_batch: int, opt_batch: int, max_batch: int) -> None:
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UserError(f"optimization profile needs 1 <= --min_batch <= --opt_batch <= --max_batch, got "
                        f"{min_batch}, {opt_batch}, {max_batch}")


def _make_calibrator(trt: Any, batches: np.ndarray, cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 over [K, B, 3, S, S] batches (empty when the cache is read)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.index = 0
            self.cache_path = cache_path
            self.cache_read = False
            self.buffers = CudaBuffers()
            self.device = self.buffers.alloc(batches[0].nbytes) if len(batches) else 0

        def get_batch_size(self) -> int:
            return int(self.batches.shape[1]) if len(self.batches) else 1

        def get_batch(self, names: list[str], p_str: Any = None) -> list[int] | None:
            if self.index >= len(self.batches):
                return None  # done: TensorRT computes the scales now
            self.buffers.to_device(self.device, self.batches[self.index])
            self.index += 1
            return [self.device]

        def read_calibration_cache(self) -> bytes | None:
            if self.cache_path.is_file():
                self.cache_read = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(
    onnx_path: str | Path,
    output_path: str | Path,
    img_size: int | None = None,
    fp16: bool = False,
    int8: bool = False,
    calib_images: str | Path | None = None,
    calib_batch_size: int = 8,
    max_calib_images: int = 512,
    calib_cache: str | Path | None = None,
    min_batch: int = 1,
    opt_batch: int = 4,
    max_batch: int = 16,
    workspace: float = 2.0,
    calib_inputs: np.ndarray | None = None,
    real_crops: CropReader | None = None,
) -> Path:
    """ONNX -> serialized TensorRT engine at `output_path` (written atomically).

    One optimization profile (batch min/opt/max, spatial size from the file). INT8 calibrates
    on `calib_inputs` (already preprocessed) or on `calib_images` through the model's own
    preprocessing, unless `calib_cache` (default `<output>.calib`) already exists, in which
    case the cached scales are used and no image is read. `real_crops`: the hand-crop reader for
    BlazeHand's calibration (see `calibration_inputs`).
    """
    trt = require_tensorrt()
    _check_profile(min_batch, opt_batch, max_batch)
    onnx_path, output_path = Path(onnx_path), Path(output_path)
    family, side, (input_name,), _ = model_family(onnx_path)
    if img_size and img_size != side:
        raise UserError(f"--img_size {img_size}: {onnx_path} was exported for {side}; re-export or drop --img_size")
    img_size = side

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x; implicit in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT cannot parse it ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace * (1 << 30)))
    shape = (3, img_size, img_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    if fp16 or int8:
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if int8:
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise UserError(f"--int8 uses calibration (implicit quantization), which TensorRT {trt.__version__} no "
                            "longer has; use TensorRT 10.x (requirements-gpu.txt) or --fp16")
        cache = Path(calib_cache) if calib_cache else output_path.with_suffix(".calib")
        if cache.is_file():
            batches = np.zeros((0, calib_batch_size, *shape), np.float32)  # the cache holds the scales
        else:
            if calib_inputs is None:
                if not calib_images:
                    raise UserError("--int8 needs --calib_images (a folder of real images) or an existing "
                                    "--calib_cache")
                calib_inputs, _ = calibration_inputs(calib_images, family, img_size, max_calib_images, real_crops)
            batches = _calibration_batches(calib_inputs, calib_batch_size)
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(trt, batches, cache)
        config.int8_calibrator = calibrator
        # Dynamic shapes: TensorRT calibrates with this profile's shape, one calibration batch.
        calib_profile = builder.create_optimization_profile()
        b = calibrator.get_batch_size()
        calib_profile.set_shape(input_name, (b, *shape), (b, *shape), (b, *shape))
        config.set_calibration_profile(calib_profile)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.buffers.free_all()
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp{os.getpid()}")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(output_path)
    return output_path


def _calibration_batches(x: np.ndarray, batch_size: int) -> np.ndarray:
    """[N, 3, S, S] -> [K, B, 3, S, S]; a last partial batch is filled with the first inputs
    (TensorRT calibrates with one fixed batch shape)."""
    if batch_size < 1:
        raise UserError(f"--calib_batch_size must be >= 1, got {batch_size}")
    k = math.ceil(len(x) / batch_size)
    idx = np.arange(k * batch_size) % len(x)
    return np.ascontiguousarray(x[idx].reshape(k, batch_size, *x.shape[1:]))


# --------------------------------------------------------------------------- run and check


class EngineRunner:
    """A `shared.inference.backends` runner over a serialized engine (cuda-python/pycuda buffers)."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path) -> None:
        trt = require_tensorrt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        path = Path(engine_path)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"{path}: cannot deserialize the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.buffers = CudaBuffers()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        trt = self.trt
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) > self.max_batch:
            raise ValueError(f"batch {len(x)} > the engine's max batch {self.max_batch}")
        try:
            d_in = self.buffers.alloc(x.nbytes)
            self.buffers.to_device(d_in, x)
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            self.context.set_tensor_address(self.input_name, d_in)
            host, device = {}, {}
            for n in self.output_names:
                dtype = trt.nptype(self.engine.get_tensor_dtype(n))
                out = np.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtype)
                host[n], device[n] = out, self.buffers.alloc(out.nbytes)
                self.context.set_tensor_address(n, device[n])
            if not self.context.execute_async_v3(self.buffers.stream_handle):
                raise RuntimeError("TensorRT execution failed")
            for n in self.output_names:
                self.buffers.to_host(host[n], device[n])
            self.buffers.synchronize()
        finally:
            self.buffers.free_all()
        return {n: a.astype(np.float32) for n, a in host.items()}


def compare_outputs(family: str, engine: dict[str, np.ndarray], reference: dict[str, np.ndarray], img_size: int,
                    labels: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy of the engine's outputs next to onnxruntime's on the same inputs.

    blazehand: PCK agreement (keypoints within 2% of the crop side of onnxruntime's), max
    keypoint |diff| in pixels, gesture (argmax) agreement, max presence |diff|; with labels, PCK@0.1
    of both against the labels and its change. blazepalm: palms above 0.5 found by both,
    box IoU of matched palms. classifier: top-1 agreement.
    """
    out: dict[str, float] = {"inputs": float(len(next(iter(reference.values()))))}
    for name in reference:
        out[f"max_abs_diff/{name}"] = float(np.abs(engine[name].astype(np.float64) - reference[name]).max())
    if family == "blazehand":
        a, b = engine["landmarks"][..., :2], reference["landmarks"][..., :2]  # [N, 21, 2] crop pixels
        dist = np.linalg.norm(a - b, axis=-1)
        out["pck_agreement"] = float((dist <= PCK_AGREEMENT * img_size).mean())
        out["max_keypoint_px"] = float(dist.max())
        out["gesture_agreement"] = float((engine["gesture_probs"].argmax(-1) == reference["gesture_probs"].argmax(-1))
                                         .mean())
        if labels is not None:
            seen = labels[..., 2] > 0  # [N, 21]
            lo, hi = labels[..., :2].min(1), labels[..., :2].max(1)
            size = np.maximum((hi - lo).max(-1), 1.0)[:, None]  # [N, 1] hand size, crop pixels
            for key, pred in (("engine", a), ("onnxruntime", b)):
                ok = np.linalg.norm(pred - labels[..., :2], axis=-1) <= PCK_LABELS * size
                out[f"pck@0.1/{key}"] = float(ok[seen].mean()) if seen.any() else float("nan")
            out["pck@0.1/change"] = out["pck@0.1/engine"] - out["pck@0.1/onnxruntime"]
    elif family == "blazepalm":
        from shared.geometry import iou_matrix

        found_e, found_r, matched, ious = 0, 0, 0, []
        for i in range(len(reference["scores"])):
            e, r = engine["scores"][i] >= 0.5, reference["scores"][i] >= 0.5
            found_e, found_r = found_e + int(e.sum()), found_r + int(r.sum())
            both = e & r
            matched += int(both.sum())
            if both.any():
                iou = iou_matrix(engine["boxes"][i][both], reference["boxes"][i][both])
                ious.append(np.diag(iou))
        out["anchor_agreement"] = matched / max(found_r, found_e, 1)
        out["mean_box_iou"] = float(np.concatenate(ious).mean()) if ious else float("nan")
    elif "gesture_probs" in reference:
        out["top1_agreement"] = float((engine["gesture_probs"].argmax(-1) == reference["gesture_probs"].argmax(-1))
                                      .mean())
    return out


def check_engine(engine_path: str | Path, onnx_path: str | Path, inputs: np.ndarray, family: str,
                 labels: np.ndarray | None = None) -> dict[str, float]:
    """Run the engine and onnxruntime on `inputs` ([N, 3, S, S]) in engine-sized chunks; compare."""
    import onnxruntime as ort

    from shared.tensors import run_batched

    runner = EngineRunner(engine_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    in_name = session.get_inputs()[0].name

    class _Ort:
        name, max_batch = "onnxruntime", runner.max_batch

        def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {in_name: x})))

    engine_out = run_batched(runner, inputs)
    reference = run_batched(_Ort(), inputs)
    return compare_outputs(family, engine_out, reference, inputs.shape[-1], labels)


# --------------------------------------------------------------------------- the stage


def export_tensorrt(cfg: TensorRTExportConfig, real_crops: CropReader | None = None) -> TensorRTExportResult:
    """Build the engine, check it against onnxruntime, write `<output>.json` next to it
    (`real_crops`: BlazeHand's calibration crop reader, see `calibration_inputs`)."""
    require_tensorrt()
    if cfg.fp16 and cfg.int8:
        print("note: --int8 already allows FP16 fallback kernels; --fp16 adds nothing")
    _check_profile(cfg.min_batch, cfg.opt_batch, cfg.max_batch)
    family, side, _, _ = model_family(cfg.onnx_path)
    img_size = cfg.img_size or side
    output = Path(cfg.output_path)
    cache = Path(cfg.calib_cache) if cfg.calib_cache else output.with_suffix(".calib")
    cache_existed = cache.is_file()
    inputs = labels = None
    if cfg.calib_images:
        inputs, labels = calibration_inputs(cfg.calib_images, family, img_size, cfg.max_calib_images,
                                            real_crops)
    elif cfg.int8 and not cache_existed:
        raise UserError("--int8 needs --calib_images (a folder of real images) or an existing --calib_cache")
    start = time.perf_counter()
    build_engine(cfg.onnx_path, output, img_size=img_size, fp16=cfg.fp16, int8=cfg.int8,
                 calib_batch_size=cfg.calib_batch_size, calib_cache=cache, min_batch=cfg.min_batch,
                 opt_batch=cfg.opt_batch, max_batch=cfg.max_batch, workspace=cfg.workspace, calib_inputs=inputs)
    build_s = time.perf_counter() - start
    shape = [3, img_size, img_size]
    result = TensorRTExportResult(
        engine_path=str(output), family=family, precision="int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32",
        profile={"min": [cfg.min_batch, *shape], "opt": [cfg.opt_batch, *shape], "max": [cfg.max_batch, *shape]},
        build_seconds=round(build_s, 2), calib_cache=str(cache) if cfg.int8 else "",
        calib_cache_reused=bool(cfg.int8 and cache_existed),
        calibration_inputs=0 if inputs is None else len(inputs), summary_path=str(output.with_suffix(".json")))
    if cfg.verify:
        if inputs is None:  # no real images: random inputs still show numeric drift
            inputs = np.random.default_rng(0).random((min(cfg.verify_images, 16), *shape), dtype=np.float32)
        n = min(cfg.verify_images, len(inputs))
        result.accuracy = check_engine(output, cfg.onnx_path, inputs[:n], family,
                                       None if labels is None else labels[:n])
    Path(result.summary_path).write_text(json.dumps(asdict(result), indent=2))
    return result


def describe(result: TensorRTExportResult) -> list[str]:
    """The lines `python -m components.export tensorrt` prints."""
    lines = [f"wrote {result.engine_path} ({result.family}, {result.precision}, batch {result.profile['min'][0]}/"
             f"{result.profile['opt'][0]}/{result.profile['max'][0]}, built in {result.build_seconds:.1f} s)"]
    if result.calib_cache:
        how = "reused" if result.calib_cache_reused else f"written from {result.calibration_inputs} inputs"
        lines.append(f"calibration cache: {result.calib_cache} ({how})")
    acc = result.accuracy
    if acc:
        if result.family == "blazehand":
            lines.append(f"vs onnxruntime on {int(acc['inputs'])} inputs: PCK@{PCK_AGREEMENT} agreement "
                         f"{acc['pck_agreement']:.4f}, max keypoint diff {acc['max_keypoint_px']:.2f} px, gesture "
                         f"agreement {acc['gesture_agreement']:.4f}")
            if "pck@0.1/change" in acc:
                lines.append(f"PCK@0.1 vs labels: onnxruntime {acc['pck@0.1/onnxruntime']:.4f} -> engine "
                             f"{acc['pck@0.1/engine']:.4f} (change {acc['pck@0.1/change']:+.4f})")
        elif result.family == "blazepalm":
            lines.append(f"vs onnxruntime on {int(acc['inputs'])} inputs: palm anchors above 0.5 agree "
                         f"{acc['anchor_agreement']:.4f}, mean box IoU {acc['mean_box_iou']:.4f}")
        elif "top1_agreement" in acc:
            lines.append(f"vs onnxruntime: top-1 agreement {acc['top1_agreement']:.4f}")
        for key, value in acc.items():
            if key.startswith("max_abs_diff/"):
                lines.append(f"  max |engine - onnxruntime| {key.split('/', 1)[1]:16s} {value:.3e}")
    lines.append(f"summary: {result.summary_path}")
    return lines
