import os
import shutil
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache per test session, inherited by the subprocesses the tests
# start (servers, inference.py, the CLI): a task compiled by one of them is loaded, not recompiled,
# by the next. Executables are identical, so results are too. Removed when the session ends.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="inferencegym-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Shared small envs (sizes in tests/contract.py). One env object per (task, overrides) per session,
# and one jitted step per env object, so tests that use the same sizes trace and compile once.
# gymjax is imported inside the fixtures: files that need no JAX do not pay for it.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_env():
    """``gymjax.make``, cached for the session: the same (task, overrides) returns the same (env, params)."""
    import gymjax

    cache = {}

    def make(task: str, **overrides):
        key = (task, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = gymjax.make(task, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def jit_step():
    """``jax.jit(env.step)``, one per env object for the session (params are arguments, not constants)."""
    import jax

    cache = {}

    def jitted(env):
        if id(env) not in cache:
            cache[id(env)] = (env, jax.jit(env.step))  # holding env keeps its id from being reused
        return cache[id(env)][1]

    return jitted


@pytest.fixture(scope="session")
def small_static(make_env):
    """``static`` at :data:`tests.contract.SMALL` (the server tests' sizes)."""
    from tests.contract import SMALL

    return make_env("static", **SMALL)


@pytest.fixture(scope="session")
def tiny_static(make_env):
    """``static`` at :data:`tests.contract.TINY` (the PPO tests' sizes)."""
    from tests.contract import TINY

    return make_env("static", **TINY)
