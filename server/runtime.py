"""The server's engine room: jitted gymjax functions shared by every session, and one episode.

A :class:`TaskRuntime` holds one task's env and its jitted ``reset``/``step``/``grade``, compiled
once per process (the cache :data:`RUNTIMES` is keyed by task name); every session of that task
calls the same compiled functions with its own state and params. Params-only overrides
(``horizon_steps``, ``gpu``, ...) reuse the compilation: params are an argument, not a constant.

Seeds (the contract the client-vs-in-process test checks)::

    key = jax.random.PRNGKey(seed)
    reset_key, step_key = jax.random.split(key)
    obs, state = env.reset(reset_key, params)
    # step i of the episode (i = 0, 1, ...):
    obs, state, reward, terminated, truncated, info = env.step(jax.random.fold_in(step_key, i), state, action, params)

An :class:`Episode` is one session's episode. A client's action takes one path::

    JSON fields --TaskRuntime.parse_action--> the task's pydantic action model (the one validation)
                --> gymjax.ServeAction (int32 / float32 leaves) --> the jitted step

and the step's outputs come back to host once (one packed float32 vector per step). The action in
force it reports is that ServeAction's. Its score is ``gymjax.grade(params, episode_stats)`` of the
episode it ran.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gymjax
from gymjax.evaluation import make_evaluator
from gymjax.registry import checked_spec
from gymjax.spaces import KNOB_NAMES
from gymjax.tasks import InvalidTaskField, host_params
from server.models import OBS_FIELDS, OBS_VECTOR_FIELDS, action_model

log = logging.getLogger("inferencegym.server")

F32 = jnp.float32
I32 = jnp.int32

# Task overrides a client may pass to reset: they change params only, so they never recompile.
CLIENT_OVERRIDES = ("horizon_steps", "model", "gpu", "n_gpus", "tensor_parallel", "dt_s", "max_wait_s")
MAX_HORIZON_STEPS = 100_000
EVALUATOR_CACHE = 16  # compiled baseline evaluators kept per task
POLICY_CACHE = 16  # compiled baseline policies (POST /baseline/action) kept per task
POLICY_KEY_SALT = 0x9E3779B9  # a baseline's key at step i: fold_in(fold_in(step_key, i), salt), never the step's own key
COUNTER_NAMES = ("arrived", "finished", "running", "waiting", "dropped")


EXCERPT_CHARS = 80  # an error reply quotes at most this much of what a client sent
MAX_MESSAGE_CHARS = 1000  # and its message is at most this long
SEED_MAX = 2**31 - 1


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters: how an error reply quotes a client's input."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails is still quoted
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SessionError(Exception):
    """An error a client caused; ``status`` is the HTTP status it maps to. The message is capped at
    :data:`MAX_MESSAGE_CHARS`: a client's input enters it only through :func:`excerpt`."""

    def __init__(self, status: int, message: str, **detail: Any):
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def __reduce__(self):  # crosses a process boundary intact (the /baseline worker raises it)
        return (_session_error, (self.status, self.message, self.detail))


def _session_error(status: int, message: str, detail: dict) -> SessionError:
    return SessionError(status, message, **detail)


def _env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    return default if raw in (None, "") else json.loads(raw)


def served_task_overrides() -> dict[str, Any]:
    """Overrides the server applies to every task (``INFERENCEGYM_TASK_OVERRIDES``, JSON), e.g. smaller
    sizes for tests: ``{"n_slots": 32, "queue_cap": 64}``."""
    return dict(_env_json("INFERENCEGYM_TASK_OVERRIDES", {}))


def check_overrides(overrides: Any) -> None:
    """A session's overrides are an object of at most ``len(CLIENT_OVERRIDES)`` allowed names with
    JSON scalar values (``gymjax.make`` then checks each value's type and range); 422 otherwise."""
    if not isinstance(overrides, dict):
        raise SessionError(422, f"overrides must be an object, got {type(overrides).__name__}", field="overrides")
    bad = sorted(excerpt(k, 40) for k in overrides if k not in CLIENT_OVERRIDES)
    if bad:
        raise SessionError(
            422,
            f"override(s) {bad[:8]} not allowed; a session may override {list(CLIENT_OVERRIDES)}",
            field="overrides",
            allowed=list(CLIENT_OVERRIDES),
        )
    for k, v in overrides.items():
        if not isinstance(v, (int, float, str)) or (isinstance(v, str) and len(v) > 64):
            raise SessionError(422, f"overrides.{k} must be a number or a short string, got {excerpt(v)}", field=f"overrides.{k}")
    h = overrides.get("horizon_steps")
    if h is not None and (isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HORIZON_STEPS):
        raise SessionError(
            422,
            f"overrides.horizon_steps must be an integer in [1, {MAX_HORIZON_STEPS}], got {excerpt(h)}",
            field="overrides.horizon_steps",
            range=[1, MAX_HORIZON_STEPS],
        )


def _pack(obs: jax.Array, metrics: gymjax.Observation, extra: list[jax.Array]) -> jax.Array:
    """Everything a client sees of a step, as one float32 vector (one device-to-host copy)."""
    parts = [obs.astype(F32)]
    parts += [jnp.ravel(getattr(metrics, n)).astype(F32) for n in OBS_FIELDS]
    parts += [jnp.ravel(x).astype(F32) for x in extra]
    return jnp.concatenate(parts)


class TreePacker:
    """A pytree as one flat buffer per dtype, and back (both jittable).

    A jitted call pays per argument leaf: the env state (~60 leaves) plus params (~50) cost more to
    pass than the step costs to run. Packed, they are five buffers; unpacking inside ``jit`` is free
    slicing.
    """

    def __init__(self, template: Any):
        leaves, self.treedef = jax.tree.flatten(template)
        offsets: dict[str, int] = {}
        self.spec = []
        for x in leaves:
            dt = jnp.dtype(x.dtype).name
            size = int(np.prod(x.shape, dtype=np.int64))
            self.spec.append((dt, offsets.get(dt, 0), tuple(x.shape), size))
            offsets[dt] = offsets.get(dt, 0) + size
        self.dtypes = tuple(sorted(offsets))

    def pack_host(self, tree: Any) -> tuple[np.ndarray, ...]:
        """:meth:`pack` on the host (NumPy; device leaves are fetched first): how params are packed."""
        leaves = jax.tree.leaves(tree)
        return tuple(
            np.concatenate([np.ravel(np.asarray(x)).astype(dt) for x, s in zip(leaves, self.spec, strict=True) if s[0] == dt])
            for dt in self.dtypes
        )

    def pack(self, tree: Any) -> tuple[jax.Array, ...]:
        leaves = jax.tree.leaves(tree)
        return tuple(
            jnp.concatenate([jnp.ravel(x).astype(dt) for x, s in zip(leaves, self.spec, strict=True) if s[0] == dt]) for dt in self.dtypes
        )

    def unpack(self, bufs: tuple[jax.Array, ...]) -> Any:
        by = dict(zip(self.dtypes, bufs, strict=True))
        return jax.tree.unflatten(self.treedef, [by[dt][o : o + n].reshape(shape) for dt, o, shape, n in self.spec])


class TaskRuntime:
    """One task's env and its compiled functions, shared by all sessions of the task."""

    def __init__(self, name: str, base_overrides: dict[str, Any]):
        self.name = name
        self.base_overrides = dict(base_overrides)
        self.env, self.params = gymjax.make(name, **self.base_overrides)
        self.cfg = self.env.cfg
        self.spec = self.env.spec
        env = self.env
        self._params_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._evaluators: OrderedDict[tuple, Any] = OrderedDict()
        self._policies: OrderedDict[tuple, Any] = OrderedDict()
        self._action_cache: dict[tuple, gymjax.ServeAction] = {}
        self._action_lock = threading.Lock()  # not self._lock: compile() parses an action while holding that
        self._lock = threading.Lock()
        self._compiled = False
        # this env's typed action, the one validation of a client's action: batch_cap bounded by its own n_slots
        self.action_model = action_model(self.env.knobs, f"ServeAction_{name.replace('-', '_')}")
        self.knob_dtypes = tuple(np.int32 if k.kind == "int" else np.float32 for k in self.env.knobs)
        state_shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0), self.params)[1]
        self.state_packer = sp = TreePacker(state_shape)
        self.params_packer = pp = TreePacker(self.params)
        self.episode_fields = tuple(f.name for f in dataclasses.fields(state_shape.episode))
        # (is_int, is_scalar) of each EpisodeStats field, to rebuild it from the host vector
        self.episode_kinds = {
            f: (jnp.issubdtype(getattr(state_shape.episode, f).dtype, jnp.integer), getattr(state_shape.episode, f).shape == ())
            for f in self.episode_fields
        }
        self.layout = self._layout(env.obs_dim, state_shape.episode)

        task_horizon = self.params.horizon_steps

        def reset(seed, packed_params):
            params = pp.unpack(packed_params)
            reset_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
            obs, state = env.reset(reset_key, params)
            metrics = env.metrics(params, state)  # the named metrics of the empty cluster
            return sp.pack(state), step_key, _pack(obs, metrics, [])

        def step(step_key, i, packed_state, action: gymjax.ServeAction, packed_params):
            params = pp.unpack(packed_params)
            obs, state, reward, _terminated, truncated, info = env.step(
                jax.random.fold_in(step_key, i), sp.unpack(packed_state), action, params
            )
            counters = jnp.stack([info["counters"][c].astype(F32) for c in COUNTER_NAMES])
            ep = info["episode"]
            # graded against the task's own horizon: an episode shorter than it scores as incomplete
            score = gymjax.grade(params.replace(horizon_steps=task_horizon), ep)
            extra = [reward, truncated, counters, score] + [getattr(ep, f) for f in self.episode_fields]
            return sp.pack(state), _pack(obs, info["metrics"], extra)

        self.reset_fn = jax.jit(reset)
        self.step_fn = jax.jit(step)
        self.unpack_state = jax.jit(sp.unpack)
        self.packed_params = jax.device_put(pp.pack_host(self.params))

    def _layout(self, obs_dim: int, episode) -> dict[str, slice]:
        T = self.cfg.n_tenants
        widths = [("obs", obs_dim)] + [(n, T if n in OBS_VECTOR_FIELDS else 1) for n in OBS_FIELDS]
        widths += [("reward", 1), ("truncated", 1), ("counters", len(COUNTER_NAMES)), ("score", 1)]
        widths += [(f"episode.{f}", int(np.prod(getattr(episode, f).shape, dtype=np.int64))) for f in self.episode_fields]
        out, i = {}, 0
        for n, w in widths:
            out[n] = slice(i, i + w)
            i += w
        return out

    def compile(self) -> None:
        """Trace and compile reset/step once (the first session of a task waits for this)."""
        with self._lock:
            if self._compiled:
                return
            state, step_key, _ = self.reset_fn(0, self.packed_params)
            action = self.parse_action(self.env.default_action().to_dict())  # the clients' path, so no retrace later
            _, host = self.step_fn(step_key, 0, state, action, self.packed_params)
            host.block_until_ready()
            self.unpack_state(state)
            self._compiled = True

    def parse_action(self, fields: Mapping[str, Any]) -> gymjax.ServeAction:
        """A client's action (JSON fields) as this task's typed ServeAction.

        Validated once, by :attr:`action_model` (types, each knob's range, this env's ``n_slots``);
        raises ``pydantic.ValidationError`` naming the field (:func:`server.models.knob_errors` adds
        range and unit). The ServeAction holds NumPy int32 / float32 scalars, the dtypes the jitted step
        is compiled for."""
        model = self.action_model.model_validate(fields)
        values = tuple(getattr(model, n) for n in KNOB_NAMES)
        action = self._action_cache.get(values)
        if action is None:
            # ServeAction's constructor re-checks concrete values (~0.2 ms): clients repeat actions, so keep them
            action = gymjax.ServeAction(*(dt(v) for dt, v in zip(self.knob_dtypes, values, strict=True)))
            with self._action_lock:
                if len(self._action_cache) >= 4096:
                    self._action_cache.clear()
                self._action_cache[values] = action
        return action

    def params_for(self, overrides: dict[str, Any]) -> tuple[gymjax.EnvParams, tuple]:
        """(params, packed params) of this task with a client's params-only overrides (cached, bounded).

        A new set of overrides builds the task's params on the host (checked as ``gymjax.make`` checks
        them, ~1 ms) and puts them on the device packed (two buffers): call it off the event loop
        (:meth:`Episode.prepare` is)."""
        if not overrides:
            return self.params, self.packed_params
        check_overrides(overrides)
        key = tuple(sorted(overrides.items()))
        with self._lock:
            if key in self._params_cache:
                self._params_cache.move_to_end(key)
                return self._params_cache[key]
        try:
            spec = checked_spec(self.name, **{**self.base_overrides, **overrides})
            params = host_params(spec)
        except InvalidTaskField as e:  # gymjax.make's check of every field: type and physical range
            raise SessionError(422, f"overrides.{e}", field=f"overrides.{e.field}", allowed=e.allowed) from e
        except (ValueError, TypeError, KeyError) as e:
            raise SessionError(422, f"invalid overrides: {e}", field="overrides") from e
        if spec.config != self.cfg or jax.tree.structure(params) != jax.tree.structure(self.params):  # would recompile
            raise SessionError(422, f"overrides {excerpt(overrides)} change the env's static sizes", field="overrides")
        entry = (params, jax.device_put(self.params_packer.pack_host(params)))
        with self._lock:
            self._params_cache[key] = entry
            while len(self._params_cache) > 64:
                self._params_cache.popitem(last=False)
        return entry

    def run_baseline(self, policy_name: str, overrides: dict[str, Any], seed: int, n_seeds: int) -> tuple[list[float], bool]:
        """Scores of baseline ``policy_name`` on ``n_seeds`` episodes (keys ``split(PRNGKey(seed),
        n_seeds)``, as ``gymjax.evaluate``), and whether its compiled evaluator was reused.

        The evaluator (``gymjax.evaluation.make_evaluator``: the one the evaluation code uses) is
        cached per (policy, overrides, n_seeds), at most :data:`EVALUATOR_CACHE` of them, so a repeated
        request is one run of a compiled program, not a retrace. Bounded by the caller (seeds x steps)."""
        params, _ = self.params_for(overrides)
        key = (policy_name, tuple(sorted(overrides.items())), n_seeds)
        with self._lock:
            fn = self._evaluators.get(key)
            if fn is not None:
                self._evaluators.move_to_end(key)
        cached = fn is not None
        if fn is None:
            try:  # a policy closes over the params it was built for (e.g. the GPU's FP8 support)
                policy = gymjax.baselines.POLICIES[policy_name](self.env, params)
            except (KeyError, ValueError) as e:  # e.g. no tuned best-constant / oracle for this task
                raise SessionError(422, f"policy {policy_name!r} is not available on task {self.name!r}: {e}", field="policy") from e
            fn = make_evaluator(self.env, [policy], int(params.horizon_steps))
            with self._lock:
                self._evaluators[key] = fn
                while len(self._evaluators) > EVALUATOR_CACHE:
                    self._evaluators.popitem(last=False)
        out = jax.device_get(fn(params, jax.random.split(jax.random.PRNGKey(seed), n_seeds)))
        return [float(x) for x in np.asarray(out["score"][0])], cached

    def policy_fn(self, policy_name: str, overrides: dict[str, Any], params: gymjax.EnvParams):
        """The jitted ``(key, obs, packed_state) -> ServeAction`` of baseline ``policy_name`` built for
        ``params`` (an episode's: a policy closes over the params it was built for), cached per
        (policy, overrides), at most :data:`POLICY_CACHE`. Its first call compiles: call it off the loop."""
        key = (policy_name, tuple(sorted(overrides.items())))
        with self._lock:
            fn = self._policies.get(key)
            if fn is not None:
                self._policies.move_to_end(key)
                return fn
        try:
            policy = gymjax.baselines.POLICIES[policy_name](self.env, params)
        except (KeyError, ValueError) as e:  # e.g. no tuned best-constant / oracle for this task
            raise SessionError(422, f"policy {policy_name!r} is not available on task {self.name!r}: {e}", field="policy") from e
        env, sp = self.env, self.state_packer

        def act(key, obs, packed_state) -> gymjax.ServeAction:
            a = policy(key, obs, sp.unpack(packed_state))
            return a if isinstance(a, gymjax.ServeAction) else env.decode_action(a)

        fn = jax.jit(act)
        with self._lock:
            self._policies[key] = fn
            while len(self._policies) > POLICY_CACHE:
                self._policies.popitem(last=False)
        return fn

    def describe(self) -> dict[str, Any]:
        """The catalogue entry of this task (``GET /tasks``)."""
        s = self.spec
        return {
            "name": self.name,
            "description": s.description,
            "model": s.model,
            "gpu": s.gpu,
            "n_gpus": s.n_gpus,
            "tensor_parallel": s.tensor_parallel,
            "horizon_steps": int(self.params.horizon_steps),
            "dt_s": float(s.dt_s),
            "n_slots": self.cfg.n_slots,
            "tenants": [
                {"name": t.name, "priority": t.priority, "slo_ttft_s": t.slo_ttft_s, "slo_tpot_s": t.slo_tpot_s} for t in s.tenants
            ],
            "obs_dim": self.env.obs_dim,
            "grader": "gymjax.grade(params, episode_stats): episode score in [0, 1]",
            "action_schema": self.action_model.model_json_schema(),
            "knob_levels": {k.name: list(k.levels) for k in self.env.knobs},  # the learner's levels of each knob
            "overrides_allowed": list(CLIENT_OVERRIDES),
        }


_WORKER_RUNTIMES: dict[tuple, TaskRuntime] = {}


def baseline_in_worker(
    task: str, base_overrides: dict[str, Any], policy: str, overrides: dict[str, Any], seed: int, n_seeds: int
) -> tuple[list[float], bool]:
    """:meth:`TaskRuntime.run_baseline` in the /baseline worker process, which keeps its own task
    runtimes (and so its compiled evaluators) between requests."""
    key = (task, tuple(sorted(base_overrides.items())))
    rt = _WORKER_RUNTIMES.get(key)
    if rt is None:
        rt = _WORKER_RUNTIMES[key] = TaskRuntime(task, base_overrides)
    return rt.run_baseline(policy, overrides, seed, n_seeds)


def baseline_action(inputs: tuple) -> dict[str, Any]:
    """The ServeAction (JSON knobs) baseline ``policy_name`` takes at an episode's current step, from
    :meth:`Episode.policy_inputs`; its key is ``fold_in(fold_in(step_key, step), POLICY_KEY_SALT)``,
    so the same seed gives the same actions. May compile (first use per task, policy and overrides):
    run it off the event loop. Nothing of the episode changes."""
    rt, policy_name, overrides, params, step_key, step, obs, state = inputs
    fn = rt.policy_fn(policy_name, overrides, params)
    key = jax.random.fold_in(jax.random.fold_in(step_key, step), POLICY_KEY_SALT)
    action = jax.device_get(fn(key, jnp.asarray(obs, jnp.float32), state))
    out = gymjax.ServeAction(*(np.asarray(getattr(action, k)).item() for k in KNOB_NAMES)).to_dict()
    out["kv_budget_fraction"] = float(f"{out['kv_budget_fraction']:.7g}")  # the float32 level as written (0.9, not 0.8999999761581421)
    return out


class RuntimeRegistry:
    """Task name -> :class:`TaskRuntime`, built lazily and compiled once per process; and the
    server's own seed stream (:meth:`draw_seed`)."""

    def __init__(self, tasks: tuple[str, ...] | None = None, base_overrides: dict[str, Any] | None = None, eval_seed: int | None = None):
        self._wanted = tasks
        self.base_overrides = served_task_overrides() if base_overrides is None else dict(base_overrides)
        self._runtimes: dict[str, TaskRuntime] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._names: tuple[str, ...] | None = None
        if eval_seed is None and os.environ.get("INFERENCEGYM_EVAL_SEED"):
            eval_seed = int(os.environ["INFERENCEGYM_EVAL_SEED"])
        self._seeds = np.random.default_rng(eval_seed)  # None: OS entropy, so no client can predict it
        self._seed_lock = threading.Lock()

    def draw_seed(self) -> int:
        """The next seed of the server's own stream (a reset that names no seed gets one). Seeded by
        ``INFERENCEGYM_EVAL_SEED`` for a reproducible evaluation run, else by OS entropy."""
        with self._seed_lock:
            return int(self._seeds.integers(0, SEED_MAX, endpoint=True))

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks this server serves: the wanted ones (``INFERENCEGYM_TASKS``) or every registered
        task that builds without extra arguments (``trace`` needs a CSV path, so it is left out)."""
        if self._names is None:
            wanted = self._wanted or tuple(gymjax.registered_envs())
            names = []
            for n in wanted:
                try:
                    self._build(n)
                    names.append(n)
                except SessionError as e:
                    log.warning("task %s not served: %s", n, e.message)
            self._names = tuple(names)
        return self._names

    def get(self, name: str | None, compile: bool = True) -> TaskRuntime:
        """The runtime of served task ``name`` (default: the first), compiled unless ``compile`` is
        False; 422 for anything that is not a served task's name."""
        names = self.task_names
        if name is None:
            if not names:
                raise SessionError(503, "no task is served", field="task")
            name = names[0]
        if not isinstance(name, str):
            raise SessionError(422, f"task must be a task name (a string), got {excerpt(name)}", field="task", valid=list(names))
        if name not in names:
            raise SessionError(422, f"unknown task {excerpt(name)}; valid tasks: {list(names)}", field="task", valid=list(names))
        rt = self._build(name)
        if compile:
            rt.compile()
        return rt

    def _build(self, name: str) -> TaskRuntime:
        with self._lock:
            rt = self._runtimes.get(name)
            if rt is not None:
                return rt
            if name not in gymjax.registered_envs():
                valid = list(gymjax.registered_envs())
                raise SessionError(422, f"unknown task {excerpt(name)}; valid tasks: {valid}", field="task", valid=valid)
            if name in self._errors:
                raise SessionError(422, f"task {name!r} is not served: {self._errors[name]}", field="task")
            try:
                rt = TaskRuntime(name, self.base_overrides)
            except Exception as e:  # noqa: BLE001 - a task that cannot be built is reported, not fatal
                self._errors[name] = f"{type(e).__name__}: {e}"
                raise SessionError(422, f"task {name!r} is not served: {self._errors[name]}", field="task") from e
            self._runtimes[name] = rt
            return rt

    def is_compiled(self, name: str | None) -> bool:
        rt = self._runtimes.get(name if name is not None else (self.task_names[0] if self.task_names else ""))
        return rt is not None and rt._compiled


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What an episode's start needs, made by :meth:`Episode.prepare` (off the event loop: it may
    compile a task or build one with new overrides)."""

    rt: TaskRuntime
    params: Any
    packed_params: Any
    seed: int
    seed_from_server: bool  # the server drew the seed (the client named none)
    overrides: dict[str, Any]
    as_published: bool  # the params are the task's own (no overrides, or overrides that change nothing)


class Episode:
    """One session's episode over a shared :class:`TaskRuntime`. Not thread-safe: the server runs
    a session's calls one at a time, on the event loop (:meth:`prepare`, which touches no episode
    state, is the part that may run in a worker thread)."""

    def __init__(self, registry: RuntimeRegistry):
        self.registry = registry
        self.rt: TaskRuntime | None = None
        self.params = None  # EnvParams of the episode (pytree), and packed for the jitted calls
        self.packed_params = None
        self.state = None  # packed EnvState (TreePacker buffers); env_state() unpacks it
        self.step_key = None
        self.task: str | None = None
        self.seed: int | None = None
        self.seed_from_server = False
        self.as_published = False
        self.overrides: dict[str, Any] = {}
        self.episode_id: str | None = None
        self.step_count = 0
        self.horizon = 0
        self.done = False
        self.reward_sum = 0.0
        self.action_in_force: dict[str, float] = {}
        self.counters: dict[str, int] = {}
        self.final_episode: dict[str, Any] | None = None
        self.score: float | None = None
        self.last_obs: list[float] | None = None  # the flat observation the client saw last

    def policy_inputs(self, policy_name: str) -> tuple:
        """What :func:`baseline_action` needs, taken now (on the event loop, between this session's calls)."""
        if self.rt is None:
            raise SessionError(409, "no episode: reset first")
        if self.done:
            raise SessionError(409, f"the episode ended at step {self.step_count}; reset to start another")
        return self.rt, policy_name, dict(self.overrides), self.params, self.step_key, self.step_count, self.last_obs, self.state

    # --------------------------------------------------------------------------------------------
    def prepare(self, task: str | None = None, seed: int | None = None, overrides: dict | None = None) -> Prepared:
        """Check a reset's arguments and build what it needs (compile the task, build its params for
        ``overrides``); touches no episode state, so it may run in a worker thread."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
            raise SessionError(422, f"seed must be an integer in [0, {SEED_MAX}], got {excerpt(seed)}", field="seed", range=[0, SEED_MAX])
        overrides = {} if overrides is None else overrides
        check_overrides(overrides)
        overrides = dict(overrides)
        rt = self.registry.get(task)
        params, packed_params = rt.params_for(overrides)
        drawn = seed is None
        published = params is rt.params or _same_tree(params, rt.params)
        return Prepared(rt, params, packed_params, self.registry.draw_seed() if drawn else seed, drawn, overrides, published)

    def start(self, prep: Prepared, episode_id: str | None = None) -> dict[str, Any]:
        """Start the episode ``prep`` describes (one jitted reset); returns the observation payload."""
        if episode_id is not None and (not isinstance(episode_id, str) or len(episode_id) > 255):
            raise SessionError(422, f"episode_id must be a string of at most 255 characters, got {excerpt(episode_id)}", field="episode_id")
        rt = prep.rt
        state, step_key, packed = rt.reset_fn(prep.seed, prep.packed_params)
        host = np.asarray(packed).tolist()
        self.rt, self.params, self.packed_params, self.state, self.step_key = rt, prep.params, prep.packed_params, state, step_key
        self.task, self.seed, self.seed_from_server, self.overrides = rt.name, prep.seed, prep.seed_from_server, dict(prep.overrides)
        self.as_published = prep.as_published
        self.episode_id = episode_id
        self.step_count, self.done, self.reward_sum, self.score, self.final_episode = 0, False, 0.0, None, None
        self.horizon = int(prep.params.horizon_steps)
        self.action_in_force = rt.env.default_action().to_dict()
        self.counters = {c: 0 for c in COUNTER_NAMES}
        self.last_obs = host[rt.layout["obs"]]
        return self._payload(host, reward=None)

    def reset(
        self, task: str | None = None, seed: int | None = None, overrides: dict | None = None, episode_id: str | None = None
    ) -> dict[str, Any]:
        """Start an episode (:meth:`prepare` then :meth:`start`, in this thread); returns the
        observation payload (ServeObservationModel fields). No seed: the server draws one."""
        return self.start(self.prepare(task, seed, overrides), episode_id)

    def validate(self, fields: Mapping[str, Any]) -> gymjax.ServeAction:
        """This episode's task's ServeAction of a client's action fields (:meth:`TaskRuntime.parse_action`:
        raises ``pydantic.ValidationError``)."""
        if self.rt is None:
            raise SessionError(409, "no episode: reset first")
        return self.rt.parse_action(fields)

    def env_state(self) -> gymjax.EnvState:
        """The episode's current :class:`gymjax.EnvState` (for in-process policies)."""
        return self.rt.unpack_state(self.state)

    def step(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one action (the six knobs as JSON fields, validated once by :meth:`validate`);
        returns the observation payload."""
        action = self.validate(fields)
        if self.done:
            raise SessionError(409, f"the episode ended at step {self.step_count}; reset to start another")
        rt = self.rt
        self.state, packed = rt.step_fn(self.step_key, self.step_count, self.state, action, self.packed_params)
        host = np.asarray(packed).tolist()
        lay = rt.layout
        self.last_obs = host[lay["obs"]]
        reward = host[lay["reward"].start]
        self.step_count += 1
        self.reward_sum += reward
        self.action_in_force = action.to_dict()  # what the engine runs: validated, so env.step's clip kept it as is
        self.counters = {c: int(v) for c, v in zip(COUNTER_NAMES, host[lay["counters"]], strict=True)}
        if host[lay["truncated"].start] > 0.5:
            self.done = True
            self.final_episode = {f: host[lay[f"episode.{f}"]] for f in rt.episode_fields}
            self.score = host[lay["score"].start]
        return self._payload(host, reward=reward)

    def _payload(self, host: list[float], reward: float | None) -> dict[str, Any]:
        lay = self.rt.layout
        out: dict[str, Any] = {n: (host[lay[n]] if n in OBS_VECTOR_FIELDS else host[lay[n].start]) for n in OBS_FIELDS}
        out.update(
            obs=host[lay["obs"]],
            task=self.task,
            step=self.step_count,
            horizon_steps=self.horizon,
            truncated=self.done,
            action_in_force=dict(self.action_in_force),
            counters=dict(self.counters),
            score=self.score,
            done=self.done,
            reward=reward,
        )
        return out

    # --------------------------------------------------------------------------------------------
    def state_dict(self, session_id: str | None = None) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "step_count": self.step_count,
            "session_id": session_id,
            "task": self.task,
            "seed": self.seed,
            "overrides": dict(self.overrides),
            "horizon_steps": self.horizon,
            "done": self.done,
            "reward_sum": self.reward_sum,
            "action_in_force": dict(self.action_in_force),
            "counters": dict(self.counters),
            "score": self.score,
        }

    def grade(self) -> dict[str, Any]:
        """The grader's verdict on this session's own finished episode.

        ``score`` is ``gymjax.grade`` of the episode against the task's own horizon (an episode
        shorter than it scores as incomplete: F = steps / the task's horizon). It is ``official``
        only for the task as published: no overrides that change its params, a seed the server drew
        (the client named none) and the task's full horizon; otherwise ``official_score`` is null and
        ``unofficial_reasons`` says why."""
        if self.rt is None:
            raise SessionError(409, "no episode: reset and step to the horizon first")
        if not self.done:
            raise SessionError(409, f"the episode is not finished: step {self.step_count} of {self.horizon}")
        episode = {}
        for f, v in self.final_episode.items():
            is_int, is_scalar = self.rt.episode_kinds[f]
            v = [int(x) for x in v] if is_int else v
            episode[f] = v[0] if is_scalar else v
        task_horizon = int(self.rt.params.horizon_steps)
        reasons = []
        if not self.as_published:
            reasons.append(f"overrides {sorted(self.overrides)}: not the task as published")
        if not self.seed_from_server:
            reasons.append("the client chose the seed (official episodes use a seed the server draws)")
        complete = self.step_count >= task_horizon
        if not complete:
            reasons.append(f"incomplete: {self.step_count} of the task's {task_horizon} steps")
        official = not reasons
        return {
            "task": self.task,
            "seed": self.seed,
            "score": self.score,
            "official": official,
            "official_score": self.score if official else None,
            "unofficial_reasons": reasons,
            "complete": complete,
            "task_horizon_steps": task_horizon,
            "steps": self.step_count,
            "reward_sum": self.reward_sum,
            "episode": episode,
        }


def _same_tree(a: Any, b: Any) -> bool:
    """Whether two params pytrees hold the same values (host comparison, leaf by leaf)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))
