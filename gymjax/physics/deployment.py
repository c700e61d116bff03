"""The deployment plan: what an action means for the cluster's memory and compute this step.

:func:`plan` turns a :class:`~gymjax.types.ServeAction` into the per-step constants of a
:class:`~gymjax.types.Plan`: the tier's bytes per weight and GEMM peak, the prefill/decode placement,
the KV pool (HBM budget minus weights and activations, in 16-token blocks, summed over the decode
GPUs), the expected tokens per verification E(k), and whether the configuration can serve at all.
"""

from __future__ import annotations

import jax.numpy as jnp

from gymjax.physics import speculation
from gymjax.presets import KV_BLOCK_TOKENS, PD_MODES
from gymjax.types import EnvConfig, EnvParams, Plan, ServeAction

F32 = jnp.float32

PD_DISAGGREGATED = jnp.array([m.disaggregated for m in PD_MODES])  # [modes] bool
PD_CHUNK_TOKENS = jnp.array([m.chunk_tokens for m in PD_MODES], F32)  # [modes] token budget per iteration
PD_PREFILL_SHARE = jnp.array([m.prefill_fraction for m in PD_MODES], F32)  # [modes] share of GPUs prefilling


def plan(cfg: EnvConfig, params: EnvParams, action: ServeAction) -> Plan:
    """Per-step constants of the configuration ``action``: KV pool, roofline inputs, validity.

    Per GPU (bytes): weights = (linear_params · tier bytes + embed_params · 2) / tp; activations =
    activation_bytes_per_token · chunk; KV = kv_budget_fraction · hbm_bytes - weights - activations.
    The engine serves only when that KV room is positive, the HBM left outside the budget holds the
    CUDA context, and the pool holds at least one block.
    """
    tier = action.quantization_tier
    pd = action.prefill_decode_split
    disagg = PD_DISAGGREGATED[pd]
    share = PD_PREFILL_SHARE[pd]
    chunk = PD_CHUNK_TOKENS[pd]
    bytes_per_weight = params.tier_weight_bytes[tier]
    weights_per_gpu = (params.linear_params * bytes_per_weight + params.embed_params * 2.0) / params.tensor_parallel
    activation_bytes = params.activation_bytes_per_token * chunk
    budget = action.kv_budget_fraction * params.hbm_bytes
    kv_per_gpu = budget - weights_per_gpu - activation_bytes
    headroom_ok = (1.0 - action.kv_budget_fraction) * params.hbm_bytes >= params.cuda_context_bytes
    kv_bytes_per_token = params.kv_elems_per_token * params.tier_kv_bytes_per_elem[tier]
    decode_gpus = params.n_gpus * jnp.where(disagg, 1.0 - share, 1.0)
    pool_tokens = decode_gpus * jnp.maximum(kv_per_gpu, 0.0) / kv_bytes_per_token
    pool_blocks = jnp.floor(pool_tokens / KV_BLOCK_TOKENS)
    k = action.speculation_depth.astype(F32)
    return Plan(
        serving_ok=(kv_per_gpu > 0) & headroom_ok & (pool_blocks >= 1),
        batch_cap=jnp.minimum(action.batch_cap, cfg.n_slots),
        pool_blocks=pool_blocks,
        kv_bytes_per_token=kv_bytes_per_token,
        weight_bytes=bytes_per_weight,
        gemm_peak=params.tier_gemm_peak_flops[tier],
        chunk=chunk,
        disagg=disagg,
        prefill_share=share,
        spec_k=k,
        tok_per_iter=speculation.tokens_per_verification(speculation.acceptance(params), k),
        priority_mode=action.priority_routing > 0,
        quality_cost=params.tier_quality_cost[tier],
        weights_gb_per_gpu=weights_per_gpu / 1e9,
        activation_bytes=activation_bytes,
    )
