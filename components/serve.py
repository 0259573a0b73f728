"""Serve a Triton model repository with the tritonserver bundled in nvidia-pytriton.

    python -m components.serve --triton_repo triton_repo
    python -m components.serve --triton_repo triton_repo --grpc_port 8001 --http_port 8000 --metrics_port 8002
    python -m components.serve --triton_repo triton_repo --model_control_mode poll   # picks up redeploys

Runs the server from `.venv-triton` (created by `make triton-venv`; `--setup_venv` creates it
here if missing), bound to 127.0.0.1, and prints exactly one line on stdout once every model
is loaded:

    ready: Triton 2.51.0 serving 6 model(s) from triton_repo at grpc 127.0.0.1:8001 (http ..., metrics ...)

Ctrl-C / SIGTERM stop the server cleanly (models unload, python stubs exit). The server's
own log goes to `--log_file` (default `.cache/triton/logs/tritonserver-<grpc_port>.log`, `-` = this
terminal's stderr). On a GPU host, run the official container on the same repository instead
(see triton_repo/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import add_config_args, check_writable, load_config, option
from shared.errors import UserError, run_cli
from shared.serving.server import (
    DEFAULT_VENV,
    PROJECT_ROOT,
    TritonNotInstalled,
    TritonServer,
    TritonStartError,
    find_triton,
)

SETUP_SCRIPT = PROJECT_ROOT / "tools" / "setup_triton_venv.sh"


@dataclass
class ServeConfig:
    triton_repo: str = option("triton_repo", "the Triton model repository to serve")
    grpc_port: int = option(8001, "gRPC port (0 = pick a free one)", min=0, max=65535)
    http_port: int = option(8000, "HTTP port (0 = pick a free one)", min=0, max=65535)
    metrics_port: int = option(8002, "Prometheus metrics port (0 = pick a free one)", min=0, max=65535)
    host: str = option("127.0.0.1", "address to bind; keep loopback unless a proxy/firewall fronts it")
    model_control_mode: str = option("none", "none: load all at start; explicit: also allow client load/unload; "
                                             "poll: rescan the repository every --poll_secs",
                                     metadata={"choices": ["none", "explicit", "poll"]})
    poll_secs: int = option(5, "repository rescan period for --model_control_mode poll", min=1)
    venv: str = option("", f"the Triton virtual environment ('' = $TRITON_VENV or {DEFAULT_VENV.name}; "
                           "make triton-venv creates it)")
    setup_venv: bool = option(False, "create/update the venv with tools/setup_triton_venv.sh if it is missing")
    log_file: str = option("", "tritonserver log file ('' = .cache/triton/logs/tritonserver-<grpc_port>.log, "
                                   "'-' = stderr)")
    log_verbose: int = option(0, "tritonserver --log-verbose level", min=0)
    startup_timeout_s: float = option(300.0, "give up if the models are not all loaded by then", min=1.0)


def ensure_venv(cfg: ServeConfig):
    """The TritonInstall for cfg.venv, creating it first when asked to."""
    try:
        return find_triton(cfg.venv or None)
    except TritonNotInstalled:
        if not cfg.setup_venv:
            raise
    print(f"creating the Triton venv ({SETUP_SCRIPT.name}) ...", file=sys.stderr)
    env = {**os.environ, "TRITON_VENV": str(cfg.venv)} if cfg.venv else dict(os.environ)
    done = subprocess.run(["bash", str(SETUP_SCRIPT)], env=env)
    if done.returncode != 0:
        raise UserError(f"{SETUP_SCRIPT} failed (exit {done.returncode}); see its output above")
    return find_triton(cfg.venv or None)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port still in TIME_WAIT from a server stopped a moment ago counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _model_file(config: Any) -> str:
    """The file Triton loads from a version folder for this parsed config ('' for ensembles)."""
    if config.default_model_filename:
        return config.default_model_filename
    if config.platform == "ensemble":
        return ""
    if config.backend == "python":
        return "model.py"
    if config.platform in ("tensorrt_plan",) or config.backend == "tensorrt":
        return "model.plan"
    if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
        return "model.onnx"
    return ""


def check_repository(repo: Path, models: list[str]) -> None:
    """Before the server starts: every model's config.pbtxt parses, every version folder holds
    the file its backend loads, every ONNX file parses and every model.py compiles. A problem is
    one UserError naming the model and the file, instead of a server that exits after pages of
    log. (What only loading can find, e.g. a model.py that raises, is named from the log.)"""
    from shared.serving.triton_config import parse_pbtxt

    for name in models:
        config_path = repo / name / "config.pbtxt"
        try:
            config = parse_pbtxt(config_path.read_text(errors="replace"))
        except (ValueError, OSError) as exc:
            raise UserError(f"model '{name}': {config_path} is not a valid Triton config ({exc}); redeploy it "
                            f"with `python -m components.deploy`") from None
        versions = sorted((p for p in (repo / name).iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name))
        if not versions:
            raise UserError(f"model '{name}': no version folder (e.g. {repo / name / '1'}) in {repo / name}; redeploy "
                            f"it with `python -m components.deploy`")
        model_file = _model_file(config)
        for version in versions:
            files = [version / model_file] if model_file else []
            files += [f for f in sorted(version.glob("*.onnx")) if f not in files]
            for path in files:
                problem = _model_file_problem(path)
                if problem:
                    raise UserError(f"model '{name}' version {version.name}: {path} {problem}; redeploy it with "
                                    f"`python -m components.deploy` (or remove the version folder)")


def _model_file_problem(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load_model(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises assorted decode errors
            detail = str(exc).splitlines()[0][:120] if str(exc) else ""
            return f"is not a valid ONNX model ({type(exc).__name__}: {detail})"
        if not model.graph.node:
            return "is not a valid ONNX model (no graph)"
    elif path.suffix == ".py":
        try:
            compile(path.read_bytes(), str(path), "exec")
        except (SyntaxError, ValueError) as exc:
            return f"does not compile ({type(exc).__name__}: {exc})"
    return None


def start_failure(text: str, repo: Path) -> str | None:
    """One line per model the server log says failed to load, naming its folder; None if none does."""
    failed = []
    for match in re.finditer(r"failed to load '([^']+)' version (\d+): (.*)", text):
        name, version, reason = match.groups()
        # The python backend escapes its traceback into one line: "msg\n\nAt:\n  file(line): func\n"
        parts = [p.strip(' "') for p in reason.split("\\n") if p.strip(' "')]
        where = [p for p in parts[1:] if re.search(r"\(\d+\)", p)]
        detail = parts[0] if parts else reason.strip()
        if where:
            detail += f" (at {where[-1]})"
        failed.append(f"model '{name}' ({repo / name / version}) failed to load: {detail[:300]}")
    if not failed:
        return None
    return "; ".join(dict.fromkeys(failed))


def serve(cfg: ServeConfig, stop_event: threading.Event | None = None, on_ready=print) -> int:
    """Run the server until `stop_event` is set (or the server dies). Returns an exit code."""
    repo = Path(cfg.triton_repo)
    if not repo.is_dir():
        raise UserError(f"--triton_repo {repo}: not a directory (write one with `python -m components.deploy`)")
    models = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if not models:
        raise UserError(f"--triton_repo {repo}: no model folders with a config.pbtxt "
                        f"(write them with `python -m components.deploy --triton_repo {repo}`)")
    check_repository(repo, models)
    if cfg.log_file and cfg.log_file != "-":
        check_writable(cfg.log_file, "--log_file", "file")
    for flag, port in (("grpc_port", cfg.grpc_port), ("http_port", cfg.http_port), ("metrics_port", cfg.metrics_port)):
        if port and not port_is_free(cfg.host, port):
            raise UserError(f"--{flag} {port}: {cfg.host}:{port} is already in use (another Triton?); "
                            f"stop it or pick another port (0 = any free one)")
    install = ensure_venv(cfg)
    server = TritonServer(
        repo, install=install, grpc_port=cfg.grpc_port, http_port=cfg.http_port, metrics_port=cfg.metrics_port,
        host=cfg.host, model_control_mode=cfg.model_control_mode, poll_secs=cfg.poll_secs,
        log_path=cfg.log_file or None, log_verbose=cfg.log_verbose,
    )
    stop_event = stop_event or threading.Event()
    server.start()
    try:
        try:
            server.wait_ready(timeout_s=cfg.startup_timeout_s, cancel=stop_event)
        except TritonStartError as exc:
            if stop_event.is_set():
                return 0
            named = start_failure(server.log_text(), repo)
            if named:  # a model the repository holds is broken: the user's to fix, one line
                print(f"error: {named} (server log: {server.log_path})", file=sys.stderr)
                return 2
            print(f"error: {exc}", file=sys.stderr)
            return 1
        on_ready(f"ready: Triton {server.server_version() or '?'} serving {len(models)} model(s) from {repo} at grpc "
                 f"{server.grpc_url} (http {server.http_url}, metrics {server.metrics_url}); "
                 f"log {'stderr' if server.log_to_stderr else server.log_path}")
        sys.stdout.flush()
        while not stop_event.wait(0.5):
            if not server.is_running():
                print(f"error: tritonserver exited with code {server.process.returncode} "
                      f"(log {server.log_path}):\n{server.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with ServeConfig keys (flags override it)")
    add_config_args(parser, ServeConfig)
    args = parser.parse_args(argv)
    cfg = load_config(ServeConfig, args.config, args)

    stop = threading.Event()

    def request_stop(signum, _frame):
        print(f"stopping tritonserver ({signal.Signals(signum).name}) ...", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = serve(cfg, stop_event=stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code == 0:
        print("tritonserver stopped", file=sys.stderr)
    return code


if __name__ == "__main__":
    run_cli(main)
