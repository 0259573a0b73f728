"""Kubeflow: the stage functions compile to a KFP v2 YAML whose DAG is the pipeline's, and the
compiled container commands really run our stages (executed here in order, as a launcher would)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import offline_env

pytest.importorskip("kfp")

from pipelines.full import GATE, STEPS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _compile(tmp: Path, *args: str) -> dict:
    out = tmp / "pipeline.yaml"
    # As a script (`python pipelines/kfp.py`), where the file must not shadow the kfp package.
    proc = subprocess.run([PY, "pipelines/kfp.py", "--output", str(out), *args], cwd=ROOT, env=offline_env(tmp),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout
    docs = list(yaml.safe_load_all(out.read_text()))  # the pipeline spec, then the platform spec (volumes)
    spec = docs[0]
    for extra in docs[1:]:
        spec.update(extra)
    return spec


def _producers(task: dict) -> set[str]:
    """Upstream tasks of a DAG task, from its parameter inputs (direct or through the condition)."""
    found = set()
    for spec in (task.get("inputs") or {}).get("parameters", {}).values():
        if "taskOutputParameter" in spec:
            found.add(spec["taskOutputParameter"]["producerTask"])
        elif "componentInputParameter" in spec:
            match = re.match(r"pipelinechannel--(.+)-(result|passed)$", spec["componentInputParameter"])
            if match:
                found.add(match.group(1))
    return found


def _kfp_name(name: str) -> str:
    return name.replace("_", "-")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _compile(tmp_path_factory.mktemp("kfp"), "--preset", "tiny", "--pvc", "handops-data",
                    "--image", "registry.local/handops:test")


def test_dag_matches_the_pipeline_steps(compiled: dict) -> None:
    root = compiled["root"]["dag"]["tasks"]
    conditions = [t for t in root.values() if "triggerPolicy" in t]
    assert len(conditions) == 1, "one quality-gate branch"
    branch = compiled["components"][conditions[0]["componentRef"]["name"]]["dag"]["tasks"]
    by_output = {step.output: _kfp_name(step.name) for step in STEPS}
    for step in STEPS:
        where = branch if step.gated else root
        assert _kfp_name(step.name) in where, f"{step.name} missing ({'inside' if step.gated else 'outside'} the gate)"
        expected = {by_output[name] for name in step.inputs if name != "config"}
        assert _producers(where[_kfp_name(step.name)]) == expected, step.name
    assert {t for t in root if "triggerPolicy" not in root[t]} == {_kfp_name(s.name) for s in STEPS if not s.gated}
    assert set(branch) == {_kfp_name(s.name) for s in STEPS if s.gated}
    # The branch runs only when evaluate says the gates passed.
    gate_task = by_output[GATE]
    assert gate_task in conditions[0]["triggerPolicy"]["condition"]
    assert "passed" in conditions[0]["triggerPolicy"]["condition"]
    assert "true" in conditions[0]["triggerPolicy"]["condition"]


def test_executors_run_our_stages_with_resources_and_volume(compiled: dict) -> None:
    executors = compiled["deploymentSpec"]["executors"]
    pvc = compiled["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in STEPS:
        container = executors[f"exec-{_kfp_name(step.name)}"]["container"]
        assert container["image"] == "registry.local/handops:test"
        assert container["command"] == ["python", "-m", "pipelines.kfp", "run-step", step.name]
        gpu = (container.get("resources") or {}).get("accelerator")
        assert bool(gpu) == (step.queue == "gpu"), step.name
        assert pvc[f"exec-{_kfp_name(step.name)}"]["pvcMount"][0]["mountPath"] == "/workspace"
    # The pipeline parameter is the preset, relative paths moved onto the shared volume.
    config = compiled["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["preset"] == "tiny" and config["num_images"] == 40
    assert config["output_dir"] == "/workspace/outputs/tiny"
    cached = {t: compiled["root"]["dag"]["tasks"][t].get("cachingOptions", {}).get("enableCache", False)
              for t in compiled["root"]["dag"]["tasks"] if "triggerPolicy" not in compiled["root"]["dag"]["tasks"][t]}
    assert cached[_kfp_name("ingest_dataset")] and not cached[_kfp_name("evaluate_models")]


def test_no_gpu_requests_none(tmp_path: Path) -> None:
    compiled = _compile(tmp_path, "--preset", "tiny", "--no_gpu")
    for executor in compiled["deploymentSpec"]["executors"].values():
        assert not (executor["container"].get("resources") or {}).get("accelerator")
    assert "platforms" not in compiled


def _render(arg: str, values: dict[str, str], outputs: dict[str, str]) -> str:
    arg = re.sub(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}", lambda m: values[m.group(1)], arg)
    return re.sub(r"\{\{\$\.outputs\.parameters\['(\w+)'\]\.output_file\}\}", lambda m: outputs[m.group(1)], arg)


def test_compiled_commands_run_the_first_stages(tmp_path: Path) -> None:
    """Play launcher for ingest -> augment: placeholders filled from the YAML, outputs fed forward."""
    out = tmp_path / "out"
    compiled = _compile(tmp_path, "--preset", "tiny", "--set", f"output_dir={out}", "num_images=12",
                        "sequences=1", "frames=4")
    config = compiled["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert isinstance(config["num_images"], float), "KFP structs carry numbers as doubles; run-step restores ints"
    results: dict[str, str] = {}
    for name in ("ingest_dataset", "augment_dataset"):
        task = compiled["root"]["dag"]["tasks"][_kfp_name(name)]
        values = {}
        for param, spec in task["inputs"]["parameters"].items():
            if "componentInputParameter" in spec:
                values[param] = json.dumps(config)
            else:
                values[param] = results[spec["taskOutputParameter"]["producerTask"]]
        outputs = {"result": str(tmp_path / f"{name}.json")}
        executor = compiled["deploymentSpec"]["executors"][task["componentRef"]["name"].replace("comp-", "exec-")]
        container = executor["container"]
        cmd = [PY if c == "python" else c for c in container["command"]]
        cmd += [_render(a, values, outputs) for a in container["args"]]
        proc = subprocess.run(cmd, cwd=ROOT, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "paths on the shared volume" in proc.stdout
        results[_kfp_name(name)] = Path(outputs["result"]).read_text()
    ingested = json.loads(results[_kfp_name("ingest_dataset")])
    augmented = json.loads(results[_kfp_name("augment_dataset")])
    assert sum(c["images"] for c in ingested["counts"].values()) == 12
    assert len(list(Path(augmented["train_images"]).iterdir())) > ingested["counts"]["train"]["images"]
    assert Path(augmented["train_images"]).is_relative_to(out)


def test_unwritable_output_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = subprocess.run([PY, "pipelines/kfp.py", "--preset", "tiny", "--output", str(blocker / "p.yaml")], cwd=ROOT,
                          env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"cannot write {blocker / 'p.yaml'}" in proc.stderr and "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("args, message", [
    (["no_such_step", "--output", "x.json"], "unknown step 'no_such_step'"),
    (["augment_dataset", "--output", "x.json", "--inputs", "{}"], "augment_dataset takes 2 inputs"),
    (["ingest_dataset", "--output", "x.json", "--inputs", "{not json"], "input 'config' is not JSON"),
])
def test_run_step_bad_input_is_one_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([PY, "-m", "pipelines.kfp", "run-step", *args], cwd=tmp_path, env={
        **offline_env(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()
