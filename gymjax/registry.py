"""The task registry behind :func:`gymjax.make`: task names to :class:`TaskSpec` builders.

The task modules define specs and import nothing from here; this module imports them and names
them, so the import graph runs one way (tasks, trace_tasks -> registry).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gymjax import presets, tasks, trace_tasks
from gymjax.env import ServingEnv
from gymjax.tasks import TaskSpec
from gymjax.types import EnvConfig, EnvParams

_REGISTRY: dict[str, Callable[..., TaskSpec]] = {
    "static": tasks.static_task,
    "bursty": tasks.bursty_task,
    "adversarial": tasks.adversarial_task,
    "azure-replay": trace_tasks.azure_replay_task,
    "trace": trace_tasks.user_trace_task,  # the only builder with an argument: the CSV path
}


# fixed by a replayed trace's binning (a smaller max_arrivals is allowed: the excess is counted dropped)
TRACE_FIXED = frozenset({"dt_s", "n_tenants", "use_trace"})


def register(name: str, builder: Callable[[], TaskSpec] | None = None):
    """Register ``builder`` (a no-argument function returning a :class:`TaskSpec`) as task ``name``;
    without ``builder``, a decorator that does so."""

    def deco(fn: Callable[[], TaskSpec]):
        _REGISTRY[name] = fn
        return fn

    return deco if builder is None else deco(builder)


def registered_envs() -> tuple[str, ...]:
    """Names accepted by :func:`make`."""
    return tuple(_REGISTRY)


def task_spec(name: str, **overrides) -> TaskSpec:
    """The :class:`TaskSpec` of task ``name`` with ``overrides`` applied: :class:`TaskSpec` fields or
    :class:`EnvConfig` sizes (for the ``trace`` task, ``path``, ``dt_s``, ``speedup``, the SLOs and the
    cluster go to its builder, :data:`gymjax.trace_tasks.TRACE_BUILDER_ARGS`, which bins the trace for
    them; a replayed trace's binning cannot be overridden otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; valid names are: {', '.join(registered_envs())}")
    builder_args = trace_tasks.TRACE_BUILDER_ARGS if name == "trace" else ()
    spec = _REGISTRY[name](**{k: v for k, v in overrides.items() if k in builder_args})
    overrides = {k: v for k, v in overrides.items() if k not in builder_args}
    if spec.trace is not None and set(overrides) & TRACE_FIXED:
        raise ValueError(f"task {name!r} replays a trace binned at dt_s={spec.dt_s:g} s into {spec.config.n_tenants} "
                         f"tenant(s); overriding {sorted(set(overrides) & TRACE_FIXED)} would silently "
                         'change the workload (re-bin a trace of your own with gymjax.make("trace", path=..., dt_s=..., '
                         "speedup=...))")
    cfg_fields = {f.name for f in dataclasses.fields(EnvConfig)}
    spec_fields = {f.name for f in dataclasses.fields(TaskSpec)}
    cfg_over = {k: v for k, v in overrides.items() if k in cfg_fields}
    spec_over = {k: v for k, v in overrides.items() if k in spec_fields}
    unknown = set(overrides) - cfg_fields - spec_fields
    if unknown:
        fields = sorted(spec_fields - {"config"})
        raise ValueError(f"unknown override(s) {sorted(unknown)}; task fields: {fields}; sizes: {sorted(cfg_fields)}")
    if cfg_over:
        spec_over["config"] = dataclasses.replace(spec.config, **cfg_over)
    return dataclasses.replace(spec, **spec_over)


def make(name: str, **overrides) -> tuple[ServingEnv, EnvParams]:
    """Build a registered task: ``env, params = gymjax.make("static", n_slots=128)``.

    Overrides may name :class:`TaskSpec` fields (``model``, ``gpu``, ``n_gpus``, ``horizon_steps``,
    ...) or :class:`EnvConfig` sizes (``n_slots``, ``n_leaps``, ...). Each is checked
    (:func:`gymjax.tasks.validate_spec`: integer where integer, bools refused, physical ranges,
    ``tensor_parallel`` dividing ``n_gpus``); a bad one raises :class:`gymjax.tasks.InvalidTaskField`
    (a ``ValueError`` naming the field and its allowed range).
    """
    env = tasks.env_from_spec(checked_spec(name, **overrides), name)
    return env, env.default_params


def checked_spec(name: str, **overrides) -> TaskSpec:
    """:func:`task_spec` with every field checked as :func:`make` checks it (the spec ``make`` builds)."""
    spec = task_spec(name, **overrides)
    fix_tenants = "n_tenants" not in overrides and isinstance(spec.tenants, tuple) and spec.tenants  # an explicit one is checked
    if fix_tenants and spec.config.n_tenants != len(spec.tenants):
        spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, n_tenants=len(spec.tenants)))
    tasks.validate_spec(spec)  # every field's type and range: a bad override is refused before anything is built
    if spec.model not in presets.MODELS:
        raise ValueError(f"unknown model {spec.model!r}; valid: {sorted(presets.MODELS)}")
    if spec.gpu not in presets.GPUS:
        raise ValueError(f"unknown gpu {spec.gpu!r}; valid: {sorted(presets.GPUS)}")
    return spec
