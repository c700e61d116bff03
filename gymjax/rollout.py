"""The one episode loop: reset, then ``lax.scan`` of ``env.step`` under a policy (shaped like Brax's
``generate_unroll``).

Key scheme (every evaluation, tuning and diagnostic run uses it):

    k_reset, k_run = split(key)
    obs, state = env.reset(k_reset, params)
    for k_t in split(k_run, n_steps):
        k_policy, k_step = split(k_t)
        action = policy(k_policy, obs, state)
        obs, state, reward, terminated, truncated, info = env.step(k_step, state, action, params)

What each step leaves behind is the caller's choice (``record``); the final carry holds the last
observation and state and the last step's ``info["episode"]``: the episode's statistics as they
stood when the step ended, before any auto-reset cleared them.

:func:`unroll` is the same loop from a given carry over given step keys; with
``split_policy_key=False`` each step key goes to ``env.step`` whole (for policies that ignore their
key). The tuner and the trace calibration use it to keep the keys their recorded results were
drawn with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gymjax.types import EnvParams, EnvState, EpisodeStats

# policy(key, obs, state) -> action (flat int32[n_knobs] or a typed ServeAction)
Policy = Callable[[jax.Array, jax.Array, EnvState], Any]


class Step(NamedTuple):
    """One control interval: what the policy saw (``obs``, ``state``), what it did and what came of it."""

    obs: jax.Array
    state: EnvState
    action: Any
    next_obs: jax.Array
    next_state: EnvState
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    info: dict


class Carry(NamedTuple):
    """The loop's carry: the current observation and state, and the latest episode statistics
    (``info["episode"]`` of the last step; the reset state's empty record before the first)."""

    obs: jax.Array
    state: EnvState
    episode: EpisodeStats


Record = Callable[[Step], Any]


def reward_record(step: Step) -> jax.Array:
    """The default record: the step's shaped reward."""
    return step.reward


def make_step(env, params: EnvParams, policy: Policy, record: Record | None = None,
              split_policy_key: bool = True) -> Callable[[Carry, jax.Array], tuple[Carry, Any]]:
    """The scan body ``(carry, k_t) -> (carry, record(step))``: ``k_policy, k_step = split(k_t)`` (or
    both ``k_t`` when ``split_policy_key`` is False), one policy call and one ``env.step``.
    :func:`rollout` scans it; batched runners (``gymjax.vector``) vmap it."""
    record = reward_record if record is None else record

    def step(carry: Carry, key: jax.Array) -> tuple[Carry, Any]:
        k_policy, k_step = jax.random.split(key) if split_policy_key else (key, key)
        action = policy(k_policy, carry.obs, carry.state)
        obs, state, reward, terminated, truncated, info = env.step(k_step, carry.state, action, params)
        out = record(Step(carry.obs, carry.state, action, obs, state, reward, terminated, truncated, info))
        return Carry(obs, state, info["episode"]), out

    return step


def reset_carry(env, params: EnvParams, key: jax.Array, init: Callable | None = None) -> Carry:
    """The carry after ``env.reset(key, params)``; ``init(obs, state) -> (obs, state)`` edits the reset
    state first (e.g. pins a burst phase)."""
    obs, state = env.reset(key, params)
    if init is not None:
        obs, state = init(obs, state)
    return Carry(obs, state, state.episode)


def rollout(env, params: EnvParams, policy: Policy, key: jax.Array, n_steps: int, record: Record | None = None,
            init: Callable | None = None) -> tuple[Carry, Any]:
    """Reset with ``key`` and play ``n_steps`` control intervals of ``policy`` (key scheme in the module
    docstring). ``record(step: Step)`` picks what each step returns (default: its reward); the records
    come back stacked along a leading ``n_steps`` axis. ``init(obs, state) -> (obs, state)`` edits the
    reset state before the first step. Returns ``(final Carry, records)``. Jittable and vmappable."""
    k_reset, k_run = jax.random.split(key)
    return unroll(env, params, policy, reset_carry(env, params, k_reset, init), jax.random.split(k_run, n_steps), record)


def unroll(env, params: EnvParams, policy: Policy, carry: Carry, keys: jax.Array, record: Record | None = None,
           split_policy_key: bool = True) -> tuple[Carry, Any]:
    """Play one control interval per key of ``keys`` [n_steps] from ``carry`` (see :func:`make_step`).
    Returns ``(final Carry, records)``."""
    return jax.lax.scan(make_step(env, params, policy, record, split_policy_key), carry, keys)
