"""Numerical helpers shared by the physics: fast small reductions under ``vmap`` on XLA:CPU and the
log-spaced latency histograms.

Times are seconds (float32). :data:`NEVER` is the stored "no time yet" (keeps every state leaf
finite); :data:`INF` is used only inside reductions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32
I32 = jnp.int32
INF = jnp.float32(jnp.inf)  # only for reductions, never stored
NEVER = 1.0e9  # s: a time that never comes (stored: keeps every state leaf finite)
HIST_LO_S = 1e-3  # histogram range: 1 ms ...
HIST_GROUP = 8  # hist_quantile's bins per group
HIST_HI_S = 1000.0  # ... 1,000 s, log-spaced (EnvConfig.n_hist bins; 384 bins: each 3.7 % wide)


TIE_ULPS = 8  # float32 ulps apart two compiled programs may compute one quantity (tie_slack)


def tie_slack(x: jax.Array) -> jax.Array:
    """How far apart two compiled programs may compute the same float32 quantity ``x``: ``TIE_ULPS``
    ulps of ``|x|`` (at least 1e-9). XLA contracts multiply-adds into FMAs differently in each fusion
    and sums in a different order, so a quantity that is *equal by construction* to a threshold (KV
    tokens that a decode grant filled up to a block boundary) lands a few ulps on either side of it.
    :func:`gymjax.physics.queues.blocks_for` counts tokens within this slack of a boundary as on it."""
    return (TIE_ULPS * float(jnp.finfo(F32).eps)) * jnp.abs(x) + 1e-9


def cumsum(x: jax.Array) -> jax.Array:
    """Inclusive cumulative sum over the last (small) axis as a triangular matmul.

    Under ``vmap`` on XLA:CPU this is ~4x faster than ``jnp.cumsum`` (a reduce-window). Exact for
    the integer-valued float32 counts it is used on (< 2**24).
    """
    n = x.shape[-1]
    tri = jnp.triu(jnp.ones((n, n), F32))
    return jnp.matmul(x.astype(F32), tri, precision=jax.lax.Precision.HIGHEST)


def argmax_first(x: jax.Array) -> jax.Array:
    """Index of the first maximum over the last axis (two plain reductions: ~6x faster than
    ``jnp.argmax``'s variadic reduce under ``vmap`` on XLA:CPU)."""
    n = x.shape[-1]
    return jnp.min(jnp.where(x == jnp.max(x, -1, keepdims=True), jnp.arange(n), n), -1).clip(0, n - 1)


def running_first_argmax(score: jax.Array, *values: jax.Array) -> tuple[jax.Array, ...]:
    """For each ``i`` of a [n] ``score``, ``values`` at ``j``, the first index ``<= i`` where ``score``
    is largest (``argmax_first`` of each prefix, exactly: only comparisons and selects).

    A scan over the n entries: under ``vmap`` on XLA:CPU its body is a few ops on the cluster axis
    and its result is materialised once, where the [n, n] masked reduction costs a slow small-axis
    reduce plus gathers, and a fused doubling scan gets recomputed inside every consumer."""

    def body(best, x):
        take = x[0] > best[0]  # strictly larger: the earlier index wins a tie
        best = tuple(jnp.where(take, xi, bi) for xi, bi in zip(x, best, strict=True))
        return best, best[1:]

    xs = (score, *values)
    _, out = jax.lax.scan(body, tuple(x[0] for x in xs), xs)
    return out


def hist_add(hist: jax.Array, x: jax.Array, count: jax.Array) -> jax.Array:
    """``hist`` [H] plus ``count`` at the bin of each latency ``x`` (seconds). Entries whose count is
    0 are not written at all (their index is out of range and dropped): a scatter under ``vmap`` on
    XLA:CPU costs per entry written, and most slots finish nothing in a given leap."""
    n_hist = hist.shape[-1]
    return hist.at[jnp.where(count != 0, hist_bin(x, n_hist), n_hist)].add(count, mode="drop")


def per_slot(table: jax.Array, tenant: jax.Array) -> jax.Array:
    """``table[tenant]`` for a [T] table without a gather (T is tiny and static)."""
    if table.shape[-1] == 1:
        return jnp.broadcast_to(table[..., 0], tenant.shape)
    out = jnp.zeros(tenant.shape, table.dtype)
    for t in range(table.shape[-1]):
        out = jnp.where(tenant == t, table[t], out)
    return out


def hist_bin(x: jax.Array, n_hist: int) -> jax.Array:
    """Log-spaced bin index (int32) of a latency ``x`` in seconds (1 ms ... 1,000 s, clipped)."""
    lo, hi = jnp.log(HIST_LO_S), jnp.log(HIST_HI_S)
    b = jnp.floor((jnp.log(jnp.maximum(x, 1e-9)) - lo) / (hi - lo) * n_hist)
    return jnp.clip(b, 0, n_hist - 1).astype(I32)


def hist_quantile(hist: jax.Array, q: float) -> jax.Array:
    """q-quantile (seconds) of a log-spaced histogram [..., H]: the geometric centre of the first bin
    whose cumulative count reaches ``q``, so within half a bin of the exact quantile (±1.8 % at the
    default 384 bins over 1 ms ... 1,000 s). 0 if empty.

    Two levels, so the cost does not grow with H²: the cumulative counts of groups of
    :data:`HIST_GROUP` bins find the group, then the bins inside it find the bin.
    """
    n_hist = hist.shape[-1]
    group = HIST_GROUP if n_hist % HIST_GROUP == 0 else 1
    total = hist.sum(-1, keepdims=True)
    target = q * total
    grouped = hist.reshape(*hist.shape[:-1], n_hist // group, group)
    group_counts = grouped.sum(-1)
    group_cdf = cumsum(group_counts)
    g = jnp.minimum(jnp.sum(group_cdf < target, axis=-1), n_hist // group - 1)  # first group reaching q
    before = jnp.take_along_axis(group_cdf - group_counts, g[..., None], -1)
    inside = jnp.take_along_axis(grouped, g[..., None, None], -2)[..., 0, :]  # [..., group]
    in_cdf = before + cumsum(inside)
    idx = jnp.minimum(g * group + jnp.sum(in_cdf < target, axis=-1), n_hist - 1)
    lo, hi = jnp.log(HIST_LO_S), jnp.log(HIST_HI_S)
    centre = jnp.exp(lo + (idx + 0.5) / n_hist * (hi - lo))
    return jnp.where(total[..., 0] > 0, centre, 0.0)
