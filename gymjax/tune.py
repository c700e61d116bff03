"""Grid search for the best constant action per task (and per load phase, for the oracle).

    inferencegym tune                 # every registered synthetic + replay task
    inferencegym tune --task bursty   # one task

The grid (documented, the same for every task): every batch-cap level x KV budget {0.9, 0.95} x
every speculation depth {0, 1, 2, 3, 4, 6} x every tier {bf16, fp8, int8, int4} x split {chunk-512,
chunk-2048, disaggregated-25} x priority routing {off, on} (on only with several tenants). Each candidate runs
``--seeds`` full episodes (vmapped: every candidate x seed is one simulated cluster); the top
``--refine`` are re-scored on ``--refine-seeds`` seeds and the best mean wins. Tuning seeds are
disjoint from the evaluation seeds of :func:`gymjax.grading.eval_keys`.

For tasks with Markov-modulated bursts, the oracle gets a table: one action per burst phase. It
switches only the knobs a phase change calls for and that change without an outage (speculation
depth and priority routing); batch cap, KV budget, tier and split are one setting for the episode
(switching a slow knob at every phase change would pay a reload or drain each time). The table
comes from the grid scored with each phase pinned (no switching), weighted by each phase's
stationary probability, and the best few candidate tables are then compared in free-running
episodes, where phase transitions and backlogs count (:func:`tune_oracle`). ``inferencegym tune`` writes the
results to ``gymjax/data/best_constant.json`` (:data:`TUNED_PATH`), where :mod:`gymjax.baselines` reads them.

Every episode runs through :func:`gymjax.rollout.unroll` with the keys the recorded tables were
drawn with: ``k_reset, k_run = split(key)``, and each of ``split(k_run, n_steps)`` goes whole to
``env.step`` (the tuned policies ignore their key).
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.grading import grade
from gymjax.physics.workload import mirror_bursts
from gymjax.presets import PD_MODES, QUANT_TIERS
from gymjax.rollout import reset_carry, unroll

TUNE_SEED_BASE = 7_000_001
TUNED_PATH = Path(__file__).parent / "data" / "best_constant.json"


def grid(env) -> np.ndarray:
    """The documented grid as flat action indices [n, 6]."""
    lv = {k.name: list(k.levels) for k in env.knobs}
    pick = lambda name, values: [lv[name].index(float(v)) for v in values]  # noqa: E731
    tiers = list(range(len(QUANT_TIERS)))
    splits = [i for i, m in enumerate(PD_MODES) if m.name in ("colocated-chunk-512", "colocated-chunk-2048", "disaggregated-prefill-25")]
    axes = [
        list(range(len(lv["batch_cap"]))),
        pick("kv_budget_fraction", (0.9, 0.95)),
        pick("speculation_depth", (0, 1, 2, 3, 4, 6)),
        tiers,
        splits,
        [0, 1] if env.cfg.n_tenants > 1 else [0],
    ]
    return np.asarray(list(itertools.product(*axes)), np.int32)


def _pinned(params):
    """``params`` with the burst chains frozen: a phase set at reset stays for the episode."""
    return params.replace(p_on_to_off=params.p_on_to_off * 0, p_off_to_on=params.p_off_to_on * 0)


def _constant(action):
    """The policy that always plays ``action``."""
    return lambda key, obs, state: action


@functools.lru_cache(maxsize=8)
def _score_fn(env, n_steps: int):
    """jit(vmap over actions x seeds) of one constant-action episode's score; ``phase`` >= 0 pins the
    burst state at reset to that phase word (bit t: tenant t in its high phase)."""

    def one(params, action, key, phase):
        def pin(obs, st):
            pinned = mirror_bursts(params, ((phase >> jnp.arange(env.cfg.n_tenants)) & 1).astype(jnp.int32))
            return obs, st.replace(burst_on=jnp.where(phase >= 0, pinned, st.burst_on).astype(jnp.int32))

        k_reset, k_run = jax.random.split(key)
        carry = reset_carry(env, params, k_reset, init=pin)
        final, _ = unroll(env, params, _constant(action), carry, jax.random.split(k_run, n_steps), _nothing, split_policy_key=False)
        return grade(params, final.episode)

    per_seed = jax.vmap(one, in_axes=(None, None, 0, None))
    return jax.jit(jax.vmap(per_seed, in_axes=(None, 0, None, None)))


def _nothing(step):
    """A rollout record that keeps nothing per step (only the final episode statistics are graded)."""
    return None


def _first_stage(env, params, cands: np.ndarray, seeds: int, phase: int, chunk: int) -> np.ndarray:
    """Mean score of every candidate over ``seeds`` tuning episodes (phase pinned when >= 0)."""
    if phase >= 0:
        params = _pinned(params)
    chunk = min(chunk, len(cands))
    fn = _score_fn(env, int(params.horizon_steps))
    keys = jax.random.split(jax.random.PRNGKey(TUNE_SEED_BASE), seeds)
    scores = []
    for i in range(0, len(cands), chunk):
        batch = cands[i : i + chunk]
        pad = chunk - len(batch)
        batch_p = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)]) if pad else batch
        s = np.asarray(fn(params, jnp.asarray(batch_p), keys, phase))[: len(batch)]
        scores.append(s.mean(1))
    return np.concatenate(scores)


def search(env, params, seeds: int = 2, refine: int = 8, refine_seeds: int = 8, phase: int = -1,
           chunk: int = 256, log=print) -> dict:
    """Best constant action of ``env`` (optionally with the burst phase pinned to ``phase``)."""
    cands = grid(env)
    scores = _first_stage(env, params, cands, seeds, phase, chunk)
    if phase >= 0:
        params = _pinned(params)
    refine = min(refine, len(cands))
    top = np.argsort(-scores)[:refine]
    keys2 = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(TUNE_SEED_BASE), 1), refine_seeds)
    s2 = np.asarray(_score_fn(env, int(params.horizon_steps))(params, jnp.asarray(cands[top]), keys2, phase))
    best = int(np.argmax(s2.mean(1)))
    action = cands[top[best]]
    typed = env.decode_action(jnp.asarray(action)).to_dict()
    log(f"  {env.name} phase={phase}: best {typed} score {s2.mean(1)[best]:.3f} (grid of {len(cands)})")
    return {"action": [int(x) for x in action], "typed": typed, "score": float(s2.mean(1)[best]),
            "grid_size": int(len(cands)), "seeds": seeds, "refine_seeds": refine_seeds}


def phase_probabilities(params, tenants: list[int]) -> dict[tuple[int, ...], float]:
    """Stationary probability of each on/off assignment of the modulated ``tenants`` (independent
    two-state Markov chains: P(on) = p_off_to_on / (p_on_to_off + p_off_to_on))."""
    on = np.asarray(params.p_off_to_on) / np.maximum(np.asarray(params.p_on_to_off + params.p_off_to_on), 1e-12)
    return {bits: float(np.prod([on[t] if b else 1.0 - on[t] for b, t in zip(bits, tenants, strict=True)]))
            for bits in itertools.product([0, 1], repeat=len(tenants))}


# batch cap, KV budget, tier, split: one setting for the whole episode; the oracle switches the rest
# (speculation depth, priority routing) per phase
SHARED_KNOBS = (0, 1, 3, 4)


@functools.lru_cache(maxsize=8)
def _oracle_score_fn(env, n_steps: int):
    """jit(vmap over phase tables x seeds) of one free-running episode of the table oracle."""
    T = env.cfg.n_tenants

    def one(params, table, key):
        policy = lambda k, obs, st: table[jnp.sum(st.burst_on * (2 ** jnp.arange(T)))]  # noqa: E731
        k_reset, k_run = jax.random.split(key)
        carry = reset_carry(env, params, k_reset)
        final, _ = unroll(env, params, policy, carry, jax.random.split(k_run, n_steps), _nothing, split_policy_key=False)
        return grade(params, final.episode)

    return jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(None, 0, None)))


def tune_oracle(env, params, seeds: int = 2, refine: int = 8, refine_seeds: int = 8, log=print) -> dict:
    """The oracle's phase table (see the module docstring).

    1. Score the whole grid with each phase pinned (``seeds`` episodes each).
    2. Group the grid by the shared knobs; a group's value is the sum over phases of the stationary
       phase probability times the best first-stage score of the group in that phase.
    3. For the ``refine`` best groups, re-score every option of the per-phase knobs with each phase
       pinned on ``refine_seeds`` episodes and take each phase's best: a candidate table.
    4. Run each candidate table free-running (phases switching as in the task) on ``refine_seeds``
       episodes and keep the best, so transitions and backlogs count.
    """
    T = env.cfg.n_tenants
    modulated = np.asarray((params.p_on_to_off > 0) | (params.p_off_to_on > 0))
    mod = [t for t in range(T) if modulated[t]]
    probs = phase_probabilities(params, mod)
    word = lambda bits: sum(b << t for b, t in zip(bits, mod, strict=True))  # noqa: E731
    cands = grid(env)
    first = {bits: _first_stage(env, params, cands, seeds, word(bits), 256) for bits in probs}
    groups, inv = np.unique(cands[:, SHARED_KNOBS], axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    members = [np.flatnonzero(inv == g) for g in range(len(groups))]
    value = np.array([sum(p * first[bits][m].max() for bits, p in probs.items()) for m in members])
    top = np.argsort(-value)[: min(refine, len(groups))]
    pinned = _pinned(params)
    fn = _score_fn(env, int(params.horizon_steps))
    keys2 = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(TUNE_SEED_BASE), 1), refine_seeds)
    opts = np.concatenate([members[g] for g in top])  # every per-phase option of every top group
    refined = {bits: np.asarray(fn(pinned, jnp.asarray(cands[opts]), keys2, word(bits))).mean(1) for bits in probs}
    tables, entries = [], []
    for g in top:
        sel = np.isin(opts, members[g])
        per_bits = {}
        for bits, p in probs.items():
            j = np.flatnonzero(sel)[int(np.argmax(refined[bits][sel]))]
            per_bits[bits] = (cands[opts[j]], float(refined[bits][j]), p)
        words = [per_bits[tuple((w >> t) & 1 for t in mod)] for w in range(2**T)]
        tables.append(np.stack([a for a, _, _ in words]))
        entries.append(words)
    keys3 = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(TUNE_SEED_BASE), 2), refine_seeds)
    free = np.asarray(_oracle_score_fn(env, int(params.horizon_steps))(params, jnp.asarray(np.stack(tables)), keys3)).mean(1)
    best = int(np.argmax(free))
    phases = []
    for a, sc, p in entries[best]:
        typed = env.decode_action(jnp.asarray(a)).to_dict()
        phases.append({"action": [int(x) for x in a], "typed": typed, "score": sc, "probability": p})
    log(f"  {env.name} oracle: {len(top)} candidate tables, free-running scores {np.round(free, 3).tolist()}; kept "
        f"{best} ({free[best]:.3f})")
    for w, ph in enumerate(phases):
        log(f"    phase word {w}: {ph['typed']} (pinned score {ph['score']:.3f}, probability {ph['probability']:.3f})")
    return {"phases": phases, "free_running_score": float(free[best]), "candidate_tables": len(top)}


def tune_task(env, params, seeds: int = 2, refine: int = 8, refine_seeds: int = 8, log=print) -> dict:
    """The best constant action of ``env`` and, for tasks with Markov-modulated bursts, the oracle's phase table."""
    res = {"best": search(env, params, seeds, refine, refine_seeds, log=log)}
    if np.any(np.asarray((params.p_on_to_off > 0) | (params.p_off_to_on > 0))):
        oracle = tune_oracle(env, params, seeds, refine, refine_seeds, log=log)
        res["phases"] = oracle["phases"]
        res["oracle_free_running_score"] = oracle["free_running_score"]
    return res
