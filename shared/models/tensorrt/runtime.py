"""TensorRT's runtime side: whether TensorRT imports, CUDA buffers, and running a built engine.

Written against TensorRT 10's Python API (named I/O tensors, `execute_async_v3`); device buffers
through cuda-python (`cuda.bindings.runtime`, or the older `cuda.cudart`), or pycuda
(requirements-gpu.txt). Nothing imports TensorRT at module level: where it does not import,
`tensorrt_import_error()` says why in one line and `require_tensorrt()` raises that as a UserError.
`EngineRunner` is the `shared.inference.backends` runner over a serialized engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import UserError

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


# --------------------------------------------------------------------------- running an engine


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
