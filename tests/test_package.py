"""handops installs as a package: a wheel built from the checkout, installed with `--no-deps` into
a fresh venv that reuses this venv's dependencies (so CI does not download torch twice), gives
the `handops` command and the Python API, run from another folder, writing nothing there."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "hagrid_sample" / "images" / "palm"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    # a copy of the sources: setuptools builds in the source folder (build/, *.egg-info)
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv*", ".cache", ".git", "outputs", "runs", "build",
                                                             "*.egg-info", "__pycache__", "triton_repo"))
    wheels = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("handops-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_handops_deps.pth").write_text(site.getsitepackages()[0] + "\n")  # this venv's dependencies
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return venv


def _run(venv: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HANDOPS_CACHE")}
    return subprocess.run(args, cwd=cwd, env={**clean, **env, "PATH": f"{venv / 'bin'}:{clean['PATH']}"},
                          capture_output=True, text=True, timeout=600)


def test_handops_command_lists_the_stages_and_runs_one(installed, tmp_path):
    done = _run(installed, ["handops", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    for stage in ("pipeline", "autolabel", "infer", "export", "deploy", "serve"):
        assert f"\n  {stage} " in done.stdout
    done = _run(installed, ["handops", "export", "onnx", "--help"], tmp_path)
    assert done.returncode == 0 and "--precision" in done.stdout
    done = _run(installed, ["handops", "infer", "--input_dir", str(tmp_path / "nope"), "--output_dir",
                            str(tmp_path / "o")], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
    done = _run(installed, ["handops", "nope"], tmp_path)
    assert done.returncode == 2 and "unknown sub-command" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder


@pytest.mark.skipif(not PHOTO.is_dir(), reason="needs ../shared/data (a real photo)")
def test_python_api_from_the_installed_package(installed, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mediapipe").symlink_to(ROOT / ".cache" / "mediapipe")  # the models `make setup` fetched
    work = tmp_path / "work"
    work.mkdir()
    photo = sorted(PHOTO.glob("*.jpg"))[0]
    code = textwrap.dedent(f"""
        import cv2, shared
        from shared.inference.pipeline import HandPipeline
        assert "site-packages" in shared.__file__, shared.__file__
        pipe = HandPipeline.from_defaults(static=True)  # the README's snippet
        hands = pipe(cv2.cvtColor(cv2.imread({str(photo)!r}), cv2.COLOR_BGR2RGB))
        assert hands.to_json()[0]["gesture"] is not None
        int8 = HandPipeline.from_defaults(static=True, precision="int8", backend="openvino")  # the shipped file
        assert len(int8(cv2.cvtColor(cv2.imread({str(photo)!r}), cv2.COLOR_BGR2RGB))) == len(hands)
        print(len(hands), hands.keypoints.shape[1:], *[int(g) for g in hands.gesture])
    """)
    done = _run(installed, [str(installed / "bin" / "python"), "-c", code], work, HANDOPS_CACHE=str(cache))
    assert done.returncode == 0, done.stderr[-3000:]
    count, *gestures = done.stdout.replace("(21, 3)", "").split()
    assert int(count) >= 1 and "(21, 3)" in done.stdout
    assert all(int(g) >= 0 for g in gestures)  # a palm photo: every hand gets a gesture, no training first
    assert list(work.iterdir()) == []  # caches went to $HANDOPS_CACHE, not the working folder
    assert any((cache / "exports").iterdir())


def _shared_import_graph() -> dict[str, set[str]]:
    """module -> the shared.* modules it imports, at module level or inside functions (every
    `import` statement counts: a function-level import must not hide a cycle either)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (root / "shared").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                # `from pkg import submodule` needs the submodule; `from pkg import name` the package
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            # a package's own __init__ always runs first: not an edge of the graph
            deps |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = deps
    return graph


def test_shared_has_no_import_cycles():
    """The rooms of shared/ import downward only: runtime (inference.backends, triton_client) <- inference
    <- serving, models below inference, and no circle anywhere, lazy imports included."""
    from graphlib import CycleError, TopologicalSorter

    graph = _shared_import_graph()
    assert len(graph) > 50
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle in shared/: {' -> '.join(exc.args[1])}")
    assert order.index("shared.inference.backends") < order.index("shared.serving.models")
    # The layers: nothing below the inference room imports it, nothing outside serving imports serving.
    for name, deps in graph.items():
        if name.startswith(("shared.models", "shared.data", "shared.tracking", "shared.training")) or \
                name.count(".") == 1:
            assert not {d for d in deps if d.startswith("shared.inference") or d.startswith("shared.serving")}, name
        if name.startswith("shared.inference"):
            assert not {d for d in deps if d.startswith("shared.serving")}, name
