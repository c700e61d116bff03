"""Task definitions: the specs of the synthetic tasks and their arrays.

A task is a :class:`TaskSpec`: a model on a GPU cluster, tenants with SLO classes and arrival
processes, a horizon, and static sizes. :func:`build_params` turns it into :class:`EnvParams`
arrays; :mod:`gymjax.registry` names the tasks for :func:`gymjax.make`.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field

import jax
import numpy as np

from gymjax import presets
from gymjax.env import ServingEnv
from gymjax.physics import speculation
from gymjax.types import EnvConfig, EnvParams


@dataclass(frozen=True)
class LengthDist:
    """Token-length distribution: log-normal (median, sigma) with a hard cap, a mixture of them, or
    an empirical sample (``samples``)."""

    median: float = 1000.0
    sigma: float = 1.0
    cap: int = 8192
    floor: int = 1
    mixture: tuple[tuple[float, float, float], ...] = ()  # (weight, median, sigma) components
    samples: tuple[int, ...] | None = None

    def quantiles(self, n: int) -> np.ndarray:
        """``n`` quantiles at levels (i + 0.5) / n, clipped to [floor, cap] and rounded (float32).
        Memoised per (distribution, n): building a task with new overrides reuses them."""
        try:
            return _quantiles(self, n).copy()
        except TypeError:  # unhashable fields (e.g. samples given as a list): computed, not memoised
            return _quantiles.__wrapped__(self, n).copy()


@functools.lru_cache(maxsize=256)
def _quantiles(dist: LengthDist, n: int) -> np.ndarray:
    levels = (np.arange(n) + 0.5) / n
    if dist.samples is not None:
        q = np.quantile(np.asarray(dist.samples, np.float64), levels)
    else:
        comps = dist.mixture or ((1.0, dist.median, dist.sigma),)
        # quantiles of the mixture by inverting its CDF on a fine grid
        grid = np.exp(np.linspace(np.log(max(dist.floor, 1)), np.log(dist.cap * 4.0), 4096))
        cdf = np.zeros_like(grid)
        for w, med, sig in comps:
            z = (np.log(grid) - np.log(med)) / sig
            cdf += w * np.array([statistics.NormalDist().cdf(v) for v in z])
        cdf /= sum(w for w, _, _ in comps)
        q = np.interp(levels, cdf, grid)
    out = np.clip(np.round(q), dist.floor, dist.cap).astype(np.float32)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class TenantSpec:
    """One tenant: SLO class, priority, speculation acceptance, arrival process, lengths."""

    name: str = "chat"
    priority: float = 1.0
    slo_ttft_s: float = 2.0
    slo_tpot_s: float = 0.05
    spec_acceptance: float = 0.7
    base_rate_rps: float = 10.0
    burst_high_mult: float = 1.0
    burst_low_mult: float = 1.0
    p_on_to_off: float = 0.0
    p_off_to_on: float = 0.0
    burst_mirror: int = -1  # >= 0: this tenant is "on" exactly when that tenant is "off" (a traffic-mix shift)
    drift: float = 0.0
    diurnal_amp: float = 0.0
    diurnal_period_s: float = 600.0
    prompt: LengthDist = field(default_factory=lambda: LengthDist(1020.0, 0.9, 8192))
    output: LengthDist = field(default_factory=lambda: LengthDist(129.0, 0.9, 1000))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    model: str = "llama-3-8b"
    gpu: str = "h100"
    n_gpus: int = 1
    tensor_parallel: int = 1
    tenants: tuple[TenantSpec, ...] = (TenantSpec(),)
    horizon_steps: int = 200
    dt_s: float = 1.0
    max_wait_s: float = 30.0
    config: EnvConfig = EnvConfig()
    # trace replay: per-bin arrivals [n_bins, T, A] (set by the trace tasks)
    trace: dict | None = None
    source: str | None = None  # the trace file a user's trace task replays (absolute path), else None
    w_memory: float = 0.05
    w_preempt: float = 0.05


# ---------------------------------------------------------------------------------------------------
# What a task may be: every field's type and physical range, checked by gymjax.make (and so by the
# server) before anything is built. A value outside gets an InvalidTaskField naming field and range.
# ---------------------------------------------------------------------------------------------------

MAX_GPUS = 4096
MAX_HORIZON_STEPS = 10_000_000

# TaskSpec fields: (kind, low, high, low_open); "int" means a Python/NumPy integer, never a bool
SPEC_LIMITS: dict[str, tuple[str, float, float, bool]] = {
    "n_gpus": ("int", 1, MAX_GPUS, False),
    "tensor_parallel": ("int", 1, 64, False),
    "horizon_steps": ("int", 1, MAX_HORIZON_STEPS, False),
    "dt_s": ("float", 1e-3, 3600.0, False),  # one control interval: 1 ms .. 1 h of simulated time
    "max_wait_s": ("float", 0.0, 86400.0, False),
    "w_memory": ("float", 0.0, 100.0, False),
    "w_preempt": ("float", 0.0, 100.0, False),
}
# EnvConfig sizes (they fix array shapes)
CONFIG_LIMITS: dict[str, tuple[str, float, float, bool]] = {
    "n_slots": ("int", 1, 4096, False),
    "n_tenants": ("int", 1, 64, False),
    "queue_cap": ("int", 1, 65536, False),
    "window": ("int", 1, 4096, False),
    "prefill_ring": ("int", 1, 4096, False),
    "max_arrivals": ("int", 1, 65536, False),
    "n_leaps": ("int", 1, 1024, False),
    "n_hist": ("int", 2, 1024, False),
    "n_quantiles": ("int", 2, 4096, False),
    "preempt_per_leap": ("int", 0, 4096, False),
    "request_log": ("int", 0, 65536, False),
}
# TenantSpec fields
TENANT_LIMITS: dict[str, tuple[str, float, float, bool]] = {
    "priority": ("float", 0.0, 1000.0, True),
    "slo_ttft_s": ("float", 0.0, 86400.0, True),
    "slo_tpot_s": ("float", 0.0, 3600.0, True),
    "spec_acceptance": ("float", 0.0, 0.99, False),  # 1 would accept every draft token: E(k) divides by 1 - a
    "base_rate_rps": ("float", 0.0, 1e6, False),
    "burst_high_mult": ("float", 0.0, 1e4, False),
    "burst_low_mult": ("float", 0.0, 1e4, False),
    "p_on_to_off": ("float", 0.0, 1.0, False),
    "p_off_to_on": ("float", 0.0, 1.0, False),
    "drift": ("float", -1.0, 1e3, False),
    "diurnal_amp": ("float", 0.0, 1.0, False),
    "diurnal_period_s": ("float", 0.0, 1e9, True),
}


class InvalidTaskField(ValueError):
    """A task field of the wrong type or outside its range. ``field`` names it (as an override of
    :func:`gymjax.make` would), ``allowed`` says what it may be."""

    def __init__(self, field: str, allowed: str, got):
        self.field = field
        self.allowed = allowed
        text = repr(got)
        super().__init__(f"{field} must be {allowed}, got {text if len(text) <= 80 else text[:77] + '...'}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return _is_int(v) or isinstance(v, (float, np.floating))


def describe_limit(kind: str, low: float, high: float, low_open: bool) -> str:
    """``"an integer in [1, 4096]"``, ``"a finite number in (0, 1]"``: how an error states a range."""
    if kind == "int":
        return f"an integer in {'(' if low_open else '['}{int(low)}, {int(high)}]"
    return f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}]"


def check_field(field: str, value, limit: tuple[str, float, float, bool]) -> None:
    """Raise :class:`InvalidTaskField` unless ``value`` has ``limit``'s type and range."""
    kind, low, high, low_open = limit
    ok_type = _is_int(value) if kind == "int" else _is_number(value)
    if not ok_type or not np.isfinite(float(value)):
        raise InvalidTaskField(field, describe_limit(*limit), value)
    v = float(value)
    if v > high or v < low or (low_open and v == low):
        raise InvalidTaskField(field, describe_limit(*limit), value)


def validate_spec(spec: TaskSpec) -> None:
    """Check every field of ``spec`` against :data:`SPEC_LIMITS`, :data:`CONFIG_LIMITS` and
    :data:`TENANT_LIMITS`, and the relations between them: ``tensor_parallel`` divides ``n_gpus``,
    ``window`` <= ``queue_cap``, one ``n_tenants`` per tenant, ``burst_mirror`` names another
    tenant. Raises :class:`InvalidTaskField` (a ``ValueError``) for the first field that fails."""
    for name, limit in SPEC_LIMITS.items():
        check_field(name, getattr(spec, name), limit)
    if spec.n_gpus % spec.tensor_parallel:
        raise InvalidTaskField("tensor_parallel", f"a divisor of n_gpus ({spec.n_gpus}) in [1, 64]", spec.tensor_parallel)
    for name in ("name", "description", "model", "gpu"):
        if not isinstance(getattr(spec, name), str):
            raise InvalidTaskField(name, "a string", getattr(spec, name))
    cfg = spec.config
    if not isinstance(cfg, EnvConfig):
        raise InvalidTaskField("config", "an EnvConfig", cfg)
    for name, limit in CONFIG_LIMITS.items():
        check_field(name, getattr(cfg, name), limit)
    if not isinstance(cfg.use_trace, (bool, np.bool_)):
        raise InvalidTaskField("use_trace", "a bool", cfg.use_trace)
    if cfg.window > cfg.queue_cap:
        raise InvalidTaskField("window", f"an integer in [1, queue_cap = {cfg.queue_cap}]", cfg.window)
    tenants = spec.tenants
    if not isinstance(tenants, tuple) or not tenants or not all(isinstance(t, TenantSpec) for t in tenants):
        raise InvalidTaskField("tenants", "a non-empty tuple of TenantSpec", tenants)
    if cfg.n_tenants != len(tenants):
        raise InvalidTaskField("n_tenants", f"the number of tenants ({len(tenants)})", cfg.n_tenants)
    for i, t in enumerate(tenants):
        for name, limit in TENANT_LIMITS.items():
            check_field(f"tenants[{i}].{name}", getattr(t, name), limit)
        if not _is_int(t.burst_mirror) or not -1 <= t.burst_mirror < len(tenants) or t.burst_mirror == i:
            raise InvalidTaskField(f"tenants[{i}].burst_mirror", f"-1 or another tenant's index in [0, {len(tenants) - 1}]", t.burst_mirror)
        for name in ("prompt", "output"):
            if not isinstance(getattr(t, name), LengthDist):
                raise InvalidTaskField(f"tenants[{i}].{name}", "a LengthDist", getattr(t, name))


def build_params(spec: TaskSpec) -> EnvParams:
    """Arrays of a task (no JAX tracing; call outside jit): :func:`host_params` on the device."""
    return jax.device_put(host_params(spec))


def host_params(spec: TaskSpec) -> EnvParams:
    """The task's :class:`EnvParams` as NumPy arrays (the same values as :func:`build_params`'s). A
    server that builds params per client reset packs these on the host: putting the ~60 arrays on
    the device one by one costs ~5 ms of Python."""
    m = presets.MODELS[spec.model]
    g = presets.GPUS[spec.gpu]
    tiers = presets.QUANT_TIERS
    peak = {"bf16": g.peak_bf16_flops, "fp8": g.peak_fp8_flops, "int8": g.peak_int8_ops}
    ten = spec.tenants
    cfg = spec.config
    f = lambda xs: np.asarray(xs, np.float32)  # noqa: E731
    arr = lambda name: f([getattr(t, name) for t in ten])  # noqa: E731
    if spec.trace is not None:
        tr = spec.trace
        A = cfg.max_arrivals

        def fit(x, pad):  # [n_bins, T, A_data] -> [n_bins, T, A]; the excess is counted dropped at the door
            x = np.asarray(x)[..., :A]
            return np.pad(x, ((0, 0), (0, 0), (0, A - x.shape[2])), constant_values=pad)

        trace = dict(trace_count=np.asarray(tr["count"], np.int32), trace_offset_s=f(fit(tr["offset_s"], spec.dt_s)),
                     trace_prompt=np.asarray(fit(tr["prompt"], 1), np.int32), trace_output=np.asarray(fit(tr["output"], 1), np.int32))
    else:
        T, A = cfg.n_tenants, cfg.max_arrivals
        trace = dict(trace_count=np.zeros((1, T), np.int32), trace_offset_s=np.zeros((1, T, A), np.float32),
                     trace_prompt=np.ones((1, T, A), np.int32), trace_output=np.ones((1, T, A), np.int32))
    mean_rate = sum(t.base_rate_rps * (t.burst_high_mult + t.burst_low_mult) / 2 for t in ten)
    if spec.trace is not None:
        mean_rate = float(np.asarray(spec.trace["count"]).sum(1).mean() / spec.dt_s)
    return EnvParams(
        n_layers=f(m.n_layers), d_model=f(m.d_model), linear_params=f(m.linear_params),
        embed_params=f(m.vocab * m.d_model), kv_elems_per_token=f(m.kv_elems_per_token),
        peak_bf16_flops=f(g.peak_bf16_flops),
        tier_gemm_peak_flops=f([peak[t.gemm_peak] for t in tiers]),
        tier_weight_bytes=f([t.weight_bytes for t in tiers]),
        tier_kv_bytes_per_elem=f([t.kv_bytes_per_elem for t in tiers]),
        tier_quality_cost=f([t.quality_cost for t in tiers]),
        tier_fallback=f([float(t.gemm_peak == "fp8" and not g.has_fp8) for t in tiers]),
        hbm_bandwidth_bytes_per_s=f(g.hbm_bandwidth_bytes_per_s), hbm_bytes=f(g.hbm_gb * 1e9),
        link_bandwidth_bytes_per_s=f(g.link_bandwidth_bytes_per_s), kv_transfer_bytes_per_s=f(g.kv_transfer_bytes_per_s),
        price_per_gpu_hour=f(g.price_per_gpu_hour), n_gpus=f(spec.n_gpus), tensor_parallel=f(spec.tensor_parallel),
        eta_flops=f(presets.ETA_FLOPS), eta_bandwidth=f(presets.ETA_BANDWIDTH), eta_attention=f(presets.ETA_ATTENTION),
        eta_attn_flops=f(presets.ETA_ATTN_FLOPS), eta_elementwise=f(presets.ETA_ELEMENTWISE),
        gemm_smoothness=f(presets.GEMM_SMOOTHNESS), t_fixed_s=f(presets.T_FIXED_S), t_layer_s=f(presets.T_LAYER_S),
        allreduce_latency_s=f(presets.ALLREDUCE_LATENCY_S),
        cuda_context_bytes=f(1.0e9), activation_bytes_per_token=f((4 * m.d_model + 2 * m.d_ffn / spec.tensor_parallel) * 2.0 * 2.0),
        spec_draft_cost_ratio=f(speculation.DRAFT_COST_RATIO), reload_s=f(8.0), drain_s=f(3.0), max_wait_s=f(spec.max_wait_s),
        priority=arr("priority"), slo_ttft_s=arr("slo_ttft_s"), slo_tpot_s=arr("slo_tpot_s"),
        spec_acceptance=arr("spec_acceptance"), base_rate_rps=arr("base_rate_rps"),
        burst_high_mult=arr("burst_high_mult"), burst_low_mult=arr("burst_low_mult"),
        p_on_to_off=arr("p_on_to_off"), p_off_to_on=arr("p_off_to_on"),
        burst_mirror=np.asarray([t.burst_mirror for t in ten], np.int32), drift=arr("drift"),
        diurnal_amp=arr("diurnal_amp"), diurnal_period_s=arr("diurnal_period_s"),
        prompt_quantiles=f(np.stack([t.prompt.quantiles(cfg.n_quantiles) for t in ten])),
        output_quantiles=f(np.stack([t.output.quantiles(cfg.n_quantiles) for t in ten])),
        **trace,
        dt_s=f(spec.dt_s), horizon_steps=np.asarray(spec.horizon_steps, np.int32),
        reward_norm_rps=f(max(mean_rate, 1e-3)), w_memory=f(spec.w_memory), w_preempt=f(spec.w_preempt),
        # the grader's reference cost: 1000 output tokens/s per GPU scores 0.5 on cost
        ref_cost_per_1k=f(g.price_per_gpu_hour / 3600.0),
    )


def env_from_spec(spec: TaskSpec, name: str | None = None) -> ServingEnv:
    """The environment of ``spec`` (its params are ``env.default_params``; ``env.spec`` is ``spec``)."""
    env = ServingEnv(spec.config, build_params(spec), name=spec.name if name is None else name)
    env.spec = spec
    return env


# --------------------------------------------------------------------------------------------------
# The synthetic tasks (gymjax.registry registers them under their names)
# --------------------------------------------------------------------------------------------------

CHAT = TenantSpec()


def static_task() -> TaskSpec:
    return TaskSpec(
        name="static",
        description="One chat tenant, steady Poisson traffic (15 req/s; prompts ~1k, outputs ~130 tokens, "
        "log-normal) on Llama-3-8B / 1xH100; SLO TTFT 2 s, TPOT 50 ms. Easy: the best configuration does not change.",
        tenants=(TenantSpec(name="chat", base_rate_rps=15.0),),
    )



CODE_PROMPT = LengthDist(1469.0, 1.0, 7437)
CODE_OUTPUT = LengthDist(13.0, 1.2, 1899)


def bursty_task() -> TaskSpec:
    return TaskSpec(
        name="bursty",
        description="Two tenants on Llama-3-8B / 1xH100 (128 slots). IDE code completions arrive steadily (3 req/s, "
        "prompts p50 ~1.5k, outputs p50 13) and must stream at 400 tokens/s (TPOT 2.5 ms, TTFT 0.5 s): only "
        "speculative decoding reaches that (draft acceptance 0.8). Code-assistant chat comes in on/off bursts like "
        "production traffic (Markov-modulated: ~2 req/s off, ~30 req/s on, phases of ~15-30 s; +20 % drift; "
        "prompts and outputs p50 300; acceptance 0.3; TTFT 2 s, TPOT 50 ms), and in a burst deep speculation "
        "wastes the compute chat needs. Clients give up after 10 s. Medium.",
        tenants=(
            TenantSpec(
                name="completion", slo_ttft_s=0.5, slo_tpot_s=0.0025, spec_acceptance=0.8, base_rate_rps=3.0,
                prompt=CODE_PROMPT, output=CODE_OUTPUT,
            ),
            TenantSpec(
                name="chat", slo_ttft_s=2.0, slo_tpot_s=0.05, spec_acceptance=0.3, base_rate_rps=1.0,
                burst_high_mult=30.0, burst_low_mult=2.0, p_on_to_off=0.06, p_off_to_on=0.035, drift=0.2,
                prompt=LengthDist(300.0, 0.8, 4096), output=LengthDist(300.0, 0.7, 2000),
            ),
        ),
        max_wait_s=10.0,
        config=EnvConfig(n_slots=128, n_tenants=2, max_arrivals=64),
    )


def adversarial_task() -> TaskSpec:
    return TaskSpec(
        name="adversarial",
        description="Three tenants with different SLO classes and priorities on Llama-3-8B / 1xH100 (128 slots): a "
        "tool-calling agent (priority 3, steady 3 req/s, prompts p50 2k, TTFT 0.5 s, TPOT 3 ms: it needs deep "
        "speculation, acceptance 0.8), code with bimodal prompts and rare ~6.5k-token ones (priority 2, TTFT 1.5 s, "
        "TPOT 50 ms, ~1-9 req/s) and chat (priority 1, ~2-24 req/s, acceptance 0.3, TTFT 2 s, TPOT 50 ms). Code and "
        "chat flip between quiet and heavy every ~5 s, faster than an 8 s reload can follow, and a chat burst "
        "makes deep speculation waste the compute it needs. Clients give up after 10 s. Hard.",
        tenants=(
            TenantSpec(
                name="agent", priority=3.0, slo_ttft_s=0.5, slo_tpot_s=0.003, spec_acceptance=0.8, base_rate_rps=3.0,
                prompt=LengthDist(2000.0, 0.6, 8000), output=LengthDist(80.0, 0.7, 1000),
            ),
            TenantSpec(
                name="code", priority=2.0, slo_ttft_s=1.5, slo_tpot_s=0.05, spec_acceptance=0.85,
                base_rate_rps=3.0, burst_high_mult=3.0, burst_low_mult=0.3, p_on_to_off=0.2, p_off_to_on=0.2,
                prompt=LengthDist(mixture=((0.88, 1469.0, 0.8), (0.12, 6500.0, 0.15)), cap=8000),
                output=CODE_OUTPUT,
            ),
            TenantSpec(
                name="chat", priority=1.0, slo_ttft_s=2.0, slo_tpot_s=0.05, spec_acceptance=0.3,
                base_rate_rps=1.0, burst_high_mult=24.0, burst_low_mult=2.0, p_on_to_off=0.2, p_off_to_on=0.2,
                prompt=LengthDist(300.0, 0.8, 4096), output=LengthDist(300.0, 0.7, 2000),
            ),
        ),
        max_wait_s=10.0,
        config=EnvConfig(n_slots=128, n_tenants=3, max_arrivals=48, window=4),
    )

