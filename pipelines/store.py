"""ClearML glue for the pipeline steps: server checks, dataset/model hand-over, the model store.

Steps pass small dicts of ids and paths, never big pickles. When everything runs in one
process (offline, or `--local`), a path is enough. When steps run on agents on other
machines, folders travel as ClearML Datasets and weights as ClearML models; the consumer
step fetches a local copy. Both ways go through `publish_folder` / `fetch_folder` and
`register_model` / `fetch_model`, so a step reads the same either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# One reachability check for every place that starts a ClearML task: shared.logger's.
from shared.logger import check_server, configured_server  # noqa: F401 - re-exported for the pipelines

FRAMEWORKS = {".pt": "PyTorch", ".pth": "PyTorch", ".ckpt": "PyTorch", ".onnx": "ONNX", ".engine": "TensorRT",
              ".plan": "TensorRT"}


# --------------------------------------------------------------------------- server
def is_offline() -> bool:
    from clearml import Task

    return bool(Task.is_offline())


def current_task() -> Any:
    from clearml import Task

    return Task.current_task()


def by_path(hand_over: str) -> bool:
    """Whether steps hand files over by path (the pipeline setting `hand_over`: paths, clearml,
    or auto = by path when offline, since then there is no server to hold datasets)."""
    if hand_over not in ("auto", "paths", "clearml"):
        raise ValueError(f"hand_over {hand_over!r}: expected auto, paths or clearml")
    return hand_over == "paths" or (hand_over == "auto" and is_offline())


# --------------------------------------------------------------------------- folders (datasets)
def publish_folder(path: str | Path, name: str, project: str, tags: list[str] | None = None,
                   hand_over: str = "auto") -> dict:
    """A reference to a folder for the next steps: its path, and with `hand_over` clearml (or auto
    with a server) a ClearML Dataset of it that a step on another machine fetches."""
    ref = {"path": str(Path(path).resolve()), "dataset_id": None}
    if by_path(hand_over):
        return ref
    from clearml import Dataset

    ds = Dataset.create(dataset_name=name, dataset_project=project, dataset_tags=tags or [])
    ds.add_files(str(path))
    ds.upload()
    ds.finalize()
    ref["dataset_id"] = ds.id
    return ref


def publish_dataset(cfg: dict, path: str | Path, name: str) -> dict:
    """`publish_folder` for a pipeline step: a dataset of the step config's project, tagged with its
    preset, handed over as its `hand_over` setting says (auto for a config from before the setting)."""
    return publish_folder(path, name, cfg["project"] + "/datasets", [cfg["preset"]],
                          hand_over=cfg.get("hand_over", "auto"))


def fetch_folder(ref: dict) -> Path:
    path = Path(ref["path"])
    if path.exists() or not ref.get("dataset_id"):
        return path
    from clearml import Dataset

    return Path(Dataset.get(dataset_id=ref["dataset_id"]).get_local_copy())


# --------------------------------------------------------------------------- models
def register_model(path: str | Path, name: str, tags: list[str], metadata: dict[str, Any],
                   framework: str | None = None) -> dict:
    """Register weights as an OutputModel of the current task (offline too: into the session zip).

    Returns a reference {"path", "model_id", "framework", "name", "tags"}; the same record is
    appended to `model_store.jsonl` beside the weights so a person finds it without ClearML.
    """
    path = Path(path)
    framework = framework or FRAMEWORKS.get(path.suffix, "Custom")
    ref: dict[str, Any] = {"path": str(path.resolve()), "model_id": None, "framework": framework, "name": name,
                           "tags": tags, "metadata": metadata}
    task = current_task()
    if task is not None:
        from clearml import OutputModel

        model = OutputModel(task=task, name=name, framework=framework, tags=tags,
                            comment=json.dumps(metadata, default=str)[:4000])
        for key, value in metadata.items():
            try:
                model.set_metadata(key, str(value), type(value).__name__)
            except Exception:  # offline DummyModel has no metadata store; it is in the comment
                break
        if task.is_offline():
            # OutputModel.update_weights first asks `published`, which the offline DummyModel
            # cannot answer ('DummyModel' object has no attribute 'locked'); the SDK's own
            # offline path behind it copies the file into the session and records the model.
            model._update_weights_offline(weights_filename=str(path))
        else:
            model.update_weights(weights_filename=str(path), auto_delete_file=False)
        ref["model_id"] = model.id
    with open(path.parent / "model_store.jsonl", "a") as f:
        f.write(json.dumps(ref, default=str) + "\n")
    return ref


def publish_model(ref: dict) -> None:
    """Mark a registered model published (only after the quality gates pass)."""
    if not ref.get("model_id") or is_offline():
        ref["published"] = True
        return
    from clearml import Model

    Model(model_id=ref["model_id"]).publish()
    ref["published"] = True


def fetch_model(ref: dict) -> Path:
    path = Path(ref["path"])
    if path.exists() or not ref.get("model_id"):
        return path
    from clearml import InputModel

    return Path(InputModel(model_id=ref["model_id"]).get_local_copy())


def query_models(project: str, tags: list[str], only_published: bool = True) -> list[dict]:
    """Models in the store by project/tags (for `deploy` run alone). Needs a server."""
    from clearml import Model

    models = Model.query_models(project_name=project, tags=tags, only_published=only_published)
    return [{"model_id": m.id, "name": m.name, "framework": m.framework, "url": m.url, "tags": m.tags}
            for m in models]
