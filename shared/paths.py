"""Where handops keeps what it caches (MediaPipe's models, ONNX exports, Triton's backend dir).

`$HANDOPS_CACHE` when set; else `<checkout>/.cache` when running from a source checkout (the
folder with the Makefile: `make setup` fetches the models there); else `~/.cache/handops`
(an installed package never writes into site-packages or the current directory).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HANDOPS_CACHE"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = PROJECT_ROOT / "configs"  # YAML defaults and presets (installed beside the packages)


def is_checkout() -> bool:
    return (PROJECT_ROOT / "Makefile").is_file() and (PROJECT_ROOT / "requirements.txt").is_file()


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    if is_checkout():
        return PROJECT_ROOT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handops"
