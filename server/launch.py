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


def screenshot(out: Path, task: str, policy: str, seed: int, test_sizes: bool = False, width: int = 1120) -> Path:
    """Serve ``task``, open the landing page in headless Chromium (Playwright with the system browser),
    play one whole episode of ``policy`` and save a full-page screenshot to ``out`` (the figure in
    docs/server.md)."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no Chromium on this machine (Debian: apt-get install chromium)")
    with running_server((task,), TEST_SIZES if test_sizes else {}, start_timeout_s=600) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(f"{url}/?task={task}&policy={policy}&seed={seed}&speed=0&autoplay=1")
            page.wait_for_function("window.liveDone === true", timeout=900_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            print(f"{page.inner_text('#live-status')}; wrote {out}")
        finally:
            browser.close()
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="python -m server.launch screenshot OUT.png: the landing page after one live episode")
    ap.add_argument("command", choices=["screenshot"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--task", default="bursty")
    ap.add_argument("--policy", default="heuristic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-sizes", action="store_true", help="serve the tests' small sizes (12-step episodes)")
    a = ap.parse_args()
    screenshot(a.out, a.task, a.policy, a.seed, a.test_sizes)
