"""Gymnasium adapters: the serving simulator for trainers written against Gymnasium (Stable-Baselines3,
CleanRL, RLlib, skrl, ...). Needs the ``gymnasium`` package (``pip install 'inferencegym[gym]'``).

- :class:`ServingGymEnv`: one cluster as a ``gymnasium.Env``.
- :class:`ServingVectorEnv`: ``num_envs`` clusters as a ``gymnasium.vector.VectorEnv``; one compiled
  ``vmap`` of the step advances the whole batch (no Python loop over clusters).

Spaces: actions are ``MultiDiscrete(nvec)``, one index per knob into its levels (the learner's flat
encoding, ``env.action_space``); observations are ``Box(0, 1, (obs_dim,), float32)``, the flat
observation. Rewards are the shaped per-step reward. ``terminated`` is always False; ``truncated`` is
True at the task's horizon, and that step's ``info["episode_score"]`` holds the grader's score of the
episode (:func:`gymjax.grade`). ``info["metrics"]`` holds the interval's named metrics
(:class:`gymjax.Observation`, per-tenant arrays summed) and ``info["counters"]`` the episode's request
counts.

Keys (deterministic: the same seed gives the same episode). ``reset(seed=s)`` plays the episode that
:func:`gymjax.rollout.rollout` plays with ``key = PRNGKey(s)``: ``k_reset, k_run = split(key)``, and
step t passes ``split(split(k_run, horizon)[t])[1]`` to ``env.step``. ``reset()`` without a seed draws
the key from the env's ``np_random`` (seeded by the first seeded reset). The vector env gives cluster
i of a ``reset(seed=s)`` the key ``split(PRNGKey(s), num_envs)[i]`` and the same scheme from there;
a cluster that reaches its horizon auto-resets in the same step (Gymnasium's ``SAME_STEP`` mode:
the returned observation is the new episode's first, ``info["final_obs"]`` the last one of the
episode that ended, with the mask ``info["_final_obs"]``) and starts its next episode from the next
key of its own stream.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from gymjax.env import ServingEnv
from gymjax.grading import grade
from gymjax.registry import make
from gymjax.types import EnvParams

__all__ = ["ENV_ID", "ServingGymEnv", "ServingVectorEnv", "gym_spaces"]

# ``gymnasium.make(ENV_ID, task="bursty")`` (any ``gymjax.make`` arguments as keywords) once this module is imported
ENV_ID = "gymjax/Serving-v0"


def gym_spaces(env: ServingEnv, params: EnvParams | None = None) -> tuple[spaces.MultiDiscrete, spaces.Box]:
    """``(action_space, observation_space)`` of ``env`` as Gymnasium spaces."""
    nvec = np.asarray(env.action_space(params).nvec, np.int64)
    return spaces.MultiDiscrete(nvec), spaces.Box(0.0, 1.0, (env.obs_dim,), np.float32)


def _build(task: str | None, env: ServingEnv | None, params: EnvParams | None, overrides: dict) -> tuple[ServingEnv, EnvParams]:
    if env is None:
        if task is None:
            raise ValueError("give a task name or an env")
        env, default = make(task, **overrides)
        return env, default if params is None else params
    if overrides:
        raise ValueError(f"overrides {sorted(overrides)} need a task name, not an env")
    return env, env.default_params if params is None else params


def _episode_keys(key: jax.Array, horizon: int) -> tuple[jax.Array, jax.Array]:
    """``(k_reset, step keys [horizon])`` of one episode: the rollout's key scheme."""
    k_reset, k_run = jax.random.split(key)
    return k_reset, jax.vmap(lambda k: jax.random.split(k)[1])(jax.random.split(k_run, horizon))


def _info(params: EnvParams, info: dict) -> dict:
    """The step's info, reduced to arrays: per-tenant metrics summed, the score of the episode so far."""
    metrics = {k: jnp.sum(v) for k, v in info["metrics"].__dict__.items()}
    return {"metrics": metrics, "counters": info["counters"], "episode_score": grade(params, info["episode"])}


@functools.lru_cache(maxsize=16)
def _single_fns(env: ServingEnv):
    """Jitted ``reset`` and ``step`` of one cluster (one compilation per env object)."""

    def step(key, state, action, params):
        obs, state, reward, _, truncated, info = env.step(key, state, action, params)
        return info["final_obs"], state, reward, truncated, _info(params, info)

    return jax.jit(env.reset), jax.jit(step)


def _check_actions(a: np.ndarray, space: spaces.MultiDiscrete, what: str) -> None:
    if a.shape != space.shape or a.dtype.kind not in "iu" or not space.contains(a.astype(space.dtype)):
        raise ValueError(f"{what} {a.tolist()} (dtype {a.dtype}) is not in {space}: integer level indices, one per knob")


class ServingGymEnv(gymnasium.Env):
    """One serving cluster as a ``gymnasium.Env`` (see the module docstring).

    ``ServingGymEnv("static")`` or ``ServingGymEnv("trace", path="my.csv", n_gpus=2)`` (``gymjax.make``
    arguments), or ``ServingGymEnv(env=env, params=params)`` for an env you built.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: str | None = "static", *, env: ServingEnv | None = None, params: EnvParams | None = None, **overrides):
        self.env, self.params = _build(task if env is None else None, env, params, overrides)
        self.horizon = int(self.params.horizon_steps)
        self.action_space, self.observation_space = gym_spaces(self.env, self.params)
        self._reset_fn, self._step_fn = _single_fns(self.env)
        self._state = None
        self._keys = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        k_reset, self._keys = _episode_keys(jax.random.PRNGKey(seed), self.horizon)
        obs, self._state = self._reset_fn(k_reset, self.params)
        self._t = 0
        return np.asarray(obs), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.horizon:
            raise RuntimeError(f"the episode ended at its horizon ({self.horizon} steps); call reset()")
        a = np.asarray(action)
        _check_actions(a, self.action_space, "action")
        obs, self._state, reward, truncated, info = self._step_fn(self._keys[self._t], self._state, jnp.asarray(a, jnp.int32), self.params)
        self._t += 1
        truncated = bool(truncated)
        info = jax.tree.map(lambda x: x.item(), jax.device_get(info))
        if not truncated:
            del info["episode_score"]
        return np.asarray(obs), float(reward), False, truncated, info

    @property
    def state(self):
        """The simulator's :class:`gymjax.EnvState` (None before the first reset)."""
        return self._state


@functools.lru_cache(maxsize=16)
def _vector_fns(env: ServingEnv, num_envs: int):
    """Jitted batched ``reset(keys, mask, old, params)`` and ``step(step_keys, t, states, actions, params)``
    of ``num_envs`` clusters: one compiled program each for the whole batch."""

    def reset(keys, mask, old, params):
        def one(key):
            k_reset, step_keys = _episode_keys(key, old[2].shape[1])
            obs, state = env.reset(k_reset, params)
            return obs, state, step_keys

        new = jax.vmap(one)(keys)
        pick = lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)  # noqa: E731
        return jax.tree.map(pick, new, old)

    def step(step_keys, t, states, actions, params):
        def one(keys, t, state, action):
            obs, state, reward, _, truncated, info = env.step(keys[t], state, action, params)
            return obs, state, reward, truncated, info["final_obs"], _info(params, info)

        return jax.vmap(one)(step_keys, t, states, actions)

    return jax.jit(reset), jax.jit(step)


class ServingVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` serving clusters as a ``gymnasium.vector.VectorEnv``, stepped together by one
    compiled ``vmap`` of the env step (see the module docstring for keys and auto-reset).

    ``ServingVectorEnv("bursty", num_envs=64)`` or ``ServingVectorEnv(env=env, params=params, num_envs=64)``.
    All clusters share ``params``. ``reset(options={"reset_mask": mask})`` resets only the clusters
    where ``mask`` is True.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self, task: str | None = "static", num_envs: int = 8, *, env: ServingEnv | None = None, params: EnvParams | None = None, **overrides
    ):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env, self.params = _build(task if env is None else None, env, params, overrides)
        self.num_envs = int(num_envs)
        self.horizon = int(self.params.horizon_steps)
        self.single_action_space, self.single_observation_space = gym_spaces(self.env, self.params)
        self.action_space = spaces.MultiDiscrete(np.tile(self.single_action_space.nvec, (self.num_envs, 1)))
        self.observation_space = spaces.Box(0.0, 1.0, (self.num_envs, self.env.obs_dim), np.float32)
        self._reset_fn, self._step_fn = _vector_fns(self.env, self.num_envs)
        self._carry = None  # (obs, states, step keys [n, horizon]) of the clusters
        self._t = np.zeros(self.num_envs, np.int32)  # step within each cluster's episode
        self._episode = np.zeros(self.num_envs, np.uint32)  # episodes each cluster has started
        self._root = None  # each cluster's root key

    def _reset_clusters(self, mask: np.ndarray, carry) -> None:
        """Reset the clusters of ``mask``, each with key fold_in(its root key, its episode count)."""
        keys = jax.vmap(jax.random.fold_in)(self._root, jnp.asarray(self._episode))
        self._carry = self._reset_fn(keys, jnp.asarray(mask), carry, self.params)
        self._t[mask] = 0
        self._episode[mask] += 1

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed if seed is None or isinstance(seed, int) else None)
        mask = np.ones(self.num_envs, bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
        if self._carry is None and not mask.all():
            raise ValueError("the first reset must reset every cluster")
        if seed is not None or self._root is None:
            if seed is None:
                seed = int(self.np_random.integers(0, 2**31 - 1))
            if isinstance(seed, int | np.integer):
                self._root = jax.random.split(jax.random.PRNGKey(int(seed)), self.num_envs)
            elif len(seed) == self.num_envs:
                self._root = jnp.stack([jax.random.PRNGKey(int(s)) for s in seed])
            else:
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} clusters")
            self._episode[:] = 0
        self._reset_clusters(mask, self._placeholder() if self._carry is None else self._carry)
        return np.asarray(self._carry[0]), {}

    def _placeholder(self):
        """Zeros shaped like the carry (the first reset replaces every cluster's)."""
        obs = jax.ShapeDtypeStruct((self.num_envs, self.env.obs_dim), jnp.float32)
        state = jax.eval_shape(jax.vmap(lambda k: self.env.reset(k, self.params)[1]), self._root)
        keys = jax.ShapeDtypeStruct((self.num_envs, self.horizon) + self._root.shape[1:], self._root.dtype)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (obs, state, keys))

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._carry is None:
            raise RuntimeError("call reset() before step()")
        if (self._t >= self.horizon).any():
            raise RuntimeError("a cluster is past its horizon; call reset()")
        a = np.asarray(actions)
        _check_actions(a, self.action_space, "actions")
        _, states, step_keys = self._carry
        obs, states, rewards, truncated, final_obs, info = self._step_fn(
            step_keys, jnp.asarray(self._t), states, jnp.asarray(a, jnp.int32), self.params
        )
        self._t += 1
        truncated = np.asarray(truncated)
        info = jax.device_get(info)
        info["final_obs"], info["_final_obs"] = np.asarray(final_obs), truncated.copy()
        info["_episode_score"] = truncated.copy()
        self._carry = (obs, states, step_keys)
        if truncated.any():  # the env reset them inside the step; their next episode takes its own key
            self._reset_clusters(truncated, self._carry)
        return np.asarray(self._carry[0]), np.asarray(rewards, np.float32), np.zeros(self.num_envs, bool), truncated, info


if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=ServingGymEnv, disable_env_checker=True)
