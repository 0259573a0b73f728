"""The ClearML pipeline, offline, with the real SDK: every step runs, the session zip holds
every step's metrics and the registered models, the Triton repository is complete, each
step's generated standalone script compiles and declares the packages it imports, and a
failing quality gate stops the run before export."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import offline_env

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STEP_NAMES = ["ingest_dataset", "augment_dataset", "pretrain_encoder", "train_detector_model",
              "train_gesture_classifier", "relabel_gestures", "train_hand_model", "evaluate_models", "export_models",
              "deploy_models"]


def _run(tmp: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "pipelines/full.py", *args], cwd=ROOT, env=offline_env(tmp), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("pipeline")
    proc = _run(tmp, "--preset", "tiny", "--set", f"output_dir={tmp / 'out'}", f"triton_repo={tmp / 'repo'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((tmp / "out" / "pipeline_summary.json").read_text())
    return tmp, summary, proc


def _session(summary: dict) -> dict:
    zpath = Path(summary["offline_session"])
    assert zpath.is_file(), zpath
    with zipfile.ZipFile(zpath) as z:
        names = z.namelist()
        task = json.loads(z.read("task.json"))
        metrics = [json.loads(line) for line in z.read("metrics.jsonl").decode().splitlines() if line.strip()]
    events = [e for batch in metrics for e in (batch if isinstance(batch, list) else [batch])]
    return {"names": names, "task": task, "events": events}


@pytest.mark.slow
def test_offline_pipeline_runs_every_step(tiny_run) -> None:
    tmp, summary, proc = tiny_run
    assert "No ClearML server configured" in proc.stdout
    session = _session(summary)
    configured = set(session["task"]["configuration"])
    assert set(STEP_NAMES) <= configured, configured
    titles = {e.get("metric") for e in session["events"]}
    for step in ("ingest", "augment", "pretrain", "detector", "classifier", "hand_model", "evaluate"):
        assert step in titles, (step, titles)
    models = {m["init"]["name"] for m in session["task"]["offline_output_models"]}
    assert {"hand_landmarks", "hand_landmarks_onnx", "blazepalm_onnx", "hand_detector", "gesture_classifier",
            "gmae_encoder"} <= models
    assert any(n.startswith("models/") and n.endswith(".onnx") for n in session["names"])  # weights in the zip
    # The controller records our pinned requirements.txt, not the SDK's scan of the imports
    # (that scan imports torch in a background thread while the steps import it: a race).
    recorded = session["task"]["script"]["requirements"]["pip"]
    assert all(line in recorded for line in (ROOT / "requirements.txt").read_text().splitlines()), recorded[:500]
    # The evaluation report and the Triton repository.
    report = json.loads((tmp / "out" / "evaluation" / "report.json").read_text())
    assert {"keypoints", "gestures", "tracking", "latency", "detector"} <= set(report["metrics"])
    repo = tmp / "repo"
    for model in summary["result"]["deployment"]["models"]:
        assert (repo / model / "config.pbtxt").is_file()
        assert any(p.is_dir() and p.name.isdigit() for p in (repo / model).iterdir())


def _imports_of(source: str, func: str) -> set[str]:
    tree = ast.parse(source)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == func)
    mods = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def _module_level_imports(path: str) -> set[str]:
    """Top-level names a module imports when it is imported (not inside functions: lazy)."""
    tree = ast.parse(Path(path).read_text())
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []) or []:
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return names


def _third_party(modules: set[str], then: str = "") -> set[str]:
    """Distributions the project's modules import when the step imports `modules` (and runs `then`)."""
    code = ("import importlib, json, sys\n"
            f"for m in {sorted(modules)!r}: importlib.import_module(m)\n" + then +
            "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items()\n"
            "                        if n.split('.')[0] in ('shared', 'components', 'pipelines'))))")
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "YOLO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    files = [f for f in json.loads(out.stdout.strip().splitlines()[-1]) if f]
    top = set().union(*(_module_level_imports(f) for f in files)) if files else set()
    dists = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    needed = set()
    for name in top:
        if name in stdlib or name.startswith("_") or name in ("shared", "components", "pipelines"):
            continue
        for dist in dists.get(name, []):
            needed.add(dist.lower().replace("_", "-"))
    return needed


# Distributions pulled in as dependencies of a listed package: pip installs them with it.
def _closure(packages: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [p.split("==")[0].split("[")[0].lower().replace("_", "-") for p in packages]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            dep = req.split(";")[0].strip()
            for sep in "<>=!~[ (":
                dep = dep.split(sep)[0]
            todo.append(dep.lower().replace("_", "-"))
    return seen


def test_teacher_ingest_declares_the_teachers_packages() -> None:
    """source=teacher: the ingest step runs the MediaPipe teacher (HandPipeline, ONNX Runtime, the
    first-use ONNX export from torch); an agent must install what the project modules it then loads
    import (the synthetic ingest's short list would not do)."""
    from types import SimpleNamespace

    from pipelines.full import STEP_PACKAGES, STEPS, step_packages

    ingest = next(s for s in STEPS if s.name == "ingest_dataset")
    assert step_packages(ingest, SimpleNamespace(source="synthetic")) == "data"
    assert step_packages(ingest, SimpleNamespace(source="teacher")) == "teacher"
    run = ("from components.autolabel import AutolabelConfig, _teacher\n"
           "import numpy as np\n_teacher(AutolabelConfig()).process(np.zeros((96, 128, 3), np.uint8))\n")
    needed = _third_party({"components.autolabel"}, then=run)
    missing = {d for d in needed if d not in _closure(STEP_PACKAGES["teacher"])}
    missing -= {"opencv-python", "opencv-python-headless"}  # either satisfies cv2; the list pins the headless one
    assert not missing, f"the teacher imports {sorted(missing)}; STEP_PACKAGES['teacher'] lacks them"


@pytest.mark.slow
def test_step_scripts_compile_and_declare_their_packages(tiny_run) -> None:
    tmp, summary, _ = tiny_run
    task = _session(summary)["task"]
    for step in STEP_NAMES:
        cfg = json.loads(task["configuration"][step]["value"])
        script = cfg["script"]["diff"]
        compile(script, f"<{step} standalone script>", "exec")
        # An agent runs the script alone: every global it reads must be defined in it (F821: undefined name).
        path = tmp / "scripts" / f"{step}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(script)
        lint = subprocess.run([PY, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821", str(path)],
                              capture_output=True, text=True)
        assert lint.returncode == 0, f"{step}: undefined names in its standalone script:\n{lint.stdout}"
        packages = cfg["script"]["requirements"]["pip"].split()
        declared = _closure(packages)
        repo_imports = {m for m in _imports_of(script, step) if m.split(".")[0] in ("shared", "components",
                                                                                      "pipelines")}
        missing = {d for d in _third_party(repo_imports) if d not in declared}
        # opencv ships as two interchangeable distributions; either satisfies cv2.
        if {"opencv-python", "opencv-python-headless"} & missing and "opencv-python-headless" in declared | {
                d for d in declared if d.startswith("opencv")}:
            missing -= {"opencv-python", "opencv-python-headless"}
        assert not missing, f"{step}: imports need {sorted(missing)} but packages list {packages}"


@pytest.mark.slow
def test_impossible_gate_stops_before_export(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--preset", "tiny", "--set", f"output_dir={tmp_path / 'out'}",
                f"triton_repo={tmp_path / 'repo'}", "pretrain_epochs=0", "detector_epochs=0", "classifier_epochs=0",
                'gates={"gestures/macro_f1": 1.01}')
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "gestures/macro_f1" in proc.stderr and "quality gate failed" in proc.stderr
    assert not (tmp_path / "out" / "export").exists()
    assert not (tmp_path / "repo").exists()


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    env["CLEARML_API_HOST"] = "http://127.0.0.1:9"
    proc = subprocess.run([PY, "pipelines/full.py", "--preset", "tiny"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "not reachable" in proc.stderr and "--offline" in proc.stderr


def test_bad_override_is_one_clear_error(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--preset", "tiny", "--set", "epochs_typo=3", timeout=60)
    assert proc.returncode == 2
    assert "--set: unknown config key(s) epochs_typo" in proc.stderr and "Traceback" not in proc.stderr


REAL = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (REAL / "hagrid_train").is_dir(), reason="needs ../shared/data (real photos)")
def test_real_preset_runs_end_to_end(tmp_path: Path) -> None:
    """`--preset real` on a few real photos: teacher labels -> YOLO on its boxes (1 short epoch) ->
    landmark gesture model -> a report with the confusion matrix and the recall curve measured on
    other people's photos -> export -> deploy."""
    photos = tmp_path / "photos"
    for gesture in ("fist", "one", "palm", "call"):
        (photos / gesture).mkdir(parents=True)
        for src in sorted((REAL / "hagrid_train" / "images" / gesture).glob("*.jpg"))[:4]:
            (photos / gesture / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    proc = _run(tmp_path, "--preset", "real", "--set", f"input_dir={photos}",
                f"test_dir={REAL / 'hagrid_sample'}", "detector_epochs=1", "detector_imgsz=160", "gates={}",
                "smoke_test=false", f"output_dir={out}", f"triton_repo={tmp_path / 'repo'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["metrics"]["gestures"]["targets"] == 16  # hagrid_sample: 4 fist, 4 one, 4 palm, 4 stop
    assert 0.0 <= report["metrics"]["gestures"]["accuracy"] <= 1.0
    assert len(report["confusion"]) == 5 and report["confusion_labels"][-2:] == ["missed", "unknown"]
    assert [r["epoch"] for r in report["recall_curve"]] == [1]
    by_set = report["detector_by_set"]["hagrid_sample"]  # the final detector on each test set alone
    assert by_set["images"] == 124 and 0.0 <= by_set["recall"] <= 1.0
    assert (out / "dataset" / "contact_sheet.png").is_file() and (out / "classifier" / "MODEL_CARD.md").is_file()
    assert (tmp_path / "repo").is_dir()


@pytest.mark.skipif(not (REAL / "hagrid_train").is_dir(), reason="needs ../shared/data (real photos)")
def test_real_preset_pretrains_gmae_on_every_hand_and_finetunes_it(tmp_path: Path) -> None:
    """`--preset real` with `classifier_source=gmae` and the tiled teacher: the pretrain step reads every
    hand of the teacher's dataset (gesture or not), the classifier step fine-tunes that encoder on the
    gesture hands only."""
    photos = tmp_path / "photos"
    for gesture in ("fist", "palm", "call"):  # `call` maps to no gesture of ours: pretraining only
        (photos / gesture).mkdir(parents=True)
        for src in sorted((REAL / "hagrid_train" / "images" / gesture).glob("*.jpg"))[:4]:
            (photos / gesture / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    proc = _run(tmp_path, "--preset", "real", "--set", f"input_dir={photos}", f"test_dir={REAL / 'hagrid_sample'}",
                "detector_epochs=1", "detector_imgsz=160", "gates={}", "smoke_test=false", "pretrain_epochs=1",
                "classifier_source=gmae", "classifier_epochs=1", "teacher_tiles=2", f"output_dir={out}",
                f"triton_repo={tmp_path / 'r'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert json.loads((out / "dataset" / "manifest.json").read_text())["config"]["tiles"] == 2  # the tiled teacher
    hands = json.loads((out / "pretrain" / "corpus" / "hands_report.json").read_text())
    assert hands["how"] == "labels" and "hand" in hands["per_folder"]  # `call` hands: unlabelled, pretrained on
    assert {"fist", "normal_hand"} <= set(hands["per_folder"])
    pretrain = json.loads((out / "pretrain" / "pretrain_summary.json").read_text())
    assert pretrain["corpus_dir"].endswith("hands") and np.isfinite(pretrain["metrics"]["train/loss"])
    finetune = json.loads((out / "classifier" / "train_summary.json").read_text())
    assert finetune["pretrained_weights"].endswith("encoder.pt")
    assert json.loads((out / "classifier" / "encoder_load.json").read_text())["missing"] == []
    assert sorted(p.name for p in (out / "pretrain" / "finetune_view").iterdir()) == ["fist", "normal_hand"]


def test_real_preset_needs_its_input(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--preset", "real", "--set", f"output_dir={tmp_path / 'o'}", timeout=120)
    assert proc.returncode == 2 and "input_dir" in proc.stderr and "Traceback" not in proc.stderr


def test_repeated_set_flags_add_up(tmp_path: Path) -> None:
    # `--set a=1 --set b=2` (the documented form) keeps both: the second input_dir is the one read
    proc = _run(tmp_path, "--preset", "real", "--set", f"output_dir={tmp_path / 'o'}",
                "--set", f"input_dir={tmp_path / 'missing'}", timeout=120)
    assert proc.returncode == 2 and f"{tmp_path / 'missing'} does not exist" in proc.stderr, proc.stderr


def test_hand_over_is_an_explicit_setting(tmp_path: Path) -> None:
    """How steps pass files is the pipeline setting `hand_over` (no environment variable):
    by path, folders stay where they are and no ClearML dataset is made."""
    from pipelines.config import load_pipeline_config
    from pipelines.store import by_path, publish_folder
    from shared.errors import UserError

    assert by_path("paths") and not by_path("clearml")
    ref = publish_folder(tmp_path, "dataset", "handops/datasets", hand_over="paths")
    assert ref == {"path": str(tmp_path.resolve()), "dataset_id": None}
    assert load_pipeline_config("tiny", ["hand_over=paths"]).hand_over == "paths"
    with pytest.raises(UserError, match="hand_over"):
        load_pipeline_config("tiny", ["hand_over=disk"])
