"""Where one env step's time goes (the figures in the README's performance section).

    taskset -c 0 python -m benchmarks.profile_step        # one core, so CPU time = one core's time

1. Cost split: CPU seconds per cluster-step at ``n_leaps`` = 1 and 8 (2,048 clusters, task
   ``static``) give the per-interval part and the per-leap part.
2. XLA:CPU kernels: loop fusions in the compiled leap (the scan body of the step).
3. Primitive costs under ``vmap`` over 4,096 x 64: ``jnp.argmax`` vs ``physics.numerics.argmax_first``,
   ``jnp.cumsum`` vs ``physics.numerics.cumsum`` (triangular matmul).
4. Where a step's kernel time goes, by phase: the XLA profiler's record of every kernel of a rollout
   (2,048 clusters x 8 steps, run 4 times), each kernel's fastest call times its number of calls (so
   a busy machine inflates it little), summed by the engine's named scopes (``jax.named_scope`` in
   :func:`gymjax.engine.leap`: preempt, admit, schedule, prefill_timeline, ...; "interval" is the
   rest of the step: arrivals, queues, observation, reward, auto-reset). Compare two commits with it
   back to back; the absolute figure is a lower bound of the step's cost.

Writes ``benchmarks/results/profile_step.json``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "profile_step.json"


def cpu_us_per_cluster_step(n_leaps: int, n: int = 2048, steps: int = 6) -> float:
    import jax

    import gymjax
    from gymjax.vector import make_rollout

    env, params = gymjax.make("static", n_leaps=n_leaps)
    run = make_rollout(env, n, steps)
    jax.block_until_ready(run(jax.random.PRNGKey(0), params)[1])
    times = []
    for i in range(3):
        t = time.process_time()
        jax.block_until_ready(run(jax.random.PRNGKey(i + 1), params)[1])
        times.append(time.process_time() - t)
    return sorted(times)[1] / (n * steps) * 1e6


def leap_fusions() -> int:
    import jax

    import gymjax

    env, params = gymjax.make("static")
    n = 256
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    _, st = jax.vmap(env.reset, (0, None))(keys, params)
    a = env.encode_action(env.default_action())
    txt = jax.jit(jax.vmap(env.step, (0, 0, None, None))).lower(keys, st, a, params).compile().as_text()
    # the largest while-loop body is the leap scan
    bodies = re.findall(r"\n(%\S*region\S*[^\n]*\{\n)(.*?)\n\}", txt, re.S)
    return max(len(re.findall(r"= \S+ fusion\(", body)) for _, body in bodies)


def primitive_ns() -> dict:
    import jax
    import jax.numpy as jnp

    from gymjax.physics import numerics

    n, b, reps = 4096, 64, 20
    x = jax.random.uniform(jax.random.PRNGKey(0), (n, b))

    def bench(f):
        g = jax.jit(lambda x: jax.lax.fori_loop(0, reps, lambda i, c: f(c), x))
        g(x).block_until_ready()
        t = time.process_time()
        g(x).block_until_ready()
        return round((time.process_time() - t) / reps / n * 1e9, 1)

    v = jax.vmap
    return {
        "argmax (jnp.argmax)": bench(v(lambda r: r + jnp.argmax(r) * 1e-9)),
        "argmax (numerics.argmax_first)": bench(v(lambda r: r + numerics.argmax_first(r) * 1e-9)),
        "cumsum (jnp.cumsum)": bench(v(lambda r: jnp.cumsum(r) * 1e-2)),
        "cumsum (numerics.cumsum)": bench(v(lambda r: numerics.cumsum(r) * 1e-2)),
    }


PHASES = ("preempt", "admit", "schedule", "prefill_timeline", "leap_length", "prefill_progress", "decode_progress", "finish_accounting")


def phase_us(n: int = 2048, steps: int = 8, runs: int = 4) -> dict:
    """Microseconds per cluster-step by engine phase (see the module docstring, item 4)."""
    import collections
    import glob
    import gzip
    import tempfile

    import jax

    import gymjax
    from gymjax.vector import make_rollout

    env, params = gymjax.make("static")
    run = make_rollout(env, n, steps)
    hlo = run.lower(jax.random.PRNGKey(0), params).compile().as_text()
    phase_of = {}
    for m in re.finditer(r'^\s*%(\S+) = [^\n]*?metadata=\{op_name="([^"]*)"', hlo, re.M):
        parts = m.group(2).split("/")
        phase_of[m.group(1)] = next((p for p in parts if p in PHASES), "interval")
    jax.block_until_ready(run(jax.random.PRNGKey(0), params)[1])
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(runs):
                jax.block_until_ready(run(jax.random.PRNGKey(1), params)[1])
        (trace,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(trace))["traceEvents"]
    calls = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") in phase_of:
            calls[e["name"]].append(e["dur"])  # microseconds
    by_phase = collections.Counter()
    for name, durs in calls.items():
        by_phase[phase_of[name]] += min(durs) * len(durs) / runs
    total = sum(by_phase.values())
    out = {k: round(v / (n * steps), 3) for k, v in by_phase.most_common()}
    return {"total": round(total / (n * steps), 3), **out}


def main() -> None:
    one, eight = cpu_us_per_cluster_step(1), cpu_us_per_cluster_step(8)
    per_leap = (eight - one) / 7
    res = {
        "command": "taskset -c 0 python -m benchmarks.profile_step",
        "cpu_us_per_cluster_step": {"n_leaps=1": round(one, 2), "n_leaps=8": round(eight, 2)},
        "per_interval_us": round(one - per_leap, 2),
        "per_leap_us": round(per_leap, 2),
        "loop_fusions_per_leap": leap_fusions(),
        "primitive_ns_per_cluster_vmap_4096x64": primitive_ns(),
        "kernel_us_per_cluster_step_by_phase": phase_us(),
    }
    print(json.dumps(res, indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
