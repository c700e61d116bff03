"""``WS /ws``: OpenEnv's session protocol, served by InferenceGym's own handler.

The messages and replies are ``openenv``'s (0.10: ``WSResetMessage``, ``WSStepMessage``,
``WSStateMessage``, ``WSCloseMessage``; ``WSObservationResponse``, ``WSStateResponse``,
``WSErrorResponse``), so its ``EnvClient`` (and :class:`server.client.InferenceGymClient`) speak to
it unchanged. What differs from openenv's own handler is what happens on bad input: every
message a client can send gets a reply, and only ``close`` or a disconnect ends the session (openenv
0.10's ends a session on a binary frame or a JSON value that is not an object, accepts ``NaN``, drops
unknown reset fields silently and echoes the whole offending input in its errors). Its 0.10 additions
``{"type": "mcp"}`` (this environment has no MCP tools) and ``/ws?session_id=`` (attach to an HTTP MCP
session) are not served: the first gets ``UNKNOWN_TYPE``, the second a fresh session.

- a binary frame, a frame over the size cap, text that is not JSON, JSON with ``NaN``/``Infinity``,
  or JSON that is not an object: an ``error`` reply (``INVALID_JSON``), the session goes on;
- an unknown ``type``: ``UNKNOWN_TYPE``; a message or field of the wrong shape, a bad action or bad
  reset fields: ``VALIDATION_ERROR`` with pydantic's errors (:func:`server.models.safe_errors`: a
  short excerpt of the input, never all of it); any other refusal: ``EXECUTION_ERROR``;
- a reset is prepared in a worker thread (a task build never stalls other sessions); a step runs
  inline on the event loop.

The session is one row of :class:`server.app.GymHTTPServer`'s table (shared with HTTP, one cap,
one idle reaper) and is freed whatever way the connection ends.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from openenv.core.env_server.serialization import serialize_observation
from openenv.core.env_server.types import (
    WSCloseMessage,
    WSErrorCode,
    WSErrorResponse,
    WSObservationResponse,
    WSResetMessage,
    WSStateMessage,
    WSStateResponse,
    WSStepMessage,
)
from pydantic import ValidationError

from server.models import ResetFields, safe_errors
from server.runtime import SessionError, excerpt

log = logging.getLogger("inferencegym.server")


class BadJSON(ValueError):
    """A frame that is not one JSON object of finite numbers."""


def _no_constants(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number; send finite numbers only")


def parse_object(text: str) -> dict[str, Any]:
    """One JSON object, with ``NaN``/``Infinity`` refused (Python's ``json`` accepts them)."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except BadJSON:
        raise
    except (ValueError, RecursionError) as e:
        raise BadJSON(f"invalid JSON: {excerpt(str(e), 120)}") from None
    if not isinstance(value, dict):
        raise BadJSON(f"a message is a JSON object, got {type(value).__name__}")
    return value


def _error(code: WSErrorCode, message: str, **extra: Any) -> str:
    return WSErrorResponse(data={"message": message, "code": code, **extra}).model_dump_json()


def frame_too_large(text: str, max_bytes: int) -> bool:
    return len(text) > max_bytes or (4 * len(text) > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes)


async def serve_session(websocket: WebSocket, srv, max_bytes: int) -> None:
    """Run one WebSocket session until ``close`` or disconnect; always free its slot."""
    await websocket.accept()
    try:
        sid, env = await srv.open_session()
    except SessionError as e:
        await websocket.send_text(_error(WSErrorCode.CAPACITY_REACHED, e.message, **e.detail))
        await websocket.close()
        return
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            reply = await handle_frame(message, env, sid, srv, max_bytes)
            if reply is None:  # close
                break
            await websocket.send_text(reply)
    except WebSocketDisconnect:
        pass
    except Exception:  # noqa: BLE001 - the connection broke mid-reply; the session is freed below
        log.exception("websocket session %s ended by an error", sid)
    finally:
        await srv.close_session(sid)
        try:
            await websocket.close()
        except RuntimeError:
            pass


async def handle_frame(message: dict, env, sid: str, srv, max_bytes: int) -> str | None:
    """The reply (JSON text) to one received frame; ``None`` for ``close``."""
    text = message.get("text")
    if text is None:
        size = len(message.get("bytes") or b"")
        return _error(WSErrorCode.INVALID_JSON, f"binary frame ({size} bytes) refused: send JSON text frames")
    if frame_too_large(text, max_bytes):
        return _error(WSErrorCode.INVALID_JSON, f"message larger than {max_bytes} bytes refused", max_bytes=max_bytes)
    try:
        msg = parse_object(text)
    except BadJSON as e:
        return _error(WSErrorCode.INVALID_JSON, str(e))
    kind = msg.get("type")
    try:
        match kind:
            case "reset":
                fields = ResetFields.model_validate(WSResetMessage.model_validate(msg).data)
                obs = await env.reset_async(**fields.model_dump(exclude_unset=True))
                srv.touch(sid)
                return WSObservationResponse(data=serialize_observation(obs)).model_dump_json()
            case "step":
                data = WSStepMessage.model_validate(msg).data
                obs = env.step(data)  # inline: the step is sub-millisecond and compiled
                srv.touch(sid, stepped=True)
                return WSObservationResponse(data=serialize_observation(obs)).model_dump_json()
            case "state":
                WSStateMessage.model_validate(msg)
                srv.touch(sid)
                return WSStateResponse(data=env.state.model_dump()).model_dump_json()
            case "close":
                WSCloseMessage.model_validate(msg)
                return None
            case _:
                return _error(
                    WSErrorCode.UNKNOWN_TYPE,
                    f"unknown message type {excerpt(kind, 40)}; send reset, step, state or close",
                )
    except ValidationError as e:
        return _error(WSErrorCode.VALIDATION_ERROR, "Invalid message", errors=safe_errors(e.errors()))
    except SessionError as e:
        detail = {k: v for k, v in e.detail.items() if k not in ("message", "code")}
        return _error(WSErrorCode.EXECUTION_ERROR, e.message, status=e.status, **detail)
    except Exception as e:  # noqa: BLE001 - a fault of ours: reported, logged, the session goes on
        log.exception("websocket session %s: %s message failed", sid, excerpt(kind, 40))
        return _error(WSErrorCode.EXECUTION_ERROR, f"internal error: {type(e).__name__}")
