"""``inferencegym eval`` (the baseline scoreboard, or a saved policy against the baselines) and
``inferencegym inspect`` (what a saved policy does in each load phase)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from inferencegym.common import RESULTS_DIR, write_json

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
    p.add_argument("--json", default=None, help="with --policy: also write its scoreboard to this file")
    return p


def evaluate(argv: list[str] | None = None) -> int:
    """``inferencegym eval ...``; returns the exit code."""
    p = build_eval_parser()
    a = p.parse_args(argv)
    if a.policy is not None:
        return _eval_policy(a)
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
