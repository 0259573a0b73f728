"""Triton's `model.py` for every python model that `components.deploy` writes.

The glue between Triton's python backend and one served class of `shared.serving.models`:
inputs as numpy, one response per request, an error as that request's error response (a bad
request as INVALID_ARGUMENT, a bug as INTERNAL with its traceback in the server log). The
array logic lives in that package and is imported from the `shared` copy deployed next to
model.py, so nothing is duplicated here and the logic is tested without a server.

Deployed as text, never imported in process (`triton_python_backend_utils` exists only inside
Triton's python backend): model.py is PYTHON_MODEL_PRELUDE (shared.serving.repository) and
then this file, the same for every python model (shared.serving.model_templates). Which
served class a model runs is its config's `served_kind` parameter (SERVED_CLASSES).
"""

import traceback

import triton_python_backend_utils as pb_utils

from shared.serving.models import RequestError, bls_infer, error_message, load_served_model


def _getter(request):
    def get(name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()
    return get


class TritonPythonModel:
    """Triton's python model: the logic is the served class its config names (`served_kind`)."""

    def initialize(self, args):
        self.impl = load_served_model(args, __file__, infer=bls_infer(pb_utils))

    def execute(self, requests):
        responses = []
        for result in self.impl.execute([_getter(r) for r in requests]):
            if isinstance(result, Exception):
                if isinstance(result, RequestError):  # the client's fault: INVALID_ARGUMENT, not INTERNAL
                    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # older backends: no codes
                    message = error_message(self.impl.name, result)
                    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
                else:  # a bug, not a bad request: keep the traceback
                    pb_utils.Logger.log_error("".join(traceback.format_exception(result)))
                    error = pb_utils.TritonError(error_message(self.impl.name, result))
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, a) for n, a in result.items()]))
        return responses

    def finalize(self):
        self.impl.finalize()
