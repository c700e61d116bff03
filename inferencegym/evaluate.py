"""``inferencegym eval`` (the baseline scoreboard, or a saved policy against the baselines) and
``inferencegym inspect`` (what a saved policy does in each load phase)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from inferencegym.common import RESULTS_DIR, add_trace_args, make_trace_env, parse_pairs, trace_kwargs, write_json

BASELINE_SEEDS = 8  # default evaluation seeds of the baseline scoreboard
POLICY_SEEDS = 16  # default evaluation seeds of a saved policy's scoreboard


def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferencegym eval",
        description="Score every baseline on every task (writes OUT/scoreboard.json and scoreboard.png), or, with --policy, "
        "a saved PPO policy against the baselines on its task. Evaluation seeds are disjoint from training and tuning seeds.")
    p.add_argument("--task", action="append", help="task(s) of the baseline scoreboard (default: all registered but 'trace')")
    p.add_argument("--seeds", "--n-seeds", dest="seeds", type=int, default=None,
                   help=f"evaluation episodes per policy (default {BASELINE_SEEDS}; {POLICY_SEEDS} with --policy)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the baseline scoreboard's files (default: %(default)s)")
    p.add_argument("--policy", default=None, help="a run directory (runs/<task>) or its policy.msgpack: score that policy")
    p.add_argument("--sample", action="store_true", help="with --policy: sample actions instead of the greedy argmax")
    p.add_argument("--no-baselines", action="store_true", help="with --policy: score the policy alone")
    p.add_argument("--json", default=None, help="with --policy or --trace: also write the scoreboard to this file")
    p.add_argument("--tuned", default=None, metavar="FILE",
                   help="with --trace: the tuning to use as best-constant (default FILE.tuned.json beside the trace, if it exists)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="with --trace: another gymjax.make override, e.g. queue_cap=128")
    add_trace_args(p)
    return p


def evaluate(argv: list[str] | None = None) -> int:
    """``inferencegym eval ...``; returns the exit code."""
    p = build_eval_parser()
    a = p.parse_args(argv)
    trace = trace_kwargs(a, p, parse_pairs(a.env, "--env"))
    if (a.env or a.tuned) and trace is None:
        p.error("--env and --tuned apply to --trace FILE only")
    if a.policy is not None:
        if trace is not None:
            p.error("a saved policy is scored on the task it was trained on (its config.json); drop --trace")
        return _eval_policy(a)
    if trace is not None:
        if a.task:
            p.error("give --trace FILE or --task, not both")
        return _eval_trace(a, p, trace)
    if a.task and "trace" in a.task:
        p.error("the trace task needs its CSV: inferencegym eval --trace FILE")
    import gymjax
    from gymjax.evaluation import baseline_policies, scoreboard
    from gymjax.report import add_paired, plot_board, print_board

    n_seeds = BASELINE_SEEDS if a.seeds is None else a.seeds
    if n_seeds < 2:
        p.error("--seeds must be >= 2 for a confidence interval")
    tasks = a.task or [t for t in gymjax.registered_envs() if t != "trace"]
    for t in tasks:
        if t not in gymjax.registered_envs():
            p.error(f"unknown task {t!r}; valid: {', '.join(gymjax.registered_envs())}")
    board = {}
    for task in tasks:
        t0 = time.time()
        env, params = gymjax.make(task)
        board[task] = add_paired(scoreboard(env, params, baseline_policies(env, params), n_seeds, bake_params=False))
        print(f"  {task:13s} " + "  ".join(f"{n} {r['mean']:.3f}" for n, r in board[task].items()) + f"   ({time.time() - t0:.0f} s)")
    print_board(board)
    write_json(a.out / "scoreboard.json", {"seeds": n_seeds, "board": board})
    plot_board(board, a.out / "scoreboard.png")
    print(f"wrote {a.out / 'scoreboard.json'} and scoreboard.png")
    return 0


def _eval_trace(a: argparse.Namespace, p: argparse.ArgumentParser, kwargs: dict) -> int:
    from gymjax.evaluation import baseline_policies, scoreboard
    from gymjax.report import add_paired, print_task
    from gymjax.tuned import TuningMismatch, load_tuning, side_path, tune_hint

    n_seeds = BASELINE_SEEDS if a.seeds is None else a.seeds
    if n_seeds < 2:
        p.error("--seeds must be >= 2 for a confidence interval")
    env, params = make_trace_env(kwargs, p)
    print(env.spec.description)
    tuned_path = Path(a.tuned) if a.tuned else side_path(kwargs["path"])
    tuned = None
    try:
        tuned = load_tuning(tuned_path, env, params)
        print(f"best-constant: {tuned['best']['typed']} (from {tuned_path})")
    except FileNotFoundError:
        if a.tuned:
            p.error(f"--tuned {a.tuned}: no such file")
        print(f"no tuning at {tuned_path}, so no best-constant on this board; to add it, {tune_hint(env)}")
    except TuningMismatch as e:
        p.error(str(e))
    board = add_paired(scoreboard(env, params, baseline_policies(env, params, tuned), n_seeds))
    print_task(f"trace {Path(kwargs['path']).name}", board)
    if a.json:
        write_json(a.json, {"seeds": n_seeds, "task_args": kwargs, "board": board})
    return 0


def _eval_policy(a: argparse.Namespace) -> int:
    import gymjax
    from gymjax.evaluation import baseline_policies, scoreboard
    from gymjax.report import print_task
    from ppo.checkpoint import load_policy

    policy, meta = load_policy(a.policy, greedy=not a.sample)
    cfg = meta["ppo_config"]
    env, params = gymjax.make(cfg.task, **cfg.env_kwargs)
    if env.obs_dim != meta["obs_dim"]:
        raise SystemExit(f"policy expects obs_dim {meta['obs_dim']}, task {cfg.task!r} gives {env.obs_dim}")
    policies = {"ppo": policy} if a.no_baselines else {"ppo": policy, **baseline_policies(env, params)}
    board = scoreboard(env, params, policies, POLICY_SEEDS if a.seeds is None else a.seeds)
    print_task(cfg.task, board)
    if a.json:
        write_json(a.json, board)
    return 0


def build_inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym inspect",
                                description="What a saved policy does in each load phase: the share of steps at each level of each "
                                "knob, per burst phase, over the standard evaluation episodes (greedy actions).")
    p.add_argument("--policy", required=True, help="a saved policy directory (inferencegym train, make train)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--json", default=None, help="also write the shares here")
    return p


def inspect(argv: list[str] | None = None) -> int:
    """``inferencegym inspect --policy PATH ...``; returns the exit code."""
    a = build_inspect_parser().parse_args(argv)
    if a.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    import gymjax
    from ppo.checkpoint import load_policy
    from ppo.inspect import phase_action_shares

    policy, meta = load_policy(a.policy)
    cfg = meta["config"]
    env, params = gymjax.make(cfg["task"], **cfg["env_kwargs"])
    shares = phase_action_shares(env, params, policy, a.episodes)
    tenants = [t.name for t in env.spec.tenants]
    for ph, row in shares.items():
        bursting = [t for i, t in enumerate(tenants) if ph >> i & 1] or ["none"]
        print(f"phase {ph} (bursting: {', '.join(bursting)}; {row['share']:.0%} of steps)")
        for knob in env.knobs:
            top = sorted(row[knob.name].items(), key=lambda kv: -kv[1])
            print(f"  {knob.name:22s} " + "  ".join(f"{v:g}: {s:.0%}" for v, s in top))
    if a.json:
        write_json(a.json, {"policy": a.policy, "episodes": a.episodes, "phases": shares})
    return 0
