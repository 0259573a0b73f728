"""Building a TensorRT engine: ONNX -> a serialized engine (FP32 / FP16 / INT8) through TensorRT 10's
`build_serialized_network`, written atomically.
One optimization profile over the batch axis (`min_batch <= opt_batch <= max_batch`; spatial
sizes are the model's own; TensorRT tunes its kernels for the opt batch). INT8 uses an
`IInt8EntropyCalibrator2` fed with `calibration_inputs`; the scales land in a calibration cache,
and a cache that exists is read instead of calibrating again (delete it to recalibrate). INT8
layers may fall back to FP16 (both flags are set): TensorRT's usual recipe. Calibration-based
INT8 is deprecated since TensorRT 10.1 and gone in 11, where explicit Q/DQ quantization replaces it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import UserError
from shared.models.quantize import CropReader
from shared.models.tensorrt.calibration import calibration_inputs, model_family
from shared.models.tensorrt.runtime import CudaBuffers, require_tensorrt


def check_profile(min_batch: int, opt_batch: int, max_batch: int) -> None:
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
    check_profile(min_batch, opt_batch, max_batch)
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
