"""The `model.py` of every python model `components.deploy` writes.

All of them are one real file, shared/serving/triton_model.py: Triton's `TritonPythonModel`
glue (inputs as numpy, one response per request, an error as that request's error response)
around the class of `shared.serving.models` that the model's config names (`served_kind`).
The array logic lives in that package and is imported from the `shared` copy deployed next to
model.py (PYTHON_MODEL_PRELUDE), so nothing is duplicated here and the logic is tested
without a server.
"""

from __future__ import annotations

from pathlib import Path

from shared.serving.repository import PYTHON_MODEL_PRELUDE

# Read as text, not imported (it imports Triton's triton_python_backend_utils); a .py file of
# the package, so an installed `shared` carries it too.
TRITON_MODEL_FILE = Path(__file__).resolve().with_name("triton_model.py")


def python_model_source() -> str:
    """model.py: the prelude (puts the deployed `shared` copy on the path), then triton_model.py as it is."""
    return PYTHON_MODEL_PRELUDE + "\n" + TRITON_MODEL_FILE.read_text()
