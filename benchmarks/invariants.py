"""The simulator's invariants over many vmapped steps of random and corner actions, on every task.

    python -m benchmarks.invariants                          # every task, 10^7 env steps in all
    python -m benchmarks.invariants --tasks bursty --steps 1e6

Each task runs ``--clusters`` clusters for chunks of ``--chunk-steps`` control intervals (episodes
auto-reset inside a chunk, so resets are exercised too) until its share of ``--steps`` is done. Half
the clusters draw a uniformly random action at every step (slow knobs flip: reloads and drains); the
other half hold one *corner* action for the chunk, every knob at its lowest or highest level (the 64
corners in turn: the smallest KV budget with the largest batch cap, deepest speculation, ...).

Checked at every step of every cluster (counted inside ``jit``, so nothing but the counts leaves the
device), each a violation count:

- ``kv_occupancy``: the observed KV occupancy exceeds 1, or the interval's peak KV blocks in use
  exceed the pool (paged KV is never over-committed);
- ``conservation``: arrived != finished + running + waiting + dropped (the episode's counters);
- ``finite``: a non-finite observation, reward, metric or state leaf;
- ``bounds``: an observation outside its ``Box`` ([0, 1]), a negative metric, SLO attainment above 1.

Writes ``benchmarks/results/invariants[_gpu].json`` with the counts per task, the largest KV
occupancy seen, the steps run, the wall time and the machine's load. Exit status 1 if any violation
was found.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from benchmarks.common import LoadMonitor, machine_info, result_path, write_result

CHECKS = ("kv_occupancy", "conservation", "finite", "bounds")


def violations(step, box_low, box_high):
    """Per-step violation flags of one cluster's :class:`gymjax.rollout.Step` (a dict of int32 0/1
    per check in :data:`CHECKS`) and its observed KV occupancy."""
    import jax
    import jax.numpy as jnp

    m, info = step.info["metrics"], step.info
    metric_leaves = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(m)]
    state_floats = [x for x in jax.tree.leaves(step.next_state) if jnp.issubdtype(x.dtype, jnp.floating)]
    c = info["counters"]
    kv = (m.kv_occupancy > 1.0) | (info["kv_blocks_used_max"] > info["kv_pool_blocks"])
    conservation = c["arrived"] != c["finished"] + c["running"] + c["waiting"] + c["dropped"]
    finite = jnp.all(jnp.isfinite(step.next_obs)) & jnp.isfinite(step.reward)
    finite &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in metric_leaves + state_floats]))
    bounds = jnp.any((step.next_obs < box_low) | (step.next_obs > box_high))
    bounds |= jnp.any(jnp.stack([jnp.any(x < 0) for x in metric_leaves])) | (m.slo_attainment > 1.0)
    flags = {"kv_occupancy": kv, "conservation": jnp.any(conservation), "finite": ~finite, "bounds": bounds}
    return {k: v.astype(jnp.int32) for k, v in flags.items()}, m.kv_occupancy


def corner_actions(nvec: tuple[int, ...]):
    """Every knob at its first or last level: ``2**len(nvec)`` flat actions [C, len(nvec)]."""
    import numpy as np

    return np.array(list(itertools.product(*[(0, n - 1) for n in nvec])), np.int32)


def make_checker(env, params, n_clusters: int, n_steps: int):
    """A jitted ``(key, corner_offset) -> (counts per check, max KV occupancy)`` over ``n_clusters``
    clusters x ``n_steps`` steps (even clusters random, odd clusters a held corner action)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gymjax.rollout import rollout

    space = env.action_space(params)
    corners = jnp.asarray(corner_actions(space.nvec))
    box = env.observation_space(params)
    low, high = jnp.asarray(np.asarray(box.low)), jnp.asarray(np.asarray(box.high))

    def record(step):
        return violations(step, low, high)

    def one(key, corner):
        def policy(k, obs, state):
            return jnp.where(corner >= 0, corners[jnp.maximum(corner, 0)], space.sample(k))

        _, (flags, kv) = rollout(env, params, policy, key, n_steps, record)
        return {k: v.sum() for k, v in flags.items()}, kv.max()

    @jax.jit
    def run(key, corner_offset):
        keys = jax.random.split(key, n_clusters)
        i = jnp.arange(n_clusters)
        corner = jnp.where(i % 2 == 1, (corner_offset + i // 2) % corners.shape[0], -1)
        counts, kv = jax.vmap(one)(keys, corner)
        return {k: v.sum() for k, v in counts.items()}, kv.max()

    return run


def check_task(task: str, total_steps: int, n_clusters: int, n_steps: int, seed: int = 0, overrides: dict | None = None,
               progress=None) -> dict:
    """Run ``task`` for at least ``total_steps`` env steps; the counts per check and what ran."""
    import jax

    import gymjax

    env, params = gymjax.make(task, **(overrides or {}))
    run = make_checker(env, params, n_clusters, n_steps)
    per_chunk = n_clusters * n_steps
    chunks = max(1, -(-total_steps // per_chunk))
    counts = dict.fromkeys(CHECKS, 0)
    kv_max = 0.0
    t0 = time.perf_counter()
    for c in range(chunks):
        got, kv = jax.device_get(run(jax.random.fold_in(jax.random.PRNGKey(seed), c), c * (n_clusters // 2)))
        for k in CHECKS:
            counts[k] += int(got[k])
        kv_max = max(kv_max, float(kv))
        if progress is not None:
            progress(c + 1, chunks)
    wall = time.perf_counter() - t0
    return {
        "task": task,
        "env_steps": chunks * per_chunk,
        "clusters": n_clusters,
        "chunk_steps": n_steps,
        "horizon_steps": int(params.horizon_steps),
        "violations": counts,
        "max_kv_occupancy": kv_max,
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    import gymjax

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=None, help="default: every registered task but 'trace' (needs a CSV)")
    ap.add_argument("--steps", type=float, default=1e7, help="env steps in all, shared equally by the tasks")
    ap.add_argument("--clusters", type=int, default=1024)
    ap.add_argument("--chunk-steps", type=int, default=256, help="control intervals per compiled run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/invariants.json)")
    a = ap.parse_args(argv)
    tasks = a.tasks or [t for t in gymjax.registered_envs() if t != "trace"]
    per_task = int(a.steps) // len(tasks)
    from rich.progress import Progress

    rows = []
    load = LoadMonitor()
    with Progress() as bar:
        for task in tasks:
            job = bar.add_task(f"{task:>14}", total=None)
            row = check_task(task, per_task, a.clusters, a.chunk_steps, a.seed,
                             progress=lambda done, total, job=job: bar.update(job, completed=done, total=total))
            rows.append(row)
            bar.console.print(f"{task:>14}: {row['env_steps']:,} steps, violations {row['violations']}, "
                              f"max KV occupancy {row['max_kv_occupancy']:.4f} ({row['wall_s']} s)")
    total = sum(sum(r["violations"].values()) for r in rows)
    payload = {
        "command": "python -m benchmarks.invariants " + " ".join(sys.argv[1:] if argv is None else argv),
        "env_steps": sum(r["env_steps"] for r in rows),
        "violations_total": total,
        "tasks": rows,
        "machine": machine_info(),
        "load": load.report(),
    }
    path = write_result(Path(a.out) if a.out else result_path("invariants"), payload)
    print(f"{payload['env_steps']:,} env steps, {total} violations -> {path}")
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main())
