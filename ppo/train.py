"""Fused PPO: ``make_train(config) -> train(key)``, all of training as one XLA program.

    train = jax.jit(ppo.make_train(PPOConfig(task="static")))
    out = train(jax.random.PRNGKey(0))              # out.runner_state, out.metrics ([num_updates] each)
    outs = jax.jit(jax.vmap(ppo.make_train(cfg)))(jax.random.split(key, 4))   # 4 seeds at once

Structure (every loop is a ``lax.scan``)::

    train(key)
      scan over chunks (config.num_chunks)                  -> optional progress callback per chunk
        scan over updates (config.updates_per_chunk)
          scan over env steps (config.num_steps)            -> rollout of num_envs envs
          GAE (reverse scan), observation statistics update
          scan over epochs -> scan over minibatches         -> clipped PPO loss, Adam step

Truncation. gymjax episodes never terminate; they are *truncated* at the horizon and the env
auto-resets, so ``step`` returns the first observation of the next episode. The correct target at a
truncation bootstraps from the value of the final observation of the episode that just ended:
``delta_t = r_t + gamma * V(final_obs_t) - V(obs_t)``, and the GAE trace is cut there (the next
step belongs to another episode). We take that final observation from ``info["final_obs"]`` when
the env provides it, else rebuild it exactly from ``info["metrics"]`` and the action in force
(see :func:`final_observation`; a test checks the rebuild equals the env's own observation).
``terminated`` (never set by gymjax, kept for generality) zeroes the bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

import gymjax
from gymjax.grading import grade
from gymjax.vector import cluster_sharding, constrain, replicated
from ppo.config import PPOConfig
from ppo.networks import (
    ActorCritic,
    ObsNorm,
    action_reader,
    default_logit_prior,
    entropy,
    hold_gate_mask,
    log_prob,
    obs_norm_apply,
    obs_norm_init,
    obs_norm_update,
    sample_action,
)


class Transition(NamedTuple):
    """One env step of the rollout, for all envs (leading axis ``num_envs``; ``[T, N, ...]`` stacked)."""

    obs: jax.Array  # f32[N, obs_dim] raw observation the action was chosen on
    action: jax.Array  # i32[N, n_knobs]
    log_prob: jax.Array  # f32[N]
    value: jax.Array  # f32[N]
    reward: jax.Array  # f32[N] raw env reward
    terminated: jax.Array  # bool[N]
    truncated: jax.Array  # bool[N]
    next_obs: jax.Array  # f32[N, obs_dim] the true next observation (pre-reset at a truncation)
    episode_return: jax.Array  # f32[N] return of the episode that ended (valid where truncated)
    episode_score: jax.Array  # f32[N] grader score of the episode that ended (valid where truncated)
    full_episode: jax.Array  # bool[N] an episode of the full horizon ended here (metrics count these)


class RunnerState(NamedTuple):
    """The training carry."""

    train_state: TrainState
    obs_norm: ObsNorm
    env_state: Any
    obs: jax.Array  # f32[N, obs_dim] current raw observations
    key: jax.Array
    update: jax.Array  # i32: updates done
    last_return: jax.Array  # f32: mean return of the episodes that ended most recently
    last_score: jax.Array  # f32: their mean grader score


class TrainOutput(NamedTuple):
    runner_state: RunnerState
    metrics: dict[str, jax.Array]  # each f32[num_updates]


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation with terminated and truncated kept apart.

    All inputs are time-major ``[T, ...]``. ``next_values[t]`` is V of the true next observation of
    step t (at a truncation: the final observation of the episode, not the reset one).

    - ``terminated[t]``: the episode ended in an absorbing state -> no bootstrap, trace cut.
    - ``truncated[t]``: the episode was cut by a time limit -> bootstrap from ``next_values[t]``,
      trace cut (step t+1 belongs to the next episode).

    Returns ``(advantages, value_targets)``, both ``[T, ...]``.
    """
    not_term = 1.0 - terminated.astype(jnp.float32)
    cont = not_term * (1.0 - truncated.astype(jnp.float32))
    deltas = rewards + gamma * not_term * next_values - values

    def back(acc, x):
        delta, c = x
        acc = delta + gamma * lam * c * acc
        return acc, acc

    _, adv = jax.lax.scan(back, jnp.zeros_like(values[0]), (deltas, cont), reverse=True)
    return adv, adv + values


def final_observation(env, info: dict, action: jax.Array) -> jax.Array:
    """The observation that ends this step, before any auto-reset (one env, unbatched).

    Uses ``info["final_obs"]`` when the env provides it; otherwise rebuilds it from the interval's
    metrics and the action in force, exactly as ``ServingEnv.step`` builds its observation.
    """
    if "final_obs" in info:
        return info["final_obs"]
    return env.flat_obs(info["metrics"], env.decode_action(action))


def make_env(config: PPOConfig):
    """``(env, params)`` of ``config.task`` with ``config.env_kwargs``."""
    return gymjax.make(config.task, **config.env_kwargs)


def make_network(config: PPOConfig, env, env_params) -> ActorCritic:
    """The actor-critic for ``env``'s action space, its initial policy centred on the vLLM default."""
    nvec = tuple(int(n) for n in env.action_space(env_params).nvec)
    slow = [k.slow for k in env.knobs]
    prior = default_logit_prior(nvec, jax.device_get(env.encode_action(env.default_action())), slow, config.init_default_logit, 0.0)
    stick = tuple(config.init_stick_slow if s else config.init_stick_fast for s in slow)
    return ActorCritic(nvec=nvec, hidden=config.hidden, activation=config.activation, logit_prior=prior, stick_init=stick,
                       hold_gate=hold_gate_mask(config.slow_hold_gate))


def make_train(
    config: PPOConfig,
    env=None,
    env_params=None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    shard: bool | None = None,
) -> Callable[[jax.Array], TrainOutput]:
    """Build ``train(key) -> TrainOutput`` for ``config`` (pure; ``jit``/``vmap`` it).

    ``env``/``env_params`` default to ``gymjax.make(config.task, **config.env_kwargs)``.
    ``progress(update, metrics)``, if given, is called on the host once per chunk
    (``config.progress_reports`` times per run, via ``jax.debug.callback``) with the number of
    updates done and that update's scalar metrics; under ``vmap`` it is called once per seed.

    ``shard`` (``None``: auto) splits the env axis of training over every device when there are
    several: env states, observations, the rollout and each minibatch are sharded over a 1-D mesh
    (``gymjax.vector.cluster_sharding``), parameters and optimiser state are replicated, and XLA
    all-reduces the gradients. ``False`` turns it off; ``True`` raises unless ``num_envs`` is a
    multiple of the device count. Same key -> the same run as unsharded up to float summation order
    (docs/scaling.md).
    """
    if env is None:
        env, env_params = make_env(config)
    elif env_params is None:
        env_params = env.default_params
    network = make_network(config, env, env_params)
    reader = action_reader(env, config.free_first_action)
    obs_dim = int(env.obs_dim)
    horizon = int(env_params.horizon_steps)
    N, T = config.num_envs, config.num_steps
    n_mb = config.num_minibatches
    mb_size = config.batch_size // n_mb

    envs_sh = cluster_sharding(N, shard=shard)  # [N, ...] leaves: env states, observations, per-env keys
    if envs_sh is None:
        steps_sh = mb_sh = rep_sh = None
    else:
        steps_sh = cluster_sharding(N, dim=1)  # [T, N, ...]: the rollout
        mb_sh = cluster_sharding(mb_size, dim=1, shard=None)  # [n_mb, mb_size, ...]; left to XLA if it does not divide
        rep_sh = replicated(envs_sh)

    norm_on = config.normalize_obs

    total_grad_steps = config.num_updates * config.update_epochs * n_mb
    lr = optax.linear_schedule(config.lr, 0.0, total_grad_steps) if config.anneal_lr else config.lr
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))

    v_reset = jax.vmap(env.reset, (0, None))
    v_step = jax.vmap(env.step, (0, 0, 0, None))
    v_final = jax.vmap(lambda info, a: final_observation(env, info, a))
    v_grade = jax.vmap(grade, (None, 0))

    def desync(key, env_state):
        """Start env i at step k_i ~ U[0, horizon) of its first episode, so the envs do not all reach
        the horizon (and reset) at the same update. Only that first, shorter episode is affected;
        it is left out of the episode metrics (its ``episode.steps < horizon``)."""
        k = jax.random.randint(key, (N,), 0, horizon).astype(env_state.step.dtype)
        return env_state.replace(step=k)

    def env_step(rs: RunnerState, _):
        key, k_act, k_env = jax.random.split(rs.key, 3)
        logits, value = network.apply(rs.train_state.params, obs_norm_apply(rs.obs_norm, rs.obs, norm_on), reader.current(rs.obs))
        action = sample_action(k_act, logits)
        keys = constrain(jax.random.split(k_env, N), envs_sh)
        obs, env_state, reward, term, trunc, info = v_step(keys, rs.env_state, action, env_params)
        obs, env_state = constrain((obs, env_state), envs_sh)
        next_obs = jnp.where(trunc[:, None], v_final(info, action), obs)
        tr = Transition(
            obs=rs.obs,
            action=action,
            log_prob=log_prob(logits, action),
            value=value,
            reward=reward,
            terminated=term,
            truncated=trunc,
            next_obs=next_obs,
            episode_return=info["episode"].reward_sum,
            episode_score=v_grade(env_params, info["episode"]),
            full_episode=trunc & (info["episode"].steps >= horizon),
        )
        return rs._replace(env_state=env_state, obs=obs, key=key), tr

    def loss_fn(params, obs_norm, batch, adv, targets):
        logits, value = network.apply(params, obs_norm_apply(obs_norm, batch.obs, norm_on), reader.current(batch.obs))
        logp = log_prob(logits, batch.action)
        ratio = jnp.exp(logp - batch.log_prob)
        adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = -jnp.minimum(ratio * adv_n, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv_n).mean()
        v_clip = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
        v_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clip - targets) ** 2).mean()
        ent = entropy(logits).mean()
        loss = pg + config.vf_coef * v_loss - config.ent_coef * ent
        aux = dict(
            pg_loss=pg,
            v_loss=v_loss,
            entropy=ent,
            approx_kl=((ratio - 1) - (logp - batch.log_prob)).mean(),
            clip_frac=(jnp.abs(ratio - 1) > config.clip_eps).mean(),
        )
        return loss, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(rs: RunnerState, _):
        rs, traj = jax.lax.scan(env_step, rs, None, T)
        traj = constrain(traj, steps_sh)
        ts, norm = constrain((rs.train_state, rs.obs_norm), rep_sh)

        # advantages: rewards scaled, values of the true next observations in one batched pass
        _, next_values = network.apply(ts.params, obs_norm_apply(norm, traj.next_obs, norm_on))
        term = traj.terminated if config.bootstrap_truncation else traj.terminated | traj.truncated
        adv, targets = gae(
            traj.reward * config.reward_scale, traj.value, next_values, term, traj.truncated, config.gamma, config.gae_lambda
        )

        flat = lambda x: x.reshape((T * N,) + x.shape[2:])  # noqa: E731
        data = (jax.tree.map(flat, traj), flat(adv), flat(targets))

        def epoch(carry, _):
            ts, key = carry
            key, k_perm = jax.random.split(key)
            perm = jax.random.permutation(k_perm, T * N)
            mbs = constrain(jax.tree.map(lambda x: x[perm].reshape((n_mb, mb_size) + x.shape[1:]), data), mb_sh)

            def minibatch(ts, mb):
                batch, a, t = mb
                (_, aux), grads = grad_fn(ts.params, norm, batch, a, t)
                return ts.apply_gradients(grads=grads), aux

            ts, aux = jax.lax.scan(minibatch, ts, mbs)
            return (ts, key), aux

        key, k_epochs = jax.random.split(rs.key)
        (ts, _), aux = jax.lax.scan(epoch, (ts, k_epochs), None, config.update_epochs)

        # observation statistics: updated after the rollout, so a rollout and its update share one normaliser
        if norm_on:
            norm = obs_norm_update(norm, traj.obs)

        n_done = traj.full_episode.sum()
        done_w = traj.full_episode.astype(jnp.float32)
        ret = jnp.where(n_done > 0, (traj.episode_return * done_w).sum() / jnp.maximum(n_done, 1), rs.last_return)
        score = jnp.where(n_done > 0, (traj.episode_score * done_w).sum() / jnp.maximum(n_done, 1), rs.last_score)
        var_t = targets.var()
        metrics = dict(
            reward_mean=traj.reward.mean(),
            episode_return=ret,
            episode_score=score,
            episodes=n_done.astype(jnp.float32),
            value_explained_var=1.0 - (targets - traj.value).var() / jnp.maximum(var_t, 1e-8),
            **jax.tree.map(jnp.mean, aux),
        )
        rs = rs._replace(train_state=ts, obs_norm=norm, key=key, update=rs.update + 1, last_return=ret, last_score=score)
        return rs, metrics

    def chunk(rs: RunnerState, _):
        rs, metrics = jax.lax.scan(update, rs, None, config.updates_per_chunk)
        if progress is not None:
            last = jax.tree.map(lambda x: x[-1], metrics)
            jax.debug.callback(lambda u, m: progress(int(u), {k: float(v) for k, v in m.items()}), rs.update, last)
        return rs, metrics

    def train(key: jax.Array) -> TrainOutput:
        key, k_init, k_reset, k_desync = jax.random.split(key, 4)
        net_params = network.init(k_init, jnp.zeros((obs_dim,), jnp.float32))
        ts = TrainState.create(apply_fn=network.apply, params=net_params, tx=tx)
        obs, env_state = v_reset(constrain(jax.random.split(k_reset, N), envs_sh), env_params)
        if config.desync_envs and horizon > 1:
            env_state = desync(k_desync, env_state)
        obs, env_state = constrain((obs, env_state), envs_sh)
        rs = RunnerState(
            train_state=ts,
            obs_norm=obs_norm_init(obs_dim),
            env_state=env_state,
            obs=obs,
            key=key,
            update=jnp.int32(0),
            last_return=jnp.float32(0.0),
            last_score=jnp.float32(0.0),
        )
        rs, metrics = jax.lax.scan(chunk, rs, None, config.num_chunks)
        metrics = jax.tree.map(lambda x: x.reshape((config.num_updates,) + x.shape[2:]), metrics)
        return TrainOutput(runner_state=rs, metrics=metrics)

    return train
