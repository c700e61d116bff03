"""Measurements on the trace tasks (tools, not tasks): :func:`calibrate` (``inferencegym calibrate``)
measures the load calibration of ``azure-replay`` (SLO attainment of the vLLM default and of a few
alternative constant actions, over seeds) quoted in docs/traces.md; :func:`headroom`
(``inferencegym headroom``) what adaptivity could gain there.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.grading import grade, mean_ci95
from gymjax.presets import PD_MODES
from gymjax.rollout import reset_carry, rollout, unroll
from gymjax.tasks import env_from_spec
from gymjax.trace_tasks import azure_replay_spec

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
        # the key resets the cluster and is split for the steps (the keys the figures in docs/traces.md were drawn with)
        carry = reset_carry(env, params, key)
        final, _ = unroll(env, params, lambda k, obs, st: action, carry, jax.random.split(key, spec.horizon_steps),
                          record=lambda step: None, split_policy_key=False)
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
