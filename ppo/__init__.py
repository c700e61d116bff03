"""Fused PPO for gymjax (PureJaxRL style): all of training is one XLA program.

    from ppo import PPOConfig, make_train
    train = jax.jit(make_train(PPOConfig(task="bursty")))
    out = train(jax.random.PRNGKey(0))                       # out.runner_state, out.metrics
    policy, meta = ppo.load_policy("runs/bursty")            # policy(key, obs, state) -> flat action

The command lines (``inferencegym train``, ``train-all``, ``seeds``, ``inspect``, ``eval --policy``)
live in the :mod:`inferencegym` package.
"""

from ppo.checkpoint import load_policy, make_policy, save_policy
from ppo.config import PPOConfig
from ppo.train import RunnerState, TrainOutput, Transition, gae, make_train

__all__ = [
    "PPOConfig",
    "RunnerState",
    "Transition",
    "TrainOutput",
    "gae",
    "load_policy",
    "make_policy",
    "make_train",
    "save_policy",
]
