"""Waiting queues and the running batch's KV blocks.

Each tenant has a FIFO ring of ``queue_cap`` waiting requests (``q_*`` [T, Q], head and count [T]).
Requests enter at the back (:func:`enqueue`), leave at the front when a client gives up
(:func:`drop_stale`) or when admitted (:func:`admit`), and a preempted request goes back to the
front (:func:`requeue_one`, :func:`requeue_all`) to be prefilled again. A full queue drops (counted
in ``step_stats.dropped``). KV memory is paged in ``KV_BLOCK_TOKENS``-token blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gymjax.physics.numerics import NEVER, cumsum, per_slot, tie_slack
from gymjax.presets import KV_BLOCK_TOKENS
from gymjax.types import EnvConfig, EnvParams, EnvState, Plan

F32 = jnp.float32
I32 = jnp.int32


def blocks_for(kv_tokens: jax.Array) -> jax.Array:
    """KV blocks that hold ``kv_tokens`` tokens (f32, integer-valued): ``ceil(tokens / 16)``, where
    tokens within :func:`~gymjax.physics.numerics.tie_slack` of a block boundary count as on it (a
    decode grant that fills the last block exactly must not open one more block on a rounding)."""
    return jnp.ceil((kv_tokens - tie_slack(kv_tokens)) / KV_BLOCK_TOKENS)


def kv_blocks(st: EnvState) -> jax.Array:
    """KV blocks each slot holds [B] (f32, integer-valued; 0 for a free slot)."""
    return jnp.where(st.active, blocks_for(st.kv_tokens), 0.0)


def lost_tokens(st: EnvState) -> jax.Array:
    """Per slot [B]: tokens whose KV a preemption throws away (to be recomputed)."""
    return st.prefilled + jnp.maximum(st.kv_tokens - st.target - 1.0, 0.0)


def enqueue(cfg: EnvConfig, st: EnvState, times, prompt, out, valid) -> tuple[EnvState, jax.Array]:
    """Append the ``valid`` arrivals [T, A] (times s, prompt and output tokens) to their tenants'
    queues in order; returns the state and the arrivals per tenant [T] that found the queue full."""
    T, A, Q = cfg.n_tenants, cfg.max_arrivals, cfg.queue_cap
    j = cumsum(valid).astype(I32) - 1
    space = Q - st.q_count
    fits = valid & (j < space[:, None])
    pos = jnp.where(fits, ((st.q_head + st.q_count)[:, None] + j) % Q, Q)  # Q = out of bounds: dropped
    t_idx = jnp.broadcast_to(jnp.arange(T)[:, None], (T, A))
    n_fit = fits.sum(1).astype(I32)
    st = st.replace(
        q_arrival=st.q_arrival.at[t_idx, pos].set(times, mode="drop"),
        q_prompt=st.q_prompt.at[t_idx, pos].set(prompt, mode="drop"),
        q_out=st.q_out.at[t_idx, pos].set(out, mode="drop"),
        q_generated=st.q_generated.at[t_idx, pos].set(0.0, mode="drop"),
        q_first=st.q_first.at[t_idx, pos].set(-1.0, mode="drop"),
        q_count=st.q_count + n_fit,
    )
    return st, valid.sum(1).astype(I32) - n_fit


def drop_stale(cfg: EnvConfig, st: EnvState, params: EnvParams) -> tuple[EnvState, jax.Array]:
    """Drop the waiting requests (a prefix of each queue window) older than ``max_wait_s`` at
    ``st.t_now``: the clients gave up. Returns the state and the number dropped per tenant [T]."""
    W, Q = cfg.window, cfg.queue_cap
    pos = (st.q_head[:, None] + jnp.arange(W)[None, :]) % Q
    in_q = jnp.arange(W)[None, :] < st.q_count[:, None]
    stale = in_q & (st.t_now - jnp.take_along_axis(st.q_arrival, pos, 1) > params.max_wait_s)
    n = jnp.min(jnp.where(stale, W, jnp.arange(W)[None, :]), axis=1).astype(I32)  # length of the stale prefix
    return st.replace(q_head=(st.q_head + n) % Q, q_count=st.q_count - n), n


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


def requeue_one(cfg: EnvConfig, st: EnvState, slot: jax.Array, do: jax.Array) -> EnvState:
    """Preempt decoding slot ``slot`` if ``do``: push it to the front of its tenant's queue (scalar ops)."""
    Q = cfg.queue_cap
    t = st.tenant[slot]
    fits = do & (st.q_count[t] < Q)
    pos = jnp.where(fits, (st.q_head[t] - 1) % Q, Q)
    hit = do & (jnp.arange(cfg.n_slots) == slot)
    ss = st.step_stats
    return st.replace(
        q_arrival=st.q_arrival.at[t, pos].set(st.t_arrival[slot], mode="drop"),
        q_prompt=st.q_prompt.at[t, pos].set(st.prompt[slot], mode="drop"),
        q_out=st.q_out.at[t, pos].set(st.out_len[slot], mode="drop"),
        q_generated=st.q_generated.at[t, pos].set(st.generated[slot], mode="drop"),
        q_first=st.q_first.at[t, pos].set(st.t_first[slot], mode="drop"),
        q_head=st.q_head.at[t].set(jnp.where(fits, pos, st.q_head[t])),
        q_count=st.q_count.at[t].add(fits.astype(I32)),
        active=st.active & ~hit,
        step_stats=ss.replace(
            dropped=ss.dropped.at[t].add((do & ~fits).astype(I32)),
            preemptions=ss.preemptions + do.astype(I32),
            recomputed_tokens=ss.recomputed_tokens + jnp.where(do, lost_tokens(st)[slot], 0.0),
        ),
    )


class QueueWindow(NamedTuple):
    """The first ``window`` entries of each tenant's queue [T, W]."""

    in_queue: jax.Array  # bool: the entry exists
    arrival: jax.Array  # f32 s: its arrival time
    position: jax.Array  # i32: its index in the queue ring


def window(cfg: EnvConfig, st: EnvState) -> QueueWindow:
    """The queue entries admission considers this leap."""
    W, Q = cfg.window, cfg.queue_cap
    position = (st.q_head[:, None] + jnp.arange(W)[None, :]) % Q
    in_queue = jnp.arange(W)[None, :] < st.q_count[:, None]
    return QueueWindow(in_queue, jnp.take_along_axis(st.q_arrival, position, 1), position)


def admit(cfg: EnvConfig, params: EnvParams, plan: Plan, st: EnvState, allowed, win: QueueWindow,
          admit_until=None) -> EnvState:
    """Admit the longest FCFS (or priority) prefix of waiting requests that fits slots and KV.

    Candidates are the window's entries that arrive by ``admit_until`` (default ``st.t_now``; the
    engine passes the end of the leap's guaranteed length, and the prefill waits for the arrival), ranked (ineligible last,
    priority first when ``plan.priority_mode``, then arrival time, tenant, window position). The
    admitted prefix is limited by free slots, ``plan.batch_cap``, the prefill ring's room and the free
    KV blocks (each reserves its prompt + tokens generated before + 1). Admitted requests take the
    free slots in order, join the prefill ring, and leave their queues' heads.
    """
    T, W, Q, B, P = cfg.n_tenants, cfg.window, cfg.queue_cap, cfg.n_slots, cfg.prefill_ring
    t0 = st.t_now if admit_until is None else admit_until
    in_q, c_arrival, pos = win
    eligible = in_q & (c_arrival <= t0)
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
        e, a = flat(eligible), flat(c_arrival)
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
    # the blocks its KV will take at admission (kv_tokens below: prompt + tokens generated before, which
    # is fluid for a preempted request, + the first token)
    o_target = take_o(c_prompt.astype(F32) + c_gen)
    need_blocks = blocks_for(o_target + 1.0)
    free_blocks = plan.pool_blocks - kv_blocks(st).sum()
    free_slot = ~st.active
    n_free = free_slot.sum()
    room = jnp.minimum(jnp.minimum(n_free, plan.batch_cap - (B - n_free)), P - st.pr_count)
    ok = allowed & o_elig & (idx < room) & (cumsum(need_blocks) <= free_blocks)
    n_admitted = jnp.min(jnp.where(ok, TW, idx)).astype(I32)  # first failure: admit a prefix (FCFS head-of-line)

    # the r-th admitted request goes to the r-th free slot
    max_admitted = min(TW, P)
    r_free = (cumsum(free_slot) - 1.0).astype(I32)
    slot_of_rank = jnp.full(max_admitted, B, I32).at[jnp.where(free_slot, r_free, max_admitted)].set(jnp.arange(B, dtype=I32), mode="drop")
    admit_rank = jnp.arange(max_admitted)
    dest = jnp.where(admit_rank < n_admitted, slot_of_rank, B)  # B: out of bounds, dropped
    src = order[:max_admitted] if T > 1 else admit_rank
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
        t_arrival=put(st.t_arrival, sel(c_arrival)),
        t_first=put(st.t_first, sel(c_first)),
        ready_at=put(st.ready_at, NEVER),
    )
    # append admitted slots to the prefill ring in admission order
    pr_slot = st.pr_slot.at[jnp.where(admit_rank < n_admitted, st.pr_count + admit_rank, P)].set(slot_of_rank, mode="drop")
    # pop admitted entries from each tenant's queue head (they are a prefix per tenant)
    if T == 1:
        n_t = n_admitted[None]
    else:
        admitted = jnp.zeros(TW, bool).at[order].set(idx < n_admitted).reshape(T, W)
        n_t = admitted.sum(1).astype(I32)
    return st.replace(pr_slot=pr_slot, pr_count=st.pr_count + n_admitted, q_head=(st.q_head + n_t) % Q, q_count=st.q_count - n_t)
