"""`make train`: train PPO on every benchmark task, save policies and plots, print the scoreboard.

    python -m ppo.train_all                      # default settings, seed 0, all registered benchmark tasks
    python -m ppo.train_all --tasks static bursty --total-steps 200000 --seed 1

Per task, under ``runs/<task>/``: ``policy.msgpack`` + ``config.json`` (load with
``ppo.load_policy``), ``metrics.npz``, ``learning_curve.png``, ``scoreboard.json``. Overall:
``runs/scoreboard.json`` and ``runs/scoreboard.png``. Evaluation uses ``gymjax.grading.eval_keys``,
disjoint from the training seed's keys.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

BENCHMARK_TASKS = ("static", "bursty", "adversarial", "azure-replay")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ppo.train_all", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="*", default=list(BENCHMARK_TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-steps", type=int, default=None, help="env steps per task (default: ppo.config.TASK_DEFAULTS)")
    p.add_argument("--eval-seeds", type=int, default=16)
    p.add_argument("--out", default="runs")
    p.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache (runs/.jax_cache)")
    a = p.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax

    if not a.no_cache:  # a second `make train` skips the compilations (results are unchanged)
        jax.config.update("jax_compilation_cache_dir", str(out / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from rich.console import Console

    import gymjax
    from ppo.cli import print_scoreboard, progress_bar
    from ppo.config import PPOConfig
    from ppo.pipeline import plot_scoreboard, train_task

    console = Console()
    registered = set(gymjax.registered_envs())
    tasks = [t for t in a.tasks if t in registered]
    for t in a.tasks:
        if t not in registered:
            console.print(f"[yellow]skipping {t!r}: not registered in this gymjax (registered: {sorted(registered)})")

    t_all = time.perf_counter()
    results: dict[str, dict] = {}
    for task in tasks:
        config = PPOConfig.for_task(task, total_timesteps=a.total_steps)
        with progress_bar(f"{task} seed {a.seed}", config.num_updates) as (on_progress, on_phase):
            s = train_task(config, a.seed, out / task, progress=on_progress, n_eval_seeds=a.eval_seeds, on_phase=on_phase)
        console.print(
            f"{task}: {s['effective_timesteps']} env steps, compile {s['compile_s']:.1f} s, train {s['train_s']:.1f} s "
            f"({s['train_steps_per_s']:.0f} env steps/s) -> {out / task}"
        )
        if s["scoreboard"]:
            print_scoreboard(task, s["scoreboard"], console)
        results[task] = s

    total = time.perf_counter() - t_all
    (out / "scoreboard.json").write_text(json.dumps({"total_s": total, "seed": a.seed, "tasks": results}, indent=2) + "\n")
    plot_scoreboard(results, out / "scoreboard.png")
    summary_table(results, console)
    console.print(f"all tasks in {total:.0f} s; wrote {out}/scoreboard.json, {out}/scoreboard.png and {out}/<task>/")
    return 0


def summary_table(results: dict, console) -> None:
    from rich.table import Table

    names: list[str] = []
    for r in results.values():
        names += [n for n in (r["scoreboard"] or {}) if n not in names]
    t = Table(title="PPO scoreboard: episode score, mean ± 95% CI over the evaluation seeds")
    t.add_column("task")
    for n in names:
        t.add_column(n, justify="right")
    for task, r in results.items():
        b = r["scoreboard"] or {}
        t.add_row(task, *[f"{b[n]['mean']:.3f} ± {b[n]['ci95']:.3f}" if n in b else "—" for n in names])
    console.print(t)


if __name__ == "__main__":
    raise SystemExit(main())
