"""Env steps per second of the vectorised simulator as the number of clusters grows.

    python -m benchmarks.env_throughput                       # 1 ... 65,536 clusters, default settings
    python -m benchmarks.env_throughput --clusters 4096 --task static
    python -m benchmarks.env_throughput --single-core         # the same, pinned to one core (taskset -c 0)
    python -m benchmarks.env_throughput --host-devices 2      # one XLA device per core, clusters sharded
    python -m benchmarks.env_throughput --clusters 1 4096 --grow 65536 4194304   # then double until OOM (GPU)

Workload: the task's traffic (``static``: 15 req/s of chat per cluster, 1 s control interval) under
vLLM's default configuration. For each cluster count: compile time (``lower().compile()``) and the
first run, both excluded from the rate; the median of ``--repeats`` timed runs; env steps/s =
clusters x steps / median seconds; CPU seconds per run; state size per cluster; peak memory. With
several devices the clusters are sharded over them (``gymjax.vector``; ``--no-shard`` turns it off).
``--grow A B`` doubles the cluster count from A up to B after the listed sizes and stops cleanly at
the first out-of-memory. The JSON is rewritten after every size, so a run cut short keeps what it
measured. Results: ``benchmarks/results/env_throughput[_tag][_gpu].json`` and a PNG of all variants.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time

from benchmarks.common import LoadMonitor, is_oom, machine_info, median, result_path, results_dir, write_result

# results/env_throughput*.json files written before labels were stored
_LEGACY_LABELS = {
    "env_throughput": "vmap, 2 cores",
    "env_throughput_single_core": "vmap, 1 core (taskset -c 0)",
    "env_throughput_2dev": "sharded over 2 host devices, 2 cores",
}


def device_memory_peak_mb() -> float | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend has memory stats
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def bench_one(task: str, n: int, steps: int, repeats: int, chunk: int | None, shard: bool | None, overrides: dict | None = None) -> dict:
    """Time ``make_rollout`` of ``n`` clusters for ``steps`` steps (see the module docstring)."""
    import jax

    import gymjax
    from gymjax.vector import cluster_sharding, make_rollout

    env, params = gymjax.make(task, **(overrides or {}))
    run = make_rollout(env, n, steps, chunk=chunk, shard=shard)
    sharded = cluster_sharding(n, shard=shard) is not None
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = run.lower(key, params).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    st, r = jax.block_until_ready(compiled(key, params))
    first_s = time.perf_counter() - t0
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(st)) / n
    del st, r
    walls, cpus = [], []
    for i in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(compiled(jax.random.PRNGKey(i + 1), params))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        del out
    wall, cpu = median(walls), median(cpus)
    return {
        "clusters": n,
        "steps": steps,
        "chunk": chunk,
        "devices": jax.device_count() if sharded else 1,
        "compile_s": round(compile_s, 3),
        "first_run_s": round(first_s, 4),
        "runs_wall_s": [round(w, 4) for w in walls],
        "median_wall_s": round(wall, 4),
        "median_cpu_s": round(cpu, 4),
        "env_steps_per_s": round(n * steps / wall, 1),
        "env_steps_per_cpu_s": round(n * steps / max(cpu, 1e-9), 1),
        "state_bytes_per_cluster": int(state_bytes),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device_peak_mb": device_memory_peak_mb(),
    }


def default_steps(n: int, budget: int, min_steps: int = 4) -> int:
    """Steps per timed run: about ``budget`` cluster-steps, between ``min_steps`` and 200."""
    return max(min_steps, min(200, budget // n))


def sizes(listed: list[int], grow: list[int] | None) -> list[tuple[int, bool]]:
    """``(clusters, growing)`` in order: the listed sizes, then doublings from grow[0] to grow[1]."""
    out = [(n, False) for n in listed]
    if grow:
        n = grow[0]
        while n <= grow[1]:
            if n not in listed:
                out.append((n, True))
            n *= 2
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="static")
    ap.add_argument("--clusters", type=int, nargs="*", default=[1, 64, 1024, 4096, 16384, 65536])
    ap.add_argument("--grow", type=int, nargs=2, metavar=("FROM", "TO"), help="then double from FROM up to TO, stopping at the first OOM")
    ap.add_argument("--steps", type=int, default=0, help="steps per timed run (default: ~--budget cluster-steps, 4..200)")
    ap.add_argument("--budget", type=int, default=200_000, help="cluster-steps per timed run when --steps is not given")
    ap.add_argument("--min-steps", type=int, default=4, help="fewest steps per timed run (each run also resets every cluster once)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=0, help="process clusters in lax.map chunks of this size (0: plain vmap)")
    ap.add_argument(
        "--host-devices",
        type=int,
        default=0,
        help="CPU only: split the host into this many XLA devices (one per core) and shard the clusters over them",
    )
    ap.add_argument("--no-shard", action="store_true", help="do not shard the clusters even with several devices")
    ap.add_argument("--single-core", action="store_true", help="re-run this benchmark under `taskset -c 0`")
    ap.add_argument("--tag", default="")
    ap.add_argument("--label", default="", help="legend label of this variant in the plot")
    ap.add_argument("--append", action="store_true", help="keep the sizes already in this variant's JSON that this run does not measure")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    if args.single_core and "_IG_PINNED" not in os.environ:
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "benchmarks.env_throughput", *(argv if argv is not None else sys.argv[1:])]
        raise SystemExit(subprocess.call(cmd, env={**os.environ, "_IG_PINNED": "1"}))

    if args.host_devices:
        # must happen before JAX initialises its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.host_devices}").strip()
    monitor = LoadMonitor()
    info = machine_info()
    shard = False if args.no_shard else None
    tag = args.tag or ("single_core" if args.single_core else (f"{args.host_devices}dev" if args.host_devices > 1 else ""))
    path = result_path("env_throughput", tag)
    label = args.label or _default_label(info, args)
    cmd = "python -m benchmarks.env_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    todo = sizes(args.clusters, args.grow)
    kept: list[dict] = []
    if args.append and path.exists():
        import json

        measuring = {n for n, _ in todo}
        prior = json.loads(path.read_text())
        kept = [r for r in prior.get("results", []) if r.get("clusters") not in measuring]
        cmd = f"{prior.get('command', '?')} && {cmd.strip()}"  # both runs' sizes are in the file
    rows: list[dict] = []
    for n, growing in todo:
        steps = args.steps or default_steps(n, args.budget, args.min_steps)
        chunk = args.chunk if args.chunk and n > args.chunk else None
        try:
            row = bench_one(args.task, n, steps, args.repeats, chunk, shard=shard)
        except Exception as e:  # noqa: BLE001 - out of memory at the largest sizes is a result, not a crash
            row = {"clusters": n, "steps": steps, "oom": is_oom(e), "error": f"{type(e).__name__}: {str(e)[:300]}"}
        rows.append(row)
        print(_line(row), flush=True)
        write_result(
            path,
            {
                "benchmark": "env_throughput",
                "command": cmd.strip(),
                "task": args.task,
                "label": label,
                "machine": info,
                "load": monitor.report(),
                "results": sorted(kept + rows, key=lambda r: r["clusters"]),
            },
        )
        gc.collect()
        if "error" in row and growing:
            print(f"stopping the growth at {n} clusters ({'out of memory' if row['oom'] else 'error'})", flush=True)
            break
    if not args.no_plot:
        where = info["device_kind"] if info["backend"] != "cpu" else info["cpu"][:40]
        plot_all(f"gymjax env throughput, task {args.task} ({where}, jax {info['jax']})")
    print(f"wrote {path}")


def _default_label(info: dict, args) -> str:
    if info["backend"] != "cpu":
        return f"{info['device_kind']} x{info['n_devices']}" if info["n_devices"] > 1 else info["device_kind"]
    cores = info["cores_available"]
    if args.host_devices > 1 and not args.no_shard:
        return f"sharded over {args.host_devices} host devices, {cores} cores"
    return f"vmap, {cores} core{'s' if cores > 1 else ''}" + (" (taskset -c 0)" if args.single_core else "")


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['clusters']:>9,d} clusters: {row['error'][:160]}"
    return (
        f"{row['clusters']:>9,d} clusters x {row['steps']:3d} steps: {row['env_steps_per_s']:>13,.0f} env steps/s "
        f"(median of {len(row['runs_wall_s'])}, {row['median_wall_s']:.3f} s) | compile {row['compile_s']:.1f} s, "
        f"first run {row['first_run_s']:.2f} s | {row['devices']} device(s)"
    )


def load_curves() -> list[tuple[str, str, list[dict]]]:
    """``(stem, label, rows with a rate)`` of every saved ``env_throughput*.json``."""
    import json

    curves = []
    for f in sorted(results_dir().glob("env_throughput*.json")):
        d = json.loads(f.read_text())
        rows = [r for r in d.get("results", []) if "env_steps_per_s" in r]
        if rows:
            curves.append((f.stem, d.get("label") or _LEGACY_LABELS.get(f.stem, f.stem), rows))
    return curves


def plot_all(title: str) -> None:
    """One plot of every saved variant (plain vmap, single core, sharded, GPU) in env_throughput.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = load_curves()
    if not curves:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for _, label, rows in curves:
        ax.plot([r["clusters"] for r in rows], [r["env_steps_per_s"] for r in rows], "o-", label=label)
    ax.axhline(1e5, color="grey", ls="--", lw=1, label="target at 4,096 clusters (2 cores)")
    if any(s.endswith("_gpu") for s, _, _ in curves):
        ax.axhline(1e7, color="green", ls="--", lw=1, label="target on one H100")
    ax.axhline(900, color="red", ls=":", lw=1, label="hackathon original (~900)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated clusters (vmap)")
    ax.set_ylabel("env steps / s (1 step = 1 s simulated)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(results_dir() / "env_throughput.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
