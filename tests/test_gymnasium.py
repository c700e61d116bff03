"""The Gymnasium adapters (gymjax.gymnasium): Gymnasium's own env checker, the same episodes as the
one rollout, one compiled program for the vector env's batch, and a short PPO run of a Gymnasium
trainer (skrl, JAX backend) on the vector env."""

import importlib.util
import warnings
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from gymjax.grading import grade
from gymjax.gymnasium import ENV_ID, ServingGymEnv, ServingVectorEnv, _vector_fns
from gymjax.rollout import rollout

N = 3  # clusters of the vector env (and keys per rollout call): one compiled program of each shape for the file
ACTION = np.array([3, 4, 2, 1, 1, 0])  # a fixed flat action: batch cap level 3, KV 0.9, depth 2, FP8, chunk 512, FCFS


@pytest.fixture(scope="module")
def constant_rollout(tiny_static):
    """jit(vmap over keys) of one episode of the constant ``ACTION`` through gymjax.rollout: its rewards, score and
    request counts (arrived, finished, dropped). Separately compiled programs may round the last bit of a float
    differently, so floats are compared to 1e-6 and the integer counts exactly."""
    env, params = tiny_static
    horizon = int(params.horizon_steps)

    def one(key):
        final, rewards = rollout(env, params, lambda k, o, s: jnp.asarray(ACTION, jnp.int32), key, horizon)
        ep = final.episode
        return rewards, grade(params, ep), jnp.stack([ep.arrived.sum(), ep.finished.sum(), ep.dropped.sum()])

    return jax.jit(jax.vmap(one))


def test_check_env_passes(tiny_static):
    env, params = tiny_static
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any complaint of the checker fails the test
        genv = gymnasium.make(ENV_ID, env=env, params=params)
        check_env(genv.unwrapped)
    assert isinstance(genv.unwrapped, ServingGymEnv)


def test_gym_env_plays_the_rollout_episode(tiny_static, constant_rollout):
    env, params = tiny_static
    genv = ServingGymEnv(env=env, params=params)
    assert genv.action_space.nvec.tolist() == list(env.action_space(params).nvec)
    assert genv.observation_space.shape == (env.obs_dim,)
    want_rewards, want_score, want_counts = constant_rollout(jnp.stack([jax.random.PRNGKey(s) for s in (5, 6, 7)]))
    obs, _ = genv.reset(seed=5)
    assert genv.observation_space.contains(obs)
    rewards, truncs = [], []
    for _ in range(int(params.horizon_steps)):
        obs, r, term, trunc, info = genv.step(ACTION)
        assert genv.observation_space.contains(obs) and term is False
        rewards.append(r)
        truncs.append(trunc)
    np.testing.assert_allclose(np.asarray(rewards, np.float32), np.asarray(want_rewards[0]), rtol=1e-6, atol=1e-6)
    assert truncs == [False] * (len(truncs) - 1) + [True]
    assert info["episode_score"] == pytest.approx(float(want_score[0]), rel=1e-6)
    c = info["counters"]
    assert [c["arrived"], c["finished"], c["dropped"]] == np.asarray(want_counts[0]).tolist()
    assert set(c) == {"arrived", "finished", "running", "waiting", "dropped"}
    assert c["arrived"] == c["finished"] + c["running"] + c["waiting"] + c["dropped"] > 0
    with pytest.raises(RuntimeError, match="horizon"):
        genv.step(ACTION)
    genv.reset(seed=5)
    assert genv.step(ACTION)[1] == rewards[0]  # the same seed replays the same episode


def test_gym_env_rejects_bad_actions(tiny_static):
    env, params = tiny_static
    genv = ServingGymEnv(env=env, params=params)
    with pytest.raises(RuntimeError, match="reset"):
        genv.step(ACTION)
    genv.reset(seed=0)
    bad = ACTION.copy()
    bad[0] = genv.action_space.nvec[0]  # one past the last batch-cap level
    for a in (bad, ACTION[:5], ACTION.astype(np.float32)):
        with pytest.raises(ValueError, match="not in MultiDiscrete"):
            genv.step(a)


def test_vector_env_one_program_same_episodes_and_autoreset(tiny_static, constant_rollout):
    env, params = tiny_static
    n, horizon = N, int(params.horizon_steps)
    venv = ServingVectorEnv(env=env, params=params, num_envs=n)
    assert venv.single_action_space == ServingGymEnv(env=env, params=params).action_space
    assert venv.action_space.shape == (n, 6) and venv.observation_space.shape == (n, env.obs_dim)
    obs, _ = venv.reset(seed=11)
    assert venv.observation_space.contains(obs)
    actions = np.tile(ACTION, (n, 1))
    rewards, truncs, scores, final_counts = [], [], None, None
    for _ in range(horizon + 2):  # one full episode per cluster and two steps of the next
        obs, r, term, trunc, info = venv.step(actions)
        assert venv.observation_space.contains(obs) and not term.any()
        rewards.append(r)
        truncs.append(trunc)
        if trunc.any():
            scores = info["episode_score"][info["_episode_score"]]
            final_counts = np.stack([info["counters"][k] for k in ("arrived", "finished", "dropped")], 1)
            assert info["_final_obs"].all() and venv.single_observation_space.contains(info["final_obs"][0])
    rewards, truncs = np.stack(rewards), np.stack(truncs)
    assert truncs[horizon - 1].all() and truncs.sum() == n
    # cluster i's episode e is the rollout's episode with key fold_in(split(PRNGKey(seed), n)[i], e)
    roots = jax.random.split(jax.random.PRNGKey(11), n)
    first, first_scores, first_counts = constant_rollout(jax.vmap(jax.random.fold_in, (0, None))(roots, 0))
    second, _, _ = constant_rollout(jax.vmap(jax.random.fold_in, (0, None))(roots, 1))
    np.testing.assert_allclose(rewards[:horizon], np.asarray(first).T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rewards[horizon:], np.asarray(second)[:, :2].T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores, np.asarray(first_scores), rtol=1e-6)
    np.testing.assert_array_equal(final_counts, np.asarray(first_counts))
    assert not np.array_equal(rewards[:horizon, 0], rewards[:horizon, 1])  # clusters have their own keys
    reset_fn, step_fn = _vector_fns(env, n)
    assert step_fn._cache_size() == 1  # every step of the batch ran one compiled program
    # a partial reset touches only the masked clusters
    before = venv._episode.copy()
    venv.reset(options={"reset_mask": np.array([True, False, False])})
    assert (venv._episode - before).tolist() == [1, 0, 0] and venv._t.tolist() == [0, 2, 2]
    with pytest.raises(ValueError, match="not in MultiDiscrete"):
        venv.step(actions[:2])


def _docs_example():
    """``docs/skrl_ppo.py``, the README's example, imported as a module."""
    path = Path(__file__).resolve().parents[1] / "docs" / "skrl_ppo.py"
    spec = importlib.util.spec_from_file_location("skrl_ppo_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skrl_ppo_trains_on_the_vector_env(tiny_static, tmp_path):
    """The docs' skrl PPO example (JAX backend, the trainer unmodified) on ServingVectorEnv: 4 updates of 8 steps x 3 clusters."""
    example = _docs_example()
    env, params = tiny_static
    horizon = int(params.horizon_steps)
    venv = ServingVectorEnv(env=env, params=params, num_envs=N)
    agent, wrapped = example.make_agent(venv, horizon, str(tmp_path), learning_epochs=2, mini_batches=2)
    before = jax.tree.map(np.array, agent.policy.state_dict.params)
    example.train(agent, wrapped, 4 * horizon)
    assert venv._episode.tolist() == [5] * N  # the first reset, then one auto-reset per horizon
    after = agent.policy.state_dict.params
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), after, before)
    assert all(jax.tree.leaves(changed)), "PPO updates left some policy weights unchanged"
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(after))
    greedy = example.greedy_actions(agent.policy, venv.reset(seed=0)[0], venv.single_action_space.nvec)
    assert venv.action_space.contains(greedy.astype(np.int64))
