"""A reference simulator of one vLLM-style serving engine: plain Python, one event per engine
iteration, exact per-request times. It is the ground truth the fast JAX engine
(:mod:`gymjax.engine`) is held to (``python -m benchmarks.fidelity``), and a tool for small traces::

    from gymjax import reference
    env, params = gymjax.make("static", n_slots=128)
    reqs = reference.poisson_requests(rate_rps=4.0, duration_s=60.0, prompt_tokens=512, output_tokens=256, seed=0)
    res = reference.simulate(reqs, env.cfg, params, env.default_action())
    res.summary["ttft_p50_s"], res.requests["finish_s"]

It takes the same :class:`~gymjax.types.EnvParams` and :class:`~gymjax.types.ServeAction` as the
fast engine and reads the same deployment plan (:func:`gymjax.physics.deployment.plan`: KV pool,
batch cap, token budget, quantization tier, speculation depth). Every iteration's duration is
:func:`gymjax.physics.roofline.iter_time` (jitted once per run and called with the iteration's
exact token count, attention FLOPs and KV bytes), plus
:func:`gymjax.physics.speculation.draft_time` when it speculates: the physics is not re-implemented
here, only the scheduler.

**The scheduler (vLLM's real rules).** One replica runs iterations back to back while it has work;
each iteration is scheduled at its start from the requests that have arrived by then (a request
arriving mid-iteration waits for the iteration in flight), lasts ``iter_time``, and its outcomes
(tokens, first tokens, finishes) happen at its end. Two modes:

- ``"chunked"`` (vLLM V1, chunked prefill; every ``colocated-chunk-*`` level of
  ``prefill_decode_split``): a token budget of ``max_num_batched_tokens`` = the plan's chunk per
  iteration. Running requests are served first, in admission order: a decoding request takes
  ``1 + k`` tokens (``k`` = speculation depth), a request still prefilling takes its next chunk
  (what the budget leaves). Then, if nothing was preempted, waiting requests are admitted FCFS
  (priority-first with priority routing) while the budget, the batch cap (``max_num_seqs``) and
  the KV blocks allow; the last one admitted may get a partial chunk. Head-of-line blocking: the
  first waiting request that does not fit stops admission.
- ``"prefill_first"`` (vLLM V0 without chunked prefill): an iteration either prefills whole prompts
  only (scheduled in preference whenever the head of the queue fits the budget, the batch cap and
  the free KV blocks; every decode stalls meanwhile) or decodes every running request. A prompt
  longer than the token budget can never be scheduled and is rejected (vLLM: "prompt too long").
  Chosen by ``scheduler="prefill_first"``, or by a ``prefill_decode_split`` level whose
  :class:`~gymjax.presets.PDMode` says it does not chunk (``chunked=False`` or a name with
  "prefill-first"), once the fast engine has one.

**KV memory** is paged in 16-token blocks (:data:`gymjax.presets.KV_BLOCK_TOKENS`) out of the plan's
pool (``pool_blocks``, split evenly over replicas). A request holds ``ceil(tokens in KV / 16)``
blocks, allocated before each iteration for the tokens it computes: chunked mode allocates a
prefill chunk by chunk (V1), prefill-first the whole prompt at admission (V0). When a running
request cannot get its blocks, the newest running request (with priority routing: the lowest
priority, then the newest) is preempted by recompute: its KV is freed, it goes back to the front of
the queue, and on readmission it re-prefills its prompt plus the tokens it had generated (counted in
``recomputed_tokens``); a request may preempt itself, and no request is admitted in an iteration
that preempted. A request whose prompt + output could never fit the pool is rejected on arrival.

**Tokens.** A prefill's first token is emitted at the end of the iteration that completes it (a
recompute's completion emits the next token, not a new first token). A decode iteration emits
``E(k)`` tokens per sequence (:func:`gymjax.physics.speculation.tokens_per_verification`, the tenant's
acceptance): ``spec_sampling="expected"`` (default, deterministic) carries the fraction over so that
``k = 0`` emits exactly one token and ``E = 2.4`` emits 2, 2, 3, 2, 3 ...; ``"sample"`` draws the
accepted prefix (independent tokens with probability alpha) from ``seed``. Inter-token latency is per
token: an iteration that emits ``m`` tokens of a request after a gap ``g`` since its previous token
records ``m`` gaps of ``g / m``. TPOT = (finish - first token) / (output - 1).

**Iteration time.** ``n_tokens`` = all scheduled tokens; attention FLOPs are summed per request:
:func:`~gymjax.physics.roofline.decode_attn_flops` of each decode's ``1 + k`` queries over its
cached tokens and :func:`~gymjax.physics.roofline.prefill_attn_flops` of each prefill chunk
``n_i`` over its own ``k_i`` cached tokens (``sum n_i (k_i + n_i/2)``, not one causal chunk of all
prompts); KV bytes read = (decode contexts + prefill cached tokens) x the tier's KV bytes per
token; ``share`` = one replica (``tensor_parallel / n_gpus``). With speculation, an iteration that
decodes also pays ``k`` draft steps of a plain decode step of its decoding sequences.

**Replicas.** ``n_gpus / tensor_parallel`` replicas, each with its own queue, batch cap
(``batch_cap // replicas``, the fast engine's cap is cluster-wide), token budget and KV pool; an
arriving request goes to the replica with the fewest running + waiting requests (ties: the lowest
index).

**Not modelled** (some are fast-engine knobs without a vLLM meaning, some vLLM features the fast
engine lacks): disaggregated prefill/decode (``disaggregated-*`` levels raise); prefix caching,
CUDA-graph batch padding, the scheduler's CPU time and async scheduling (all inside ``t_fixed_s``),
V0's 1 % free-block watermark, ``max_model_len``, multi-step scheduling; quantization reloads and
drains (the action is fixed for the run); the fast engine's prefill ring, admission window, queue
capacity and per-tenant queues (the reference has one unbounded queue per replica). Client
timeouts are off unless ``max_wait_s`` is given: then a request still waiting for its first
admission after ``max_wait_s`` is dropped (the fast engine also drops preempted requests that old).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from gymjax.physics import deployment, roofline, speculation
from gymjax.presets import KV_BLOCK_TOKENS, PD_MODES
from gymjax.traces import Trace
from gymjax.types import EnvConfig, EnvParams, ServeAction

SCHEDULERS = ("chunked", "prefill_first")
SPEC_SAMPLING = ("expected", "sample")
EPS = 1e-9  # tolerance of the carried fraction of speculative tokens
SATURATION_QUEUE_SHARE = 0.02  # saturated: more than this share of the requests queued at the last arrival ...
SATURATION_MIN_QUEUE = 10  # ... and more than this many

# request status codes (``ReferenceResult.requests["status"]``)
FINISHED, REJECTED, TIMED_OUT, UNFINISHED = 0, 1, 2, 3
STATUS_NAMES = ("finished", "rejected", "timed_out", "unfinished")


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Requests:
    """A workload: arrays [N] sorted by arrival. ``arrival_s`` float64 s, ``prompt_tokens`` and
    ``output_tokens`` int64 >= 1, ``tenant`` int32 row of the params' tenant tables."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    tenant: np.ndarray

    def __post_init__(self):
        n = self.arrival_s.shape[0]
        for name in ("prompt_tokens", "output_tokens", "tenant"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Requests.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if n and not np.all(np.isfinite(self.arrival_s)):
            raise ValueError("Requests.arrival_s must be finite")
        if n > 1 and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("Requests.arrival_s must be sorted (non-decreasing)")
        if np.any(self.prompt_tokens < 1) or np.any(self.output_tokens < 1):
            raise ValueError("prompt and output token counts must be >= 1")
        if np.any(self.tenant < 0):
            raise ValueError("tenant ids must be >= 0")

    @classmethod
    def from_arrays(cls, arrival_s, prompt_tokens, output_tokens, tenant=None) -> Requests:
        """Requests from array-likes (sorted by arrival here, stably); ``tenant`` defaults to 0."""
        a = np.asarray(arrival_s, np.float64).reshape(-1)
        p = np.broadcast_to(np.asarray(prompt_tokens, np.int64), a.shape)
        o = np.broadcast_to(np.asarray(output_tokens, np.int64), a.shape)
        t = np.zeros(a.shape, np.int32) if tenant is None else np.broadcast_to(np.asarray(tenant, np.int32), a.shape)
        order = np.argsort(a, kind="stable")
        return cls(a[order].copy(), p[order].copy(), o[order].copy(), t[order].copy())

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])


def poisson_requests(
    rate_rps: float,
    duration_s: float,
    prompt_tokens: int = 512,
    output_tokens: int = 256,
    seed: int = 0,
    tenant: int = 0,
    start_s: float = 0.0,
) -> Requests:
    """A Poisson process of ``rate_rps`` requests/s over ``[start_s, start_s + duration_s)`` with
    fixed lengths (the fidelity benchmark's 512 in / 256 out), from ``numpy.random.default_rng(seed)``."""
    if not rate_rps > 0 or not duration_s > 0:
        raise ValueError(f"rate_rps and duration_s must be > 0, got {rate_rps}, {duration_s}")
    rng = np.random.default_rng(seed)
    n_draw = int(rate_rps * duration_s + 10 * math.sqrt(rate_rps * duration_s) + 10)
    t = start_s + np.cumsum(rng.exponential(1.0 / rate_rps, n_draw))
    while t[-1] < start_s + duration_s:  # practically never: extend the draw
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate_rps, n_draw))])
    t = t[t < start_s + duration_s]
    return Requests.from_arrays(t, prompt_tokens, output_tokens, tenant)


def requests_from_trace(trace: Trace, speedup: float = 1.0, origin_s: float | None = None) -> Requests:
    """The requests of a :class:`~gymjax.traces.Trace` (:func:`gymjax.traces.load_trace`), time
    measured from ``origin_s`` (default: the first arrival, as :func:`gymjax.traces.bin_trace` does)
    and compressed by ``speedup``."""
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    origin = float(trace.arrival_s[0]) if origin_s is None else float(origin_s)
    return Requests.from_arrays((trace.arrival_s - origin) / speedup, trace.prompt_tokens, trace.output_tokens, trace.tenant)


def as_requests(requests) -> Requests:
    """:class:`Requests` from Requests, a :class:`~gymjax.traces.Trace` (:func:`requests_from_trace`),
    or a sequence of ``(arrival_s, prompt_tokens, output_tokens[, tenant])`` rows."""
    if isinstance(requests, Requests):
        return requests
    if isinstance(requests, Trace):
        return requests_from_trace(requests)
    if isinstance(requests, (str, bytes, dict)) or not hasattr(requests, "__iter__"):
        raise TypeError(f"requests must be Requests, a Trace or (arrival_s, prompt, output[, tenant]) rows, got {type(requests).__name__}")
    rows = [tuple(r) for r in requests]
    if not rows:
        return Requests.from_arrays([], [], [])
    if any(len(r) not in (3, 4) or len(r) != len(rows[0]) for r in rows):
        raise ValueError("request rows must all be (arrival_s, prompt_tokens, output_tokens) or all add a tenant")
    return Requests.from_arrays(*zip(*rows, strict=True))


# --------------------------------------------------------------------------------------------------
# Engine configuration from the deployment plan
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """The rules of one run, derived from the plan (:func:`engine_spec`). Per replica unless noted."""

    scheduler: str  # "chunked" | "prefill_first"
    n_replicas: int
    max_num_seqs: int  # batch cap per replica
    max_num_batched_tokens: int  # token budget per iteration
    pool_blocks: int  # KV blocks per replica
    spec_k: int  # draft tokens per verification
    tokens_per_verification: np.ndarray  # [T] E(k) of each tenant
    acceptance: np.ndarray  # [T] alpha of each tenant
    priority_mode: bool
    priority: np.ndarray  # [T] tenant priority (higher = more important)
    kv_bytes_per_token: float
    serving_ok: bool


def pd_mode_scheduler(pd_index: int) -> str:
    """The reference scheduler of a ``prefill_decode_split`` level: ``"chunked"`` for the colocated
    chunked-prefill modes, ``"prefill_first"`` for a mode that does not chunk; disaggregated modes
    raise (not modelled)."""
    mode = PD_MODES[pd_index]
    if mode.disaggregated:
        raise NotImplementedError(
            f"prefill_decode_split={pd_index} ({mode.name}): disaggregated prefill/decode is not modelled by the reference simulator"
        )
    if getattr(mode, "chunked", True) is False or "prefill-first" in mode.name:
        return "prefill_first"
    return "chunked"


def engine_spec(
    cfg: EnvConfig, params: EnvParams, action: ServeAction, scheduler: str | None = None, pool_blocks: int | None = None
) -> tuple[EngineSpec, Any]:
    """The reference engine's rules for ``action`` on ``params`` and the fast engine's
    :class:`~gymjax.types.Plan` they come from. ``scheduler`` overrides the mode the
    ``prefill_decode_split`` level implies; ``pool_blocks`` overrides the cluster's KV pool (blocks)."""
    plan = deployment.plan(cfg, params, action)
    pd = int(np.asarray(action.prefill_decode_split))
    sched = pd_mode_scheduler(pd) if scheduler is None else scheduler
    if sched not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    n_gpus, tp = float(params.n_gpus), float(params.tensor_parallel)
    replicas = n_gpus / tp
    if replicas < 1 or abs(replicas - round(replicas)) > 1e-6:
        raise ValueError(f"n_gpus / tensor_parallel = {n_gpus:g} / {tp:g} is not a whole number of replicas")
    R = int(round(replicas))
    pool = float(plan.pool_blocks) if pool_blocks is None else float(pool_blocks)
    alpha = np.asarray(speculation.acceptance(params), np.float64)
    return EngineSpec(
        scheduler=sched,
        n_replicas=R,
        max_num_seqs=max(int(plan.batch_cap) // R, 1),
        max_num_batched_tokens=int(plan.chunk),
        pool_blocks=int(pool // R),
        spec_k=int(round(float(plan.spec_k))),
        tokens_per_verification=np.asarray(plan.tok_per_iter, np.float64),
        acceptance=alpha,
        priority_mode=bool(plan.priority_mode),
        priority=np.asarray(params.priority, np.float64),
        kv_bytes_per_token=float(plan.kv_bytes_per_token),
        serving_ok=bool(plan.serving_ok),
    ), plan


class IterationClock:
    """Seconds of one replica's iteration: :func:`~gymjax.physics.roofline.iter_time` (jitted once,
    closed over the params and the plan) plus the speculation drafts. Attention FLOPs come from the
    roofline's own per-chunk functions evaluated on NumPy copies of the params."""

    def __init__(self, params: EnvParams, plan, share: float):
        self.np_params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
        self.kv_bytes_per_token = float(plan.kv_bytes_per_token)
        k = plan.spec_k

        def seconds(n_tokens, attn_flops, kv_read_bytes, n_decode, ctx_decode):
            t = roofline.iter_time(params, plan, n_tokens, attn_flops, kv_read_bytes, share)
            t_step = speculation.target_step_time(params, plan, n_decode, ctx_decode, share)
            return t + jax.numpy.where(n_decode > 0, speculation.draft_time(params, k, t_step), 0.0)

        self._seconds = jax.jit(seconds)

    def decode_flops(self, n_queries: int, ctx_tokens: float) -> float:
        return float(roofline.decode_attn_flops(self.np_params, float(n_queries), float(ctx_tokens)))

    def prefill_flops(self, n: int, k: int) -> float:
        return float(roofline.prefill_attn_flops(self.np_params, float(n), float(k)))

    def __call__(self, n_tokens: float, attn_flops: float, kv_tokens: float, n_decode: int, ctx_decode: float) -> float:
        return float(
            self._seconds(
                float(n_tokens), float(attn_flops), float(kv_tokens) * self.kv_bytes_per_token, float(n_decode), float(ctx_decode)
            )
        )


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


class _Req:
    __slots__ = (
        "idx",
        "arrival",
        "prompt",
        "output",
        "tenant",
        "prio",
        "generated",
        "computed",
        "target",
        "blocks",
        "first",
        "finish",
        "last_token",
        "credit",
        "preemptions",
        "admitted",
        "replica",
        "status",
    )

    def __init__(self, idx, arrival, prompt, output, tenant, prio):
        self.idx, self.arrival, self.prompt, self.output, self.tenant, self.prio = idx, arrival, prompt, output, tenant, prio
        self.generated = 0  # output tokens emitted
        self.computed = 0  # tokens whose KV is cached
        self.target = prompt  # tokens to (re)prefill: prompt + tokens generated before a preemption
        self.blocks = 0
        self.first = math.nan
        self.finish = math.nan
        self.last_token = math.nan
        self.credit = 0.0  # carried fraction of speculative tokens ("expected" sampling)
        self.preemptions = 0
        self.admitted = False  # admitted at least once (client timeouts spare it afterwards)
        self.replica = -1
        self.status = UNFINISHED

    @property
    def prefilling(self) -> bool:
        return self.computed < self.target


def _blocks(tokens: int) -> int:
    return -(-tokens // KV_BLOCK_TOKENS)


class _Replica:
    """One engine replica: a waiting queue, a running batch (admission order), a KV pool."""

    def __init__(self, index: int, spec: EngineSpec, clock: IterationClock, sim: _Sim):
        self.index, self.spec, self.clock, self.sim = index, spec, clock, sim
        self.waiting: deque[_Req] = deque()
        self.running: list[_Req] = []
        self.used_blocks = 0
        self.busy = False  # an iteration is in flight (or its start is pending)
        self.batch: list[tuple[_Req, int, bool]] = []  # the iteration in flight: (request, tokens, prefill chunk)
        self.t_start = 0.0

    def load(self) -> int:
        return len(self.running) + len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # ---- queue --------------------------------------------------------------------------------
    def _head(self) -> _Req:
        if not self.spec.priority_mode:
            return self.waiting[0]
        return min(self.waiting, key=lambda r: (-r.prio, r.arrival, r.idx))

    def _pop(self, r: _Req) -> None:
        if self.waiting[0] is r:
            self.waiting.popleft()
        else:
            self.waiting.remove(r)

    def _drop_stale(self, t: float) -> None:
        max_wait = self.sim.max_wait_s
        if max_wait is None:
            return
        keep = deque()
        for r in self.waiting:
            if not r.admitted and t - r.arrival > max_wait:
                r.status = TIMED_OUT
                self.sim.n_timed_out += 1
            else:
                keep.append(r)
        self.waiting = keep

    # ---- KV -----------------------------------------------------------------------------------
    def _allocate(self, r: _Req, n_new: int) -> bool:
        need = _blocks(r.computed + n_new) - r.blocks
        if need <= 0:
            return True
        if need > self.spec.pool_blocks - self.used_blocks:
            return False
        r.blocks += need
        self.used_blocks += need
        return True

    def _free(self, r: _Req) -> None:
        self.used_blocks -= r.blocks
        r.blocks = 0

    def _victim(self) -> _Req:
        if not self.spec.priority_mode:
            return self.running[-1]
        return min(reversed(self.running), key=lambda r: (r.prio, -r.arrival, -r.idx))

    def _preempt(self, r: _Req) -> None:
        self.running.remove(r)
        self.sim.recomputed_tokens += r.computed
        self._free(r)
        r.computed = 0
        r.target = r.prompt + r.generated
        r.credit = 0.0
        r.preemptions += 1
        self.sim.n_preemptions += 1
        self.waiting.appendleft(r)

    # ---- scheduling ---------------------------------------------------------------------------
    def _schedule_running(self, budget: int) -> tuple[list[tuple[_Req, int, bool]], int, bool]:
        """Serve the running requests in admission order (V1): decodes take 1 + k tokens, prefills
        their next chunk; preempt the newest while one cannot get its blocks."""
        k = self.spec.spec_k
        batch: list[tuple[_Req, int, bool]] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            is_prefill = r.prefilling
            n_new = min(r.target - r.computed if is_prefill else 1 + k, budget)
            scheduled = True
            while not self._allocate(r, n_new):
                victim = self._victim()
                preempted = True
                vi = self.running.index(victim)
                if vi < i:  # priority mode may pick one already scheduled this iteration: unschedule it
                    j = next(j for j, b in enumerate(batch) if b[0] is victim)
                    budget += batch.pop(j)[1]
                    i -= 1
                self._preempt(victim)
                if victim is r:
                    scheduled = False
                    break
            if not scheduled:
                continue  # r left the running list: the next request is now at index i
            batch.append((r, n_new, is_prefill))
            budget -= n_new
            i += 1
        return batch, budget, preempted

    def _admit(self, batch, budget: int, whole_prompts: bool) -> int:
        """Admit waiting requests (FCFS, or priority-first) while budget, batch cap and KV allow."""
        spec = self.spec
        while self.waiting and budget > 0 and len(self.running) < spec.max_num_seqs:
            r = self._head()
            n_new = r.target
            if whole_prompts:
                if n_new > spec.max_num_batched_tokens:  # V0: longer than the budget, never schedulable
                    self._pop(r)
                    self.sim.reject(r)
                    continue
                if n_new > budget:
                    break
            else:
                n_new = min(n_new, budget)
            if not self._allocate(r, n_new):
                break
            self._pop(r)
            r.admitted = True
            self.running.append(r)
            batch.append((r, n_new, True))
            budget -= n_new
        return budget

    def schedule(self, t: float) -> list[tuple[_Req, int, bool]]:
        spec = self.spec
        self._drop_stale(t)
        budget = spec.max_num_batched_tokens
        if spec.scheduler == "chunked":
            batch, budget, preempted = self._schedule_running(budget)
            if not preempted:
                self._admit(batch, budget, whole_prompts=False)
            return batch
        # prefill-first (V0 without chunked prefill): whole prompts in preference, else all decodes
        batch: list[tuple[_Req, int, bool]] = []
        self._admit(batch, budget, whole_prompts=True)
        if batch:
            return batch
        batch, _, _ = self._schedule_running(budget)
        return batch

    # ---- one iteration -----------------------------------------------------------------------
    def start(self, t: float) -> float | None:
        """Schedule an iteration at ``t``; returns its end time, or None when there is nothing to run."""
        batch = self.schedule(t)
        if not batch:
            if self.running or self.waiting:
                raise RuntimeError("reference engine: requests waiting or running but nothing schedulable (a bug)")
            self.busy = False
            return None
        clock = self.clock
        n_tokens = 0
        attn = 0.0
        kv_tokens = 0.0
        n_dec = 0
        ctx_dec = 0.0
        dec_ctx_by_q: dict[int, float] = {}
        for r, n, is_prefill in batch:
            n_tokens += n
            kv_tokens += r.computed
            if is_prefill:
                attn += clock.prefill_flops(n, r.computed)
            else:
                n_dec += 1
                ctx_dec += r.computed
                dec_ctx_by_q[n] = dec_ctx_by_q.get(n, 0.0) + r.computed
        for q, ctx in dec_ctx_by_q.items():
            attn += clock.decode_flops(q, ctx)
        dt = clock(n_tokens, attn, kv_tokens, n_dec, ctx_dec)
        self.batch = batch
        self.t_start = t
        self.busy = True
        self.sim.log_iteration(self, t, t + dt, batch, n_dec)
        return t + dt

    def end(self, t: float) -> None:
        """Apply the iteration in flight at its end ``t``: prefill progress, tokens, finishes."""
        sim = self.sim
        for r, n, is_prefill in self.batch:
            if is_prefill:
                r.computed += n
                if r.computed < r.target:
                    continue
                m = 1  # the completed prefill samples one token
                if math.isnan(r.first):
                    r.first = t
                else:
                    sim.record_gap(t - r.last_token, 1)
            else:
                m = sim.decode_tokens(r, n - 1)
                r.computed += m
                sim.record_gap(t - r.last_token, m)
            r.generated += m
            r.last_token = t
            if r.generated >= r.output:
                r.finish = t
                r.status = FINISHED
                self.running.remove(r)
                self._free(r)
        self.batch = []
        self.busy = False


class _Sim:
    def __init__(self, spec: EngineSpec, clock: IterationClock, max_wait_s, spec_sampling: str, seed: int, record_iterations: bool):
        self.spec = spec
        self.max_wait_s = max_wait_s
        self.spec_sampling = spec_sampling
        self.rng = np.random.default_rng(seed)
        self.replicas = [_Replica(i, spec, clock, self) for i in range(spec.n_replicas)]
        self.itl: list[float] = []
        self.itl_w: list[int] = []
        self.n_preemptions = 0
        self.recomputed_tokens = 0
        self.n_rejected = 0
        self.n_timed_out = 0
        self.record_iterations = record_iterations
        self.iterations: list[tuple] = []
        self.n_iterations = 0
        self.n_iter_full = 0  # iterations whose running batch was at the cap
        self.max_waiting = 0
        self.waiting_at_last_arrival = 0
        self.max_used_blocks = 0

    def reject(self, r: _Req) -> None:
        r.status = REJECTED
        self.n_rejected += 1

    def record_gap(self, gap: float, m: int) -> None:
        self.itl.append(gap / m)
        self.itl_w.append(m)

    def decode_tokens(self, r: _Req, k: int) -> int:
        """Tokens one verification of ``k`` draft tokens emits for ``r`` (at most its remaining output)."""
        left = r.output - r.generated
        if k <= 0:
            return 1
        if self.spec_sampling == "expected":
            alpha = self.spec.acceptance[r.tenant]
            e = float(speculation.tokens_per_verification(alpha, float(k)))
            r.credit += e
            m = int(math.floor(r.credit + EPS))
            r.credit -= m
        else:
            alpha = self.spec.acceptance[r.tenant]
            u = self.rng.random(k)
            m = 1 + int(np.argmin(u < alpha)) if not np.all(u < alpha) else 1 + k
        return max(1, min(m, left))

    def log_iteration(self, rep: _Replica, t0: float, t1: float, batch, n_dec: int) -> None:
        self.n_iterations += 1
        self.n_iter_full += len(rep.running) >= rep.spec.max_num_seqs
        self.max_waiting = max(self.max_waiting, sum(len(x.waiting) for x in self.replicas))
        self.max_used_blocks = max(self.max_used_blocks, rep.used_blocks)
        if self.record_iterations:
            n_pf = sum(n for _, n, p in batch if p)
            self.iterations.append(
                (rep.index, t0, t1, n_dec, sum(1 for _, _, p in batch if p), n_pf, len(rep.running), len(rep.waiting), rep.used_blocks)
            )


ITERATION_FIELDS = ("replica", "t_start", "t_end", "n_decode", "n_prefill_reqs", "n_prefill_tokens", "running", "waiting", "kv_blocks_used")


@dataclass
class ReferenceResult:
    """What :func:`simulate` returns.

    ``requests``: per request (input order) ``arrival_s``, ``first_token_s``, ``finish_s`` (NaN if
    none), ``prompt_tokens``, ``output_tokens``, ``generated_tokens``, ``tenant``, ``replica``,
    ``preemptions``, ``status`` (:data:`STATUS_NAMES`), and ``ttft_s``, ``tpot_s``, ``e2e_s``.
    ``itl_s`` / ``itl_weight``: every inter-token gap (s) and how many tokens it stands for.
    ``summary``: :func:`summarize`. ``iterations``: per iteration (:data:`ITERATION_FIELDS`) when
    ``record_iterations``. ``spec``: the engine's rules.
    """

    requests: dict[str, np.ndarray]
    itl_s: np.ndarray
    itl_weight: np.ndarray
    summary: dict[str, float]
    spec: EngineSpec
    iterations: dict[str, np.ndarray] | None = None
    counters: dict[str, float] = field(default_factory=dict)


def simulate(
    requests: Requests,
    cfg: EnvConfig,
    params: EnvParams,
    action: ServeAction,
    *,
    scheduler: str | None = None,
    pool_blocks: int | None = None,
    max_wait_s: float | None = None,
    spec_sampling: str = "expected",
    seed: int = 0,
    record_iterations: bool = False,
    warmup_frac: float = 0.2,
) -> ReferenceResult:
    """Serve ``requests`` (:func:`as_requests`: Requests, a Trace, or rows) under the fixed
    configuration ``action`` (with ``cfg.n_slots`` capping the batch as in the fast engine) and
    return exact per-request times (:class:`ReferenceResult`).

    ``scheduler``: "chunked" | "prefill_first" (default: what the ``prefill_decode_split`` level
    means, :func:`pd_mode_scheduler`). ``pool_blocks``: override the plan's KV pool (blocks, whole
    cluster). ``max_wait_s``: client timeout before first admission (None: none).
    ``spec_sampling``: "expected" | "sample" (with ``seed``). ``warmup_frac``: share of the arrival
    span excluded from the served-rate window (:func:`summarize`).
    """
    if spec_sampling not in SPEC_SAMPLING:
        raise ValueError(f"spec_sampling must be one of {SPEC_SAMPLING}, got {spec_sampling!r}")
    requests = as_requests(requests)
    n_tenants = int(np.asarray(params.priority).shape[0])
    if len(requests) and int(requests.tenant.max()) >= n_tenants:
        raise ValueError(f"request tenant {int(requests.tenant.max())} out of range: the params have {n_tenants} tenant(s)")
    spec, plan = engine_spec(cfg, params, action, scheduler, pool_blocks)
    if not spec.serving_ok:
        raise ValueError(
            "the configuration cannot serve (weights, activations or the CUDA context do not fit the KV budget): "
            "the fast engine serves nothing in it either"
        )
    if spec.pool_blocks < 1:
        raise ValueError(f"KV pool of {spec.pool_blocks} blocks per replica: nothing can be served")
    share = float(params.tensor_parallel) / float(params.n_gpus)
    clock = IterationClock(params, plan, share)
    sim = _Sim(spec, clock, max_wait_s, spec_sampling, seed, record_iterations)
    reqs = [
        _Req(i, float(a), int(p), int(o), int(t), float(spec.priority[t]))
        for i, (a, p, o, t) in enumerate(
            zip(requests.arrival_s, requests.prompt_tokens, requests.output_tokens, requests.tenant, strict=True)
        )
    ]
    _run(sim, reqs)
    return _result(sim, reqs, requests, spec, warmup_frac)


def _run(sim: _Sim, reqs: list[_Req]) -> None:
    """The event loop: arrivals and iteration ends in time order (arrivals first on ties, so that
    requests arriving together are scheduled together)."""
    heap: list[tuple[float, int, int]] = []  # (time, seq, replica): an iteration ends / a pending start
    seq = 0
    ai = 0
    n = len(reqs)
    reps = sim.replicas
    started = [False] * len(reps)  # the heap entry of replica r is a pending start (not an iteration end)
    while ai < n or heap:
        if ai < n and (not heap or reqs[ai].arrival <= heap[0][0]):
            r = reqs[ai]
            ai += 1
            if ai == n:
                sim.waiting_at_last_arrival = sum(len(x.waiting) for x in reps)
            rep = min(reps, key=lambda x: (x.load(), x.index))
            r.replica = rep.index
            if _blocks(r.prompt + r.output) > rep.spec.pool_blocks:
                sim.reject(r)  # could never complete even alone in the pool
                continue
            rep.waiting.append(r)
            if not rep.busy:
                rep.busy = True
                started[rep.index] = True
                heapq.heappush(heap, (r.arrival, seq, rep.index))
                seq += 1
            continue
        t, _, i = heapq.heappop(heap)
        rep = reps[i]
        if started[i]:
            started[i] = False
        else:
            rep.end(t)
        if rep.has_work():
            t_end = rep.start(t)
            if t_end is not None:
                heapq.heappush(heap, (t_end, seq, i))
                seq += 1
        else:
            rep.busy = False


def _result(sim: _Sim, reqs: list[_Req], requests: Requests, spec: EngineSpec, warmup_frac: float) -> ReferenceResult:
    f = lambda name: np.array([getattr(r, name) for r in reqs], np.float64)  # noqa: E731
    first, finish = f("first"), f("finish")
    out = requests.output_tokens.astype(np.float64)
    arr = requests.arrival_s
    status = np.array([r.status for r in reqs], np.int32)
    fin = status == FINISHED
    rq = {
        "arrival_s": arr.copy(),
        "first_token_s": first,
        "finish_s": finish,
        "prompt_tokens": requests.prompt_tokens.copy(),
        "output_tokens": requests.output_tokens.copy(),
        "generated_tokens": np.array([r.generated for r in reqs], np.int64),
        "tenant": requests.tenant.copy(),
        "replica": np.array([r.replica for r in reqs], np.int32),
        "preemptions": np.array([r.preemptions for r in reqs], np.int32),
        "status": status,
        "ttft_s": first - arr,
        "tpot_s": np.where(fin & (out > 1), (finish - first) / np.maximum(out - 1, 1), np.nan),
        "e2e_s": finish - arr,
    }
    itl = np.asarray(sim.itl, np.float64)
    itl_w = np.asarray(sim.itl_w, np.int64)
    counters = {
        "preemptions": sim.n_preemptions,
        "recomputed_tokens": sim.recomputed_tokens,
        "rejected": sim.n_rejected,
        "timed_out": sim.n_timed_out,
        "iterations": sim.n_iterations,
        "iterations_at_batch_cap": sim.n_iter_full,
        "max_waiting": sim.max_waiting,
        "waiting_at_last_arrival": sim.waiting_at_last_arrival,
        "max_kv_blocks_used": sim.max_used_blocks,
    }
    iters = None
    if sim.record_iterations:
        a = np.asarray(sim.iterations, np.float64).reshape(-1, len(ITERATION_FIELDS))
        iters = {k: a[:, j] for j, k in enumerate(ITERATION_FIELDS)}
    summary = summarize(rq, itl, itl_w, warmup_frac=warmup_frac)
    summary.update({k: float(v) for k, v in counters.items()})
    summary["kv_peak_fraction"] = sim.max_used_blocks / max(spec.pool_blocks, 1)
    summary["batch_cap_fraction"] = sim.n_iter_full / max(sim.n_iterations, 1)
    summary["saturated"] = float(sim.waiting_at_last_arrival > max(SATURATION_MIN_QUEUE, SATURATION_QUEUE_SHARE * len(reqs)))
    return ReferenceResult(rq, itl, itl_w, summary, spec, iters, counters)


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def weighted_percentile(x: np.ndarray, q: float, w: np.ndarray | None = None) -> float:
    """The ``q``-th percentile (0..100) of ``x`` with integer weights ``w`` (each value repeated ``w``
    times; NumPy's default linear interpolation). NaN when empty."""
    x = np.asarray(x, np.float64)
    if w is None:
        x = x[np.isfinite(x)]
        return float(np.percentile(x, q)) if x.size else math.nan
    w = np.asarray(w, np.int64)
    ok = np.isfinite(x) & (w > 0)
    x, w = x[ok], w[ok]
    if not x.size:
        return math.nan
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cw = np.cumsum(w)
    pos = q / 100.0 * (cw[-1] - 1)  # 0-based position in the expanded sample
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    xl, xh = x[np.searchsorted(cw, lo + 1)], x[np.searchsorted(cw, hi + 1)]
    return float(xl + (xh - xl) * (pos - lo))


def served_window(arrival_s: np.ndarray, warmup_frac: float = 0.2) -> tuple[float, float]:
    """The window the served rate is measured over: from ``warmup_frac`` of the arrival span to the
    last arrival."""
    a0, a1 = float(arrival_s[0]), float(arrival_s[-1])
    return a0 + warmup_frac * (a1 - a0), a1


def summarize(
    rq: dict[str, np.ndarray], itl_s: np.ndarray | None = None, itl_weight: np.ndarray | None = None, warmup_frac: float = 0.2
) -> dict[str, float]:
    """Whole-run statistics of per-request times ``rq`` (the keys of ``ReferenceResult.requests``).

    TTFT / TPOT / E2E p50, p99 and mean over finished requests (TTFT over every request that got a
    first token), ITL p50 / p99 / mean over every gap; ``throughput_tps`` output tokens/s and
    ``throughput_rps`` finished requests/s from the first arrival to the last finish; saturation
    signals: ``served_rps`` (finishes per second inside :func:`served_window`) against
    ``offered_rps`` (arrivals per second inside it) and ``drain_s`` (last finish - last arrival).
    :func:`simulate` adds the engine's own: ``waiting_at_last_arrival`` (requests queued, not yet
    admitted, when the last one arrived), ``max_waiting``, ``batch_cap_fraction`` (iterations with
    the batch at its cap), ``kv_peak_fraction``, ``preemptions``, and ``saturated``: 1 when the queue
    at the last arrival holds more than 2 % of the requests (and more than 10): below saturation
    vLLM admits every arrival at the next iteration, past it the queue grows for as long as
    requests come."""
    s: dict[str, float] = {}
    fin = rq["status"] == FINISHED
    n = rq["arrival_s"].shape[0]
    s["requests"] = float(n)
    s["finished"] = float(fin.sum())
    ttft = rq["ttft_s"][np.isfinite(rq["ttft_s"])]
    for name, x in (("ttft", ttft), ("tpot", rq["tpot_s"][fin]), ("e2e", rq["e2e_s"][fin])):
        s[f"{name}_p50_s"] = weighted_percentile(x, 50)
        s[f"{name}_p99_s"] = weighted_percentile(x, 99)
        x = x[np.isfinite(x)]
        s[f"{name}_mean_s"] = float(x.mean()) if x.size else math.nan
    if itl_s is not None:
        w = np.ones_like(itl_s, np.int64) if itl_weight is None else itl_weight
        s["itl_p50_s"] = weighted_percentile(itl_s, 50, w)
        s["itl_p99_s"] = weighted_percentile(itl_s, 99, w)
        s["itl_mean_s"] = float((itl_s * w).sum() / w.sum()) if w.sum() else math.nan
    if n == 0:
        return s
    arr = rq["arrival_s"]
    fin_t = rq["finish_s"][fin]
    t_last = float(fin_t.max()) if fin_t.size else float(arr[-1])
    span = max(t_last - float(arr[0]), 1e-9)
    s["throughput_tps"] = float(rq["generated_tokens"].sum() / span)
    s["throughput_rps"] = float(fin.sum() / span)
    w0, w1 = served_window(arr, warmup_frac)
    if w1 > w0:
        s["offered_rps"] = float(((arr >= w0) & (arr < w1)).sum() / (w1 - w0))
        s["served_rps"] = float(((fin_t >= w0) & (fin_t < w1)).sum() / (w1 - w0))
    s["drain_s"] = float(t_last - arr[-1])
    return s
