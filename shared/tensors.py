"""Tensor definitions shared by ONNX export, TensorRT and Triton configs, and batched calls.

A model's inputs and outputs are declared once as `TensorSpec`s (in the model's
own module); the exporter names ONNX tensors from them and every Triton
`config.pbtxt` is generated from them, never written by hand twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", "uint8", ...
    shape: tuple[int, ...]  # without the batch axis; -1 = variable
    doc: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def triton_dtype(self) -> str:
        return "TYPE_" + {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
                          "uint8": "UINT8", "bool": "BOOL", "object": "STRING", "bytes": "STRING"}[self.dtype]


def run_batched(runner: Callable[[np.ndarray], dict[str, np.ndarray]] | Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a network runner (`runner(x) -> {output: array}`, `runner.max_batch`: its largest batch or
    None) in chunks of its max batch; one call when it has none or `x` fits."""
    limit = runner.max_batch or len(x)
    if len(x) <= limit:
        return runner(x)
    parts = [runner(x[i:i + limit]) for i in range(0, len(x), limit)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
