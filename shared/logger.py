"""Experiment loggers: stage functions receive one and never import ClearML.

`get_logger(output_dir)` returns a logger that always writes local files
(`metrics.jsonl`, plots as PNG) and, when a ClearML task is active in this
process, also reports to it. ClearML is imported lazily, inside the call.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from shared.errors import UserError


class ExperimentLogger:
    """Local logger: scalars to `metrics.jsonl`, images/plots as files."""

    def __init__(self, output_dir: str | Path | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        if self.output_dir:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    def _append(self, record: dict[str, Any]) -> None:
        if not self.output_dir:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_params(self, params: dict[str, Any], name: str = "config") -> None:
        self._append({"params": name, "values": params})

    def log_scalar(self, title: str, series: str, value: float, step: int) -> None:
        self._append({"title": title, "series": series, "value": float(value), "step": int(step)})

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            title, _, series = key.partition("/")
            self.log_scalar(title, series or title, value, step)

    def log_matrix(self, title: str, matrix: Any, labels: list[str], step: int = 0) -> None:
        self._append({"matrix": title, "labels": labels, "values": [list(map(float, r)) for r in matrix],
                      "step": step})

    def log_image(self, title: str, path: str | Path, step: int = 0) -> None:
        self._append({"image": title, "path": str(path), "step": step})

    def log_artifact(self, name: str, path: str | Path) -> None:
        self._append({"artifact": name, "path": str(path)})


class ClearMLLogger(ExperimentLogger):
    """Writes the local files and reports the same to the active ClearML task."""

    def __init__(self, task: Any, output_dir: str | Path | None = None) -> None:
        super().__init__(output_dir)
        self.task = task
        self.clearml = task.get_logger()

    def log_params(self, params: dict[str, Any], name: str = "config") -> None:
        super().log_params(params, name)
        self.task.connect(params, name=name)

    def log_scalar(self, title: str, series: str, value: float, step: int) -> None:
        super().log_scalar(title, series, value, step)
        self.clearml.report_scalar(title=title, series=series, value=float(value), iteration=int(step))

    def log_matrix(self, title: str, matrix: Any, labels: list[str], step: int = 0) -> None:
        super().log_matrix(title, matrix, labels, step)
        self.clearml.report_confusion_matrix(title=title, series=title, matrix=matrix, iteration=step,
                                             xlabels=labels, ylabels=labels, xaxis="predicted",
                                             yaxis="true")

    def log_image(self, title: str, path: str | Path, step: int = 0) -> None:
        super().log_image(title, path, step)
        self.clearml.report_image(title=title, series=Path(path).stem, iteration=step, local_path=str(path))

    def log_artifact(self, name: str, path: str | Path) -> None:
        super().log_artifact(name, path)
        self.task.upload_artifact(name=name, artifact_object=str(path))


def current_clearml_task() -> Any:
    """The active ClearML task of this process, or None (ClearML not installed/used)."""
    import sys

    if "clearml" not in sys.modules:  # never import it just to find nothing
        return None
    from clearml import Task

    return Task.current_task()


REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"


def pin_clearml_requirements() -> None:
    """Make the next ClearML task record requirements.txt (our exact pins) as its packages.

    Call it before `Task.init` (or before a pipeline creates its task). Without it the SDK
    scans the imports in a background thread and *imports* the packages it finds (torch,
    lightning, numba...) there, while the task's own code imports them in the main thread;
    two threads importing torch at once fail with "partially initialized module 'torch'"
    (this broke the offline demo once). The pins are also what an agent should install.
    """
    from clearml import Task

    # A str: the SDK reads a requirements file only from a str or its own pathlib2.Path.
    Task.force_requirements_env_freeze(requirements_file=str(REQUIREMENTS_FILE))


def configured_server() -> str | None:
    """The ClearML API server this machine is configured for (CLEARML_API_HOST, else
    `api_server` in clearml.conf), or None."""
    host = os.environ.get("CLEARML_API_HOST")
    if host:
        return host
    conf = Path(os.environ.get("CLEARML_CONFIG_FILE", Path.home() / "clearml.conf"))
    if conf.is_file():
        match = re.search(r"api_server\s*[:=]\s*\"?([^\s\"]+)", conf.read_text(errors="replace"))
        if match:
            return match.group(1)
    return None


def check_server(host: str, timeout: float = 4.0) -> str | None:
    """None when the ClearML server answers, else one line saying why not. Never retries: the
    SDK itself retries an unreachable host for many minutes before it gives up."""
    import requests

    url = host.rstrip("/") + "/debug.ping"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return f"ClearML server {host} is not reachable ({type(exc).__name__})"
    if response.status_code >= 500:
        return f"ClearML server {host} answered HTTP {response.status_code}"
    return None


def clearml_offline_mode() -> bool:
    return os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes", "on")


def check_clearml_server() -> str | None:
    """The configured ClearML host once it answered (None: none configured, or offline mode),
    or one UserError naming the host within seconds. Call it before any work that a task
    would record, so a bad server fails the run at once rather than after the work."""
    host = configured_server()
    if host is None or clearml_offline_mode():
        return host
    problem = check_server(host)
    if problem:
        raise UserError(f"{problem}; fix clearml.conf / CLEARML_API_*, or run without --project_name to log to "
                        f"local files only")
    return host


def start_clearml_task(project_name: str, task_name: str, **init_kwargs: Any) -> Any:
    """The one way our CLIs start a ClearML task: the active task if there is one; else, when a
    server is configured, a fast reachability check (one line naming the host instead of the
    SDK's minutes of silent retries) and `Task.init`; None when ClearML is not configured.

    Offline mode (CLEARML_OFFLINE_MODE=1) needs no server and skips the check.
    """
    offline = clearml_offline_mode()
    host = check_clearml_server()
    if host is None and not offline:
        print("ClearML is not configured (no clearml.conf / CLEARML_API_HOST): logging to local files only")
        return None
    from clearml import Task

    if Task.current_task() is not None:
        return Task.current_task()
    pin_clearml_requirements()  # not the SDK's import scan, which races our imports
    try:
        return Task.init(project_name=project_name, task_name=task_name, reuse_last_task_id=False, **init_kwargs)
    except Exception as exc:  # noqa: BLE001 - the SDK raises assorted errors for credentials / server answers
        raise UserError(f"ClearML task could not start on {host or 'offline'} ({type(exc).__name__}: {exc}); "
                        f"fix clearml.conf / CLEARML_API_*, or run without --project_name") from None


def get_logger(output_dir: str | Path | None = None) -> ExperimentLogger:
    task = current_clearml_task()
    if task is not None:
        return ClearMLLogger(task, output_dir)
    return ExperimentLogger(output_dir)
