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
INF = jnp.float32(jnp.inf)
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


def hist_bin(x: jax.Array, n_hist: int) -> jax.Array:
    """Log-spaced bin index of a latency in seconds (1 ms ... 100 s, clipped)."""
    lo, hi = jnp.log(HIST_LO_S), jnp.log(HIST_HI_S)
    b = jnp.floor((jnp.log(jnp.maximum(x, 1e-9)) - lo) / (hi - lo) * n_hist)
    return jnp.clip(b, 0, n_hist - 1).astype(I32)


def hist_quantile(hist: jax.Array, q: float) -> jax.Array:
    """q-quantile (seconds) of a log-spaced histogram; the geometric centre of the bin. 0 if empty."""
    n_hist = hist.shape[-1]
    total = hist.sum(-1, keepdims=True)
    cdf = jnp.cumsum(hist, -1)
    idx = jnp.argmax(cdf >= q * total, axis=-1)
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


def requeue(cfg: EnvConfig, params: EnvParams, st: EnvState, mask: jax.Array) -> EnvState:
    """Move the running requests in ``mask`` [B] back to the front of their tenants' queues.

    The KV they held is lost: on readmission they re-prefill prompt + generated tokens. A request
    that finds its queue full is dropped (counted).
    """
    Q = cfg.queue_cap
    T = cfg.n_tenants
    onehot = (st.tenant[:, None] == jnp.arange(T)[None, :]) & mask[:, None]  # [B, T]
    rank = jnp.cumsum(onehot, axis=0) - 1  # position among this tenant's requeued
    rank = jnp.sum(jnp.where(onehot, rank, 0), axis=1)  # [B]
    n_t = onehot.sum(0)  # [T]
    space = Q - st.q_count  # [T]
    tq = st.tenant
    fits = mask & (rank < space[tq])
    pos = (st.q_head[tq] - 1 - rank) % Q
    pos = jnp.where(fits, pos, Q)  # out of bounds -> dropped by the scatter
    st_q = dict(
        q_arrival=st.q_arrival.at[tq, pos].set(st.t_arrival, mode="drop"),
        q_prompt=st.q_prompt.at[tq, pos].set(st.prompt, mode="drop"),
        q_out=st.q_out.at[tq, pos].set(st.out_len, mode="drop"),
        q_generated=st.q_generated.at[tq, pos].set(st.generated, mode="drop"),
        q_first=st.q_first.at[tq, pos].set(st.t_first, mode="drop"),
    )
    n_fit = jnp.minimum(n_t, space)
    dropped = n_t - n_fit
    lost = jnp.where(mask, st.prefilled + jnp.maximum(st.kv_tokens - st.target, 0.0), 0.0).sum()
    # remove requeued slots from the prefill ring (stable compaction)
    in_mask = mask[jnp.clip(st.pr_slot, 0, cfg.n_slots - 1)] & (jnp.arange(cfg.prefill_ring) < st.pr_count)
    keep = ~in_mask & (jnp.arange(cfg.prefill_ring) < st.pr_count)
    dest = jnp.where(keep, jnp.cumsum(keep) - 1, cfg.prefill_ring)
    pr_slot = jnp.full_like(st.pr_slot, cfg.n_slots).at[dest].set(st.pr_slot, mode="drop")
    ss = st.step_stats
    return st.replace(
        active=st.active & ~mask,
        q_head=(st.q_head - n_fit) % Q,
        q_count=st.q_count + n_fit,
        pr_slot=pr_slot,
        pr_count=keep.sum().astype(I32),
        step_stats=ss.replace(
            dropped=ss.dropped + dropped,
            preemptions=ss.preemptions + mask.sum(),
            recomputed_tokens=ss.recomputed_tokens + lost,
        ),
        **st_q,
    )


def kv_blocks(st: EnvState) -> jax.Array:
    """KV blocks each slot holds [B]."""
    return jnp.where(st.active, jnp.ceil(st.kv_tokens / KV_BLOCK_TOKENS), 0.0)


# --------------------------------------------------------------------------------------------------
# One leap
# --------------------------------------------------------------------------------------------------


def _preempt(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, serving) -> tuple[EnvState, jax.Array]:
    """Preempt up to ``preempt_per_leap`` victims while free blocks < decoding sequences."""
    t0 = st.t_now
    blocks = kv_blocks(st)
    free = plan.pool_blocks - blocks.sum()
    decoding = st.active & (st.ready_at <= t0)
    n_dec = decoding.sum()
    prio = params.priority[st.tenant]
    # victim key: lowest priority first (if priority routing), then newest arrival
    key = jnp.where(plan.priority_mode, -prio * 1e6, 0.0) + st.t_arrival
    victims = jnp.zeros_like(st.active)
    candidates = st.active
    for _ in range(cfg.preempt_per_leap):
        need = serving & ((free < n_dec) | (free < 0)) & candidates.any()
        v = jnp.argmax(jnp.where(candidates, key, -INF))
        hit = need & (jnp.arange(cfg.n_slots) == v)
        victims = victims | hit
        candidates = candidates & ~hit
        free = free + jnp.where(need, blocks[v], 0.0)
        n_dec = n_dec - jnp.where(need & decoding[v], 1, 0)
    any_victim = victims.any()
    st = requeue(cfg, params, st, victims)
    return st, any_victim


def _admit(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, allowed) -> EnvState:
    """Admit the longest FCFS (or priority) prefix of waiting requests that fits slots and KV."""
    T, W, Q, B, P = cfg.n_tenants, cfg.window, cfg.queue_cap, cfg.n_slots, cfg.prefill_ring
    t0 = st.t_now
    pos = (st.q_head[:, None] + jnp.arange(W)[None, :]) % Q  # [T, W]
    in_q = jnp.arange(W)[None, :] < st.q_count[:, None]
    c_arr = jnp.take_along_axis(st.q_arrival, pos, 1)
    eligible = in_q & (c_arr <= t0)
    c_prompt = jnp.take_along_axis(st.q_prompt, pos, 1)
    c_out = jnp.take_along_axis(st.q_out, pos, 1)
    c_gen = jnp.take_along_axis(st.q_generated, pos, 1)
    c_first = jnp.take_along_axis(st.q_first, pos, 1)
    c_tenant = jnp.broadcast_to(jnp.arange(T)[:, None], (T, W))

    flat = lambda x: x.reshape(T * W)  # noqa: E731
    TW = T * W
    if T == 1:
        order = jnp.arange(TW)
    else:
        # rank by (ineligible last, priority desc if on, arrival asc, tenant, window position);
        # a pairwise count instead of a sort: TW is small, and sorts are slow on XLA:CPU
        e, a, tn = flat(eligible), flat(c_arr), flat(c_tenant)
        pr = jnp.where(plan.priority_mode, params.priority[tn], 0.0)
        idx = jnp.arange(TW)
        before = (
            (e[:, None] & ~e[None, :])
            | ((e[:, None] == e[None, :]) & (pr[:, None] > pr[None, :]))
            | ((e[:, None] == e[None, :]) & (pr[:, None] == pr[None, :]) & (a[:, None] < a[None, :]))
            | ((e[:, None] == e[None, :]) & (pr[:, None] == pr[None, :]) & (a[:, None] == a[None, :]) & (idx[:, None] < idx[None, :]))
        )  # before[j, i]: j goes before i
        rank = before.sum(0)
        order = jnp.zeros(TW, I32).at[rank].set(idx)

    o_elig = flat(eligible)[order]
    o_target = (flat(c_prompt) + flat(c_gen))[order]
    need_blocks = jnp.ceil((o_target + 1.0) / KV_BLOCK_TOKENS)
    free_blocks = plan.pool_blocks - kv_blocks(st).sum()
    free_slot = ~st.active
    n_active = st.active.sum()
    room = jnp.minimum(jnp.minimum(free_slot.sum(), plan.batch_cap - n_active), P - st.pr_count)
    ok = allowed & o_elig & (jnp.arange(1, TW + 1) <= room) & (jnp.cumsum(need_blocks) <= free_blocks)
    ok = jnp.cumprod(ok).astype(bool)  # a prefix: FCFS head-of-line blocking, as in vLLM
    m = ok.sum().astype(I32)

    # place rank r into the r-th free slot
    r_free = jnp.cumsum(free_slot) - 1
    take = free_slot & (r_free < m)
    src = order[jnp.clip(r_free, 0, TW - 1)]
    g = lambda x: flat(x)[src]  # noqa: E731
    new_target = (g(c_prompt) + g(c_gen)).astype(F32)
    st = st.replace(
        active=st.active | take,
        tenant=jnp.where(take, g(c_tenant), st.tenant),
        prompt=jnp.where(take, g(c_prompt), st.prompt),
        out_len=jnp.where(take, g(c_out), st.out_len),
        target=jnp.where(take, new_target, st.target),
        prefilled=jnp.where(take, 0.0, st.prefilled),
        generated=jnp.where(take, g(c_gen), st.generated),
        kv_tokens=jnp.where(take, new_target + 1.0, st.kv_tokens),  # prompt + first token reserved
        t_arrival=jnp.where(take, g(c_arr), st.t_arrival),
        t_first=jnp.where(take, g(c_first), st.t_first),
        ready_at=jnp.where(take, INF, st.ready_at),
    )
    # append admitted slots to the prefill ring in admission order
    M = min(TW, P)
    slot_of_rank = jnp.full(M, B, I32).at[jnp.where(take, r_free, M)].set(jnp.arange(B, dtype=I32), mode="drop")
    dest = jnp.where(jnp.arange(M) < m, st.pr_count + jnp.arange(M), P)
    pr_slot = st.pr_slot.at[dest].set(slot_of_rank, mode="drop")
    # pop admitted entries from each tenant's queue head (they are a prefix per tenant)
    admitted = jnp.zeros(TW, bool).at[order].set(ok).reshape(T, W)
    n_t = admitted.sum(1).astype(I32)
    return st.replace(pr_slot=pr_slot, pr_count=st.pr_count + m, q_head=(st.q_head + n_t) % Q, q_count=st.q_count - n_t)


def _leap(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, t_end, leaps_left) -> EnvState:
    B, P, T, H = cfg.n_slots, cfg.prefill_ring, cfg.n_tenants, cfg.n_hist
    t0 = st.t_now
    remaining = jnp.maximum(t_end - t0, 0.0)
    up = t0 >= st.down_until
    serving = plan.serving_ok & up

    st, preempted = _preempt(cfg, params, plan, st, serving)
    st = _admit(cfg, params, plan, st, serving & ~preempted)

    # ---- schedule of this leap --------------------------------------------------------------
    k = plan.spec_k
    E = plan.tok_per_iter[st.tenant]  # [B] tokens per verification step
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
    rem = jnp.where(ring_valid, st.target[rs] - st.prefilled[rs], 0.0)
    rem_total = rem.sum()
    cached_head = jnp.where(ring_valid[0], st.prefilled[rs[0]], 0.0)
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
    t_p = iter_time(params, plan, jnp.maximum(p_dis, 1.0), prefill_attn_flops(params, p_dis, cached_head), cached_head * kvb, jnp.maximum(plan.prefill_share, 1e-3))
    rho = jnp.where(plan.disagg, p_dis / t_p, p_co / t_a)  # prefill tokens per second
    rho = jnp.where(serving, rho, 0.0)
    t_drain = jnp.where(rho > 0, rem_total / jnp.maximum(rho, 1e-9), INF)

    # ---- leap length -------------------------------------------------------------------------
    e_finish = jnp.min(jnp.where(decoding, (st.out_len - st.generated) / E * t_b, INF))
    e_prefill = jnp.where(ring_valid[0] & (rho > 0), rem[0] / jnp.maximum(rho, 1e-9), INF)
    W = cfg.window
    qpos = (st.q_head[:, None] + jnp.arange(W)[None, :]) % cfg.queue_cap
    q_arr = jnp.take_along_axis(st.q_arrival, qpos, 1)
    pending = (jnp.arange(W)[None, :] < st.q_count[:, None]) & (q_arr > t0)
    has_room = (st.active.sum() < jnp.minimum(plan.batch_cap, B)) & (st.pr_count < P)
    e_arrival = jnp.where(has_room, jnp.min(jnp.where(pending, q_arr - t0, INF)), INF)
    e_event = jnp.minimum(jnp.minimum(e_finish, e_prefill), e_arrival)
    fair = remaining / leaps_left
    dt = jnp.clip(jnp.maximum(e_event, fair), 0.0, remaining)
    dt = jnp.where(leaps_left <= 1, remaining, dt)
    # an engine that is reloading idles until it is back (or the interval ends)
    dt = jnp.where(plan.serving_ok & ~up, jnp.clip(st.down_until - t0, 0.0, remaining), dt)
    dt = jnp.where(plan.serving_ok, dt, remaining)
    t1 = t0 + dt

    # ---- prefill progress --------------------------------------------------------------------
    dur_a = jnp.where(plan.disagg, 0.0, jnp.minimum(t_drain, dt))  # colocated iterations with prefill
    processed = jnp.where(plan.disagg, jnp.minimum(rho * dt, rem_total), rho * dur_a)
    cum = jnp.cumsum(rem)
    done = ring_valid & (cum <= processed + 1e-3) & serving
    gain = jnp.where(ring_valid & serving, jnp.clip(processed - (cum - rem), 0.0, rem), 0.0)
    xfer = jnp.where(plan.disagg, st.target[rs] * kvb / params.kv_transfer_bytes_per_s, 0.0)
    t_done = t0 + cum / jnp.maximum(rho, 1e-9) + xfer
    drop_idx = jnp.where(ring_valid, rs, B)
    done_idx = jnp.where(done, rs, B)
    first_time = done & (st.t_first[rs] < 0)
    ttft = t_done - st.t_arrival[rs]
    prefilled = st.prefilled.at[drop_idx].add(gain, mode="drop")
    ready_at = st.ready_at.at[done_idx].set(t_done, mode="drop")
    t_first = st.t_first.at[jnp.where(first_time, rs, B)].set(t_done, mode="drop")
    generated = st.generated.at[done_idx].add(1.0, mode="drop")  # the prefill emits a token
    m_done = done.sum().astype(I32)
    shift = jnp.clip(ring_idx + m_done, 0, P - 1)
    pr_slot = jnp.where(ring_idx + m_done < P, st.pr_slot[shift], B)
    ss = st.step_stats
    hist_ttft = ss.hist_ttft.at[hist_bin(ttft, H)].add(first_time.astype(F32))

    # ---- decode progress ---------------------------------------------------------------------
    n_iters = dur_a / t_a + (dt - dur_a) / t_b
    t_avg = jnp.where(n_iters > 0, dt / jnp.maximum(n_iters, 1e-9), t_b)
    start = jnp.maximum(t0, ready_at)
    dec_now = st.active & (start < t1) & serving
    avail = jnp.where(dec_now, t1 - start, 0.0)
    want = avail / t_avg * E
    remaining_tok = st.out_len - generated
    blocks = kv_blocks(st)
    slack = blocks * KV_BLOCK_TOKENS - st.kv_tokens
    free_blocks = plan.pool_blocks - blocks.sum()
    n_dec_now = jnp.maximum(dec_now.sum(), 1)
    grant = slack + KV_BLOCK_TOKENS * jnp.floor(jnp.maximum(free_blocks, 0.0) / n_dec_now)
    g = jnp.clip(jnp.minimum(jnp.minimum(want, remaining_tok), grant), 0.0, None)
    g = jnp.where(dec_now, g, 0.0)
    finished = st.active & serving & (remaining_tok - g <= 1e-3) & (start < t1)
    t_fin = start + jnp.maximum(remaining_tok, 0.0) / E * t_avg
    generated = generated + g
    kv_tokens = st.kv_tokens + g

    # ---- per-request metrics at finish ------------------------------------------------------
    tpot = jnp.where(st.out_len > 1, (t_fin - t_first) / jnp.maximum(st.out_len - 1, 1), 0.0)
    ttft_req = t_first - st.t_arrival
    met = finished & (ttft_req <= params.slo_ttft_s[st.tenant]) & (tpot <= params.slo_tpot_s[st.tenant])
    onehot = st.tenant[:, None] == jnp.arange(T)[None, :]
    tok_out = g.sum() + first_time.sum() + (done & ~first_time).sum()
    e_bar = jnp.where(dec_now, E, 0.0).sum() / n_dec_now
    itl_w_a = g.sum() * jnp.where(dt > 0, dur_a / jnp.maximum(dt, 1e-9), 0.0)
    hist_itl = (
        ss.hist_itl.at[hist_bin(t_a / jnp.maximum(e_bar, 1.0), H)].add(itl_w_a)
        .at[hist_bin(t_b / jnp.maximum(e_bar, 1.0), H)].add(g.sum() - itl_w_a)
    )
    hist_tpot = ss.hist_tpot.at[hist_bin(tpot, H)].add((finished & (st.out_len > 1)).astype(F32))
    ss = ss.replace(
        hist_ttft=hist_ttft,
        hist_itl=hist_itl,
        hist_tpot=hist_tpot,
        output_tokens=ss.output_tokens + tok_out,
        prefill_tokens=ss.prefill_tokens + gain.sum(),
        finished=ss.finished + (onehot & finished[:, None]).sum(0).astype(I32),
        slo_met=ss.slo_met + (onehot & met[:, None]).sum(0).astype(I32),
        kv_blocks_used_max=jnp.maximum(ss.kv_blocks_used_max, kv_blocks(st.replace(kv_tokens=kv_tokens)).sum()),
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
