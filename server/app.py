"""The InferenceGym OpenEnv server (FastAPI, built on openenv-core 0.3).

    make serve                                   # uvicorn server.app:app on :8000
    python -m server.app --port 8000             # the same, via main()

Endpoints (docs/server.md has the full reference):

- ``WS /ws`` (openenv-core): one session per connection, ``reset``/``step``/``state`` messages;
  concurrent sessions, a session cap and idle eviction.
- ``POST /reset`` -> ``session_id``; ``POST /step`` and ``GET /state?session_id=`` act on that
  session. Unlike openenv-core's stateless HTTP routes, HTTP episodes are real; ``POST /reset``
  with ``{}`` opens a session on the default task. ``POST /close`` frees a session.
- ``GET /tasks`` (catalogue + action schemas), ``POST /grader`` (score of a session's own finished
  episode), ``POST /baseline`` (a gymjax baseline run in-process).
- ``GET /health``, ``GET /metadata``, ``GET /schema``, ``POST /mcp`` (openenv-core contract).

Configuration (environment variables): ``INFERENCEGYM_TASKS`` (comma list, default all buildable
tasks), ``INFERENCEGYM_TASK_OVERRIDES`` (JSON applied to every task, e.g. sizes),
``INFERENCEGYM_MAX_SESSIONS`` (64), ``INFERENCEGYM_SESSION_TIMEOUT_S`` (600),
``INFERENCEGYM_MAX_BODY_BYTES`` (65536), ``INFERENCEGYM_PREWARM`` (1: compile every task at startup).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from openenv.core.env_server.exceptions import SessionCapacityError
from openenv.core.env_server.http_server import HTTPEnvServer
from openenv.core.env_server.types import ConcurrencyConfig, SchemaResponse
from pydantic import ValidationError

import gymjax
import server.environment as environment
from server.environment import InferenceGymEnvironment
from server.models import (
    ActionEnvelope,
    BaselineBody,
    BaselineResponse,
    GraderResponse,
    ResetBody,
    ServeActionModel,
    ServeObservationModel,
    ServeStateModel,
    SessionBody,
    SessionResetResponse,
    SessionStepResponse,
    StepBody,
    knob_errors,
)
from server.runtime import RuntimeRegistry, SessionError

log = logging.getLogger("inferencegym.server")

SEED_CONTRACT = (
    "key = jax.random.PRNGKey(seed); reset_key, step_key = jax.random.split(key); "
    "obs, state = env.reset(reset_key, params); step i (0-based) uses jax.random.fold_in(step_key, i)"
)


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


class GymHTTPServer(HTTPEnvServer):
    """openenv-core's server with sessions that HTTP can address too.

    WebSocket and HTTP sessions share one table, one cap and one idle reaper; a session's id is also
    stored on its environment so ``/state`` and ``/grader`` can report it. This class is the only
    code that touches openenv-core's private session API (``_create_session``, ``_destroy_session``,
    ``_update_session_activity``, ``_sessions``, ``_session_info``, ``_session_idle_timeout_s``,
    ``_reap_idle_sessions``); the routes use :meth:`open_session`, :meth:`session`, :meth:`touch`
    and :meth:`close_session`.
    """

    async def _create_session(self):
        session_id, env = await super()._create_session()
        env.session_id = session_id
        return session_id, env

    async def open_session(self) -> tuple[str, InferenceGymEnvironment]:
        """A new session (id, environment); 503 when the session cap is reached."""
        try:
            return await self._create_session()
        except SessionCapacityError as e:
            raise SessionError(503, str(e), active_sessions=e.active_sessions, max_sessions=e.max_sessions) from e

    async def close_session(self, session_id: str) -> None:
        """Free a session and its slot (a no-op for an unknown id)."""
        await self._destroy_session(session_id)

    def touch(self, session_id: str, stepped: bool = False) -> None:
        """Mark the session active now (it is not idle); ``stepped`` also counts one step."""
        self._update_session_activity(session_id, increment_step=stepped)

    async def _reap_idle_sessions(self) -> None:
        # openenv-core checks every max(timeout/4, 5 s); check at timeout/4 (at most every 5 s).
        timeout = self._session_idle_timeout_s
        if timeout is None:
            return
        interval = min(max(timeout / 4.0, 0.05), 5.0)
        while True:
            try:
                await asyncio.sleep(interval)
                await self.evict_idle()
            except asyncio.CancelledError:
                break
            except Exception as exc:  # noqa: BLE001 - the reaper must survive
                log.warning("idle-session reaper: %s", exc)

    async def evict_idle(self) -> None:
        timeout = self._session_idle_timeout_s
        if timeout is None:
            return
        now = time.time()
        stale = [sid for sid, info in list(self._session_info.items()) if now - info.last_activity_at > timeout]
        for sid in stale:
            await self.close_session(sid)

    async def session(self, session_id: str) -> InferenceGymEnvironment:
        """The live session ``session_id`` (404 if unknown, closed or idle past the timeout)."""
        env = self._sessions.get(session_id)
        info = self._session_info.get(session_id)
        timeout = self._session_idle_timeout_s
        if env is not None and info is not None and timeout is not None and time.time() - info.last_activity_at > timeout:
            await self.close_session(session_id)
            env = None
        if env is None or getattr(env, "closed", False):
            raise SessionError(404, f"unknown or expired session {session_id!r}; POST /reset opens one", field="session_id")
        return env


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than ``max_bytes`` with 413 (declared or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send):
        msg = f'{{"detail": "request body larger than {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(msg)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": msg})


def create_app(
    tasks: tuple[str, ...] | None = None,
    task_overrides: dict[str, Any] | None = None,
    max_sessions: int | None = None,
    session_timeout_s: float | None = None,
    max_body_bytes: int | None = None,
    prewarm: bool | None = None,
) -> FastAPI:
    """Build the app. Arguments default to the ``INFERENCEGYM_*`` environment variables."""
    if tasks is None and os.environ.get("INFERENCEGYM_TASKS"):
        tasks = tuple(t.strip() for t in os.environ["INFERENCEGYM_TASKS"].split(",") if t.strip())
    reg = RuntimeRegistry(tasks, task_overrides)
    environment.REGISTRY = reg
    max_sessions = max_sessions or _int_env("INFERENCEGYM_MAX_SESSIONS", 64)
    timeout = session_timeout_s or float(os.environ.get("INFERENCEGYM_SESSION_TIMEOUT_S") or 600.0)
    max_body = max_body_bytes or _int_env("INFERENCEGYM_MAX_BODY_BYTES", 65536)
    if prewarm is None:
        prewarm = os.environ.get("INFERENCEGYM_PREWARM", "1") not in ("0", "false", "no")

    app = FastAPI(
        title="InferenceGym OpenEnv server",
        version="1.0.0",  # the OpenEnv HTTP API profile it speaks (openenv-http/1.x)
        description=environment.ENV_DESCRIPTION + "\n\nPackage version " + gymjax.__version__ + ". " + SEED_CONTRACT,
    )
    srv = GymHTTPServer(
        InferenceGymEnvironment,
        ActionEnvelope,  # WebSocket steps: the session validates the knobs once, with its task's model
        ServeObservationModel,
        concurrency_config=ConcurrencyConfig(max_concurrent_envs=max_sessions, session_timeout=timeout),
    )
    app.state.server = srv
    app.state.registry = reg
    baseline_gate = asyncio.Semaphore(1)

    # ---------------------------------------------------------------------------------------------
    @app.exception_handler(SessionError)
    async def _session_error(_request: Request, exc: SessionError):
        return JSONResponse(status_code=exc.status, content={"detail": {"message": exc.message, **jsonable_encoder(exc.detail)}})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors(), custom_encoder={Exception: str})})

    async def ensure_compiled(task: str | None) -> None:
        if not reg.is_compiled(task):
            await asyncio.get_running_loop().run_in_executor(None, reg.get, task)

    # ---------------------------------------------------------------------------------------------
    @app.post(
        "/reset",
        response_model=SessionResetResponse,
        tags=["Environment Control"],
        summary="Start an episode; returns the session id that /step, /state and /grader take",
    )
    async def reset(body: ResetBody | None = Body(default=None)) -> JSONResponse:  # noqa: B008
        body = body or ResetBody()
        await ensure_compiled(body.task)
        created = False
        if body.session_id is not None:
            sid, env = body.session_id, await srv.session(body.session_id)
        else:
            sid, env = await srv.open_session()
            created = True
        try:
            payload = env.episode.reset(task=body.task, seed=body.seed, overrides=body.overrides, episode_id=body.episode_id)
        except Exception:
            if created:  # a refused reset leaves no session behind
                await srv.close_session(sid)
            raise
        srv.touch(sid)
        return JSONResponse({"observation": _obs(payload), "reward": None, "done": False, "session_id": sid})

    @app.post(
        "/step", response_model=SessionStepResponse, tags=["Environment Control"], summary="Apply a ServeAction to a session's episode"
    )
    async def step(body: StepBody) -> JSONResponse:
        env = await srv.session(body.session_id)
        ep = env.episode
        try:
            payload = ep.step(body.action)  # the one validation: the task's action model
        except ValidationError as e:
            return JSONResponse(status_code=422, content={"detail": knob_errors(e.errors(), ep.rt.env.knobs, ("body", "action"))})
        srv.touch(body.session_id, stepped=True)
        return JSONResponse(
            {"observation": _obs(payload), "reward": payload["reward"], "done": payload["done"], "session_id": body.session_id}
        )

    @app.get("/state", response_model=ServeStateModel, tags=["State Management"], summary="A session's episode state")
    async def state(session_id: str = Query(description="the id returned by POST /reset")) -> JSONResponse:
        env = await srv.session(session_id)
        srv.touch(session_id)
        return JSONResponse(env.episode.state_dict(session_id))

    @app.post("/close", tags=["Environment Control"], summary="Close a session and free its slot")
    async def close(body: SessionBody) -> dict:
        await srv.session(body.session_id)
        await srv.close_session(body.session_id)
        return {"session_id": body.session_id, "closed": True}

    @app.get("/schema", response_model=SchemaResponse, tags=["Schema"], summary="Action, observation and state JSON schemas")
    async def schema() -> SchemaResponse:
        return SchemaResponse(
            action=ServeActionModel.model_json_schema(),
            observation=ServeObservationModel.model_json_schema(),
            state=ServeStateModel.model_json_schema(),
        )

    catalogue: dict[str, Any] = {}

    @app.get("/tasks", tags=["Environment Info"], summary="The task catalogue with each task's action schema")
    async def tasks_route() -> dict:
        if not catalogue:
            names = await asyncio.get_running_loop().run_in_executor(None, lambda: reg.task_names)
            catalogue.update(
                tasks=[reg.get(n, compile=False).describe() for n in names],
                default_task=names[0] if names else None,
                baselines=sorted(gymjax.baselines.POLICIES),
                action_schema=ServeActionModel.model_json_schema(),
                seed_contract=SEED_CONTRACT,
            )
        return catalogue

    @app.post(
        "/grader",
        response_model=GraderResponse,
        tags=["Grading"],
        summary="Score of the session's own finished episode (gymjax.grade of its env state)",
    )
    async def grader(body: SessionBody) -> dict:
        env = await srv.session(body.session_id)
        srv.touch(body.session_id)
        return {"session_id": body.session_id, **env.episode.grade()}

    @app.post(
        "/baseline",
        response_model=BaselineResponse,
        tags=["Grading"],
        summary="Run a gymjax baseline policy on a task in-process and return its score",
    )
    async def baseline(body: BaselineBody | None = Body(default=None)) -> dict:  # noqa: B008
        body = body or BaselineBody()
        policies = gymjax.baselines.POLICIES
        if body.policy not in policies:
            raise SessionError(422, f"unknown policy {body.policy!r}; valid: {sorted(policies)}", field="policy", valid=sorted(policies))
        loop = asyncio.get_running_loop()
        rt = await loop.run_in_executor(None, reg.get, body.task, False)
        params, _ = rt.params_for(body.overrides)
        async with baseline_gate:  # one evaluation at a time: it is a whole jitted rollout
            scores = await loop.run_in_executor(None, _run_baseline, rt, params, body.policy, body.seed, body.n_seeds)
        return {"task": rt.name, "policy": body.policy, "seed": body.seed, "scores": scores, "mean": sum(scores) / len(scores)}

    # openenv-core's routes (/ws, /mcp, /health, /metadata, ...) after ours; its stateless
    # /reset, /step, /state and its /schema are dropped in favour of the ones above.
    ours = {(r.path, frozenset(r.methods)) for r in app.router.routes if isinstance(r, APIRoute)}
    srv.register_routes(app)
    seen: set = set()
    kept = []
    for r in app.router.routes:
        if isinstance(r, APIRoute):
            key = (r.path, frozenset(r.methods))
            if key in seen or (key not in ours and r.path in {p for p, _ in ours}):
                continue
            seen.add(key)
        kept.append(r)
    app.router.routes[:] = kept
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body)

    if prewarm:

        async def _prewarm() -> None:
            def work():
                for n in reg.task_names:
                    t0 = time.perf_counter()
                    try:
                        reg.get(n)
                        log.info("compiled %s in %.1f s", n, time.perf_counter() - t0)
                    except Exception as e:  # noqa: BLE001
                        log.warning("prewarm %s failed: %s", n, e)

            threading.Thread(target=work, name="inferencegym-prewarm", daemon=True).start()

        app.router.on_startup.append(_prewarm)

    return app


def _obs(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("reward", "done")}


def _run_baseline(rt, params, policy_name: str, seed: int, n_seeds: int) -> list[float]:
    import jax

    try:
        policy = gymjax.baselines.POLICIES[policy_name](rt.env, params)
    except (KeyError, ValueError) as e:  # e.g. no tuned best-constant / oracle for this task
        raise SessionError(422, f"policy {policy_name!r} is not available on task {rt.name!r}: {e}", field="policy") from e
    result = gymjax.evaluate(rt.env, params, policy, jax.random.PRNGKey(seed), n_seeds)
    return [float(s) for s in jax.device_get(result["scores"])]


app = create_app()


def main(host: str = "0.0.0.0", port: int = 8000) -> None:
    """Serve the app with uvicorn (``python -m server.app --port 8000``)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, ws_max_size=_int_env("INFERENCEGYM_MAX_BODY_BYTES", 65536), log_level="info")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="InferenceGym OpenEnv server")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    main(host=args.host, port=args.port)
