"""Triton serving infrastructure: config generation, repository writer, sequence store, and a
REAL tritonserver (the one bundled in nvidia-pytriton, from .venv-triton) serving a python
model, a stateful sequence-batched model and two ensembles over gRPC."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from shared.errors import UserError
from shared.serving.repository import PYTHON_MODEL_PRELUDE, deploy_model, model_versions, write_model
from shared.serving.sequences import SequenceStore, idle_timeout_s, read_controls
from shared.serving.triton_config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    SequenceBatching,
    parse_pbtxt,
)
from shared.tensors import TensorSpec

# ---------------------------------------------------------------------------------------------
# The test models. Their I/O is declared once as TensorSpecs; config.pbtxt comes from them.
# ---------------------------------------------------------------------------------------------
ADD_IN = [TensorSpec("A", "float32", (3,)), TensorSpec("B", "float32", (3,))]
ADD_OUT = [TensorSpec("C", "float32", (3,))]
DOUBLE_IN = [TensorSpec("X", "float32", (-1,))]
DOUBLE_OUT = [TensorSpec("Y", "float32", (-1,))]
COUNTER_IN = [TensorSpec("FRAME", "float32", (1,))]
COUNTER_OUT = [TensorSpec("COUNT", "int64", (1,), doc="frames seen in this stream"),
               TensorSpec("ACTIVE", "int64", (1,), doc="streams with live state in this instance")]
MAX_STREAMS = 4  # direct strategy: one batch slot per live stream
IDLE_S = 1.0  # counter_idle expires streams after this long

# add: C = A + B + offset, where offset.txt ships in the version directory (a redeploy changes it).
ADD_SRC = PYTHON_MODEL_PRELUDE + '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.offset = np.float32((Path(__file__).parent / "offset.txt").read_text())

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()  # [N, 3]
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()  # [N, 3]
            c = (a + b + self.offset).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("C", c)]))
        return responses
'''

DOUBLE_SRC = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (2 * x).astype(np.float32))]))
        return responses
'''

# counter: per-stream frame counter. The state logic is imported from the `shared` copy deployed
# next to model.py (and initialize() fails the load if `shared` came from anywhere else).
COUNTER_SRC = PYTHON_MODEL_PRELUDE + '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils

import shared
from shared.serving.sequences import SequenceStore, idle_timeout_s, read_controls


def _as_numpy(tensor):
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).resolve().parent
        if here not in Path(shared.__file__).resolve().parents:
            raise RuntimeError(f"shared imported from {shared.__file__}, not from the deployed copy in {here}")
        config = json.loads(args["model_config"])
        self.store = SequenceStore(factory=lambda: {"count": 0}, idle_timeout_s=idle_timeout_s(config))

    def execute(self, requests):
        responses = []
        for request in requests:
            ctl = read_controls(lambda name: _as_numpy(pb_utils.get_input_tensor_by_name(request, name)))
            frame = pb_utils.get_input_tensor_by_name(request, "FRAME").as_numpy()  # [1, 1]
            if not ctl.ready:  # padding slot of the direct strategy: answer, keep the state alone
                responses.append(self._response(0))
                continue
            if not np.all(np.isfinite(frame)):
                # A bad request gets its own error response; the batch and the stream go on.
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"FRAME must be finite (stream {ctl.corrid})")))
                continue
            state = self.store.get(ctl.corrid, start=ctl.start)
            state["count"] += 1
            if ctl.end:  # free first, so ACTIVE in this answer already excludes the ended stream
                self.store.end(ctl.corrid)
            responses.append(self._response(state["count"]))
        return responses

    def _response(self, count):
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("COUNT", np.array([[count]], np.int64)),
            pb_utils.Tensor("ACTIVE", np.array([[len(self.store)]], np.int64)),
        ])
'''


# onnx_add: the `python` deploy backend's pattern, an ONNX model run by onnxruntime inside the python
# backend; initialize() also imports what the hand pipeline's python models need (fails the load if absent).
ONNX_SRC = PYTHON_MODEL_PRELUDE + '''
import cv2  # noqa: F401
import numpy as np
import onnxruntime as ort
import scipy.optimize  # noqa: F401
import triton_python_backend_utils as pb_utils
import yaml  # noqa: F401


class TritonPythonModel:
    def initialize(self, args):
        self.session = ort.InferenceSession(str(Path(__file__).parent / "model.onnx"),
                                            providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in ("A", "B")}
            (c,) = self.session.run(["C"], feeds)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("C", c)]))
        return responses
'''


def _add_onnx() -> bytes:
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in ("A", "B", "C")]
    graph = helper.make_graph([helper.make_node("Add", ["A", "B"], ["C"])], "add", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by older onnxruntime builds too
    return model.SerializeToString()


def _counter_config(name: str, idle_us: int) -> ModelConfig:
    return ModelConfig(
        name=name, backend="python", inputs=COUNTER_IN, outputs=COUNTER_OUT, max_batch_size=MAX_STREAMS,
        sequence_batching=SequenceBatching(max_sequence_idle_microseconds=idle_us),
    )


def _add_config() -> ModelConfig:
    return ModelConfig(name="add", backend="python", inputs=ADD_IN, outputs=ADD_OUT, max_batch_size=8,
                       dynamic_batching=DynamicBatching(max_queue_delay_microseconds=100), keep_versions=1)


def build_repo(repo: Path) -> Path:
    deploy_model(repo, _add_config(), {"model.py": ADD_SRC, "offset.txt": "0"}, include_shared=True)
    deploy_model(repo, ModelConfig(name="onnx_add", backend="python", inputs=ADD_IN, outputs=ADD_OUT, max_batch_size=8),
                 {"model.py": ONNX_SRC, "model.onnx": _add_onnx()})
    deploy_model(repo, ModelConfig(name="double", backend="python", inputs=DOUBLE_IN, outputs=DOUBLE_OUT,
                                   max_batch_size=8, dynamic_batching=DynamicBatching()), {"model.py": DOUBLE_SRC})
    for name, idle_us in (("counter", 60_000_000), ("counter_idle", int(IDLE_S * 1e6))):
        deploy_model(repo, _counter_config(name, idle_us), {"model.py": COUNTER_SRC}, include_shared=True)
    # (A + B) * 2: two stateless python models chained by an ensemble.
    deploy_model(repo, ModelConfig(
        name="add_double", backend="ensemble", inputs=ADD_IN, outputs=[TensorSpec("OUT", "float32", (3,))],
        max_batch_size=8, ensemble_steps=[
            EnsembleStep("add", input_map={"A": "A", "B": "B"}, output_map={"C": "sum"}),
            EnsembleStep("double", input_map={"X": "sum"}, output_map={"Y": "OUT"}),
        ]), files={})
    # double -> counter: a stateful model inside an ensemble; sequence ids and flags must pass through.
    deploy_model(repo, ModelConfig(
        name="double_count", backend="ensemble", inputs=COUNTER_IN, outputs=COUNTER_OUT,
        max_batch_size=MAX_STREAMS, ensemble_steps=[
            EnsembleStep("double", input_map={"X": "FRAME"}, output_map={"Y": "doubled"}),
            EnsembleStep("counter", input_map={"FRAME": "doubled"},
                         output_map={"COUNT": "COUNT", "ACTIVE": "ACTIVE"}),
        ]), files={})
    return repo


# ---------------------------------------------------------------------------------------------
# config.pbtxt generation (no server): checked against Triton's own protobuf schema.
# ---------------------------------------------------------------------------------------------
def test_config_round_trips_through_triton_schema():
    cfg = _counter_config("counter", 2_000_000)
    proto = parse_pbtxt(cfg.to_pbtxt())
    assert proto.name == "counter" and proto.backend == "python" and proto.max_batch_size == MAX_STREAMS
    assert [(t.name, list(t.dims)) for t in proto.input] == [("FRAME", [1])]
    assert [t.name for t in proto.output] == ["COUNT", "ACTIVE"]
    sb = proto.sequence_batching
    assert sb.max_sequence_idle_microseconds == 2_000_000 and sb.HasField("direct")
    from tritonclient.grpc import model_config_pb2

    control = model_config_pb2.ModelSequenceBatching.Control
    kinds = {c.name: c.control[0].kind for c in sb.control_input}
    assert kinds == {"START": control.CONTROL_SEQUENCE_START, "END": control.CONTROL_SEQUENCE_END,
                     "READY": control.CONTROL_SEQUENCE_READY, "CORRID": control.CONTROL_SEQUENCE_CORRID}
    assert [s.name for s in cfg.sequence_batching.control_specs()] == ["START", "END", "READY", "CORRID"]


@pytest.mark.parametrize("cfg, expect", [
    # onnxruntime on GPU, dynamic batching with preferred sizes, keep 2 versions
    (ModelConfig("det", "onnxruntime", [TensorSpec("images", "float32", (3, 640, 640))],
                 [TensorSpec("boxes", "float32", (-1, 6))], max_batch_size=4,
                 dynamic_batching=DynamicBatching(500, (2, 4)), keep_versions=2,
                 instance_groups=[InstanceGroup("KIND_GPU", 2, (0,))]),
     {"platform": "onnxruntime_onnx", "backend": "onnxruntime", "version_policy.latest.num_versions": 2,
      "dynamic_batching.preferred_batch_size": [2, 4], "instance_group[0].gpus": [0], "instance_group[0].count": 2}),
    # tensorrt plan, a scalar output per batch item becomes dims [1] + reshape []
    (ModelConfig("lm", "tensorrt", [TensorSpec("crop", "float16", (3, 224, 224))],
                 [TensorSpec("presence", "float32", ())], max_batch_size=16),
     {"platform": "tensorrt_plan", "output[0].dims": [1], "output[0].reshape.shape": []}),
    # python model with string parameters (quotes escaped) and an optional input
    (ModelConfig("pre", "python", [TensorSpec("image", "uint8", (-1, -1, 3)), TensorSpec("rois", "float32", (-1, 5))],
                 [TensorSpec("crops", "float32", (-1, 3, 224, 224))], parameters={"note": 'say "hi"'},
                 optional_inputs=frozenset({"rois"})),
     {"backend": "python", "max_batch_size": 0, "input[1].optional": True, "parameters.note": 'say "hi"'}),
    # oldest strategy with bool controls and string correlation ids
    (ModelConfig("trk", "python", COUNTER_IN, COUNTER_OUT, max_batch_size=8, sequence_batching=SequenceBatching(
        strategy="oldest", max_candidate_sequences=8, control_dtype="bool", corrid_dtype="string", ready=None)),
     {"sequence_batching.oldest.max_candidate_sequences": 8, "sequence_batching.control_input.len": 3}),
])
def test_config_variants(cfg, expect):
    proto = parse_pbtxt(cfg.to_pbtxt())
    for path, want in expect.items():
        assert _lookup(proto, path) == want, path


def _lookup(proto, path):
    obj = proto
    for part in path.split("."):
        if part == "len":
            return len(obj)
        if part.endswith("]"):
            name, index = part[:-1].split("[")
            obj = getattr(obj, name)[int(index)]
        elif hasattr(obj, "get_or_create") or (hasattr(obj, "keys") and part in obj):  # map field
            obj = obj[part].string_value
        else:
            obj = getattr(obj, part)
    return list(obj) if hasattr(obj, "__len__") and not isinstance(obj, str) else obj


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "torchscript"}, "backend must be one of"),  # unknown backend
    ({"name": "../evil"}, "invalid Triton model name"),  # name becomes a directory
    ({"outputs": [TensorSpec("A", "float32", (3,))]}, "unique"),  # input and output share a name
    ({"dynamic_batching": DynamicBatching(), "sequence_batching": SequenceBatching()}, "exclude each other"),
    ({"max_batch_size": 0, "dynamic_batching": DynamicBatching()}, "needs max_batch_size"),
    ({"backend": "ensemble"}, "at least one step"),
    ({"backend": "ensemble", "ensemble_steps": [EnsembleStep("m", {"x": "nowhere"}, {"y": "C"})]}, "neither"),
    ({"backend": "ensemble", "ensemble_steps": [EnsembleStep("m", {"x": "A"}, {"y": "other"})]}, "produced by no"),
    ({"inputs": [TensorSpec("START", "float32", (1,))], "sequence_batching": SequenceBatching()}, "clash"),
])
def test_config_rejects_mistakes(kwargs, message):
    base = {"name": "m", "backend": "python", "inputs": [TensorSpec("A", "float32", (3,))],
            "outputs": [TensorSpec("C", "float32", (3,))], "max_batch_size": 4}
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **kwargs})


# ---------------------------------------------------------------------------------------------
# repository writer (no server)
# ---------------------------------------------------------------------------------------------
def test_write_model_adds_versions_and_prunes(tmp_path):
    repo = tmp_path / "repo"
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"\x00\x01")
    assets = tmp_path / "assets"
    (assets / "sub").mkdir(parents=True)
    (assets / "sub" / "a.txt").write_text("a")
    files = {"model.py": "print('v')\n", "weights/w.bin": weights, "assets": assets, "raw.bin": b"\xff"}
    v1 = write_model(repo, "m", 'name: "m"\n', files, include_shared=True)
    assert v1 == repo / "m" / "1"
    assert (v1 / "weights" / "w.bin").read_bytes() == b"\x00\x01" and (v1 / "raw.bin").read_bytes() == b"\xff"
    assert (v1 / "assets" / "sub" / "a.txt").read_text() == "a"
    assert (v1 / "shared" / "serving" / "sequences.py").is_file() and not list(v1.rglob("__pycache__"))
    write_model(repo, "m", 'name: "m"\n', {"model.py": "2"})
    v3 = write_model(repo, "m", 'name: "m"\nmax_batch_size: 3\n', {"model.py": "3"}, keep_versions=2)
    assert v3.name == "3" and model_versions(repo, "m") == [2, 3]  # version 1 pruned
    assert (repo / "m" / "config.pbtxt").read_text().endswith("max_batch_size: 3\n")
    assert [p.name for p in (repo / "m").iterdir() if p.name.startswith(".")] == []  # no temp leftovers
    assert weights.read_bytes() == b"\x00\x01"  # inputs untouched


@pytest.mark.parametrize("name, config, files, message", [
    ("bad/name", 'name: "x"', {}, "invalid Triton model name"),  # slash in model name
    ("m", 'name: "other"', {}, "declares name"),  # config name != directory name
    ("m", 'name: "m"', {"../escape.py": "x"}, "relative path"),  # path traversal
    ("m", 'name: "m"', {"shared/x.py": "x"}, "reserved"),  # clobbering the shared copy
    ("m", 'name: "m"', {"model.onnx": Path("/nonexistent/model.onnx")}, "not found"),  # missing export
])
def test_write_model_rejects_bad_input(tmp_path, name, config, files, message):
    with pytest.raises(UserError, match=message):
        write_model(tmp_path, name, config, files)
    assert model_versions(tmp_path, "m") == []


def test_deploy_model_needs_the_backend_file(tmp_path):
    cfg = ModelConfig("det", "onnxruntime", [TensorSpec("x", "float32", (3,))], [TensorSpec("y", "float32", (3,))])
    with pytest.raises(UserError, match="loads model.onnx"):
        deploy_model(tmp_path, cfg, {"model.py": "x"})


# ---------------------------------------------------------------------------------------------
# SequenceStore (no server)
# ---------------------------------------------------------------------------------------------
def test_sequence_store_start_end_and_idle_expiry():
    now = [0.0]
    store = SequenceStore(factory=lambda: {"n": 0}, idle_timeout_s=2.0, clock=lambda: now[0])
    store.get(1, start=True)["n"] += 1
    store.get(2, start=True)["n"] += 1
    store.get(1, start=False)["n"] += 1
    assert store.get(1, start=False)["n"] == 2 and store.get(2, start=False)["n"] == 1  # independent streams
    assert store.get(1, start=True)["n"] == 0  # START resets
    store.end(2)
    assert 2 not in store and len(store) == 1
    now[0] = 1.5
    store.get(3, start=True)
    now[0] = 2.6  # stream 1 idle for 2.6 s > 2.0, stream 3 for 1.1 s
    assert store.expire() == [1] and store.ids() == [3]
    assert (store.started, store.ended, store.expired) == (4, 1, 1)


@pytest.mark.parametrize("arrays, expect", [
    # a real request: start flag, uint64 id
    ({"START": [[1]], "END": [[0]], "READY": [[1]], "CORRID": np.array([[7]], np.uint64)}, (7, True, False, True)),
    # a padding slot of the direct strategy
    ({"START": [[0]], "END": [[0]], "READY": [[0]], "CORRID": np.array([[0]], np.uint64)}, (0, False, False, False)),
    # string correlation id, READY not configured
    ({"END": [[1]], "CORRID": np.array([[b"cam-1"]], object)}, ("cam-1", False, True, True)),
])
def test_read_controls(arrays, expect):
    ctl = read_controls(arrays.get)
    assert (ctl.corrid, ctl.start, ctl.end, ctl.ready) == expect
    assert idle_timeout_s({"sequence_batching": {"max_sequence_idle_microseconds": "1500000"}}) == 1.5


# ---------------------------------------------------------------------------------------------
# A real tritonserver
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def triton(start_triton, tmp_path_factory):
    repo = build_repo(tmp_path_factory.mktemp("triton") / "repo")
    # explicit mode loads every model at start and also lets a test reload one after a redeploy
    server = start_triton(repo, model_control_mode="explicit")
    return server, repo


@pytest.fixture
def client(triton):
    import tritonclient.grpc as grpcclient

    server, _ = triton
    c = grpcclient.InferenceServerClient(server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)])
    yield c
    c.close()


def _input(name, array):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    t.set_data_from_numpy(array)
    return t


def _count(client, model, stream, start=False, end=False, frame=1.0):
    r = client.infer(model, [_input("FRAME", np.full((1, 1), frame, np.float32))],
                     sequence_id=stream, sequence_start=start, sequence_end=end)
    return int(r.as_numpy("COUNT")[0, 0]), int(r.as_numpy("ACTIVE")[0, 0])


def _add(client, model="add"):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    r = client.infer(model, [_input("A", a), _input("B", b)])
    return a + b, r


@pytest.mark.triton
def test_server_serves_every_model(triton, client):
    server, _ = triton
    assert client.is_server_ready()
    assert client.get_server_metadata().version == "2.51.0"
    models = {m.name: m.state for m in client.get_model_repository_index().models}
    assert models == {n: "READY" for n in ("add", "onnx_add", "double", "counter", "counter_idle", "add_double",
                                           "double_count")}
    config = client.get_model_config("counter").config  # what Triton made of our generated text
    assert config.sequence_batching.max_sequence_idle_microseconds == 60_000_000
    assert {c.name for c in config.sequence_batching.control_input} == {"START", "END", "READY", "CORRID"}
    expected, r = _add(client)
    np.testing.assert_allclose(r.as_numpy("C"), expected)


@pytest.mark.triton
def test_onnx_model_inside_the_python_backend(client):
    expected, r = _add(client, "onnx_add")
    np.testing.assert_allclose(r.as_numpy("C"), expected)


@pytest.mark.triton
def test_ensemble_of_two_python_models(client):
    expected, r = _add(client, "add_double")
    np.testing.assert_allclose(r.as_numpy("OUT"), 2 * expected)


@pytest.mark.triton
def test_interleaved_streams_keep_independent_state(client):
    a, b = 101, 202
    c1, base = _count(client, "counter", a, start=True)
    assert c1 == 1
    assert _count(client, "counter", b, start=True) == (1, base + 1)
    assert _count(client, "counter", a)[0] == 2
    assert _count(client, "counter", b)[0] == 2
    assert _count(client, "counter", a)[0] == 3
    assert _count(client, "counter", a, start=True)[0] == 1  # START on a live stream resets it
    assert _count(client, "counter", b, end=True) == (3, base)  # END answers, then frees b
    assert _count(client, "counter", a, end=True) == (2, base - 1)


@pytest.mark.triton
def test_concurrent_streams(triton):
    import tritonclient.grpc as grpcclient

    server, _ = triton
    results, errors = {}, []

    def stream(sid):
        c = grpcclient.InferenceServerClient(server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)])
        try:
            results[sid] = [_count(c, "counter", sid, start=i == 0, end=i == 5)[0] for i in range(6)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=stream, args=(sid,)) for sid in (301, 302, 303, 304)]  # = MAX_STREAMS
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert results == {sid: [1, 2, 3, 4, 5, 6] for sid in (301, 302, 303, 304)}


@pytest.mark.triton
def test_stateful_model_inside_an_ensemble(client):
    assert _count(client, "double_count", 401, start=True)[0] == 1
    assert _count(client, "double_count", 402, start=True)[0] == 1
    assert _count(client, "double_count", 401)[0] == 2
    assert _count(client, "double_count", 401, end=True)[0] == 3
    assert _count(client, "double_count", 402, end=True)[0] == 2


@pytest.mark.triton
def test_idle_stream_expires(client):
    from tritonclient.utils import InferenceServerException

    assert _count(client, "counter_idle", 501, start=True)[0] == 1
    assert _count(client, "counter_idle", 501)[0] == 2
    time.sleep(IDLE_S + 0.8)
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        _count(client, "counter_idle", 501)  # Triton freed the slot: the stream must start again
    count, active = _count(client, "counter_idle", 502, start=True)
    assert (count, active) == (1, 1)  # the model dropped 501's state too
    assert _count(client, "counter_idle", 502, end=True) == (2, 0)


@pytest.mark.triton
@pytest.mark.parametrize("case", ["wrong_dtype", "wrong_shape", "missing_input", "unknown_model",
                                  "no_sequence_id", "no_start", "non_finite_frame"])
def test_malformed_requests_get_clear_errors(client, case):
    from tritonclient.utils import InferenceServerException

    ok = np.ones((1, 3), np.float32)
    calls = {  # each: (the bad call, what the error must say)
        "wrong_dtype": (lambda: client.infer("add", [_input("A", ok.astype(np.int32)), _input("B", ok)]),
                        "data-type is 'INT32', but model 'add' expects 'FP32'"),
        "wrong_shape": (lambda: client.infer("add", [_input("A", np.ones((1, 4), np.float32)), _input("B", ok)]),
                        "unexpected shape for input 'A'"),
        "missing_input": (lambda: client.infer("add", [_input("A", ok)]), "expected 2 inputs but got 1"),
        "unknown_model": (lambda: client.infer("nope", [_input("A", ok)]), "nope"),
        "no_sequence_id": (lambda: _count(client, "counter", 0, start=True), "correlation ID"),
        "no_start": (lambda: _count(client, "counter", 999), "must specify the START flag"),
        "non_finite_frame": (lambda: _count(client, "counter", 601, start=True, end=True, frame=np.nan),
                             "FRAME must be finite"),
    }
    call, message = calls[case]
    with pytest.raises(InferenceServerException, match=message):
        call()
    # ... and the server keeps serving, stateless and stateful models alike
    expected, r = _add(client)
    np.testing.assert_allclose(r.as_numpy("C"), expected)
    assert _count(client, "counter", 602, start=True)[0] == 1
    assert _count(client, "counter", 602, end=True)[0] == 2


@pytest.mark.triton
def test_redeploy_adds_a_version_the_server_picks_up(triton, client):
    # Runs last in this module: it changes what `add` returns.
    _, repo = triton
    v2 = deploy_model(repo, _add_config(), {"model.py": ADD_SRC, "offset.txt": "100"}, include_shared=True)
    assert v2.name == "2" and model_versions(repo, "add") == [2]  # keep_versions=1 pruned version 1
    client.load_model("add")  # explicit mode: reload = re-read config and versions
    expected, r = _add(client)
    np.testing.assert_allclose(r.as_numpy("C"), expected + 100)
    assert r.get_response().model_version == "2"
    expected, r = _add(client, "add_double")  # the ensemble follows the newest version
    np.testing.assert_allclose(r.as_numpy("OUT"), 2 * (expected + 100))


# ---------------------------------------------------------------------------------------------
# python -m components.serve
# ---------------------------------------------------------------------------------------------
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _serve_cmd(*args):
    import sys

    return [sys.executable, "-m", "components.serve", *map(str, args)]


def test_serve_without_venv_names_the_fix(tmp_path):
    import subprocess

    deploy_model(tmp_path, ModelConfig("double", "python", DOUBLE_IN, DOUBLE_OUT), {"model.py": DOUBLE_SRC})
    done = subprocess.run(_serve_cmd("--triton_repo", tmp_path, "--venv", tmp_path / "no-venv"),
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "make triton-venv" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.triton
def test_serve_cli_prints_ready_and_stops_on_sigterm(triton_install, tmp_path):
    import re
    import signal
    import subprocess

    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    deploy_model(repo, ModelConfig("double", "python", DOUBLE_IN, DOUBLE_OUT, max_batch_size=8),
                 {"model.py": DOUBLE_SRC})
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(_serve_cmd("--triton_repo", repo, "--grpc_port", 0, "--http_port", 0, "--metrics_port", 0,
                                       "--venv", triton_install.venv, "--log_file", log),
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the one ready line (or EOF if it failed)
        assert "ready" in line, (line, proc.poll(), log.read_text() if log.exists() else "")
        url = re.search(r"grpc (127\.0\.0\.1:\d+)", line).group(1)
        c = grpcclient.InferenceServerClient(url, channel_args=[("grpc.enable_http_proxy", 0)])
        r = c.infer("double", [_input("X", np.ones((1, 2), np.float32))])
        np.testing.assert_allclose(r.as_numpy("Y"), 2.0)
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
        assert "tritonserver stopped" in proc.stderr.read()
        assert "Successfully unloaded" in log.read_text() or "successfully unloaded" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.triton
def test_a_model_that_fails_to_load_is_named_in_the_start_error(triton_install, tmp_path):
    from shared.serving.server import TritonServer, TritonStartError

    broken = DOUBLE_SRC + "\n    def initialize(self, args):\n        raise RuntimeError('broken on purpose')\n"
    deploy_model(tmp_path / "repo", ModelConfig("broken", "python", DOUBLE_IN, DOUBLE_OUT), {"model.py": broken})
    server = TritonServer(tmp_path / "repo", install=triton_install, log_path=tmp_path / "log", exit_timeout_s=2)
    with pytest.raises(TritonStartError, match="(?s)exited with code.*broken on purpose"):
        with server:
            pass
    assert not server.is_running()
