"""Write a Triton model repository: versioned model directories, self-contained python models.

    triton_repo/
      detector/
        config.pbtxt          generated from TensorSpecs (shared.serving.triton_config)
        1/model.onnx
        2/model.onnx          a redeploy adds version N+1; `keep_versions` prunes the oldest
      tracker/
        config.pbtxt
        3/model.py
        3/shared/...          a copy of the `shared` package, taken at deploy time

How python models import `shared`: `write_model(..., include_shared=True)` copies the
`shared` package into the version directory, next to `model.py`, and `model.py` starts with
`PYTHON_MODEL_PRELUDE`, which puts its own directory first on `sys.path`. Why this and not
PYTHONPATH or a `_lib/` folder at the repository root:

- the repository is self-contained: it can be copied to another host or mounted into the
  official Triton container and the models still import the same array logic;
- each version carries the exact `shared` code it was deployed with, so rolling back to
  version N also rolls back the logic; two versions never share mutable code;
- Triton treats every folder at the repository root as a model, so a root `_lib/` would
  fail to load (and stop a server started with the default --exit-on-error).

Each python model runs in its own stub process, so two models importing `shared` from
their own copies never clash. The copy is ~200 kB of .py files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from shared.errors import UserError
from shared.serving.triton_config import ModelConfig, check_name, label_file

FileSource = Path | bytes | str

# First lines of every generated python-backend model.py: import `shared` from the copy that
# was deployed with this version, whatever else is on the host's sys.path.
PYTHON_MODEL_PRELUDE = (
    "import sys\n"
    "from pathlib import Path\n"
    "\n"
    "# `shared` was copied next to this file at deploy time (shared.serving.repository.write_model).\n"
    "sys.path.insert(0, str(Path(__file__).resolve().parent))\n"
)

_NAME_LINE = re.compile(r'^\s*name\s*:\s*"([^"]*)"', re.MULTILINE)
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")


def shared_package_dir() -> Path:
    """The `shared` package this process imports (the one copied into python models)."""
    return Path(__file__).resolve().parents[1]


def model_versions(repo: str | Path, name: str) -> list[int]:
    """Version numbers present for a model, ascending (empty if the model is not there)."""
    model_dir = Path(repo) / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def write_model(
    repo: str | Path,
    name: str,
    config_text: str,
    files: Mapping[str, FileSource],
    keep_versions: int | None = None,
    include_shared: bool = False,
    model_files: Mapping[str, str] | None = None,
) -> Path:
    """Add version N+1 of model `name` under `repo` and (re)write its config.pbtxt (and
    `model_files`, texts beside it such as label files).

    `files` maps paths inside the version directory to their content: a `Path` (a file or a
    whole folder, copied), `bytes` or `str` (written as is). `include_shared` copies the
    `shared` package next to them (python models, see the module docstring).
    `keep_versions` deletes all but the newest N version directories afterwards; pass the
    same N as the config's version_policy so disk and server agree.
    Returns the new version directory. The version directory is assembled under a hidden
    temporary name and renamed into place, so a polling server never sees half a version.
    """
    try:
        check_name(name, "model name")
    except ValueError as exc:
        raise UserError(f"{repo}: {exc}") from None
    if keep_versions is not None and keep_versions < 1:
        raise UserError(f"keep_versions must be >= 1 for model {name}, got {keep_versions}")
    declared = _NAME_LINE.search(config_text)
    if declared and declared.group(1) != name:
        raise UserError(f"config for model {name!r} declares name {declared.group(1)!r}; "
                        f"Triton needs the directory name and config name to match")
    sources = {_check_relative(name, rel): src for rel, src in files.items()}
    for rel, src in sources.items():
        if isinstance(src, Path) and not src.exists():
            raise UserError(f"model {name}: file for {rel} not found: {src} (export it first or fix the path)")

    model_dir = Path(repo) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = model_versions(repo, name)
    version = (existing[-1] + 1) if existing else 1
    final_dir = model_dir / str(version)

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=model_dir))
    try:
        for rel, src in sources.items():
            _write_one(tmp_dir / rel, src)
        if include_shared:
            shutil.copytree(shared_package_dir(), tmp_dir / "shared", ignore=_COPY_IGNORE)
        tmp_dir.chmod(0o755)  # mkdtemp makes it 0700; a server under another user must read it
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise

    for rel, text in (model_files or {}).items():
        _atomic_write_text(model_dir / _check_relative(name, rel), text)
    _atomic_write_text(model_dir / "config.pbtxt", config_text)
    if keep_versions is not None:
        for old in model_versions(repo, name)[:-keep_versions]:
            shutil.rmtree(model_dir / str(old))
    return final_dir


def deploy_model(
    repo: str | Path,
    config: ModelConfig,
    files: Mapping[str, FileSource],
    include_shared: bool = False,
) -> Path:
    """`write_model` for a `ModelConfig`: renders the config, keeps `config.keep_versions`
    versions on disk, and checks that the file the backend loads is among `files`."""
    if config.model_file and config.model_file not in files:
        raise UserError(f"model {config.name}: backend {config.backend} loads {config.model_file}, "
                        f"which is not among the files given ({', '.join(sorted(files)) or 'none'})")
    return write_model(repo, config.name, config.to_pbtxt(), files,
                       keep_versions=config.keep_versions, include_shared=include_shared,
                       model_files={label_file(out): "\n".join(names) + "\n" for out, names in config.labels.items()})


def _check_relative(model: str, rel: str) -> str:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise UserError(f"model {model}: file name {rel!r} must be a relative path inside the version directory")
    if path.parts[0] == "shared":
        raise UserError(f"model {model}: 'shared/' is reserved for the copied package (use include_shared=True)")
    return rel


def _write_one(dest: Path, src: FileSource) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, Path):
        if src.is_dir():
            shutil.copytree(src, dest, ignore=_COPY_IGNORE)
        else:
            shutil.copy2(src, dest)
    elif isinstance(src, bytes):
        dest.write_bytes(src)
    elif isinstance(src, str):
        dest.write_text(src)
    else:
        raise TypeError(f"file content for {dest.name} must be Path, bytes or str, got {type(src).__name__}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
