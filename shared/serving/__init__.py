"""Serving helpers: Triton config generation, model repository writer, local tritonserver.

    triton_config  ModelConfig -> config.pbtxt text (from `shared.tensors.TensorSpec`s)
    repository     write_model(): versioned model directories, self-contained python models
    sequences      SequenceStore: per-stream state for stateful (sequence-batched) python models
    server         TritonServer: start/stop the tritonserver bundled in nvidia-pytriton (.venv-triton)
    models         the python models' tensors and array logic, one module per served class
    triton_model   the model.py of every python model (Triton glue; deployed as text, never imported)

Nothing here imports tritonclient or starts processes at import time.
"""
