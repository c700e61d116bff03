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
    def nan(x):  # a NaN in every float leaf but the action's (a concrete ServeAction refuses NaN when built)
        return x if isinstance(x, gymjax.ServeAction) or not np.issubdtype(x.dtype, np.floating) else x * np.nan

    with pytest.raises(AssertionError, match="not finite"):
        check_finite_state(t._replace(states=jax.tree.map(nan, t.states, is_leaf=lambda x: isinstance(x, gymjax.ServeAction))))
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


class WeakScalarStep:
    """``env`` whose step returns its first float scalar state leaf weakly typed (as ``jnp.asarray(0.5)`` is)."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, key, state, action, params=None):
        obs, st, *rest = self.env.step(key, state, action, params)
        leaves, tree = jax.tree.flatten(st)
        i = next(i for i, x in enumerate(leaves) if x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.floating))
        leaves[i] = jnp.asarray(0.5)
        return (obs, jax.tree.unflatten(tree, leaves), *rest)


def test_a_step_that_changes_a_state_aval_is_caught(tiny_static):
    """A step that returns a state leaf with another aval (here: weakly typed) makes a jitted step fed its own
    state compile again; the contract's rollout sees it while tracing (no compilation needed)."""
    env, params = tiny_static
    broken = WeakScalarStep(env)
    n = int(params.horizon_steps) + 2
    actions = contract_actions(broken, params, jax.random.PRNGKey(0), n)
    roll = make_contract_rollout(broken, n)
    roll.run.trace(jax.random.PRNGKey(1), actions, broken.decode_action(actions), params)
    assert len(roll.traces) == 1
    assert len(roll.carry_mismatches) == 1, roll.carry_mismatches
    path, given, returned = roll.carry_mismatches[0]
    assert given[:2] == returned[:2] and (given[2], returned[2]) == (False, True), roll.carry_mismatches
