"""The physics of one serving cluster, one small module per concept (pure functions over pytrees).

Import order (each module imports only the ones before it):

- :mod:`~gymjax.physics.numerics`: vmap-friendly reductions, latency histograms, the NEVER/INF times.
- :mod:`~gymjax.physics.roofline`: seconds per engine iteration, attention FLOPs.
- :mod:`~gymjax.physics.speculation`: tokens per verification E(k), the time of a verification pass.
- :mod:`~gymjax.physics.deployment`: the :class:`~gymjax.types.Plan` of an action (KV pool, validity).
- :mod:`~gymjax.physics.queues`: per-tenant waiting queues: enqueue, timeouts, requeue, admission.
- :mod:`~gymjax.physics.workload`: arrivals (synthetic or trace replay), lengths, burst phases.
- :mod:`~gymjax.physics.accounting`: per-interval and per-episode counters.
- :mod:`~gymjax.physics.observation`: the interval's metrics and the flat observation's layout table.
- :mod:`~gymjax.physics.reward`: the shaped per-step reward.

The engine (:mod:`gymjax.engine`) runs leaps on top of these; the env (:mod:`gymjax.env`) wraps it all
in the gymnax API.
"""
