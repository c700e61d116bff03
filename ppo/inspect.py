"""What a policy does in each load phase: the share of steps at each level of each knob.

    python -m ppo.inspect --policy runs/adversarial            # the 8 standard evaluation episodes
    python -m ppo.inspect --policy runs/bursty --episodes 16 --json shares.json

The phase of a step is the hidden burst state of the task's Markov-modulated tenants (bit ``t`` set
while tenant ``t`` is in its high phase; tenants with a steady rate never set theirs). Episodes
start like ``gymjax.evaluate``'s (``gymjax.grading.eval_keys``), and the policy plays greedily.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def phase_action_shares(env, params, policy, n_episodes: int = 8) -> dict:
    """``{phase: {"share": fraction of steps, knob name: {level value: fraction of that phase's steps}}}``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gymjax.grading import eval_keys

    modulated = (params.burst_high_mult != params.burst_low_mult).astype(jnp.int32)

    def episode(key):
        k_reset, k_run = jax.random.split(key)
        obs, st = env.reset(k_reset, params)

        def body(carry, k):
            obs, st = carry
            k_pol, k_step = jax.random.split(k)
            a = policy(k_pol, obs, st)
            phase = jnp.sum(st.burst_on.astype(jnp.int32) * modulated * 2 ** jnp.arange(st.burst_on.shape[0]))
            obs, st, *_ = env.step(k_step, st, a, params)
            return (obs, st), (a, phase)

        return jax.lax.scan(body, (obs, st), jax.random.split(k_run, int(params.horizon_steps)))[1]

    actions, phases = jax.device_get(jax.jit(jax.vmap(episode))(eval_keys(n_episodes)))
    actions, phases = np.asarray(actions).reshape(-1, len(env.knobs)), np.asarray(phases).reshape(-1)
    out = {}
    for ph in np.unique(phases):
        m = phases == ph
        row = {"share": float(m.mean())}
        for j, knob in enumerate(env.knobs):
            idx, n = np.unique(actions[m, j], return_counts=True)
            row[knob.name] = {float(knob.levels[i]): float(c / m.sum()) for i, c in zip(idx, n, strict=True)}
        out[int(ph)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppo.inspect", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="a saved policy directory (inferencegym train, make train)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--json", default=None, help="also write the shares here")
    a = p.parse_args(argv)
    if a.episodes < 1:
        raise SystemExit("--episodes must be >= 1")

    import gymjax
    from ppo.checkpoint import load_policy

    policy, meta = load_policy(a.policy)
    cfg = meta["config"]
    env, params = gymjax.make(cfg["task"], **cfg["env_kwargs"])
    shares = phase_action_shares(env, params, policy, a.episodes)
    tenants = [t.name for t in env.spec.tenants]
    for ph, row in shares.items():
        bursting = [t for i, t in enumerate(tenants) if ph >> i & 1] or ["none"]
        print(f"phase {ph} (bursting: {', '.join(bursting)}; {row['share']:.0%} of steps)")
        for knob in env.knobs:
            top = sorted(row[knob.name].items(), key=lambda kv: -kv[1])
            print(f"  {knob.name:22s} " + "  ".join(f"{v:g}: {s:.0%}" for v, s in top))
    if a.json:
        Path(a.json).write_text(json.dumps({"policy": a.policy, "episodes": a.episodes, "phases": shares}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
