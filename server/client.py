"""A typed OpenEnv ``EnvClient`` (``openenv.core.env_client``, openenv 0.10) for the InferenceGym server (WebSocket sessions).

    import asyncio
    from server.client import InferenceGymClient

    async def main():
        async with InferenceGymClient(base_url="http://127.0.0.1:8000") as env:
            r = await env.reset(task="static", seed=0, overrides={"horizon_steps": 50})
            while not r.done:
                r = await env.step({"batch_cap": 64, "kv_budget_fraction": 0.9, "speculation_depth": 0,
                                    "quantization_tier": 0, "prefill_decode_split": 2, "priority_routing": 0})
            print(r.observation.score, (await env.state()).session_id)

    asyncio.run(main())

``InferenceGymClient(...).sync()`` gives the synchronous wrapper.
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from pydantic import BaseModel

import gymjax
from server.models import ServeActionModel, ServeObservationModel, ServeStateModel


class InferenceGymClient(EnvClient):
    """Actions may be a ``ServeActionModel``, a ``gymjax.ServeAction`` or a dict of the six knobs."""

    def _step_payload(self, action: dict[str, Any] | BaseModel | gymjax.ServeAction) -> dict[str, Any]:
        if isinstance(action, dict):
            return dict(action)
        if isinstance(action, BaseModel):
            return action.model_dump(exclude={"metadata"})
        return action.to_dict()

    def _parse_result(self, payload: dict[str, Any]) -> StepResult:
        obs = ServeObservationModel.model_validate(
            {**payload.get("observation", {}), "reward": payload.get("reward"), "done": payload.get("done", False)}
        )
        return StepResult(observation=obs, reward=payload.get("reward"), done=bool(payload.get("done", False)))

    def _parse_state(self, payload: dict[str, Any]) -> ServeStateModel:
        return ServeStateModel.model_validate(payload)


__all__ = ["InferenceGymClient", "ServeActionModel", "ServeObservationModel", "ServeStateModel"]
