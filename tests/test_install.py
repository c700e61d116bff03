"""The split install: `pip install inferencegym` is the simulator, the PPO trainer and the CLI; the
server and its web stack (FastAPI, uvicorn, openenv, gradio, ...) come with the `server` extra.

Each check runs in a fresh interpreter whose import system refuses the server's dependencies (a
meta path finder that raises ModuleNotFoundError for them, as if they were not installed), so it
holds whatever this test environment has installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the server's stack (pyproject's `server` extra and what openenv brings); none is a core dependency
SERVER_STACK = (
    "fastapi",
    "starlette",
    "uvicorn",
    "openenv",
    "openenv_core",
    "gradio",
    "gradio_client",
    "fastmcp",
    "mcp",
    "httpx",
    "websockets",
    "pydantic",
    "openai",
    "huggingface_hub",
)

BLOCKER = f"""
import sys
BLOCKED = {set(SERVER_STACK)!r}
attempts = []

class RefuseServerStack:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by tests/test_install.py)", name=name)
        return None

sys.meta_path.insert(0, RefuseServerStack())
"""


def run_blocked(body: str, timeout: float = 280) -> dict:
    """Run ``body`` after :data:`BLOCKER` in a fresh interpreter; it prints one JSON line last."""
    r = subprocess.run([sys.executable, "-c", BLOCKER + body], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_blocker_blocks():
    # the check below can fail: with the blocker in place, a server import does fail
    out = run_blocked(
        """
import json
try:
    import fastapi  # noqa: F401
    ok = True
except ModuleNotFoundError:
    ok = False
print(json.dumps({"imported": ok, "attempts": attempts}))
"""
    )
    assert out == {"imported": False, "attempts": ["fastapi"]}


@pytest.mark.slow
def test_core_imports_and_trains_without_the_server_stack(tmp_path):
    """gymjax, ppo and every CLI subcommand import, and `inferencegym train` runs one tiny PPO
    update and saves its policy, with every module of the server's stack refused."""
    out = run_blocked(
        f"""
import importlib, json
import gymjax, ppo
from inferencegym.cli import COMMANDS, main
for module, _, _ in COMMANDS.values():
    importlib.import_module(module)
rc = main(["train", "--task", "static", "--env", "n_slots=8", "--env", "queue_cap=16", "--env", "max_arrivals=8",
           "--env", "horizon_steps=4", "--total-steps", "8", "--num-envs", "2", "--num-steps", "4",
           "--set", "update_epochs=1", "--set", "num_minibatches=1", "--eval-seeds", "0", "--out", {str(tmp_path)!r}, "--quiet"])
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & BLOCKED)
print(json.dumps({{"rc": rc, "attempts": attempts, "loaded": loaded}}))
"""
    )
    assert out == {"rc": 0, "attempts": [], "loaded": []}
    assert (tmp_path / "policy.msgpack").is_file() and (tmp_path / "config.json").is_file()


def test_the_server_command_without_the_extra_says_how_to_install():
    out = run_blocked(
        """
import contextlib, io, json
import server
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = server.main([])
try:
    import server.app  # noqa: F401
    app_error = None
except ModuleNotFoundError as e:
    app_error = str(e)
print(json.dumps({"rc": rc, "stderr": err.getvalue(), "app_error": app_error}))
"""
    )
    assert out["rc"] == 2
    hint = "pip install 'inferencegym[server]'"
    assert out["stderr"].startswith("server: the InferenceGym server needs the `server` extra") and hint in out["stderr"]
    assert "fastapi" in out["stderr"] and "openenv" in out["stderr"]
    assert out["app_error"] is not None and hint in out["app_error"]


def test_the_server_entry_point_is_the_checking_one():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["server"] == "server:main" and project["scripts"]["inferencegym"] == "inferencegym.cli:main"
    # the core has none of the server's stack; `make test`'s dev extra brings the server extra
    core = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower() for d in project["dependencies"]}
    assert not core & {"openenv", "openenv-core", "fastapi", "uvicorn", "pydantic", "httpx", "websockets", "gradio"}
    dev_self = [d for d in project["optional-dependencies"]["dev"] if d.startswith("inferencegym[")]
    assert dev_self and "server" in dev_self[0].split("[")[1].rstrip("]").split(",")
