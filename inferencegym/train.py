"""``inferencegym train``, ``train-all`` (``make train``) and ``seeds``: PPO training commands."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from inferencegym.common import add_trace_args, make_trace_env, parse_pairs, progress_bar, trace_kwargs, write_json


def build_train_parser(prog: str = "inferencegym train") -> argparse.ArgumentParser:
    from ppo.config import PPOConfig

    d = PPOConfig()
    p = argparse.ArgumentParser(prog=prog, description="Train fused PPO on one task, save the policy, print its scoreboard.")
    p.add_argument("--task", default=d.task, help="gymjax task name (see gymjax.registered_envs())")
    p.add_argument("--seed", type=int, default=0, help="training seed (bit-identical results per seed on one machine)")
    p.add_argument("--total-steps", type=int, default=None, help="env steps to train for (default: ppo.config.TASK_DEFAULTS)")
    p.add_argument("--num-envs", type=int, default=None, help=f"parallel envs (default {d.num_envs})")
    p.add_argument("--num-steps", type=int, default=None, help=f"rollout length per update (default {d.num_steps})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--ent-coef", type=float, default=None, help="entropy bonus (default: the task's, see ppo.config.TASK_DEFAULTS)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="gymjax.make override, e.g. --env n_slots=32 (repeatable)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any other PPOConfig field, e.g. --set gamma=0.99 (repeatable)")
    p.add_argument("--out", default=None, help="output directory (default runs/<task>)")
    p.add_argument("--eval-seeds", type=int, default=16, help="evaluation episodes per policy (0: skip the scoreboard)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trace_args(p)
    return p


def config_from_args(a: argparse.Namespace, p: argparse.ArgumentParser | None = None):
    """The task's defaults (:meth:`PPOConfig.for_task`), then the flags given, then ``--set`` fields. With
    ``--trace FILE`` the task is ``trace`` and the trace flags become ``env_kwargs``."""
    from ppo.config import PPOConfig

    p = p or build_train_parser()
    fields = dict(total_timesteps=a.total_steps, num_envs=a.num_envs, num_steps=a.num_steps, lr=a.lr, ent_coef=a.ent_coef)
    env_pairs = parse_pairs(a.env, "--env")
    trace = trace_kwargs(a, p, env_pairs)
    task = a.task
    if trace is not None:
        if task not in (PPOConfig().task, "trace"):
            p.error("give --trace FILE or --task, not both")
        task, env_pairs = "trace", trace
    elif task == "trace":
        p.error("the trace task needs its CSV: inferencegym train --trace FILE")
    fields["env_kwargs"] = env_pairs
    fields.update(parse_pairs(a.set, "--set"))
    return PPOConfig.for_task(task, **fields)


def train(argv: list[str] | None = None) -> int:
    """``inferencegym train --task T --seed S --total-steps N ...``; returns the exit code."""
    from gymjax.report import print_task
    from ppo.pipeline import train_task

    p = build_train_parser()
    a = p.parse_args(argv)
    config = config_from_args(a, p)
    if a.trace:
        make_trace_env(config.env_kwargs, p)  # a bad trace or override: a usage error before compiling anything
    out = Path(a.out) if a.out else Path("runs") / (f"trace-{Path(a.trace).stem}" if a.trace else config.task)
    with progress_bar(f"{config.task} seed {a.seed}", config.num_updates, enabled=not a.quiet) as (on_progress, on_phase):
        summary = train_task(config, a.seed, out, progress=on_progress, n_eval_seeds=a.eval_seeds, on_phase=on_phase)
    print(
        f"saved {out}/policy.msgpack + config.json, learning_curve.png "
        f"({summary['effective_timesteps']} env steps: compile {summary['compile_s']:.1f} s, train {summary['train_s']:.1f} s, "
        f"{summary['train_steps_per_s']:.0f} env steps/s)"
    )
    if summary["scoreboard"]:
        print_task(config.task, summary["scoreboard"])
    return 0


def build_train_all_parser() -> argparse.ArgumentParser:
    from ppo.pipeline import BENCHMARK_TASKS

    p = argparse.ArgumentParser(prog="inferencegym train-all",
                                description="`make train`: train PPO on every benchmark task, save policies and plots, "
                                "print the scoreboard. "
                                "Per task, under OUT/<task>/: policy.msgpack + config.json, metrics.npz, learning_curve.png, "
                                "scoreboard.json; overall OUT/scoreboard.json and OUT/scoreboard.png.")
    p.add_argument("--tasks", nargs="*", default=list(BENCHMARK_TASKS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-steps", type=int, default=None, help="env steps per task (default: ppo.config.TASK_DEFAULTS)")
    p.add_argument("--eval-seeds", type=int, default=16)
    p.add_argument("--out", default="runs")
    p.add_argument("--no-cache", action="store_true", help="do not use the persistent XLA compilation cache (OUT/.jax_cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def train_all(argv: list[str] | None = None) -> int:
    """``inferencegym train-all`` (``make train``); returns the exit code."""
    a = build_train_all_parser().parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax

    if not a.no_cache:  # a second `make train` skips the compilations (results are unchanged)
        jax.config.update("jax_compilation_cache_dir", str(out / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    from rich.console import Console

    import gymjax
    from gymjax.report import plot_board, print_task, scores_table
    from ppo.config import PPOConfig
    from ppo.pipeline import train_task

    console = Console()
    registered = set(gymjax.registered_envs())
    for t in a.tasks:
        if t not in registered:
            console.print(f"[yellow]skipping {t!r}: not a registered task (registered: {sorted(registered)})")
    t_all = time.perf_counter()
    results: dict[str, dict] = {}
    for task in [t for t in a.tasks if t in registered]:
        config = PPOConfig.for_task(task, total_timesteps=a.total_steps)
        with progress_bar(f"{task} seed {a.seed}", config.num_updates, enabled=not a.quiet) as (on_progress, on_phase):
            s = train_task(config, a.seed, out / task, progress=on_progress, n_eval_seeds=a.eval_seeds, on_phase=on_phase)
        console.print(
            f"{task}: {s['effective_timesteps']} env steps, compile {s['compile_s']:.1f} s, train {s['train_s']:.1f} s "
            f"({s['train_steps_per_s']:.0f} env steps/s) -> {out / task}"
        )
        if s["scoreboard"]:
            print_task(task, s["scoreboard"], console)
        results[task] = s

    total = time.perf_counter() - t_all
    (out / "scoreboard.json").write_text(json.dumps({"total_s": total, "seed": a.seed, "tasks": results}, indent=2) + "\n")
    board = {t: r["scoreboard"] for t, r in results.items() if r["scoreboard"]}
    if board:
        plot_board(board, out / "scoreboard.png")
        console.print(scores_table(board, "PPO scoreboard: episode score, mean ± 95% CI over the evaluation seeds"))
    console.print(f"all tasks in {total:.0f} s; wrote {out}/scoreboard.json, {out}/scoreboard.png and {out}/<task>/")
    return 0


def build_seeds_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym seeds",
                                description="Train several PPO seeds (one compiled program) and score each against the best constant "
                                "on the same evaluation seeds.")
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, default=3, help="train seeds 0 .. N-1")
    p.add_argument("--total-steps", type=int, default=None, help="env steps per seed (default: the task's)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any PPOConfig field (repeatable)")
    p.add_argument("--eval-seeds", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--save-dir", default=None, help="save each seed's policy as SAVE_DIR/seed_<s>/ (inferencegym eval --policy reads it)")
    return p


def seeds(argv: list[str] | None = None) -> int:
    """``inferencegym seeds --task T --seeds N ...``; returns the exit code."""
    a = build_seeds_parser().parse_args(argv)
    if a.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # as `make train` runs

    from rich.console import Console

    from gymjax.report import task_table
    from ppo.config import PPOConfig
    from ppo.seeds import train_seeds

    config = PPOConfig.for_task(a.task, **{"total_timesteps": a.total_steps, **parse_pairs(a.set, "--set")})
    console = Console()
    with console.status(f"training {a.seeds} seed(s) of {a.task} ({config.effective_timesteps} env steps each)"):
        res = train_seeds(config, list(range(a.seeds)), a.eval_seeds, a.save_dir)
    console.print(task_table(f"{a.task} ({res['train_s']:.0f} s of training, greedy PPO per training seed)", res["board"]))
    console.print(f"best constant {res['best_constant']['mean']:.3f} ± {res['best_constant']['ci95']:.3f}; mean over seeds "
                  f"{res['mean_over_seeds']:.3f}; {res['seeds_beating_best_constant']}/{a.seeds} seeds beat it outside the paired CI")
    if a.json:
        write_json(a.json, res)
    return 0
