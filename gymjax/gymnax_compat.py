"""A gymnax ``Environment`` around :class:`gymjax.ServingEnv`, so JAX RL libraries written against gymnax
run on the serving simulator unmodified. Needs the ``gymnax`` package (``pip install 'inferencegym[gymnax]'``).

    from gymjax.gymnax_compat import GymnaxServingEnv
    env = GymnaxServingEnv.make("bursty", actions="discrete", legacy_step=True)
    obs, state = env.reset(key, env.default_params)
    obs, state, reward, done, info = env.step(key, state, action, env.default_params)   # legacy_step=True

- **Params.** ``env.default_params`` is a :class:`GymnaxParams` holding the task's ``EnvParams``
  (``.serving``) and exposing ``max_steps_in_episode`` (the horizon), which gymnax libraries read.
  Every leaf is an array, so you can still ``vmap`` over it.
- **Actions.** ``actions="multidiscrete"`` (default) takes the simulator's flat action, one level index
  per knob (``action_space`` is gymjax's ``MultiDiscrete``, with ``sample``/``contains``/``nvec``).
  Libraries that only know gymnax's ``Discrete`` and ``Box`` (rejax, PureJaxRL-style scripts) get
  ``actions="discrete"``: one categorical over every combination of levels (``prod(nvec)`` actions,
  12,096 at 64 slots), decoded mixed-radix (the last knob varies fastest; :meth:`to_flat`,
  :meth:`from_flat`).
- **Step.** gymnax 1.x's ``step`` returns ``(obs, state, reward, terminated, truncated, info)`` and
  auto-resets when the episode ends, with gymnax's key scheme (``key_step, key_reset = split(key)``),
  which is the simulator's own: the same keys give the same trajectory as ``ServingEnv.step``.
  ``legacy_step=True`` returns the older 5-tuple ``(obs, state, reward, done, info)`` (gymnax < 1.0;
  what rejax 0.1.3 unpacks). ``terminated`` is always False; ``truncated``/``done`` is True at the horizon.
  ``info`` has the simulator's ``metrics`` and ``counters``, and gymnax's ``terminated``,
  ``truncated`` and ``final_observation``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment
from gymnax.environments import spaces as gymnax_spaces

from gymjax.env import ServingEnv
from gymjax.registry import make
from gymjax.spaces import MultiDiscrete
from gymjax.types import EnvParams, EnvState

__all__ = ["GymnaxParams", "GymnaxServingEnv"]


@struct.dataclass
class GymnaxParams:
    """The task's :class:`EnvParams` under gymnax's params contract."""

    serving: EnvParams

    @property
    def max_steps_in_episode(self) -> jax.Array:
        return self.serving.horizon_steps


class GymnaxServingEnv(environment.Environment):
    """:class:`gymjax.ServingEnv` as a gymnax ``Environment`` (see the module docstring)."""

    def __init__(self, env: ServingEnv, actions: str = "multidiscrete", legacy_step: bool = False):
        if actions not in ("multidiscrete", "discrete"):
            raise ValueError(f"actions must be 'multidiscrete' or 'discrete', got {actions!r}")
        self.env = env
        self.actions = actions
        self.legacy_step = bool(legacy_step)
        self.nvec = tuple(int(n) for n in env.action_space().nvec)
        # mixed-radix place values: flat index = sum(level_i * radix_i), the last knob varying fastest
        self._radix = tuple(int(r) for r in np.cumprod((1,) + self.nvec[:0:-1])[::-1])

    @classmethod
    def make(cls, task: str, actions: str = "multidiscrete", legacy_step: bool = False, **overrides) -> GymnaxServingEnv:
        """``gymjax.make(task, **overrides)`` wrapped."""
        env, _ = make(task, **overrides)
        return cls(env, actions, legacy_step)

    # -- gymnax API ---------------------------------------------------------------------------------

    @property
    def default_params(self) -> GymnaxParams:
        return GymnaxParams(self.env.default_params)

    @property
    def name(self) -> str:
        return f"gymjax/{self.env.name}"

    @property
    def num_actions(self) -> int:
        return int(np.prod(self.nvec)) if self.actions == "discrete" else len(self.nvec)

    def action_space(self, params: GymnaxParams | None = None):
        if self.actions == "discrete":
            return gymnax_spaces.Discrete(int(np.prod(self.nvec)))
        return MultiDiscrete(self.nvec)

    def observation_space(self, params: GymnaxParams | None = None) -> gymnax_spaces.Box:
        return gymnax_spaces.Box(0.0, 1.0, (self.env.obs_dim,), jnp.float32)

    def reset_env(self, key: jax.Array, params: GymnaxParams) -> tuple[jax.Array, EnvState]:
        return self.env.reset(key, params.serving)

    def step_env(self, key: jax.Array, state: EnvState, action, params: GymnaxParams):
        obs, state, reward, _, info = self.env.step_env(key, state, self.to_flat(action), params.serving)
        return obs, state, reward, jnp.bool_(False), {"metrics": info["metrics"], "counters": info["counters"]}

    def is_truncated(self, state: EnvState, params: GymnaxParams) -> jax.Array:
        return state.step >= params.serving.horizon_steps

    def is_terminated(self, state: EnvState, params: GymnaxParams) -> jax.Array:
        return jnp.bool_(False)

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: EnvState, action, params: GymnaxParams | None = None):
        obs, state, reward, terminated, truncated, info = super().step(key, state, action, params)
        if self.legacy_step:
            return obs, state, reward, terminated | truncated, info
        return obs, state, reward, terminated, truncated, info

    # -- actions ------------------------------------------------------------------------------------

    def to_flat(self, action) -> jax.Array:
        """The simulator's flat action (int32[n_knobs]) of an action of this env's action space."""
        if self.actions == "multidiscrete":
            return jnp.asarray(action, jnp.int32)
        a = jnp.asarray(action, jnp.int32).reshape(())
        return jnp.stack([(a // r) % n for r, n in zip(self._radix, self.nvec, strict=True)]).astype(jnp.int32)

    def from_flat(self, flat) -> jax.Array:
        """This env's action for a simulator flat action (the inverse of :meth:`to_flat`)."""
        flat = jnp.asarray(flat, jnp.int32)
        if self.actions == "multidiscrete":
            return flat
        return jnp.sum(flat * jnp.asarray(self._radix, jnp.int32)).astype(jnp.int32)
