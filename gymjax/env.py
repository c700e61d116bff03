"""``ServingEnv``: the gymnax contract around the engine physics.

One env step = one control interval of ``params.dt_s`` simulated seconds (:meth:`ServingEnv.step_env`):

1. the action is decoded; a change of a slow knob (quantization tier: reload, running KV lost;
   prefill/decode split: drain) takes the engine down for ``reload_s``/``drain_s``
   (:func:`gymjax.physics.deployment.plan` gives the configuration's constants);
2. this interval's arrivals are drawn or replayed (:mod:`gymjax.physics.workload`) and enqueued per
   tenant (full queue = dropped); requests that waited longer than ``max_wait_s`` are dropped (the
   client gave up) (:mod:`gymjax.physics.queues`);
3. the engine runs ``n_leaps`` leaps (:mod:`gymjax.engine`);
4. the interval's metrics become the :class:`Observation` and the flat observation
   (:mod:`gymjax.physics.observation`), and the reward (:mod:`gymjax.physics.reward`).

``step`` auto-resets when the horizon is reached (``truncated``); ``terminated`` is always False.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gymjax import engine
from gymjax.physics import accounting, deployment, observation, queues, workload
from gymjax.physics.numerics import NEVER
from gymjax.physics.reward import reward as interval_reward
from gymjax.spaces import KNOB_NAMES, Box, MultiDiscrete, knob_table
from gymjax.types import EnvConfig, EnvParams, EnvState, Observation, Plan, ServeAction

F32 = jnp.float32
I32 = jnp.int32

__all__ = ["ServingEnv"]


class ServingEnv:
    """An LLM-serving cluster as a pure-functional environment.

    The env object holds only static configuration (:class:`EnvConfig`) and the task's default
    params; every method is a pure function of its arguments, safe to ``jit`` and ``vmap``.
    """

    def __init__(self, cfg: EnvConfig, default_params: EnvParams, name: str = "custom"):
        self.cfg = cfg
        self.name = name
        self._default_params = default_params
        self.knobs = knob_table(cfg.n_slots)
        self._levels = [jnp.asarray(k.levels, F32) for k in self.knobs]
        self.obs_dim = observation.obs_dim(cfg, self.knobs)

    # ------------------------------------------------------------------------------------------
    # gymnax API
    # ------------------------------------------------------------------------------------------

    @property
    def default_params(self) -> EnvParams:
        return self._default_params

    def action_space(self, params: EnvParams | None = None) -> MultiDiscrete:
        """Flat learner action: one index per knob into that knob's ``levels``."""
        return MultiDiscrete(tuple(len(k.levels) for k in self.knobs))

    def observation_space(self, params: EnvParams | None = None) -> Box:
        return Box(0.0, 1.0, (self.obs_dim,))

    def reset(self, key: jax.Array, params: EnvParams | None = None) -> tuple[jax.Array, EnvState]:
        params = self._default_params if params is None else params
        state = self._initial_state(key, params)
        return self._flat_obs(self._metrics(params, state, 0.0), state.action), state

    def step(self, key: jax.Array, state: EnvState, action, params: EnvParams | None = None):
        """Advance one control interval, auto-resetting at the horizon. ``action`` is a flat int
        vector or a :class:`ServeAction`.

        Returns ``(obs, state, reward, terminated, truncated, info)``; ``info`` holds
        ``metrics`` (:class:`Observation` of this interval), ``counters`` (cumulative request
        counts of the episode that just stepped), ``episode`` (:class:`EpisodeStats`),
        ``final_obs`` (the observation before any reset), ``kv_pool_blocks`` and ``kv_blocks_used_max``.
        """
        params = self._default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        final_obs, stepped, reward, truncated, info = self.step_env(k_step, state, action, params)
        reset_obs, reset_st = self.reset(k_reset, params)
        state = jax.tree.map(lambda r, s: jnp.where(truncated, r, s), reset_st, stepped)
        obs = jnp.where(truncated, reset_obs, final_obs)
        info = {**info, "final_obs": final_obs}  # the pre-reset observation (bootstrap at truncation)
        return obs, state, reward, jnp.bool_(False), truncated, info

    def step_env(self, key: jax.Array, state: EnvState, action, params: EnvParams):
        """One control interval without auto-reset: ``(obs, state, reward, truncated, info)``;
        ``truncated`` is True at the horizon. ``info``: ``metrics`` (the typed :class:`Observation` of
        this interval), ``counters`` (cumulative request counts of the episode), ``episode`` (its
        :class:`EpisodeStats`: what the grader reads; its latency histograms give whole-episode
        percentiles, :func:`gymjax.physics.accounting.episode_latency_percentiles`), ``kv_pool_blocks``,
        ``kv_blocks_used_max``; with ``EnvConfig.request_log = L > 0`` also ``requests``: ``rows`` [L, 6]
        (one per request finished this interval, columns ``gymjax.types.REQUEST_LOG_COLUMNS``) and
        ``count`` (all finished this interval; above L the log overflowed)."""
        act = action if isinstance(action, ServeAction) else self.decode_action(action)
        act = self._clip_action(act)
        st, reward, metrics, plan = self._interval(key, state, act, params)
        episode = st.episode
        info = {
            "metrics": metrics,
            "counters": {
                "arrived": episode.arrived.sum(),
                "finished": episode.finished.sum(),
                "running": st.active.sum().astype(I32),
                "waiting": st.q_count.sum(),
                "dropped": episode.dropped.sum(),
            },
            "episode": episode,
            "kv_pool_blocks": plan.pool_blocks,
            "kv_blocks_used_max": st.step_stats.kv_blocks_used_max,
        }
        if self.cfg.request_log:
            info["requests"] = {"rows": st.step_stats.requests, "count": st.step_stats.requests_logged}
        return self._flat_obs(metrics, st.action), st, reward, st.step >= params.horizon_steps, info

    def metrics(self, params: EnvParams, state: EnvState) -> Observation:
        """The named metrics of ``state``'s last interval (of an empty cluster right after reset)."""
        return self._metrics(params, state, jnp.where(state.step > 0, 1.0, 0.0))

    def flat_obs(self, metrics: Observation, action: ServeAction) -> jax.Array:
        """The learner's observation vector for these metrics and the action in force."""
        return self._flat_obs(metrics, self._clip_action(action))

    # ------------------------------------------------------------------------------------------
    # actions
    # ------------------------------------------------------------------------------------------

    def decode_action(self, flat: jax.Array) -> ServeAction:
        """Flat learner action (int indices [6]) -> typed :class:`ServeAction`."""
        flat = jnp.asarray(flat)
        vals = [lv[jnp.clip(flat[..., i], 0, lv.shape[0] - 1)] for i, lv in enumerate(self._levels)]
        return ServeAction(
            batch_cap=vals[0].astype(I32), kv_budget_fraction=vals[1].astype(F32),
            speculation_depth=vals[2].astype(I32), quantization_tier=vals[3].astype(I32),
            prefill_decode_split=vals[4].astype(I32), priority_routing=vals[5].astype(I32),
        )

    def encode_action(self, action: ServeAction) -> jax.Array:
        """Typed action -> the flat index of the nearest level of each knob."""
        idx = [jnp.argmin(jnp.abs(lv - jnp.asarray(getattr(action, n), F32))) for lv, n in zip(self._levels, KNOB_NAMES, strict=True)]
        return jnp.stack(idx).astype(I32)

    def validate_action(self, action: ServeAction) -> ServeAction:
        """Outside jit: check the env-specific batch-cap bound on top of ServeAction's own checks."""
        cap = int(action.batch_cap)
        if not 1 <= cap <= self.cfg.n_slots:
            n = self.cfg.n_slots
            raise ValueError(f"ServeAction.batch_cap={cap} is out of range [1, {n}] (this env has {n} batch slots)")
        return action

    def _clip_action(self, a: ServeAction) -> ServeAction:
        """Each knob into its range (out-of-range values to the nearest end, +-inf included); a NaN
        knob value, which no range check inside ``jit`` can refuse, plays the knob's default level
        (:meth:`default_action`)."""
        ks = {k.name: k for k in self.knobs}
        default = self.default_action()

        def c(n, dt):
            x = jnp.asarray(getattr(a, n))
            if jnp.issubdtype(x.dtype, jnp.floating):
                x = jnp.where(jnp.isnan(x), getattr(default, n).astype(x.dtype), x)
            return jnp.clip(x, ks[n].low, ks[n].high).astype(dt)

        return ServeAction(
            batch_cap=c("batch_cap", I32), kv_budget_fraction=c("kv_budget_fraction", F32),
            speculation_depth=c("speculation_depth", I32), quantization_tier=c("quantization_tier", I32),
            prefill_decode_split=c("prefill_decode_split", I32), priority_routing=c("priority_routing", I32),
        )

    def default_action(self) -> ServeAction:
        """vLLM's defaults: max_num_seqs (capped to the slots), gpu_memory_utilization 0.9, no
        speculation, BF16, chunked prefill with a 2048-token budget, FCFS."""
        return ServeAction(
            batch_cap=jnp.int32(self.cfg.n_slots), kv_budget_fraction=jnp.float32(0.9), speculation_depth=jnp.int32(0),
            quantization_tier=jnp.int32(0), prefill_decode_split=jnp.int32(2), priority_routing=jnp.int32(0),
        )

    # ------------------------------------------------------------------------------------------
    # one interval (physics in gymjax.physics and gymjax.engine)
    # ------------------------------------------------------------------------------------------

    def _initial_state(self, key: jax.Array, params: EnvParams) -> EnvState:
        c = self.cfg
        B, T, Q = c.n_slots, c.n_tenants, c.queue_cap
        k_burst, k_trace = jax.random.split(key)
        zB = jnp.zeros(B, F32)
        return EnvState(
            active=jnp.zeros(B, bool), tenant=jnp.zeros(B, I32), prompt=jnp.zeros(B, I32), out_len=jnp.ones(B, I32),
            target=zB, prefilled=zB, generated=zB, kv_tokens=zB, t_arrival=zB, t_first=zB - 1.0,
            ready_at=jnp.full(B, NEVER, F32),
            pr_slot=jnp.full(c.prefill_ring, B, I32), pr_count=jnp.int32(0),
            q_arrival=jnp.zeros((T, Q), F32), q_prompt=jnp.zeros((T, Q), I32), q_out=jnp.ones((T, Q), I32),
            q_generated=jnp.zeros((T, Q), F32), q_first=jnp.full((T, Q), -1.0, F32),
            q_head=jnp.zeros(T, I32), q_count=jnp.zeros(T, I32),
            t_now=jnp.float32(0.0), down_until=jnp.float32(0.0), action=self.default_action(), configured=jnp.bool_(False),
            burst_on=workload.initial_bursts(k_burst, params, T),
            step=jnp.int32(0), trace_start=workload.trace_start(k_trace, c, params),
            step_stats=accounting.empty_step_stats(c),
            episode=accounting.empty_episode(c),
        )

    def _interval(self, key, st: EnvState, act: ServeAction, params: EnvParams):
        """``(state, reward, metrics, plan)`` after one control interval under the (clipped) ``act``."""
        c = self.cfg
        k_arr, k_burst = jax.random.split(key)
        t_start = st.t_now
        t_end = t_start + params.dt_s
        st = st.replace(step_stats=accounting.empty_step_stats(c))

        # slow knobs: a tier change reloads weights (running KV lost); a split change drains
        # (the episode's first action is the initial deployment: no reload)
        tier_change = st.configured & (act.quantization_tier != st.action.quantization_tier)
        split_change = st.configured & (act.prefill_decode_split != st.action.prefill_decode_split)
        down = jnp.maximum(jnp.where(tier_change, params.reload_s, 0.0), jnp.where(split_change, params.drain_s, 0.0))
        st = st.replace(down_until=jnp.where(down > 0, jnp.maximum(st.down_until, t_start + down), st.down_until))
        plan = deployment.plan(c, params, act)
        # the KV cache is lost on a reload, or rebuilt when the new budget cannot hold what is in use
        lose_cache = (tier_change | (queues.kv_blocks(st).sum() > plan.pool_blocks)) & st.active.any()
        st = jax.lax.cond(lose_cache, lambda s: queues.requeue_all(c, s), lambda s: s, st)
        st = st.replace(action=act, configured=jnp.bool_(True))

        # arrivals and client timeouts
        times, prompt, out, valid, n_arrived = workload.arrivals(c, k_arr, st, params)
        st, dropped_full = queues.enqueue(c, st, times, prompt, out, valid)
        st, dropped_stale = queues.drop_stale(c, st, params)
        beyond_cap = n_arrived - valid.sum(1).astype(I32)  # beyond max_arrivals: dropped at the door
        ss = st.step_stats
        dropped = ss.dropped + dropped_full + dropped_stale + beyond_cap
        st = st.replace(step_stats=ss.replace(arrived=n_arrived.astype(I32), dropped=dropped))

        st = engine.run_interval(c, params, plan, st, t_end)

        # Markov-modulated burst phase for the next interval
        st = st.replace(burst_on=workload.step_bursts(k_burst, params, st.burst_on), step=st.step + 1, t_now=t_end)

        metrics = self._metrics(params, st, 1.0, plan)
        reward = interval_reward(params, st.step_stats, plan, metrics.kv_occupancy)
        episode = accounting.add_interval(st.episode, st.step_stats, plan, accounting.interval_cost_usd(params), reward)
        return st.replace(episode=episode), reward, metrics, plan

    def _metrics(self, params: EnvParams, st: EnvState, has_step, plan: Plan | None = None) -> Observation:
        return observation.metrics(params, st, has_step, deployment.plan(self.cfg, params, st.action) if plan is None else plan)

    def _flat_obs(self, m: Observation, a: ServeAction) -> jax.Array:
        return observation.flat_obs(self.cfg, self.knobs, m, a)
