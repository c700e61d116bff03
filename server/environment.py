"""``InferenceGymEnvironment``: the openenv-core ``Environment`` of one session.

Each WebSocket connection (and each HTTP session) owns one instance; all instances of a task share
the task's compiled functions (:mod:`server.runtime`). ``reset``/``step`` are cheap after the
first compilation, so ``step_async`` runs inline on the event loop (no thread hop per step);
``reset_async`` prepares the episode in a worker thread (a task's first compilation, or building it
for overrides not seen before, takes tens of ms to seconds and must not stall other sessions) and
starts it on the loop.
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
    return SessionError(422, f"unknown reset field(s) {names}; accepted: seed, episode_id, task, overrides")


class InferenceGymEnvironment(Environment):
    """One session: an :class:`~server.runtime.Episode` behind the openenv-core interface."""

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
        """The knobs as JSON fields, for the task's action model to validate: openenv-core's WebSocket
        handler passes an :class:`~server.models.ActionEnvelope`; in-process callers may pass a dict,
        any pydantic action or a ``gymjax.ServeAction``."""
        if isinstance(action, Mapping):
            return action
        if isinstance(action, BaseModel):
            return action.model_dump()
        if isinstance(action, gymjax.ServeAction):
            return action.to_dict()
        raise SessionError(422, f"an action is an object of the six knobs {list(KNOB_NAMES)}, got {type(action).__name__}", field="action")

    # -- openenv-core Environment ------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, episode_id: str | None = None, task: str | None = None, overrides: dict | None = None, **kwargs: Any
    ) -> ServeObservationModel:
        """Start an episode of ``task`` (default: the first served task) with ``seed`` and
        params-only ``overrides`` (e.g. ``{"horizon_steps": 50}``)."""
        self._check_open()
        if kwargs:
            raise _unknown_fields(kwargs)
        return self._observation(self.episode.reset(task=task, seed=seed, overrides=overrides, episode_id=episode_id))

    async def reset_async(
        self, seed: int | None = None, episode_id: str | None = None, task: str | None = None, overrides: dict | None = None, **kwargs: Any
    ) -> ServeObservationModel:
        self._check_open()
        if kwargs:
            raise _unknown_fields(kwargs)
        prep = await asyncio.get_running_loop().run_in_executor(None, self.episode.prepare, task, seed, overrides)
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


__all__ = ["InferenceGymEnvironment", "ServeActionModel", "ServeObservationModel", "ServeStateModel", "registry"]
