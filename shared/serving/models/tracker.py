"""tracker kind: the `tracker` model, a `HandTracker` per stream for clients that bring their
own detections."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.results import HandResults
from shared.serving.models.base import (
    BlsInfer,
    Inputs,
    RequestError,
    ServedModel,
    optional_timestamp,
    require,
    single_item,
)
from shared.serving.models.tensors import (
    DETECTION_PREFIX,
    GESTURE_PROBS,
    HAND_TENSORS,
    RESULT_FIELDS,
    TRACKER_INPUTS,
    empty_hands,
    results_to_tensors,
)
from shared.serving.sequences import SequenceStore, idle_timeout_s, read_controls


class TrackerModel(ServedModel):
    """tracker: one `HandTracker` per correlation id (START resets, END frees, idle expiry).

    Inputs are one frame's hands (DET_XYXY, DET_SCORE, DET_KEYPOINTS, DET_GESTURE,
    DET_GESTURE_SCORE, DET_HANDEDNESS, optional GESTURE_PROBS and TIMESTAMP); the answer is
    the same hands in the same order (XYXY, ..., TRACK_ID) with track ids and, for tracked
    hands, smoothed keypoints / gesture / handedness.
    """

    def __init__(self, model_config: dict[str, Any], model_dir: Path, infer: BlsInfer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(model_config, model_dir, infer)
        from shared.tracking import HandTracker, TrackerConfig

        cfg = TrackerConfig(**self.params.get("tracker", {}))
        self.streams = SequenceStore(factory=lambda: HandTracker(cfg), idle_timeout_s=idle_timeout_s(model_config),
                                     clock=clock)

    def execute(self, requests: list[Inputs]) -> list[dict[str, np.ndarray] | Exception]:
        self.streams.expire()
        return super().execute(requests)

    def execute_one(self, get: Inputs) -> dict[str, np.ndarray]:
        ctl = read_controls(get)
        if not ctl.ready:  # a padding slot of the direct strategy: answer, leave the state alone
            return empty_hands()
        fields = {RESULT_FIELDS[s.name[len(DETECTION_PREFIX):]]: require(get, s, self.name)
                  for s in TRACKER_INPUTS[:len(HAND_TENSORS) - 1]}
        n = len(fields["xyxy"])
        try:
            hands = HandResults(**fields)
        except ValueError as exc:
            raise RequestError(f"{self.name}: inputs disagree on the number of hands ({n} boxes): {exc}") from None
        if not (np.isfinite(hands.xyxy).all() and np.isfinite(hands.keypoints).all()):
            raise RequestError(f"{self.name}: DET_XYXY and DET_KEYPOINTS must be finite (stream {ctl.corrid})")
        probs = single_item(get, GESTURE_PROBS, self.name)
        if probs is not None and probs.shape[0] != n:
            raise RequestError(f"{self.name}: GESTURE_PROBS has {probs.shape[0]} rows for {n} hands")
        timestamp = optional_timestamp(get, self.name)
        tracker = self.streams.get(ctl.corrid, start=ctl.start)
        try:
            tracked = tracker.update(hands, timestamp=timestamp, gesture_probs=probs)
        finally:
            if ctl.end:
                self.streams.end(ctl.corrid)
        return results_to_tensors(tracked)
