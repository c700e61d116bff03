"""The roofline: seconds per engine iteration, and the attention FLOPs it is fed.

For one replica with tensor parallel t and N tokens in the iteration (docs/fidelity.md derives each term
and holds it against public measurements)::

    T = T_fixed + L·T_layer + T_tp
      + smax_p( 2·P·N / (η_F·Peak_q·t),  P·w_q / (η_B·BW·t) )          # linear layers
      + N·L·a / (η_E·BW)                                              # norms, RoPE, SwiGLU, residuals
      + smax_p( F_attn / (η_AF·Peak_bf16·t),  KV_read / (η_A·BW·t) )  # attention

where ``smax_p(c, m) = (c^p + m^p)^(1/p)`` is a smooth maximum: GEMM time grows before the ridge instead
of staying flat up to it, and meets the larger bound far from it. ``a`` is the activation bytes per token
per GPU (``activation_bytes_per_token``), ``T_layer`` the per-layer floor of the small kernels. The
efficiencies, p and the overheads are the calibration in :mod:`gymjax.presets`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax.types import EnvParams, Plan


def smooth_max(a, b, p) -> jax.Array:
    """``(a^p + b^p)^(1/p)`` for a, b >= 0, computed on the ratios so that a large p (towards the hard
    maximum) neither overflows nor underflows."""
    hi = jnp.maximum(jnp.maximum(a, b), 1e-30)
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


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
    bw = params.hbm_bandwidth_bytes_per_s
    linear = smooth_max(
        2.0 * p * n_r / (params.eta_flops * plan.gemm_peak * tp),
        p * plan.weight_bytes / (params.eta_bandwidth * bw * tp),
        params.gemm_smoothness,
    )
    elementwise = n_r * params.n_layers * params.activation_bytes_per_token / (params.eta_elementwise * bw)
    attention = smooth_max(
        attn_flops / r / (params.eta_attn_flops * params.peak_bf16_flops * tp),
        kv_read_bytes / r / (params.eta_attention * bw * tp),
        params.gemm_smoothness,
    )
    ring = 2.0 * (tp - 1.0) / tp
    t_tp = jnp.where(
        tp > 1,
        2.0 * params.n_layers * (params.allreduce_latency_s + n_r * params.d_model * 2.0 * ring / params.link_bandwidth_bytes_per_s),
        0.0,
    )
    fixed = params.t_fixed_s + params.n_layers * params.t_layer_s
    return fixed + t_tp + (linear + elementwise + attention) / slice_


def decode_attn_flops(params: EnvParams, n_queries, ctx_tokens):
    """Attention FLOPs of ``n_queries`` query tokens per sequence over ``ctx_tokens`` cached tokens
    (summed over the sequences): 4·L·d·n_queries·ctx_tokens."""
    return 4.0 * params.n_layers * params.d_model * n_queries * ctx_tokens


def prefill_attn_flops(params: EnvParams, n, k):
    """Attention FLOPs of a prefill chunk of ``n`` tokens over ``k`` cached tokens: 4·L·d·n·(k + n/2)."""
    return 4.0 * params.n_layers * params.d_model * n * (k + n / 2.0)
