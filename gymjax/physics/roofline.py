"""The roofline: seconds per engine iteration, and the attention FLOPs it is fed.

An iteration's linear layers take the larger of their compute time (2·P FLOPs per token at the
tier's GEMM peak) and their weight-streaming time (P·bytes-per-weight at HBM bandwidth); attention
takes the larger of its FLOPs at the BF16 peak and its KV reads at HBM bandwidth. Tensor parallel
adds two all-reduces per layer. Efficiencies ``eta_*`` and the fixed overhead ``t_fixed_s`` are the
calibration in :mod:`gymjax.presets` (checked against DESIGN.md's table by tests/test_roofline.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.types import EnvParams, Plan


def iter_time(params: EnvParams, plan: Plan, n_tokens, attn_flops, kv_read_bytes, share) -> jax.Array:
    """Seconds for one engine iteration of a pool holding ``share`` (0..1) of the cluster's GPUs.

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
    """Attention FLOPs of ``n_queries`` query tokens per sequence over ``ctx_tokens`` cached tokens
    (summed over the sequences): 4·L·d·n_queries·ctx_tokens."""
    return 4.0 * params.n_layers * params.d_model * n_queries * ctx_tokens


def prefill_attn_flops(params: EnvParams, n, k):
    """Attention FLOPs of a prefill chunk of ``n`` tokens over ``k`` cached tokens: 4·L·d·n·(k + n/2)."""
    return 4.0 * params.n_layers * params.d_model * n * (k + n / 2.0)
