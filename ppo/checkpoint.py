"""Saving and loading trained policies (flax msgpack + JSON; never pickle).

A saved policy is a directory (``runs/<task>/`` by default) holding

- ``policy.msgpack``: ``flax.serialization.to_bytes({"params": ..., "obs_norm": {...}})`` — the
  actor-critic weights and the frozen observation statistics. Loading restores into a template
  built from the config, so only arrays of the expected shapes are read (no code is executed).
- ``config.json``: the :class:`PPOConfig`, the action space (``nvec``), ``obs_dim``, the seed,
  the JAX version and whatever else the trainer recorded (scores, timings).

``load_policy(path)`` gives back a gymjax-style ``policy(key, obs, state) -> flat int32[n_knobs]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization

from ppo.config import PPOConfig
from ppo.networks import ActionReader, ActorCritic, ObsNorm, greedy_action, hold_gate_mask, obs_norm_apply, sample_action

FORMAT = "inferencegym-ppo/1"
WEIGHTS = "policy.msgpack"
META = "config.json"


def make_policy(
    network: ActorCritic, params, obs_norm: ObsNorm, reader: ActionReader, normalize: bool = True, greedy: bool = True
) -> Callable:
    """``policy(key, obs[obs_dim], state) -> int32[n_knobs]``: argmax of each knob head (greedy) or a sample."""

    def policy(key, obs, state=None):
        logits, _ = network.apply(params, obs_norm_apply(obs_norm, obs, normalize), reader.current(obs))
        return greedy_action(logits) if greedy else sample_action(key, logits)

    return policy


def save_policy(
    path: str | Path,
    config: PPOConfig,
    params,
    obs_norm: ObsNorm,
    nvec,
    obs_dim: int,
    reader: ActionReader,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``policy.msgpack`` and ``config.json`` under the directory ``path``; returns it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {"params": jax.device_get(params), "obs_norm": {"mean": obs_norm.mean, "var": obs_norm.var, "count": obs_norm.count}}
    (path / WEIGHTS).write_bytes(serialization.to_bytes(jax.device_get(state)))
    meta = {
        "format": FORMAT,
        "config": config.to_dict(),
        "nvec": [int(n) for n in nvec],
        "obs_dim": int(obs_dim),
        "action_reader": reader.to_dict(),
        "jax_version": jax.__version__,
        **(extra or {}),
    }
    (path / META).write_text(json.dumps(meta, indent=2, default=float) + "\n")
    return path


def load_policy(path: str | Path, greedy: bool = True) -> tuple[Callable, dict[str, Any]]:
    """Load a saved policy: ``(policy, meta)``.

    ``path`` is the run directory or its ``policy.msgpack``. ``meta`` is the parsed
    ``config.json`` plus ``meta["ppo_config"]`` (a :class:`PPOConfig`); build the matching env with
    ``gymjax.make(meta["config"]["task"], **meta["config"]["env_kwargs"])``.
    """
    path = Path(path)
    run_dir = path.parent if path.suffix == ".msgpack" else path
    meta_file = run_dir / META
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} not found: a saved policy directory holds {WEIGHTS} and {META}")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: unknown format {meta.get('format')!r} (expected {FORMAT!r})")
    # saved before the gate existed: no gate (whatever the field's default)
    config = PPOConfig.from_dict({"slow_hold_gate": False, **meta["config"]})
    network = ActorCritic(nvec=tuple(meta["nvec"]), hidden=config.hidden, activation=config.activation,
                          hold_gate=hold_gate_mask(config.slow_hold_gate))
    obs_dim = int(meta["obs_dim"])
    template = {
        "params": network.init(jax.random.PRNGKey(0), jnp.zeros((obs_dim,), jnp.float32)),
        "obs_norm": {"mean": jnp.zeros(obs_dim), "var": jnp.ones(obs_dim), "count": jnp.float32(0)},
    }
    state = serialization.from_bytes(template, (run_dir / WEIGHTS).read_bytes())
    want = jax.tree.map(lambda x: jnp.shape(x), template)
    got = jax.tree.map(lambda x: jnp.shape(x), state)
    if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != jax.tree.leaves(got):
        raise ValueError(f"{run_dir / WEIGHTS}: weights do not match the network described by {META}")
    on = state["obs_norm"]
    obs_norm = ObsNorm(jnp.asarray(on["mean"], jnp.float32), jnp.asarray(on["var"], jnp.float32), jnp.asarray(on["count"], jnp.float32))
    policy = make_policy(network, state["params"], obs_norm, ActionReader.from_dict(meta["action_reader"]), config.normalize_obs, greedy)
    meta["ppo_config"] = config
    return policy, meta
