"""Command lines: ``inferencegym train ...`` / ``inferencegym eval --policy PATH`` (via :func:`cli_train`,
:func:`cli_eval`), also ``python -m ppo.cli train|eval ...``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ppo.config import PPOConfig


def _parse_value(text: str) -> Any:
    """``KEY=VALUE`` values: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` from a repeatable ``KEY=VALUE`` flag to a dict, values parsed as JSON where they parse."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


@contextlib.contextmanager
def progress_bar(title: str, total_updates: int, enabled: bool = True) -> Iterator[tuple[Callable, Callable]]:
    """A rich progress bar fed by the trainer's coarse callbacks. Yields ``(on_progress, on_phase)``."""
    if not enabled:
        yield (lambda u, m: None), (lambda s: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*cols, transient=False) as prog:
        tid = prog.add_task(title, total=total_updates, info="")

        def on_progress(update: int, m: dict[str, float]) -> None:
            prog.update(
                tid,
                completed=max(update, prog.tasks[0].completed),
                info=f"score {m['episode_score']:.3f}  return {m['episode_return']:7.1f}  entropy {m['entropy']:.2f}",
            )

        def on_phase(phase: str) -> None:
            prog.update(tid, description=f"{title} [{phase}]")

        yield on_progress, on_phase


def print_scoreboard(task: str, board: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"{task}: episode score over {len(next(iter(board.values()))['scores'])} evaluation seeds")
    for col in ("policy", "score (mean ± 95% CI)", "PPO − this (paired 95% CI)", "return", "goodput", "cost", "quality"):
        t.add_column(col, justify="right" if col != "policy" else "left")
    for name, r in sorted(board.items(), key=lambda kv: -kv[1]["mean"]):
        diff = r.get("ppo_minus")
        d = f"{diff['mean']:+.4f} ± {diff['ci95']:.4f}" if diff else ""
        t.add_row(
            name,
            f"{r['mean']:.4f} ± {r['ci95']:.4f}",
            d,
            f"{r['return_mean']:.1f}",
            f"{r['goodput']:.3f}",
            f"{r['cost']:.3f}",
            f"{r['quality']:.3f}",
        )
    console.print(t)


def build_train_parser(prog: str = "inferencegym train") -> argparse.ArgumentParser:
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
    return p


def config_from_args(a: argparse.Namespace) -> PPOConfig:
    """The task's defaults (:meth:`PPOConfig.for_task`), then the flags given, then ``--set`` fields."""
    fields = dict(total_timesteps=a.total_steps, num_envs=a.num_envs, num_steps=a.num_steps, lr=a.lr, ent_coef=a.ent_coef)
    fields["env_kwargs"] = parse_pairs(a.env, "--env")
    fields.update(parse_pairs(a.set, "--set"))
    return PPOConfig.for_task(a.task, **fields)


def cli_train(argv: list[str] | None = None) -> int:
    """``inferencegym train --task T --seed S --total-steps N ...``; returns the exit code."""
    from ppo.pipeline import train_task

    a = build_train_parser().parse_args(argv)
    config = config_from_args(a)
    out = Path(a.out) if a.out else Path("runs") / config.task
    with progress_bar(f"{config.task} seed {a.seed}", config.num_updates, enabled=not a.quiet) as (on_progress, on_phase):
        summary = train_task(config, a.seed, out, progress=on_progress, n_eval_seeds=a.eval_seeds, on_phase=on_phase)
    print(
        f"saved {out}/policy.msgpack + config.json, learning_curve.png "
        f"({summary['effective_timesteps']} env steps: compile {summary['compile_s']:.1f} s, train {summary['train_s']:.1f} s, "
        f"{summary['train_steps_per_s']:.0f} env steps/s)"
    )
    if summary["scoreboard"]:
        print_scoreboard(config.task, summary["scoreboard"])
    return 0


def cli_eval(argv: list[str] | None = None) -> int:
    """``inferencegym eval --policy PATH [--n-seeds 16] [--sample] [--no-baselines] [--json OUT]``."""
    p = argparse.ArgumentParser(prog="inferencegym eval", description="Score a saved PPO policy (and the baselines) on its task.")
    p.add_argument("--policy", required=True, help="run directory (runs/<task>) or its policy.msgpack")
    p.add_argument("--n-seeds", type=int, default=16, help="evaluation episodes (standard evaluation seeds)")
    p.add_argument("--sample", action="store_true", help="sample actions instead of the greedy argmax")
    p.add_argument("--no-baselines", action="store_true", help="score the policy alone")
    p.add_argument("--json", default=None, help="also write the scoreboard to this file")
    a = p.parse_args(argv)

    import gymjax
    from ppo.checkpoint import load_policy
    from ppo.evaluate import baseline_policies, paired_diff, scoreboard

    policy, meta = load_policy(a.policy, greedy=not a.sample)
    cfg = meta["ppo_config"]
    env, params = gymjax.make(cfg.task, **cfg.env_kwargs)
    if env.obs_dim != meta["obs_dim"]:
        raise SystemExit(f"policy expects obs_dim {meta['obs_dim']}, task {cfg.task!r} gives {env.obs_dim}")
    policies = {"ppo": policy} if a.no_baselines else {"ppo": policy, **baseline_policies(env, params)}
    board = scoreboard(env, params, policies, a.n_seeds)
    for name in board:
        if name != "ppo":
            board[name]["ppo_minus"] = dict(zip(("mean", "ci95"), paired_diff(board, "ppo", name), strict=False))
    print_scoreboard(cfg.task, board)
    if a.json:
        Path(a.json).write_text(json.dumps(board, indent=2) + "\n")
    return 0


USAGE = """usage: inferencegym COMMAND ...

  train --task T [--seed S] [--total-steps N] ...   train PPO on a task (see --help)
  eval [--task T ...] [--seeds N]                   score every baseline on every task (scoreboard)
  eval --policy PATH [--n-seeds N] [--sample]       score a saved PPO policy against the baselines
  tune [--task T ...]                               grid-search the best constant action (and oracle)
"""


def main(argv: list[str] | None = None) -> int:
    """The ``inferencegym`` command (lives in ppo because it spans the trainer and gymjax)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("train", "eval", "tune"):
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        return cli_train(rest)
    if cmd == "eval" and any(a == "--policy" or a.startswith("--policy=") for a in rest):
        return cli_eval(rest)
    if cmd == "eval":
        from gymjax import scoreboard

        scoreboard.main(rest)
        return 0
    from gymjax import tune

    tune.main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
