"""Trace-replay tasks: ``azure-replay`` (the Azure 2023 code + conversation traces as two tenants)
and ``trace`` (a user's own CSV: ``gymjax.make("trace", path="my.csv")``).

Arrivals are replayed from the binned trace (:func:`gymjax.traces.bin_trace`): each reset draws a
window start uniformly, so different seeds replay different windows of the trace. The tenants'
length distributions (``LengthDist(samples=...)``) are the trace's own, for anything that reads
them; the replayed requests carry their exact lengths.

The measurements behind ``azure-replay``'s calibration and its adaptivity headroom live in
:mod:`gymjax.trace_analysis`.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import numpy as np

from gymjax.tasks import LengthDist, TaskSpec, TenantSpec, env_from_spec
from gymjax.traces import Trace, bin_trace, length_samples, load_packaged_trace, load_trace, merge_traces, scale_time
from gymjax.types import EnvConfig

# azure-replay calibration (see docs/traces.md for the measurements behind these numbers)
AZURE_SPEEDUP = 1.75  # trace seconds per simulated second
AZURE_N_GPUS = 1
AZURE_HORIZON_STEPS = 250
AZURE_N_SLOTS = 128

DRAIN_S = 30.0  # a short user trace's default episode runs this long past its last arrival

# SLO classes. Code completion sits in an editor: a suggestion that comes after ~1 s is useless, and
# its outputs are short (p50 13 tokens), so TTFT dominates; it gets priority. Chat is read as it
# streams: a 2 s first token is acceptable and 80 ms/token (12.5 tokens/s) still outpaces reading.
CODE_TENANT = TenantSpec(name="code", priority=2.0, slo_ttft_s=1.0, slo_tpot_s=0.05, spec_acceptance=0.8)
CONV_TENANT = TenantSpec(name="conv", priority=1.0, slo_ttft_s=2.0, slo_tpot_s=0.08, spec_acceptance=0.6)


def length_dist(trace: Trace, tenant: int | str = 0, which: str = "prompt") -> LengthDist:
    """An empirical :class:`LengthDist` of one tenant's ``which`` ("prompt" | "output") lengths (cap = the
    largest seen)."""
    s = length_samples(trace, tenant, which)
    if not s:
        raise ValueError(f"tenant {tenant!r} has no requests")
    return LengthDist(median=float(np.median(s)), cap=int(max(s)), floor=1, samples=s)


@lru_cache(maxsize=1)
def azure_trace() -> Trace:
    """The code and conversation traces merged as tenants 0 (code) and 1 (conv), on their shared
    wall clock (both cover 2023-11-16 18:15-19:14 UTC)."""
    return merge_traces([load_packaged_trace("azure-code"), load_packaged_trace("azure-conv")], names=("code", "conv"))


def trace_task_spec(trace: Trace, name: str, description: str, tenants: tuple[TenantSpec, ...], *, dt_s: float = 1.0,
                    speedup: float = 1.0, horizon_steps: int = 200, n_gpus: int = 1, n_slots: int = 64,
                    queue_cap: int = 256, **spec_kw) -> TaskSpec:
    """A replay :class:`TaskSpec` of ``trace`` (tenant rows in trace order), time-compressed by
    ``speedup`` and binned at ``dt_s``. ``max_arrivals`` is the largest per-bin count (no arrival is
    dropped at the door). Each tenant spec's lengths are replaced by the trace's empirical ones.
    A ``horizon_steps`` longer than the trace replays it once from its start and then continues with
    no arrivals, so the engine drains (no wrap-around)."""
    if len(tenants) != trace.n_tenants:
        raise ValueError(f"{len(tenants)} tenant specs for a trace with {trace.n_tenants} tenants")
    scaled = scale_time(trace, speedup) if speedup != 1.0 else trace
    binned = bin_trace(scaled, dt_s)
    tenants = tuple(
        dataclasses.replace(t, prompt=length_dist(trace, i, "prompt"), output=length_dist(trace, i, "output"),
                            base_rate_rps=float(binned["count"][:, i].mean() / dt_s))
        for i, t in enumerate(tenants)
    )
    cfg = EnvConfig(use_trace=True, n_tenants=len(tenants), max_arrivals=int(binned["offset_s"].shape[2]),
                    n_slots=n_slots, queue_cap=queue_cap)
    return TaskSpec(name=name, description=description, tenants=tenants, horizon_steps=horizon_steps, dt_s=dt_s,
                    n_gpus=n_gpus, config=cfg, trace=binned, **spec_kw)


def azure_replay_spec(speedup: float = AZURE_SPEEDUP, n_gpus: int = AZURE_N_GPUS,
                      horizon_steps: int = AZURE_HORIZON_STEPS, n_slots: int = AZURE_N_SLOTS) -> TaskSpec:
    return trace_task_spec(
        azure_trace(), "azure-replay",
        "Azure LLM inference traces 2023 (CC-BY 4.0) replayed as two tenants on Llama-3-8B / "
        f"{n_gpus}xH100: code completion (on/off bursts, long prompts, short outputs; TTFT 1 s, TPOT 50 ms, "
        f"priority 2) and conversation (near-Poisson, drifting; TTFT 2 s, TPOT 80 ms, priority 1), "
        f"time-compressed {speedup:g}x. Each seed replays a different window. Hard.",
        (CODE_TENANT, CONV_TENANT), speedup=speedup, horizon_steps=horizon_steps, n_gpus=n_gpus, n_slots=n_slots,
        model="llama-3-8b", gpu="h100",
    )


def azure_replay_task() -> TaskSpec:
    return azure_replay_spec()


# the defaults of a user's trace tenants, and the ``gymjax.make("trace", ...)`` arguments its builder takes
TRACE_SLO_TTFT_S = 2.0
TRACE_SLO_TPOT_S = 0.08
TRACE_BUILDER_ARGS = ("path", "dt_s", "speedup", "horizon_steps", "n_gpus", "n_slots", "queue_cap", "model", "gpu",
                      "slo_ttft_s", "slo_tpot_s")


def user_trace_spec(path: str | Path, *, dt_s: float = 1.0, speedup: float = 1.0, horizon_steps: int | None = None,
                    tenants: tuple[TenantSpec, ...] | None = None, n_gpus: int = 1, n_slots: int = 64,
                    queue_cap: int = 256, model: str = "llama-3-8b", gpu: str = "h100",
                    slo_ttft_s: float = TRACE_SLO_TTFT_S, slo_tpot_s: float = TRACE_SLO_TPOT_S) -> TaskSpec:
    """The :class:`TaskSpec` of a user's trace CSV (generic or Azure format, see :mod:`gymjax.traces`).

    Defaults: one tenant per distinct ``tenant`` value (or one), each with TTFT ``slo_ttft_s`` (2 s) /
    TPOT ``slo_tpot_s`` (80 ms),
    priority 1, speculation acceptance 0.7; Llama-3-8B on 1xH100; dt 1 s; no time scaling; a
    horizon of 200 steps, or, for a shorter trace, the whole trace plus :data:`DRAIN_S` seconds
    without arrivals to drain; 64 batch slots; a 256-request queue per tenant; ``max_arrivals`` =
    the largest per-interval count of any tenant.
    """
    if not slo_ttft_s > 0 or not slo_tpot_s > 0:
        raise ValueError(f"SLOs must be positive seconds, got slo_ttft_s={slo_ttft_s}, slo_tpot_s={slo_tpot_s}")
    if not dt_s > 0 or not speedup > 0:
        raise ValueError(f"dt_s and speedup must be positive, got dt_s={dt_s}, speedup={speedup}")
    tr = load_trace(path)
    if tenants is None:
        tenants = tuple(TenantSpec(name=n, priority=1.0, slo_ttft_s=float(slo_ttft_s), slo_tpot_s=float(slo_tpot_s),
                                   spec_acceptance=0.7) for n in tr.tenant_names)
    replay_and_drain_steps = int((tr.arrival_s[-1] - tr.arrival_s[0]) / speedup // dt_s) + 1 + int(np.ceil(DRAIN_S / dt_s))
    spec = trace_task_spec(
        tr, "trace", f"Replay of {Path(path).name}: {tr.n_requests} requests, {tr.n_tenants} tenant(s) "
        f"({', '.join(tr.tenant_names)}), {tr.duration_s:.0f} s, on {model} / {n_gpus}x{gpu}.",
        tenants, dt_s=dt_s, speedup=speedup, horizon_steps=min(200, replay_and_drain_steps) if horizon_steps is None else horizon_steps,
        n_gpus=n_gpus, n_slots=n_slots, queue_cap=queue_cap, model=model, gpu=gpu,
    )
    return dataclasses.replace(spec, source=str(Path(path).resolve()))


def user_trace_task(path: str | Path | None = None, **kw) -> TaskSpec:
    """The ``trace`` task's builder: ``gymjax.make("trace", path=..., ...)`` passes the arguments of
    :func:`user_trace_spec` named in :data:`TRACE_BUILDER_ARGS` here (so the trace is binned for them and
    the description names them); other overrides apply to the spec afterwards."""
    if path is None:
        raise ValueError('the "trace" task needs a CSV: gymjax.make("trace", path="my.csv"), or on the command line '
                         "--trace my.csv; format: arrival_s,prompt_tokens,output_tokens[,tenant] (see docs/traces.md)")
    return user_trace_spec(path, **kw)


def make_trace(path: str | Path, **kw):
    """``(env, params)`` of a user's trace; keyword arguments as :func:`user_trace_spec` (``tenants`` too,
    which ``gymjax.make("trace", path=..., dt_s=..., speedup=...)`` does not take)."""
    env = env_from_spec(user_trace_spec(path, **kw), name="trace")
    return env, env.default_params
