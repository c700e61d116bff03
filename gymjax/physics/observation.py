"""What the agent sees: the interval's named metrics (:func:`metrics`) and the learner's flat
observation (:func:`flat_obs`), laid out by ONE table.

The flat observation is, in order: the scalar fields of :data:`OBS_SCALARS`, each knob of the
action in force normalised to [0, 1] by its range (``action.<knob>``), then each field of
:data:`OBS_PER_TENANT` for every tenant. Every entry of the table names its metric, its transform
to [0, 1] and its scale; :func:`obs_layout` gives each entry's position, and :func:`read` inverts
the transform (the heuristic baseline and the PPO action reader use both, never positions of their
own).

Transforms (``x`` in the metric's unit):

- ``log``: log1p(max(x, 0)) / log1p(scale), clipped to [0, 1] (rates, counts, sizes);
- ``latency``: log10 of seconds from 1 ms (0) to 100 s (1), 0 when there is no sample;
- ``ratio``: x / scale (not clipped);
- ``clip_ratio``: x / scale clipped to [0, 1];
- ``clip``: x clipped to [0, 1];
- ``identity``: x (already in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.physics.accounting import interval_cost_usd
from gymjax.physics.numerics import hist_quantile
from gymjax.physics.queues import kv_blocks
from gymjax.presets import KV_BLOCK_TOKENS
from gymjax.spaces import Knob
from gymjax.types import EnvConfig, EnvParams, EnvState, Observation, Plan, ServeAction

F32 = jnp.float32

# --- units and caps of the metrics ----------------------------------------------------------------
BYTES_PER_GB = 1e9
TOKENS_PER_1K = 1000.0
COST_PER_1K_CAP_USD = 100.0  # $ per 1k output tokens reported when nothing (or almost nothing) was produced
MIN_TOKENS = 1e-6  # denominator floor of the cost per token

# --- scales of the flat observation (the value that maps to 1) ------------------------------------
RATE_SCALE_RPS = 200.0  # requests/s (arrivals, goodput)
THROUGHPUT_SCALE_TPS = 1e5  # output tokens/s
PREFILL_SCALE_TPS = 1e6  # prefill tokens/s
GPU_MEMORY_SCALE_GB = 141.0  # GB per GPU: the largest HBM of the presets (H200)
COST_SCALE_PER_1K_USD = COST_PER_1K_CAP_USD  # $ per 1k output tokens
COUNT_SCALE = 100.0  # preemptions or drops per interval
RECONFIG_SCALE_S = 10.0  # s of reload/drain left
LATENCY_FLOOR_S = 1e-3  # latency mapped to 0 ...
LATENCY_DECADES_BELOW_1S = 3.0  # ... = 10^-3 s
LATENCY_DECADES = 5.0  # 1 ms ... 100 s


def total_queue_capacity(cfg: EnvConfig) -> int:
    """Requests all tenants' queues can hold."""
    return cfg.queue_cap * cfg.n_tenants


def batch_slots(cfg: EnvConfig) -> int:
    """Running-batch slots."""
    return cfg.n_slots


def tenant_queue_capacity(cfg: EnvConfig) -> int:
    """Requests one tenant's queue can hold."""
    return cfg.queue_cap


@dataclass(frozen=True)
class ObsField:
    """One metric of the flat observation: its :class:`~gymjax.types.Observation` field, the
    transform to [0, 1], and the scale (a number, a function of the env's sizes, or None)."""

    name: str
    transform: str  # "log" | "latency" | "ratio" | "clip_ratio" | "clip" | "identity"
    scale: float | Callable[[EnvConfig], int] | None = None

    def scale_for(self, cfg: EnvConfig):
        return self.scale(cfg) if callable(self.scale) else self.scale


OBS_SCALARS: tuple[ObsField, ...] = (
    ObsField("queue_depth", "log", total_queue_capacity),
    ObsField("running", "ratio", batch_slots),
    ObsField("ttft_p50_s", "latency"),
    ObsField("ttft_p99_s", "latency"),
    ObsField("itl_p50_s", "latency"),
    ObsField("itl_p99_s", "latency"),
    ObsField("tpot_p50_s", "latency"),
    ObsField("tpot_p99_s", "latency"),
    ObsField("throughput_tps", "log", THROUGHPUT_SCALE_TPS),
    ObsField("prefill_tps", "log", PREFILL_SCALE_TPS),
    ObsField("kv_occupancy", "clip"),
    ObsField("gpu_memory_gb", "clip_ratio", GPU_MEMORY_SCALE_GB),
    ObsField("slo_attainment", "identity"),
    ObsField("goodput_rps", "log", RATE_SCALE_RPS),
    ObsField("cost_per_1k_tokens", "log", COST_SCALE_PER_1K_USD),
    ObsField("arrival_rate", "log", RATE_SCALE_RPS),
    ObsField("preemptions", "log", COUNT_SCALE),
    ObsField("dropped", "log", COUNT_SCALE),
    ObsField("invalid_config", "identity"),
    ObsField("reconfig_remaining_s", "clip_ratio", RECONFIG_SCALE_S),
    ObsField("progress", "clip"),
)
OBS_PER_TENANT: tuple[ObsField, ...] = (
    ObsField("queue_depth_per_tenant", "log", tenant_queue_capacity),
    ObsField("arrival_rate_per_tenant", "log", RATE_SCALE_RPS),
)
OBS_SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in OBS_SCALARS)
OBS_FIELDS_BY_NAME: dict[str, ObsField] = {f.name: f for f in OBS_SCALARS + OBS_PER_TENANT}


def log_scaled(x, scale):
    """log1p(x) / log1p(scale), clipped to [0, 1]."""
    return jnp.clip(jnp.log1p(jnp.maximum(x, 0.0)) / jnp.log1p(scale), 0.0, 1.0)


def latency_scaled(x, scale=None):
    """Latency in seconds mapped to [0, 1] on a log scale from 1 ms to 100 s (0 when no sample)."""
    decades_above_floor = jnp.log10(jnp.maximum(x, LATENCY_FLOOR_S)) + LATENCY_DECADES_BELOW_1S
    return jnp.where(x > 0, jnp.clip(decades_above_floor / LATENCY_DECADES, 0.0, 1.0), 0.0)


ENCODERS: dict[str, Callable] = {
    "log": log_scaled,
    "latency": latency_scaled,
    "ratio": lambda x, scale: x / scale,
    "clip_ratio": lambda x, scale: jnp.clip(x / scale, 0.0, 1.0),
    "clip": lambda x, scale: jnp.clip(x, 0.0, 1.0),
    "identity": lambda x, scale: x,
}


def encode(f: ObsField, x, cfg: EnvConfig) -> jax.Array:
    """The metric value ``x`` (its unit) as its flat-observation entry."""
    return ENCODERS[f.transform](x, f.scale_for(cfg))


def decode(f: ObsField, v, cfg: EnvConfig) -> jax.Array:
    """The metric value (its unit) of a flat-observation entry ``v``; exact inverse of :func:`encode`
    up to rounding, inside the clipped range. ``log``'s scale is taken as a host float64 then
    float32 (``np.log1p``), as the heuristic always has."""
    scale = f.scale_for(cfg)
    if f.transform == "log":
        return jnp.expm1(v * np.log1p(scale))
    if f.transform == "latency":
        return jnp.where(v > 0, 10.0 ** (v * LATENCY_DECADES - LATENCY_DECADES_BELOW_1S), 0.0)
    if f.transform in ("ratio", "clip_ratio"):
        return v * scale
    return v


def knob01(knob: Knob, value) -> jax.Array:
    """A knob's value (its unit) normalised by its range: (value - low) / (high - low), float32."""
    return (jnp.asarray(value, F32) - knob.low) / (knob.high - knob.low)


def knob_levels01(knob: Knob) -> tuple[float, ...]:
    """A knob's levels as their flat-observation values (host floats)."""
    return tuple(float((v - knob.low) / (knob.high - knob.low)) for v in knob.levels)


def knob_value(knob: Knob, v01) -> jax.Array:
    """Inverse of :func:`knob01`: the knob's value of a flat-observation entry."""
    return knob.low + v01 * (knob.high - knob.low)


def obs_layout(cfg: EnvConfig, knobs: tuple[Knob, ...]) -> dict[str, int | slice]:
    """Position of every entry of the flat observation: an int for a scalar metric and for
    ``action.<knob>``, a slice [T] for a per-tenant metric."""
    layout: dict[str, int | slice] = {f.name: i for i, f in enumerate(OBS_SCALARS)}
    at = len(OBS_SCALARS)
    for k in knobs:
        layout[f"action.{k.name}"] = at
        at += 1
    for f in OBS_PER_TENANT:
        layout[f.name] = slice(at, at + cfg.n_tenants)
        at += cfg.n_tenants
    return layout


def obs_dim(cfg: EnvConfig, knobs: tuple[Knob, ...]) -> int:
    """Length of the flat observation."""
    return len(OBS_SCALARS) + len(knobs) + len(OBS_PER_TENANT) * cfg.n_tenants


def read(obs: jax.Array, name: str, cfg: EnvConfig, knobs: tuple[Knob, ...]) -> jax.Array:
    """The metric ``name`` (its unit; [T] for a per-tenant one) or the knob ``action.<knob>`` (its
    unit) decoded from a flat observation ``obs[..., obs_dim]``."""
    at = obs_layout(cfg, knobs)[name]
    v = obs[..., at]
    if name.startswith("action."):
        return knob_value(next(k for k in knobs if f"action.{k.name}" == name), v)
    return decode(OBS_FIELDS_BY_NAME[name], v, cfg)


def flat_obs(cfg: EnvConfig, knobs: tuple[Knob, ...], m: Observation, action: ServeAction) -> jax.Array:
    """The learner's observation [obs_dim]: every metric mapped to [0, 1] by the table, then the
    action in force, then the per-tenant metrics."""
    scalars = [encode(f, getattr(m, f.name), cfg) for f in OBS_SCALARS]
    per_tenant = [encode(f, getattr(m, f.name), cfg) for f in OBS_PER_TENANT]
    in_force = [knob01(k, getattr(action, k.name)) for k in knobs]
    return jnp.concatenate([jnp.stack(scalars + in_force).astype(F32), *[p.astype(F32) for p in per_tenant]])


def metrics(params: EnvParams, st: EnvState, has_step, plan: Plan) -> Observation:
    """The named metrics of ``st``'s last interval under ``plan``. ``has_step`` is 1 after a step
    and 0 right after reset (the cost per token is then 0, not the cap)."""
    dt = params.dt_s
    ss = st.step_stats
    ended = ss.finished.sum() + ss.dropped.sum()
    blocks = kv_blocks(st).sum()
    kv_bytes_used = blocks * KV_BLOCK_TOKENS * plan.kv_bytes_per_token / params.n_gpus
    cost = interval_cost_usd(params)
    tokens = ss.output_tokens
    return Observation(
        queue_depth=st.q_count.sum().astype(F32),
        running=st.active.sum().astype(F32),
        ttft_p50_s=hist_quantile(ss.hist_ttft, 0.5),
        ttft_p99_s=hist_quantile(ss.hist_ttft, 0.99),
        itl_p50_s=hist_quantile(ss.hist_itl, 0.5),
        itl_p99_s=hist_quantile(ss.hist_itl, 0.99),
        tpot_p50_s=hist_quantile(ss.hist_tpot, 0.5),
        tpot_p99_s=hist_quantile(ss.hist_tpot, 0.99),
        throughput_tps=tokens / dt,
        prefill_tps=ss.prefill_tokens / dt,
        kv_occupancy=jnp.where(plan.pool_blocks > 0, blocks / jnp.maximum(plan.pool_blocks, 1.0), 0.0),
        gpu_memory_gb=jnp.where(plan.serving_ok, plan.weights_gb_per_gpu + (kv_bytes_used + plan.activation_bytes) / BYTES_PER_GB, 0.0),
        slo_attainment=jnp.where(ended > 0, ss.slo_met.sum() / jnp.maximum(ended, 1), 1.0).astype(F32),
        goodput_rps=ss.slo_met.sum() / dt,
        cost_per_1k_tokens=has_step * jnp.where(
            tokens > 0, jnp.minimum(cost / jnp.maximum(tokens, MIN_TOKENS) * TOKENS_PER_1K, COST_PER_1K_CAP_USD), COST_PER_1K_CAP_USD),
        arrival_rate=ss.arrived.sum() / dt,
        preemptions=ss.preemptions.astype(F32),
        dropped=ss.dropped.sum().astype(F32),
        invalid_config=(~plan.serving_ok).astype(F32),
        reconfig_remaining_s=jnp.maximum(st.down_until - st.t_now, 0.0),
        progress=(st.step / params.horizon_steps).astype(F32),
        queue_depth_per_tenant=st.q_count.astype(F32),
        arrival_rate_per_tenant=ss.arrived.astype(F32) / dt,
    )
