"""Every registered task keeps the environment contract (tests/contract.py) at small sizes, and the
contract's checks do fail on trajectories and envs that break it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from tests.contract import (
    TINY,
    assert_env_contract,
    check_api,
    check_bounds,
    check_conservation,
    check_finite_state,
    check_typed_equals_flat,
    contract_actions,
    make_contract_rollout,
)


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


@pytest.fixture(scope="module")
def tiny_env(make_env, trace_csv):
    """``task -> (env, params)`` at :data:`TINY` sizes (the ``trace`` task replays :func:`trace_csv`)."""

    def make(task):
        extra = {"path": str(trace_csv)} if task == "trace" else {}
        return make_env(task, **TINY, **extra)

    return make


@pytest.fixture(scope="module")
def contract(tiny_env):
    """``task -> Trajectory``: the contract checked once per task for this module."""
    done = {}

    def run(task):
        if task not in done:
            done[task] = assert_env_contract(*tiny_env(task))
        return done[task]

    return run


@pytest.mark.parametrize("task", gymjax.registered_envs())
def test_env_contract(task, tiny_env, contract):
    env, params = tiny_env(task)
    assert env.cfg.n_slots == TINY["n_slots"] and env.cfg.max_arrivals == TINY["max_arrivals"]
    assert int(params.horizon_steps) == TINY["horizon_steps"]
    contract(task)


def test_the_checks_fail_on_broken_trajectories(tiny_env, contract):
    env, params = tiny_env("static")
    t = contract("static")
    counters = t.info["counters"]
    with pytest.raises(AssertionError):  # one request lost
        check_conservation(t._replace(info={**t.info, "counters": {**counters, "dropped": counters["dropped"] - 1}}))
    with pytest.raises(AssertionError, match="not finite"):
        check_finite_state(t._replace(states=t.states.replace(t_now=t.states.t_now * np.nan)))
    with pytest.raises(AssertionError):  # an observation outside the box
        check_bounds(env, params, t._replace(obs=t.obs + 1.0))
    with pytest.raises(AssertionError, match="slo_attainment"):
        m = t.info["metrics"]
        check_bounds(env, params, t._replace(info={**t.info, "metrics": m.replace(slo_attainment=-m.slo_attainment - 1)}))
    with pytest.raises(AssertionError, match="typed"):
        obs, st, r, *rest = t.typed
        check_typed_equals_flat(t._replace(typed=(obs, st, np.nextafter(r, np.float32(np.inf)), *rest)))
    n = t.obs.shape[0]
    actions = contract_actions(env, params, jax.random.PRNGKey(0), n)
    check_api(env, params, t, actions, n)
    with pytest.raises(AssertionError):  # truncation one step late
        check_api(env, params.replace(horizon_steps=params.horizon_steps + 1), t, actions, n)


def test_a_step_that_changes_a_state_aval_is_caught(tiny_static):
    """A step that returns a state leaf weakly typed (here the clock) would make a jitted step fed its
    own state compile again; the contract's rollout sees it while tracing (no compilation needed)."""
    env, params = tiny_static

    class WeakClock(gymjax.ServingEnv):
        def step(self, key, state, action, params=None):
            obs, st, *rest = super().step(key, state, action, params)
            return (obs, st.replace(t_now=jnp.asarray(0.5)), *rest)  # jnp.asarray of a Python float is weakly typed

    broken = WeakClock(env.cfg, params, env.name)
    n = int(params.horizon_steps) + 2
    actions = contract_actions(broken, params, jax.random.PRNGKey(0), n)
    roll = make_contract_rollout(broken, n)
    roll.run.trace(jax.random.PRNGKey(1), actions, broken.decode_action(actions), params)
    assert len(roll.traces) == 1
    assert {m[0] for m in roll.carry_mismatches} == {".t_now"}, roll.carry_mismatches
