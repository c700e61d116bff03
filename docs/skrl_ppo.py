"""PPO from skrl (JAX backend), unmodified, on the Gymnasium vector env of a gymjax task.

    pip install -e '.[gym,trainers]'
    python docs/skrl_ppo.py --task static --num-envs 16 --timesteps 2000

``tests/test_gymnasium.py`` runs it on a tiny ``static`` for 4 updates.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from skrl.agents.jax.ppo import PPO, PPO_CFG
from skrl.envs.wrappers.jax import wrap_env
from skrl.memories.jax import RandomMemory
from skrl.models.jax import DeterministicMixin, Model, MultiCategoricalMixin
from skrl.trainers.jax import SequentialTrainer

from gymjax.gymnasium import ServingVectorEnv


class Policy(MultiCategoricalMixin, Model):
    """One categorical head per knob (the MultiDiscrete action space), an MLP body."""

    def __init__(self, observation_space, action_space, device=None, **kwargs):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device, **kwargs)
        MultiCategoricalMixin.__init__(self, unnormalized_log_prob=True)

    @nn.compact
    def __call__(self, inputs, role):
        x = nn.tanh(nn.Dense(64)(inputs["observations"]))
        x = nn.tanh(nn.Dense(64)(x))
        return nn.Dense(int(sum(self.action_space.nvec)))(x), {}


class Value(DeterministicMixin, Model):
    def __init__(self, observation_space, action_space, device=None, **kwargs):
        Model.__init__(self, observation_space=observation_space, action_space=action_space, device=device, **kwargs)
        DeterministicMixin.__init__(self)

    @nn.compact
    def __call__(self, inputs, role):
        x = nn.tanh(nn.Dense(64)(inputs["observations"]))
        x = nn.tanh(nn.Dense(64)(x))
        return nn.Dense(1)(x), {}


def make_agent(venv: ServingVectorEnv, rollouts: int, directory: str = "runs/skrl", **ppo_cfg):
    """skrl's PPO for ``venv`` (an update every ``rollouts`` vector steps) and the wrapped env: ``(agent, env)``."""
    env = wrap_env(venv, wrapper="gymnasium")
    models = {
        "policy": Policy(env.observation_space, env.action_space, env.device),
        "value": Value(env.observation_space, env.action_space, env.device),
    }
    for m in models.values():
        m.init_state_dict(role="")
    cfg = PPO_CFG(rollouts=rollouts, **ppo_cfg)
    cfg.experiment.directory = directory
    agent = PPO(
        models=models,
        memory=RandomMemory(memory_size=rollouts, num_envs=env.num_envs, device=env.device),
        observation_space=env.observation_space,
        action_space=env.action_space,
        device=env.device,
        cfg=cfg,
    )
    return agent, env


def train(agent: PPO, env, timesteps: int) -> None:
    """Run skrl's sequential trainer for ``timesteps`` vector steps."""
    cfg = {"timesteps": timesteps, "headless": True, "disable_progressbar": True, "close_environment_at_exit": False}
    SequentialTrainer(env=env, agents=agent, cfg=cfg).train()


def greedy_actions(policy: Policy, obs, nvec) -> np.ndarray:
    """The most likely level of each knob under ``policy`` for a batch of observations."""
    _, out = policy.act({"observations": jnp.asarray(obs)}, role="policy")
    heads = np.split(np.asarray(out["net_output"]), np.cumsum(nvec)[:-1], axis=-1)
    return np.stack([h.argmax(-1) for h in heads], -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="static")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=2000, help="vector steps (x num-envs env steps)")
    p.add_argument("--rollouts", type=int, default=64, help="vector steps per PPO update")
    a = p.parse_args()
    venv = ServingVectorEnv(a.task, num_envs=a.num_envs)
    agent, env = make_agent(venv, a.rollouts, learning_epochs=4, mini_batches=4, learning_rate=3e-4)
    train(agent, env, a.timesteps)
    obs, _ = venv.reset(seed=123)  # one greedy episode per cluster, scored by the grader
    for _ in range(venv.horizon):
        obs, _, _, truncated, info = venv.step(greedy_actions(agent.policy, obs, venv.single_action_space.nvec))
    print(
        f"greedy episode score over {a.num_envs} clusters: {info['episode_score'].mean():.3f} "
        f"(min {info['episode_score'].min():.3f}, max {info['episode_score'].max():.3f})"
    )


if __name__ == "__main__":
    main()
