"""The same pipeline for Kubeflow Pipelines v2: compile the stage functions of pipelines/full.py to a YAML.

    python pipelines/kfp.py --output pipeline.yaml                         # preset "full", image handops:latest
    python pipelines/kfp.py --output pipeline.yaml --preset demo --pvc handops-data --image registry/handops:1.0
    python pipelines/kfp.py --output pipeline.yaml --no_gpu --set detector_epochs=5

Compiling needs no cluster. Upload the YAML in the Kubeflow UI (or `kfp.Client().create_run_from_pipeline_package`).
Every node of `pipelines.full.STEPS` becomes a container step running, inside the project's image,

    python -m pipelines.kfp run-step NAME --output FILE --inputs JSON [JSON ...]

which calls the very same stage function as the ClearML pipeline. Steps exchange the same small dicts
of paths and ids, as KFP parameters. The pipeline parameter `config` is the preset's config (edit it
in the Kubeflow UI to rerun with other values). Steps on the ClearML `gpu` queue ask for one GPU.
export and deploy sit under a `dsl.If` on evaluate's `passed`: a failing quality gate skips them,
and evaluate's log names the failing metric.

Files between steps: mount one shared volume (`--pvc`; relative `output_dir` / `triton_repo` then
resolve under it), or give the pods ClearML credentials (`CLEARML_API_*`): each step then runs as a
ClearML task and datasets/models travel through the ClearML server, as on ClearML agents.
"""

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `python pipelines/kfp.py` puts pipelines/ first on sys.path, where this file would shadow the kfp package.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.config import PipelineConfig, load_pipeline_config  # noqa: E402
from pipelines.full import GATE, STEPS, Step  # noqa: E402
from shared.config import coerce_fields  # noqa: E402
from shared.errors import UserError, run_cli  # noqa: E402

DEFAULT_IMAGE = os.environ.get("HANDOPS_IMAGE", "handops:latest")
STEP_BY_NAME = {step.name: step for step in STEPS}
GATE_STEP = next(step for step in STEPS if step.output == GATE)


# ============================================================================ compile
def _container_step(step: Step, image: str):
    """A KFP container component for one stage: its inputs are the stage's inputs, as dicts."""
    from kfp import dsl

    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dict)
              for name in step.inputs]
    params.append(inspect.Parameter("result", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=dsl.OutputPath(dict)))
    if step is GATE_STEP:
        params.append(inspect.Parameter("passed", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        annotation=dsl.OutputPath(bool)))

    def spec(*placeholders):
        values = dict(zip([p.name for p in params], placeholders))
        args = ["--output", values["result"]]
        if "passed" in values:
            args += ["--passed", values["passed"]]
        args += ["--inputs", *(values[name] for name in step.inputs)]
        return dsl.ContainerSpec(image=image, command=["python", "-m", "pipelines.kfp", "run-step", step.name],
                                 args=args)

    spec.__signature__ = inspect.Signature(params)
    spec.__name__ = step.name
    spec.__doc__ = (inspect.getdoc(step.fn) or step.name.replace("_", " ")).splitlines()[0]
    return dsl.container_component(spec)


def build_kfp_pipeline(cfg: PipelineConfig, image: str = DEFAULT_IMAGE, pvc: str | None = None,
                       mount_path: str = "/workspace", gpu_type: str | None = "nvidia.com/gpu"):
    """The Kubeflow pipeline function for `cfg` (its `config` parameter defaults to cfg)."""
    from kfp import dsl

    components = {step.name: _container_step(step, image) for step in STEPS}
    defaults = cfg.as_step_dict()
    if pvc:  # relative paths would land in each pod's own file system: put them on the shared volume
        for key in ("output_dir", "triton_repo"):
            if not os.path.isabs(defaults[key]):
                defaults[key] = os.path.join(mount_path, defaults[key])

    def add(step: Step, outputs: dict) -> None:
        args = {name: outputs[name] for name in step.inputs}
        task = components[step.name](**args)
        task.set_display_name(step.name)
        task.set_caching_options(step.cached)
        if step.queue == "gpu" and gpu_type:
            task.set_accelerator_type(gpu_type).set_accelerator_limit(1)
        if pvc:
            from kfp import kubernetes

            kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=mount_path)
        outputs[step.output] = task.outputs["result"]
        if step is GATE_STEP:
            outputs["__passed"] = task.outputs["passed"]

    @dsl.pipeline(name=f"hand-perception-{cfg.preset}",
                  description="ingest -> augment -> G-MAE pretrain -> train -> evaluate (gates) -> export -> deploy")
    def hand_pipeline(config: dict = defaults):
        outputs: dict = {"config": config}
        for step in STEPS:
            if not step.gated:
                add(step, outputs)
        with dsl.If(outputs["__passed"] == True, name="quality-gates-passed"):  # noqa: E712 - a KFP condition
            for step in STEPS:
                if step.gated:
                    add(step, outputs)

    return hand_pipeline


def compile_pipeline(cfg: PipelineConfig, output: str | Path, **kwargs) -> Path:
    from kfp import compiler

    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(build_kfp_pipeline(cfg, **kwargs), str(output))
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}; pass --output a writable path") from None
    return output


# ============================================================================ run one step (inside the pod)
def coerce_config(config: dict) -> dict:
    """KFP carries dicts as protobuf Structs, where every number is a double: restore the ints."""
    return coerce_fields(PipelineConfig, config)


def _hand_over_mode(step: Step, config: dict) -> str:
    """Start a ClearML task for the step when the pod has a server, else hand files over by path
    (the step's `hand_over` setting becomes `paths`: the steps share a mounted volume)."""
    from pipelines.store import check_server, configured_server

    host = configured_server()
    if host is None:
        config["hand_over"] = "paths"
        return "paths on the shared volume"
    problem = check_server(host)
    if problem:
        raise UserError(f"{problem}; fix the pod's CLEARML_API_* or remove them to hand files over by path")
    from clearml import Task

    from shared.logger import pin_clearml_requirements

    pin_clearml_requirements()  # the image's pins, not the SDK's import scan (a race, see there)
    Task.init(project_name=config.get("project", "handops"), task_name=step.name, task_type=step.task_type,
              reuse_last_task_id=False, auto_connect_frameworks=False)
    return f"ClearML datasets and models on {host}"


def run_step(name: str, inputs: list[str], output: str, passed: str | None = None) -> dict:
    step = STEP_BY_NAME.get(name)
    if step is None:
        raise UserError(f"unknown step {name!r}; steps: {', '.join(STEP_BY_NAME)}")
    if len(inputs) != len(step.inputs):
        raise UserError(f"{name} takes {len(step.inputs)} inputs ({', '.join(step.inputs)}), got {len(inputs)}")
    args = []
    for input_name, text in zip(step.inputs, inputs):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{name}: input {input_name!r} is not JSON ({exc})") from None
        args.append(coerce_config(value) if input_name == "config" else value)
    config = args[step.inputs.index("config")]
    print(f"[{name}] handing over files as {_hand_over_mode(step, config)}", flush=True)
    result = step.fn(*args)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(result, default=str))
    if passed is not None:
        ok = bool(result.get("passed"))
        Path(passed).parent.mkdir(parents=True, exist_ok=True)
        Path(passed).write_text(json.dumps(ok))
        if not ok:
            print(f"[{name}] quality gate failed, export and deploy will be skipped: "
                  + "; ".join(result.get("failures", [])), flush=True)
    print(f"[{name}] done", flush=True)
    return result


# ============================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run-step":
        parser = argparse.ArgumentParser(prog="python -m pipelines.kfp run-step",
                                         description="Run one stage in a Kubeflow pod (the compiled YAML calls it).")
        parser.add_argument("name", help="step name: " + ", ".join(STEP_BY_NAME))
        parser.add_argument("--inputs", nargs="*", default=[], help="the step's inputs as JSON, in order")
        parser.add_argument("--output", required=True, help="file to write the step's result dict to (JSON)")
        parser.add_argument("--passed", default=None, help="gate step only: file to write true/false to")
        args = parser.parse_args(argv[1:])
        run_step(args.name, args.inputs, args.output, args.passed)
        return 0

    parser = argparse.ArgumentParser(prog="python pipelines/kfp.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="pipeline.yaml", help="YAML to write (default: pipeline.yaml)")
    parser.add_argument("--preset", default="full", help="demo | full | tiny | a YAML path (default: full)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys (repeatable: --set a=1 --set b=2 is --set a=1 b=2)")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"container image with this project installed (default: {DEFAULT_IMAGE}, "
                             "env HANDOPS_IMAGE; see the Dockerfile)")
    parser.add_argument("--pvc", default=None, help="PersistentVolumeClaim mounted in every step (shared files)")
    parser.add_argument("--mount_path", default="/workspace", help="where the PVC is mounted (default: /workspace)")
    parser.add_argument("--gpu_type", default="nvidia.com/gpu",
                        help="accelerator resource for training/export steps (default: nvidia.com/gpu)")
    parser.add_argument("--no_gpu", action="store_true", help="request no GPU for any step")
    args = parser.parse_args(argv)
    cfg = load_pipeline_config(args.preset, args.set)
    path = compile_pipeline(cfg, args.output, image=args.image, pvc=args.pvc, mount_path=args.mount_path,
                            gpu_type=None if args.no_gpu else args.gpu_type)
    gated = [s.name for s in STEPS if s.gated]
    print(f"wrote {path}: Kubeflow Pipelines v2, {len(STEPS)} steps on image {args.image}, "
          f"{', '.join(gated)} only when the quality gates pass")
    return 0


if __name__ == "__main__":
    run_cli(main)
