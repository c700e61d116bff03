"""Core environment contract: conservation, bounds, determinism, vmap equivalence, no re-tracing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from benchmarks.invariants import corner_actions
from gymjax.rollout import rollout
from gymjax.types import ServeAction
from tests.contract import SMALL


@pytest.fixture(scope="module")
def small_env(small_static):
    return small_static


def _rollout_fn(env, n_clusters, n_steps, policy_of):
    """jitted ``run(key, params)``: cluster i plays ``policy_of(i)`` from ``split(key, n_clusters)[i]``
    through :func:`gymjax.rollout.rollout`; per-step obs, reward, counters, pools, metrics, truncation
    and state finiteness, each [cluster, step, ...]."""

    def record(s):
        info, floats = s.info, [x for x in jax.tree.leaves(s.next_state) if jnp.issubdtype(x.dtype, jnp.floating)]
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in floats]))
        return (s.next_obs, s.reward, info["counters"], info["kv_pool_blocks"], info["kv_blocks_used_max"], info["metrics"],
                s.truncated, finite)

    def run(key, params):
        one = lambda k, i: rollout(env, params, policy_of(i), k, n_steps, record=record)[1]  # noqa: E731
        return jax.vmap(one)(jax.random.split(key, n_clusters), jnp.arange(n_clusters))

    return jax.jit(run)


def _check_invariants(env, out):
    obs, r, c, pool, used, metrics, trunc, state_finite = jax.device_get(out)
    assert np.all(state_finite), "a state leaf went non-finite"
    # conservation, every step, every cluster
    np.testing.assert_array_equal(c["arrived"], c["finished"] + c["running"] + c["waiting"] + c["dropped"])
    assert (c["arrived"].max() > 0)
    # KV blocks used never exceed the pool
    assert np.all(used <= pool + 1e-3), (used.max(), pool.min())
    # observations finite and inside the documented box
    assert np.all(np.isfinite(obs)) and obs.min() >= 0.0 and obs.max() <= 1.0
    assert np.all(np.isfinite(r))
    for name, leaf in vars(metrics).items():
        assert np.all(np.isfinite(leaf)), name
        assert np.all(np.asarray(leaf) >= 0), name
    assert np.all(metrics.kv_occupancy <= 1.0 + 1e-6)
    assert np.all(metrics.slo_attainment <= 1.0)


_RANDOM_ROLLOUTS = {}


def _random_rollout(env, params, n_clusters, n_steps):
    """One compiled random-action rollout per shape, shared by the tests below."""
    key = (id(env), n_clusters, n_steps)
    if key not in _RANDOM_ROLLOUTS:
        space = env.action_space(params)
        _RANDOM_ROLLOUTS[key] = _rollout_fn(env, n_clusters, n_steps, lambda i: lambda k, obs, st: space.sample(k))
    return _RANDOM_ROLLOUTS[key]


def test_invariants_random_actions(small_env):
    """8 clusters under vmap; one cluster is checked on every task by tests/test_contract.py."""
    env, params = small_env
    run = _random_rollout(env, params, 8, 10)
    _check_invariants(env, run(jax.random.PRNGKey(8), params))


def test_invariants_extreme_actions(small_env):
    """Every corner of the action box, including invalid configurations and preemption storms."""
    env, params = small_env
    corners = jnp.asarray(corner_actions(env.action_space(params).nvec))
    run = _rollout_fn(env, 64, 14, lambda i: lambda k, obs, st: corners[i])
    heavy = params.replace(base_rate_rps=params.base_rate_rps * 4)
    _check_invariants(env, run(jax.random.PRNGKey(1), heavy))


def test_invalid_configuration_is_observable_not_a_crash(small_env, jit_step):
    env, _ = small_env
    # 140 GB of BF16 weights on one H100; same shapes, so the small env's compiled step serves
    params = gymjax.make("static", model="llama-3-70b", **SMALL)[1]
    step = jit_step(env)
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    obs, st, r, _, _, info = step(jax.random.PRNGKey(1), st, env.encode_action(env.default_action()), params)
    m = info["metrics"]
    assert float(m.invalid_config) == 1.0 and float(m.throughput_tps) == 0.0
    assert np.all(np.isfinite(np.asarray(obs)))
    # the same model fits in INT4 on 1 GPU? 70e9 * 0.52 B = 36 GB: yes
    a = env.encode_action(env.default_action().replace(quantization_tier=jnp.int32(3)))
    obs, st, r, _, _, info = step(jax.random.PRNGKey(2), st, a, params)
    assert float(info["metrics"].invalid_config) == 0.0


def test_nan_and_infinite_knobs_inside_jit_play_defined_levels(small_env, jit_step):
    """Inside jit nothing can refuse a bad knob value: NaN plays the knob's default level (vLLM's
    0.9 for the KV budget), +-inf the nearest end of its range; the step stays finite."""
    env, params = small_env
    step = jit_step(env)
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    base = env.default_action()
    kv = {k.name: k for k in env.knobs}["kv_budget_fraction"]
    for bad, means in ((float("nan"), 0.9), (float("inf"), kv.high), (float("-inf"), kv.low)):
        got = step(jax.random.PRNGKey(1), st, base.replace(kv_budget_fraction=jnp.float32(bad)), params)
        want = step(jax.random.PRNGKey(1), st, base.replace(kv_budget_fraction=jnp.float32(means)), params)
        chex.assert_trees_all_equal(got, want)
        assert np.all(np.isfinite(np.asarray(got[0]))) and np.isfinite(float(got[2])), bad
        assert float(got[1].action.kv_budget_fraction) == np.float32(means), bad


def test_same_key_same_trajectory_and_vmap_equals_single(small_env, jit_step):
    env, params = small_env
    space = env.action_space(params)
    run = _random_rollout(env, params, 8, 10)
    a = run(jax.random.PRNGKey(7), params)
    b = run(jax.random.PRNGKey(7), params)
    chex.assert_trees_all_equal(a, b)

    # cluster i of the vmapped run equals a single-cluster run with the same keys (rollout's key scheme)
    step = jit_step(env)
    reset = jax.jit(env.reset)
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    for i in (0, 7):
        k_reset, k_run = jax.random.split(keys[i])
        obs, st = reset(k_reset, params)
        for t, k in enumerate(jax.random.split(k_run, 10)):
            k_act, k_step = jax.random.split(k)
            obs, st, r, _, _, info = step(k_step, st, space.sample(k_act), params)
            np.testing.assert_allclose(np.asarray(obs), np.asarray(a[0][i, t]), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(float(r), float(a[1][i, t]), rtol=1e-5, atol=1e-6)
            assert int(info["counters"]["finished"]) == int(a[2]["finished"][i, t])


def test_no_retrace(small_env):
    env, params = small_env

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, st, a, params):
        return env.step(key, st, a, params)

    obs, st = env.reset(jax.random.PRNGKey(0), params)
    for i in range(3):
        a = env.action_space(params).sample(jax.random.PRNGKey(i))
        obs, st, *_ = step(jax.random.PRNGKey(i), st, a, params)
    typed = env.decode_action(a)
    assert env.encode_action(typed).tolist() == a.tolist()


def test_auto_reset_at_horizon(small_env, jit_step):
    env, params = small_env
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    step = jit_step(env)
    a = env.encode_action(env.default_action())
    truncs = []
    for t in range(int(params.horizon_steps) + 1):
        obs, st, r, term, trunc, info = step(jax.random.PRNGKey(t), st, a, params)
        truncs.append(bool(trunc))
        assert not bool(term)
    assert truncs[int(params.horizon_steps) - 1] and sum(truncs) == 1
    assert int(st.step) == 1  # one step into the new episode


def test_serve_action_validation(small_static):
    ok = dict(batch_cap=32, kv_budget_fraction=0.9, speculation_depth=2, quantization_tier=1, prefill_decode_split=0, priority_routing=1)
    ServeAction.create(**ok)
    with pytest.raises(ValueError, match=r"kv_budget_fraction.*\[0.05, 1\]"):
        ServeAction.create(**{**ok, "kv_budget_fraction": 1.5})
    with pytest.raises(ValueError, match="speculation_depth"):
        ServeAction.create(**{**ok, "speculation_depth": 9})
    with pytest.raises(TypeError, match="quantization_tier"):
        ServeAction.create(**{**ok, "quantization_tier": 1.5})
    with pytest.raises(TypeError, match="priority_routing"):
        ServeAction.create(**{**ok, "priority_routing": "yes"})
    with pytest.raises(ValueError, match="finite"):
        ServeAction.create(**{**ok, "kv_budget_fraction": float("nan")})
    with pytest.raises(ValueError, match="missing"):
        ServeAction.create(batch_cap=3)
    env, _ = small_static
    with pytest.raises(ValueError, match=r"batch_cap=64 is out of range \[1, 32\]"):
        env.validate_action(ServeAction.create(**{**ok, "batch_cap": 64}))


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError, match="static"):
        gymjax.make("nope")
    with pytest.raises(ValueError, match="unknown override"):
        gymjax.make("static", bogus=1)


def test_chunked_rollout_equals_plain_vmap(small_env):
    from gymjax.vector import make_rollout

    env, params = small_env
    plain = make_rollout(env, 8, 5)(jax.random.PRNGKey(3), params)
    chunked = make_rollout(env, 8, 5, chunk=4)(jax.random.PRNGKey(3), params)
    chex.assert_trees_all_equal(plain[0], chunked[0])  # every cluster's state bit for bit
    np.testing.assert_allclose(plain[1], chunked[1], rtol=1e-6)  # the cross-cluster mean: summation order


@pytest.mark.parametrize("task", ["static", "bursty", "adversarial", "azure-replay"])
def test_state_fits_64kb_per_cluster(task):
    """65,536 clusters must fit in 4 GB: every task's state is at most 64 KB per cluster."""
    env, params = gymjax.make(task)
    _, st = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
    nbytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(st))
    assert nbytes <= 64 * 1024, nbytes
