"""Many clusters at once: a jitted, vectorised rollout with optional cache-friendly chunking.

``vmap`` over N clusters touches every state array once per op; past a few thousand clusters the
working set leaves the CPU caches. ``chunk`` processes the clusters in groups of that size with
``lax.map`` over a ``vmap`` (every cluster's state identical bit for bit; a test checks it), which keeps each group's
state hot.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def vmap_chunked(fn: Callable, n: int, chunk: int | None) -> Callable:
    """``vmap(fn)`` over a leading axis of size ``n``, evaluated ``chunk`` clusters at a time."""
    vfn = jax.vmap(fn)
    if chunk is None or chunk >= n:
        return vfn
    if n % chunk:
        raise ValueError(f"n_clusters={n} must be a multiple of chunk={chunk}")

    def run(*args):
        split = jax.tree.map(lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), args)
        out = jax.lax.map(lambda a: vfn(*a), split)
        return jax.tree.map(lambda x: x.reshape((n,) + x.shape[2:]), out)

    return run


def cluster_sharding(n_clusters: int):
    """A ``NamedSharding`` splitting the cluster axis over every local device (a 1-D mesh), or None
    with one device or when ``n_clusters`` does not divide evenly.

    On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (set before JAX is
    imported) makes one device per core: each then runs its share of clusters on its own thread,
    which beats XLA:CPU's intra-op threading of these small kernels (README, Performance).
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    if len(devices) < 2 or n_clusters % len(devices):
        return None
    return NamedSharding(Mesh(devices, ("clusters",)), PartitionSpec("clusters"))


def make_rollout(env, n_clusters: int, n_steps: int, policy: Callable | None = None, chunk: int | None = None,
                 shard: bool = False):
    """A jitted ``(key, params) -> (final states, per-step mean reward [n_steps])``.

    Each cluster resets with its own key, then steps ``n_steps`` times under ``policy(key, obs, state)``
    (default: vLLM's default configuration held fixed). ``shard=True`` splits the clusters over all
    local devices (:func:`cluster_sharding`); results are the same as unsharded.
    """
    if policy is None:
        a = env.encode_action(env.default_action())
        policy = lambda key, obs, state: a  # noqa: E731
    sharding = cluster_sharding(n_clusters) if shard else None
    place = (lambda x: x) if sharding is None else (lambda x: jax.lax.with_sharding_constraint(x, sharding))

    def run(key, params):
        keys = place(jax.random.split(key, n_clusters))
        reset = vmap_chunked(lambda k: env.reset(k, params), n_clusters, chunk)
        obs, st = reset(keys)

        def one(k, o, s):
            kp, ks = jax.random.split(k)
            o, s, r, _, _, _ = env.step(ks, s, policy(kp, o, s), params)
            return o, s, r

        step = vmap_chunked(one, n_clusters, chunk)

        def body(carry, k):
            o, s = carry
            o, s, r = step(place(jax.random.split(k, n_clusters)), o, s)
            return (o, s), jnp.mean(r)

        (obs, st), rewards = jax.lax.scan(body, (obs, st), jax.random.split(key, n_steps))
        return st, rewards

    return jax.jit(run)
