"""The environment contract every registered task keeps, as one reusable check, and the suite's shared sizes.

``assert_env_contract(env, params)`` compiles one rollout program per env (reset, then ``n_steps``
steps that cross the horizon once, each step taken with a flat action and, alongside, with the same
action as a typed :class:`gymjax.ServeAction`) and checks what it returns:

- API: shapes and dtypes of ``reset``/``step`` outputs; the observation inside ``observation_space``;
  samples of ``action_space`` accepted; ``info`` carries ``metrics`` (:class:`gymjax.Observation`),
  ``counters``, ``episode`` (:class:`gymjax.EpisodeStats`) and ``final_obs``; auto-reset at the horizon.
- bounds: observation in [0, 1], KV occupancy <= 1, SLO attainment in [0, 1], metrics non-negative,
  KV blocks used <= the pool.
- finiteness of every state leaf at every step.
- conservation: arrived == finished + running + waiting + dropped, every step.
- determinism: the same key gives a bit-identical trajectory; another key gives another one.
- no retrace: the compiled program, called again with new keys and actions of the same shapes, is
  not traced again, and ``step`` returns a state of exactly the avals it was given (else a jitted
  step fed its own output state would compile a second time).
- the typed action and the flat action it decodes to give bit-identical steps.

Only the public API is used: ``gymjax.make``, ``env.reset``/``step``/``decode_action``/
``action_space``/``observation_space``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gymjax

# Sizes several test files share: envs built with the same sizes compile to the same programs.
# ``horizon_steps`` is a parameter, not a shape; the other three fix array shapes.
SMALL = dict(n_slots=32, queue_cap=64, max_arrivals=32, horizon_steps=12)  # = server.launch.TEST_SIZES
TINY = dict(n_slots=16, queue_cap=32, max_arrivals=16, horizon_steps=8)

INFO_KEYS = ("metrics", "counters", "episode", "final_obs")
COUNTER_KEYS = ("arrived", "finished", "running", "waiting", "dropped")
KV_OCCUPANCY_SLACK = 1e-6  # float rounding of blocks / pool
EXTRA_STEPS = 2  # steps past the horizon: the auto-reset and one step of the next episode


class Trajectory(NamedTuple):
    """Everything one contract rollout returns (step outputs stacked over a leading step axis)."""

    reset_obs: jax.Array
    reset_state: gymjax.EnvState
    obs: jax.Array
    states: gymjax.EnvState
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    info: dict
    typed: tuple  # (obs, state, reward, terminated, truncated, info) of the typed-action step


class ContractRollout(NamedTuple):
    run: object  # jitted (key, flat_actions [n, K], typed_actions ServeAction [n], params) -> Trajectory
    traces: list  # one entry per trace of ``run``
    carry_mismatches: list  # (leaf path, aval given, aval returned) where step changed a state leaf's aval


def _aval(x) -> tuple:
    a = jax.typeof(x)
    return (a.shape, str(a.dtype), a.weak_type)


def make_contract_rollout(env, n_steps: int) -> ContractRollout:
    """The one compiled program behind :func:`assert_env_contract` (trace-time records included)."""
    traces, mismatches = [], []

    def body(params, state, step_in):
        key, flat, typed = step_in
        out = env.step(key, state, flat, params)
        typed_out = env.step(key, state, typed, params)
        new_state = out[1]
        if jax.tree.structure(new_state) != jax.tree.structure(state):
            mismatches.append(("<tree structure>", str(jax.tree.structure(state)), str(jax.tree.structure(new_state))))
        else:
            for (path, given), returned in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new_state), strict=True):
                if _aval(given) != _aval(returned):
                    mismatches.append((jax.tree_util.keystr(path), _aval(given), _aval(returned)))
        obs, _, reward, terminated, truncated, info = out
        return new_state, (obs, new_state, reward, terminated, truncated, info, typed_out)

    def rollout(key, flat_actions, typed_actions, params):
        traces.append(1)  # runs once per trace, never on a cached call
        k_reset, k_steps = jax.random.split(key)
        reset_obs, reset_state = env.reset(k_reset, params)
        step_keys = jax.random.split(k_steps, n_steps)
        _, (obs, states, reward, term, trunc, info, typed) = jax.lax.scan(
            lambda s, x: body(params, s, x), reset_state, (step_keys, flat_actions, typed_actions)
        )
        return Trajectory(reset_obs, reset_state, obs, states, reward, term, trunc, info, typed)

    return ContractRollout(jax.jit(rollout), traces, mismatches)


def contract_actions(env, params, key: jax.Array, n_steps: int) -> jax.Array:
    """Flat actions [n_steps, n_knobs]: every knob at its lowest level, then at its highest, then
    samples of ``env.action_space(params)``."""
    space = env.action_space(params)
    nvec = np.asarray(space.nvec)
    samples = [space.sample(k) for k in jax.random.split(key, max(n_steps - 2, 0))]
    rows = [jnp.zeros_like(samples[0]) if samples else jnp.zeros(len(nvec), jnp.int32), jnp.asarray(nvec - 1, jnp.int32), *samples]
    return jnp.stack(rows[:n_steps])


def _float_leaves(tree):
    return [(jax.tree_util.keystr(p), np.asarray(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)
            if np.issubdtype(np.asarray(x).dtype, np.floating)]


def _trees_equal(a, b) -> list[str]:
    """Paths of the leaves of two trees that are not bit-identical (a different structure: ["<structure>"])."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return ["<structure>"]
    return [jax.tree_util.keystr(p) for (p, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True)
            if not np.array_equal(np.asarray(x), np.asarray(y))]


def _observable(t: Trajectory):
    return (t.reset_obs, t.obs, t.reward, t.truncated, t.info)


def check_api(env, params, t: Trajectory, actions, n_steps: int) -> None:
    obs_space = env.observation_space(params)
    space = env.action_space(params)
    assert isinstance(t.reset_state, gymjax.EnvState), type(t.reset_state)
    assert t.reset_obs.shape == obs_space.shape and t.reset_obs.dtype == jnp.float32, (t.reset_obs.shape, t.reset_obs.dtype)
    assert t.obs.shape == (n_steps, *obs_space.shape) and t.obs.dtype == jnp.float32, (t.obs.shape, t.obs.dtype)
    scalars = (("reward", t.reward, jnp.float32), ("terminated", t.terminated, jnp.bool_), ("truncated", t.truncated, jnp.bool_))
    for name, x, dtype in scalars:
        assert x.shape == (n_steps,) and x.dtype == dtype, (name, x.shape, x.dtype)
    assert all(bool(space.contains(a)) for a in actions), "a sample of action_space is outside it"
    assert len({tuple(np.asarray(a).tolist()) for a in actions[2:]}) > 1, "action_space samples do not vary with the key"
    info = t.info
    assert set(INFO_KEYS) <= set(info), sorted(info)
    assert isinstance(info["metrics"], gymjax.Observation), type(info["metrics"])
    assert isinstance(info["episode"], gymjax.EpisodeStats), type(info["episode"])
    assert tuple(sorted(info["counters"])) == tuple(sorted(COUNTER_KEYS)), sorted(info["counters"])
    assert info["final_obs"].shape == t.obs.shape, info["final_obs"].shape
    # auto-reset: truncated exactly at the horizon, never terminated; the returned observation is the
    # pre-reset one except at truncation; the episode record counts steps and restarts after the reset
    horizon = int(params.horizon_steps)
    assert not np.asarray(t.terminated).any()
    assert np.flatnonzero(np.asarray(t.truncated)).tolist() == [horizon - 1], np.asarray(t.truncated)
    keep = ~np.asarray(t.truncated)
    np.testing.assert_array_equal(np.asarray(t.obs)[keep], np.asarray(info["final_obs"])[keep])
    want_steps = [*range(1, horizon + 1), *range(1, n_steps - horizon + 1)]
    assert np.asarray(info["episode"].steps).tolist() == want_steps, np.asarray(info["episode"].steps)
    assert np.asarray(t.states.step).tolist() == [*range(1, horizon), *range(0, n_steps - horizon + 1)], np.asarray(t.states.step)


def check_bounds(env, params, t: Trajectory) -> None:
    box = env.observation_space(params)
    for name, o in (("reset obs", t.reset_obs), ("obs", t.obs), ("final_obs", t.info["final_obs"])):
        o = np.asarray(o)
        assert np.all(np.isfinite(o)), name
        assert o.min() >= 0.0 and o.max() <= 1.0, (name, o.min(), o.max())
        assert np.all((o >= box.low) & (o <= box.high)), name
    m = t.info["metrics"]
    for name, leaf in vars(m).items():
        leaf = np.asarray(leaf)
        assert np.all(np.isfinite(leaf)), name
        assert np.all(leaf >= 0), (name, leaf.min())
    assert np.all(np.asarray(m.kv_occupancy) <= 1.0 + KV_OCCUPANCY_SLACK), np.asarray(m.kv_occupancy).max()
    assert np.all(np.asarray(m.slo_attainment) <= 1.0), np.asarray(m.slo_attainment).max()
    used, pool = np.asarray(t.info["kv_blocks_used_max"]), np.asarray(t.info["kv_pool_blocks"])
    assert np.all(used <= pool), (used.max(), pool.min())
    assert np.all(np.isfinite(np.asarray(t.reward)))
    ep = t.info["episode"]
    assert np.all(np.asarray(ep.slo_met) <= np.asarray(ep.finished))


def check_finite_state(t: Trajectory) -> None:
    for label, tree in (("reset state", t.reset_state), ("state", t.states)):
        for path, x in _float_leaves(tree):
            assert np.all(np.isfinite(x)), f"{label}{path} is not finite"


def check_conservation(t: Trajectory) -> None:
    c = {k: np.asarray(v) for k, v in t.info["counters"].items()}
    np.testing.assert_array_equal(c["arrived"], c["finished"] + c["running"] + c["waiting"] + c["dropped"])
    assert c["arrived"].max() > 0, "no request arrived: conservation held vacuously"


def check_typed_equals_flat(t: Trajectory) -> None:
    flat = (t.obs, t.states, t.reward, t.terminated, t.truncated, t.info)
    differ = _trees_equal(flat, t.typed)
    assert not differ, f"the typed ServeAction and the flat action stepped differently at {differ[:8]}"


def assert_env_contract(env, params, *, n_steps: int | None = None, seed: int = 0) -> Trajectory:
    """Check the contract (module docstring) on ``env``/``params``; returns the first trajectory.

    ``n_steps`` defaults to the horizon plus :data:`EXTRA_STEPS` (one auto-reset). Keep the env small:
    the cost is one compilation of a rollout that takes two steps per interval.
    """
    horizon = int(params.horizon_steps)
    n_steps = horizon + EXTRA_STEPS if n_steps is None else n_steps
    assert n_steps > horizon, "the contract rollout must cross the horizon"
    k_run, k_other, k_act, k_act2 = jax.random.split(jax.random.PRNGKey(seed), 4)
    actions = contract_actions(env, params, k_act, n_steps)
    actions2 = contract_actions(env, params, k_act2, n_steps)
    assert not np.array_equal(np.asarray(actions), np.asarray(actions2))
    roll = make_contract_rollout(env, n_steps)

    first = jax.device_get(roll.run(k_run, actions, env.decode_action(actions), params))
    check_api(env, params, first, actions, n_steps)
    check_bounds(env, params, first)
    check_finite_state(first)
    check_conservation(first)
    check_typed_equals_flat(first)

    again = jax.device_get(roll.run(k_run, actions, env.decode_action(actions), params))
    differ = _trees_equal(first, again)
    assert not differ, f"the same key gave another trajectory at {differ[:8]}"
    other = jax.device_get(roll.run(k_other, actions, env.decode_action(actions), params))
    assert _trees_equal(_observable(first), _observable(other)), "another key gave the same observable trajectory"
    other_actions = jax.device_get(roll.run(k_other, actions2, env.decode_action(actions2), params))
    check_conservation(other_actions)

    assert len(roll.traces) == 1, f"the rollout was traced {len(roll.traces)} times for calls of the same shapes"
    assert not roll.carry_mismatches, f"step returned state leaves with other avals than it was given: {roll.carry_mismatches[:8]}"
    return first
