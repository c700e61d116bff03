"""Env steps per second of the vectorised simulator as the number of clusters grows.

    python -m benchmarks.env_throughput                       # 1 ... 65,536 clusters, default settings
    python -m benchmarks.env_throughput --clusters 4096 --task static
    python -m benchmarks.env_throughput --single-core         # the same, pinned to one core (taskset -c 0)

Workload: the task's traffic (``static``: 15 req/s of chat per cluster, 1 s control interval) under
vLLM's default configuration. For each cluster count: compile time (first call, excluded from the
rate), the median of ``--repeats`` timed runs, env steps/s = clusters x steps / seconds, CPU seconds
per run, and the state size per cluster. Results: ``benchmarks/results/env_throughput*.json`` and a
PNG plot. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine_info() -> dict:
    import jax

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "n_devices": jax.device_count(),
        "cpu": cpu,
        "cores_available": len(os.sched_getaffinity(0)),
    }


def bench_one(task: str, n: int, steps: int, repeats: int, chunk: int | None, shard: bool) -> dict:
    import jax

    import gymjax
    from gymjax.vector import cluster_sharding, make_rollout

    env, params = gymjax.make(task)
    run = make_rollout(env, n, steps, chunk=chunk, shard=shard)
    sharded = shard and cluster_sharding(n) is not None
    t0 = time.perf_counter()
    st, r = run(jax.random.PRNGKey(0), params)
    jax.block_until_ready(r)
    compile_s = time.perf_counter() - t0
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(st)) / n
    walls, cpus = [], []
    for i in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(run(jax.random.PRNGKey(i + 1), params)[1])
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall = sorted(walls)[len(walls) // 2]
    cpu = sorted(cpus)[len(cpus) // 2]
    return {
        "clusters": n, "steps": steps, "chunk": chunk, "devices": jax.device_count() if sharded else 1,
        "compile_plus_first_run_s": round(compile_s, 3),
        "median_wall_s": round(wall, 4), "median_cpu_s": round(cpu, 4),
        "env_steps_per_s": round(n * steps / wall, 1), "env_steps_per_cpu_s": round(n * steps / cpu, 1),
        "state_bytes_per_cluster": int(state_bytes), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, rows in results:
        ax.plot([r["clusters"] for r in rows], [r["env_steps_per_s"] for r in rows], "o-", label=label)
    ax.axhline(1e5, color="grey", ls="--", lw=1, label="target at 4,096 clusters (2 cores)")
    ax.axhline(900, color="red", ls=":", lw=1, label="hackathon original (~900)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated clusters (vmap)")
    ax.set_ylabel("env steps / s (1 step = 1 s simulated)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="static")
    ap.add_argument("--clusters", type=int, nargs="*", default=[1, 64, 1024, 4096, 16384, 65536])
    ap.add_argument("--steps", type=int, default=0, help="steps per timed run (default: ~200k cluster-steps, >= 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=0, help="process clusters in lax.map chunks of this size (0: plain vmap)")
    ap.add_argument("--host-devices", type=int, default=0,
                    help="CPU only: split the host into this many XLA devices (one per core) and shard the clusters over them")
    ap.add_argument("--single-core", action="store_true", help="re-run this benchmark under `taskset -c 0`")
    ap.add_argument("--tag", default="")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    if args.single_core and "_IG_PINNED" not in os.environ:
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.env_throughput", *[a for a in (argv or sys.argv[1:])]]
        raise SystemExit(subprocess.call(cmd, env={**os.environ, "_IG_PINNED": "1"}))

    if args.host_devices:
        # must happen before JAX initialises its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.host_devices}").strip()
    info = machine_info()
    rows = []
    for n in args.clusters:
        steps = args.steps or max(4, min(200, 200_000 // n))
        chunk = args.chunk if args.chunk and n > args.chunk else None
        try:
            row = bench_one(args.task, n, steps, args.repeats, chunk, shard=args.host_devices > 1)
        except Exception as e:  # noqa: BLE001 - out of memory at the largest sizes is a result, not a crash
            row = {"clusters": n, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    tag = args.tag or ("single_core" if args.single_core else (f"{args.host_devices}dev" if args.host_devices > 1 else ""))
    stem = "env_throughput" + (f"_{tag}" if tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.env_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": cmd.strip(), "task": args.task, "machine": info, "results": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    if not args.no_plot:
        plot_all(f"gymjax env throughput, task {args.task} ({info['cpu'][:40]}, jax {info['jax']})")
    print(f"wrote {RESULTS / (stem + '.json')}")


def plot_all(title: str) -> None:
    """One plot of every saved variant (plain vmap, single core, sharded) in env_throughput.png."""
    curves = []
    for stem, label in (("env_throughput", "vmap, 2 cores"), ("env_throughput_single_core", "vmap, 1 core (taskset -c 0)"),
                        ("env_throughput_2dev", "sharded over 2 host devices, 2 cores")):
        f = RESULTS / f"{stem}.json"
        if f.exists():
            rows = [r for r in json.loads(f.read_text())["results"] if "env_steps_per_s" in r]
            if rows:
                curves.append((label, rows))
    if curves:
        plot(curves, RESULTS / "env_throughput.png", title)


if __name__ == "__main__":
    main()
