"""Start a real server (uvicorn in a subprocess) on 127.0.0.1 and always stop it: for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# small shapes keep the server's one compilation per task short (tests pass these)
TEST_SIZES = {"n_slots": 32, "queue_cap": 64, "max_arrivals": 32, "horizon_steps": 12}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tasks: tuple[str, ...], overrides: dict | None = None, extra_env: dict | None = None, start_timeout_s: float = 120.0):
    """Yield the base URL of ``python -m server.app`` (the documented start command: ``make serve``
    and the Dockerfile run it) serving ``tasks``; kill it on exit."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        INFERENCEGYM_TASKS=",".join(tasks),
        INFERENCEGYM_TASK_OVERRIDES=json.dumps(overrides or {}),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log = tempfile.NamedTemporaryFile("w+", prefix="inferencegym-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {start_timeout_s} s: {Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
        os.unlink(log.name)
