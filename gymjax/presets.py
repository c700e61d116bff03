"""Hardware, model and quantization presets: the one place these constants live.

Everything here is plain Python (no JAX), so the server schema, the docs and the trainer can read it
without importing JAX. Units are in the names: ``_flops`` is FLOP/s, ``_bytes_per_s`` bytes/s,
``_gb`` decimal gigabytes (1e9 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

KV_BLOCK_TOKENS = 16  # vLLM's default paged-attention block size


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer (Llama-3 family shapes)."""

    name: str
    n_layers: int
    d_model: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    d_ffn: int
    vocab: int

    @property
    def linear_params(self) -> int:
        """Non-embedding parameters plus the LM head (the P of the roofline)."""
        qo = 2 * self.d_model * self.n_q_heads * self.head_dim
        kv = 2 * self.d_model * self.n_kv_heads * self.head_dim
        mlp = 3 * self.d_model * self.d_ffn
        return self.n_layers * (qo + kv + mlp) + self.vocab * self.d_model

    @property
    def kv_elems_per_token(self) -> int:
        """K and V elements cached per token over all layers."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim


@dataclass(frozen=True)
class GPUSpec:
    """Dense peak rates of one GPU (no sparsity)."""

    name: str
    peak_bf16_flops: float
    peak_fp8_flops: float  # equals BF16 where there is no FP8 tensor-core path (A100)
    peak_int8_ops: float
    hbm_bandwidth_bytes_per_s: float
    hbm_gb: float
    link_bandwidth_bytes_per_s: float  # per-GPU all-reduce bandwidth (NVLink, one direction)
    kv_transfer_bytes_per_s: float  # prefill->decode KV transfer link when disaggregated
    price_per_gpu_hour: float
    has_fp8: bool


MODELS: dict[str, ModelSpec] = {
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256),
    "llama-3-70b": ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256),
}

GPUS: dict[str, GPUSpec] = {
    "a100": GPUSpec("a100", 312e12, 312e12, 624e12, 2.039e12, 80.0, 300e9, 25e9, 2.0, False),
    "h100": GPUSpec("h100", 989e12, 1979e12, 1979e12, 3.35e12, 80.0, 450e9, 50e9, 3.0, True),
    "h200": GPUSpec("h200", 989e12, 1979e12, 1979e12, 4.8e12, 141.0, 450e9, 50e9, 3.8, True),
}


@dataclass(frozen=True)
class QuantTier:
    """A quantization tier: weight bytes, which GEMM peak it runs at, KV bytes, quality cost."""

    name: str
    weight_bytes: float  # bytes per weight, including group scales
    gemm_peak: str  # "bf16" | "fp8" | "int8"
    kv_bytes_per_elem: float
    quality_cost: float  # fractional quality loss the reward and grader charge per token


# FP8 keeps a BF16 KV cache (this reproduces the FP8 row of the README's roofline table); INT8 (W8A8
# SmoothQuant-style) and INT4 (W4A16, AWQ-style, group 128) run with an 8-bit KV cache.
QUANT_TIERS: tuple[QuantTier, ...] = (
    QuantTier("bf16", 2.0, "bf16", 2.0, 0.0),
    QuantTier("fp8", 1.0, "fp8", 2.0, 0.003),
    QuantTier("int8", 1.0, "int8", 1.0, 0.02),
    QuantTier("int4", 0.5 + 2.0 / 128.0, "bf16", 1.0, 0.03),
)

# Prefill/decode placement modes: the `prefill_decode_split` knob indexes this table.
# Colocated modes run chunked prefill with the given per-iteration token budget (vLLM's
# max_num_batched_tokens); disaggregated modes move the given fraction of the cluster's GPUs to a
# prefill pool and pay a KV transfer per request.
@dataclass(frozen=True)
class PDMode:
    name: str
    disaggregated: bool
    chunk_tokens: int  # colocated: token budget per iteration; disaggregated: prefill-pool chunk
    prefill_fraction: float  # share of GPUs in the prefill pool (0 when colocated)


PD_MODES: tuple[PDMode, ...] = (
    PDMode("colocated-chunk-256", False, 256, 0.0),
    PDMode("colocated-chunk-512", False, 512, 0.0),
    PDMode("colocated-chunk-2048", False, 2048, 0.0),
    PDMode("colocated-chunk-8192", False, 8192, 0.0),
    PDMode("disaggregated-prefill-25", True, 8192, 0.25),
    PDMode("disaggregated-prefill-50", True, 8192, 0.5),
)

# Roofline calibration (gymjax.physics.roofline; sources, fit and error table in docs/fidelity.md, "Iteration
# time: the roofline and its sources"; checked by tests/test_roofline.py against public measurements).
ETA_FLOPS = 0.72
"""GEMM efficiency: fraction of the tier's dense peak the linear layers reach when compute-bound. Vidur's
per-operator profiles measure 0.66-0.73 (A100, Llama-3-8B, 1k-8k tokens) and 0.72-0.76 (H100, Llama-2-7B,
1.7k-4k tokens)."""
ETA_BANDWIDTH = 0.78
"""Weight-streaming efficiency: fraction of HBM bandwidth the linear layers reach at one token (GEMV).
Vidur measures 0.77 on both A100 and H100 at one token."""
ETA_ATTENTION = 0.72
"""Decode-attention KV streaming efficiency (paged attention). Vidur's FlashInfer decode profiles on A100
measure 0.69-0.77 at 64-128 sequences."""
ETA_ATTN_FLOPS = 0.50
"""Prefill-attention efficiency: fraction of the BF16 peak that causal FlashAttention-style kernels reach.
Vidur's FlashInfer prefill profiles on A100 measure 0.35 (2k tokens), 0.46 (4k) and 0.52-0.54 (8k-13k)."""
ETA_ELEMENTWISE = 0.50
"""Bandwidth efficiency of the non-GEMM per-token kernels (RMSNorm, RoPE, SwiGLU, residual adds): each
layer streams about ``activation_bytes_per_token`` per token at this fraction of HBM bandwidth. Vidur
measures 0.50-0.52 (A100, Llama-3-8B, 1k-8k tokens) and 0.49-0.51 (H100, Llama-2-7B, 2k-4k tokens)."""
GEMM_SMOOTHNESS = 2.0
"""p of the linear layers' smooth maximum ``(compute^p + streaming^p)^(1/p)``. A hard max (p -> inf) is
flat up to the ridge; measured GEMM time already grows well before it (Vidur: +36 % at 128 tokens on A100,
+15 % on H100). p = 2 fits both within 6 %."""
T_FIXED_S = 0.5e-3
"""Fixed per-iteration overhead of a CUDA-graph engine outside the layers (sampling, scheduling)."""
T_LAYER_S = 50e-6
"""Per-layer latency floor of the small kernels (norms, RoPE, activation, residual adds, the attention
launch) that no roofline term captures at small batch. Vidur measures 53 us per layer at one token (A100);
with T_FIXED_S it reproduces end-to-end decode steps of vLLM (H200) and TensorRT-LLM (H100, 80 layers)."""
ALLREDUCE_LATENCY_S = 7.9e-6
"""Latency of one tensor-parallel all-reduce (two per layer), added to its bandwidth term."""
