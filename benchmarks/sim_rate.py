"""Simulated requests and simulated cluster-seconds per wall second on a fixed workload.

    python -m benchmarks.sim_rate                          # 1 and 1,024 clusters
    python -m benchmarks.sim_rate --clusters 1 65536       # (a GPU)

The numbers a discrete-event serving simulator is judged by (Vidur, LLMServingSim, ... simulate one
cluster and report simulated requests, or simulated time, per wall second), so the simulator can be
put beside them. Fixed workload: task ``static`` (Llama-3-8B on one H100; Poisson 15 req/s of chat,
prompts p50 1,020 tokens, outputs p50 129), vLLM's default configuration, one episode of
``--seconds`` simulated seconds per cluster (the horizon is set one step longer, so the final state
still holds the whole episode's counters). Every request is simulated individually (arrival,
queueing, admission, prefill, decode, preemption, finish); token flow inside a leap is closed-form,
so the cost per simulated second does not grow with the iterations a second contains.

For each cluster count: compile time and first run (excluded), the median of ``--repeats`` timed
runs, then simulated requests (arrived, finished) per wall second, and simulated cluster-seconds per
wall second (the speed-up over real time, summed over clusters), and per CPU-second (the process's
CPU time over all its threads: per core).

Side by side (unless ``--no-reference``): the package's reference simulator
(:mod:`gymjax.reference`, plain Python, one event per engine iteration, the kind of simulator Vidur
is) serves the very requests one fast-engine cluster served (its request log: arrival, prompt and
output lengths), under the same configuration, in the same process; the ratio of simulated requests
per CPU-second is the fast engine's speed-up over an iteration-level simulator on this machine.
Writes ``benchmarks/results/sim_rate[_gpu].json``.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.common import LoadMonitor, is_oom, machine_info, result_path, time_jitted, write_result


def bench(task: str, n: int, seconds: int, repeats: int) -> dict:
    import jax
    import numpy as np

    import gymjax
    from gymjax.vector import cluster_sharding, make_rollout

    env, params = gymjax.make(task)
    dt = float(params.dt_s)
    steps = max(1, round(seconds / dt))
    env, params = gymjax.make(task, horizon_steps=steps + 1)
    run = make_rollout(env, n, steps)
    t = time_jitted(run, (jax.random.PRNGKey(0), params), repeats, vary=lambda i: (jax.random.PRNGKey(i + 1), params))
    ep = jax.device_get(t["out"][0].episode)  # the last timed run's final states
    arrived, finished, dropped = (int(np.sum(x)) for x in (ep.arrived, ep.finished, ep.dropped))
    wall = t["median_s"]
    return {
        "clusters": n,
        "devices": jax.device_count() if cluster_sharding(n, shard=None) is not None else 1,
        "simulated_s_per_cluster": steps * dt,
        "requests_arrived": arrived,
        "requests_finished": finished,
        "requests_dropped": dropped,
        "output_tokens": float(np.sum(ep.output_tokens)),
        "compile_s": round(t["compile_s"], 3),
        "first_run_s": round(t["first_run_s"], 4),
        "runs_wall_s": [round(x, 4) for x in t["runs_s"]],
        "median_wall_s": round(wall, 4),
        "sim_requests_per_wall_s": round(arrived / wall, 1),
        "sim_finished_requests_per_wall_s": round(finished / wall, 1),
        "sim_cluster_s_per_wall_s": round(n * steps * dt / wall, 1),
        "sim_output_tokens_per_wall_s": round(float(np.sum(ep.output_tokens)) / wall, 1),
        "median_cpu_s": round(t["median_cpu_s"], 4),
        "sim_requests_per_cpu_s": round(arrived / t["median_cpu_s"], 1),
    }


def reference_row(task: str, seconds: int, repeats: int) -> dict:
    """The reference simulator on the requests one fast-engine cluster served (key 0)."""
    import time

    import jax
    import numpy as np

    import gymjax
    from gymjax import reference
    from gymjax.rollout import rollout
    from gymjax.types import REQUEST_LOG_COLUMNS

    env, params = gymjax.make(task)
    steps = max(1, round(seconds / float(params.dt_s)))
    env, params = gymjax.make(task, horizon_steps=steps + 1, request_log=256)
    action = env.default_action()
    flat = env.encode_action(action)

    def run(key):
        return rollout(env, params, lambda k, obs, st: flat, key, steps, lambda s: s.info["requests"])[1]

    logs = jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))
    count = np.asarray(logs["count"])
    if count.max() > 256:
        raise RuntimeError(f"{count.max()} requests finished in one interval: the request log holds 256")
    rows = np.concatenate([logs["rows"][t, : count[t]] for t in range(len(count))])
    col = {name: rows[:, i] for i, name in enumerate(REQUEST_LOG_COLUMNS)}
    reqs = reference.Requests.from_arrays(
        col["arrival_s"], col["prompt_tokens"].astype(int), col["output_tokens"].astype(int), col["tenant"].astype(int)
    )
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = reference.simulate(reqs, env.cfg, params, action)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    n = len(reqs)
    return {
        "simulator": "gymjax.reference (plain Python, one event per iteration)",
        "requests": n,
        "requests_finished": int((res.requests["status"] == reference.FINISHED).sum()),
        "iterations": int(res.counters.get("iterations", 0)) if res.counters else None,
        "runs_wall_s": [round(x, 4) for x in walls],
        "median_wall_s": round(wall, 4),
        "median_cpu_s": round(cpu, 4),
        "sim_requests_per_wall_s": round(n / wall, 1),
        "sim_requests_per_cpu_s": round(n / cpu, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="static")
    ap.add_argument("--clusters", type=int, nargs="*", default=[1, 1024])
    ap.add_argument("--seconds", type=int, default=200, help="simulated seconds per cluster (one episode)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="skip the reference simulator side by side")
    args = ap.parse_args(argv)

    monitor = LoadMonitor()
    out = {
        "benchmark": "sim_rate",
        "command": "python -m benchmarks.sim_rate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": args.task,
        "policy": "vllm-default (held fixed)",
        "machine": machine_info(),
        "results": [],
    }
    path = result_path("sim_rate")
    for n in args.clusters:
        try:
            row = bench(args.task, n, args.seconds, args.repeats)
            print(
                f"{n:>9,d} clusters x {row['simulated_s_per_cluster']:.0f} s: {row['requests_arrived']:,d} requests in "
                f"{row['median_wall_s']:.3f} s -> {row['sim_requests_per_wall_s']:,.0f} simulated requests/s, "
                f"{row['sim_cluster_s_per_wall_s']:,.0f} simulated cluster-s/s (compile {row['compile_s']:.1f} s)",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001
            row = {"clusters": n, "oom": is_oom(e), "error": f"{type(e).__name__}: {str(e)[:300]}"}
            print(f"{n:>9,d} clusters: {row['error'][:160]}", flush=True)
        out["results"].append(row)
        out["load"] = monitor.report()
        write_result(path, out)
    if not args.no_reference:
        ref = reference_row(args.task, args.seconds, args.repeats)
        print(
            f"reference simulator, the requests of one cluster ({ref['requests']:,d}): {ref['median_wall_s']:.3f} s -> "
            f"{ref['sim_requests_per_cpu_s']:,.0f} simulated requests per CPU-second",
            flush=True,
        )
        speedup = {
            str(r["clusters"]): round(r["sim_requests_per_cpu_s"] / ref["sim_requests_per_cpu_s"], 1)
            for r in out["results"]
            if "sim_requests_per_cpu_s" in r
        }
        for n, x in speedup.items():
            print(f"  fast engine at {int(n):,d} clusters: {x:,.1f}x the reference's simulated requests per CPU-second")
        out["reference"] = ref
        out["fast_over_reference_requests_per_cpu_s"] = speedup
        out["load"] = monitor.report()
        write_result(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
