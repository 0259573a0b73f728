"""Tensor definitions shared by ONNX export, TensorRT and Triton configs.

A model's inputs and outputs are declared once as `TensorSpec`s (in the model's
own module); the exporter names ONNX tensors from them and every Triton
`config.pbtxt` is generated from them, never written by hand twice.
"""

from __future__ import annotations

from dataclasses import dataclass

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
