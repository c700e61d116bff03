"""gymjax: a pure-functional JAX simulator of an LLM inference-serving cluster.

env, params = gymjax.make("static")
obs, state = env.reset(key, params)
obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
"""

from gymjax import baselines
from gymjax.env import ServingEnv
from gymjax.evaluation import evaluate
from gymjax.grading import grade, grade_components
from gymjax.registry import make, register, registered_envs, task_spec
from gymjax.spaces import KNOB_NAMES, knob_table
from gymjax.tasks import LengthDist, TaskSpec, TenantSpec
from gymjax.types import EnvConfig, EnvParams, EnvState, EpisodeStats, Observation, ServeAction

__all__ = [
    "EnvConfig",
    "EnvParams",
    "EnvState",
    "EpisodeStats",
    "KNOB_NAMES",
    "LengthDist",
    "Observation",
    "ServeAction",
    "ServingEnv",
    "baselines",
    "evaluate",
    "grade",
    "grade_components",
    "TaskSpec",
    "TenantSpec",
    "knob_table",
    "make",
    "register",
    "registered_envs",
    "task_spec",
]
__version__ = "0.1.0"
