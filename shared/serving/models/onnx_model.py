"""onnx kind (`detector`, `hand_landmarks` of the `python` deploy backend): a network run by
onnxruntime inside the python backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.serving.models.base import BlsInfer, Inputs, RequestError, ServedModel, io_names


class OnnxModel(ServedModel):
    """An ONNX network run by onnxruntime inside the python backend (the `python` deploy
    backend), through the in-process `OnnxRunner` (same session options, same numbers).
    Requests Triton's dynamic batcher merged run as one batch per input shape."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.inference.backends import ModelRef, OnnxRunner

        path = self.model_dir / self.params.get("onnx_file", "model.onnx")
        self.runner = OnnxRunner(ModelRef(self.params.get("model_type", self.name), weights=str(path),
                                          threads=int(self.params.get("threads", 0))))
        self.input_names, self.output_names = io_names(model_config)
        if self.input_names != [self.runner.input_name]:
            raise ValueError(f"{self.name}: config inputs {self.input_names} but {path.name} takes "
                             f"[{self.runner.input_name!r}]; redeploy so config and file agree")

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        name = self.input_names[0]
        results: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, get in enumerate(requests):
            x = get(name)
            if x is None:  # Triton rejects this before the model; keep the message clear if it ever does not
                results[i] = RequestError(f"{self.name}: missing input {name}")
                continue
            x = np.asarray(x)
            if x.dtype.kind == "f" and not np.isfinite(x).all():  # the client's fault, not the model's
                results[i] = RequestError(f"{self.name}: input {name} holds NaN or infinite values")
                continue
            groups.setdefault((x.shape[1:], x.dtype.str), []).append((i, x))
        for members in groups.values():
            try:
                outs = self.runner(np.concatenate([x for _, x in members]))
            except Exception as exc:  # noqa: BLE001 - every request of the group gets the error
                for i, _ in members:
                    results[i] = exc
                continue
            start = 0
            for i, x in members:
                results[i] = {n: np.ascontiguousarray(outs[n][start:start + len(x)]) for n in self.output_names}
                start += len(x)
        return results
