"""The InferenceGym OpenEnv server (FastAPI, built on ``openenv`` 0.10: its ``HTTPEnvServer``).

    make serve                                   # uvicorn server.app:app on :8000
    python -m server.app --port 8000             # the same, via main()

Endpoints (docs/server.md has the full reference):

- ``WS /ws`` (OpenEnv's protocol, :mod:`server.ws`): one session per connection,
  ``reset``/``step``/``state`` messages; concurrent sessions, a session cap and idle eviction.
- ``POST /reset`` -> ``session_id``; ``POST /step`` and ``GET /state?session_id=`` act on that
  session. Unlike OpenEnv's stateless HTTP routes, HTTP episodes are real; ``POST /reset``
  with ``{}`` opens a session on the default task. ``POST /close`` frees a session.
- ``GET /tasks`` (catalogue + action schemas), ``POST /grader`` (score of a session's own finished
  episode), ``POST /baseline`` (a gymjax baseline run in a niced worker process), ``POST
  /baseline/action`` (a baseline's action at a session's current step), ``GET /`` (the landing page:
  a live episode of a baseline, ``server/static/live.js``).
- ``GET /health``, ``GET /metadata``, ``GET /schema``, ``POST /mcp``, ``WS /mcp`` (OpenEnv's contract) and
  its Task API: ``GET /list_environments``, ``GET /inferencegym/splits``, ``POST /inferencegym/tasks``,
  ``/num_tasks``, ``/task``, ``/task_range`` (one split, ``test``: the served tasks).

Configuration (environment variables): ``INFERENCEGYM_TASKS`` (comma list, default all buildable
tasks), ``INFERENCEGYM_TASK_OVERRIDES`` (JSON applied to every task, e.g. sizes),
``INFERENCEGYM_MAX_SESSIONS`` (64), ``INFERENCEGYM_SESSION_TIMEOUT_S`` (600),
``INFERENCEGYM_MAX_BODY_BYTES`` (65536), ``INFERENCEGYM_PREWARM`` (1: compile every task at startup).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

try:
    from fastapi import Body, FastAPI, Query, Request, WebSocket
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.routing import APIRoute, APIWebSocketRoute
    from openenv.core.env_server.exceptions import SessionCapacityError
    from openenv.core.env_server.http_server import HTTPEnvServer
    from openenv.core.env_server.types import ConcurrencyConfig, SchemaResponse
    from pydantic import ValidationError
except ModuleNotFoundError as e:  # `pip install inferencegym` without the server extra
    from server import missing, missing_message

    raise ModuleNotFoundError(missing_message(missing() or [str(e.name)]), name=e.name) from e

import gymjax
import server.environment as environment
from server.environment import InferenceGymEnvironment, resolve_task
from server.models import (
    ActionEnvelope,
    BaselineActionBody,
    BaselineActionResponse,
    BaselineBody,
    BaselineResponse,
    GraderResponse,
    ResetBody,
    ResetFields,
    ServeActionModel,
    ServeObservationModel,
    ServeStateModel,
    SessionBody,
    SessionResetResponse,
    SessionStepResponse,
    StepBody,
    knob_errors,
    safe_errors,
)
from server.runtime import (
    Episode,
    Prepared,
    RuntimeRegistry,
    SessionError,
    baseline_action,
    baseline_in_worker,
    excerpt,
)
from server.worker import baseline_worker_init
from server.ws import serve_session

log = logging.getLogger("inferencegym.server")

BASELINE_MAX_STEPS = 4000  # n_seeds x horizon_steps of one /baseline request (16 seeds of a 250-step task)

SEED_CONTRACT = (
    "key = jax.random.PRNGKey(seed); reset_key, step_key = jax.random.split(key); "
    "obs, state = env.reset(reset_key, params); step i (0-based) uses jax.random.fold_in(step_key, i)"
)


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


class GymHTTPServer(HTTPEnvServer):
    """OpenEnv's server with sessions that HTTP can address too.

    WebSocket and HTTP sessions share one table, one cap and one idle reaper; a session's id is also
    stored on its environment so ``/state`` and ``/grader`` can report it. This class is the only
    code that touches ``openenv``'s private session API (``_create_session``, ``_destroy_session``,
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
        # openenv checks every max(timeout/4, 5 s); check at timeout/4 (at most every 5 s), WebSocket
        # sessions included (openenv 0.10 exempts a session while a socket is attached; here an idle
        # socket's session expires like any other).
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


def check_policy(name: str) -> None:
    """422 unless ``name`` is one of gymjax's baseline policies (``/baseline``, ``/baseline/action``)."""
    policies = gymjax.baselines.POLICIES
    if name not in policies:
        raise SessionError(422, f"unknown policy {excerpt(name)}; valid: {sorted(policies)}", field="policy", valid=sorted(policies))


class RequestGuard:
    """ASGI middleware in front of every HTTP route: a request runs only once its whole body has
    arrived, within ``max_bytes`` (413 beyond, declared or streamed), as UTF-8 and as JSON without
    ``NaN`` or ``Infinity`` and not nested past the parser's depth (422: Python's ``json``, which
    FastAPI uses, accepts the constants and answers 400 to the nesting). A client that
    disconnects before its body is complete gets nothing run: no half-sent ``/step`` advances an
    episode, no half-sent ``/reset`` opens a session."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(send, 413, f"request body larger than {self.max_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                log.info("%s %s: client left before its body was complete; nothing run", scope.get("method"), scope.get("path"))
                return None
            if message["type"] != "http.request":
                continue
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _reply(send, 413, f"request body larger than {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return await _reply(send, 422, "the body is not UTF-8 text; send a JSON object")
            refusal = _json_refusal(text)
            if refusal is not None:
                return await _reply(send, 422, refusal)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class _Constant(Exception):
    pass


def _raise_constant(_name: str):
    raise _Constant


def _json_refusal(body: str) -> str | None:
    """Why a JSON body is refused before any route sees it: it holds ``NaN``, ``Infinity`` or
    ``-Infinity``, or it nests too deeply to parse. ``None`` otherwise (text that is not JSON at all
    is left to the route, which answers 422, or JSON-RPC's parse error on ``/mcp``)."""
    try:
        json.loads(body, parse_constant=_raise_constant)
    except _Constant:
        return "NaN and Infinity are not JSON numbers; send finite numbers only"
    except RecursionError:
        return "the JSON body nests too deeply"
    except ValueError:
        return None
    return None


async def _reply(send, status: int, message: str) -> None:
    msg = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(msg)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": msg})


def ws_transport_max_bytes(max_body: int) -> int:
    """The WebSocket transport limit the documented start commands give uvicorn (``ws_max_size``):
    4x the message cap, so a message a little over the cap gets an error reply (the session goes on)
    and nothing larger is ever buffered (1009, the connection closes)."""
    return 4 * max_body


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
        env_name=environment.ENV_NAME,  # the Task API's /{env_name}/... routes
        state_cls=ServeStateModel,
    )
    app.state.server = srv
    app.state.registry = reg
    baseline_gate = asyncio.Semaphore(1)
    baseline_queue = _int_env("INFERENCEGYM_BASELINE_QUEUE", 4)
    baseline_load = {"queued": 0}
    pools: list[ProcessPoolExecutor] = []

    def baseline_pool() -> ProcessPoolExecutor:
        """One worker process for /baseline (spawned: JAX must not be forked), started on first use.
        Its tracing, compiling and evaluation never hold the server's GIL, and it runs niced."""
        if not pools:
            pools.append(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=baseline_worker_init))
        return pools[0]

    async def _stop_baseline_pool() -> None:
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)

    app.router.on_shutdown.append(_stop_baseline_pool)

    # ---------------------------------------------------------------------------------------------
    @app.exception_handler(SessionError)
    async def _session_error(_request: Request, exc: SessionError):
        return JSONResponse(status_code=exc.status, content={"detail": {"message": exc.message, **jsonable_encoder(exc.detail)}})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": safe_errors(exc.errors())})

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception):  # a fault of ours: logged, answered as JSON
        log.error("unhandled %s: %s", type(exc).__name__, excerpt(str(exc), 300), exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__})"})

    async def prepare(episode: Episode, body: ResetFields) -> Prepared:
        """Build what a reset needs in a worker thread: compiling a task or building it for new
        overrides takes tens of ms to seconds, and the event loop serves every other session."""
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: episode.prepare(resolve_task(body.task, body.split, body.index), body.seed, body.overrides)
        )

    # ---------------------------------------------------------------------------------------------
    @app.post(
        "/reset",
        response_model=SessionResetResponse,
        tags=["Environment Control"],
        summary="Start an episode; returns the session id that /step, /state and /grader take",
    )
    async def reset(request: Request, body: ResetBody | None = Body(default=None)) -> JSONResponse:  # noqa: B008
        body = body or ResetBody()
        if body.session_id is not None:  # reset an existing session: nothing is created
            sid, env = body.session_id, await srv.session(body.session_id)
            prep = await prepare(env.episode, body)
            payload = env.episode.start(prep, body.episode_id)
            srv.touch(sid)
            return JSONResponse({"observation": _obs(payload), "reward": None, "done": False, "session_id": sid})
        # a new session: everything that may fail runs before it exists or frees it
        prep = await prepare(Episode(reg), body)
        sid, env = await srv.open_session()
        try:
            payload = env.episode.start(prep, body.episode_id)
            response = JSONResponse({"observation": _obs(payload), "reward": None, "done": False, "session_id": sid})
            if await request.is_disconnected():  # nobody will learn its id
                await srv.close_session(sid)
            return response
        except BaseException:
            await srv.close_session(sid)
            raise

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
    async def state(session_id: str = Query(max_length=64, description="the id returned by POST /reset")) -> JSONResponse:
        env = await srv.session(session_id)
        srv.touch(session_id)
        return JSONResponse(env.episode.state_dict(session_id))

    @app.post("/close", tags=["Environment Control"], summary="Close a session and free its slot")
    async def close(body: SessionBody) -> dict:
        await srv.session(body.session_id)
        await srv.close_session(body.session_id)
        return {"session_id": body.session_id, "closed": True}

    @app.get("/sessions", tags=["Environment Info"], summary="How many sessions are open (HTTP and WebSocket) and the cap")
    async def sessions() -> dict:
        return {"active": srv.active_sessions, "max": srv.max_concurrent_envs}

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
        check_policy(body.policy)
        if baseline_load["queued"] >= baseline_queue:  # running + waiting: beyond it, come back later
            raise SessionError(
                429, f"{baseline_load['queued']} baseline runs queued (limit {baseline_queue}); retry later", limit=baseline_queue
            )
        baseline_load["queued"] += 1
        try:
            loop = asyncio.get_running_loop()
            rt = await loop.run_in_executor(None, reg.get, body.task, False)
            params, _ = await loop.run_in_executor(None, rt.params_for, body.overrides)
            steps = int(params.horizon_steps) * body.n_seeds
            if steps > BASELINE_MAX_STEPS:
                raise SessionError(
                    422,
                    f"n_seeds x horizon_steps = {body.n_seeds} x {int(params.horizon_steps)} = {steps} steps; at most {BASELINE_MAX_STEPS}",
                    field="n_seeds",
                    max_steps=BASELINE_MAX_STEPS,
                )
            async with baseline_gate:  # one evaluation at a time, in a worker process at a lower CPU priority
                scores, cached = await loop.run_in_executor(
                    baseline_pool(), baseline_in_worker, rt.name, reg.base_overrides, body.policy, body.overrides, body.seed, body.n_seeds
                )
        finally:
            baseline_load["queued"] -= 1
        return {
            "task": rt.name,
            "policy": body.policy,
            "seed": body.seed,
            "scores": scores,
            "mean": sum(scores) / len(scores),
            "evaluator_cached": cached,
        }

    landing: dict[str, str] = {}

    @app.get("/", include_in_schema=False)
    async def landing_page() -> HTMLResponse:
        """A live episode of a chosen task and baseline (server/static/live.js in the timeline page of
        `inferencegym render`), played against this server's own /reset, /baseline/action and /step."""
        if not landing:
            from gymjax.render import html_page

            empty = {"task": "", "steps": 1, "series": {"reward": [], "reconfig_remaining_s": [], "invalid_config": []}}
            landing["page"] = html_page(
                empty,
                "InferenceGym: a live episode",
                "loading the task catalogue...",
                live_script=(Path(__file__).parent / "static" / "live.js").read_text(),
            )
        return HTMLResponse(landing["page"])

    policy_gate = asyncio.Semaphore(1)  # a baseline's first action compiles it: one compilation at a time

    @app.post(
        "/baseline/action",
        response_model=BaselineActionResponse,
        tags=["Grading"],
        summary="The action a gymjax baseline policy takes at a session's current step (the episode does not move)",
    )
    async def baseline_action_route(body: BaselineActionBody) -> dict:
        check_policy(body.policy)
        env = await srv.session(body.session_id)
        inputs = env.episode.policy_inputs(body.policy)
        srv.touch(body.session_id)
        async with policy_gate:
            act = await asyncio.get_running_loop().run_in_executor(None, baseline_action, inputs)
        srv.touch(body.session_id)  # a first call compiles (seconds, more on a busy machine): the session was in use all along
        return {"session_id": body.session_id, "policy": body.policy, "step": inputs[5], "action": act}

    # openenv's routes (/mcp, /health, /metadata, the Task API) after ours; its stateless /reset, /step,
    # /state, its /schema and its /ws are dropped in favour of the ones here.
    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_session(websocket, srv, max_body)

    ours = {_route_key(r) for r in app.router.routes if isinstance(r, APIRoute | APIWebSocketRoute)}
    our_paths = {(kind, path) for kind, path, _ in ours}
    srv.register_routes(app)
    seen: set = set()
    kept = []
    for r in app.router.routes:
        if isinstance(r, APIRoute | APIWebSocketRoute):
            key = _route_key(r)
            if key in seen or (key not in ours and key[:2] in our_paths):
                continue
            seen.add(key)
        kept.append(r)
    app.router.routes[:] = kept
    app.add_middleware(RequestGuard, max_bytes=max_body)

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


def _route_key(r) -> tuple[str, str, frozenset]:
    if isinstance(r, APIWebSocketRoute):
        return ("ws", r.path, frozenset())
    return ("http", r.path, frozenset(r.methods))


def _obs(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("reward", "done")}


app = create_app()


def compile_all() -> int:
    """Compile every served task once (``python -m server.app --compile-only``): with
    ``JAX_COMPILATION_CACHE_DIR`` set, the executables land in JAX's persistent cache and a later
    start loads them instead of compiling (the Docker image's warm cache). Returns an exit code."""
    reg = app.state.registry
    failed = 0
    for name in reg.task_names:
        t0 = time.perf_counter()
        try:
            reg.get(name)
            print(f"compiled {name} in {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"could not compile {name}: {e}", flush=True)
    return 1 if failed or not reg.task_names else 0


def main(host: str = "0.0.0.0", port: int = 8000, log_level: str = "info") -> None:
    """Serve the app with uvicorn (``python -m server.app --port 8000``; ``make serve`` and the
    Dockerfile run this), with the WebSocket transport limit :func:`ws_transport_max_bytes`."""
    import uvicorn

    max_body = _int_env("INFERENCEGYM_MAX_BODY_BYTES", 65536)
    # the event loop shares the GIL with worker threads (task builds, /baseline tracing): a shorter
    # switch interval than Python's 5 ms bounds how long a step waits for it
    sys.setswitchinterval(float(os.environ.get("INFERENCEGYM_SWITCH_INTERVAL_S") or 0.0005))
    uvicorn.run(app, host=host, port=port, ws_max_size=ws_transport_max_bytes(max_body), log_level=log_level)


def cli(argv: list[str] | None = None) -> int:
    """``python -m server.app [--host H] [--port P] [--log-level L] [--compile-only]`` (and the
    ``server`` command): serve, or compile every task and exit. Returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(prog="server", description="InferenceGym OpenEnv server")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="compile every served task and exit (the Dockerfile runs it at build time to fill JAX_COMPILATION_CACHE_DIR)",
    )
    args = parser.parse_args(argv)
    if args.compile_only:
        return compile_all()
    main(host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
