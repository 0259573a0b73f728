"""The model registry: `create_model(name, **cfg)` over one table.

Entries are "module:factory" strings, imported on first use, so importing the
registry costs nothing and model files stay independent of each other.
`timm:<name>` builds any timm classifier through `shared.models.classifier`.
"""

from __future__ import annotations

import importlib
from typing import Any

from shared.errors import UserError

MODELS: dict[str, str] = {
    "blazehand_full": "shared.models.blazehand:blazehand_full",
    "blazehand_lite": "shared.models.blazehand:blazehand_lite",
    "blazepalm_full": "shared.models.blazepalm:blazepalm_full",
    "blazepalm_lite": "shared.models.blazepalm:blazepalm_lite",
    "gmae_tiny": "shared.models.gmae:gmae_tiny",
    "gmae_small": "shared.models.gmae:gmae_small",
    "gmae_base": "shared.models.gmae:gmae_base",
    "gmae_classifier_tiny": "shared.models.gmae:gmae_classifier_tiny",
    "gmae_classifier_small": "shared.models.gmae:gmae_classifier_small",
    "gmae_classifier_base": "shared.models.gmae:gmae_classifier_base",
}

# Names the seed used, mapped to ours.
ALIASES: dict[str, str] = {"blazehand": "blazehand_full", "blazepalm": "blazepalm_full"}


def resolve_name(name: str) -> str:
    return ALIASES.get(name, name)


def no_gesture_head(weights: str) -> bool:
    """Weights that leave BlazeHand's gesture head untrained: MediaPipe's (by name or its .tflite) or
    none at all. The export summary records it; the pipeline then reads the gesture from the landmarks."""
    weights = str(weights)
    return weights in ("mediapipe", "none", "random", "") or weights.endswith(".tflite")


def list_models() -> list[str]:
    return sorted(MODELS) + ["timm:<name>"]


def create_model(name: str, **cfg: Any) -> Any:
    """Build a registered model with named arguments (see each factory)."""
    name = resolve_name(name)
    if name.startswith("timm:"):
        from shared.models.classifier import create_timm_classifier

        return create_timm_classifier(name.split(":", 1)[1], **cfg)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    module_name, factory = MODELS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(**cfg)
