"""Clients of the served hand models, over gRPC (tritonclient).

Two ways in:

- `TritonHandClient` / `HandStream`: the whole pipeline on the server. Each video stream is
  one correlation id (`sequence_id`) of the stateful `hand_pipeline` model; its first frame
  carries START, its last END, and the answer is that frame's `HandResults` with track ids
  that belong to that stream alone. Used by `python -m components.client`. When the server
  is on this host (loopback url) frames travel through a system shared-memory region
  (`SharedMemoryImage`) rather than inside the gRPC message: same request, same answer,
  several milliseconds less per 640x480 frame on a busy CPU.

      with TritonHandClient("127.0.0.1:8001") as client:
          stream = client.stream(stream_id=7)
          for i, frame in enumerate(frames):              # RGB uint8 [H, W, 3]
              hands = stream.send(frame, last=i == len(frames) - 1)

- `TritonRunner` (`shared.inference.triton_client`, the runtime room; re-exported here): the
  runner of backend "triton": one network on the server (`hand_landmarks` for the crop
  model, `detector` for BlazePalm), the rest of the pipeline in the calling process. The url
  and served model come from `ModelRef.options` ("url", "model"), else $TRITON_URL.

tritonclient is imported inside functions: importing this module costs nothing where it is
not installed, and its absence is one clear UserError.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.errors import UserError
from shared.inference.triton_client import DEFAULT_URL, TritonRunner, _grpc, check_model, connect, make_input
from shared.results import HandResults
from shared.serving.models import (
    HAND_TENSORS,
    IMAGE,
    MODEL_PIPELINE,
    TIMESTAMP,
    TIMING,
    TIMING_STAGES,
    results_from_tensors,
)

MAX_STREAM_ID = 2**64 - 1  # CORRID is UINT64
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_REGION_IDS = itertools.count()


def check_stream_id(stream_id: int) -> int:
    is_int = isinstance(stream_id, (int, np.integer)) and not isinstance(stream_id, bool)
    if not is_int or not 1 <= stream_id <= MAX_STREAM_ID:
        raise UserError(f"stream id must be an integer in [1, 2**64 - 1] (0 means 'no stream' to Triton), "
                        f"got {stream_id!r}")
    return int(stream_id)


def is_loopback(url: str) -> bool:
    return url.rsplit(":", 1)[0] in LOOPBACK_HOSTS


class SharedMemoryImage:
    """The IMAGE input through a system shared-memory region instead of inside the gRPC
    message (loopback servers only: both processes map the same /dev/shm file).

    A 640x480 frame is 0.9 MB; carried in the message it is copied through protobuf and
    gRPC on both sides, which costs several milliseconds per frame on a loaded CPU
    (benchmarks/triton.py measures both ways). The region grows to the largest frame seen,
    belongs to one client and is freed by `close()`.
    """

    def __init__(self, client: Any) -> None:
        import tritonclient.utils.shared_memory as shm

        self.shm = shm
        self.client = client
        self.name = ""
        self.handle: Any = None
        self.size = 0

    def _resize(self, nbytes: int) -> None:
        self.close()
        # A new name for every region: should the server not have let go of the last one (its
        # unregister is refused while a request still holds the region; seen once on a loaded
        # machine as ALREADY_EXISTS on the re-registration), the new one cannot collide with it.
        self.name = f"hand_image_{os.getpid()}_{next(_REGION_IDS)}"
        self.handle = self.shm.create_shared_memory_region(self.name, "/" + self.name, nbytes)
        self.size = nbytes
        self.client.register_system_shared_memory(self.name, "/" + self.name, nbytes)

    def input(self, name: str, array: np.ndarray) -> Any:
        grpcclient = _grpc()
        array = np.ascontiguousarray(array)
        if array.nbytes > self.size:
            self._resize(array.nbytes)
        self.shm.set_shared_memory_region(self.handle, [array])
        tensor = grpcclient.InferInput(name, list(array.shape), "UINT8")
        tensor.set_shared_memory(self.name, array.nbytes)
        return tensor

    def close(self) -> None:
        if self.handle is None:
            return
        try:
            self.client.unregister_system_shared_memory(self.name)
        except Exception:  # noqa: BLE001 - the server may be gone already; the local region still goes
            pass
        self.shm.destroy_shared_memory_region(self.handle)
        self.handle, self.size = None, 0


class TritonHandClient:
    """The served `hand_pipeline` for any number of streams (one correlation id each).

    One client (one gRPC channel) may serve several threads; Triton keeps the state per
    stream id, not per connection, so a stream may even move between clients.
    `shared_memory`: "auto" sends frames through a system shared-memory region when the
    server is on this host (loopback url) and falls back to the message when that fails;
    "off" always puts them in the gRPC message; "on" insists.
    """

    def __init__(self, url: str = DEFAULT_URL, model: str = MODEL_PIPELINE, timeout_s: float = 30.0,
                 timing: bool = False, shared_memory: str = "auto") -> None:
        if shared_memory not in ("auto", "on", "off"):
            raise ValueError(f"shared_memory must be auto, on or off, got {shared_memory!r}")
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.client = connect(url)
        try:
            config = check_model(self.client, url, model)
        except BaseException:
            self.client.close()
            raise
        served = {t.name for t in config.output}
        missing = [t.name for t in HAND_TENSORS if t.name not in served]
        if missing:
            self.client.close()
            raise UserError(f"model {model!r} at {url} has no outputs {missing}: it is not a hand_pipeline model")
        grpcclient = _grpc()
        names = [t.name for t in HAND_TENSORS] + ([TIMING.name] if timing and TIMING.name in served else [])
        self._outputs = [grpcclient.InferRequestedOutput(n) for n in names]
        self.last_timing: dict[str, float] = {}  # server-side ms of the last frame (timing=True)
        self._lock = threading.Lock()  # one shared-memory region: one request at a time uses it
        self._shm: SharedMemoryImage | None = None
        if shared_memory == "on" or (shared_memory == "auto" and is_loopback(url)):
            self._shm = self._open_shm(required=shared_memory == "on")

    def _open_shm(self, required: bool) -> SharedMemoryImage | None:
        try:
            region = SharedMemoryImage(self.client)
            region._resize(640 * 480 * 3)  # registers now: a server that cannot map it says so here
            return region
        except Exception as exc:  # noqa: BLE001 - no libcshm, /dev/shm not shared with the server, ...
            if required:
                raise UserError(f"cannot share memory with the Triton server at {self.url} ({exc}); it must run "
                                "on this host with access to /dev/shm, or use shared_memory='off'") from None
            return None

    @property
    def uses_shared_memory(self) -> bool:
        return self._shm is not None

    def infer(self, image: np.ndarray, stream_id: int, start: bool = False, end: bool = False,
              timestamp: float | None = None) -> HandResults:
        """One frame (RGB uint8 [H, W, 3]) of stream `stream_id` -> its hands (pixels of `image`)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {list(image.shape)}")
        sequence = dict(sequence_id=check_stream_id(stream_id), sequence_start=start, sequence_end=end,
                        client_timeout=self.timeout_s)
        extra = [make_input(TIMESTAMP.name, np.array([[timestamp]], np.float64))] if timestamp is not None else []
        if self._shm is None:
            result = self.client.infer(self.model, [make_input(IMAGE.name, image[None]), *extra],
                                       outputs=self._outputs, **sequence)
        else:
            with self._lock:
                inputs = [self._shm.input(IMAGE.name, image[None]), *extra]
                result = self.client.infer(self.model, inputs, outputs=self._outputs, **sequence)
        timing = result.as_numpy(TIMING.name)
        if timing is not None:
            self.last_timing = dict(zip(TIMING_STAGES, timing.reshape(-1).tolist()))
        return results_from_tensors(result.as_numpy)

    def stream(self, stream_id: int) -> HandStream:
        return HandStream(self, check_stream_id(stream_id))

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        self.client.close()

    def __enter__(self) -> TritonHandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HandStream:
    """One video stream of a `TritonHandClient`: the first `send` carries START, the one with
    `last=True` carries END (which frees the stream's state on the server). A stream that is
    never ended is dropped by the server after its idle timeout."""

    def __init__(self, client: TritonHandClient, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.frames = 0
        self.ended = False

    def send(self, image: np.ndarray, last: bool = False, timestamp: float | None = None) -> HandResults:
        if self.ended:
            raise RuntimeError(f"stream {self.stream_id} has ended; open a new one with client.stream(id)")
        hands = self.client.infer(image, self.stream_id, start=self.frames == 0, end=last, timestamp=timestamp)
        self.frames += 1
        self.ended = last
        return hands


def register() -> None:
    """Kept for callers of earlier versions: backend "triton" is built into `shared.inference.backends`."""


__all__: Sequence[str] = ("DEFAULT_URL", "HandStream", "SharedMemoryImage", "TritonHandClient", "TritonRunner",
                          "check_model", "connect", "make_input", "register")
