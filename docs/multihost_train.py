"""Sharded PPO training over several processes (hosts): a launch example for docs/scaling.md.

Every process runs this same script; JAX connects them through the coordinator (process 0's
address) and then sees every device of every process in ``jax.devices()``:

    # host 0                                                    # host 1
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 \\                     JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 \\
      python docs/multihost_train.py --num-processes 2 --process-id 0     python docs/multihost_train.py --num-processes 2 --process-id 1

Under SLURM or Open MPI (``srun``/``mpirun``) leave all three out: ``jax.distributed.initialize()``
finds them in the environment. To try it on one machine, start two processes with
``XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu`` and
``JAX_COORDINATOR_ADDRESS=127.0.0.1:1234``.
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-processes", type=int, default=None)
    ap.add_argument("--process-id", type=int, default=None)
    ap.add_argument("--task", default="static")
    ap.add_argument("--total-steps", type=int, default=300_000)
    ap.add_argument("--num-envs", type=int, default=64, help="global: split over every device of every process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/multihost")
    a = ap.parse_args()

    import jax

    # first, before any other JAX call: coordinator from $JAX_COORDINATOR_ADDRESS (or SLURM/MPI)
    jax.distributed.initialize(num_processes=a.num_processes, process_id=a.process_id)

    import numpy as np

    from ppo import PPOConfig, make_train, save_policy
    from ppo.networks import action_reader
    from ppo.train import make_env

    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local of {jax.device_count()} devices")
    config = PPOConfig(task=a.task, total_timesteps=a.total_steps, num_envs=a.num_envs)
    env, params = make_env(config)
    # the same key in every process: one SPMD program over the global mesh
    out = jax.jit(make_train(config, env, params, shard=True))(jax.random.PRNGKey(a.seed))
    rs = out.runner_state
    # parameters, optimiser state and metrics are replicated: every process holds them whole
    score = np.asarray(out.metrics["episode_score"])[-1]
    print(
        f"process {jax.process_index()}: final training-episode score {score:.3f}, "
        f"env states: {len(rs.env_state.step.addressable_shards)} local shards of {rs.env_state.step.shape[0]} envs"
    )
    if jax.process_index() == 0:  # one writer
        save_policy(a.out, config, rs.train_state.params, rs.obs_norm, env.action_space(params).nvec, env.obs_dim, action_reader(env))
        print(f"saved {a.out}")


if __name__ == "__main__":
    main()
