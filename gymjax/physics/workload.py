"""The workload: when requests arrive, how long they are, and the tenants' burst phases.

Synthetic arrivals are a Poisson process per tenant whose rate (requests/s) is the base rate times
the burst phase's multiplier, a linear drift over the horizon and a diurnal sine; the phase is a
two-state Markov chain stepped once per interval (optionally mirrored: a tenant "on" exactly when
its partner is "off", a traffic-mix shift). Trace tasks replay binned arrivals instead. Prompt and
output lengths (tokens) are drawn by interpolating the tenant's quantile tables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.physics.numerics import cumsum
from gymjax.types import EnvConfig, EnvParams, EnvState

F32 = jnp.float32
I32 = jnp.int32

MIN_RATE_RPS = 1e-6  # floor of a tenant's rate (keeps the exponential gaps finite)


def mirror_bursts(params: EnvParams, burst_on: jax.Array) -> jax.Array:
    """Apply ``params.burst_mirror``: a mirrored tenant is "on" exactly when its partner is "off"."""
    partner = burst_on[jnp.clip(params.burst_mirror, 0, burst_on.shape[0] - 1)]
    return jnp.where(params.burst_mirror >= 0, 1 - partner, burst_on).astype(burst_on.dtype)


def initial_bursts(key: jax.Array, params: EnvParams, n_tenants: int) -> jax.Array:
    """Burst phases [T] (int32 0/1) at reset: each tenant "on" with probability 1/2, then mirrored."""
    return mirror_bursts(params, jax.random.bernoulli(key, 0.5, (n_tenants,)).astype(I32))


def step_bursts(key: jax.Array, params: EnvParams, burst_on: jax.Array) -> jax.Array:
    """One step of the Markov-modulated phase [T]: "on" flips with ``p_on_to_off``, "off" with
    ``p_off_to_on``, then mirrored."""
    u = jax.random.uniform(key, burst_on.shape)
    flip = jnp.where(burst_on > 0, u < params.p_on_to_off, u < params.p_off_to_on)
    return mirror_bursts(params, jnp.where(flip, 1 - burst_on, burst_on))


def trace_start(key: jax.Array, cfg: EnvConfig, params: EnvParams) -> jax.Array:
    """The trace bin an episode's replay starts at: uniform over the starts whose horizon fits in the
    trace (the last one included); 0 when the horizon is the trace or longer (the episode then
    drains after the last arrival), and for synthetic tasks."""
    if not cfg.use_trace:
        return jnp.int32(0)
    n_bins = params.trace_count.shape[0]
    return jax.random.randint(key, (), 0, jnp.maximum(n_bins - params.horizon_steps + 1, 1)).astype(I32)


def sample_lengths(key: jax.Array, quantiles: jax.Array, shape) -> jax.Array:
    """Token lengths (int32 >= 1) of ``shape`` [T, A]: a uniform point between the tenant's
    quantiles [T, NQ], linearly interpolated and rounded."""
    nq = quantiles.shape[-1]
    u = jax.random.uniform(key, shape) * (nq - 1)
    i0 = jnp.floor(u).astype(I32)
    i1 = jnp.minimum(i0 + 1, nq - 1)
    fr = u - i0
    v = jnp.take_along_axis(quantiles, i0, 1) * (1 - fr) + jnp.take_along_axis(quantiles, i1, 1) * fr
    return jnp.maximum(jnp.round(v), 1.0).astype(I32)


def arrival_rate(params: EnvParams, burst_on: jax.Array, t_mid) -> jax.Array:
    """Requests/s per tenant [T] at time ``t_mid`` (s): base rate x burst multiplier x drift x diurnal."""
    prog = t_mid / (params.horizon_steps * params.dt_s)
    return (
        params.base_rate_rps
        * jnp.where(burst_on > 0, params.burst_high_mult, params.burst_low_mult)
        * jnp.maximum(1.0 + params.drift * prog, 0.0)
        * jnp.maximum(1.0 + params.diurnal_amp * jnp.sin(2 * jnp.pi * t_mid / params.diurnal_period_s), 0.0)
    )


def arrivals(cfg: EnvConfig, key: jax.Array, st: EnvState, params: EnvParams):
    """This interval's arrivals per tenant, starting at ``st.t_now``: times (s) [T, A], prompt
    tokens [T, A], output tokens [T, A], valid mask [T, A], and the true count per tenant [T] (a
    trace bin may hold more than ``max_arrivals``; the synthetic process is truncated at A)."""
    T, A = cfg.n_tenants, cfg.max_arrivals
    t_start = st.t_now
    dt = params.dt_s
    if cfg.use_trace:
        n_bins = params.trace_count.shape[0]
        b = st.trace_start + st.step
        # past the trace's end nothing arrives (the engine drains what is left); no wrap-around
        n = jnp.where(b < n_bins, params.trace_count[jnp.minimum(b, n_bins - 1)], 0)
        b = jnp.minimum(b, n_bins - 1)
        valid = jnp.arange(A)[None, :] < n[:, None]
        return t_start + params.trace_offset_s[b], params.trace_prompt[b], params.trace_output[b], valid, n
    k_gap, k_p, k_o = jax.random.split(key, 3)
    rate = arrival_rate(params, st.burst_on, t_start + 0.5 * dt)
    u = jax.random.uniform(k_gap, (T, A), minval=1e-7, maxval=1.0)
    gaps = -jnp.log(u) / jnp.maximum(rate, MIN_RATE_RPS)[:, None]
    offs = cumsum(gaps)
    valid = offs < dt
    n_real = valid.sum(1)  # a Poisson process, truncated at A arrivals per interval
    return (t_start + offs, sample_lengths(k_p, params.prompt_quantiles, (T, A)),
            sample_lengths(k_o, params.output_quantiles, (T, A)), valid, n_real)
