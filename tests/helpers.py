"""Helpers shared by tests that run the project's commands in subprocesses."""

from __future__ import annotations

import os
from pathlib import Path


def offline_env(tmp: Path) -> dict[str, str]:
    """This environment without a ClearML server, with the network blocked and caches under `tmp`."""
    env = dict(os.environ)
    for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        env.pop(key, None)
    env.update(CLEARML_CACHE_DIR=str(tmp / "clearml"), CLEARML_CONFIG_FILE=str(tmp / "no-clearml.conf"),
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost",
               NO_ALBUMENTATIONS_UPDATE="1", YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env
