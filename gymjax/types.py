"""The pytrees of the environment: static sizes, params, state, the plan, the typed action and the
typed observation.

Every per-cluster quantity is an array so that ``vmap`` works over params as well as over keys.
Shapes use ``B`` = running-batch slots, ``T`` = tenants, ``Q`` = queue capacity per tenant,
``P`` = prefill-ring capacity, ``H`` = histogram bins, ``A`` = max arrivals per tenant per step.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np
from flax import struct

from gymjax.spaces import KNOB_NAMES, knob_table

MAX_SLOTS = 4096  # largest batch cap a ServeAction may name; an env also checks its own n_slots


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
    n_hist: int = 384  # H: log-spaced latency histogram bins over 1 ms .. 1,000 s (percentiles within ±1.8 %)
    n_quantiles: int = 64  # NQ: points of the length quantile tables
    preempt_per_leap: int = 4  # victims one leap may preempt
    use_trace: bool = False  # arrivals come from params.trace_* instead of the synthetic process
    request_log: int = 0  # L: finished requests logged per interval in info["requests"] (0: no log)


def _is_concrete(x) -> bool:
    return isinstance(x, (numbers.Number, np.ndarray, np.generic)) and not isinstance(x, jax.core.Tracer)


@struct.dataclass
class ServeAction:
    """The six control knobs, in user units. See :func:`gymjax.spaces.knob_table` for ranges.

    Fields (scalars, or arrays with a leading batch axis under ``vmap``):
      batch_cap: int, max sequences in the running batch, 1..n_slots.
      kv_budget_fraction: float, share of HBM claimed by the engine, 0.05..1.0.
      speculation_depth: int, draft tokens per verification, 0..8.
      quantization_tier: int, index into ``presets.QUANT_TIERS`` (0 bf16, 1 fp8, 2 int8, 3 int4).
      prefill_decode_split: int, index into ``presets.PD_MODES``.
      priority_routing: int, 0 FCFS or 1 priority-first.

    Built outside ``jit`` from Python or NumPy values, it validates each field and raises a
    ``ValueError``/``TypeError`` naming the field and its range.
    """

    batch_cap: jax.Array
    kv_budget_fraction: jax.Array
    speculation_depth: jax.Array
    quantization_tier: jax.Array
    prefill_decode_split: jax.Array
    priority_routing: jax.Array

    def __post_init__(self):
        for knob in knob_table(MAX_SLOTS):
            v = getattr(self, knob.name)
            if isinstance(v, (str, bytes, list, tuple, dict)):
                raise TypeError(
                    f"ServeAction.{knob.name} must be a number ({knob.kind}) in [{knob.low:g}, {knob.high:g}], got {type(v).__name__} {v!r}"
                )
            if not _is_concrete(v):
                continue  # traced or placeholder values: in range by construction inside jit
            arr = np.asarray(v)
            if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
                raise TypeError(f"ServeAction.{knob.name} must be a number ({knob.kind}), got {type(v).__name__}")
            if knob.kind == "int" and not np.issubdtype(arr.dtype, np.integer):
                if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                    raise TypeError(f"ServeAction.{knob.name} must be an integer in [{knob.low:g}, {knob.high:g}], got {v!r}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"ServeAction.{knob.name} must be finite, got {v!r}")
            if np.any(arr < knob.low) or np.any(arr > knob.high):
                raise ValueError(f"ServeAction.{knob.name}={v!r} is out of range [{knob.low:g}, {knob.high:g}] ({knob.unit}): {knob.doc}")

    @classmethod
    def create(cls, **fields) -> ServeAction:
        """Build a validated action from keyword arguments; all six fields are required."""
        missing = [k for k in KNOB_NAMES if k not in fields]
        extra = [k for k in fields if k not in KNOB_NAMES]
        if missing or extra:
            raise ValueError(f"ServeAction needs exactly the fields {list(KNOB_NAMES)}; missing {missing}, unknown {extra}")
        return cls(**fields)

    def to_dict(self) -> dict:
        return {k: (float(getattr(self, k)) if k == "kv_budget_fraction" else int(getattr(self, k))) for k in KNOB_NAMES}


@struct.dataclass
class Observation:
    """Named metrics of one control interval (what a dashboard shows). Scalars unless noted.

    queue_depth: requests waiting (all tenants). running: requests in the batch.
    ttft_p50_s, ttft_p99_s: time to first token of first tokens emitted this interval, s.
    itl_p50_s, itl_p99_s: inter-token gap over all tokens decoded this interval, s.
    tpot_p50_s, tpot_p99_s: time per output token of requests finished this interval, s.
    throughput_tps: output tokens per second. prefill_tps: prompt (and recompute) tokens per second.
    kv_occupancy: used KV blocks / pool blocks, [0, 1]. gpu_memory_gb: mean HBM in use per GPU, GB.
    slo_attainment: requests meeting both SLOs / requests that ended this interval (finished or
      dropped); 1 when none ended. goodput_rps: requests meeting SLO per second.
    cost_per_1k_tokens: $ per 1000 output tokens this interval (capped at 100).
    arrival_rate: requests arrived per second. preemptions: preemptions this interval.
    dropped: requests dropped (queue full or timed out) this interval.
    invalid_config: 1 when the engine could not serve (weights or activations do not fit).
    reconfig_remaining_s: seconds until a reload/drain finishes. progress: step / horizon.
    queue_depth_per_tenant [T], arrival_rate_per_tenant [T].
    """

    queue_depth: jax.Array
    running: jax.Array
    ttft_p50_s: jax.Array
    ttft_p99_s: jax.Array
    itl_p50_s: jax.Array
    itl_p99_s: jax.Array
    tpot_p50_s: jax.Array
    tpot_p99_s: jax.Array
    throughput_tps: jax.Array
    prefill_tps: jax.Array
    kv_occupancy: jax.Array
    gpu_memory_gb: jax.Array
    slo_attainment: jax.Array
    goodput_rps: jax.Array
    cost_per_1k_tokens: jax.Array
    arrival_rate: jax.Array
    preemptions: jax.Array
    dropped: jax.Array
    invalid_config: jax.Array
    reconfig_remaining_s: jax.Array
    progress: jax.Array
    queue_depth_per_tenant: jax.Array
    arrival_rate_per_tenant: jax.Array


@struct.dataclass
class EnvParams:
    """Everything that configures one cluster; all arrays, so ``vmap`` over params works.

    Hardware/model (scalars): see field comments. Tier tables have shape [4] (one per quantization
    tier). Tenant tables have shape [T]. Length quantile tables [T, NQ]. Trace tables
    [n_bins, T, A] (a [1, T, A] dummy for synthetic tasks).
    """

    # model
    n_layers: jax.Array
    d_model: jax.Array
    linear_params: jax.Array  # P: non-embedding params + LM head
    embed_params: jax.Array  # input embedding (kept in BF16)
    kv_elems_per_token: jax.Array
    # GPU and cluster
    peak_bf16_flops: jax.Array
    tier_gemm_peak_flops: jax.Array  # [4] peak of the GEMM path each tier runs on this GPU
    tier_weight_bytes: jax.Array  # [4]
    tier_kv_bytes_per_elem: jax.Array  # [4]
    tier_quality_cost: jax.Array  # [4]
    tier_fallback: jax.Array  # [4] 1 where the tier runs without its fast path (FP8 on A100)
    hbm_bandwidth_bytes_per_s: jax.Array
    hbm_bytes: jax.Array  # per GPU
    link_bandwidth_bytes_per_s: jax.Array
    kv_transfer_bytes_per_s: jax.Array
    price_per_gpu_hour: jax.Array
    n_gpus: jax.Array
    tensor_parallel: jax.Array
    # roofline calibration (gymjax.presets documents each; docs/fidelity.md the sources)
    eta_flops: jax.Array
    eta_bandwidth: jax.Array
    eta_attention: jax.Array
    eta_attn_flops: jax.Array
    eta_elementwise: jax.Array
    gemm_smoothness: jax.Array  # p of the smooth max (c^p + m^p)^(1/p) of compute and streaming time
    t_fixed_s: jax.Array
    t_layer_s: jax.Array
    allreduce_latency_s: jax.Array
    # engine
    cuda_context_bytes: jax.Array  # per GPU, outside the engine's budget
    activation_bytes_per_token: jax.Array  # per GPU, per token of the iteration token budget
    spec_draft_cost_ratio: jax.Array  # c: one draft step costs c x one target decode step
    reload_s: jax.Array  # quantization-tier change: weights reload, running KV lost
    drain_s: jax.Array  # prefill/decode split change: pools drained and re-formed
    max_wait_s: jax.Array  # a request waiting longer than this is dropped (client timeout)
    # tenants [T]
    priority: jax.Array  # higher = more important
    slo_ttft_s: jax.Array
    slo_tpot_s: jax.Array
    spec_acceptance: jax.Array  # alpha
    base_rate_rps: jax.Array
    burst_high_mult: jax.Array  # rate multiplier in the "on" phase of the Markov-modulated process
    burst_low_mult: jax.Array  # multiplier in the "off" phase
    p_on_to_off: jax.Array  # per-step switching probabilities
    p_off_to_on: jax.Array
    burst_mirror: jax.Array  # i32: -1 = own Markov chain; j >= 0 = "on" exactly when tenant j is "off" (mix shifts)
    drift: jax.Array  # relative rate change from start to end of the horizon
    diurnal_amp: jax.Array
    diurnal_period_s: jax.Array
    prompt_quantiles: jax.Array  # [T, NQ] tokens
    output_quantiles: jax.Array  # [T, NQ] tokens
    # trace replay [n_bins, T, A]
    trace_count: jax.Array  # [n_bins, T] int32
    trace_offset_s: jax.Array
    trace_prompt: jax.Array
    trace_output: jax.Array
    # episode
    dt_s: jax.Array
    horizon_steps: jax.Array
    # reward and grader weights
    reward_norm_rps: jax.Array  # requests/s the reward is normalised by (the task's mean load)
    w_memory: jax.Array
    w_preempt: jax.Array
    ref_cost_per_1k: jax.Array  # the grader's reference $/1k tokens (cost score 0.5 there)


@struct.dataclass
class EpisodeStats:
    """Cumulative per-episode counters the grader reads. [T] arrays are per tenant."""

    arrived: jax.Array  # [T] int32
    finished: jax.Array  # [T] int32
    slo_met: jax.Array  # [T] int32
    dropped: jax.Array  # [T] int32
    output_tokens: jax.Array  # f32
    prefill_tokens: jax.Array  # f32
    recomputed_tokens: jax.Array  # f32
    preemptions: jax.Array  # int32
    cost_usd: jax.Array  # f32
    quality_loss_tokens: jax.Array  # f32: sum of tokens x tier quality cost
    invalid_steps: jax.Array  # int32
    steps: jax.Array  # int32
    reward_sum: jax.Array  # f32
    # whole-episode latency histograms [H] (log bins, gymjax.physics.numerics.hist_bin); percentiles
    # with gymjax.physics.accounting.episode_latency_percentiles
    hist_ttft: jax.Array  # first tokens, by TTFT (queueing included)
    hist_tpot: jax.Array  # finished requests with >1 output token, by TPOT
    hist_e2e: jax.Array  # finished requests, by end-to-end latency
    hist_itl: jax.Array  # decoded tokens, by inter-token gap


@struct.dataclass
class StepStats:
    """Per-interval accumulators, reset at the start of every step."""

    hist_ttft: jax.Array  # [H]
    hist_itl: jax.Array  # [H]
    hist_tpot: jax.Array  # [H]
    hist_e2e: jax.Array  # [H]
    output_tokens: jax.Array
    prefill_tokens: jax.Array
    finished: jax.Array  # [T]
    slo_met: jax.Array  # [T]
    dropped: jax.Array  # [T]
    arrived: jax.Array  # [T]
    preemptions: jax.Array
    recomputed_tokens: jax.Array
    kv_blocks_used_max: jax.Array
    # opt-in per-request log (EnvConfig.request_log = L rows; [0, 6] when off): one row per request
    # finished this interval, columns REQUEST_LOG_COLUMNS; requests_logged counts them all (rows
    # past L are not kept: a count above L says the log overflowed)
    requests: jax.Array  # [L, 6] f32
    requests_logged: jax.Array  # i32


REQUEST_LOG_COLUMNS = ("arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "tenant")


@struct.dataclass
class EnvState:
    """The state of one cluster. Times are seconds since the episode began (float32)."""

    # running batch [B]
    active: jax.Array  # bool
    tenant: jax.Array  # int32
    prompt: jax.Array  # int32 prompt tokens
    out_len: jax.Array  # int32 output tokens the request will produce (the engine does not read it)
    target: jax.Array  # f32 tokens to prefill at (re)admission: prompt + tokens generated before
    prefilled: jax.Array  # f32 tokens prefilled so far
    generated: jax.Array  # f32 output tokens so far (fluid within a leap)
    kv_tokens: jax.Array  # f32 tokens holding KV: target + tokens decoded since admission
    t_arrival: jax.Array  # f32
    t_first: jax.Array  # f32 first-token time, -1 before it
    ready_at: jax.Array  # f32 time decode may start (inf while prefilling)
    # prefill ring [P]: slot indices in admission (FCFS) order, kept compacted at the front
    pr_slot: jax.Array
    pr_count: jax.Array
    # waiting queue: a FIFO ring per tenant [T, Q]
    q_arrival: jax.Array
    q_prompt: jax.Array
    q_out: jax.Array
    q_generated: jax.Array
    q_first: jax.Array
    q_head: jax.Array  # [T]
    q_count: jax.Array  # [T]
    # engine
    t_now: jax.Array  # engine clock
    down_until: jax.Array  # engine reloading/draining until this time
    action: ServeAction  # the configuration in force
    configured: jax.Array  # bool: False until the first step deploys the first action (no reload cost)
    burst_on: jax.Array  # [T] Markov-modulated phase
    step: jax.Array
    trace_start: jax.Array  # bin the trace replay started at
    step_stats: StepStats
    episode: EpisodeStats


class Plan(NamedTuple):
    """Per-step constants derived from the action in force and the params
    (:func:`gymjax.physics.deployment.plan`)."""

    serving_ok: jax.Array  # bool: configuration is valid
    batch_cap: jax.Array  # i32 sequences
    pool_blocks: jax.Array  # f32 KV blocks in the (decode) pool
    kv_bytes_per_token: jax.Array  # bytes of KV per cached token (all layers)
    weight_bytes: jax.Array  # bytes per linear-layer weight of the tier
    gemm_peak: jax.Array  # FLOP/s of the tier's GEMM path
    chunk: jax.Array  # token budget per iteration (per replica)
    disagg: jax.Array  # bool
    prefill_share: jax.Array  # share of GPUs doing prefill when disaggregated
    spec_k: jax.Array  # f32 speculation depth (draft tokens per verification)
    tok_per_iter: jax.Array  # [T] expected tokens per verification step
    priority_mode: jax.Array  # bool
    quality_cost: jax.Array  # quality loss per output token of the tier
    weights_gb_per_gpu: jax.Array  # GB
    activation_bytes: jax.Array  # bytes per GPU
