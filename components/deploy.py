"""Write (or update) a Triton model repository for the hand pipeline.

    python -m components.deploy --triton_repo triton_repo --backend python
    python -m components.deploy --triton_repo triton_repo --backend onnxruntime \\
        --onnx outputs/export/hand_landmarks.onnx --palm_onnx outputs/export/blazepalm.onnx
    python -m components.deploy --triton_repo triton_repo --backend tensorrt --engine hand_fp16.plan
    python -m components.deploy --triton_repo triton_repo --detector yolo --yolo_model runs/detect/best.pt

Exports what it is not given (the crop model from --model_type/--model_weights, MediaPipe's
palm detector, a YOLO .pt through Ultralytics' exporter; TensorRT engines where TensorRT
imports), then adds one version of every model (see shared/serving/models/):

    detector, hand_landmarks   the networks: model.plan (tensorrt_plan), model.onnx
                               (onnxruntime_onnx) or model.onnx run by onnxruntime inside a
                               python model (`python`: every Triton build, the CPU one too);
                               dynamic batching
    detector_preprocess/_postprocess + hand_detection (ensemble)   stateless detection
    tracker                    stateful (sequence batching): HandTracker per stream
    hand_pipeline              stateful python model: the tracking-mode pipeline per stream, its
                               networks through BLS or in-process (--pipeline_networks)
    hands                      stateless python model: the static-mode pipeline, one image in,
                               its hands out, no sequence id (generic clients, curl); gesture and
                               handedness names in its config parameters

Every config.pbtxt is generated from the tensor specs (shared/models/specs.py and
shared.serving.models), each model gets a new version directory, and `version_policy` keeps the last
--keep_versions. `deploy.json` next to the models records what was deployed. With
--smoke_test and `.venv-triton` present, a local Triton is started on free loopback ports,
one frame goes through `hand_pipeline`, and the server stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import (
    FLAGS,
    add_config_args,
    build_config,
    check_outputs,
    check_writable,
    config_to_dict,
    load_config,
    option,
)
from shared.errors import UserError, run_cli
from shared.hand import GESTURE_NONE, GESTURE_UNKNOWN, GESTURES, HANDEDNESS
from shared.inference.detectors import DETECTORS, DetectorSpec, detector_kind
from shared.models.specs import check_against_spec, onnx_io
from shared.serving.model_templates import python_model_source
from shared.serving.models import (
    DETECTION_OUTPUTS,
    HAND_TENSORS,
    HANDS_GESTURE_PROBS,
    HANDS_OUTPUTS,
    IMAGE,
    IMAGE_HW,
    LETTERBOX,
    LOCAL_FILES,
    MODEL_DETECTION,
    MODEL_DETECTOR,
    MODEL_HANDS,
    MODEL_LANDMARKS,
    MODEL_PIPELINE,
    MODEL_POSTPROCESS,
    MODEL_PREPROCESS,
    MODEL_TRACKER,
    PARAMS_FILE,
    PIPELINE_INPUTS,
    PIPELINE_OPTIONAL,
    PIPELINE_OUTPUTS,
    TRACKER_INPUTS,
    TRACKER_OPTIONAL,
    python_model_parameters,
)
from shared.serving.repository import deploy_model, model_versions
from shared.serving.triton_config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    SequenceBatching,
)
from shared.tensors import TensorSpec

DEPLOY_BACKENDS = ("tensorrt", "onnxruntime", "python")


@dataclass
class DeployConfig:
    triton_repo: str = option("triton_repo", "the Triton model repository to write (created if missing)", output="dir")
    backend: str = option("python", "how the networks run: tensorrt (model.plan, GPU Triton), onnxruntime "
                                    "(model.onnx, any full Triton) or python (onnxruntime inside the python "
                                    "backend: every Triton build, including the bundled CPU one)",
                          metadata={"choices": list(DEPLOY_BACKENDS)})
    detector: str = option("blazepalm", "hand detector: blazepalm (MediaPipe's palm detector) or yolo",
                           metadata={"choices": list(DETECTORS)})
    yolo_model: str = option("", "--detector yolo: a trained Ultralytics .pt (exported here) or .onnx")
    model_weights: str = option("mediapipe", "crop-model weights to export when --onnx is not given: 'mediapipe' "
                                             "or a .pth")
    model_type: str = option("blazehand_full", "crop model type (blazehand_full | blazehand_lite)")
    onnx: str = option("", "a ready hand_landmarks ONNX (dynamic batch); exported when empty")
    precision: str = option("fp32", "crop model: fp32, or int8 (--backend python / onnxruntime): the shipped int8 "
                                    "BlazeHand, or --onnx an int8 file from `components.export onnx --precision "
                                    "int8`, served as it is",
                            choices=["fp32", "int8"])
    palm_onnx: str = option("", "a ready palm detector ONNX (dynamic batch); exported from MediaPipe's weights "
                                "when empty")
    engine: str = option("", "--backend tensorrt: a ready hand_landmarks TensorRT plan; built when empty "
                             "(needs TensorRT here)")
    palm_engine: str = option("", "--backend tensorrt: a ready detector plan; built when TensorRT imports, else "
                                  "the detector is served by onnxruntime")
    keep_versions: int = option(3, "versions kept per model (version_policy latest N; older folders deleted)", min=1)
    max_batch_size: int = option(8, "largest batch of the networks (dynamic batching across streams)", min=1)
    smoke_test: bool = option(False, "when .venv-triton exists: start a local Triton on free loopback ports, "
                                     "send one frame through hand_pipeline, stop it")
    img_size: int = option(224, "crop side of the crop model", min=16)
    gesture_head: str = option("auto", "whether the crop model's gesture output is trained: auto (MediaPipe "
                                       "weights have no gesture head; a given .onnx is judged by its export "
                                       "summary .json), trained or untrained",
                               metadata={"choices": ["auto", "trained", "untrained"]})
    max_hands: int = option(4, "at most this many hands per frame (hand_pipeline)", min=1)
    max_streams: int = option(8, "hand_pipeline / tracker: at most this many streams' frames in one batched call "
                                 "(max_batch_size; with --sequence_strategy direct also the streams an instance "
                                 "serves at once)", min=1)
    sequence_strategy: str = option("oldest", "Triton's sequence batcher for the stateful models: oldest (streams "
                                              "share batched calls: each batch takes the oldest waiting frame of up "
                                              "to --max_streams streams) or direct (one fixed batch slot per stream)",
                                    metadata={"choices": ["oldest", "direct"]})
    max_sequences: int = option(64, "--sequence_strategy oldest: live streams per instance (more wait until one "
                                    "ends or idles out)", min=1)
    sequence_delay_us: int = option(0, "--sequence_strategy oldest: how long a batch waits for more streams' frames "
                                       "(us; 0 = batch what is waiting)", min=0)
    idle_timeout_s: float = option(30.0, "a stream silent for this long is dropped (its next frame must START)",
                                   min=0.0)
    pipeline_instances: int = option(2, "hand_pipeline instances (each a process; Triton spreads the streams over "
                                        "them, so one stream's Python work overlaps another's network time)", min=1)
    pipeline_networks: str = option("auto", "how hand_pipeline runs the two networks: bls (calls the served detector "
                                            "and hand_landmarks), local (onnxruntime inside hand_pipeline on copies "
                                            "of the same ONNX files) or auto (local for --backend python, else bls)",
                                    metadata={"choices": ["auto", "bls", "local"]})
    queue_delay_us: int = option(200, "dynamic batching: how long a network request may wait for others (us)", min=0)
    threads: int = option(0, "--backend python: onnxruntime threads per network (0 = onnxruntime's default)", min=0)
    fp16: bool = option(True, "--backend tensorrt: build engines with FP16 kernels")
    work_dir: str = option("", "where exports made here are cached ('' = <cache>/exports; "
                                       "cache: $HANDOPS_CACHE, the checkout's .cache or ~/.cache/handops)")
    model_id: str = option("", "deploy a REGISTERED crop model: its ClearML model id (with a server), or offline an id "
                               "recorded in a model_store.jsonl under --model_store (what the pipeline writes)")
    model_name: str = option("", "... or its registered name (with --model_version; the latest when 0)")
    model_version: int = option(0, "version of --model_name: the Nth registration of that name (1 = first)", min=0)
    model_store: str = option("outputs", "offline: the folder searched for model_store.jsonl records")
    pipeline: dict = option({}, "more HandPipeline settings for hand_pipeline (YAML only), e.g. {detect_interval: "
                                "10, min_presence: 0.6}; see shared/inference/pipeline.py")


@dataclass
class DeployResult:
    triton_repo: str
    models: dict[str, int]  # name -> version written
    smoke: dict | None = None  # the smoke request's outcome (None when not asked for)
    backend: str = ""
    detector_backend: str = ""  # may differ from `backend` (tensorrt without a detector plan)
    files: dict[str, str] = field(default_factory=dict)  # what was deployed: hand_onnx, palm_onnx, engine, ...
    summary_path: str = ""


# --------------------------------------------------------------------------- artefacts


def _work_dir(cfg: DeployConfig) -> Path:
    if cfg.work_dir:
        return Path(cfg.work_dir)
    from shared.paths import cache_root

    return cache_root() / "exports"


def hand_model_onnx(cfg: DeployConfig) -> tuple[Path, Any, bool]:
    """(ONNX path, spec, gesture head trained) of the crop model, exported when not given."""
    from shared.inference.backends import ModelRef, crop_model_weights, gesture_trained_from_summary
    from shared.models.registry import resolve_name
    from shared.models.specs import blazehand_spec

    model_type = resolve_name(cfg.model_type)
    if not model_type.startswith("blazehand"):
        raise UserError(f"--model_type {cfg.model_type}: the hand pipeline's crop model is blazehand_full or "
                        "blazehand_lite")
    if cfg.precision == "int8" and cfg.backend == "tensorrt":
        raise UserError("--precision int8 is ONNX Runtime's int8 (--backend python or onnxruntime); TensorRT "
                        "builds its own INT8 engine: python -m components.export tensorrt --int8")
    if cfg.precision == "int8" and not cfg.onnx:
        cfg = dataclasses.replace(cfg, onnx=crop_model_weights(model_type, cfg.model_weights, "int8", "onnxruntime"))
    if cfg.onnx:
        path = Path(cfg.onnx)
        if not path.is_file() or path.suffix.lower() != ".onnx":
            raise UserError(f"--onnx {cfg.onnx}: no such .onnx file; export one with `python -m components.export "
                            "onnx --dynamic_batch` or leave --onnx empty to export here")
        trained = gesture_trained_from_summary(path)
    else:
        weights = cfg.model_weights
        if weights != "mediapipe" and (not Path(weights).is_file() or Path(weights).suffix.lower() == ".onnx"):
            raise UserError(f"--model_weights {weights}: expected 'mediapipe' or an existing .pth to export (pass a "
                            "ready ONNX with --onnx)")
        ref = ModelRef(model_type, weights, img_size=cfg.img_size, work_dir=str(_work_dir(cfg)))
        path = ref.onnx_path()
        from shared.inference.backends import _gesture_head_trained

        trained = _gesture_head_trained(ref)
        summary = path.with_suffix(".json")
        if not summary.is_file():  # so that a later deploy given this file (--onnx) knows it too
            summary.write_text(json.dumps({"model_type": model_type, "weights": weights,
                                           "gesture_head_trained": trained, "written_by": "components.deploy"}))
    if cfg.gesture_head != "auto":
        trained = cfg.gesture_head == "trained"
    _, outputs, _ = onnx_io(path)
    gestures = next((t.shape[0] for t in outputs if t.name == "gesture_probs"), None)
    spec = blazehand_spec(model_type, cfg.img_size, gestures if gestures and gestures > 0 else 5)
    check_against_spec(path, spec)
    return path, spec, trained


def detector_onnx(cfg: DeployConfig) -> tuple[Path, list[TensorSpec], list[TensorSpec], DetectorSpec]:
    """The detector network as ONNX (exported when not given) and how to decode it: the detector's
    own `served` (shared.inference.detectors)."""
    kind = detector_kind(cfg.detector)
    model = getattr(cfg, kind.model_option, "") if kind.model_option else ""  # --palm_onnx, --yolo_model
    net = kind.served(model, _work_dir(cfg), max_batch=cfg.max_batch_size, max_detections=cfg.max_hands,
                      settings=dict(cfg.pipeline))
    return net.onnx_path, net.inputs, net.outputs, net.spec


def tensorrt_plan(cfg: DeployConfig, onnx_path: Path, given: str, img_size: int, name: str) -> Path | None:
    """A TensorRT plan for `onnx_path`: the given one, one built here, or None when TensorRT is absent."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"{name} plan {given}: no such file; build it with `python -m components.export tensorrt`")
        return path
    from shared.models.tensorrt import build_engine, tensorrt_import_error

    if tensorrt_import_error() is not None:
        return None
    out = _work_dir(cfg) / f"{onnx_path.stem}_b{cfg.max_batch_size}_{'fp16' if cfg.fp16 else 'fp32'}.plan"
    if not out.is_file():
        build_engine(onnx_path, out, img_size=img_size, fp16=cfg.fp16, min_batch=1,
                     opt_batch=max(1, cfg.max_batch_size // 2), max_batch=cfg.max_batch_size)
    return out


# --------------------------------------------------------------------------- model configs


def _instances(backend: str, count: int = 1) -> list[InstanceGroup]:
    kind = {"tensorrt": "KIND_GPU", "onnxruntime": "KIND_AUTO"}.get(backend, "KIND_CPU")
    return [InstanceGroup(kind=kind, count=count)]


def network_model(cfg: DeployConfig, name: str, backend: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                  onnx_path: Path, plan: Path | None, model_type: str) -> tuple[ModelConfig, dict[str, Any], bool]:
    """(config, files, include_shared) of one network in the chosen backend."""
    batching = DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us)
    common = dict(name=name, inputs=inputs, outputs=outputs, max_batch_size=cfg.max_batch_size,
                  dynamic_batching=batching, keep_versions=cfg.keep_versions, instance_groups=_instances(backend),
                  labels=gesture_labels(outputs))
    if backend == "tensorrt":
        return ModelConfig(backend="tensorrt", **common), {"model.plan": plan}, False
    if backend == "onnxruntime":
        return ModelConfig(backend="onnxruntime", **common), {"model.onnx": onnx_path}, False
    params = python_model_parameters("onnx", {"model_type": model_type, "threads": cfg.threads})
    files = {"model.py": python_model_source(), "model.onnx": onnx_path}
    return ModelConfig(backend="python", parameters=params, **common), files, True


def gesture_labels(outputs: list[TensorSpec]) -> dict[str, tuple[str, ...]]:
    """The crop model's gesture probabilities carry our class names (Triton's classification
    extension: a request with `class_count` gets "score:index:label")."""
    return {t.name: GESTURES for t in outputs if t.name == "gesture_probs"}


def detection_models(cfg: DeployConfig, det_inputs: list[TensorSpec], det_outputs: list[TensorSpec],
                     det: DetectorSpec) -> list[tuple[ModelConfig, dict[str, Any], bool]]:
    """detector_preprocess -> detector -> detector_postprocess, and the hand_detection ensemble."""
    params = {"detector": dataclasses.asdict(det)}
    pre = ModelConfig(name=MODEL_PREPROCESS, backend="python", inputs=[IMAGE], outputs=[*det_inputs, LETTERBOX,
                      IMAGE_HW], max_batch_size=1, keep_versions=cfg.keep_versions,
                      parameters=python_model_parameters("preprocess", params))
    post = ModelConfig(name=MODEL_POSTPROCESS, backend="python", inputs=[*det_outputs, LETTERBOX, IMAGE_HW],
                       outputs=list(DETECTION_OUTPUTS), max_batch_size=1, keep_versions=cfg.keep_versions,
                       parameters=python_model_parameters("postprocess", params))
    ensemble = ModelConfig(
        name=MODEL_DETECTION, backend="ensemble", inputs=[IMAGE], outputs=list(DETECTION_OUTPUTS), max_batch_size=1,
        keep_versions=cfg.keep_versions, ensemble_steps=[
            EnsembleStep(MODEL_PREPROCESS, input_map={IMAGE.name: IMAGE.name},
                         output_map={**{t.name: f"detector_{t.name}" for t in det_inputs},
                                     LETTERBOX.name: LETTERBOX.name, IMAGE_HW.name: IMAGE_HW.name}),
            EnsembleStep(MODEL_DETECTOR, input_map={t.name: f"detector_{t.name}" for t in det_inputs},
                         output_map={t.name: f"detector_{t.name}" for t in det_outputs}),
            EnsembleStep(MODEL_POSTPROCESS,
                         input_map={**{t.name: f"detector_{t.name}" for t in det_outputs},
                                    LETTERBOX.name: LETTERBOX.name, IMAGE_HW.name: IMAGE_HW.name},
                         output_map={t.name: t.name for t in DETECTION_OUTPUTS}),
        ])
    return [(pre, {"model.py": python_model_source()}, True), (post, {"model.py": python_model_source()}, True),
            (ensemble, {}, False)]


def pipeline_settings(cfg: DeployConfig) -> Any:
    """The HandPipeline settings (`PipelineConfig`) the served pipelines run with, validated here, at
    deploy time by the config loader's checks (unknown keys, types, ranges) and PipelineConfig's own;
    the deploy's own settings win over the `pipeline` mapping."""
    from shared.inference.pipeline import PipelineConfig

    fixed = {"detector": cfg.detector, "model_type": cfg.model_type, "img_size": cfg.img_size,
             "max_hands": cfg.max_hands, "backend": "onnxruntime", "yolo_model": "", "model_weights": "mediapipe"}
    return build_config(PipelineConfig, [("pipeline", cfg.pipeline), (FLAGS, fixed)])


def pipeline_networks(cfg: DeployConfig) -> str:
    """bls or local (see `shared.serving.models.hand_pipeline`): `auto` = local for the python
    backend, where the networks are onnxruntime on this CPU anyway and each BLS hop is a
    round trip between processes (benchmarks/triton.py measures both), bls for GPU backends."""
    if cfg.pipeline_networks != "auto":
        return cfg.pipeline_networks
    return "local" if cfg.backend == "python" else "bls"


def stateful_models(cfg: DeployConfig, det: DetectorSpec, lm_spec: Any, gesture_trained: bool,
                    onnx_files: dict[str, Path]) -> list[tuple[ModelConfig, dict[str, Any], bool]]:
    """tracker and hand_pipeline: python, sequence batching (one correlation id = one stream)."""
    seq = SequenceBatching(max_sequence_idle_microseconds=int(cfg.idle_timeout_s * 1e6),
                           strategy=cfg.sequence_strategy, max_candidate_sequences=cfg.max_sequences,
                           max_queue_delay_microseconds=cfg.sequence_delay_us)
    settings = pipeline_settings(cfg)
    pipe_cfg = config_to_dict(settings)
    tracker = ModelConfig(
        name=MODEL_TRACKER, backend="python", inputs=list(TRACKER_INPUTS), outputs=list(HAND_TENSORS),
        optional_inputs=TRACKER_OPTIONAL, max_batch_size=cfg.max_streams, sequence_batching=seq,
        keep_versions=cfg.keep_versions,
        parameters=python_model_parameters(
            "tracker", {"tracker": config_to_dict(settings.tracker_config())}))
    landmarks = {"model": MODEL_LANDMARKS, "input_name": lm_spec.input_names[0],
                 "output_names": lm_spec.output_names, "img_size": cfg.img_size, "max_batch": cfg.max_batch_size,
                 "gesture_trained": gesture_trained}
    networks = pipeline_networks(cfg)
    files: dict[str, Any] = {"model.py": python_model_source()}
    if networks == "local":
        files.update({LOCAL_FILES[name]: path for name, path in onnx_files.items()})
    pipeline = ModelConfig(
        name=MODEL_PIPELINE, backend="python", inputs=list(PIPELINE_INPUTS), outputs=list(PIPELINE_OUTPUTS),
        optional_inputs=PIPELINE_OPTIONAL, max_batch_size=cfg.max_streams, sequence_batching=seq,
        keep_versions=cfg.keep_versions, instance_groups=[InstanceGroup("KIND_CPU", cfg.pipeline_instances)],
        parameters=python_model_parameters("hand_pipeline", {
            "pipeline": pipe_cfg, "detector": dataclasses.asdict(det), "landmarks": landmarks, "networks": networks,
            "threads": cfg.threads}))
    # hands: the same networks and settings in static mode, stateless (no sequence id); label names
    # in its parameters so a generic client can read what GESTURE / HANDEDNESS numbers mean.
    hands = ModelConfig(
        name=MODEL_HANDS, backend="python", inputs=[IMAGE], outputs=list(HANDS_OUTPUTS),
        labels={HANDS_GESTURE_PROBS.name: GESTURES * cfg.max_hands}, max_batch_size=cfg.max_streams,
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us),
        keep_versions=cfg.keep_versions, instance_groups=[InstanceGroup("KIND_CPU", cfg.pipeline_instances)],
        parameters={**python_model_parameters("hands", {
                        "pipeline": {**pipe_cfg, "static": True}, "detector": dataclasses.asdict(det),
                        "landmarks": landmarks, "networks": networks, "threads": cfg.threads}),
                    "gesture_names": json.dumps({**{str(i): g for i, g in enumerate(GESTURES)},
                                                 str(GESTURE_UNKNOWN): "unknown", str(GESTURE_NONE): None}),
                    "handedness_names": json.dumps({"0": HANDEDNESS[0], "1": HANDEDNESS[1], "-1": None})})
    return [(tracker, {"model.py": python_model_source()}, True), (pipeline, files, True),
            (hands, files, True)]


# --------------------------------------------------------------------------- the stage


def _check(cfg: DeployConfig) -> None:
    if cfg.backend not in DEPLOY_BACKENDS:
        raise UserError(f"--backend {cfg.backend!r} is not one of {', '.join(DEPLOY_BACKENDS)}")
    if cfg.detector not in DETECTORS:
        raise UserError(f"--detector {cfg.detector!r} is not one of {', '.join(DETECTORS)}")
    for name in ("keep_versions", "max_batch_size", "max_hands", "max_streams", "pipeline_instances", "max_sequences"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_batch_size < cfg.max_hands:
        raise UserError(f"--max_batch_size {cfg.max_batch_size} < --max_hands {cfg.max_hands}: one frame's crops "
                        "go to hand_landmarks as one batch; raise --max_batch_size")
    if cfg.idle_timeout_s <= 0:
        raise UserError(f"--idle_timeout_s must be > 0, got {cfg.idle_timeout_s}")
    if not cfg.triton_repo:
        raise UserError("--triton_repo is required (the folder to write the model repository to)")
    repo = Path(cfg.triton_repo)
    if repo.exists() and not repo.is_dir():
        raise UserError(f"--triton_repo {repo} exists and is not a folder")


def _store_records(root: Path) -> list[dict[str, Any]]:
    """Every model registration under `root` (the `model_store.jsonl` files the pipeline writes
    beside its weights), oldest first, each with its `version`: the Nth registration of its name."""
    records: list[dict[str, Any]] = []
    for store in sorted(root.rglob("model_store.jsonl"), key=lambda p: p.stat().st_mtime):
        for n, line in enumerate(store.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append({**json.loads(line), "store": str(store)})
                except json.JSONDecodeError:
                    raise UserError(f"{store}:{n}: not a JSON line; the model store file is damaged") from None
    seen: dict[str, int] = {}
    for rec in records:
        seen[rec.get("name", "")] = rec["version"] = seen.get(rec.get("name", ""), 0) + 1
    return records


def resolve_registered(cfg: DeployConfig) -> dict[str, Any] | None:
    """The registered model `--model_id` / `--model_name` [+ `--model_version`] names, as
    {"id", "name", "version", "path", "precision", "metrics"}; None when none is asked for.
    With a ClearML server: the model's weights fetched by the SDK; without one: the offline
    store records under `--model_store`."""
    if not cfg.model_id and not cfg.model_name:
        if cfg.model_version:
            raise UserError("--model_version needs --model_name")
        return None
    from shared.logger import check_server, configured_server

    host = configured_server()
    if host and cfg.model_id and not cfg.model_id.startswith("offline-"):
        problem = check_server(host)
        if problem:
            raise UserError(f"--model_id {cfg.model_id}: the ClearML server {host} does not answer ({problem})")
        from clearml import Model

        try:
            model = Model(model_id=cfg.model_id)
            path = model.get_local_copy()
            meta = model.get_all_metadata_casted()
        except Exception as exc:  # noqa: BLE001 - the SDK raises several types for a bad id
            raise UserError(f"--model_id {cfg.model_id}: not found on {host} ({type(exc).__name__}); list models "
                            "in the ClearML UI (Models tab) or with clearml.Model.query_models()") from None
        return {"id": cfg.model_id, "name": model.name, "version": None, "path": str(path),
                "precision": meta.get("precision", "fp32"), "metrics": meta.get("metrics")}
    root = Path(cfg.model_store)
    if not root.is_dir():
        raise UserError(f"--model_store {root}: no such folder; pass the pipeline's output folder (it holds the "
                        "model_store.jsonl records)")
    records = _store_records(root)
    if cfg.model_id:
        hits = [r for r in records if r.get("model_id") == cfg.model_id]
        what = f"--model_id {cfg.model_id}"
    else:
        named = [r for r in records if r.get("name") == cfg.model_name]
        hits = [r for r in named if r["version"] == cfg.model_version] if cfg.model_version else named[-1:]
        what = f"--model_name {cfg.model_name}" + (f" --model_version {cfg.model_version}" if cfg.model_version else "")
    if not hits:
        known = ", ".join(sorted({f"{r.get('name')} v{r['version']} ({r.get('model_id')})" for r in records})[:12])
        raise UserError(f"{what}: no such registered model under {root} ({len(records)} registration(s): "
                        f"{known or 'none'}); pass one of them, or --model_store the folder the pipeline wrote")
    rec = hits[-1]
    path = Path(rec["path"])
    if not path.exists():
        raise UserError(f"{what}: its weights {path} are gone (recorded in {rec['store']}); re-run the step that "
                        "made them or deploy a file with --onnx")
    meta = rec.get("metadata") or {}
    return {"id": rec.get("model_id"), "name": rec.get("name"), "version": rec["version"], "path": str(path),
            "precision": meta.get("precision", "fp32"), "metrics": meta.get("metrics")}


def deploy(cfg: DeployConfig) -> DeployResult:
    """Export what is missing, then add a version of every model to `cfg.triton_repo`."""
    _check(cfg)
    check_outputs(cfg)
    if cfg.work_dir:
        check_writable(cfg.work_dir, "--work_dir", "dir")
    registered = resolve_registered(cfg)
    if registered:
        weights = Path(registered["path"])
        if weights.suffix.lower() == ".onnx":
            cfg = dataclasses.replace(cfg, onnx=str(weights))
        elif weights.suffix.lower() in (".pth", ".pt"):
            cfg = dataclasses.replace(cfg, model_weights=str(weights), onnx="")
        else:
            raise UserError(f"registered model {registered['name']} ({registered['id']}) is {weights.name}: not a crop "
                            "model (deploy takes a BlazeHand .onnx or .pth)")
    repo = Path(cfg.triton_repo)
    hand_onnx, lm_spec, gesture_trained = hand_model_onnx(cfg)
    det_onnx, det_inputs, det_outputs, det = detector_onnx(cfg)
    hand_plan = det_plan = None
    det_backend = cfg.backend
    if cfg.backend == "tensorrt":
        hand_plan = tensorrt_plan(cfg, hand_onnx, cfg.engine, cfg.img_size, "hand_landmarks")
        if hand_plan is None:
            from shared.models.tensorrt import tensorrt_import_error

            raise UserError(f"--backend tensorrt without --engine needs TensorRT here ({tensorrt_import_error()}); "
                            "build the plan on the GPU host (`python -m components.export tensorrt`) and pass "
                            "--engine, or deploy --backend onnxruntime")
        det_plan = tensorrt_plan(cfg, det_onnx, cfg.palm_engine, det.img_size, "detector")
        if det_plan is None:
            det_backend = "onnxruntime"  # same GPU Triton, the ONNX Runtime backend runs the small palm net
            print("note: no detector plan and no TensorRT here: the detector is served by onnxruntime",
                  file=sys.stderr)

    models = [
        network_model(cfg, MODEL_DETECTOR, det_backend, det_inputs, det_outputs, det_onnx, det_plan, det.kind),
        network_model(cfg, MODEL_LANDMARKS, cfg.backend, list(lm_spec.inputs), list(lm_spec.outputs), hand_onnx,
                      hand_plan, lm_spec.model_type),
        *detection_models(cfg, det_inputs, det_outputs, det),
        *stateful_models(cfg, det, lm_spec, gesture_trained, {MODEL_DETECTOR: det_onnx, MODEL_LANDMARKS: hand_onnx}),
    ]
    if registered:  # what runs, readable from any client: get_model_config(...).parameters["served_model"]
        served = json.dumps({k: registered[k] for k in ("id", "name", "version", "precision", "metrics")},
                            default=str)
        models = [(dataclasses.replace(c, parameters={**c.parameters, "served_model": served}), f, sh)
                  for c, f, sh in models]
    repo.mkdir(parents=True, exist_ok=True)
    versions: dict[str, int] = {}
    for config, files, include_shared in models:
        if config.backend == "python" and "config" in config.parameters:
            files = {**files, PARAMS_FILE: config.parameters["config"]}  # this version's own settings
        versions[config.name] = int(deploy_model(repo, config, files, include_shared=include_shared).name)
    files = {"hand_onnx": str(hand_onnx), "detector_onnx": str(det_onnx)}
    if hand_plan:
        files["hand_plan"] = str(hand_plan)
    if det_plan:
        files["detector_plan"] = str(det_plan)
    result = DeployResult(triton_repo=str(repo), models=versions, backend=cfg.backend, detector_backend=det_backend,
                          files=files, summary_path=str(repo / "deploy.json"))
    if cfg.smoke_test:
        result.smoke = smoke_test(repo)
    summary = {**dataclasses.asdict(result), "gesture_head_trained": gesture_trained, "registered_model": registered,
               "kept_versions": {name: model_versions(repo, name) for name in versions},
               "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": config_to_dict(cfg)}
    # A file at the repository root is ignored by Triton (only folders are models).
    (repo / "deploy.json").write_text(json.dumps(summary, indent=2))
    return result


def smoke_test(repo: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    """Start a local Triton on free loopback ports, send one frame through hand_pipeline, stop.
    Returns {"ok": ...}; a missing .venv-triton is reported as skipped, not as a failure."""
    import cv2

    from shared.data.synthetic import SyntheticConfig, render_image
    from shared.serving.server import TritonNotInstalled, TritonServer, TritonStartError, find_triton
    from shared.serving.triton_backend import TritonHandClient

    try:
        install = find_triton()
    except TritonNotInstalled as exc:
        return {"ok": False, "skipped": str(exc)}
    sample = render_image(seed=0, index=0, cfg=SyntheticConfig(image_size=256, min_hands=1, max_hands=1))
    frame = cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB)
    server = TritonServer(repo, install=install)
    started = time.perf_counter()
    server.start()
    try:
        try:
            server.wait_ready(timeout_s=timeout_s)
        except TritonStartError as exc:
            return {"ok": False, "error": str(exc).splitlines()[0], "log": str(server.log_path)}
        ready_s = time.perf_counter() - started
        with TritonHandClient(server.grpc_url) as client:
            t0 = time.perf_counter()
            hands = client.infer(frame, stream_id=1, start=True, end=True)
            latency_ms = (time.perf_counter() - t0) * 1e3
        return {"ok": True, "server": server.server_version(), "ready_s": round(ready_s, 2),
                "latency_ms": round(latency_ms, 2), "hands": len(hands), "frame": list(frame.shape)}
    except Exception as exc:  # noqa: BLE001 - the smoke test reports, the deploy itself succeeded
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "log": str(server.log_path)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with DeployConfig keys (flags override it)")
    add_config_args(parser, DeployConfig, skip=("pipeline",))
    args = parser.parse_args(argv)
    cfg = load_config(DeployConfig, args.config, args)
    result = deploy(cfg)
    width = max(len(n) for n in result.models)
    for name, version in result.models.items():
        print(f"{name:{width}s}  version {version}")
    print(f"wrote {result.triton_repo} ({cfg.backend}; detector {result.detector_backend}); summary "
          f"{result.summary_path}")
    if result.smoke is not None:
        print(f"smoke test: {json.dumps(result.smoke)}")
        if not result.smoke.get("ok") and "skipped" not in result.smoke:
            return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
