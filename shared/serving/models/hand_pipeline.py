"""hand_pipeline kind: the tracking-mode pipeline of one video stream per correlation id.

Why `hand_pipeline` is a python model and not an ensemble: an ensemble is a fixed graph
of whole-tensor steps, but the pipeline's middle is data dependent. Its ROIs come either
from the detector or from the previous frame's landmarks of the same stream (the detector
is skipped while hands are followed), a frame has 0..max_hands crops that are warped out
of the image one by one, and the step after the crop model (landmarks back to pixels,
presence filter, duplicates, tracker) needs the crops' affine maps and the stream's
tracker state. So `hand_pipeline` keeps one `shared.inference.pipeline.HandPipeline` per
correlation id (START resets it, END frees it, idle streams expire with Triton's
`max_sequence_idle_microseconds`): the in-process code itself, hence the same results.
Its two networks run one of two ways (`networks` in its params, deploy
--pipeline_networks):

- `bls`: BLS calls to the served `detector` and `hand_landmarks`, which are versioned and
  dynamically batched across streams, and may be TensorRT plans on a GPU Triton (the
  default for the tensorrt / onnxruntime backends);
- `local`: onnxruntime inside `hand_pipeline` on copies of the same ONNX files (the default
  for the `python` backend, where the networks are onnxruntime on the same CPU anyway and
  a BLS call is one more round trip between processes per network; benchmarks/triton.py
  measures both).

Per frame that is one gRPC request (the image in the message, or in a shared-memory
region for a client on the same host) and, with `bls`, at most two BLS calls (none to the
detector while every hand is followed). Each response also carries TIMING, the
pipeline's own milliseconds per stage, so a client can tell serving overhead from compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.inference.detectors import DetectorSpec
from shared.serving.models.base import (
    BlsInfer,
    BlsRunner,
    Inputs,
    ServedModel,
    check_image,
    make_detector,
    optional_timestamp,
    require,
)
from shared.serving.models.tensors import (
    IMAGE,
    LOCAL_FILES,
    MODEL_DETECTOR,
    MODEL_LANDMARKS,
    TIMING,
    empty_hands,
    results_to_tensors,
    timing_tensor,
)
from shared.serving.sequences import SequenceControls, SequenceStore, idle_timeout_s, read_controls


class PipelineNetworksModel(ServedModel):
    """What every served hand pipeline holds: its settings (`pipeline_cfg`), the detector and the
    crop model. The two networks run either through BLS calls to the served `detector` and
    `hand_landmarks` (`networks: bls`, see the module docstring) or, `networks: local`, with
    onnxruntime inside this model on copies of the same ONNX files (deploy's default for the
    `python` backend on CPU, where each BLS hop is a round trip between processes that costs
    more than it saves; the served networks stay available to other clients)."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.inference.backends import CropModel, ModelRef, OnnxRunner
        from shared.inference.pipeline import PipelineConfig

        self.pipeline_cfg = PipelineConfig(**self.params.get("pipeline", {}))
        det = DetectorSpec.from_dict(self.params["detector"])
        lm = self.params["landmarks"]
        self.networks = self.params.get("networks", "bls")
        if self.networks == "local":
            threads = int(self.params.get("threads", 0))
            det_runner = OnnxRunner(ModelRef(det.kind, str(self.model_dir / LOCAL_FILES[MODEL_DETECTOR]),
                                             img_size=det.img_size, threads=threads))
            lm_runner = OnnxRunner(ModelRef("blazehand", str(self.model_dir / LOCAL_FILES[MODEL_LANDMARKS]),
                                            img_size=int(lm["img_size"]), threads=threads))
        elif self.networks == "bls":
            if infer is None:
                raise ValueError("hand_pipeline with networks=bls needs a BLS infer function")
            det_runner = BlsRunner(infer, det.model, det.input_name, det.output_names, det.max_batch)
            lm_runner = BlsRunner(infer, lm.get("model", MODEL_LANDMARKS), lm["input_name"], lm["output_names"],
                                  lm.get("max_batch"))
        else:
            raise ValueError(f"hand_pipeline: networks must be 'bls' or 'local', got {self.networks!r}")
        self.detector = make_detector(det, det_runner)
        self.crop_model = CropModel(lm_runner, img_size=int(lm["img_size"]),
                                    gesture_trained=bool(lm["gesture_trained"]))


class HandPipelineModel(PipelineNetworksModel):
    """hand_pipeline: the tracking-mode `HandPipeline` of one stream per correlation id, all
    streams on the networks of `PipelineNetworksModel`."""

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(model_config, model_dir, infer)
        self.streams = SequenceStore(factory=self._new_stream, idle_timeout_s=idle_timeout_s(model_config),
                                     clock=clock)

    def _new_stream(self):
        from shared.inference.pipeline import HandPipeline

        return HandPipeline(self.pipeline_cfg, detector=self.detector, crop_model=self.crop_model)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        """The frames of all streams in this batch (Triton's sequence batcher puts at most one
        request of a stream in a batch) go through the networks together: one detector call for
        the streams that look for hands, one crop-model call for every hand of every stream
        (`process_streams`); each stream keeps its own tracker. A bad request gets its own error."""
        from shared.inference.pipeline import process_streams

        self.streams.expire()
        out: list[dict[str, np.ndarray] | Exception] = [RuntimeError("not run")] * len(requests)
        batch: list[tuple[int, SequenceControls, np.ndarray, float | None]] = []
        for i, get in enumerate(requests):
            try:
                ctl = read_controls(get)
                if not ctl.ready:  # a padding slot of the direct strategy
                    out[i] = {**empty_hands(), TIMING.name: timing_tensor(None)}
                    continue
                batch.append((i, ctl, check_image(require(get, IMAGE, self.name), self.name),
                              optional_timestamp(get, self.name)))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                out[i] = exc
        while batch:  # one round per frame of a stream (never two frames of one stream in one call)
            now, later, seen = [], [], set()
            for b in batch:
                (later if b[1].corrid in seen else now).append(b)
                seen.add(b[1].corrid)
            batch = later
            pipes = [self.streams.get(ctl.corrid, start=ctl.start) for _, ctl, _, _ in now]
            try:
                results = process_streams(pipes, [im for _, _, im, _ in now], [ts for _, _, _, ts in now])
            except Exception as exc:  # noqa: BLE001 - the networks failed: every request of the round hears it
                results = [exc] * len(now)
            for (i, ctl, _, _), pipe, hands in zip(now, pipes, results):
                if ctl.end:
                    self.streams.end(ctl.corrid)
                if isinstance(hands, Exception):
                    out[i] = hands
                    continue
                out[i] = {**results_to_tensors(hands), TIMING.name: timing_tensor(pipe.last_timing)}
        return out
