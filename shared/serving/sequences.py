"""Per-stream state for a stateful (sequence-batched) Triton python model.

Triton's sequence batcher pins every request of one correlation id (one video stream) to
one model instance and tells the model, through control tensors, when a stream starts
(START) and ends (END). It never tells the model that a stream went silent: after
`max_sequence_idle_microseconds` Triton just frees the batch slot. `SequenceStore` keeps
one state object per correlation id and mirrors those rules:

- START (or an id it has never seen) -> a fresh state from `factory()`,
- END -> the caller calls `end(corrid)` after answering, which frees the state,
- a state untouched for `idle_timeout_s` is dropped on the next call (call once per
  `execute`, even with no requests for that stream: `expire()` sweeps all of them).

Padding: with the `direct` strategy Triton hands the model one request per *live* stream
slot in every batch; slots whose stream sent nothing this time arrive as padding requests
with READY=0, CORRID=0 and garbage data. They still need a response (any, e.g. zeros) but
must not touch the state: `read_controls` returns `ready=False` for them.

Pure Python + numpy, no Triton import: tested without a server and imported by `model.py`s
from the `shared` copy deployed next to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

S = TypeVar("S")


@dataclass(frozen=True)
class SequenceControls:
    """The sequence-batching control values of one request."""

    corrid: int | str  # 0 / "" on padding requests
    start: bool
    end: bool
    ready: bool  # False: a padding slot (direct strategy), answer it but leave the state alone


def read_controls(get: Callable[[str], np.ndarray | None], start: str = "START", end: str = "END",
                  ready: str = "READY", corrid: str = "CORRID") -> SequenceControls:
    """Controls of one request; `get(name)` returns the input as numpy (None if absent).

    In model.py: `read_controls(lambda n: _as_numpy(pb_utils.get_input_tensor_by_name(request, n)))`.
    Names default to `SequenceBatching`'s; an absent READY counts as ready, an absent START/END as 0.
    """

    def flag(name: str, default: bool) -> bool:
        value = get(name)
        return default if value is None else bool(np.asarray(value).reshape(-1)[0])

    raw = get(corrid)
    if raw is None:
        raise ValueError(f"request has no {corrid} control input: enable it in the model's sequence_batching")
    value = np.asarray(raw).reshape(-1)[0]
    cid: int | str = value.decode() if isinstance(value, bytes) else (str(value) if isinstance(value, str)
                                                                     else int(value))
    return SequenceControls(corrid=cid, start=flag(start, False), end=flag(end, False), ready=flag(ready, True))


def idle_timeout_s(model_config: dict[str, Any], default_s: float = 5.0) -> float:
    """`max_sequence_idle_microseconds` (in seconds) from the model config Triton passes to
    `initialize(args)` as JSON (`json.loads(args["model_config"])`), so the store expires a
    stream exactly when Triton frees its slot."""
    micros = model_config.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
    return float(micros) / 1e6 if micros else default_s


@dataclass
class _Entry(Generic[S]):
    state: S
    last_seen: float


class SequenceStore(Generic[S]):
    """State per correlation id with START reset, END release and idle expiry."""

    def __init__(self, factory: Callable[[], S], idle_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        self.factory = factory
        self.idle_timeout_s = float(idle_timeout_s)
        self.clock = clock
        self._entries: dict[Hashable, _Entry[S]] = {}
        self.started = 0  # counters for logs/metrics: streams started, ended, expired
        self.ended = 0
        self.expired = 0

    def get(self, corrid: Hashable, start: bool) -> S:
        """The state for `corrid`: a fresh one on START or for an unknown id, else the live one.

        An unknown id without START happens when the model instance restarted or expired
        the stream a moment before Triton did; starting fresh is the only safe answer.
        """
        now = self.clock()
        self.expire(now)
        entry = self._entries.get(corrid)
        if start or entry is None:
            entry = _Entry(state=self.factory(), last_seen=now)
            self._entries[corrid] = entry
            self.started += 1
        entry.last_seen = now
        return entry.state

    def end(self, corrid: Hashable) -> None:
        """Free the stream's state (after its END request was answered)."""
        if self._entries.pop(corrid, None) is not None:
            self.ended += 1

    def expire(self, now: float | None = None) -> list[Hashable]:
        """Drop states idle for longer than `idle_timeout_s`; returns their ids."""
        now = self.clock() if now is None else now
        stale = [k for k, e in self._entries.items() if now - e.last_seen > self.idle_timeout_s]
        for k in stale:
            del self._entries[k]
        self.expired += len(stale)
        return stale

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, corrid: Hashable) -> bool:
        return corrid in self._entries

    def ids(self) -> list[Hashable]:
        return list(self._entries)
