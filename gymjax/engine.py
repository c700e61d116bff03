"""The serving-engine physics of one cluster for one control interval.

Pure functions over one cluster's :class:`EnvState` (``vmap`` adds the cluster axis). One control
interval is simulated as ``n_leaps`` *leaps*. A leap is a run of engine iterations that share one
schedule: admission and preemption happen at leap boundaries, and inside a leap the iteration time
is a roofline (:func:`iter_time`) and tokens flow in closed form. Requests stay discrete: each has
its own arrival, prompt, hidden output length, first-token time and finish time (interpolated to
the iteration it happens in), so TTFT/TPOT/SLOs are per request. A leap ends at the next event
(a finish, a prefill completion, an arrival that could be admitted) but is never shorter than the
fair share of the interval left, so a fixed number of leaps always covers the interval.

KV memory is paged in 16-token blocks. A request reserves blocks for its prompt (+ first token)
at admission; decode grows it a block at a time; when free blocks drop below the number of
decoding sequences, the newest (or lowest-priority, then newest) request is preempted and
requeued at the front of its tenant's queue for recompute, and that leap admits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gymjax.presets import KV_BLOCK_TOKENS
from gymjax.types import EnvParams, EnvState

F32 = jnp.float32
I32 = jnp.int32
INF = jnp.float32(jnp.inf)  # only for reductions, never stored
NEVER = 1.0e9  # a time that never comes (stored: keeps every state leaf finite)
HIST_LO_S = 1e-3  # histogram range: 1 ms ...
HIST_HI_S = 100.0  # ... 100 s, log-spaced


@dataclass(frozen=True)
class EnvConfig:
    """Static sizes (they fix array shapes, so they are Python ints, not params)."""

    n_slots: int = 64  # B: running-batch slots (the largest batch cap)
    n_tenants: int = 1  # T
    queue_cap: int = 256  # Q: waiting-queue capacity per tenant
    window: int = 8  # W: queue entries per tenant considered for admission per leap
    prefill_ring: int = 16  # P: requests admitted and still prefilling
    max_arrivals: int = 48  # A: arrivals per tenant per step (more are counted dropped)
    n_leaps: int = 8  # K: leaps per control interval
    n_hist: int = 40  # H: log-spaced histogram bins
    n_quantiles: int = 64  # NQ: points of the length quantile tables
    preempt_per_leap: int = 4  # victims one leap may preempt
    use_trace: bool = False  # arrivals come from params.trace_* instead of the synthetic process


class Plan(NamedTuple):
    """Per-step constants derived from the action in force and the params."""

    serving_ok: jax.Array  # bool: configuration is valid
    batch_cap: jax.Array
    pool_blocks: jax.Array  # f32 KV blocks in the (decode) pool
    kv_bytes_per_token: jax.Array
    weight_bytes: jax.Array
    gemm_peak: jax.Array
    chunk: jax.Array  # token budget per iteration (per replica)
    disagg: jax.Array  # bool
    prefill_share: jax.Array  # share of GPUs doing prefill when disaggregated
    spec_k: jax.Array  # f32 speculation depth
    tok_per_iter: jax.Array  # [T] expected tokens per verification step
    priority_mode: jax.Array  # bool
    quality_cost: jax.Array
    weights_gb_per_gpu: jax.Array
    activation_bytes: jax.Array


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


def per_slot(table: jax.Array, tenant: jax.Array) -> jax.Array:
    """``table[tenant]`` for a [T] table without a gather (T is tiny and static)."""
    if table.shape[-1] == 1:
        return jnp.broadcast_to(table[..., 0], tenant.shape)
    out = jnp.zeros(tenant.shape, table.dtype)
    for t in range(table.shape[-1]):
        out = jnp.where(tenant == t, table[t], out)
    return out


def hist_bin(x: jax.Array, n_hist: int) -> jax.Array:
    """Log-spaced bin index of a latency in seconds (1 ms ... 100 s, clipped)."""
    lo, hi = jnp.log(HIST_LO_S), jnp.log(HIST_HI_S)
    b = jnp.floor((jnp.log(jnp.maximum(x, 1e-9)) - lo) / (hi - lo) * n_hist)
    return jnp.clip(b, 0, n_hist - 1).astype(I32)


def hist_quantile(hist: jax.Array, q: float) -> jax.Array:
    """q-quantile (seconds) of a log-spaced histogram; the geometric centre of the bin. 0 if empty."""
    n_hist = hist.shape[-1]
    total = hist.sum(-1, keepdims=True)
    cdf = cumsum(hist)
    idx = jnp.minimum(jnp.sum(cdf < q * total, axis=-1), n_hist - 1)  # first bin reaching q (no argmax)
    lo, hi = jnp.log(HIST_LO_S), jnp.log(HIST_HI_S)
    centre = jnp.exp(lo + (idx + 0.5) / n_hist * (hi - lo))
    return jnp.where(total[..., 0] > 0, centre, 0.0)


# --------------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------------


def iter_time(params: EnvParams, plan: Plan, n_tokens, attn_flops, kv_read_bytes, share) -> jax.Array:
    """Seconds for one engine iteration of a pool holding ``share`` of the cluster's GPUs.

    Arguments are aggregate over the pool: ``n_tokens`` tokens through the linear layers,
    ``attn_flops`` attention FLOPs, ``kv_read_bytes`` KV bytes streamed by attention. The pool is
    ``n_gpus*share/tp`` replicas with perfect load balance; below one replica it time-slices one.
    """
    tp = params.tensor_parallel
    replicas = params.n_gpus * share / tp
    r = jnp.maximum(replicas, 1.0)
    slice_ = jnp.clip(replicas, 1e-3, 1.0)
    n_r = n_tokens / r
    p = params.linear_params
    linear = jnp.maximum(
        2.0 * p * n_r / (params.eta_flops * plan.gemm_peak * tp),
        p * plan.weight_bytes / (params.eta_bandwidth * params.hbm_bandwidth_bytes_per_s * tp),
    )
    attention = jnp.maximum(
        attn_flops / r / (params.eta_flops * params.peak_bf16_flops * tp),
        kv_read_bytes / r / (params.eta_attention * params.hbm_bandwidth_bytes_per_s * tp),
    )
    ring = 2.0 * (tp - 1.0) / tp
    t_tp = jnp.where(
        tp > 1,
        2.0 * params.n_layers * (params.allreduce_latency_s + n_r * params.d_model * 2.0 * ring / params.link_bandwidth_bytes_per_s),
        0.0,
    )
    return params.t_fixed_s + t_tp + (linear + attention) / slice_


def decode_attn_flops(params: EnvParams, n_queries, ctx_tokens):
    """Attention FLOPs of ``n_queries`` query tokens per sequence over ``ctx_tokens`` cached (summed)."""
    return 4.0 * params.n_layers * params.d_model * n_queries * ctx_tokens


def prefill_attn_flops(params: EnvParams, n, k):
    """Attention FLOPs of a prefill chunk of ``n`` tokens over ``k`` cached: 4·L·d·n·(k + n/2)."""
    return 4.0 * params.n_layers * params.d_model * n * (k + n / 2.0)


# --------------------------------------------------------------------------------------------------
# Queue helpers
# --------------------------------------------------------------------------------------------------


def kv_blocks(st: EnvState) -> jax.Array:
    """KV blocks each slot holds [B]."""
    return jnp.where(st.active, jnp.ceil(st.kv_tokens / KV_BLOCK_TOKENS), 0.0)


def lost_tokens(st: EnvState) -> jax.Array:
    """Per slot [B]: tokens whose KV a preemption throws away (to be recomputed)."""
    return st.prefilled + jnp.maximum(st.kv_tokens - st.target - 1.0, 0.0)


def requeue_all(cfg: EnvConfig, st: EnvState) -> EnvState:
    """Move every running request back to the front of its tenant's queue: the KV cache is lost.

    Happens on a quantization reload, or when a new KV budget is smaller than what is in use (the
    engine must rebuild its cache). On readmission they re-prefill prompt + generated tokens. A
    request that finds its queue full is dropped (counted).
    """
    Q, T, B = cfg.queue_cap, cfg.n_tenants, cfg.n_slots
    mask = st.active
    onehot = (st.tenant[:, None] == jnp.arange(T)[None, :]) & mask[:, None]  # [B, T]
    rank = (cumsum(onehot.T.astype(F32)).T - 1.0).astype(I32)  # position among this tenant's requeued
    rank = jnp.sum(jnp.where(onehot, rank, 0), axis=1)  # [B]
    n_t = onehot.sum(0).astype(I32)  # [T]
    space = Q - st.q_count
    tq = st.tenant
    fits = mask & (rank < per_slot(space, tq))
    pos = jnp.where(fits, (per_slot(st.q_head, tq) - 1 - rank) % Q, Q)  # Q: out of bounds, dropped
    n_fit = jnp.minimum(n_t, space)
    ss = st.step_stats
    return st.replace(
        q_arrival=st.q_arrival.at[tq, pos].set(st.t_arrival, mode="drop"),
        q_prompt=st.q_prompt.at[tq, pos].set(st.prompt, mode="drop"),
        q_out=st.q_out.at[tq, pos].set(st.out_len, mode="drop"),
        q_generated=st.q_generated.at[tq, pos].set(st.generated, mode="drop"),
        q_first=st.q_first.at[tq, pos].set(st.t_first, mode="drop"),
        active=st.active & ~mask,
        q_head=(st.q_head - n_fit) % Q,
        q_count=st.q_count + n_fit,
        pr_slot=jnp.full_like(st.pr_slot, B),
        pr_count=jnp.int32(0) * st.pr_count,
        step_stats=ss.replace(
            dropped=ss.dropped + (n_t - n_fit),
            preemptions=ss.preemptions + mask.sum().astype(I32),
            recomputed_tokens=ss.recomputed_tokens + jnp.where(mask, lost_tokens(st), 0.0).sum(),
        ),
    )


def _requeue_one(cfg: EnvConfig, st: EnvState, v: jax.Array, do: jax.Array) -> EnvState:
    """Preempt decoding slot ``v`` if ``do``: push it to the front of its tenant's queue (scalar ops)."""
    Q = cfg.queue_cap
    t = st.tenant[v]
    fits = do & (st.q_count[t] < Q)
    pos = jnp.where(fits, (st.q_head[t] - 1) % Q, Q)
    hit = do & (jnp.arange(cfg.n_slots) == v)
    ss = st.step_stats
    return st.replace(
        q_arrival=st.q_arrival.at[t, pos].set(st.t_arrival[v], mode="drop"),
        q_prompt=st.q_prompt.at[t, pos].set(st.prompt[v], mode="drop"),
        q_out=st.q_out.at[t, pos].set(st.out_len[v], mode="drop"),
        q_generated=st.q_generated.at[t, pos].set(st.generated[v], mode="drop"),
        q_first=st.q_first.at[t, pos].set(st.t_first[v], mode="drop"),
        q_head=st.q_head.at[t].set(jnp.where(fits, pos, st.q_head[t])),
        q_count=st.q_count.at[t].add(fits.astype(I32)),
        active=st.active & ~hit,
        step_stats=ss.replace(
            dropped=ss.dropped.at[t].add((do & ~fits).astype(I32)),
            preemptions=ss.preemptions + do.astype(I32),
            recomputed_tokens=ss.recomputed_tokens + jnp.where(do, lost_tokens(st)[v], 0.0),
        ),
    )


# --------------------------------------------------------------------------------------------------
# One leap
# --------------------------------------------------------------------------------------------------


def _preempt(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, serving) -> tuple[EnvState, jax.Array]:
    """Preempt up to ``preempt_per_leap`` decoding requests while free blocks < decoding sequences.

    Victim: the newest arrival, or with priority routing the lowest priority tenant's newest.
    Prefilling requests hold their whole prompt's blocks already and are never victims here.
    """
    t0 = st.t_now
    blocks = kv_blocks(st)
    free = plan.pool_blocks - blocks.sum()
    decoding = st.active & (st.ready_at <= t0)
    n_dec = decoding.sum()
    prio = per_slot(params.priority, st.tenant)
    key = jnp.where(plan.priority_mode, -prio * 1e6, 0.0) + st.t_arrival
    any_victim = jnp.bool_(False)
    for _ in range(cfg.preempt_per_leap):
        need = serving & (free < n_dec) & (n_dec > 0)
        v = argmax_first(jnp.where(decoding, key, -INF))
        st = _requeue_one(cfg, st, v, need)
        decoding = decoding & ~(need & (jnp.arange(cfg.n_slots) == v))
        free = free + jnp.where(need, blocks[v], 0.0)
        n_dec = n_dec - need.astype(n_dec.dtype)
        any_victim = any_victim | need
    return st, any_victim


def _admit(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, allowed, win) -> EnvState:
    """Admit the longest FCFS (or priority) prefix of waiting requests that fits slots and KV."""
    T, W, Q, B, P = cfg.n_tenants, cfg.window, cfg.queue_cap, cfg.n_slots, cfg.prefill_ring
    t0 = st.t_now
    in_q, c_arr, pos = win
    eligible = in_q & (c_arr <= t0)
    c_prompt = jnp.take_along_axis(st.q_prompt, pos, 1)
    c_out = jnp.take_along_axis(st.q_out, pos, 1)
    c_gen = jnp.take_along_axis(st.q_generated, pos, 1)
    c_first = jnp.take_along_axis(st.q_first, pos, 1)
    c_tenant = jnp.broadcast_to(jnp.arange(T, dtype=I32)[:, None], (T, W))

    flat = lambda x: x.reshape(T * W)  # noqa: E731
    TW = T * W
    idx = jnp.arange(TW)
    if T == 1:
        order = idx
    else:
        # rank by (ineligible last, priority desc if on, arrival asc, tenant, window position);
        # a pairwise count instead of a sort: TW is small, and sorts are slow on XLA:CPU
        e, a = flat(eligible), flat(c_arr)
        pr = jnp.where(plan.priority_mode, flat(jnp.broadcast_to(params.priority[:, None], (T, W))), 0.0)
        same_e = e[:, None] == e[None, :]
        same_p = same_e & (pr[:, None] == pr[None, :])
        before = (
            (e[:, None] & ~e[None, :])
            | (same_e & (pr[:, None] > pr[None, :]))
            | (same_p & (a[:, None] < a[None, :]))
            | (same_p & (a[:, None] == a[None, :]) & (idx[:, None] < idx[None, :]))
        )  # before[j, i]: j goes before i
        rank = before.sum(0)
        order = jnp.zeros(TW, I32).at[rank].set(idx)

    take_o = lambda x: flat(x)[order] if T > 1 else flat(x)  # noqa: E731
    o_elig = take_o(eligible)
    o_target = take_o(c_prompt + c_gen.astype(I32)).astype(F32)
    need_blocks = jnp.ceil((o_target + 1.0) / KV_BLOCK_TOKENS)
    free_blocks = plan.pool_blocks - kv_blocks(st).sum()
    free_slot = ~st.active
    n_free = free_slot.sum()
    room = jnp.minimum(jnp.minimum(n_free, plan.batch_cap - (B - n_free)), P - st.pr_count)
    ok = allowed & o_elig & (idx < room) & (cumsum(need_blocks) <= free_blocks)
    m = jnp.min(jnp.where(ok, TW, idx)).astype(I32)  # first failure: admit a prefix (FCFS head-of-line)

    # the r-th admitted request goes to the r-th free slot
    M = min(TW, P)
    r_free = (cumsum(free_slot) - 1.0).astype(I32)
    slot_of_rank = jnp.full(M, B, I32).at[jnp.where(free_slot, r_free, M)].set(jnp.arange(B, dtype=I32), mode="drop")
    ridx = jnp.arange(M)
    dest = jnp.where(ridx < m, slot_of_rank, B)  # B: out of bounds, dropped
    src = order[:M] if T > 1 else ridx
    sel = lambda x: flat(x)[src]  # noqa: E731
    tgt = sel(c_prompt).astype(F32) + sel(c_gen)
    put = lambda arr, val: arr.at[dest].set(val, mode="drop")  # noqa: E731
    st = st.replace(
        active=put(st.active, True),
        tenant=put(st.tenant, sel(c_tenant)),
        prompt=put(st.prompt, sel(c_prompt)),
        out_len=put(st.out_len, sel(c_out)),
        target=put(st.target, tgt),
        prefilled=put(st.prefilled, 0.0),
        generated=put(st.generated, sel(c_gen)),
        kv_tokens=put(st.kv_tokens, tgt + 1.0),  # prompt + first token reserved
        t_arrival=put(st.t_arrival, sel(c_arr)),
        t_first=put(st.t_first, sel(c_first)),
        ready_at=put(st.ready_at, NEVER),
    )
    # append admitted slots to the prefill ring in admission order
    pr_slot = st.pr_slot.at[jnp.where(ridx < m, st.pr_count + ridx, P)].set(slot_of_rank, mode="drop")
    # pop admitted entries from each tenant's queue head (they are a prefix per tenant)
    if T == 1:
        n_t = m[None]
    else:
        admitted = jnp.zeros(TW, bool).at[order].set(idx < m).reshape(T, W)
        n_t = admitted.sum(1).astype(I32)
    return st.replace(pr_slot=pr_slot, pr_count=st.pr_count + m, q_head=(st.q_head + n_t) % Q, q_count=st.q_count - n_t)


def _leap(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, t_end, leaps_left) -> EnvState:
    B, P, T, H, W, Q = cfg.n_slots, cfg.prefill_ring, cfg.n_tenants, cfg.n_hist, cfg.window, cfg.queue_cap
    t0 = st.t_now
    remaining = jnp.maximum(t_end - t0, 0.0)
    up = t0 >= st.down_until
    serving = plan.serving_ok & up

    st, preempted = _preempt(cfg, params, plan, st, serving)
    qpos = (st.q_head[:, None] + jnp.arange(W)[None, :]) % Q  # [T, W] queue window
    in_q = jnp.arange(W)[None, :] < st.q_count[:, None]
    q_arr = jnp.take_along_axis(st.q_arrival, qpos, 1)
    st = _admit(cfg, params, plan, st, serving & ~preempted, (in_q, q_arr, qpos))

    # ---- schedule of this leap --------------------------------------------------------------
    k = plan.spec_k
    E = per_slot(plan.tok_per_iter, st.tenant)  # [B] tokens per verification step
    decoding = st.active & (st.ready_at <= t0)
    D = decoding.sum().astype(F32)
    ctx = jnp.where(decoding, st.kv_tokens, 0.0).sum()
    kvb = plan.kv_bytes_per_token
    share_d = jnp.where(plan.disagg, 1.0 - plan.prefill_share, 1.0)
    d_eff = jnp.maximum(D, 1.0)
    t_target = iter_time(params, plan, d_eff, decode_attn_flops(params, 1.0, ctx), ctx * kvb, share_d)
    draft = k * params.spec_draft_cost_ratio * t_target
    t_b = iter_time(params, plan, d_eff * (k + 1.0), decode_attn_flops(params, k + 1.0, ctx), ctx * kvb, share_d) + draft

    ring_idx = jnp.arange(P)
    ring_valid = ring_idx < st.pr_count
    rs = jnp.clip(st.pr_slot, 0, B - 1)
    r_target = st.target[rs]
    r_prefilled = st.prefilled[rs]
    r_arrival = st.t_arrival[rs]
    r_first = st.t_first[rs]
    rem = jnp.where(ring_valid, r_target - r_prefilled, 0.0)
    rem_total = rem.sum()
    cached_head = jnp.where(ring_valid[0], r_prefilled[0], 0.0)
    replicas = params.n_gpus / params.tensor_parallel
    # colocated: decode first, prefill takes what is left of the chunk budget (vLLM chunked prefill)
    p_co = jnp.minimum(jnp.maximum(plan.chunk - D * (k + 1.0) / replicas, 0.0) * replicas, rem_total)
    t_a = iter_time(
        params, plan, D * (k + 1.0) + p_co,
        decode_attn_flops(params, k + 1.0, ctx) + prefill_attn_flops(params, p_co, cached_head),
        (ctx + cached_head) * kvb, 1.0,
    ) + draft
    # disaggregated: the prefill pool runs chunks back to back
    rep_p = jnp.maximum(params.n_gpus * plan.prefill_share / params.tensor_parallel, 1.0)
    p_dis = jnp.minimum(plan.chunk * rep_p, rem_total)
    t_p = iter_time(params, plan, jnp.maximum(p_dis, 1.0), prefill_attn_flops(params, p_dis, cached_head), cached_head * kvb,
                    jnp.maximum(plan.prefill_share, 1e-3))
    rho = jnp.where(plan.disagg, p_dis / t_p, p_co / t_a)  # prefill tokens per second
    rho = jnp.where(serving, rho, 0.0)
    inv_rho = jnp.where(rho > 0, 1.0 / jnp.maximum(rho, 1e-9), INF)

    # ---- leap length -------------------------------------------------------------------------
    e_finish = jnp.min(jnp.where(decoding, (st.out_len - st.generated) / E, INF)) * t_b
    e_prefill = jnp.where(ring_valid[0] & (rho > 0), rem[0] / jnp.maximum(rho, 1e-9), INF)
    has_room = (st.active.sum() < plan.batch_cap) & (st.pr_count < P)
    e_arrival = jnp.where(has_room, jnp.min(jnp.where(in_q & (q_arr > t0), q_arr - t0, INF)), INF)
    e_event = jnp.minimum(jnp.minimum(e_finish, e_prefill), e_arrival)
    fair = remaining / leaps_left
    dt = jnp.clip(jnp.maximum(e_event, fair), 0.0, remaining)
    dt = jnp.where(leaps_left <= 1, remaining, dt)
    # an engine that is reloading idles until it is back (or the interval ends)
    dt = jnp.where(plan.serving_ok & ~up, jnp.clip(st.down_until - t0, 0.0, remaining), dt)
    dt = jnp.where(plan.serving_ok, dt, remaining)
    t1 = t0 + dt

    # ---- prefill progress --------------------------------------------------------------------
    t_drain = jnp.where(rem_total > 0, rem_total * inv_rho, 0.0)  # inf when prefill cannot progress
    dur_a = jnp.where(plan.disagg, 0.0, jnp.minimum(t_drain, dt))  # colocated iterations with prefill
    processed = jnp.where(plan.disagg, jnp.minimum(rho * dt, rem_total), rho * dur_a)
    cum = cumsum(rem)
    done = ring_valid & (cum <= processed + 1e-3) & serving
    gain = jnp.where(ring_valid & serving, jnp.clip(processed - (cum - rem), 0.0, rem), 0.0)
    xfer = jnp.where(plan.disagg, r_target * kvb / params.kv_transfer_bytes_per_s, 0.0)
    t_done = t0 + cum * jnp.where(rho > 0, inv_rho, 0.0) + xfer
    first_time = done & (r_first < 0)
    upd = jnp.where(ring_valid, rs, B)
    prefilled = st.prefilled.at[upd].add(gain, mode="drop")
    ready_at = st.ready_at.at[upd].set(jnp.where(done, t_done, NEVER), mode="drop")
    t_first = st.t_first.at[upd].set(jnp.where(first_time, t_done, r_first), mode="drop")
    generated = st.generated.at[upd].add(done.astype(F32), mode="drop")  # the prefill emits a token
    m_done = done.sum().astype(I32)
    shifted = ring_idx + m_done
    pr_slot = jnp.where(shifted < P, st.pr_slot[jnp.clip(shifted, 0, P - 1)], B)
    ss = st.step_stats
    hist_ttft = ss.hist_ttft.at[hist_bin(t_done - r_arrival, H)].add(first_time.astype(F32))

    # ---- decode progress ---------------------------------------------------------------------
    n_iters = dur_a / t_a + (dt - dur_a) / t_b
    t_avg = jnp.where(n_iters > 0, dt / jnp.maximum(n_iters, 1e-9), t_b)
    start = jnp.maximum(t0, ready_at)
    dec_now = st.active & (start < t1) & serving
    want = jnp.where(dec_now, (t1 - start) / t_avg * E, 0.0)
    remaining_tok = st.out_len - generated
    blocks = kv_blocks(st)
    slack = blocks * KV_BLOCK_TOKENS - st.kv_tokens
    free_blocks = plan.pool_blocks - blocks.sum()
    n_dec_now = jnp.maximum(dec_now.sum(), 1)
    grant = slack + KV_BLOCK_TOKENS * jnp.floor(jnp.maximum(free_blocks, 0.0) / n_dec_now)
    g = jnp.where(dec_now, jnp.clip(jnp.minimum(jnp.minimum(want, remaining_tok), grant), 0.0, None), 0.0)
    finished = st.active & serving & (remaining_tok - g <= 1e-3) & (start <= t1)
    t_fin = start + jnp.maximum(remaining_tok, 0.0) / E * t_avg
    generated = generated + g
    kv_tokens = st.kv_tokens + g

    # ---- per-request metrics at finish ------------------------------------------------------
    tpot = jnp.where(st.out_len > 1, (t_fin - t_first) / jnp.maximum(st.out_len - 1, 1), 0.0)
    ttft_req = t_first - st.t_arrival
    met = finished & (ttft_req <= per_slot(params.slo_ttft_s, st.tenant)) & (tpot <= per_slot(params.slo_tpot_s, st.tenant))
    if T == 1:
        fin_t, met_t = finished.sum()[None].astype(I32), met.sum()[None].astype(I32)
    else:
        onehot = st.tenant[:, None] == jnp.arange(T)[None, :]
        fin_t = (onehot & finished[:, None]).sum(0).astype(I32)
        met_t = (onehot & met[:, None]).sum(0).astype(I32)
    g_sum = g.sum()
    tok_out = g_sum + done.sum()
    e_bar = jnp.where(dec_now, E, 0.0).sum() / n_dec_now
    itl_w_a = g_sum * jnp.where(dt > 0, dur_a / jnp.maximum(dt, 1e-9), 0.0)
    hist_itl = (
        ss.hist_itl.at[hist_bin(t_a / jnp.maximum(e_bar, 1.0), H)].add(itl_w_a)
        .at[hist_bin(t_b / jnp.maximum(e_bar, 1.0), H)].add(g_sum - itl_w_a)
    )
    hist_tpot = ss.hist_tpot.at[hist_bin(tpot, H)].add((finished & (st.out_len > 1)).astype(F32))
    used_after = jnp.where(st.active, jnp.ceil(kv_tokens / KV_BLOCK_TOKENS), 0.0).sum()
    ss = ss.replace(
        hist_ttft=hist_ttft,
        hist_itl=hist_itl,
        hist_tpot=hist_tpot,
        output_tokens=ss.output_tokens + tok_out,
        prefill_tokens=ss.prefill_tokens + gain.sum(),
        finished=ss.finished + fin_t,
        slo_met=ss.slo_met + met_t,
        kv_blocks_used_max=jnp.maximum(ss.kv_blocks_used_max, used_after),
    )
    return st.replace(
        active=st.active & ~finished,
        prefilled=prefilled,
        ready_at=ready_at,
        t_first=t_first,
        generated=generated,
        kv_tokens=kv_tokens,
        pr_slot=pr_slot,
        pr_count=st.pr_count - m_done,
        t_now=t1,
        step_stats=ss,
    )


def run_interval(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, t_end) -> EnvState:
    """Advance the engine to ``t_end`` in ``cfg.n_leaps`` leaps."""

    def body(s, i):
        return _leap(cfg, params, plan, s, t_end, (cfg.n_leaps - i).astype(F32)), None

    st, _ = jax.lax.scan(body, st, jnp.arange(cfg.n_leaps))
    return st
