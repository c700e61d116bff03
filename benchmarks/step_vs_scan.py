"""Same key, two compiled programs: does ``jit(env.step)`` step by step (the server's path) give the
trajectory that ``vmap(lax.scan(env.step))`` (evaluation, training) gives?

    python -m benchmarks.step_vs_scan                                  # static, 24 seeds x 30 steps
    XLA_FLAGS=--xla_cpu_max_isa=AVX python -m benchmarks.step_vs_scan --seeds 12 --tag no-fma

Each seed plays a fixed action sequence at the server's test sizes: uniformly random actions, every
third seed every knob at its highest level, every third the smallest KV budget. Both paths start
from ``env.reset`` with the same key and step with the same keys (``split(k_step, n)``). After every
step the two states are compared: integer and boolean leaves (admissions, slots, queues, counters)
exactly, float leaves by their largest relative difference. A seed *parts* at the first step where
a discrete leaf differs. Writes ``benchmarks/results/step_vs_scan[_TAG].json``.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.common import machine_info, result_path, write_result

SIZES = {"n_slots": 32, "queue_cap": 64, "max_arrivals": 32}


def actions_for(seed: int, nvec: tuple[int, ...], n_steps: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    a = np.stack([rng.integers(0, n, n_steps) for n in nvec], -1)
    if seed % 3 == 1:
        a[:] = [n - 1 for n in nvec]  # every knob at its highest level
    if seed % 3 == 2:
        a[:, 1] = 0  # the smallest KV budget
    return a.astype(np.int32)


def compare(task: str, n_seeds: int, n_steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gymjax

    env, params = gymjax.make(task, horizon_steps=n_steps, **SIZES)
    nvec = env.action_space(params).nvec
    actions = np.stack([actions_for(s, nvec, n_steps) for s in range(n_seeds)])
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(n_seeds))

    def scanned(key, acts):
        k_reset, k_steps = jax.random.split(key)
        _, state = env.reset(k_reset, params)

        def body(st, x):
            k, a = x
            st = env.step(k, st, a, params)[1]
            return st, st

        return jax.lax.scan(body, state, (jax.random.split(k_steps, n_steps), acts))[1]

    by_scan = jax.device_get(jax.jit(jax.vmap(scanned))(keys, jnp.asarray(actions)))
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    parted, worst = {}, {}
    for s in range(n_seeds):
        k_reset, k_steps = jax.random.split(keys[s])
        step_keys = jax.random.split(k_steps, n_steps)
        state = reset(k_reset, params)[1]
        for t in range(n_steps):
            state = step(step_keys[t], state, jnp.asarray(actions[s, t]), params)[1]
            ref = jax.tree.leaves(jax.tree.map(lambda x, s=s, t=t: x[s, t], by_scan))
            for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(jax.device_get(state)), ref, strict=True):
                x, y, name = np.asarray(x), np.asarray(y), jax.tree_util.keystr(path)
                if x.dtype.kind in "biu":
                    if s not in parted and not np.array_equal(x, y):
                        parted[s] = {"step": t, "leaf": name}
                elif x.size:
                    rel = float((np.abs(x - y) / np.maximum(np.abs(y), 1e-3)).max())
                    if s not in parted:  # before the paths part: the rounding itself
                        worst[name] = max(worst.get(name, 0.0), rel)
    return {
        "task": task,
        "seeds": n_seeds,
        "steps": n_steps,
        "seeds_parted": len(parted),
        "first_parting": {str(s): p for s, p in sorted(parted.items())},
        "largest_float_rel_diff_before_parting": dict(sorted(worst.items(), key=lambda kv: -kv[1])[:8]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["static"])
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tag", default="", help="suffix of the result file (e.g. no-fma)")
    a = ap.parse_args(argv)
    rows = []
    for task in a.tasks:
        row = compare(task, a.seeds, a.steps)
        rows.append(row)
        print(f"{task}: {row['seeds_parted']} of {row['seeds']} seeds parted within {row['steps']} steps "
              f"{row['first_parting']}")
    payload = {
        "command": "python -m benchmarks.step_vs_scan " + " ".join(sys.argv[1:] if argv is None else argv),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "tasks": rows,
        "machine": machine_info(),
    }
    print("->", write_result(result_path("step_vs_scan", a.tag), payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
