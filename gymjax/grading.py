"""The episode grader, the evaluation seeds and the confidence intervals of a score.

The score of an episode is computed from the :class:`EpisodeStats` the environment accumulated in
its own state while it ran; nothing a client reports enters it.

    A  = sum_t w_t * slo_met_t / sum_t w_t * arrived_t        (priority-weighted SLO goodput share)
    C  = c_ref / (c_ref + cost_per_1k_tokens)                  (1 when free, 0.5 at the reference cost)
    Qs = 1 - clip(mean quality loss per token / 0.03, 0, 1)    (1 for BF16, 0 for INT4 throughout)
    F  = min(steps / horizon, 1)                               (an episode stopped early scores less)
    score = A * (0.8 + 0.1 * C + 0.1 * Qs) * F                 in [0, 1]

SLO-meeting goodput dominates (a request meets its SLO only if it finishes and meets both its
tenant's TTFT and TPOT targets; dropped, rejected and unfinished requests count as misses), then
cost and quality. Dropping traffic, idling or thrashing all drive ``A`` (and so the score) to 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.physics.reward import quality_term
from gymjax.types import EnvParams, EpisodeStats

F32 = jnp.float32

# evaluation seeds live far from any training seed: eval seed i uses fold_in(EVAL_BASE_KEY, i)
EVAL_SEED_BASE = 1_000_003


def grade_components(params: EnvParams, ep: EpisodeStats) -> dict:
    """The pieces of the score (all jax scalars): A, C, Qs, F and the score."""
    w = params.priority
    arrived = jnp.sum(w * ep.arrived)
    goodput = jnp.where(arrived > 0, jnp.sum(w * ep.slo_met) / jnp.maximum(arrived, 1e-9), 0.0)
    tokens = ep.output_tokens
    cost_1k = jnp.where(tokens > 0, ep.cost_usd / jnp.maximum(tokens, 1e-9) * 1000.0, jnp.inf)
    cost_score = jnp.where(tokens > 0, params.ref_cost_per_1k / (params.ref_cost_per_1k + cost_1k), 0.0)
    loss = jnp.where(tokens > 0, ep.quality_loss_tokens / jnp.maximum(tokens, 1e-9), 0.0)
    quality = quality_term(loss)  # the reward's quality term, of the episode's mean loss per token
    complete = jnp.clip(ep.steps / params.horizon_steps, 0.0, 1.0)
    score = goodput * (0.8 + 0.1 * cost_score + 0.1 * quality) * complete
    return {"goodput": goodput.astype(F32), "cost": cost_score.astype(F32), "quality": quality.astype(F32),
            "complete": complete.astype(F32), "score": jnp.clip(score, 0.0, 1.0).astype(F32)}


def grade(params: EnvParams, ep: EpisodeStats) -> jax.Array:
    """Episode score in [0, 1] (jittable, deterministic). See the module docstring for the formula."""
    return grade_components(params, ep)["score"]


def eval_keys(n_seeds: int, base: int = EVAL_SEED_BASE) -> jax.Array:
    """Evaluation keys, disjoint from training seeds by construction (fold_in of a fixed base)."""
    root = jax.random.PRNGKey(base)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n_seeds))


def summarize(scores) -> dict:
    """Mean and 95 % confidence half-width (Student t) of per-seed scores."""
    x = np.asarray(scores, np.float64)
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci95": 0.0, "n": n}
    # two-sided 95 % t quantiles for small n (n-1 degrees of freedom), normal beyond 30
    t = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 19: 2.093, 24: 2.064, 29: 2.045}
    df = n - 1
    q = t.get(df) or (t[max(k for k in t if k <= df)] if df < 30 else 1.96)
    return {"mean": mean, "ci95": float(q * x.std(ddof=1) / np.sqrt(n)), "n": n}


def mean_ci95(scores) -> tuple[float, float]:
    """``(mean, 95 % half-width)`` of :func:`summarize`."""
    s = summarize(scores)
    return s["mean"], s["ci95"]
