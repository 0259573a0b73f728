"""Shared pytest fixtures.

Real photos: `real_photos(folder)` lists the photos of a folder of ../shared/data (beside the
project), or skips the test with the reason when a clone has no such folder.

Triton: `triton_install` finds the tritonserver bundled in `.venv-triton` (skips with the
fix when it is missing; `make test` creates it first), `start_triton(repo, **kwargs)`
starts a real server on free loopback ports and waits until every model is ready; all
servers stop at the end of the session. A failing test that used them gets the server
log tails attached to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_photos(folder: str | Path, pattern: str = "*.jpg") -> list[Path]:
    """The photos of `folder` (a path under ../shared/data, or relative to it), sorted; skips the
    calling test when there are none (a clone without ../shared/data)."""
    folder = Path(folder) if Path(folder).is_absolute() else SHARED_DATA / folder
    photos = sorted(folder.glob(pattern))
    if not photos:
        pytest.skip(f"needs real photos in {folder} (../shared/data beside the project)")
    return photos


_TRITON_SERVERS: list = []  # every server started in this session, for failure reports
_TRITON_FIXTURES = {"triton_install", "start_triton"}


@pytest.fixture(scope="session")
def triton_install():
    from shared.serving.server import TritonNotInstalled, find_triton

    try:
        return find_triton()
    except TritonNotInstalled as exc:
        pytest.skip(f"Triton tests need .venv-triton: {exc}")


@pytest.fixture(scope="session")
def start_triton(triton_install, tmp_path_factory) -> Iterator[Callable[..., object]]:
    """Factory: `start_triton(repo, model_control_mode="none", ...)` -> a ready `TritonServer`."""
    from shared.serving.server import TritonServer, TritonStartError

    started = []
    log_dir = tmp_path_factory.mktemp("triton_logs")

    def start(repo: str | Path, **kwargs) -> TritonServer:
        kwargs.setdefault("exit_timeout_s", 5)
        for attempt in range(3):
            server = TritonServer(repo, install=triton_install,
                                  **{"log_path": log_dir / f"tritonserver-{len(started)}.log", **kwargs})
            started.append(server)
            _TRITON_SERVERS.append(server)
            server.start()
            try:
                server.wait_ready(timeout_s=90)
                return server
            except TritonStartError as exc:
                server.stop()
                # Free ports are picked before the server binds them; parallel test runs can steal one.
                if "already in use" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    yield start
    for server in started:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _TRITON_SERVERS and _TRITON_FIXTURES & set(getattr(item, "fixturenames", ())):
        for server in _TRITON_SERVERS:
            report.sections.append((f"tritonserver log ({server.log_path})", server.log_tail(120)))
