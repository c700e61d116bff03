"""Every registered task keeps the environment contract (tests/contract.py) at small sizes."""

import numpy as np
import pytest

import gymjax
from tests.contract import TINY, assert_env_contract


@pytest.fixture(scope="module")
def trace_csv(tmp_path_factory):
    """A two-tenant trace in the generic CSV format of docs/traces.md: 240 requests over 40 s, with a
    burst that overflows ``max_arrivals`` (16) in one interval."""
    rng = np.random.default_rng(0)
    arrival = np.sort(np.concatenate([rng.uniform(0.0, 40.0, 200), rng.uniform(12.0, 12.9, 40)]))
    tenant = rng.choice(["chat", "code"], arrival.size)
    rows = [f"{t:.4f},{rng.integers(10, 3000)},{rng.integers(1, 400)},{n}" for t, n in zip(arrival, tenant, strict=True)]
    path = tmp_path_factory.mktemp("trace") / "contract.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,tenant\n" + "\n".join(rows) + "\n")
    return path


def tiny_env(task, make_env, trace_csv):
    """The task at :data:`TINY` sizes (the ``trace`` task replays :func:`trace_csv`)."""
    extra = {"path": str(trace_csv)} if task == "trace" else {}
    return make_env(task, **TINY, **extra)


@pytest.mark.parametrize("task", gymjax.registered_envs())
def test_env_contract(task, make_env, trace_csv):
    env, params = tiny_env(task, make_env, trace_csv)
    assert env.cfg.n_slots == TINY["n_slots"] and env.cfg.max_arrivals == TINY["max_arrivals"]
    assert int(params.horizon_steps) == TINY["horizon_steps"]
    assert_env_contract(env, params)
