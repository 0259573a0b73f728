"""Run one network served by Triton, over gRPC: backend "triton" of `shared.inference.backends`.

This is the runtime side of Triton (a client that runs a network, like onnxruntime or
TensorRT runners do); the served hand models and the stream clients live in `shared.serving`
and build on it.

`TritonRunner(ref)`: one network on the server (`hand_landmarks` for the crop model,
`detector` for BlazePalm); the url and served model come from `ModelRef.options` ("url",
"model"), else $TRITON_URL, else 127.0.0.1:8001. `connect`, `check_model` and `make_input`
are the gRPC helpers every client here uses.

tritonclient is imported inside functions: importing this module costs nothing where it is
not installed, and its absence is one clear UserError.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from shared.errors import UserError

DEFAULT_URL = "127.0.0.1:8001"
# The names the networks are served under (components.deploy writes them; shared.serving uses them).
SERVED_DETECTOR = "detector"
SERVED_LANDMARKS = "hand_landmarks"


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise UserError("talking to Triton needs tritonclient; pip install 'tritonclient[grpc]'") from None
    return grpcclient


def connect(url: str = DEFAULT_URL, timeout_s: float = 10.0) -> Any:
    """A gRPC client for a live server, or a UserError that says how to start one."""
    grpcclient = _grpc()
    from tritonclient.utils import InferenceServerException

    # Proxy variables (sandboxes, corporate setups) must not route a loopback gRPC channel.
    client = grpcclient.InferenceServerClient(url, channel_args=[("grpc.enable_http_proxy", 0)])
    try:
        live = client.is_server_live(client_timeout=timeout_s)
    except InferenceServerException as exc:
        client.close()
        raise UserError(f"no Triton server answers at {url} ({exc.message()}); start one with "
                        "`python -m components.serve --triton_repo DIR` or fix --url") from None
    if not live:
        client.close()
        raise UserError(f"the Triton server at {url} is not live; check its log")
    return client


def check_model(client: Any, url: str, model: str) -> Any:
    """The model's config (`ModelConfig` protobuf) if it is ready, else a UserError naming the
    models the server does have."""
    from tritonclient.utils import InferenceServerException

    try:
        ready = client.is_model_ready(model)
    except InferenceServerException:
        ready = False
    if not ready:
        try:
            names = sorted(m.name for m in client.get_model_repository_index().models)
        except InferenceServerException:
            names = []
        raise UserError(f"model {model!r} is not ready on the Triton server at {url} (it serves: "
                        f"{', '.join(names) or 'nothing'}); deploy it with `python -m components.deploy`")
    return client.get_model_config(model).config


def make_input(name: str, array: np.ndarray) -> Any:
    grpcclient = _grpc()
    from tritonclient.utils import np_to_triton_dtype

    array = np.ascontiguousarray(array)
    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


class TritonRunner:
    """`shared.inference.backends` runner: one network served by Triton (BLS-free, plain gRPC)."""

    name = "triton"

    def __init__(self, ref: Any) -> None:
        self.url = ref.options.get("url") or os.environ.get("TRITON_URL") or DEFAULT_URL
        self.model = ref.options.get("model") or (SERVED_DETECTOR if ref.family == "blazepalm" else SERVED_LANDMARKS)
        self.client = connect(self.url)
        config = check_model(self.client, self.url, self.model)
        if len(config.input) != 1:
            raise UserError(f"served model {self.model!r} takes {len(config.input)} inputs; a runner sends one image "
                            "tensor (is it the network, not a pipeline model?)")
        self.input_name = config.input[0].name
        self.output_names = [t.name for t in config.output]
        want = ref.spec().output_names
        if sorted(want) != sorted(self.output_names):
            raise UserError(f"served model {self.model!r} at {self.url} has outputs {self.output_names}, but "
                            f"{ref.model_type} has {want}; deploy the matching model or pass options['model']")
        self.max_batch = int(config.max_batch_size) or None
        grpcclient = _grpc()
        self._outputs = [grpcclient.InferRequestedOutput(n) for n in self.output_names]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        result = self.client.infer(self.model, [make_input(self.input_name, x)], outputs=self._outputs)
        return {n: result.as_numpy(n) for n in self.output_names}
