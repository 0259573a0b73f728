"""Run the tritonserver bundled in the nvidia-pytriton wheel, from `.venv-triton`.

The wheel ships a real `tritonserver` (2.51) with the python backend only (no ONNX
Runtime/TensorRT backends; ensembles work). It runs on a CPU-only host if launched like this:

- its own virtual environment (`make triton-venv`, tools/setup_triton_venv.sh) with numpy<2:
  the python-backend stub hands out empty tensors under numpy 2;
- `--backend-directory` = a folder holding `python/` (libtriton_python.so + utils) and the
  stub built for the venv's Python version, copied from `pytriton/tritonserver/python_backend_stubs/3.X/`
  (assembled once under a cache folder, see `prepare_backend_dir`);
- `LD_LIBRARY_PATH` = the wheel's `nvidia_pytriton.libs` + the venv Python's LIBDIR (the stub
  links libpython3.X.so);
- the venv's `bin` first on PATH: the stub takes its interpreter (and so numpy, onnxruntime,
  ...) from there;
- gRPC, HTTP and metrics bound to 127.0.0.1.

    install = find_triton()                         # raises TritonNotInstalled naming `make triton-venv`
    with TritonServer(repo, install=install) as server:   # free ports by default
        server.grpc_url                              # "127.0.0.1:PORT" for tritonclient.grpc
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError
from shared.paths import cache_root

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = PROJECT_ROOT / ".venv-triton"
DEFAULT_CACHE = cache_root() / "triton"
SETUP_HINT = "run `make triton-venv` (tools/setup_triton_venv.sh) to create it"


class TritonNotInstalled(UserError):
    """The Triton venv or the bundled tritonserver is missing."""


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the bundled Triton live inside one venv."""

    venv: Path
    python: Path  # venv/bin/python: the interpreter the stub runs model.py with
    python_version: str  # "3.11"
    python_libdir: Path  # the base interpreter's LIBDIR (libpython3.X.so)
    pytriton_dir: Path  # site-packages/pytriton
    tritonserver: Path  # pytriton/tritonserver/bin/tritonserver
    libs_dir: Path  # site-packages/nvidia_pytriton.libs
    python_backend_dir: Path  # pytriton/tritonserver/backends/python
    stub: Path  # pytriton/tritonserver/python_backend_stubs/3.X/triton_python_backend_stub


def find_triton(venv: str | Path | None = None) -> TritonInstall:
    """Locate the bundled tritonserver in `venv` (default: $TRITON_VENV, else .venv-triton);
    TritonNotInstalled (naming the fix) if absent."""
    # absolute(), not resolve(): venv/bin/python is a symlink to the base interpreter
    venv = Path(venv or os.environ.get("TRITON_VENV") or DEFAULT_VENV).absolute()
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonNotInstalled(f"Triton venv not found at {venv}; {SETUP_HINT}")
    candidates = sorted(venv.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    if not candidates:
        raise TritonNotInstalled(f"{venv} has no bundled tritonserver (nvidia-pytriton not installed); {SETUP_HINT}")
    tritonserver = candidates[-1]
    pytriton_dir = tritonserver.parents[2]
    site_packages = pytriton_dir.parent
    python_version = site_packages.parent.name.removeprefix("python")  # lib/python3.11 -> 3.11
    stub = pytriton_dir / "tritonserver" / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    libs_dir = site_packages / "nvidia_pytriton.libs"
    backend_dir = pytriton_dir / "tritonserver" / "backends" / "python"
    for path, what in ((stub, f"python backend stub for Python {python_version}"), (libs_dir, "bundled libraries"),
                       (backend_dir / "libtriton_python.so", "python backend")):
        if not path.exists():
            raise TritonNotInstalled(f"{path} missing ({what}): nvidia-pytriton is incomplete; {SETUP_HINT}")
    return TritonInstall(
        venv=venv, python=python, python_version=python_version, python_libdir=_python_libdir(python),
        pytriton_dir=pytriton_dir, tritonserver=tritonserver, libs_dir=libs_dir,
        python_backend_dir=backend_dir, stub=stub,
    )


def _python_libdir(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        raise TritonNotInstalled(f"{python} does not run ({out.stderr.strip()[-300:]}); {SETUP_HINT}")
    return Path(out.stdout.strip())


def prepare_backend_dir(install: TritonInstall, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """`--backend-directory` for tritonserver: `python/` from the wheel plus the stub for
    the venv's Python. Built once per install under `cache_dir` (atomically, so parallel
    test sessions can race safely) and reused."""
    stamp = f"{install.python_version}-{install.stub.stat().st_size}-{int(install.stub.stat().st_mtime)}"
    target = Path(cache_dir) / f"backends-{stamp}"
    if (target / "python" / "triton_python_backend_stub").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(install.python_backend_dir, tmp / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(install.stub, tmp / "python" / "triton_python_backend_stub")
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def server_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver (and so for the python stubs it spawns)."""
    env = dict(os.environ if base is None else base)
    libs = [str(install.libs_dir), str(install.python_libdir)]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["PATH"] = f"{install.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(install.venv)
    # Another project's interpreter settings must not leak into the stub's Python.
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(key, None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct free ports (all sockets stay open until every port is chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


class TritonServer:
    """One tritonserver process for one model repository, bound to 127.0.0.1.

    Ports left at 0 are picked free. `model_control_mode`: "none" loads every model at
    start; "explicit" also loads them all (`--load-model=*`) but lets clients load/unload
    (e.g. reload a model after a redeploy added a version); "poll" rescans the repository
    every `poll_secs`. The log goes to `log_path` (default: under the cache folder).
    """

    def __init__(
        self,
        model_repository: str | Path,
        install: TritonInstall | None = None,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
        model_control_mode: str = "none",
        poll_secs: int = 5,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        exit_timeout_s: int = 10,
        cache_dir: str | Path = DEFAULT_CACHE,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise UserError(f"model repository not found: {self.model_repository} "
                            f"(write it with `python -m components.deploy --triton_repo DIR`)")
        if model_control_mode not in ("none", "explicit", "poll"):
            raise ValueError(f"model_control_mode must be none/explicit/poll, got {model_control_mode!r}")
        self.install = install or find_triton()
        self.host = host
        picked = iter(free_ports(3, host))
        self.grpc_port = grpc_port or next(picked)
        self.http_port = http_port or next(picked)
        self.metrics_port = metrics_port or next(picked)
        self.model_control_mode = model_control_mode
        self.poll_secs = poll_secs
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self.cache_dir = Path(cache_dir)
        # "-": the server logs straight to this process's stderr (no file, so no log tail in errors).
        self.log_to_stderr = str(log_path) == "-"
        self.log_path = (Path(log_path) if log_path and not self.log_to_stderr
                         else self.cache_dir / "logs" / f"tritonserver-{self.grpc_port}.log")
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None
        self._log_file = None

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    # -- lifecycle ---------------------------------------------------------------------------------
    def command(self, backend_dir: Path) -> list[str]:
        cmd = [
            str(self.install.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control_mode}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.model_control_mode == "explicit":
            cmd.append("--load-model=*")
        if self.model_control_mode == "poll":
            cmd.append(f"--repository-poll-secs={self.poll_secs}")
        return cmd + list(self.extra_args)

    def start(self) -> TritonServer:
        if self.process is not None:
            raise RuntimeError("server already started")
        backend_dir = prepare_backend_dir(self.install, self.cache_dir)
        if self.log_to_stderr:
            self._log_file = None
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # Own session: a Ctrl-C in the terminal reaches the caller only, which then stops the
        # server in order (tritonserver unloads models, the stubs exit) instead of racing it.
        self.process = subprocess.Popen(
            self.command(backend_dir), env=server_env(self.install), stdin=subprocess.DEVNULL,
            stdout=self._log_file or sys.stderr, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def wait_ready(self, timeout_s: float = 120.0, cancel: threading.Event | None = None) -> None:
        """Block until the server reports ready (all models loaded); TritonStartError if it
        exits, the timeout passes or `cancel` is set, with the log tail in the message."""
        if self.process is None:
            raise RuntimeError("call start() first")
        deadline = time.monotonic() + timeout_s
        probe = _ReadinessProbe(self.grpc_url, self.http_url)
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise TritonStartError(f"tritonserver exited with code {code} before it was ready "
                                           f"(log {self.log_path}):\n{self._failure_report()}")
                if probe.ready():
                    return
                if cancel is not None and cancel.is_set():
                    raise TritonStartError("cancelled while waiting for tritonserver to become ready")
                if time.monotonic() > deadline:
                    raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s "
                                           f"(log {self.log_path}):\n{self._failure_report()}")
                time.sleep(0.1)
        finally:
            probe.close()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (graceful: models unload, stubs exit), then SIGKILL the whole session if it
        hangs. Returns the exit code (None if never started)."""
        if self.process is None:
            return None
        timeout_s = self.exit_timeout_s + 5 if timeout_s is None else timeout_s
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                # The process group is the session we created in start(): only our server and its
                # stubs. Safe only while the leader is alive (not yet reaped), so never after wait().
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode

    def server_version(self) -> str | None:
        """The running server's version ("2.51.0") from its HTTP metadata endpoint."""
        import json
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.http_url}/v2", timeout=5.0) as resp:
                return json.loads(resp.read()).get("version")
        except (OSError, ValueError):
            return None

    def log_text(self) -> str:
        if self.log_to_stderr:
            return "(logged to stderr)"
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_errors(self) -> list[str]:
        """The error lines of the log (`E1121 ...` and `error: ...`), minus the CUDA noise of a
        CPU-only host; a model that failed to load is named here, far above the log's tail."""
        noise = ("CudaDriverHelper", "unable to create stream", "CUDA driver version")
        return [line for line in self.log_text().splitlines()
                if (re.match(r"^E\d{4} ", line) or line.startswith("error:")) and not any(n in line for n in noise)]

    def _failure_report(self) -> str:
        errors = self.log_errors()
        head = "errors:\n" + "\n".join(errors[-20:]) + "\n" if errors else ""
        return f"{head}log tail:\n{self.log_tail(40)}"

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux), so a
    killed test run or CLI never leaves an orphaned server holding its ports. Note: Linux ties
    this to the starting *thread*; start servers from a thread that lives as long as they do."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _ReadinessProbe:
    """`is_server_ready()` over gRPC with tritonclient; plain HTTP where tritonclient is absent."""

    def __init__(self, grpc_url: str, http_url: str) -> None:
        self.grpc_url = grpc_url
        self.http_url = http_url
        self.client = None
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            grpcclient = None
        if grpcclient is not None:
            # The proxy variables of a sandboxed test run must not route loopback gRPC.
            self.client = grpcclient.InferenceServerClient(grpc_url, channel_args=[("grpc.enable_http_proxy", 0)])

    def ready(self) -> bool:
        if self.client is not None:
            try:
                return bool(self.client.is_server_ready(client_timeout=2.0))
            except Exception:  # noqa: BLE001 - not listening yet / still loading
                return False
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.http_url}/v2/health/ready", timeout=2.0) as resp:
                return resp.status == 200
        except OSError:
            return False

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
