"""The Docker image without a container runtime (none on the project's machines): what it installs
is uv.lock, uv.lock agrees with pyproject and with the environment the tests run in, and its
build-time compile step fills JAX's persistent cache."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKER = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def _lock_closure(extras: tuple[str, ...]) -> dict[str, str]:
    """name -> version of every package uv.lock installs for the project with ``extras`` on this
    platform (markers evaluated here)."""
    by: dict[str, list[dict]] = {}
    for p in LOCK["package"]:
        by.setdefault(p["name"], []).append(p)

    def pick(dep: dict) -> dict:
        cands = [c for c in by[dep["name"]] if "version" not in dep or c["version"] == dep["version"]]
        assert len(cands) == 1, dep
        return cands[0]

    def wanted(dep: dict) -> bool:
        return "marker" not in dep or Marker(dep["marker"]).evaluate()

    root = by[PYPROJECT["project"]["name"]][0]
    todo = [d for d in root.get("dependencies", []) if wanted(d)]
    for e in extras:
        todo += [d for d in root["optional-dependencies"][e] if wanted(d)]
    out: dict[str, str] = {}
    while todo:
        dep = todo.pop()
        p = pick(dep)
        for e in dep.get("extra", []):
            todo += [d for d in p.get("optional-dependencies", {}).get(e, []) if wanted(d)]
        if p["name"] in out:
            continue
        out[p["name"]] = p["version"]
        todo += [d for d in p.get("dependencies", []) if wanted(d)]
    return out


def test_the_image_is_pinned_and_installs_the_lock_without_resolving():
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?$", DOCKER, re.M), "base image tag not pinned"
    assert re.search(r'pip install "uv==\d+\.\d+\.\d+"', DOCKER)
    assert "uv export --frozen" in DOCKER and "pip install --no-deps -r" in DOCKER and "pip install --no-deps -e ." in DOCKER
    assert "COPY --chown=user pyproject.toml uv.lock" in DOCKER
    # the warm compile cache: the build compiles every task into JAX_COMPILATION_CACHE_DIR, as the user that serves
    assert "JAX_COMPILATION_CACHE_DIR=" in DOCKER
    assert DOCKER.index("USER user") < DOCKER.index("RUN python -m server.app --compile-only") < DOCKER.index("CMD [")


def test_the_lock_satisfies_every_requirement_of_pyproject():
    project = PYPROJECT["project"]
    extras, reqs, todo = set(), [Requirement(r) for r in project["dependencies"]], ["server", "dev"]
    while todo:  # an extra may name the project's own extras (dev = inferencegym[gym,...] + ...)
        extra = todo.pop()
        extras.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if r.name == project["name"]:
                todo += [e for e in r.extras if e not in extras]
            else:
                reqs.append(r)
    locked = _lock_closure(tuple(sorted(extras)))
    for r in reqs:
        name = re.sub(r"[-_.]+", "-", r.name).lower()
        assert name in locked, f"{r} is not in uv.lock: run `uv lock`"
        assert r.specifier.contains(locked[name], prereleases=True), f"uv.lock has {name} {locked[name]}, pyproject wants {r}"


def test_the_image_gets_the_versions_the_tests_run_with():
    """What the image installs (uv.lock, the server extra) is what this test environment has, for
    every package whose version pyproject pins exactly (the JAX stack: results are bit-identical within
    one JAX version) and for the server's own stack."""
    locked = _lock_closure(("server",))
    pinned = [Requirement(r).name for r in PYPROJECT["project"]["dependencies"] if "==" in r]
    for name in pinned + ["openenv", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "websockets", "numpy"]:
        assert md.version(name) == locked[re.sub(r"[-_.]+", "-", name).lower()], name


def test_the_core_install_brings_no_web_stack_and_the_server_extra_brings_openenv():
    """`pip install inferencegym` (no extra) resolves, in uv.lock, to the simulator's stack only;
    the server's (openenv at its pinned release, FastAPI, gradio that openenv requires) comes with
    `[server]`. tests/test_install.py checks the same at import time."""
    core = _lock_closure(())
    server = _lock_closure(("server",))
    web = {"fastapi", "starlette", "uvicorn", "openenv", "openenv-core", "gradio", "fastmcp", "mcp", "pydantic", "httpx", "websockets"}
    assert not web & core.keys(), sorted(web & core.keys())
    assert {"jax", "jaxlib", "flax", "optax", "chex", "numpy", "matplotlib", "rich", "msgpack"} <= core.keys()
    assert server["openenv"] == "0.10.0" and "openenv-core" not in server
    assert {"fastapi", "uvicorn", "gradio", "fastmcp"} <= server.keys()


@pytest.mark.slow
def test_the_build_time_compile_step_fills_the_persistent_cache(tmp_path):
    """`python -m server.app --compile-only` (the Dockerfile's warm-cache step) compiles the served
    tasks into JAX_COMPILATION_CACHE_DIR (here one task at the test sizes)."""
    import json

    from server.launch import TEST_SIZES

    cache = tmp_path / "jax-cache"
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        INFERENCEGYM_TASKS="static",
        INFERENCEGYM_TASK_OVERRIDES=json.dumps(TEST_SIZES),
        INFERENCEGYM_PREWARM="0",
    )
    r = subprocess.run(
        [sys.executable, "-m", "server.app", "--compile-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280
    )
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "compiled static" in r.stdout
    assert cache.is_dir() and any(cache.rglob("*")), "no executable was written to the persistent cache"
