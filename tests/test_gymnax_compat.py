"""The gymnax wrapper (gymjax.gymnax_compat): the same trajectory as the simulator's own step, both step
signatures, the discrete action codec, and a third-party JAX trainer (rejax's PPO) running on it unmodified."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces as gymnax_spaces

from gymjax.gymnax_compat import GymnaxParams, GymnaxServingEnv
from gymjax.spaces import MultiDiscrete

ACTION = jnp.asarray([3, 4, 2, 1, 1, 0], jnp.int32)


def test_wrapper_steps_like_the_simulator(tiny_static, jit_step):
    env, params = tiny_static
    genv = GymnaxServingEnv(env)
    gp = genv.default_params
    assert isinstance(gp, GymnaxParams) and int(gp.max_steps_in_episode) == int(params.horizon_steps)
    assert isinstance(genv.action_space(gp), MultiDiscrete) and genv.action_space(gp).nvec == genv.nvec
    assert isinstance(genv.observation_space(gp), gymnax_spaces.Box) and genv.observation_space(gp).shape == (env.obs_dim,)
    key = jax.random.PRNGKey(3)
    obs, state = genv.reset(key, gp)
    obs_ref, state_ref = jax.jit(env.reset)(key, params)
    np.testing.assert_array_equal(obs, obs_ref)
    step = jit_step(env)
    dones = []
    for t in range(int(params.horizon_steps) + 1):  # across the horizon: both auto-reset the same way
        k = jax.random.PRNGKey(100 + t)
        obs, state, reward, terminated, truncated, info = genv.step(k, state, ACTION, gp)
        obs_ref, state_ref, reward_ref, _, truncated_ref, info_ref = step(k, state_ref, ACTION, params)
        np.testing.assert_allclose(obs, obs_ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(reward, reward_ref, rtol=1e-6, atol=1e-6)
        assert bool(truncated) == bool(truncated_ref) and not bool(terminated)
        assert {k: int(v) for k, v in info["counters"].items()} == {k: int(v) for k, v in info_ref["counters"].items()}
        np.testing.assert_allclose(info["final_observation"], info_ref["final_obs"], rtol=1e-6, atol=1e-6)
        dones.append(bool(truncated))
    assert dones == [False] * (len(dones) - 2) + [True, False]
    # the older 5-value step (gymnax < 1.0) that rejax unpacks
    legacy = GymnaxServingEnv(env, legacy_step=True)
    out = legacy.step(jax.random.PRNGKey(7), state, ACTION, gp)
    assert len(out) == 5 and out[3].dtype == jnp.bool_


def test_discrete_codec_covers_every_action(tiny_static):
    env, _ = tiny_static
    genv = GymnaxServingEnv(env, actions="discrete")
    n = int(np.prod(genv.nvec))
    assert isinstance(genv.action_space(), gymnax_spaces.Discrete) and genv.action_space().n == n == genv.num_actions
    idx = jnp.arange(n)
    flat = jax.vmap(genv.to_flat)(idx)
    assert bool(jnp.all((flat >= 0) & (flat < jnp.asarray(genv.nvec))))
    assert len({tuple(r) for r in np.asarray(flat)}) == n  # a bijection onto the level combinations
    np.testing.assert_array_equal(jax.vmap(genv.from_flat)(flat), idx)
    assert int(genv.from_flat(ACTION)) == int(np.ravel_multi_index(np.asarray(ACTION), genv.nvec))
    with pytest.raises(ValueError, match="actions must be"):
        GymnaxServingEnv(env, actions="box")


def test_rejax_ppo_trains_on_static(tiny_static):
    """rejax's PPO (from the package index, unmodified) on the wrapped `static`: 4 updates of 8 steps x 4 envs, flat
    Discrete actions and the 5-value step it expects."""
    from rejax import PPO

    env, _ = tiny_static
    genv = GymnaxServingEnv(env, actions="discrete", legacy_step=True)
    horizon, n_envs, updates = int(genv.default_params.max_steps_in_episode), 4, 4
    algo = PPO.create(
        env=genv,
        env_params=genv.default_params,
        num_envs=n_envs,
        num_steps=horizon,
        total_timesteps=updates * horizon * n_envs,
        eval_freq=updates * horizon * n_envs,
        num_epochs=2,
        num_minibatches=2,
        skip_initial_evaluation=True,
    )
    # rejax's default evaluation (128 episodes in a while_loop) would compile the env step once more; count steps instead
    algo = algo.replace(eval_callback=lambda algo, ts, rng: ts.global_step)
    before = algo.init_state(jax.random.PRNGKey(0))
    ts, evaluated = jax.jit(algo.train)(jax.random.PRNGKey(0))
    assert int(ts.global_step) == updates * horizon * n_envs == int(np.asarray(evaluated).max())
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), ts.actor_ts.params, before.actor_ts.params)
    assert all(jax.tree.leaves(changed)), "PPO updates left some actor weights unchanged"
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(ts.actor_ts.params))
    act = algo.make_act(ts)
    obs, _ = genv.reset(jax.random.PRNGKey(1), genv.default_params)
    a = act(obs, jax.random.PRNGKey(2))
    assert 0 <= int(a) < genv.num_actions
