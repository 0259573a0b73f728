"""The in-process twin of a deployed repository: its served settings, and the `HandPipeline`
that `hand_pipeline` runs, on the same ONNX files (tests and benchmarks compare against it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.inference.detectors import DetectorSpec
from shared.serving.models.base import make_detector
from shared.serving.models.tensors import MODEL_LANDMARKS, MODEL_PIPELINE


def served_parameters(repo: str | Path, model: str) -> dict[str, Any]:
    """The JSON `config` parameter of a deployed model's config.pbtxt (parsed with Triton's schema)."""
    from shared.serving.triton_config import parse_pbtxt

    proto = parse_pbtxt((Path(repo) / model / "config.pbtxt").read_text())
    return json.loads(proto.parameters["config"].string_value) if "config" in proto.parameters else {}


def local_pipeline(repo: str | Path, threads: int = 0) -> Any:
    """The in-process twin of a deployed `hand_pipeline`: a `HandPipeline` with the same
    settings, running the same ONNX files (newest versions) with onnxruntime. Benchmarks and
    tests compare the server against it. Needs an onnxruntime or python deployment (a
    tensorrt one holds no ONNX file)."""
    from shared.inference.backends import CropModel, ModelRef, OnnxRunner
    from shared.inference.pipeline import HandPipeline, PipelineConfig
    from shared.serving.repository import model_versions

    repo = Path(repo)
    params = served_parameters(repo, MODEL_PIPELINE)
    det = DetectorSpec.from_dict(params["detector"])
    lm = params["landmarks"]

    def onnx_file(name: str) -> str:
        versions = model_versions(repo, name)
        path = repo / name / str(versions[-1]) / "model.onnx" if versions else repo / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX file (a tensorrt deployment has only plans)")
        return str(path)

    detector = make_detector(det, OnnxRunner(ModelRef(det.kind, onnx_file(det.model), img_size=det.img_size,
                                                      threads=threads)))
    crop = CropModel(OnnxRunner(ModelRef("blazehand", onnx_file(lm.get("model", MODEL_LANDMARKS)),
                                         img_size=int(lm["img_size"]), threads=threads)),
                     img_size=int(lm["img_size"]), gesture_trained=bool(lm["gesture_trained"]))
    return HandPipeline(PipelineConfig(**params["pipeline"]), detector=detector, crop_model=crop)
