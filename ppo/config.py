"""The trainer's typed, frozen configuration.

Nothing mutates a :class:`PPOConfig`; derive a variant with ``dataclasses.replace``. It round-trips
through JSON (:meth:`PPOConfig.to_dict` / :meth:`PPOConfig.from_dict`) so a saved policy carries
the exact settings that produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters and the task they train on.

    Sizes: one update collects ``num_envs * num_steps`` env steps (the batch), then runs
    ``update_epochs`` passes of ``num_minibatches`` minibatches over it.
    ``total_timesteps`` is rounded down to a whole number of updates, and the number of updates
    to a multiple of the number of progress reports (see :attr:`num_updates`).
    """

    task: str = "static"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides passed to gymjax.make
    total_timesteps: int = 1_000_000
    num_envs: int = 64
    num_steps: int = 64  # rollout length per update (env steps per env)
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 1e-3
    anneal_lr: bool = True  # linear decay to 0 over training
    max_grad_norm: float = 0.5
    gamma: float = 0.98
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    reward_scale: float = 0.1  # rewards are ~[-1, 2] per step; scaled so value targets stay O(1-10)
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"  # "tanh" | "relu"
    # exploration starts at the vLLM defaults (a logit bonus on each fast knob's default level), and every
    # knob has a learned "hold" bonus on the level in force, initially init_stick_slow for the slow knobs
    # (a reload or drain per change); why: docs/ppo.md, "Where exploration starts"
    init_default_logit: float = 2.0
    init_stick_slow: float = 5.0
    init_stick_fast: float = 0.0
    free_first_action: bool = False  # no hold bonus on an episode's first action (the initial deployment, no reload)
    # the slow knobs choose hold-or-change first (a learned gate), a new level only on a change
    # (ppo.networks.ActorCritic); a saved config without the field means off
    slow_hold_gate: bool = False
    normalize_obs: bool = True  # running mean/var of observations, kept in the carry
    bootstrap_truncation: bool = True  # bootstrap from V(final obs) at the horizon (else treat it as terminal)
    desync_envs: bool = True  # start the envs at staggered points of their episodes
    progress_reports: int = 20  # coarse progress callbacks over a run (only when a callback is given)

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches", "progress_reports"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"PPOConfig: num_envs*num_steps={self.num_envs * self.num_steps} must be divisible by "
                f"num_minibatches={self.num_minibatches}"
            )
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"PPOConfig.activation must be 'tanh' or 'relu', got {self.activation!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError("PPOConfig.gamma and gae_lambda must lie in [0, 1]")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))

    @property
    def batch_size(self) -> int:
        """Env steps per update."""
        return self.num_envs * self.num_steps

    @property
    def num_chunks(self) -> int:
        """Outer-scan iterations; progress leaves the program once per chunk."""
        return max(1, min(self.progress_reports, self.total_timesteps // self.batch_size))

    @property
    def updates_per_chunk(self) -> int:
        return max(1, (self.total_timesteps // self.batch_size) // self.num_chunks)

    @property
    def num_updates(self) -> int:
        """Updates actually run: ``num_chunks * updates_per_chunk`` (>= 1)."""
        return self.num_chunks * self.updates_per_chunk

    @property
    def effective_timesteps(self) -> int:
        return self.num_updates * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def for_task(cls, task: str, **overrides: Any) -> PPOConfig:
        """The default configuration for ``task``: the class defaults, then the task's entry of
        :data:`TASK_DEFAULTS` (what ``make train`` and ``inferencegym train`` use), then ``overrides``.
        An override of ``None`` means "not given" (an unset command-line flag) and keeps the default."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls.from_dict({"task": task, **TASK_DEFAULTS.get(task, {}), **given})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PPOConfig field(s) {sorted(unknown)}; valid: {sorted(names)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


# Per-task defaults of `make train` and `inferencegym train` (PPOConfig.for_task); anything else is the
# class default. The measurements behind each entry: docs/ppo.md, "Per-task defaults".
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "static": {"total_timesteps": 300_000},
    "bursty": {"total_timesteps": 800_000, "ent_coef": 0.01},
    "adversarial": {"total_timesteps": 800_000, "slow_hold_gate": True},
    "azure-replay": {"total_timesteps": 400_000, "free_first_action": True, "slow_hold_gate": True},
}
