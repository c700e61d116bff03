"""The shaped per-step reward. Its episode sum ranks policies as the grader
(:mod:`gymjax.grading`) does::

    slo = sum_t w_t * (met_t - MISS_PENALTY * (finished_t - met_t + dropped_t)) / (mean(w) * reward_norm_rps * dt_s)
    Qs  = 1 - clip(quality_cost / MAX_QUALITY_LOSS, 0, 1)                  (the grader's quality term)
    r   = slo * (QUALITY_BASE + QUALITY_WEIGHT * Qs)   (when slo > 0; slo itself otherwise)
          - w_memory * max(kv_occupancy - KV_PRESSURE_THRESHOLD, 0) / KV_PRESSURE_SPAN
          - w_preempt * preemptions / (reward_norm_rps * dt_s)

``met``/``finished``/``dropped`` are this interval's per-tenant request counts, ``w`` the tenants'
priorities; the SLO term is about 1 per step when every request of a mean-load interval meets its SLO.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.types import EnvParams, Plan, StepStats

F32 = jnp.float32

MAX_QUALITY_LOSS = 0.03  # quality loss per token at which the quality term is 0 (the grader's too)
MISS_PENALTY = 0.5  # a request that missed its SLO or was dropped costs half a met one
QUALITY_BASE = 0.9  # share of the SLO term kept at the worst quality ...
QUALITY_WEIGHT = 0.1  # ... the rest scales with the quality term Qs
KV_PRESSURE_THRESHOLD = 0.9  # KV occupancy above this is penalised ...
KV_PRESSURE_SPAN = 0.1  # ... linearly, 1 x w_memory at a full pool


def quality_term(quality_cost) -> jax.Array:
    """Qs = 1 - clip(quality cost per token / MAX_QUALITY_LOSS, 0, 1): 1 for BF16, 0 at the max loss."""
    return 1.0 - jnp.clip(quality_cost / MAX_QUALITY_LOSS, 0.0, 1.0)


def reward(params: EnvParams, ss: StepStats, plan: Plan, kv_occupancy) -> jax.Array:
    """The reward (float32) of an interval with counters ``ss`` under ``plan`` that ended at
    ``kv_occupancy`` (fraction of the KV pool in use)."""
    w = params.priority
    norm = jnp.mean(w) * params.reward_norm_rps * params.dt_s
    met = ss.slo_met.astype(F32)
    missed = (ss.finished - ss.slo_met).astype(F32) + ss.dropped.astype(F32)
    slo = jnp.sum(w * (met - MISS_PENALTY * missed)) / norm
    quality = QUALITY_BASE + QUALITY_WEIGHT * quality_term(plan.quality_cost)
    pressure = jnp.maximum(kv_occupancy - KV_PRESSURE_THRESHOLD, 0.0) / KV_PRESSURE_SPAN
    preempt = ss.preemptions / (params.reward_norm_rps * params.dt_s)
    return (slo * jnp.where(slo > 0, quality, 1.0) - params.w_memory * pressure - params.w_preempt * preempt).astype(F32)
