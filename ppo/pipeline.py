"""Train -> save -> evaluate -> plot, for one task. Shared by ``inferencegym train`` and ``inferencegym
train-all`` (``make train``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gymjax.evaluation import baseline_policies, scoreboard
from gymjax.report import add_paired
from ppo.checkpoint import make_policy, save_policy
from ppo.config import PPOConfig
from ppo.networks import action_reader
from ppo.train import make_env, make_network, make_train

N_EVAL_SEEDS = 16
BENCHMARK_TASKS = ("static", "bursty", "adversarial", "azure-replay")  # what `make train` trains


def train_task(
    config: PPOConfig,
    seed: int,
    out_dir: str | Path,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    n_eval_seeds: int = N_EVAL_SEEDS,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one policy on ``config.task`` with ``seed``, save it under ``out_dir`` (the
    command line's default: ``runs/<task>``), evaluate it against the baselines on ``n_eval_seeds`` evaluation seeds and
    write the learning curve. Returns a summary dict (also saved in ``config.json``); its ``scoreboard``
    has each policy's paired difference to the best constant (:func:`gymjax.report.add_paired`)."""
    phase = on_phase or (lambda s: None)
    out_dir = Path(out_dir)
    env, params = make_env(config)

    phase("compiling")
    t0 = time.perf_counter()
    train = jax.jit(make_train(config, env, params, progress=progress))
    compiled = train.lower(jax.random.PRNGKey(seed)).compile()
    t_compile = time.perf_counter() - t0
    phase("training")
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(jax.random.PRNGKey(seed)))
    t_train = time.perf_counter() - t0
    metrics = {k: np.asarray(v) for k, v in jax.device_get(out.metrics).items()}
    rs = out.runner_state

    network = make_network(config, env, params)
    reader = action_reader(env, config.free_first_action)
    ppo_policy = make_policy(network, rs.train_state.params, rs.obs_norm, reader, config.normalize_obs, greedy=True)

    board = None
    if n_eval_seeds > 0:
        phase("evaluating")
        sampled = make_policy(network, rs.train_state.params, rs.obs_norm, reader, config.normalize_obs, greedy=False)
        policies = {"ppo": ppo_policy, "ppo-sampled": sampled, **baseline_policies(env, params)}
        board = add_paired(scoreboard(env, params, policies, n_eval_seeds))

    summary = {
        "task": config.task,
        "seed": seed,
        "effective_timesteps": config.effective_timesteps,
        "compile_s": t_compile,
        "train_s": t_train,
        "train_steps_per_s": config.effective_timesteps / max(t_train, 1e-9),
        "n_eval_seeds": n_eval_seeds,
        "scoreboard": board,
    }
    save_policy(out_dir, config, rs.train_state.params, rs.obs_norm, env.action_space(params).nvec, env.obs_dim, reader, extra=summary)
    np.savez(out_dir / "metrics.npz", **metrics)
    plot_learning_curve(metrics, config, out_dir / "learning_curve.png", board)
    if board is not None:
        (out_dir / "scoreboard.json").write_text(json.dumps(board, indent=2) + "\n")
    summary["out_dir"] = str(out_dir)
    return summary


def plot_learning_curve(metrics: dict[str, np.ndarray], config: PPOConfig, path: Path, board: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = (np.arange(len(metrics["episode_score"])) + 1) * config.batch_size
    seen = np.cumsum(metrics["episodes"]) > 0  # before the first episode ends there is nothing to plot
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(steps[seen], metrics["episode_score"][seen], label="PPO (training episodes, sampled actions)")
    if board:
        for name, row in board.items():
            if name != "ppo":
                axes[0].axhline(row["mean"], ls="--", lw=1, label=name, color=f"C{1 + list(board).index(name)}")
    axes[0].set(title=f"{config.task}: episode score", xlabel="env steps", ylabel="grader score [0, 1]")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps[seen], metrics["episode_return"][seen])
    axes[1].set(title="episode return (shaped reward sum)", xlabel="env steps")
    axes[2].plot(steps, metrics["entropy"], label="entropy (nats, sum over knobs)")
    axes[2].plot(steps, metrics["approx_kl"] * 100, label="approx KL x100")
    axes[2].plot(steps, metrics["value_explained_var"], label="value explained var")
    axes[2].set(title="optimisation", xlabel="env steps")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
