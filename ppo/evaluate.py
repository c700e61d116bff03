"""Scoreboard evaluation: many policies x many seeds, one full episode each, in one XLA program.

Every policy is a gymjax-style ``policy(key, obs, state) -> flat int32[n_knobs]``. The episodes are
``gymjax.grading.rollout_episode`` on ``gymjax.grading.eval_keys`` — exactly what
``gymjax.evaluate(env, params, policy, n_seeds=n)`` runs for one policy (a test checks the numbers
agree) — but all policies are compiled into one program (``lax.switch`` over the policy index,
``vmap`` over policies and seeds), so a scoreboard costs one compilation of the env step instead
of one per policy. Seeds are common random numbers: every policy meets the same arrivals on seed s,
so paired differences (:func:`paired_diff`) have a tighter CI than the separate means.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.grading import mean_ci95


def make_evaluator(env, params, policies: list[Callable], n_steps: int | None = None):
    """Jitted ``run(keys[S]) -> dict(score=f32[P, S], reward_sum=f32[P, S], goodput=..., cost=..., quality=...)``."""
    from gymjax.grading import grade_components, rollout_episode

    n_steps = int(params.horizon_steps) if n_steps is None else int(n_steps)
    branches = [lambda k, o, s, f=f: jnp.asarray(f(k, o, s), jnp.int32) for f in policies]

    def episode(p_idx, key):
        policy = lambda k, o, s: jax.lax.switch(p_idx, branches, k, o, s)  # noqa: E731
        ep, rewards = rollout_episode(env, params, policy, key, n_steps)
        comp = grade_components(params, ep)
        return dict(score=comp["score"], reward_sum=rewards.sum(), goodput=comp["goodput"], cost=comp["cost"], quality=comp["quality"])

    run = jax.vmap(jax.vmap(episode, (None, 0)), (0, None))
    return jax.jit(lambda keys: run(jnp.arange(len(policies)), keys))


def scoreboard(env, params, policies: dict[str, Callable], n_seeds: int = 16) -> dict:
    """Evaluate named policies on the standard evaluation seeds ``gymjax.grading.eval_keys(n_seeds)``
    (disjoint from every training seed).

    Returns ``{name: {"scores", "returns", "mean", "ci95", "return_mean", "return_ci95", "goodput", "cost", "quality"}}``.
    """
    from gymjax.grading import eval_keys

    names = list(policies)
    out = jax.device_get(make_evaluator(env, params, [policies[n] for n in names])(eval_keys(n_seeds)))
    board = {}
    for i, n in enumerate(names):
        s, r = np.asarray(out["score"][i]), np.asarray(out["reward_sum"][i])
        m, c = mean_ci95(s)
        rm, rc = mean_ci95(r)
        board[n] = dict(
            scores=s.tolist(),
            returns=r.tolist(),
            mean=m,
            ci95=c,
            return_mean=rm,
            return_ci95=rc,
            **{k: float(np.mean(out[k][i])) for k in ("goodput", "cost", "quality")},
        )
    return board


def paired_diff(board: dict, a: str, b: str, key: str = "scores") -> tuple[float, float]:
    """Mean and 95 % CI of ``a - b`` over the common seeds (paired)."""
    return mean_ci95(np.asarray(board[a][key]) - np.asarray(board[b][key]))


def baseline_policies(env, params) -> dict[str, Callable]:
    """The gymjax baselines that exist for this env (best-constant needs a tuning; oracle known phases)."""
    from gymjax import baselines

    names = baselines.available(env) if hasattr(baselines, "available") else list(baselines.POLICIES)
    out = {}
    for n in names:
        try:
            out[n] = baselines.POLICIES[n](env, params)
        except KeyError:
            continue  # not tuned for this task
    return out
