"""Pydantic models of the OpenEnv interface, generated from gymjax's own definitions.

One source of truth: the action fields, their types, ranges, units and docs come from
:func:`gymjax.spaces.knob_table` (``env.knobs``); the observation fields are the fields of
:class:`gymjax.Observation` (scalars are ``gymjax.physics.observation.OBS_SCALAR_FIELDS``, the rest are per-tenant
vectors). Nothing here restates a range or a name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any

from openenv.core.env_server.types import Action, Observation, State
from pydantic import BaseModel, ConfigDict, Field, create_model

import gymjax
from gymjax.physics.observation import OBS_SCALAR_FIELDS
from gymjax.spaces import Knob, knob_table
from gymjax.types import MAX_SLOTS

OBS_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(gymjax.Observation))
OBS_VECTOR_FIELDS: tuple[str, ...] = tuple(n for n in OBS_FIELDS if n not in OBS_SCALAR_FIELDS)

# Units read off the field names (the names say the unit, STYLE.md).
_SUFFIX_UNITS = (("_s", "seconds"), ("_tps", "tokens per second"), ("_rps", "requests per second"), ("_gb", "GB"))
_NAME_UNITS = {
    "cost_per_1k_tokens": "$ per 1000 output tokens (capped at 100)",
    "arrival_rate": "requests per second",
    "arrival_rate_per_tenant": "requests per second, one per tenant",
    "queue_depth_per_tenant": "requests waiting, one per tenant",
    "kv_occupancy": "fraction of the KV pool, [0, 1]",
    "slo_attainment": "fraction of requests that ended this interval meeting both SLOs, [0, 1]",
    "progress": "step / horizon, [0, 1]",
    "invalid_config": "1 when the configuration cannot serve, else 0",
}


def observation_unit(name: str) -> str:
    if name in _NAME_UNITS:
        return _NAME_UNITS[name]
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return "count"


def knob_field(k: Knob) -> tuple[Any, Any]:
    """(type, Field) of one knob: strict types, so ``"4"`` or ``true`` are refused rather than coerced."""
    desc = f"{k.doc} [{k.unit}; range {k.low:g}..{k.high:g}]"
    extra = {"unit": k.unit, "slow_knob": k.slow}
    if k.kind == "int":
        return Annotated[int, Field(ge=int(k.low), le=int(k.high), strict=True, description=desc, json_schema_extra=extra)], ...
    return Annotated[float, Field(ge=k.low, le=k.high, strict=True, allow_inf_nan=False, description=desc, json_schema_extra=extra)], ...


def action_model(knobs: tuple[Knob, ...], name: str = "ServeActionModel") -> type[Action]:
    """The typed action of an env with these knobs (``env.knobs``): all six fields are required.

    A task's own model (``knob_table(env.cfg.n_slots)``) is the one place a client's action is
    validated (:meth:`server.runtime.TaskRuntime.parse_action`)."""
    fields = {k.name: knob_field(k) for k in knobs}
    model = create_model(name, __base__=Action, __doc__="The six ServeAction knobs (gymjax.ServeAction), in user units.", **fields)
    return model


# The server-wide action schema (/schema, /tasks, the /step body): batch_cap bounded by
# gymjax.types.MAX_SLOTS. It documents; it validates nothing: each task's own model (its n_slots) does.
ServeActionModel = action_model(knob_table(MAX_SLOTS))


class ActionEnvelope(Action):
    """A WebSocket step's action as OpenEnv's protocol hands it to the session: the client's knobs, not yet
    validated. The session validates them once, with its task's action model (the bound on
    ``batch_cap`` is the task's ``n_slots``, which a server-wide model cannot know)."""

    model_config = ConfigDict(extra="allow")


MAX_ERRORS = 16  # an error reply lists at most this many pydantic errors


def _excerpt(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_value(v: Any) -> Any:
    """``v`` as a JSON value an error reply may carry: small numbers, booleans, None and short
    strings as they are; anything else (NaN, infinities, huge numbers, long strings, containers) as a
    short excerpt of its ``repr``."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) < 2**53:
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    if isinstance(v, str) and len(v) <= 80:
        return v
    return _excerpt(v if not isinstance(v, str) else repr(v))


def _scalar(v: Any) -> Any:
    return v if v is None or isinstance(v, (int, float, str, bool)) else str(v)


def safe_errors(errors: list[dict], loc_prefix: tuple = ()) -> list[dict]:
    """Pydantic errors as an error reply carries them: at most :data:`MAX_ERRORS`, each ``loc`` part,
    ``msg``, ``input`` and ``ctx`` value cut to a short excerpt (never the whole input a client sent),
    and no NaN or infinity (so the reply is valid JSON)."""
    out = []
    for e in list(errors)[:MAX_ERRORS]:
        loc = [p if isinstance(p, int) else _excerpt(str(p), 64) for p in list(e.get("loc") or ())[:8]]
        item = {"type": str(e.get("type", "")), "loc": [*loc_prefix, *loc], "msg": _excerpt(str(e.get("msg", "")), 300)}
        if "input" in e:
            item["input"] = _json_value(e["input"])
        ctx = e.get("ctx")
        if isinstance(ctx, dict) and ctx:
            item["ctx"] = {_excerpt(str(k), 40): _json_value(_scalar(v)) for k, v in list(ctx.items())[:8]}
        out.append(item)
    return out


def knob_errors(errors: list[dict], knobs: tuple[Knob, ...], loc_prefix: tuple[str, ...] = ()) -> list[dict]:
    """Pydantic errors of an action model as JSON (:func:`safe_errors`), each about a knob naming its
    ``field``, ``range`` ([low, high] in the knob's unit) and ``unit``; ``loc_prefix`` places them in
    the request body."""
    by_name = {k.name: k for k in knobs}
    out = []
    for e in safe_errors(errors, loc_prefix):
        name = next((str(p) for p in reversed(e["loc"]) if str(p) in by_name), None)
        if name is not None:
            k = by_name[name]
            e.update(field=name, range=[k.low, k.high], unit=k.unit)
        out.append(e)
    return out


def _obs_field(name: str) -> tuple[Any, Any]:
    desc = f"{name} ({observation_unit(name)}); see gymjax.Observation"
    if name in OBS_SCALAR_FIELDS:
        return float, Field(default=0.0, description=desc)
    return list[float], Field(default_factory=list, description=desc)


ServeObservationModel = create_model(
    "ServeObservationModel",
    __base__=Observation,
    __doc__="One control interval's metrics (gymjax.Observation fields) plus the learner's flat vector.",
    **{n: _obs_field(n) for n in OBS_FIELDS},
    obs=(list[float], Field(default_factory=list, description="flat observation in [0, 1] (env.observation_space), what a network sees")),
    task=(str, Field(default="", description="task name")),
    step=(int, Field(default=0, ge=0, description="steps taken in this episode")),
    horizon_steps=(int, Field(default=0, ge=0, description="episode length in steps (1 step = dt_s simulated seconds)")),
    truncated=(bool, Field(default=False, description="the horizon was reached (the episode is over)")),
    action_in_force=(dict[str, float], Field(default_factory=dict, description="the ServeAction the engine is running")),
    counters=(
        dict[str, int],
        Field(default_factory=dict, description="cumulative requests this episode: arrived, finished, running, waiting, dropped"),
    ),
    score=(float | None, Field(default=None, description="the grader's episode score in [0, 1], set on the final step")),
)


class ServeStateModel(State):
    """A session's episode bookkeeping (``GET /state``, WebSocket ``state``)."""

    session_id: str | None = Field(default=None, description="session id: pass it to /step, /state, /grader")
    task: str | None = Field(default=None, description="task of the current episode")
    seed: int | None = Field(default=None, description="seed of the current episode")
    overrides: dict[str, Any] = Field(default_factory=dict, description="task overrides of the current episode")
    horizon_steps: int = Field(default=0, ge=0)
    done: bool = Field(default=False, description="the episode reached its horizon")
    reward_sum: float = Field(default=0.0, description="sum of step rewards this episode")
    action_in_force: dict[str, float] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    score: float | None = Field(default=None, description="grader score once the episode is done")


# ------------------------------------------------------------------------------------------------
# HTTP request/response bodies
# ------------------------------------------------------------------------------------------------

_Seed = Annotated[int, Field(ge=0, le=2**31 - 1, strict=True, description="episode seed (same seed => same trajectory)")]


class ResetFields(BaseModel):
    """A reset's fields (a WebSocket ``reset`` message's ``data``): every field optional."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{}, {"task": "static", "seed": 7, "overrides": {"horizon_steps": 50}}]}
    )

    seed: _Seed | None = Field(default=None, description="episode seed; omit it and the server draws one (required for an official score)")
    episode_id: str | None = Field(default=None, max_length=255)
    task: str | None = Field(default=None, max_length=100, description="a name from GET /tasks (default: the first)")
    # values are checked by gymjax.make (type and range per field, errors naming both)
    overrides: dict[str, Any] = Field(
        default_factory=dict, max_length=16, description='params-only task overrides, e.g. {"horizon_steps": 50} (an unofficial episode)'
    )
    # OpenEnv's Task API way to name a task (GET /inferencegym/splits, POST /inferencegym/tasks)
    split: str | None = Field(default=None, max_length=100, description='the Task API split ("test", the only one); with index')
    index: int | None = Field(
        default=None, ge=0, le=10_000, strict=True, description="the Task API index of a task in split (instead of task)"
    )


class ResetBody(ResetFields):
    """``POST /reset``: every field optional, ``{}`` starts a fresh session on the default task."""

    session_id: str | None = Field(default=None, max_length=64, description="reset this existing session instead of opening a new one")


class SessionResetResponse(BaseModel):
    observation: dict[str, Any]
    reward: float | None = None
    done: bool = False
    session_id: str


class StepBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(max_length=64, description="the id returned by POST /reset")
    # validated once, by the session's task's action model (its batch_cap range), so the 422 names
    # the range that applies; the schema shown is ServeActionModel's
    action: dict[str, Any] = Field(json_schema_extra=ServeActionModel.model_json_schema(), description="a ServeAction: the six knobs")
    timeout_s: float | None = Field(default=None, gt=0, description="accepted for OpenEnv compatibility; steps are sub-millisecond")
    request_id: str | None = Field(default=None, max_length=255)


class SessionStepResponse(BaseModel):
    observation: dict[str, Any]
    reward: float | None = None
    done: bool = False
    session_id: str


class SessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(max_length=64, description="the id returned by POST /reset")


class GraderResponse(BaseModel):
    session_id: str
    task: str
    seed: int
    score: float = Field(
        description="gymjax.grade of the session's finished episode against the task's own horizon (shorter episodes score as "
        "incomplete), in [0, 1]"
    )
    official: bool = Field(
        description="the task as published: no overrides, a seed the server drew (none named by the client), the full horizon"
    )
    official_score: float | None = Field(description="score when official, else null: the only score a leaderboard may take")
    unofficial_reasons: list[str] = Field(description="why the episode is not official (empty when it is)")
    complete: bool = Field(description="the episode ran the task's full horizon")
    task_horizon_steps: int = Field(description="the task's own horizon, the denominator of the score's completion factor")
    steps: int
    reward_sum: float
    episode: dict[str, Any] = Field(description="the episode's cumulative counters (gymjax.EpisodeStats)")


class BaselineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, max_length=100, description="a name from GET /tasks (default: the first)")
    policy: str = Field(default="heuristic", max_length=100, description="a name from gymjax.baselines.POLICIES")
    seed: _Seed = 0
    n_seeds: int = Field(
        default=1, ge=1, le=16, strict=True, description="episodes (keys split(PRNGKey(seed), n_seeds)); n_seeds x horizon <= 4000 steps"
    )
    overrides: dict[str, Any] = Field(default_factory=dict, max_length=16, description="params-only overrides, as for /reset")


class BaselineResponse(BaseModel):
    task: str
    policy: str
    seed: int
    scores: list[float]
    mean: float
    evaluator_cached: bool = Field(description="the compiled evaluator of an earlier identical request was reused (no retrace)")


class BaselineActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(max_length=64, description="the id returned by POST /reset")
    policy: str = Field(default="heuristic", max_length=100, description="a name from gymjax.baselines.POLICIES")


class BaselineActionResponse(BaseModel):
    session_id: str
    policy: str
    step: int = Field(description="the episode step the action is for (steps taken so far)")
    action: dict[str, int | float] = Field(description="the ServeAction the baseline takes now (int knobs as ints): POST it to /step")
