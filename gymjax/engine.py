"""The serving-engine physics of one cluster for one control interval.

Pure functions over one cluster's :class:`EnvState` (``vmap`` adds the cluster axis). One control
interval is simulated as ``n_leaps`` *leaps*. A leap is a run of engine iterations that share one
schedule: admission and preemption happen at leap boundaries, and inside a leap the iteration time
is a roofline (:func:`gymjax.physics.roofline.iter_time`) and tokens flow in closed form. Requests
stay discrete: each has its own arrival, prompt, hidden output length, first-token time and finish
time (interpolated to the iteration it happens in), so TTFT/TPOT/SLOs are per request.

What a leap guarantees:

- it starts at ``st.t_now`` and ends at ``t_now + leap_s`` with ``0 <= leap_s <= t_end - t_now``;
  it lasts until the next event (a finish, a prefill completion, an arrival that could be
  admitted) but never less than the fair share ``(t_end - t_now) / leaps_left`` of the interval
  left, and the last leap ends exactly at ``t_end``: ``n_leaps`` leaps always cover the interval;
- requests arriving before the fair share ends are admitted at the leap's start (so they arrive
  inside it) and released at their arrival: a new prompt waits for the decode iteration in flight,
  prompts are prefilled FCFS (:func:`prefill_timeline`), and a first token comes at the end of the
  iteration that completes its prefill, which may fall after the leap's end;
- an engine that cannot serve (invalid configuration, or reloading/draining) admits, prefills and
  decodes nothing; a reloading engine's leap ends when it is back (or at ``t_end``);
- KV memory is paged in 16-token blocks and never over-committed: a request reserves blocks for
  its prompt (+ first token) at admission; decode grows it at most by the free blocks shared
  equally among the decoding sequences; when free blocks drop below the number of decoding
  sequences, the newest (or lowest-priority, then newest) request is preempted and requeued at the
  front of its tenant's queue for recompute, and that leap admits nothing;
- prefill is FCFS through the prefill ring, at the rate the leap's schedule gives (colocated: what
  decode leaves of the chunk budget, filled by the prompts waiting; disaggregated: the prefill
  pool's chunks back to back), each prompt's attention over its own cached tokens; each completed
  prefill emits one token (the first token) and the request starts decoding;
- a decoding request emits ``E(k)`` tokens (:func:`gymjax.physics.speculation.tokens_per_verification`)
  per iteration; tokens are fluid within the leap, a request finishes when its hidden output length
  is reached, and every counter it touches (tokens, finishes, SLOs met, latency histograms) is
  updated in the leap where it happens.

The phases of :func:`leap`, in order: :func:`preempt`, admission
(:func:`gymjax.physics.queues.admit`), :func:`schedule` (iteration times and the prefill rate),
:func:`prefill_timeline`, :func:`leap_length`, :func:`prefill_progress`, :func:`decode_progress`,
:func:`finish_accounting`. The package's reference simulator (:mod:`gymjax.reference`, one event per
iteration) is what this approximation is held to (``python -m benchmarks.fidelity``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gymjax.physics import queues, speculation
from gymjax.physics.numerics import INF, NEVER, argmax_first, cumsum, hist_add, hist_bin, per_slot, running_first_argmax
from gymjax.physics.roofline import decode_attn_flops, iter_time, prefill_attn_flops
from gymjax.presets import KV_BLOCK_TOKENS
from gymjax.types import EnvConfig, EnvParams, EnvState, Plan

F32 = jnp.float32
I32 = jnp.int32
MIN_PREFILL_SHARE = 1e-3  # share of the GPUs the prefill pool's roofline is evaluated at, at least
DONE_TOLERANCE_TOKENS = 1e-3  # a prefill or an output this close to complete counts as complete
MIN_RATE = 1e-9  # denominator floor of rates and durations


class PrefillRing(NamedTuple):
    """The requests being prefilled [P], in admission (FCFS) order."""

    valid: jax.Array  # bool: the ring entry holds a request
    slot: jax.Array  # i32: its batch slot (clipped into range)
    target: jax.Array  # f32 tokens to prefill
    prefilled: jax.Array  # f32 tokens prefilled so far
    arrival: jax.Array  # f32 s
    first: jax.Array  # f32 s: first-token time, -1 before it
    remaining: jax.Array  # f32 tokens still to prefill (0 for an empty entry)


class Schedule(NamedTuple):
    """The schedule of one leap: who decodes, iteration times, the prefill rate."""

    decoding: jax.Array  # [B] bool: decoding at the leap's start
    tokens_per_verif: jax.Array  # [B] f32 tokens one iteration emits per decoding sequence, E(k)
    t_iter_decode: jax.Array  # s: a decode-only iteration (verification pass + drafts)
    t_iter_mixed: jax.Array  # s: a colocated iteration carrying decode and a prefill chunk
    prefill_rate_tps: jax.Array  # prefill tokens/s of the leap (0 when not serving)
    s_per_prefill_token: jax.Array  # 1 / prefill_rate_tps; INF when prefill cannot progress
    prefill_iter_s: jax.Array  # s: one iteration that carries prefill (mixed, or the prefill pool's)
    prefill_tokens_per_iter: jax.Array  # prompt tokens one such iteration prefills


class PrefillTimeline(NamedTuple):
    """When each ring entry [P] is prefilled in this leap, in seconds from the leap's start (INF: not
    in this leap's schedule)."""

    release: jax.Array  # may start: its arrival, moved to the next iteration boundary if the engine is busy
    begin: jax.Array  # starts (fluid FCFS: after the entries before it, not before its release)
    end: jax.Array  # its last prompt token is processed (fluid)
    first_token: jax.Array  # its first token: the end of the iteration that completes its prefill


class PrefillOutcome(NamedTuple):
    t_mixed: jax.Array  # s of the leap spent in colocated iterations that carry prefill
    n_first_tokens: jax.Array  # i32: prefills completed (each emitted its first token)


class DecodeOutcome(NamedTuple):
    decoded: jax.Array  # [B] f32 tokens decoded this leap
    finished: jax.Array  # [B] bool: the request finished this leap
    t_finish: jax.Array  # [B] s: its finish time
    decoding_now: jax.Array  # [B] bool: decoded during this leap
    n_decoding_now: jax.Array  # i32 >= 1: how many (floored at 1)


def preempt(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, serving) -> tuple[EnvState, jax.Array]:
    """Preempt up to ``preempt_per_leap`` decoding requests while free blocks < decoding sequences.

    Victim: the newest arrival, or with priority routing the lowest priority tenant's newest.
    Prefilling requests hold their whole prompt's blocks already and are never victims here.
    Returns the state and whether anything was preempted.
    """
    t_start = st.t_now
    blocks = queues.kv_blocks(st)
    free_blocks = plan.pool_blocks - blocks.sum()
    decoding = st.active & (st.ready_at <= t_start)
    n_decoding = decoding.sum()
    priority = per_slot(params.priority, st.tenant)
    victim_order = jnp.where(plan.priority_mode, -priority * 1e6, 0.0) + st.t_arrival
    any_victim = jnp.bool_(False)
    for _ in range(cfg.preempt_per_leap):
        need = serving & (free_blocks < n_decoding) & (n_decoding > 0)
        victim = argmax_first(jnp.where(decoding, victim_order, -INF))
        st = queues.requeue_one(cfg, st, victim, need)
        decoding = decoding & ~(need & (jnp.arange(cfg.n_slots) == victim))
        free_blocks = free_blocks + jnp.where(need, blocks[victim], 0.0)
        n_decoding = n_decoding - need.astype(n_decoding.dtype)
        any_victim = any_victim | need
    return st, any_victim


def prefill_ring(cfg: EnvConfig, st: EnvState) -> PrefillRing:
    """The prefill ring's requests, read from their batch slots."""
    B, P = cfg.n_slots, cfg.prefill_ring
    valid = jnp.arange(P) < st.pr_count
    slot = jnp.clip(st.pr_slot, 0, B - 1)
    target = st.target[slot]
    prefilled = st.prefilled[slot]
    remaining = jnp.where(valid, target - prefilled, 0.0)
    return PrefillRing(
        valid=valid, slot=slot, target=target, prefilled=prefilled, arrival=st.t_arrival[slot], first=st.t_first[slot],
        remaining=remaining,
    )


def schedule(params: EnvParams, plan: Plan, st: EnvState, ring: PrefillRing, serving) -> Schedule:
    """Iteration times and the prefill rate of a leap starting at ``st.t_now``.

    Decode: the decoding sequences' verification pass plus ``k`` drafts on the decode pool
    (:func:`gymjax.physics.speculation.verification_time`). Colocated prefill (vLLM chunked
    prefill): decode goes first and prefill takes what is left of each replica's chunk budget, in
    mixed iterations. Disaggregated: the prefill pool runs chunks back to back.
    """
    t_start = st.t_now
    spec_k = plan.spec_k
    tokens_per_verif = per_slot(plan.tok_per_iter, st.tenant)
    decoding = st.active & (st.ready_at <= t_start)
    n_decoding = decoding.sum().astype(F32)
    ctx_tokens = jnp.where(decoding, st.kv_tokens, 0.0).sum()
    kv_bytes_per_token = plan.kv_bytes_per_token
    decode_share = jnp.where(plan.disagg, 1.0 - plan.prefill_share, 1.0)
    n_decoding_eff = jnp.maximum(n_decoding, 1.0)
    t_target_step = speculation.target_step_time(params, plan, n_decoding_eff, ctx_tokens, decode_share)
    t_draft = speculation.draft_time(params, spec_k, t_target_step)
    t_iter_decode = speculation.verification_pass_time(params, plan, n_decoding_eff, ctx_tokens, decode_share, spec_k) + t_draft

    replicas = params.n_gpus / params.tensor_parallel
    # colocated: decode first, prefill takes what is left of the chunk budget (vLLM chunked prefill)
    verif_tokens = n_decoding * (spec_k + 1.0)
    # an iteration prefills the prompts waiting when it starts, up to the token budget: those that
    # arrived by the leap's start, and at least the largest one in the ring (arrivals later in the
    # leap come one at a time at moderate load)
    arrived = ring.valid & (ring.arrival <= t_start)
    ready_tokens = jnp.maximum(jnp.where(arrived, ring.remaining, 0.0).sum(), jnp.max(ring.remaining))
    prefill_tokens_per_iter = jnp.minimum(jnp.maximum(plan.chunk - verif_tokens / replicas, 0.0) * replicas, ready_tokens)
    # disaggregated: the prefill pool runs chunks back to back
    prefill_replicas = jnp.maximum(params.n_gpus * plan.prefill_share / params.tensor_parallel, 1.0)
    prefill_tokens_per_chunk = jnp.minimum(plan.chunk * prefill_replicas, ready_tokens)
    # one attention pass, for the prefill iteration of this deployment (the mixed iteration's time is
    # used only colocated, the prefill pool's only disaggregated)
    attn, cached = ring_chunk_attention(params, ring, jnp.where(plan.disagg, prefill_tokens_per_chunk, prefill_tokens_per_iter))
    t_iter_mixed = iter_time(
        params, plan, verif_tokens + prefill_tokens_per_iter,
        decode_attn_flops(params, spec_k + 1.0, ctx_tokens) + attn,
        (ctx_tokens + cached) * kv_bytes_per_token, 1.0,
    ) + t_draft
    t_iter_prefill = iter_time(
        params, plan, jnp.maximum(prefill_tokens_per_chunk, 1.0), attn,
        cached * kv_bytes_per_token, jnp.maximum(plan.prefill_share, MIN_PREFILL_SHARE),
    )
    prefill_iter_s = jnp.where(plan.disagg, t_iter_prefill, t_iter_mixed)
    prefill_tokens = jnp.where(plan.disagg, prefill_tokens_per_chunk, prefill_tokens_per_iter)
    prefill_rate_tps = jnp.where(serving, prefill_tokens / prefill_iter_s, 0.0)
    s_per_prefill_token = jnp.where(prefill_rate_tps > 0, 1.0 / jnp.maximum(prefill_rate_tps, MIN_RATE), INF)
    return Schedule(decoding, tokens_per_verif, t_iter_decode, t_iter_mixed, prefill_rate_tps, s_per_prefill_token,
                    prefill_iter_s, prefill_tokens)


def ring_chunk_attention(params: EnvParams, ring: PrefillRing, tokens) -> tuple[jax.Array, jax.Array]:
    """Attention FLOPs of one iteration that prefills the ring's first ``tokens`` tokens, FCFS, each
    request's share n_i over its own k_i cached tokens (sum of 4·L·d·n_i·(k_i + n_i/2)), and the
    cached tokens those requests read."""
    before = cumsum(ring.remaining) - ring.remaining
    n = jnp.clip(tokens - before, 0.0, ring.remaining)
    in_chunk = n > 0
    return prefill_attn_flops(params, n, ring.prefilled).sum(), jnp.where(in_chunk, ring.prefilled, 0.0).sum()


def prefill_timeline(ring: PrefillRing, sched: Schedule, t_start) -> PrefillTimeline:
    """FCFS prefill of the ring at the schedule's rate, each entry released at its arrival.

    An arrival while decode iterations run waits for the iteration in flight (its release moves to
    the next decode-iteration boundary; the iteration in flight when the leap starts is taken as half
    done). Fluid FCFS with releases is a
    max-plus recursion, ``end_i = max(end_{i-1}, release_i) + r_i / rate``, solved in closed form:
    ``end_i = release_j + (S_i - S_{j-1}) / rate`` with ``j`` the start of ``i``'s busy period (the
    ``j <= i`` maximising ``release_j - S_{j-1} / rate``; ``S`` the cumulative remaining tokens).
    Iterations carrying prefill run back to back from ``release_j``, so the first token comes at the
    end of the iteration whose cumulative tokens cover ``S_i``: ``release_j + ceil((S_i - S_{j-1})
    / tokens_per_iteration) * iteration_s`` (fluid, ``end_i``, in a busy period that resumes a
    prefill the leap's start cut)."""
    can = ring.valid & (sched.prefill_rate_tps > 0)
    spt = jnp.where(can, sched.s_per_prefill_token, 0.0)  # finite where used
    # while decode iterations run, a new prompt joins at the next iteration boundary; the iteration in
    # flight at the leap's start is taken as half done (boundaries at grid/2, 3·grid/2, ...)
    grid = jnp.maximum(sched.t_iter_decode, MIN_RATE)
    since_start = ring.arrival - t_start
    next_boundary = jnp.maximum(jnp.ceil((since_start + 0.5 * grid) / grid), 1.0) * grid - 0.5 * grid
    fresh = ring.prefilled <= 0.0  # not started (a started prefill continues at once)
    release = jnp.where(sched.decoding.any() & fresh, next_boundary, jnp.maximum(since_start, 0.0))
    total = cumsum(ring.remaining)
    before = total - ring.remaining
    # the busy-period start j of each entry, and release_j, S_{j-1} and prefilled_j
    release_j, before_j, prefilled_j = running_first_argmax(release - before * spt, release, before, ring.prefilled)
    since = total - before_j  # tokens from the busy period's start to the end of entry i
    end = release_j + since * spt
    begin = end - ring.remaining * spt
    per_iter = jnp.maximum(sched.prefill_tokens_per_iter, MIN_RATE)
    n_iter = jnp.maximum(jnp.ceil(since / per_iter - DONE_TOLERANCE_TOKENS), 1.0)
    first_token = release_j + n_iter * sched.prefill_iter_s
    # a busy period that continues a prefill cut by the leap's start resumes mid-iteration: where in
    # its iteration it stood is not kept, so its completions stay fluid (no rounding up)
    first_token = jnp.where(prefilled_j > 0.0, end, first_token)
    never = lambda x: jnp.where(can, x, INF)  # noqa: E731
    return PrefillTimeline(never(release), never(begin), never(end), never(first_token))


def leap_length(cfg: EnvConfig, plan: Plan, st: EnvState, sched: Schedule, timeline: PrefillTimeline,
                win: queues.QueueWindow, t_end, leaps_left, engine_up) -> jax.Array:
    """Seconds this leap lasts: until the next event (first finish, head prefill done, an arrival
    that could be admitted), at least the fair share of the interval left, and the rest of the
    interval for the last leap or an engine that cannot serve; a reloading engine waits until it is up."""
    t_start = st.t_now
    time_left = jnp.maximum(t_end - t_start, 0.0)
    to_finish = jnp.min(jnp.where(sched.decoding, (st.out_len - st.generated) / sched.tokens_per_verif, INF)) * sched.t_iter_decode
    to_prefill = jnp.min(timeline.first_token)
    has_room = (st.active.sum() < plan.batch_cap) & (st.pr_count < cfg.prefill_ring)
    to_arrival = jnp.where(has_room, jnp.min(jnp.where(win.in_queue & (win.arrival > t_start), win.arrival - t_start, INF)), INF)
    to_event = jnp.minimum(jnp.minimum(to_finish, to_prefill), to_arrival)
    fair_share = time_left / leaps_left
    leap_s = jnp.clip(jnp.maximum(to_event, fair_share), 0.0, time_left)
    leap_s = jnp.where(leaps_left <= 1, time_left, leap_s)
    # an engine that is reloading idles until it is back (or the interval ends)
    leap_s = jnp.where(plan.serving_ok & ~engine_up, jnp.clip(st.down_until - t_start, 0.0, time_left), leap_s)
    return jnp.where(plan.serving_ok, leap_s, time_left)


def prefill_progress(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, ring: PrefillRing, sched: Schedule,
                     timeline: PrefillTimeline, serving, leap_s) -> tuple[EnvState, PrefillOutcome]:
    """Prefill the ring for ``leap_s`` seconds along ``timeline``. A prefill whose last token is
    processed in the leap leaves the ring and emits its first token at the end of that iteration
    (``timeline.first_token``, which may fall after the leap's end: the request decodes from then,
    plus the KV transfer when disaggregated). Colocated, iterations carry prefill while tokens are
    processed."""
    B, P = cfg.n_slots, cfg.prefill_ring
    t_start = st.t_now
    rate = sched.prefill_rate_tps
    elapsed = jnp.clip(leap_s - timeline.begin, 0.0, leap_s)  # 0 where not scheduled (begin = INF)
    gain = jnp.where(ring.valid & serving, jnp.clip(elapsed * rate, 0.0, ring.remaining), 0.0)
    done = ring.valid & serving & (gain >= ring.remaining - DONE_TOLERANCE_TOKENS) & (timeline.end <= leap_s)
    gain = jnp.where(done, ring.remaining, gain)
    t_mixed = jnp.where(plan.disagg, 0.0, gain.sum() * jnp.where(rate > 0, sched.s_per_prefill_token, 0.0))
    kv_transfer_s = jnp.where(plan.disagg, ring.target * plan.kv_bytes_per_token / params.kv_transfer_bytes_per_s, 0.0)
    t_done = t_start + jnp.where(done, timeline.first_token, 0.0) + kv_transfer_s
    first_time = done & (ring.first < 0)
    upd = jnp.where(ring.valid, ring.slot, B)
    n_done = done.sum().astype(I32)
    shifted = jnp.arange(P) + n_done
    ss = st.step_stats
    st = st.replace(
        prefilled=st.prefilled.at[upd].add(gain, mode="drop"),
        ready_at=st.ready_at.at[upd].set(jnp.where(done, t_done, NEVER), mode="drop"),
        t_first=st.t_first.at[upd].set(jnp.where(first_time, t_done, ring.first), mode="drop"),
        generated=st.generated.at[upd].add(done.astype(F32), mode="drop"),  # the prefill emits a token
        pr_slot=jnp.where(shifted < P, st.pr_slot[jnp.clip(shifted, 0, P - 1)], B),
        pr_count=st.pr_count - n_done,
        step_stats=ss.replace(
            hist_ttft=hist_add(ss.hist_ttft, t_done - ring.arrival, first_time.astype(F32)),
            prefill_tokens=ss.prefill_tokens + gain.sum(),
        ),
    )
    return st, PrefillOutcome(t_mixed, done.sum())


def decode_progress(plan: Plan, st: EnvState, sched: Schedule, prefill: PrefillOutcome, serving, leap_s) -> DecodeOutcome:
    """Tokens each request decodes in the leap: from when it may decode (``ready_at``) to the leap's
    end at the leap's mean iteration time, ``E(k)`` per iteration, capped by its remaining output and
    by its KV grant (its last block's slack plus an equal share of the free blocks)."""
    t_start = st.t_now
    t_leap_end = t_start + leap_s
    n_iters = prefill.t_mixed / sched.t_iter_mixed + (leap_s - prefill.t_mixed) / sched.t_iter_decode
    t_iter_mean = jnp.where(n_iters > 0, leap_s / jnp.maximum(n_iters, MIN_RATE), sched.t_iter_decode)
    start = jnp.maximum(t_start, st.ready_at)
    decoding_now = st.active & (start < t_leap_end) & serving
    wanted = jnp.where(decoding_now, (t_leap_end - start) / t_iter_mean * sched.tokens_per_verif, 0.0)
    remaining_tokens = st.out_len - st.generated
    blocks = queues.kv_blocks(st)
    slack = blocks * KV_BLOCK_TOKENS - st.kv_tokens
    free_blocks = plan.pool_blocks - blocks.sum()
    n_decoding_now = jnp.maximum(decoding_now.sum(), 1)
    grant = slack + KV_BLOCK_TOKENS * jnp.floor(jnp.maximum(free_blocks, 0.0) / n_decoding_now)
    decoded = jnp.where(decoding_now, jnp.clip(jnp.minimum(jnp.minimum(wanted, remaining_tokens), grant), 0.0, None), 0.0)
    finished = st.active & serving & (remaining_tokens - decoded <= DONE_TOLERANCE_TOKENS) & (start <= t_leap_end)
    t_finish = start + jnp.maximum(remaining_tokens, 0.0) / sched.tokens_per_verif * t_iter_mean
    return DecodeOutcome(decoded, finished, t_finish, decoding_now, n_decoding_now)


def finish_accounting(cfg: EnvConfig, params: EnvParams, st: EnvState, sched: Schedule, prefill: PrefillOutcome,
                      dec: DecodeOutcome, leap_s) -> EnvState:
    """Apply the decoded tokens, retire the finished requests, and count: output tokens, finishes
    and SLOs met per tenant (TTFT and TPOT against the tenant's targets), the inter-token-latency
    histogram (mixed and decode-only iterations, per emitted token), TPOT, peak KV blocks."""
    T, H = cfg.n_tenants, cfg.n_hist
    generated = st.generated + dec.decoded
    kv_tokens = st.kv_tokens + dec.decoded
    finished = dec.finished
    tpot = jnp.where(st.out_len > 1, (dec.t_finish - st.t_first) / jnp.maximum(st.out_len - 1, 1), 0.0)
    ttft = st.t_first - st.t_arrival
    met = finished & (ttft <= per_slot(params.slo_ttft_s, st.tenant)) & (tpot <= per_slot(params.slo_tpot_s, st.tenant))
    if T == 1:
        finished_per_tenant, met_per_tenant = finished.sum()[None].astype(I32), met.sum()[None].astype(I32)
    else:
        onehot = st.tenant[:, None] == jnp.arange(T)[None, :]
        finished_per_tenant = (onehot & finished[:, None]).sum(0).astype(I32)
        met_per_tenant = (onehot & met[:, None]).sum(0).astype(I32)
    decoded_total = dec.decoded.sum()
    output_tokens = decoded_total + prefill.n_first_tokens
    mean_tokens_per_verif = jnp.where(dec.decoding_now, sched.tokens_per_verif, 0.0).sum() / dec.n_decoding_now
    # every iteration emits the same tokens per decoding sequence: the mixed iterations' share of the
    # tokens is their share of the iterations (not of the time: they are the longer ones)
    n_mixed = prefill.t_mixed / sched.t_iter_mixed
    n_decode_only = jnp.maximum(leap_s - prefill.t_mixed, 0.0) / sched.t_iter_decode
    itl_weight_mixed = decoded_total * n_mixed / jnp.maximum(n_mixed + n_decode_only, MIN_RATE)
    ss = st.step_stats
    hist_itl = (
        ss.hist_itl.at[hist_bin(sched.t_iter_mixed / jnp.maximum(mean_tokens_per_verif, 1.0), H)].add(itl_weight_mixed)
        .at[hist_bin(sched.t_iter_decode / jnp.maximum(mean_tokens_per_verif, 1.0), H)].add(decoded_total - itl_weight_mixed)
    )
    hist_tpot = hist_add(ss.hist_tpot, tpot, (finished & (st.out_len > 1)).astype(F32))
    hist_e2e = hist_add(ss.hist_e2e, dec.t_finish - st.t_arrival, finished.astype(F32))
    blocks_used_after = jnp.where(st.active, queues.blocks_for(kv_tokens), 0.0).sum()
    if cfg.request_log:
        ss = log_finished(cfg, st, ss, finished, dec.t_finish)
    ss = ss.replace(
        hist_itl=hist_itl,
        hist_tpot=hist_tpot,
        hist_e2e=hist_e2e,
        output_tokens=ss.output_tokens + output_tokens,
        finished=ss.finished + finished_per_tenant,
        slo_met=ss.slo_met + met_per_tenant,
        kv_blocks_used_max=jnp.maximum(ss.kv_blocks_used_max, blocks_used_after),
    )
    return st.replace(
        active=st.active & ~finished,
        generated=generated,
        kv_tokens=kv_tokens,
        t_now=st.t_now + leap_s,
        step_stats=ss,
    )


def log_finished(cfg: EnvConfig, st: EnvState, ss, finished, t_finish):
    """Append one row per finished request (columns ``REQUEST_LOG_COLUMNS``) to the interval's request
    log, in slot order; rows past ``cfg.request_log`` are counted, not kept."""
    row = ss.requests_logged + cumsum(finished.astype(F32)).astype(I32) - 1
    row = jnp.where(finished & (row < cfg.request_log), row, cfg.request_log)  # out of range: dropped
    cols = jnp.stack([st.t_arrival, st.t_first, t_finish, st.prompt.astype(F32), st.out_len.astype(F32),
                      st.tenant.astype(F32)], -1)
    return ss.replace(requests=ss.requests.at[row].set(cols, mode="drop"),
                      requests_logged=ss.requests_logged + finished.sum().astype(I32))


def leap(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, t_end, leaps_left) -> EnvState:
    """One leap from ``st.t_now`` towards ``t_end`` (``leaps_left`` leaps, this one included, remain)."""
    engine_up = st.t_now >= st.down_until
    serving = plan.serving_ok & engine_up
    with jax.named_scope("preempt"):
        st, preempted = preempt(cfg, params, plan, st, serving)
    # the leap lasts at least its fair share of the interval left: requests arriving before then are
    # admitted now and released at their arrival (prefill_timeline)
    admit_until = st.t_now + jnp.maximum(t_end - st.t_now, 0.0) / leaps_left
    with jax.named_scope("admit"):
        win = queues.window(cfg, st)
        st = queues.admit(cfg, params, plan, st, serving & ~preempted, win, admit_until)
    with jax.named_scope("schedule"):
        ring = prefill_ring(cfg, st)
        sched = schedule(params, plan, st, ring, serving)
    with jax.named_scope("prefill_timeline"):
        timeline = prefill_timeline(ring, sched, st.t_now)
    with jax.named_scope("leap_length"):
        leap_s = leap_length(cfg, plan, st, sched, timeline, win, t_end, leaps_left, engine_up)
    with jax.named_scope("prefill_progress"):
        st, prefill = prefill_progress(cfg, params, plan, st, ring, sched, timeline, serving, leap_s)
    with jax.named_scope("decode_progress"):
        dec = decode_progress(plan, st, sched, prefill, serving, leap_s)
    with jax.named_scope("finish_accounting"):
        return finish_accounting(cfg, params, st, sched, prefill, dec, leap_s)


def run_interval(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, t_end) -> EnvState:
    """Advance the engine to ``t_end`` (s) in ``cfg.n_leaps`` leaps."""

    def body(s, i):
        return leap(cfg, params, plan, s, t_end, (cfg.n_leaps - i).astype(F32)), None

    st, _ = jax.lax.scan(body, st, jnp.arange(cfg.n_leaps))
    return st
