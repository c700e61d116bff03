"""Env steps per second against the static capacities: running-batch slots and waiting-queue length.

    python -m benchmarks.env_capacity                          # 1,024 clusters, task static
    python -m benchmarks.env_capacity --clusters 65536         # (a GPU)

At a fixed cluster count, one sweep of ``n_slots`` (``EnvConfig``: the largest batch cap, the
width of every per-slot array) at the default ``queue_cap``, then one of ``queue_cap`` (waiting
requests per tenant) at the default ``n_slots``. Both are static sizes: each point is its own
compilation (reported, excluded from the rate). The workload is the same (task ``static`` under
vLLM's default action, whose batch cap is ``n_slots``: more slots also let more requests run at
once, so part of the cost at 256 slots is that of a fuller batch). Median of ``--repeats`` runs.
Writes ``benchmarks/results/env_capacity[_gpu].json`` and ``env_capacity[_gpu].png``.
"""

from __future__ import annotations

import argparse
import gc
import sys

from benchmarks.common import LoadMonitor, is_oom, machine_info, result_path, write_result
from benchmarks.env_throughput import bench_one, default_steps

SLOTS = [16, 32, 64, 128, 256]
QUEUES = [32, 64, 128, 256, 512, 1024]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="static")
    ap.add_argument("--clusters", type=int, default=1024)
    ap.add_argument("--slots", type=int, nargs="*", default=SLOTS)
    ap.add_argument("--queues", type=int, nargs="*", default=QUEUES)
    ap.add_argument("--steps", type=int, default=0, help="steps per timed run (default: ~--budget cluster-steps)")
    ap.add_argument("--budget", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import gymjax

    monitor = LoadMonitor()
    info = machine_info()
    cfg = gymjax.make(args.task)[0].cfg
    n = args.clusters
    steps = args.steps or default_steps(n, args.budget)
    path = result_path("env_capacity")
    out = {
        "benchmark": "env_capacity",
        "command": "python -m benchmarks.env_capacity " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": args.task,
        "clusters": n,
        "defaults": {"n_slots": cfg.n_slots, "queue_cap": cfg.queue_cap},
        "machine": info,
        "n_slots": [],
        "queue_cap": [],
    }
    for field, values in (("n_slots", args.slots), ("queue_cap", args.queues)):
        for v in values:
            try:
                row = bench_one(args.task, n, steps, args.repeats, None, None, overrides={field: v})
            except Exception as e:  # noqa: BLE001 - an OOM at the largest sizes is a result
                row = {"clusters": n, "oom": is_oom(e), "error": f"{type(e).__name__}: {str(e)[:300]}"}
            row[field] = v
            out[field].append(row)
            rate = (
                f"{row['env_steps_per_s']:>12,.0f} env steps/s, compile {row['compile_s']:.1f} s, "
                f"state {row['state_bytes_per_cluster']:,d} B/cluster"
                if "env_steps_per_s" in row
                else row["error"][:160]
            )
            print(f"{field}={v:5d} ({n:,d} clusters x {steps} steps): {rate}", flush=True)
            out["load"] = monitor.report()
            write_result(path, out)
            gc.collect()
    plot(out, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(out: dict, png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, field, what in (
        (axes[0], "n_slots", "running-batch slots (n_slots)"),
        (axes[1], "queue_cap", "waiting-queue capacity (queue_cap)"),
    ):
        rows = [r for r in out[field] if "env_steps_per_s" in r]
        ax.plot([r[field] for r in rows], [r["env_steps_per_s"] for r in rows], "o-")
        ax.axvline(out["defaults"][field], color="grey", ls=":", lw=1, label="task default")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("env steps / s")
    m = out["machine"]
    dev = m["device_kind"] if m["backend"] != "cpu" else f"{m['cpu'][:30]}, {m['cores_available']} cores"
    fig.suptitle(f"task {out['task']}, {out['clusters']:,d} clusters ({dev}, jax {m['jax']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
