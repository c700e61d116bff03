"""``InferenceGymEnvironment``: the OpenEnv ``Environment`` of one session (openenv 0.10).

Each WebSocket connection (and each HTTP session) owns one instance; all instances of a task share
the task's compiled functions (:mod:`server.runtime`). ``reset``/``step`` are cheap after the
first compilation, so ``step_async`` runs inline on the event loop (no thread hop per step);
``reset_async`` prepares the episode in a worker thread (a task's first compilation, or building it
for overrides not seen before, takes tens of ms to seconds and must not stall other sessions) and
starts it on the loop.

It is also OpenEnv's ``TaskProvider`` (the ``/{env_name}/splits``, ``/tasks``, ``/num_tasks``,
``/task``, ``/task_range`` routes): one split, ``test``, whose tasks are the served tasks in
``GET /tasks`` order; ``reset(split="test", index=i)`` starts task ``i``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata
from pydantic import BaseModel

import gymjax
from gymjax.spaces import KNOB_NAMES
from server.models import ServeActionModel, ServeObservationModel, ServeStateModel
from server.runtime import Episode, RuntimeRegistry, SessionError, excerpt

ENV_NAME = "inferencegym"
ENV_DESCRIPTION = (
    "InferenceGym: control an LLM inference-serving cluster (batch cap, KV budget, speculation depth, "
    "quantization tier, prefill/decode split, priority routing) under changing traffic. A request-level "
    "JAX simulator with roofline physics and paged KV memory; each step is one simulated second."
)

# The process-wide registry: set by server.app.create_app before the first session.
REGISTRY: RuntimeRegistry | None = None


def registry() -> RuntimeRegistry:
    global REGISTRY
    if REGISTRY is None:
        REGISTRY = RuntimeRegistry()
    return REGISTRY


def _unknown_fields(kwargs: dict) -> SessionError:
    names = sorted(excerpt(k, 40) for k in kwargs)[:8]
    return SessionError(422, f"unknown reset field(s) {names}; accepted: seed, episode_id, task, overrides, split, index")


SPLIT = "test"  # the Task API's one split: the served tasks are a benchmark, not training data


def _check_split(split: Any) -> None:
    if split != SPLIT:
        raise SessionError(422, f"unknown split {excerpt(split, 40)}; this environment has one split, {SPLIT!r}", field="split")


def task_spec(reg: RuntimeRegistry, index: int) -> dict[str, Any]:
    """The Task API's spec of the served task at ``index`` (``GET /tasks``'s entry without its action schema)."""
    names = reg.task_names
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
        raise IndexError(index)
    entry = {k: v for k, v in reg.get(names[index], compile=False).describe().items() if k != "action_schema"}
    return {"id": names[index], "index": index, "split": SPLIT, "reset": {"task": names[index]}, **entry}


def resolve_task(task: str | None, split: str | None, index: int | None) -> str | None:
    """The task a reset names: ``task``, or the Task API's ``split``/``index`` (not both)."""
    if index is None:
        if split is not None:
            raise SessionError(422, "split without index: name a task with index (and split), or with task", field="index")
        return task
    _check_split(SPLIT if split is None else split)
    names = registry().task_names
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(names):
        raise SessionError(422, f"index must be an integer in [0, {len(names) - 1}], got {excerpt(index)}", field="index")
    if task is not None and task != names[index]:
        raise SessionError(422, f"task {excerpt(task, 40)} and index {index} ({names[index]}) disagree: name one", field="task")
    return names[index]


class InferenceGymEnvironment(Environment):
    """One session: an :class:`~server.runtime.Episode` behind the OpenEnv interface."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self.episode = Episode(registry())
        self.session_id: str | None = None
        self.closed = False

    # -- helpers ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SessionError(404, f"session {self.session_id} expired or was closed")

    @staticmethod
    def _observation(payload: dict[str, Any]) -> ServeObservationModel:
        return ServeObservationModel.model_construct(**payload)  # server-built data: no re-validation

    @staticmethod
    def _action_fields(action: Any) -> Mapping[str, Any]:
        """The knobs as JSON fields, for the task's action model to validate: OpenEnv's WebSocket
        handler passes an :class:`~server.models.ActionEnvelope`; in-process callers may pass a dict,
        any pydantic action or a ``gymjax.ServeAction``."""
        if isinstance(action, Mapping):
            return action
        if isinstance(action, BaseModel):
            return action.model_dump()
        if isinstance(action, gymjax.ServeAction):
            return action.to_dict()
        raise SessionError(422, f"an action is an object of the six knobs {list(KNOB_NAMES)}, got {type(action).__name__}", field="action")

    # -- OpenEnv Environment -----------------------------------------------------------------------
    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        task: str | None = None,
        overrides: dict | None = None,
        split: str | None = None,
        index: int | None = None,
        **kwargs: Any,
    ) -> ServeObservationModel:
        """Start an episode of ``task`` (default: the first served task; or the Task API's
        ``split``/``index``) with ``seed`` and params-only ``overrides`` (e.g. ``{"horizon_steps": 50}``)."""
        self._check_open()
        if kwargs:
            raise _unknown_fields(kwargs)
        task = resolve_task(task, split, index)
        return self._observation(self.episode.reset(task=task, seed=seed, overrides=overrides, episode_id=episode_id))

    async def reset_async(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        task: str | None = None,
        overrides: dict | None = None,
        split: str | None = None,
        index: int | None = None,
        **kwargs: Any,
    ) -> ServeObservationModel:
        self._check_open()
        if kwargs:
            raise _unknown_fields(kwargs)
        prep = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.episode.prepare(resolve_task(task, split, index), seed, overrides)
        )
        self._check_open()  # closed while it was being prepared
        return self._observation(self.episode.start(prep, episode_id))

    def step(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> ServeObservationModel:
        self._check_open()
        return self._observation(self.episode.step(self._action_fields(action)))

    async def step_async(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> ServeObservationModel:
        return self.step(action, timeout_s=timeout_s, **kwargs)

    @property
    def state(self) -> ServeStateModel:
        return ServeStateModel.model_construct(**self.episode.state_dict(self.session_id))

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=ENV_NAME, description=ENV_DESCRIPTION, version=gymjax.__version__, documentation_url="docs/server.md"
        )

    def close(self) -> None:
        self.closed = True

    # -- OpenEnv TaskProvider (discovery only; a fresh instance answers) ----------------------------
    def list_splits(self) -> list[dict[str, str]]:
        return [{"name": SPLIT, "type": SPLIT}]

    async def num_tasks(self, split: str) -> int:
        _check_split(split)
        return len(await asyncio.get_running_loop().run_in_executor(None, lambda: registry().task_names))

    async def get_task_range(self, split: str, start: int | None = None, stop: int | None = None) -> list[dict[str, Any]]:
        _check_split(split)

        def specs() -> list[dict[str, Any]]:  # building a task's params is not for the event loop
            reg = registry()
            return [task_spec(reg, i) for i in range(len(reg.task_names))[start:stop]]

        return await asyncio.get_running_loop().run_in_executor(None, specs)

    async def list_tasks(self, split: str) -> list[dict[str, Any]]:
        return await self.get_task_range(split)

    async def get_task(self, split: str, index: int) -> dict[str, Any]:
        _check_split(split)
        return await asyncio.get_running_loop().run_in_executor(None, task_spec, registry(), index)


__all__ = [
    "SPLIT",
    "InferenceGymEnvironment",
    "resolve_task",
    "task_spec",
    "ServeActionModel",
    "ServeObservationModel",
    "ServeStateModel",
    "registry",
]
