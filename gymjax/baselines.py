"""Baseline policies: pure, jittable ``policy(key, obs, state) -> flat action``.

Every score is shown against these:

- ``random``: a uniform sample of the flat action space every step.
- ``vllm-default``: vLLM's default configuration held fixed (``env.default_action()``).
- ``heuristic``: reactive rules on the observation (queue, KV occupancy, preemptions, running batch)
  and a roofline estimate of the speculation depth with the most accepted tokens per second.
- ``best-constant``: the best fixed action of a documented grid search per task (``gymjax.tune``),
  loaded from ``gymjax/data/best_constant.json``; the strongest static tuning an engineer could do.
- ``oracle``: where a task's load phases are known (Markov-modulated bursts), reads the hidden phase
  from the state and plays that phase's row of a tuned table (``gymjax.tune.tune_oracle``): the
  speculation depth and priority routing change with the phase; batch cap, KV budget and the slow
  knobs are one setting for the episode. The reference for how much adaptivity is worth.

Factories take ``(env, params)`` and return the policy; ``POLICIES`` maps names to factories.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.physics import deployment, observation, speculation
from gymjax.presets import KV_BLOCK_TOKENS, PD_MODES
from gymjax.tuned import load_packaged, tune_hint, tuning_for

F32 = jnp.float32
I32 = jnp.int32

TUNED_FILE = "best_constant.json"


def obs_index(env) -> dict[str, int | slice]:
    """Position of each entry of the flat observation: the layout table
    (:func:`gymjax.physics.observation.obs_layout`) of this env's sizes and knobs."""
    return observation.obs_layout(env.cfg, env.knobs)


def _current_levels(env, obs: jax.Array) -> jax.Array:
    """The flat action in force, recovered from the observation's normalised action values."""
    out = []
    for k in env.knobs:
        v = observation.read(obs, f"action.{k.name}", env.cfg, env.knobs)
        out.append(jnp.argmin(jnp.abs(jnp.asarray(k.levels, F32) - v)))
    return jnp.stack(out).astype(I32)


def random_policy(env, params) -> Callable:
    space = env.action_space(params)
    return lambda key, obs, state: space.sample(key)


def constant_policy(env, flat) -> Callable:
    a = jnp.asarray(flat, I32)
    return lambda key, obs, state: a


def vllm_default(env, params) -> Callable:
    return constant_policy(env, env.encode_action(env.default_action()))


def speculation_by_goodput(env, params) -> Callable:
    """``depth_index(action, running, ctx_tokens, tenant_weights)``: the speculation level with the most
    accepted tokens per second for the current batch (SmartSpec-style, arXiv:2406.14066).

    It evaluates the simulator's own roofline for one verification pass of the running batch at
    every depth k: expected accepted tokens E(k) = (1 - a^(k+1)) / (1 - a), averaged over tenants
    with ``tenant_weights`` (their arrival rates), divided by the pass time (B*(k+1) tokens through
    the linear layers, one read of the KV cache, k draft steps). A small batch is memory-bound, so
    deep speculation is nearly free and wins; a large batch is compute-bound, so every rejected
    draft token costs throughput and the depth drops. With colocated prefill, a depth whose
    verification tokens would take more than half of the chunk budget is ruled out while requests
    wait (vLLM counts them against ``max_num_batched_tokens``).
    """
    levels = jnp.asarray(next(k for k in env.knobs if k.name == "speculation_depth").levels, F32)
    alpha = speculation.acceptance(params)

    def choose(action, running, ctx, weights, waiting):
        plan = deployment.plan(env.cfg, params, action)
        n_seqs = jnp.maximum(running, 1.0)
        share = jnp.where(plan.disagg, 1.0 - plan.prefill_share, 1.0)
        w = jnp.where(weights.sum() > 0, weights, jnp.ones_like(weights))
        w = w / w.sum()

        def rate(k):
            t = speculation.verification_time(params, plan, n_seqs, ctx, share, k)
            e = jnp.sum(w * speculation.tokens_per_verification(alpha, k))
            starves = (~plan.disagg) & waiting & (n_seqs * (k + 1.0) > 0.5 * plan.chunk)
            return jnp.where(starves & (k > 0), -1.0, e / t)

        return jnp.argmax(jax.vmap(rate)(levels)).astype(I32)

    return choose


def heuristic(env, params) -> Callable:
    """Reactive rules an operator would write (all fast knobs; slow knobs are fixed, no flapping):

    - batch cap: one level down on preemptions or KV occupancy > 0.92; one level up while requests
      wait and KV occupancy < 0.75;
    - speculation: the depth with the most accepted tokens per second for the current batch and
      tenant mix, from the roofline (:func:`speculation_by_goodput`): deep when the batch is small,
      shallow or off when it is compute-bound;
    - KV budget 0.9; FP8 where the GPU has it, else BF16; colocated chunked prefill with the smallest
      token budget of at least 8 tokens per batch slot (512 for 64 slots: a small budget protects
      inter-token latency, but decode tokens come out of it first, so it must grow with the batch);
      priority routing on when there are several tenants.
    """
    idx = obs_index(env)
    nvec = np.asarray(env.action_space(params).nvec)
    c = env.cfg
    levels = {k.name: np.asarray(k.levels) for k in env.knobs}
    has_fp8 = float(params.tier_fallback[1]) == 0.0
    tier = 1 if has_fp8 else 0
    kv_idx = int(np.argmin(np.abs(levels["kv_budget_fraction"] - 0.9)))
    colocated = [(m.chunk_tokens, i) for i, m in enumerate(PD_MODES) if not m.disaggregated]
    pd_idx = min([ci for ci in colocated if ci[0] >= 8 * c.n_slots] or [max(colocated)])[1]
    prio = 1 if c.n_tenants > 1 else 0
    read = lambda obs, name: observation.read(obs, name, c, env.knobs)  # noqa: E731
    spec_depth = speculation_by_goodput(env, params)

    def policy(key, obs, state):
        cur = _current_levels(env, obs)
        queue = read(obs, "queue_depth")
        kv = read(obs, "kv_occupancy")
        preempt = obs[idx["preemptions"]] > 0  # any preemption this interval
        running = read(obs, "running")
        rates = read(obs, "arrival_rate_per_tenant")
        cap = cur[0]
        cap = jnp.where(preempt | (kv > 0.92), cap - 1, jnp.where((queue >= 1) & (kv < 0.75), cap + 1, cap))
        cap = jnp.clip(cap, 0, nvec[0] - 1)
        fixed = jnp.stack([cap, jnp.int32(kv_idx), jnp.int32(0), jnp.int32(tier), jnp.int32(pd_idx), jnp.int32(prio)]).astype(I32)
        action = env.decode_action(fixed)
        pool_tokens = deployment.plan(c, params, action).pool_blocks * KV_BLOCK_TOKENS
        spec = spec_depth(action, running, kv * pool_tokens, rates, queue >= 1)
        return fixed.at[2].set(spec)

    return policy


def load_tuned() -> dict:
    """The saved grid-search results of the registered tasks (``gymjax/data/best_constant.json``), {} if absent."""
    return load_packaged()


def best_constant(env, params, tuned: dict | None = None) -> Callable:
    """The tuned constant of ``env`` (``tuned``: a tuning entry; default :func:`gymjax.tuned.tuning_for`,
    which also finds a user's trace's side file)."""
    tuned = tuning_for(env, params) if tuned is None else tuned
    if tuned is None:
        raise KeyError(f"no tuned best-constant action for task {env.name!r}; {tune_hint(env)} "
                       f"(tuned registered tasks: {sorted(load_tuned())})")
    return constant_policy(env, tuned["best"]["action"])


def has_oracle(env, tuned: dict | None = None) -> bool:
    tuned = tuning_for(env) if tuned is None else tuned
    return "phases" in (tuned or {})


def oracle(env, params, tuned: dict | None = None) -> Callable:
    """Phase-aware: the tuned table's row for the current burst phase (read from the hidden state)."""
    tuned = (tuning_for(env, params) if tuned is None else tuned) or {}
    if "phases" not in tuned:
        raise KeyError(f"task {env.name!r} has no oracle (its load phases are not known)")
    table = jnp.asarray([p["action"] for p in tuned["phases"]], I32)  # [2**T, 6]

    def policy(key, obs, state):
        phase = jnp.sum(state.burst_on * (2 ** jnp.arange(state.burst_on.shape[0])))
        return table[phase]

    return policy


POLICIES: dict[str, Callable] = {
    "random": random_policy,
    "vllm-default": vllm_default,
    "heuristic": heuristic,
    "best-constant": best_constant,
    "oracle": oracle,
}


def available(env, tuned: dict | None = None) -> list[str]:
    """Baselines that exist for this env (best-constant needs a tuning, oracle known phases); ``tuned`` as
    :func:`best_constant`."""
    names = ["random", "vllm-default", "heuristic"]
    tuned = tuning_for(env) if tuned is None else tuned
    if tuned is not None:
        names.append("best-constant")
        if "phases" in tuned:
            names.append("oracle")
    return names
