"""Counters: the per-interval :class:`~gymjax.types.StepStats` (reset every step) and the per-episode
:class:`~gymjax.types.EpisodeStats` the grader reads (their sums)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.physics.numerics import hist_quantile
from gymjax.types import REQUEST_LOG_COLUMNS, EnvConfig, EnvParams, EpisodeStats, Plan, StepStats

F32 = jnp.float32
I32 = jnp.int32
SECONDS_PER_HOUR = 3600.0


def empty_step_stats(cfg: EnvConfig) -> StepStats:
    """All-zero interval counters ([H] histograms, [T] per-tenant counts)."""
    T, H = cfg.n_tenants, cfg.n_hist
    return StepStats(
        hist_ttft=jnp.zeros(H, F32), hist_itl=jnp.zeros(H, F32), hist_tpot=jnp.zeros(H, F32), hist_e2e=jnp.zeros(H, F32),
        output_tokens=jnp.float32(0), prefill_tokens=jnp.float32(0), finished=jnp.zeros(T, I32),
        slo_met=jnp.zeros(T, I32), dropped=jnp.zeros(T, I32), arrived=jnp.zeros(T, I32),
        preemptions=jnp.int32(0), recomputed_tokens=jnp.float32(0), kv_blocks_used_max=jnp.float32(0),
        requests=jnp.zeros((cfg.request_log, len(REQUEST_LOG_COLUMNS)), F32), requests_logged=jnp.int32(0),
    )


def empty_episode(cfg: EnvConfig) -> EpisodeStats:
    """All-zero episode counters."""
    T, H = cfg.n_tenants, cfg.n_hist
    return EpisodeStats(
        arrived=jnp.zeros(T, I32), finished=jnp.zeros(T, I32), slo_met=jnp.zeros(T, I32), dropped=jnp.zeros(T, I32),
        output_tokens=jnp.float32(0), prefill_tokens=jnp.float32(0), recomputed_tokens=jnp.float32(0),
        preemptions=jnp.int32(0), cost_usd=jnp.float32(0), quality_loss_tokens=jnp.float32(0),
        invalid_steps=jnp.int32(0), steps=jnp.int32(0), reward_sum=jnp.float32(0),
        hist_ttft=jnp.zeros(H, F32), hist_tpot=jnp.zeros(H, F32), hist_e2e=jnp.zeros(H, F32), hist_itl=jnp.zeros(H, F32),
    )


def interval_cost_usd(params: EnvParams) -> jax.Array:
    """Dollars one control interval of the whole cluster costs: n_gpus x $/GPU-hour x dt_s / 3600."""
    return params.n_gpus * params.price_per_gpu_hour * params.dt_s / SECONDS_PER_HOUR


def add_interval(ep: EpisodeStats, ss: StepStats, plan: Plan, cost_usd, reward) -> EpisodeStats:
    """The episode counters after one more interval with counters ``ss`` under ``plan``, costing
    ``cost_usd`` dollars and earning ``reward``."""
    return ep.replace(
        arrived=ep.arrived + ss.arrived, finished=ep.finished + ss.finished, slo_met=ep.slo_met + ss.slo_met,
        dropped=ep.dropped + ss.dropped, output_tokens=ep.output_tokens + ss.output_tokens,
        prefill_tokens=ep.prefill_tokens + ss.prefill_tokens, recomputed_tokens=ep.recomputed_tokens + ss.recomputed_tokens,
        preemptions=ep.preemptions + ss.preemptions, cost_usd=ep.cost_usd + cost_usd,
        quality_loss_tokens=ep.quality_loss_tokens + ss.output_tokens * plan.quality_cost,
        invalid_steps=ep.invalid_steps + (~plan.serving_ok).astype(I32), steps=ep.steps + 1,
        reward_sum=ep.reward_sum + reward,
        hist_ttft=ep.hist_ttft + ss.hist_ttft, hist_tpot=ep.hist_tpot + ss.hist_tpot, hist_e2e=ep.hist_e2e + ss.hist_e2e,
        hist_itl=ep.hist_itl + ss.hist_itl,
    )


LATENCIES = ("ttft", "tpot", "e2e", "itl")


def episode_latency_percentiles(ep: EpisodeStats, qs=(0.5, 0.9, 0.99)) -> dict[str, jax.Array]:
    """Whole-episode latency percentiles (s) from the episode's histograms: ``{"ttft_p50_s": ...,
    "tpot_p99_s": ..., "e2e_p90_s": ..., "itl_p50_s": ...}`` for each of :data:`LATENCIES` and
    ``qs``. Each is within half a histogram bin (±1.8 % at the default ``n_hist``) of the exact
    percentile of the requests (tokens, for ITL) the episode finished; 0 when there were none."""
    return {f"{name}_p{round(q * 100)}_s": hist_quantile(getattr(ep, f"hist_{name}"), q) for name in LATENCIES for q in qs}
