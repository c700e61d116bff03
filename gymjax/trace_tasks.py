"""Trace-replay tasks: ``azure-replay`` (the Azure 2023 code + conversation traces as two tenants)
and ``trace`` (a user's own CSV: ``gymjax.make("trace", path="my.csv")``).

Arrivals are replayed from the binned trace (:func:`gymjax.traces.bin_trace`): each reset draws a
window start uniformly, so different seeds replay different windows of the trace. The tenants'
length distributions (``LengthDist(samples=...)``) are the trace's own, for anything that reads
them; the replayed requests carry their exact lengths.

:func:`calibrate` (``inferencegym calibrate``) measures the load calibration of ``azure-replay`` (SLO
attainment of the vLLM default and of a few alternative constant actions, over seeds) quoted in
docs/traces.md; :func:`headroom` (``inferencegym headroom``) what adaptivity could gain there.
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.engine import EnvConfig
from gymjax.grading import grade, mean_ci95
from gymjax.presets import PD_MODES
from gymjax.rollout import rollout
from gymjax.tasks import LengthDist, TaskSpec, TenantSpec, env_from_spec
from gymjax.traces import Trace, bin_trace, length_samples, load_packaged_trace, load_trace, merge_traces, scale_time

# azure-replay calibration (see docs/traces.md for the measurements behind these numbers)
AZURE_SPEEDUP = 1.75  # trace seconds per simulated second
AZURE_N_GPUS = 1
AZURE_HORIZON_STEPS = 250
AZURE_N_SLOTS = 128

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
    dropped at the door). Each tenant spec's lengths are replaced by the trace's empirical ones."""
    if len(tenants) != trace.n_tenants:
        raise ValueError(f"{len(tenants)} tenant specs for a trace with {trace.n_tenants} tenants")
    scaled = scale_time(trace, speedup) if speedup != 1.0 else trace
    binned = bin_trace(scaled, dt_s)
    n_bins = binned["count"].shape[0]
    if n_bins < horizon_steps:
        raise ValueError(f"the trace spans {n_bins} intervals of {dt_s} s (speedup {speedup}), fewer than "
                         f"horizon_steps={horizon_steps}; lower the horizon or the speedup")
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


def user_trace_spec(path: str | Path, *, dt_s: float = 1.0, speedup: float = 1.0, horizon_steps: int | None = None,
                    tenants: tuple[TenantSpec, ...] | None = None, n_gpus: int = 1, n_slots: int = 64,
                    queue_cap: int = 256, model: str = "llama-3-8b", gpu: str = "h100") -> TaskSpec:
    """The :class:`TaskSpec` of a user's trace CSV (generic or Azure format, see :mod:`gymjax.traces`).

    Defaults: one tenant per distinct ``tenant`` value (or one), each with TTFT 2 s / TPOT 80 ms,
    priority 1, speculation acceptance 0.7; Llama-3-8B on 1xH100; dt 1 s; no time scaling; a
    horizon of 200 steps, or the whole trace if it spans fewer intervals; 64 batch slots; a
    256-request queue per tenant; ``max_arrivals`` = the largest per-interval count of any tenant.
    """
    tr = load_trace(path)
    if tenants is None:
        tenants = tuple(TenantSpec(name=n, priority=1.0, slo_ttft_s=2.0, slo_tpot_s=0.08, spec_acceptance=0.7) for n in tr.tenant_names)
    n_bins = int((tr.arrival_s[-1] - tr.arrival_s[0]) / speedup // dt_s) + 1
    return trace_task_spec(
        tr, "trace", f"Replay of {Path(path).name}: {tr.n_requests} requests, {tr.n_tenants} tenant(s) "
        f"({', '.join(tr.tenant_names)}), {tr.duration_s:.0f} s, on {model} / {n_gpus}x{gpu}.",
        tenants, dt_s=dt_s, speedup=speedup, horizon_steps=min(200, n_bins) if horizon_steps is None else horizon_steps,
        n_gpus=n_gpus, n_slots=n_slots, queue_cap=queue_cap, model=model, gpu=gpu,
    )


def user_trace_task(path: str | Path | None = None) -> TaskSpec:
    if path is None:
        raise ValueError('the "trace" task needs a CSV: gymjax.make("trace", path="my.csv"); '
                         "format: arrival_s,prompt_tokens,output_tokens[,tenant] (see docs/traces.md)")
    return user_trace_spec(path)


def make_trace(path: str | Path, **kw):
    """``(env, params)`` of a user's trace with a binning or time scaling that ``gymjax.make("trace")``
    cannot override (``dt_s``, ``speedup``); keyword arguments as :func:`user_trace_spec`."""
    env = env_from_spec(user_trace_spec(path, **kw), name="trace")
    return env, env.default_params


# --------------------------------------------------------------------------------------------------
# Calibration (inferencegym calibrate)
# --------------------------------------------------------------------------------------------------


def calibrate(n_seeds: int = 8, log=print, **spec_kw) -> dict[str, float]:
    """SLO attainment (met / arrived over all tenants, pooled over ``n_seeds`` windows) of a few
    constant actions on ``azure_replay_spec(**spec_kw)``; ``log`` gets one line per action."""
    spec = azure_replay_spec(**spec_kw)
    env = env_from_spec(spec)
    params = env.default_params
    d = env.default_action()
    candidates = {
        "vllm-default": d,
        "fp8": d.replace(quantization_tier=jnp.int32(1)),
        "fp8+priority": d.replace(quantization_tier=jnp.int32(1), priority_routing=jnp.int32(1)),
        "fp8+priority+chunk512": d.replace(quantization_tier=jnp.int32(1), priority_routing=jnp.int32(1),
                                           prefill_decode_split=jnp.int32(1)),
        "fp8+spec2+priority": d.replace(quantization_tier=jnp.int32(1), priority_routing=jnp.int32(1),
                                        speculation_depth=jnp.int32(2)),
    }

    def episode(key, action):
        final, _ = rollout(env, params, lambda k, obs, st: action, key, spec.horizon_steps, record=lambda step: None)
        return final.episode

    run = jax.jit(jax.vmap(episode, in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), n_seeds)
    out = {}
    for name, a in candidates.items():
        ep = run(keys, a)
        arrived = float(ep.arrived.sum())
        met = float(ep.slo_met.sum())
        per_tenant = (ep.slo_met.sum(0) / jnp.maximum(ep.arrived.sum(0), 1)).tolist()
        out[name] = met / max(arrived, 1.0)
        log(f"{name:24s} attainment {out[name]:.3f}  per tenant {[round(x, 3) for x in per_tenant]}  "
              f"per seed {[round(x, 2) for x in (ep.slo_met.sum(1) / jnp.maximum(ep.arrived.sum(1), 1)).tolist()]}  "
              f"dropped {int(ep.dropped.sum())}/{int(arrived)}")
    return out


# --------------------------------------------------------------------------------------------------
# Adaptivity headroom (inferencegym headroom)
# --------------------------------------------------------------------------------------------------

HEADROOM_SEED_BASE = 5_000_011  # disjoint from tuning and evaluation seeds


def headroom(n_seeds: int = 16, top_slow: int = 3, log=print, **spec_kw) -> dict:
    """How much any adaptive policy could gain over the best constant on ``azure-replay``.

    1. Every action of a sub-grid (batch cap {48, the largest level} x KV 0.95 x every speculation depth x
       {FP8, INT8} x {chunk-512, chunk-2048, disaggregated-25} x priority routing on; it contains
       the tuned best constant) is scored on ``n_seeds`` windows. *Hindsight*: the best action of
       each window, picked after seeing its score, minus the best single action (paired over windows).
       It bounds what choosing a configuration per window (per "phase" of the day) could gain.
    2. *Switching*: for the ``top_slow`` best (batch cap, tier, split) settings, every pair of
       speculation depths (one while code traffic is active, one while it is not) is played, with
       code activity read two ways: from the trace itself (code arrives in this interval or the
       next: an oracle that sees the future) and reactively (code queued or arrived last interval).
       The best pair is picked on the same windows it is scored on, so the gain is optimistic.

    Returns the paired differences (mean, 95 % CI half-width) and the actions behind them.
    """
    spec = azure_replay_spec(**spec_kw)
    env = env_from_spec(spec)
    params = env.default_params
    lv = {k.name: list(k.levels) for k in env.knobs}
    code = spec.tenants.index(next(t for t in spec.tenants if t.name == "code"))
    n_bins = params.trace_count.shape[0]

    def episode(table, key, mode):
        """mode 0: table[0] always; 1: trace lookahead; 2: reactive. table[1] plays while code is active."""

        def policy(_, obs, st):
            b = st.trace_start + st.step
            ahead = (params.trace_count[b % n_bins, code] + params.trace_count[(b + 1) % n_bins, code]) > 0
            reactive = (st.q_count[code] > 0) | (st.step_stats.arrived[code] > 0)
            return table[jnp.where(mode == 1, ahead, jnp.where(mode == 2, reactive, False)).astype(jnp.int32)]

        final, _ = rollout(env, params, policy, key, int(params.horizon_steps), record=lambda step: None)
        return grade(params, final.episode)

    run = jax.jit(jax.vmap(jax.vmap(episode, in_axes=(None, 0, None)), in_axes=(0, None, None)))
    keys = jax.random.split(jax.random.PRNGKey(HEADROOM_SEED_BASE), n_seeds)

    caps = sorted({int(np.argmin(np.abs(np.asarray(lv["batch_cap"]) - 48.0))), len(lv["batch_cap"]) - 1})
    kv = lv["kv_budget_fraction"].index(0.95)
    splits = [i for i, m in enumerate(PD_MODES) if m.name in ("colocated-chunk-512", "colocated-chunk-2048", "disaggregated-prefill-25")]
    cands = np.asarray(list(itertools.product(caps, [kv],
                                              range(len(lv["speculation_depth"])), [1, 2], splits, [1])), np.int32)
    s = np.asarray(run(jnp.asarray(np.stack([cands, cands], 1)), keys, 0))  # [N, seeds]
    best = int(np.argmax(s.mean(1)))
    typed = lambda a: {k: float(v) for k, v in env.decode_action(jnp.asarray(a)).to_dict().items()}  # noqa: E731
    out = {"n_seeds": n_seeds, "grid_size": int(len(cands)), "best_constant": {"action": cands[best].tolist(),
           "typed": typed(cands[best]), "score": mean_ci95(s[best])}}
    out["hindsight_minus_best"] = mean_ci95(s.max(0) - s[best])
    log(f"best constant of the sub-grid ({len(cands)} actions, {n_seeds} windows): {typed(cands[best])} "
        f"score {s[best].mean():.3f}")
    log(f"hindsight best action per window minus it: {out['hindsight_minus_best'][0]:+.4f} "
        f"+- {out['hindsight_minus_best'][1]:.4f}")

    slow = []
    for i in np.argsort(-s.mean(1)):
        key = tuple(cands[i][[0, 3, 4]])
        if key not in slow:
            slow.append(key)
        if len(slow) == top_slow:
            break
    tables = np.asarray([[[c, kv, q, t, p, 1], [c, kv, b, t, p, 1]] for c, t, p in slow
                         for q, b in itertools.product(range(len(lv["speculation_depth"])), repeat=2)], np.int32)
    for mode, name in ((1, "trace lookahead"), (2, "reactive")):
        s2 = np.asarray(run(jnp.asarray(tables), keys, mode))
        j = int(np.argmax(s2.mean(1)))
        d = mean_ci95(s2[j] - s[best])
        out[f"switching_{name.replace(' ', '_')}_minus_best"] = d
        out[f"switching_{name.replace(' ', '_')}_table"] = {"quiet": typed(tables[j, 0]), "code_active": typed(tables[j, 1])}
        log(f"switching speculation depth on code activity ({name}): quiet depth "
            f"{lv['speculation_depth'][tables[j, 0, 2]]:g}, code-active depth {lv['speculation_depth'][tables[j, 1, 2]]:g}; "
            f"minus the best constant {d[0]:+.4f} +- {d[1]:.4f}")
    return out
