"""Fused PPO for gymjax (PureJaxRL style): all of training is one XLA program.

    from ppo import PPOConfig, make_train
    train = jax.jit(make_train(PPOConfig(task="bursty")))
    out = train(jax.random.PRNGKey(0))                       # out.runner_state, out.metrics
    policy, meta = ppo.load_policy("runs/bursty")            # policy(key, obs, state) -> flat action

CLI (wired into ``inferencegym``): :func:`cli_train`, :func:`cli_eval`; ``python -m ppo.train_all``
is ``make train``.
"""

from ppo.checkpoint import load_policy, make_policy, save_policy
from ppo.cli import cli_eval, cli_train
from ppo.config import PPOConfig
from ppo.train import RunnerState, TrainOutput, Transition, gae, make_train

__all__ = [
    "PPOConfig",
    "RunnerState",
    "Transition",
    "TrainOutput",
    "cli_eval",
    "cli_train",
    "gae",
    "load_policy",
    "make_policy",
    "make_train",
    "save_policy",
]
