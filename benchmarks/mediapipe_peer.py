"""MediaPipe Hands as a peer: its own venv, created on demand, and a worker run inside it.

mediapipe 0.10.21 needs numpy<2 while the project runs numpy 2, so MediaPipe never enters
the project's interpreter: `ensure_venv()` makes `.venv-mediapipe` (once) and
`run_worker(...)` runs `benchmarks/mediapipe_worker.py` there and reads its JSON.

    python -m benchmarks.mediapipe_peer          # create the venv and print the versions
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-mediapipe"
WORKER = Path(__file__).resolve().parent / "mediapipe_worker.py"
MEDIAPIPE_VERSION = "0.10.21"
REQUIREMENTS = (f"mediapipe=={MEDIAPIPE_VERSION}", "numpy<2", "opencv-python-headless")


class PeerUnavailable(RuntimeError):
    """The MediaPipe venv could not be created or does not work (message says why)."""


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _works(python: Path) -> bool:
    if not python.is_file():
        return False
    check = f"import mediapipe as mp; assert mp.__version__ == '{MEDIAPIPE_VERSION}'"
    probe = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120)
    return probe.returncode == 0


def _base_python() -> str:
    """A Python 3.11 for the venv (mediapipe 0.10.21 has wheels for 3.9-3.12)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise PeerUnavailable("MediaPipe peer: python3.11 not found to create .venv-mediapipe")
    return found


def ensure_venv(venv: Path = VENV, quiet: bool = True) -> Path:
    """The venv's python, creating the venv on first use (pip: PyPI or the configured index;
    the mediapipe wheel cached by `make weights` in .cache/mediapipe is reused)."""
    python = venv_python(venv)
    if _works(python):
        return python
    try:
        if not python.is_file():
            subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, capture_output=quiet, timeout=300)
        cmd = [str(python), "-m", "pip", "install", *REQUIREMENTS]
        wheel_cache = ROOT / ".cache" / "mediapipe"
        if wheel_cache.is_dir():
            cmd += ["--find-links", str(wheel_cache)]
        if quiet:
            cmd.append("--quiet")
        print(f"creating {venv} (one time): {' '.join(REQUIREMENTS)}", file=sys.stderr)
        subprocess.run(cmd, check=True, capture_output=quiet, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise PeerUnavailable(f"MediaPipe peer: could not set up {venv} ({exc}); {detail.strip()[-400:]}") from None
    if not _works(python):
        raise PeerUnavailable(f"MediaPipe peer: {venv} exists but `import mediapipe` fails there")
    return python


def run_worker(args: list[str], python: Path | None = None, timeout: float = 1800.0) -> dict[str, Any]:
    """Run the worker in the MediaPipe venv and return its JSON."""
    python = python or ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run([str(python), str(WORKER), *args, "--out", str(out)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if proc.returncode != 0 or not out.is_file():
            raise PeerUnavailable(f"MediaPipe worker failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return json.loads(out.read_text())


if __name__ == "__main__":
    print(json.dumps(run_worker(["version"]), indent=2))
