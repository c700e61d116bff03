"""Speculative decoding: a draft model proposes ``k`` tokens, the target model verifies them in one
pass over ``k + 1`` query tokens per sequence, and accepts a prefix.

With a per-token acceptance probability ``alpha`` (independent tokens), one verification emits
``E(k) = 1 + alpha + ... + alpha^k = (1 - alpha^(k+1)) / (1 - alpha)`` tokens per sequence, and takes
one target pass over ``B·(k+1)`` tokens plus ``k`` draft steps, each costing ``spec_draft_cost_ratio``
times a plain (one token per sequence) target decode step. The engine's leaps
(:mod:`gymjax.engine`) and the heuristic baseline (:func:`gymjax.baselines.speculation_by_goodput`)
both use these functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.physics.roofline import decode_attn_flops, iter_time
from gymjax.types import EnvParams, Plan

DRAFT_COST_RATIO = 0.1  # default spec_draft_cost_ratio: one draft step costs 0.1 x one target decode step
MAX_ACCEPTANCE = 0.999  # alpha is clipped below 1 so that E(k) stays the closed form


def acceptance(params: EnvParams) -> jax.Array:
    """Per-tenant acceptance probability [T], clipped to [0, MAX_ACCEPTANCE]."""
    return jnp.clip(params.spec_acceptance, 0.0, MAX_ACCEPTANCE)


def tokens_per_verification(alpha, k) -> jax.Array:
    """E(k) = (1 - alpha^(k+1)) / (1 - alpha): expected tokens one verification emits per sequence
    (accepted draft tokens plus the target's own token), for ``k`` (float) draft tokens; 1 at k = 0."""
    return (1.0 - alpha ** (k + 1.0)) / (1.0 - alpha)


def target_step_time(params: EnvParams, plan: Plan, n_seqs, ctx_tokens, share) -> jax.Array:
    """Seconds of one plain target decode step: ``n_seqs`` sequences, one token each, over
    ``ctx_tokens`` cached tokens (summed), on a pool holding ``share`` of the GPUs."""
    return iter_time(params, plan, n_seqs, decode_attn_flops(params, 1.0, ctx_tokens), ctx_tokens * plan.kv_bytes_per_token, share)


def draft_time(params: EnvParams, k, t_target_step) -> jax.Array:
    """Seconds of ``k`` draft steps, each ``spec_draft_cost_ratio`` times a target step of ``t_target_step`` s."""
    return k * params.spec_draft_cost_ratio * t_target_step


def verification_pass_time(params: EnvParams, plan: Plan, n_seqs, ctx_tokens, share, k) -> jax.Array:
    """Seconds of the target's verification pass alone: ``n_seqs·(k+1)`` tokens through the linear
    layers, ``k+1`` queries per sequence over ``ctx_tokens`` cached tokens, one read of that KV."""
    kv_read_bytes = ctx_tokens * plan.kv_bytes_per_token
    return iter_time(params, plan, n_seqs * (k + 1.0), decode_attn_flops(params, k + 1.0, ctx_tokens), kv_read_bytes, share)


def verification_time(params: EnvParams, plan: Plan, n_seqs, ctx_tokens, share, k) -> jax.Array:
    """Seconds of one speculative decode iteration (no prefill): the verification pass plus ``k``
    draft steps. At ``k = 0`` it is one plain decode step."""
    t_step = target_step_time(params, plan, n_seqs, ctx_tokens, share)
    return verification_pass_time(params, plan, n_seqs, ctx_tokens, share, k) + draft_time(params, k, t_step)
