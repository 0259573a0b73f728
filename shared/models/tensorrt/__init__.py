"""TensorRT export: ONNX -> a serialized engine (FP32 / FP16 / INT8), then a check against onnxruntime.

One room per file: `runtime` imports TensorRT and a CUDA buffer library (cuda-python or pycuda;
nothing imports TensorRT at module level, `tensorrt_import_error()` says in one line why it does
not import) and runs an engine (`EngineRunner`); `engines` builds one (one optimization profile
over the batch axis, INT8 through an entropy calibrator and a reusable calibration cache);
`calibration` reads what INT8 is calibrated on (real images through the model's own
preprocessing, BlazeHand crops from the caller's `CropReader`); `checks` compares the engine with
onnxruntime (PCK / gesture / detection / top-1 agreement); `export` is the
`python -m components.export tensorrt` stage. The public names are re-exported here.
"""

from shared.models.tensorrt.calibration import calibration_inputs, model_family
from shared.models.tensorrt.checks import PCK_AGREEMENT, PCK_LABELS, check_engine, compare_outputs
from shared.models.tensorrt.engines import build_engine
from shared.models.tensorrt.export import TensorRTExportConfig, TensorRTExportResult, describe, export_tensorrt
from shared.models.tensorrt.runtime import (
    CudaBuffers,
    EngineRunner,
    require_tensorrt,
    tensorrt_available,
    tensorrt_import_error,
)

__all__ = [
    "PCK_AGREEMENT",
    "PCK_LABELS",
    "CudaBuffers",
    "EngineRunner",
    "TensorRTExportConfig",
    "TensorRTExportResult",
    "build_engine",
    "calibration_inputs",
    "check_engine",
    "compare_outputs",
    "describe",
    "export_tensorrt",
    "model_family",
    "require_tensorrt",
    "tensorrt_available",
    "tensorrt_import_error",
]
