"""Training-seed spread: train several seeds with one compiled program and score each against the
best constant on the same evaluation seeds.

    python -m ppo.seeds --task bursty --seeds 3                       # seeds 0, 1, 2, task defaults
    python -m ppo.seeds --task bursty --seeds 3 --set free_first_action=false --json out.json
    python -m ppo.seeds --task adversarial --save-dir runs/seeds/adversarial   # keep each seed's policy

One PPO run is one draw: where the learner has two strategies of similar return (an INT8 or an FP8
deployment, say), which it settles on can depend on the seed. This reports every seed's greedy
score, its paired difference to the best constant (95 % CI over the ``--eval-seeds`` evaluation
seeds, disjoint from training), and how many seeds beat it outside that CI. Seed ``s`` uses
``PRNGKey(s)`` and the same training program as ``inferencegym train --seed s`` (``make train``:
seed 0), without its progress callbacks.

The seeds run one after another: on a 2-core CPU ``jit(vmap(train))`` over seeds is no faster
(355 s for 3 seeds of ``bursty`` against ~100 s for one), and with jax 0.10.2 a vmapped 3-seed
program of the 128-slot tasks intermittently deadlocked in XLA:CPU (every thread waiting).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def train_seeds(config, seeds: list[int], n_eval_seeds: int = 16, save_dir: str | Path | None = None) -> dict:
    """Train ``config`` on every seed (one compilation); return per-seed scores against the best constant.

    With ``save_dir``, each seed's policy is saved as ``save_dir/seed_<s>/`` (the format of ``inferencegym train``,
    so ``inferencegym eval --policy`` and :func:`ppo.checkpoint.load_policy` read it)."""
    import jax
    import numpy as np

    from ppo.checkpoint import make_policy, save_policy
    from ppo.evaluate import baseline_policies, paired_diff, scoreboard
    from ppo.networks import action_reader
    from ppo.train import make_env, make_network, make_train

    env, params = make_env(config)
    train = jax.jit(make_train(config, env, params)).lower(jax.random.PRNGKey(seeds[0])).compile()
    network, reader = make_network(config, env, params), action_reader(env, config.free_first_action)
    policies = {}
    t0 = time.perf_counter()
    for s in seeds:
        rs = jax.block_until_ready(train(jax.random.PRNGKey(s))).runner_state
        policies[f"seed {s}"] = make_policy(network, rs.train_state.params, rs.obs_norm, reader, config.normalize_obs, greedy=True)
        if save_dir is not None:
            save_policy(Path(save_dir) / f"seed_{s}", config, rs.train_state.params, rs.obs_norm, env.action_space(params).nvec,
                        env.obs_dim, reader, extra={"seed": s})
    train_s = time.perf_counter() - t0
    baselines = baseline_policies(env, params)
    if "best-constant" not in baselines:
        raise SystemExit(f"task {config.task!r} has no tuned best constant to compare with (python -m gymjax.tune --task {config.task})")
    policies["best-constant"] = baselines["best-constant"]
    board = scoreboard(env, params, policies, n_eval_seeds)
    per_seed = {}
    for s in seeds:
        b = board[f"seed {s}"]
        d, d_ci = paired_diff(board, f"seed {s}", "best-constant")
        per_seed[s] = {"mean": b["mean"], "ci95": b["ci95"], "quality": b["quality"], "goodput": b["goodput"],
                       "minus_best_constant": d, "minus_best_constant_ci95": d_ci}
    return {
        "task": config.task,
        "config": config.to_dict(),
        "seeds": seeds,
        "n_eval_seeds": n_eval_seeds,
        "train_s": train_s,
        "best_constant": {"mean": board["best-constant"]["mean"], "ci95": board["best-constant"]["ci95"]},
        "per_seed": per_seed,
        "mean_over_seeds": float(np.mean([v["mean"] for v in per_seed.values()])),
        "seeds_beating_best_constant": int(sum(v["minus_best_constant"] - v["minus_best_constant_ci95"] > 0 for v in per_seed.values())),
    }


def main(argv: list[str] | None = None) -> int:
    from ppo.cli import parse_pairs

    p = argparse.ArgumentParser(prog="python -m ppo.seeds", description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--seeds", type=int, default=3, help="train seeds 0 .. N-1")
    p.add_argument("--total-steps", type=int, default=None, help="env steps per seed (default: the task's)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any PPOConfig field (repeatable)")
    p.add_argument("--eval-seeds", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--save-dir", default=None, help="save each seed's policy as SAVE_DIR/seed_<s>/ (inferencegym eval --policy reads it)")
    a = p.parse_args(argv)
    if a.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # as `make train` runs

    from rich.console import Console
    from rich.table import Table

    from ppo.config import PPOConfig

    config = PPOConfig.for_task(a.task, **{"total_timesteps": a.total_steps, **parse_pairs(a.set, "--set")})
    console = Console()
    with console.status(f"training {a.seeds} seed(s) of {a.task} ({config.effective_timesteps} env steps each)"):
        res = train_seeds(config, list(range(a.seeds)), a.eval_seeds, a.save_dir)
    t = Table(title=f"{a.task}: greedy PPO per training seed, {a.eval_seeds} evaluation seeds ({res['train_s']:.0f} s of training)")
    for c in ("seed", "score ± 95% CI", "minus best-constant (paired)", "goodput", "quality"):
        t.add_column(c, justify="right")
    for s, v in res["per_seed"].items():
        t.add_row(str(s), f"{v['mean']:.3f} ± {v['ci95']:.3f}", f"{v['minus_best_constant']:+.3f} ± {v['minus_best_constant_ci95']:.3f}",
                  f"{v['goodput']:.3f}", f"{v['quality']:.3f}")
    console.print(t)
    console.print(f"best constant {res['best_constant']['mean']:.3f} ± {res['best_constant']['ci95']:.3f}; mean over seeds "
                  f"{res['mean_over_seeds']:.3f}; {res['seeds_beating_best_constant']}/{a.seeds} seeds beat it outside the paired CI")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
