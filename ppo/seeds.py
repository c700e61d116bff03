"""Training-seed spread: train several seeds with one compiled program and score each against the
best constant on the same evaluation seeds (``inferencegym seeds --task bursty --seeds 3``).

One PPO run is one draw: which of two strategies of similar return the learner settles on can
depend on the seed. :func:`train_seeds` reports every seed's greedy score, its paired difference to
the best constant (95 % CI over the evaluation seeds, disjoint from training) and how many seeds
beat it outside that CI. Seed ``s`` uses ``PRNGKey(s)`` and the same training program as
``inferencegym train --seed s``, without its progress callbacks. The seeds run one after another,
not as one ``vmap`` over seeds (docs/ppo.md, "Training seeds", says why).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from gymjax.evaluation import baseline_policies, scoreboard
from gymjax.report import PAIRED_KEY, add_paired
from ppo.checkpoint import make_policy, save_policy
from ppo.networks import action_reader
from ppo.train import make_env, make_network, make_train


def train_seeds(config, seeds: list[int], n_eval_seeds: int = 16, save_dir: str | Path | None = None) -> dict:
    """Train ``config`` on every seed (one compilation); return per-seed scores against the best constant
    (``per_seed``) and the whole scoreboard (``board``: every seed's policy and the best constant).

    With ``save_dir``, each seed's policy is saved as ``save_dir/seed_<s>/`` (the format of ``inferencegym train``,
    so ``inferencegym eval --policy`` and :func:`ppo.checkpoint.load_policy` read it)."""
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
        raise SystemExit(f"task {config.task!r} has no tuned best constant to compare with (inferencegym tune --task {config.task})")
    policies["best-constant"] = baselines["best-constant"]
    board = add_paired(scoreboard(env, params, policies, n_eval_seeds))
    per_seed = {}
    for s in seeds:
        b = board[f"seed {s}"]
        per_seed[s] = {"mean": b["mean"], "ci95": b["ci95"], "quality": b["quality"], "goodput": b["goodput"],
                       "minus_best_constant": b[PAIRED_KEY]["mean"], "minus_best_constant_ci95": b[PAIRED_KEY]["ci95"]}
    return {
        "task": config.task,
        "config": config.to_dict(),
        "seeds": seeds,
        "n_eval_seeds": n_eval_seeds,
        "train_s": train_s,
        "best_constant": {"mean": board["best-constant"]["mean"], "ci95": board["best-constant"]["ci95"]},
        "per_seed": per_seed,
        "board": board,
        "mean_over_seeds": float(np.mean([v["mean"] for v in per_seed.values()])),
        "seeds_beating_best_constant": int(sum(v["minus_best_constant"] - v["minus_best_constant_ci95"] > 0 for v in per_seed.values())),
    }
