"""Generate Triton `config.pbtxt` text from `TensorSpec` lists.

Every model config in the repository is built here from the same `TensorSpec`s the
exporter used to name the ONNX tensors, so a tensor name or shape is written once.

    cfg = ModelConfig(
        name="hand_landmarks", backend="onnxruntime", inputs=CROP_INPUTS, outputs=CROP_OUTPUTS,
        max_batch_size=16, dynamic_batching=DynamicBatching(max_queue_delay_microseconds=500),
        keep_versions=2,
    )
    text = cfg.to_pbtxt()

Backends (`ModelConfig.backend`):

    python       backend: "python"                               model.py
    onnxruntime  backend: "onnxruntime" platform: "onnxruntime_onnx"  model.onnx
    tensorrt     backend: "tensorrt"    platform: "tensorrt_plan"     model.plan
    ensemble     platform: "ensemble" (steps only, no files)

Stateful models use `SequenceBatching`: Triton routes every request of one correlation id
(= one video stream) to the same model instance and adds the START/END/READY/CORRID control
tensors to the request; `shared.serving.sequences.SequenceStore` keeps the per-stream state.
`parse_pbtxt` checks generated text against Triton's own protobuf schema (tritonclient),
so a typo fails in a unit test instead of at server start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.tensors import TensorSpec


@dataclass(frozen=True)
class BackendInfo:
    backend: str  # Triton `backend:` ("" for ensembles)
    platform: str  # Triton `platform:` ("" where the backend alone names it)
    model_file: str  # the file Triton loads from the version directory ("" for ensembles)


BACKENDS: dict[str, BackendInfo] = {
    "python": BackendInfo(backend="python", platform="", model_file="model.py"),
    "onnxruntime": BackendInfo(backend="onnxruntime", platform="onnxruntime_onnx", model_file="model.onnx"),
    "tensorrt": BackendInfo(backend="tensorrt", platform="tensorrt_plan", model_file="model.plan"),
    "ensemble": BackendInfo(backend="", platform="ensemble", model_file=""),
}

# numpy dtype name -> Triton data type, for the few types `TensorSpec.triton_dtype` does not list
# (CORRID is commonly UINT64, tracker ids may be wider than int32).
_EXTRA_DTYPES = {
    "float64": "TYPE_FP64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64", "string": "TYPE_STRING",
}

# Triton's own name rules are looser, but these names become directories and gRPC strings:
# keep them to characters that are safe everywhere.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CONTROL_KINDS = {"int32": "int32_false_true", "float32": "fp32_false_true", "bool": "bool_false_true"}
_CORRID_DTYPES = ("uint64", "int64", "uint32", "int32", "string")
_INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")


def triton_dtype(dtype: str) -> str:
    """numpy dtype name ("float32") -> Triton data type ("TYPE_FP32")."""
    try:
        return TensorSpec(name="x", dtype=dtype, shape=()).triton_dtype
    except KeyError:
        pass
    if dtype not in _EXTRA_DTYPES:
        raise ValueError(f"no Triton data type for numpy dtype {dtype!r}")
    return _EXTRA_DTYPES[dtype]


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid Triton {what} {name!r}: use letters, digits, '_', '.', '-' (no leading '.'/'-')")
    return name


@dataclass(frozen=True)
class DynamicBatching:
    """Let Triton merge single requests into one batch (stateless models only)."""

    max_queue_delay_microseconds: int = 0  # how long a request may wait for others; 0 = batch what is queued
    preferred_batch_size: tuple[int, ...] = ()
    preserve_ordering: bool = False


@dataclass(frozen=True)
class SequenceBatching:
    """Stateful scheduling: one correlation id = one stream, pinned to one model instance.

    With the `direct` strategy each live stream owns one batch slot, so the model's
    `max_batch_size` must be at least the number of streams served at once (per instance);
    a stream that sends nothing for `max_sequence_idle_microseconds` loses its slot and its
    next request must carry START again. Control tensors are added to every request under
    the names below (None = not wanted); the model sees each as a `[batch, 1]` tensor.
    """

    max_sequence_idle_microseconds: int = 5_000_000
    strategy: str = "direct"  # "direct" | "oldest"
    max_candidate_sequences: int = 4  # oldest strategy: streams considered for one batch
    max_queue_delay_microseconds: int = 0  # how long a batch waits for more streams
    start: str | None = "START"  # 1 on the first request of a stream
    end: str | None = "END"  # 1 on the last request of a stream
    ready: str | None = "READY"  # 1 where the batch slot holds a real request (direct strategy pads slots)
    corrid: str | None = "CORRID"  # the correlation id itself
    control_dtype: str = "int32"  # "int32" | "float32" | "bool": data type of START/END/READY
    corrid_dtype: str = "uint64"  # "uint64" | "int64" | "uint32" | "int32" | "string"

    def __post_init__(self) -> None:
        if self.strategy not in ("direct", "oldest"):
            raise ValueError(f"sequence_batching strategy must be 'direct' or 'oldest', got {self.strategy!r}")
        if self.control_dtype not in _CONTROL_KINDS:
            raise ValueError(f"control_dtype must be one of {sorted(_CONTROL_KINDS)}, got {self.control_dtype!r}")
        if self.corrid_dtype not in _CORRID_DTYPES:
            raise ValueError(f"corrid_dtype must be one of {_CORRID_DTYPES}, got {self.corrid_dtype!r}")
        if self.max_sequence_idle_microseconds <= 0:
            raise ValueError("max_sequence_idle_microseconds must be > 0")
        for name in self.control_names():
            check_name(name, "control tensor name")

    def control_names(self) -> list[str]:
        return [n for n in (self.start, self.end, self.ready, self.corrid) if n]

    def control_specs(self) -> list[TensorSpec]:
        """The control tensors as the model sees them (per request, batch axis excluded)."""
        specs = [TensorSpec(n, self.control_dtype, (1,), doc=f"sequence control {n}")
                 for n in (self.start, self.end, self.ready) if n]
        if self.corrid:
            dtype = "object" if self.corrid_dtype == "string" else self.corrid_dtype
            specs.append(TensorSpec(self.corrid, dtype, (1,), doc="correlation id (stream id)"))
        return specs


@dataclass(frozen=True)
class EnsembleStep:
    """One model call inside an ensemble.

    `input_map` maps the step model's input names to ensemble tensor names (an ensemble
    input or an earlier step's output); `output_map` maps the step model's outputs to
    ensemble tensor names (an ensemble output or an intermediate name).
    """

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    model_version: int = -1  # -1 = the newest version the model serves


@dataclass(frozen=True)
class InstanceGroup:
    kind: str = "KIND_CPU"  # KIND_CPU | KIND_GPU | KIND_AUTO
    count: int = 1
    gpus: tuple[int, ...] = ()  # KIND_GPU only; empty = every visible GPU

    def __post_init__(self) -> None:
        if self.kind not in _INSTANCE_KINDS:
            raise ValueError(f"instance kind must be one of {_INSTANCE_KINDS}, got {self.kind!r}")
        if self.count < 1:
            raise ValueError(f"instance count must be >= 1, got {self.count}")
        if self.gpus and self.kind != "KIND_GPU":
            raise ValueError("gpus are only valid with KIND_GPU")


@dataclass(frozen=True)
class ModelConfig:
    """Everything one `config.pbtxt` says; `to_pbtxt()` renders it.

    Shapes come from `TensorSpec.shape` (batch axis excluded). With `max_batch_size > 0`
    Triton adds the batch axis itself; a scalar spec (`shape=()`) becomes `dims: [1]` with
    `reshape: {shape: []}`, Triton's way of saying "one value per batch item".
    """

    name: str
    backend: str  # a key of BACKENDS: python | onnxruntime | tensorrt | ensemble
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    max_batch_size: int = 0  # 0 = the model takes no batch axis
    dynamic_batching: DynamicBatching | None = None
    sequence_batching: SequenceBatching | None = None
    ensemble_steps: Sequence[EnsembleStep] = ()
    instance_groups: Sequence[InstanceGroup] = (InstanceGroup(),)  # ignored for ensembles
    keep_versions: int | None = None  # version_policy latest N; None = Triton's default (latest 1)
    parameters: Mapping[str, str] = field(default_factory=dict)  # model.py reads them from args["model_config"]
    optional_inputs: frozenset[str] = frozenset()  # inputs a request may leave out
    default_model_filename: str = ""  # only when the file is not BACKENDS[backend].model_file
    # output name -> class names: Triton's classification extension (a request's `class_count`
    # returns "score:index:label" strings), through a label file beside config.pbtxt
    labels: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "model name")
        if self.backend not in BACKENDS:
            raise ValueError(f"model {self.name}: backend must be one of {sorted(BACKENDS)}, got {self.backend!r}")
        if self.max_batch_size < 0:
            raise ValueError(f"model {self.name}: max_batch_size must be >= 0")
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name}: needs at least one input and one output")
        names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        for n in names:
            check_name(n, f"tensor name in model {self.name}")
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name}: tensor names must be unique, got {names}")
        unknown_optional = set(self.optional_inputs) - {t.name for t in self.inputs}
        if unknown_optional:
            raise ValueError(f"model {self.name}: optional_inputs {sorted(unknown_optional)} are not inputs")
        if self.dynamic_batching and self.sequence_batching:
            raise ValueError(f"model {self.name}: dynamic_batching and sequence_batching exclude each other")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise ValueError(f"model {self.name}: dynamic_batching needs max_batch_size > 0")
        if self.sequence_batching:
            clash = set(self.sequence_batching.control_names()) & set(names)
            if clash:
                raise ValueError(f"model {self.name}: control tensor names {sorted(clash)} clash with inputs/outputs")
        if self.keep_versions is not None and self.keep_versions < 1:
            raise ValueError(f"model {self.name}: keep_versions must be >= 1")
        if self.backend == "ensemble":
            self._check_ensemble()
        elif self.ensemble_steps:
            raise ValueError(f"model {self.name}: ensemble_steps need backend='ensemble'")

    def _check_ensemble(self) -> None:
        # Triton checks this too, but only at load time with a terse message; fail at deploy time instead.
        if not self.ensemble_steps:
            raise ValueError(f"ensemble {self.name}: needs at least one step")
        if self.dynamic_batching or self.sequence_batching:
            raise ValueError(f"ensemble {self.name}: batching is set on the composing models, not the ensemble")
        available = {t.name for t in self.inputs}
        for i, step in enumerate(self.ensemble_steps):
            missing = sorted(set(step.input_map.values()) - available)
            if missing:
                raise ValueError(f"ensemble {self.name} step {i} ({step.model_name}): tensors {missing} are "
                                 f"neither ensemble inputs nor outputs of an earlier step")
            available |= set(step.output_map.values())
        unproduced = sorted({t.name for t in self.outputs} - available)
        if unproduced:
            raise ValueError(f"ensemble {self.name}: outputs {unproduced} are produced by no step")

    @property
    def model_file(self) -> str:
        return self.default_model_filename or BACKENDS[self.backend].model_file

    def to_pbtxt(self) -> str:
        info = BACKENDS[self.backend]
        lines = ["# generated by shared.serving.triton_config; edit the TensorSpecs, not this file",
                 f"name: {_quote(self.name)}"]
        if info.backend:
            lines.append(f"backend: {_quote(info.backend)}")
        if info.platform:
            lines.append(f"platform: {_quote(info.platform)}")
        if self.default_model_filename:
            lines.append(f"default_model_filename: {_quote(self.default_model_filename)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        if self.keep_versions is not None:
            lines.append(f"version_policy: {{ latest: {{ num_versions: {self.keep_versions} }} }}")
        lines += _tensor_block("input", self.inputs, self.max_batch_size, optional=self.optional_inputs)
        lines += _tensor_block("output", self.outputs, self.max_batch_size,
                               labels={name: label_file(name) for name in self.labels})
        if self.dynamic_batching:
            lines += _dynamic_batching_block(self.dynamic_batching)
        if self.sequence_batching:
            lines += _sequence_batching_block(self.sequence_batching)
        if self.backend == "ensemble":
            lines += _ensemble_block(self.ensemble_steps)
        else:
            lines += _instance_group_block(self.instance_groups)
        if self.parameters:
            lines += _parameters_block(self.parameters)
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]" if values else "[ ]"


def label_file(output: str) -> str:
    """The label file of a classification output, in the model directory."""
    return f"{output}.labels.txt"


def _tensor_block(key: str, specs: Sequence[TensorSpec], max_batch_size: int,
                  optional: frozenset[str] = frozenset(), labels: Mapping[str, str] | None = None) -> list[str]:
    lines = [f"{key} ["]
    for i, spec in enumerate(specs):
        shape = tuple(spec.shape)
        lines += ["  {", f"    name: {_quote(spec.name)}", f"    data_type: {triton_dtype(spec.dtype)}"]
        if shape:
            lines.append(f"    dims: {_dims(shape)}")
        else:  # scalar per batch item (or a true scalar without batching)
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        if spec.name in optional:
            lines.append("    optional: true")
        if labels and spec.name in labels:
            lines.append(f"    label_filename: {_quote(labels[spec.name])}")
        lines.append("  }," if i < len(specs) - 1 else "  }")
    lines.append("]")
    return lines


def _dynamic_batching_block(db: DynamicBatching) -> list[str]:
    lines = ["dynamic_batching {"]
    if db.preferred_batch_size:
        lines.append(f"  preferred_batch_size: {_dims(db.preferred_batch_size)}")
    lines.append(f"  max_queue_delay_microseconds: {db.max_queue_delay_microseconds}")
    if db.preserve_ordering:
        lines.append("  preserve_ordering: true")
    lines.append("}")
    return lines


def _sequence_batching_block(sb: SequenceBatching) -> list[str]:
    lines = ["sequence_batching {", f"  max_sequence_idle_microseconds: {sb.max_sequence_idle_microseconds}"]
    if sb.strategy == "direct":
        lines.append(f"  direct {{ max_queue_delay_microseconds: {sb.max_queue_delay_microseconds} }}")
    else:
        lines.append(f"  oldest {{ max_candidate_sequences: {sb.max_candidate_sequences} "
                     f"max_queue_delay_microseconds: {sb.max_queue_delay_microseconds} }}")
    values = {"int32": "[ 0, 1 ]", "float32": "[ 0, 1 ]", "bool": "[ false, true ]"}[sb.control_dtype]
    controls = []
    for name, kind in ((sb.start, "CONTROL_SEQUENCE_START"), (sb.end, "CONTROL_SEQUENCE_END"),
                       (sb.ready, "CONTROL_SEQUENCE_READY")):
        if name:
            controls.append(f"    {{ name: {_quote(name)} control [ {{ kind: {kind} "
                            f"{_CONTROL_KINDS[sb.control_dtype]}: {values} }} ] }}")
    if sb.corrid:
        controls.append(f"    {{ name: {_quote(sb.corrid)} control [ {{ kind: CONTROL_SEQUENCE_CORRID "
                        f"data_type: {triton_dtype(sb.corrid_dtype)} }} ] }}")
    if controls:
        lines.append("  control_input [")
        lines.append(",\n".join(controls))
        lines.append("  ]")
    lines.append("}")
    return lines


def _ensemble_block(steps: Sequence[EnsembleStep]) -> list[str]:
    lines = ["ensemble_scheduling {", "  step ["]
    for i, step in enumerate(steps):
        lines += ["    {", f"      model_name: {_quote(check_name(step.model_name, 'model name'))}",
                  f"      model_version: {step.model_version}"]
        for key, mapping in (("input_map", step.input_map), ("output_map", step.output_map)):
            for model_tensor, ensemble_tensor in mapping.items():
                lines.append(f"      {key} {{ key: {_quote(model_tensor)} value: {_quote(ensemble_tensor)} }}")
        lines.append("    }," if i < len(steps) - 1 else "    }")
    lines += ["  ]", "}"]
    return lines


def _instance_group_block(groups: Sequence[InstanceGroup]) -> list[str]:
    items = []
    for g in groups:
        gpus = f" gpus: {_dims(g.gpus)}" if g.gpus else ""
        items.append(f"  {{ kind: {g.kind} count: {g.count}{gpus} }}")
    return ["instance_group [", ",\n".join(items), "]"]


def _parameters_block(parameters: Mapping[str, str]) -> list[str]:
    lines = []
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return lines


def parse_pbtxt(text: str) -> Any:
    """Parse config text with Triton's protobuf schema (needs tritonclient[grpc]).

    Returns a `model_config_pb2.ModelConfig`; raises ValueError naming the bad line.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"config.pbtxt does not match Triton's schema: {exc}") from None
