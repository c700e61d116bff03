"""The evaluator: many policies x many evaluation seeds, one full episode each, in one XLA program.

Every policy is a ``policy(key, obs, state) -> action``. Each episode is :func:`gymjax.rollout.rollout`
on an evaluation key (:func:`gymjax.grading.eval_keys`: disjoint from every training and tuning seed)
and is graded by :func:`gymjax.grading.grade_components` from the env's own episode record. All
policies are compiled into one program (``lax.switch`` over the policy index, ``vmap`` over policies
and seeds), so a scoreboard costs one compilation of the env step, not one per policy. Seeds are
common random numbers: every policy meets the same arrivals on seed s, so a paired difference
(:func:`paired_diff`) has a tighter CI than the two separate means.

:func:`evaluate` (``gymjax.evaluate``) is the one-policy case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gymjax import baselines
from gymjax.grading import eval_keys, grade_components, mean_ci95, summarize
from gymjax.rollout import Policy, rollout
from gymjax.types import EnvParams

COMPONENTS = ("goodput", "cost", "quality", "complete")


def _as_int32(action):
    """A flat action as int32 (so every ``lax.switch`` branch returns one dtype); a typed action as is."""
    return jnp.asarray(action, jnp.int32) if isinstance(action, jax.Array | np.ndarray) else action


def make_evaluator(env, policies: Sequence[Policy], n_steps: int, params: EnvParams | None = None) -> Callable:
    """Jitted ``run(params, keys[S]) -> dict of [P, S] arrays``: per policy and key, one ``n_steps``
    episode; ``score``, ``goodput``, ``cost``, ``quality``, ``complete`` (:func:`grade_components`),
    ``reward_sum`` (the shaped reward summed over the episode) and ``episode`` (its EpisodeStats).

    With ``params`` given they are compiled into the program as constants and ``run(keys[S])`` takes
    the keys alone (the scoreboard's program). XLA folds those constants, so a float32 component can
    differ in its last bit from the program that takes ``params`` as an argument (``evaluate``'s);
    each form reproduces its own numbers bit for bit.
    """
    if len(policies) == 1:
        branches = list(policies)  # one policy: called directly, its action as it returns it
    else:
        branches = [lambda k, o, s, f=f: _as_int32(f(k, o, s)) for f in policies]

    def episode(params, p_idx, key):
        policy = lambda k, o, s: jax.lax.switch(p_idx, branches, k, o, s)  # noqa: E731
        final, rewards = rollout(env, params, policy, key, n_steps)
        return {**grade_components(params, final.episode), "reward_sum": rewards.sum(), "episode": final.episode}

    per_policy = jax.vmap(jax.vmap(episode, (None, None, 0)), (None, 0, None))
    n = len(branches)
    if params is None:
        return jax.jit(lambda params, keys: per_policy(params, jnp.arange(n), keys))
    return jax.jit(lambda keys: per_policy(params, jnp.arange(n), keys))


def run_policies(env, params: EnvParams, policies: Sequence[Policy], keys: jax.Array, n_steps: int | None = None,
                 bake_params: bool = False) -> dict:
    """Host arrays ``[P, S]`` of :func:`make_evaluator` for ``keys`` (``n_steps`` default: the horizon;
    ``bake_params``: compile ``params`` in as constants)."""
    n_steps = int(params.horizon_steps) if n_steps is None else int(n_steps)
    if bake_params:
        return jax.device_get(make_evaluator(env, policies, n_steps, params)(keys))
    return jax.device_get(make_evaluator(env, policies, n_steps)(params, keys))


def scoreboard(env, params: EnvParams, policies: dict[str, Policy], n_seeds: int = 16, n_steps: int | None = None,
               bake_params: bool = True) -> dict:
    """Score named policies on the standard evaluation seeds ``eval_keys(n_seeds)``, all in one program
    (``bake_params``: with ``params`` compiled in, as the PPO scoreboards have always been run; without,
    every policy's numbers are :func:`evaluate`'s bit for bit).

    Returns ``{name: {"scores", "returns", "mean", "ci95", "return_mean", "return_ci95", "goodput",
    "cost", "quality", "complete"}}`` (per-seed lists, means and 95 % half-widths).
    """
    names = list(policies)
    out = run_policies(env, params, [policies[n] for n in names], eval_keys(n_seeds), n_steps, bake_params)
    board = {}
    for i, n in enumerate(names):
        s, r = np.asarray(out["score"][i]), np.asarray(out["reward_sum"][i])
        m, c = mean_ci95(s)
        rm, rc = mean_ci95(r)
        board[n] = dict(scores=s.tolist(), returns=r.tolist(), mean=m, ci95=c, return_mean=rm, return_ci95=rc,
                        **{k: float(np.mean(out[k][i])) for k in COMPONENTS})
    return board


def evaluate(env, params: EnvParams, policy: Policy, key: jax.Array | None = None, n_seeds: int = 8,
             n_steps: int | None = None) -> dict:
    """Run ``policy`` for one episode on each of ``n_seeds`` evaluation seeds (the one-policy case of
    :func:`make_evaluator`).

    ``key=None`` uses the standard evaluation seeds (:func:`gymjax.grading.eval_keys`), else
    ``split(key, n_seeds)``. Returns per-seed ``scores`` and ``reward_sums`` (NumPy), ``mean``,
    ``ci95``, ``n`` and the mean score components (``goodput``, ``cost``, ``quality``, ``complete``).
    """
    keys = eval_keys(n_seeds) if key is None else jax.random.split(key, n_seeds)
    out = run_policies(env, params, [policy], keys, n_steps)
    scores = np.asarray(out["score"][0])
    return {**summarize(scores), "scores": scores, "reward_sums": np.asarray(out["reward_sum"][0]),
            **{k: float(np.mean(out[k][0])) for k in COMPONENTS}}


def paired_diff(board: dict, a: str, b: str, key: str = "scores") -> tuple[float, float]:
    """Mean and 95 % half-width of ``board[a][key] - board[b][key]`` over the common seeds (paired)."""
    return mean_ci95(np.asarray(board[a][key]) - np.asarray(board[b][key]))


def baseline_policies(env, params: EnvParams, tuned: dict | None = None) -> dict[str, Policy]:
    """The baselines that exist for this env (:func:`gymjax.baselines.available`: best-constant and the
    oracle only where the task has a tuning; ``tuned`` gives one explicitly, default
    :func:`gymjax.tuned.tuning_for`)."""
    tuned_kw = {} if tuned is None else {"tuned": tuned}
    return {n: baselines.POLICIES[n](env, params, **(tuned_kw if n in ("best-constant", "oracle") else {}))
            for n in baselines.available(env, tuned)}
