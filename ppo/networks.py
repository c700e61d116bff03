"""Actor-critic network, the factorised MultiDiscrete action head and observation normalisation.

Action encoding: gymjax's learner action is ``MultiDiscrete(nvec)`` — one index per knob into that
knob's levels (``env.knobs[i].levels``). The actor emits one categorical per knob; the joint
policy is their product, so ``log pi(a|s) = sum_i log pi_i(a_i|s)`` and the entropy is the sum of
the heads' entropies. The heads are padded to ``max(nvec)`` choices with a large negative logit so
all six are one ``[..., n_knobs, max_n]`` tensor (one sample, one log-softmax).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e9  # logit of a padded (impossible) choice: exp underflows to exactly 0


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs on the (normalised) flat observation.

    ``__call__(obs[..., obs_dim]) -> (logits[..., n_knobs, max_n], value[...])``.
    """

    nvec: tuple[int, ...]
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    logit_prior: tuple[float, ...] = ()  # initial bias of the actor's output, flattened [n_knobs * max_n] (default 0)
    stick_init: tuple[float, ...] = ()  # initial per-knob logit bonus for keeping the level in force (default 0)
    hold_gate: tuple[bool, ...] = ()  # per knob: a hold-or-change gate instead of the additive hold bonus (see below)

    @nn.compact
    def __call__(self, obs: jax.Array, current: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``obs``: normalised observation ``[..., obs_dim]``; ``current``: the level index of each
        knob in force ``int32[..., n_knobs]`` (:meth:`ActionReader.current` of the raw obs)."""
        act = nn.tanh if self.activation == "tanh" else nn.relu
        ortho = nn.initializers.orthogonal
        zeros = nn.initializers.zeros
        n_knobs, max_n = len(self.nvec), max(self.nvec)

        a = obs
        for h in self.hidden:
            a = act(nn.Dense(h, kernel_init=ortho(np.sqrt(2)), bias_init=zeros)(a))
        # small init: the first policy is near-uniform over each knob's levels
        prior = np.asarray(self.logit_prior, np.float32) if self.logit_prior else np.zeros(n_knobs * max_n, np.float32)
        logits = nn.Dense(
            n_knobs * max_n, kernel_init=ortho(0.01), bias_init=lambda k, shape, dtype=jnp.float32: jnp.asarray(prior, dtype)
        )(a)
        logits = logits.reshape(*obs.shape[:-1], n_knobs, max_n) + head_mask(self.nvec)
        stick0 = np.asarray(self.stick_init, np.float32) if self.stick_init else np.zeros(n_knobs, np.float32)
        stick = self.param("stick", lambda k: jnp.asarray(stick0))  # learned: how strongly each knob holds its level
        gated = any(self.hold_gate)
        if gated:  # made whether or not `current` is given, so that init creates it
            hold = nn.Dense(n_knobs, kernel_init=ortho(0.01), bias_init=zeros, name="hold_gate")(a) + stick  # [..., K]
        if current is not None:
            onehot = jax.nn.one_hot(current, max_n, dtype=logits.dtype)
            additive = logits + stick[:, None] * onehot
            if gated:
                # Gated knob: P(keep the level in force) = sigmoid(hold); on a change, the new level is drawn from
                # the level logits over the other levels. Keeping the level then trains only the gate, never the
                # level logits, so a tier that is merely held (a change costs a reload) does not gain preference
                # as the tier to choose. Nothing in force (current -1, the free first action): the level logits.
                others = jax.nn.log_softmax(jnp.where(onehot > 0, NEG, logits), axis=-1)
                gate_logp = jnp.where(onehot > 0, jax.nn.log_sigmoid(hold)[..., None], jax.nn.log_sigmoid(-hold)[..., None] + others)
                gate_logp = jnp.where((current >= 0)[..., None], gate_logp, logits)
                logits = jnp.where(jnp.asarray(self.hold_gate)[:, None], gate_logp, additive)
            else:
                logits = additive

        c = obs
        for h in self.hidden:
            c = act(nn.Dense(h, kernel_init=ortho(np.sqrt(2)), bias_init=zeros)(c))
        value = nn.Dense(1, kernel_init=ortho(1.0), bias_init=zeros)(c)[..., 0]
        return logits, value


def hold_gate_mask(enabled: bool) -> tuple[bool, ...]:
    """:attr:`ActorCritic.hold_gate` for ``PPOConfig.slow_hold_gate``: the slow knobs (a reload or drain per
    change: quantization tier, prefill/decode split) when enabled, no knob otherwise."""
    from gymjax.spaces import knob_table

    return tuple(bool(enabled and k.slow) for k in knob_table(1))


def head_mask(nvec: tuple[int, ...]) -> jax.Array:
    """``[n_knobs, max_n]``: 0 for the choices a knob has, ``NEG`` for the padding."""
    max_n = max(nvec)
    return jnp.asarray(np.where(np.arange(max_n)[None, :] < np.asarray(nvec)[:, None], 0.0, NEG), jnp.float32)


class ActionReader(NamedTuple):
    """Reads the action in force back from a raw gymjax observation (which carries each knob's
    value normalised to [0, 1]): ``current(obs[..., obs_dim]) -> int32[..., n_knobs]`` level indices.

    At the first observation of an episode (``progress`` 0) nothing is deployed yet: the first
    action is the initial deployment and costs no reload, so ``current`` returns -1 for every knob
    there (no hold bonus; the one-hot of -1 is all zeros). ``progress_position`` -1 turns this off
    (policies saved before it existed)."""

    positions: tuple[int, ...]  # index of each knob's normalised value in the flat observation
    levels01: tuple[tuple[float, ...], ...]  # each knob's levels, normalised like the observation
    progress_position: int = -1  # index of ``progress`` in the flat observation

    def current(self, obs: jax.Array) -> jax.Array:
        max_n = max(len(lv) for lv in self.levels01)
        lv = jnp.asarray([list(x) + [1e3] * (max_n - len(x)) for x in self.levels01], jnp.float32)  # [K, M]
        v = obs[..., jnp.asarray(self.positions)]
        idx = jnp.argmin(jnp.abs(v[..., None] - lv), axis=-1).astype(jnp.int32)
        if self.progress_position >= 0:
            idx = jnp.where(obs[..., self.progress_position, None] <= 0.0, -1, idx)
        return idx

    def to_dict(self) -> dict:
        return {"positions": list(self.positions), "levels01": [list(x) for x in self.levels01],
                "progress_position": int(self.progress_position)}

    @classmethod
    def from_dict(cls, d: dict) -> ActionReader:
        return cls(tuple(int(i) for i in d["positions"]), tuple(tuple(float(v) for v in x) for x in d["levels01"]),
                   int(d.get("progress_position", -1)))


def action_reader(env, free_first_action: bool = False) -> ActionReader:
    """The :class:`ActionReader` of ``env``'s observation. ``free_first_action=True`` reads an
    episode's first observation as "nothing in force" (no hold bonus on the initial deployment);
    otherwise the reset observation's (default) action reads as in force."""
    from gymjax.physics.observation import knob_levels01, obs_layout

    layout = obs_layout(env.cfg, env.knobs)
    return ActionReader(
        positions=tuple(int(layout[f"action.{k.name}"]) for k in env.knobs),
        levels01=tuple(knob_levels01(k) for k in env.knobs),
        progress_position=int(layout["progress"]) if free_first_action else -1,
    )


def default_logit_prior(nvec: tuple[int, ...], default_index, slow, fast_logit: float, slow_logit: float) -> tuple[float, ...]:
    """Initial actor bias that centres exploration on a default action: ``+fast_logit`` on the
    default level of each fast knob, ``+slow_logit`` on that of each slow knob (a reload/drain per
    change), 0 elsewhere. Flattened ``[n_knobs * max_n]`` for :class:`ActorCritic`."""
    max_n = max(nvec)
    b = np.zeros((len(nvec), max_n), np.float32)
    for i, (d, s) in enumerate(zip(np.asarray(default_index).tolist(), slow, strict=False)):
        b[i, int(d)] = slow_logit if s else fast_logit
    return tuple(float(x) for x in b.reshape(-1))


def sample_action(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One index per knob: ``logits[..., K, M] -> int32[..., K]``."""
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def greedy_action(logits: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """Joint log-probability of a flat action (sum over the knob heads): ``[..., K, M], [..., K] -> [...]``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0].sum(-1)


def entropy(logits: jax.Array) -> jax.Array:
    """Joint entropy (sum of the heads'): ``[..., K, M] -> [...]``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -(jnp.exp(logp) * logp).sum((-1, -2))


class ObsNorm(NamedTuple):
    """Running mean/variance of observations (parallel-merge form); lives in the training carry."""

    mean: jax.Array  # f32[obs_dim]
    var: jax.Array  # f32[obs_dim]
    count: jax.Array  # f32 scalar: samples seen


def obs_norm_init(obs_dim: int) -> ObsNorm:
    return ObsNorm(jnp.zeros(obs_dim, jnp.float32), jnp.ones(obs_dim, jnp.float32), jnp.float32(1e-4))


def obs_norm_update(s: ObsNorm, batch: jax.Array) -> ObsNorm:
    """Merge the statistics of ``batch[..., obs_dim]`` (Chan et al.'s parallel variance)."""
    x = batch.reshape(-1, batch.shape[-1])
    n = jnp.float32(x.shape[0])
    b_mean = x.mean(0)
    b_var = x.var(0)
    tot = s.count + n
    delta = b_mean - s.mean
    mean = s.mean + delta * n / tot
    m2 = s.var * s.count + b_var * n + delta**2 * s.count * n / tot
    return ObsNorm(mean, m2 / tot, tot)


def obs_norm_apply(s: ObsNorm, obs: jax.Array, enabled: bool = True) -> jax.Array:
    """Standardise and clip to [-10, 10]; identity when ``enabled`` is False."""
    if not enabled:
        return obs
    return jnp.clip((obs - s.mean) / jnp.sqrt(s.var + 1e-8), -10.0, 10.0)
