"""PPO training throughput against the raw env throughput at the same batch, and wall time per task.

    python -m benchmarks.train_speed                          # throughput at 64 and 256 envs + every task's `make train` run
    python -m benchmarks.train_speed --num-envs 64 --tasks    # throughput only
    python -m benchmarks.train_speed --num-envs --tasks static   # one full default training run only
    python -m benchmarks.train_speed --host-devices 2         # CPU: 2 XLA devices, the env axis sharded

1. Throughput. For each ``--num-envs`` (task ``--task``), after compilation, median of ``--repeats``:

   - raw env: ``gymjax.vector.make_rollout`` (``lax.scan`` of the shared rollout step vmapped over
     ``num_envs`` clusters, unsharded) with uniformly random actions (the same shape of work as a
     rollout, no learner);
   - PPO: the fused ``make_train`` program (rollouts + GAE + 4 epochs x 4 minibatches of Adam) with
     the same ``num_envs`` and ``num_steps=64``, ``--updates`` updates.

   The ratio raw/PPO is the learner's overhead.

2. Wall time per task. For each of ``--tasks``: one full training run exactly as ``make train``
   configures it (``PPOConfig.for_task(task)``, the defaults of ``make train``), compile
   time apart, training time as the median of ``--task-repeats`` runs (default 1: a run is minutes
   on a CPU), env steps/s, and the final training-episode score. Evaluation against the baselines
   (``make train`` does it after training) is not included.

With several devices training is sharded over them (``make_train(shard=None)``, auto). Writes
``benchmarks/results/train_speed[_tag][_gpu].json``. On a shared machine these timings are noisy:
see ``load`` in the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.common import LoadMonitor, machine_info, result_path, time_jitted, write_result

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")  # as `make train` runs


def bench_throughput(task: str, num_envs: int, num_steps: int, updates: int, repeats: int) -> dict:
    import jax

    import gymjax
    from gymjax.vector import make_rollout
    from ppo.config import PPOConfig
    from ppo.train import make_train

    env, params = gymjax.make(task)
    space = env.action_space(params)
    n_env_steps = updates * num_steps  # same number of env steps per cluster as the PPO run

    rollout = make_rollout(env, num_envs, n_env_steps, policy=lambda k, obs, st: space.sample(k), shard=False)
    raw = lambda key: rollout(key, params)[1]  # noqa: E731  (per-step mean reward)

    cfg = PPOConfig(task=task, num_envs=num_envs, num_steps=num_steps, total_timesteps=updates * num_envs * num_steps, progress_reports=1)
    key = jax.random.PRNGKey(0)
    vary = lambda i: (jax.random.fold_in(key, i),)  # noqa: E731
    r = time_jitted(jax.jit(raw), (key,), repeats, vary)
    p = time_jitted(jax.jit(make_train(cfg, env, params)), (key,), repeats, vary)
    steps = num_envs * n_env_steps
    return {
        "task": task,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "updates": updates,
        "env_steps": steps,
        "raw_env_steps_per_s": steps / r["median_s"],
        "ppo_env_steps_per_s": cfg.effective_timesteps / p["median_s"],
        "overhead_ratio": (steps / r["median_s"]) / (cfg.effective_timesteps / p["median_s"]),
        "raw_compile_s": r["compile_s"],
        "ppo_compile_s": p["compile_s"],
        "raw_runs_s": r["runs_s"],
        "ppo_runs_s": p["runs_s"],
    }


def bench_task(task: str, repeats: int, total_steps: int | None = None) -> dict:
    """One full training run as ``make train`` configures it (no evaluation)."""
    import jax
    import numpy as np

    from ppo.config import PPOConfig
    from ppo.train import make_env, make_train
    cfg = PPOConfig.for_task(task, total_timesteps=total_steps)
    env, params = make_env(cfg)
    key = jax.random.PRNGKey(0)
    t = time_jitted(jax.jit(make_train(cfg, env, params)), (key,), max(repeats - 1, 0))
    runs = [t["first_run_s"], *t["runs_s"]]  # a full run is long enough that the first one counts
    train_s = float(np.median(runs))
    score = np.asarray(jax.device_get(t["out"].metrics["episode_score"]))
    return {
        "task": task,
        "env_steps": cfg.effective_timesteps,
        "budget_overridden": total_steps is not None,
        "num_envs": cfg.num_envs,
        "num_steps": cfg.num_steps,
        "num_updates": cfg.num_updates,
        "compile_s": t["compile_s"],
        "train_runs_s": runs,
        "train_s": train_s,
        "wall_s": t["compile_s"] + train_s,
        "env_steps_per_s": cfg.effective_timesteps / train_s,
        "final_training_episode_score": float(score[-1]),
    }


def main(argv: list[str] | None = None) -> int:
    from ppo.pipeline import BENCHMARK_TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="static", help="task of the throughput part")
    p.add_argument("--num-envs", type=int, nargs="*", default=[64, 256])
    p.add_argument("--num-steps", type=int, default=64)
    p.add_argument("--updates", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", nargs="*", default=list(BENCHMARK_TASKS), help="tasks of the full-run part (none: skip it)")
    p.add_argument("--task-repeats", type=int, default=1)
    p.add_argument("--total-steps", type=int, default=None, help="override the per-task budget (smoke runs)")
    p.add_argument("--host-devices", type=int, default=0, help="CPU only: this many XLA devices; training is sharded over them")
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)

    if a.host_devices:  # before JAX initialises its backend
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={a.host_devices}").strip()
    monitor = LoadMonitor()
    info = machine_info()
    tag = a.tag or (f"{a.host_devices}dev" if a.host_devices > 1 else "")
    path = result_path("train_speed", tag)
    out = {
        "benchmark": "train_speed",
        "command": "python -m benchmarks.train_speed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "note": "median of repeats after compilation; compile time reported apart",
        "rows": [],
        "tasks": [],
    }
    for n in a.num_envs:
        r = bench_throughput(a.task, n, a.num_steps, a.updates, a.repeats)
        out["rows"].append(r)
        print(
            f"{a.task} num_envs={n:5d}: raw env {r['raw_env_steps_per_s']:9.0f} steps/s | PPO {r['ppo_env_steps_per_s']:9.0f} steps/s "
            f"| raw/PPO {r['overhead_ratio']:.2f} | compile raw {r['raw_compile_s']:.1f} s, PPO {r['ppo_compile_s']:.1f} s",
            flush=True,
        )
        out["load"] = monitor.report()
        write_result(path, out)
    for task in a.tasks:
        r = bench_task(task, a.task_repeats, a.total_steps)
        out["tasks"].append(r)
        print(
            f"{task}: {r['env_steps']:,d} env steps in {r['train_s']:.1f} s ({r['env_steps_per_s']:,.0f} env steps/s) "
            f"+ compile {r['compile_s']:.1f} s | final training-episode score {r['final_training_episode_score']:.3f}",
            flush=True,
        )
        out["load"] = monitor.report()
        write_result(path, out)
    out["load"] = monitor.report()
    write_result(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
