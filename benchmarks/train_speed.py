"""PPO training throughput against the raw env throughput at the same batch (not a test).

    python -m benchmarks.train_speed                       # static, num_envs 64 and 256
    python -m benchmarks.train_speed --task bursty --num-envs 64 --repeats 3

For each ``num_envs`` it times (after compilation, median of ``--repeats``):

- raw env: ``lax.scan`` of ``vmap(env.step)`` over ``num_envs`` clusters with uniformly random
  actions (the same shape of work as a rollout, no learner);
- PPO: the fused ``make_train`` program (rollouts + GAE + 4 epochs x 4 minibatches of Adam) with
  the same ``num_envs`` and ``num_steps=64``.

and writes ``benchmarks/results/train_speed.json``. The ratio raw/PPO is the learner's overhead
(target: < 2). On a shared machine these timings are noisy: rerun and compare ratios in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


def _time(fn, key, repeats: int) -> tuple[float, float]:
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.fold_in(key, i)))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def bench(task: str, num_envs: int, num_steps: int, updates: int, repeats: int) -> dict:
    import jax

    import gymjax
    from ppo.config import PPOConfig
    from ppo.train import make_train

    env, params = gymjax.make(task)
    space = env.action_space(params)
    n_env_steps = updates * num_steps  # same number of env steps per cluster as the PPO run

    def raw(key):
        obs, st = jax.vmap(env.reset, (0, None))(jax.random.split(key, num_envs), params)

        def body(st, k):
            ka, ks = jax.random.split(k)
            a = jax.vmap(space.sample)(jax.random.split(ka, num_envs))
            obs, st, r, *_ = jax.vmap(env.step, (0, 0, 0, None))(jax.random.split(ks, num_envs), st, a, params)
            return st, r.mean()

        return jax.lax.scan(body, st, jax.random.split(key, n_env_steps))[1]

    cfg = PPOConfig(task=task, num_envs=num_envs, num_steps=num_steps, total_timesteps=updates * num_envs * num_steps, progress_reports=1)
    key = jax.random.PRNGKey(0)
    raw_compile, raw_s = _time(raw, key, repeats)
    ppo_compile, ppo_s = _time(make_train(cfg, env, params), key, repeats)
    steps = num_envs * n_env_steps
    return {
        "task": task,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "updates": updates,
        "env_steps": steps,
        "raw_env_steps_per_s": steps / raw_s,
        "ppo_env_steps_per_s": cfg.effective_timesteps / ppo_s,
        "overhead_ratio": (steps / raw_s) / (cfg.effective_timesteps / ppo_s),
        "raw_compile_s": raw_compile,
        "ppo_compile_s": ppo_compile,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="static")
    p.add_argument("--num-envs", type=int, nargs="*", default=[64, 256])
    p.add_argument("--num-steps", type=int, default=64)
    p.add_argument("--updates", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    a = p.parse_args(argv)

    import jax

    rows = []
    for n in a.num_envs:
        r = bench(a.task, n, a.num_steps, a.updates, a.repeats)
        rows.append(r)
        print(
            f"{a.task} num_envs={n:5d}: raw env {r['raw_env_steps_per_s']:9.0f} steps/s | PPO {r['ppo_env_steps_per_s']:9.0f} steps/s "
            f"| raw/PPO {r['overhead_ratio']:.2f} | compile raw {r['raw_compile_s']:.1f} s, PPO {r['ppo_compile_s']:.1f} s",
            flush=True,
        )
    out = {
        "benchmark": "train_speed",
        "jax": jax.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "note": "median of repeats after compilation; shared machine, noisy",
        "rows": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
