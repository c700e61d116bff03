"""Grid search for the best constant action per task (and per load phase, for the oracle).

    python -m gymjax.tune                 # every registered synthetic + replay task
    python -m gymjax.tune --task bursty   # one task

The grid (documented, the same for every task): every batch-cap level x KV budget {0.9, 0.95} x
speculation depth {0, 1, 2, 4} x tier {bf16, fp8, int4} x split {chunk-512, chunk-2048,
disaggregated-25} x priority routing {off, on} (on only with several tenants). Each candidate runs
``--seeds`` full episodes (vmapped: every candidate x seed is one simulated cluster); the top
``--refine`` are re-scored on ``--refine-seeds`` seeds and the best mean wins. Tuning seeds are
disjoint from the evaluation seeds of :func:`gymjax.grading.eval_keys`.

For tasks with Markov-modulated bursts, the same search runs with the phase pinned (no switching),
once per phase, over the fast knobs with the slow knobs (tier, split) held at the best constant's,
giving the oracle's table. Results go to ``gymjax/data/best_constant.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.env import mirror_bursts
from gymjax.grading import grade
from gymjax.presets import PD_MODES, QUANT_TIERS

TUNE_SEED_BASE = 7_000_001
OUT = Path(__file__).parent / "data" / "best_constant.json"


def grid(env, fixed_slow: tuple[int, int] | None = None) -> np.ndarray:
    """The documented grid as flat action indices [n, 6]; ``fixed_slow`` pins (tier, split)."""
    lv = {k.name: list(k.levels) for k in env.knobs}
    pick = lambda name, values: [lv[name].index(float(v)) for v in values]  # noqa: E731
    tiers = [i for i, q in enumerate(QUANT_TIERS) if q.name in ("bf16", "fp8", "int4")]
    splits = [i for i, m in enumerate(PD_MODES) if m.name in ("colocated-chunk-512", "colocated-chunk-2048", "disaggregated-prefill-25")]
    axes = [
        list(range(len(lv["batch_cap"]))),
        pick("kv_budget_fraction", (0.9, 0.95)),
        pick("speculation_depth", (0, 1, 2, 4)),
        tiers if fixed_slow is None else [fixed_slow[0]],
        splits if fixed_slow is None else [fixed_slow[1]],
        [0, 1] if env.cfg.n_tenants > 1 else [0],
    ]
    return np.asarray(list(itertools.product(*axes)), np.int32)


def _score_fn(env, n_steps: int):
    """jit(vmap over actions x seeds) of one constant-action episode's score; ``phase`` pins bursts."""

    def one(params, action, key, phase):
        k_reset, k_run = jax.random.split(key)
        obs, st = env.reset(k_reset, params)
        pinned = mirror_bursts(params, ((phase >> jnp.arange(env.cfg.n_tenants)) & 1).astype(jnp.int32))
        st = st.replace(burst_on=jnp.where(phase >= 0, pinned, st.burst_on).astype(jnp.int32))

        def body(carry, k):
            st, ep = carry
            _, st, _, _, _, info = env.step(k, st, action, params)
            return (st, info["episode"]), None

        (_, ep), _ = jax.lax.scan(body, (st, st.episode), jax.random.split(k_run, n_steps))
        return grade(params, ep)

    per_seed = jax.vmap(one, in_axes=(None, None, 0, None))
    return jax.jit(jax.vmap(per_seed, in_axes=(None, 0, None, None)))


def search(env, params, seeds: int = 2, refine: int = 8, refine_seeds: int = 8, phase: int = -1,
           chunk: int = 256, fixed_slow: tuple[int, int] | None = None, log=print) -> dict:
    """Best constant action of ``env`` (optionally with the burst phase pinned to ``phase`` and the
    slow knobs pinned to ``fixed_slow`` = (tier, split))."""
    if phase >= 0:
        params = params.replace(p_on_to_off=params.p_on_to_off * 0, p_off_to_on=params.p_off_to_on * 0)
    n_steps = int(params.horizon_steps)
    cands = grid(env, fixed_slow)
    refine = min(refine, len(cands))
    chunk = min(chunk, len(cands))
    fn = _score_fn(env, n_steps)
    root = jax.random.PRNGKey(TUNE_SEED_BASE)
    keys = jax.random.split(root, seeds)
    scores = []
    for i in range(0, len(cands), chunk):
        batch = cands[i : i + chunk]
        pad = chunk - len(batch)
        batch_p = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)]) if pad else batch
        s = np.asarray(fn(params, jnp.asarray(batch_p), keys, phase))[: len(batch)]
        scores.append(s.mean(1))
    scores = np.concatenate(scores)
    top = np.argsort(-scores)[:refine]
    keys2 = jax.random.split(jax.random.fold_in(root, 1), refine_seeds)
    s2 = np.asarray(fn(params, jnp.asarray(cands[top]), keys2, phase))
    best = int(np.argmax(s2.mean(1)))
    action = cands[top[best]]
    typed = env.decode_action(jnp.asarray(action)).to_dict()
    log(f"  {env.name} phase={phase}: best {typed} score {s2.mean(1)[best]:.3f} (grid of {len(cands)})")
    return {"action": [int(x) for x in action], "typed": typed, "score": float(s2.mean(1)[best]),
            "grid_size": int(len(cands)), "seeds": seeds, "refine_seeds": refine_seeds}


def tune_task(name: str, seeds: int = 2, refine: int = 8, refine_seeds: int = 8, log=print) -> dict:
    import gymjax

    env, params = gymjax.make(name)
    res = {"best": search(env, params, seeds, refine, refine_seeds, log=log)}
    modulated = np.asarray((params.p_on_to_off > 0) | (params.p_off_to_on > 0))
    if modulated.any():
        mod = [t for t in range(env.cfg.n_tenants) if modulated[t]]
        per_assign = {}
        for bits in itertools.product([0, 1], repeat=len(mod)):
            phase = sum(b << t for b, t in zip(bits, mod, strict=True))
            # the oracle switches fast knobs only: switching a slow knob at every phase change would
            # pay a reload/drain each time, so slow knobs stay at the best constant's
            slow = (res["best"]["action"][3], res["best"]["action"][4])
            per_assign[bits] = search(env, params, seeds, refine, refine_seeds, phase=phase, fixed_slow=slow, log=log)
        # table over all 2**T phase words; tenants without bursts do not matter
        table = []
        for word in range(2 ** env.cfg.n_tenants):
            bits = tuple((word >> t) & 1 for t in mod)
            table.append(per_assign[bits])
        res["phases"] = table
    return res


def main(argv=None) -> None:
    import gymjax

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", action="append", help="task(s) to tune (default: all but 'trace')")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--refine", type=int, default=8)
    ap.add_argument("--refine-seeds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    tasks = args.task or [t for t in gymjax.registered_envs() if t != "trace"]
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    for t in tasks:
        t0 = time.time()
        data[t] = tune_task(t, args.seeds, args.refine, args.refine_seeds)
        data[t]["command"] = (
            f"python -m gymjax.tune --task {t} --seeds {args.seeds} --refine {args.refine} --refine-seeds {args.refine_seeds}"
        )
        data[t]["jax_version"] = jax.__version__
        print(f"  {t}: {time.time() - t0:.0f} s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
