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
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gymjax.rollout import make_step, reset_carry


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


CLUSTER_AXIS = "clusters"  # the one mesh axis: the cluster (env) batch


def cluster_mesh(devices=None):
    """A 1-D ``Mesh`` named ``"clusters"`` over ``devices`` (default ``jax.devices()``: every device of
    every process, so under ``jax.distributed`` the mesh spans all hosts)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (CLUSTER_AXIS,))


def cluster_sharding(n_clusters: int, dim: int = 0, shard: bool | None = True):
    """A ``NamedSharding`` splitting axis ``dim`` (the cluster axis) over every device of a 1-D mesh
    (:func:`cluster_mesh`), other axes replicated; or None when there is nothing to shard.

    ``shard`` is the switch: ``False`` -> None; ``True``/``None`` -> None with one device, else the
    sharding. With several devices and ``n_clusters`` not a multiple of their number, ``None`` (auto)
    quietly falls back to no sharding and ``True`` raises ``ValueError``.

    On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (set before JAX is
    imported) makes one device per core: each then runs its share of clusters on its own thread,
    which beats XLA:CPU's intra-op threading of these small kernels (README, Performance).
    """
    n_dev = jax.device_count()
    if shard is False or n_dev < 2:
        return None
    if n_clusters % n_dev:
        if shard:
            raise ValueError(f"shard=True: the cluster axis ({n_clusters}) must be a multiple of the device count ({n_dev})")
        return None
    return NamedSharding(cluster_mesh(), PartitionSpec(*([None] * dim), CLUSTER_AXIS))


def replicated(sharding):
    """The fully replicated ``NamedSharding`` on ``sharding``'s mesh (parameters, optimiser state)."""
    return NamedSharding(sharding.mesh, PartitionSpec())


def constrain(tree, sharding):
    """``with_sharding_constraint`` on every leaf of ``tree``; the identity when ``sharding`` is None."""
    if sharding is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, sharding)


def make_rollout(env, n_clusters: int, n_steps: int, policy: Callable | None = None, chunk: int | None = None, shard: bool | None = None):
    """A jitted ``(key, params) -> (final states, per-step mean reward [n_steps])``.

    Each cluster resets with its own key (``split(key, n_clusters)``), then steps ``n_steps`` times under
    ``policy(key, obs, state)`` (default: vLLM's default configuration held fixed): step t gives cluster i
    the key ``split(split(key, n_steps)[t], n_clusters)[i]``, which :func:`gymjax.rollout.make_step`
    splits into the policy's and the step's. The clusters are split over all devices when
    there are several (``shard=None``, auto; ``True`` insists, ``False`` turns it off; see
    :func:`cluster_sharding`); results are the same as unsharded, bit for bit.
    """
    if policy is None:
        a = env.encode_action(env.default_action())
        policy = lambda key, obs, state: a  # noqa: E731
    sharding = cluster_sharding(n_clusters, shard=shard)
    place = lambda x: constrain(x, sharding)  # noqa: E731

    def run(key, params):
        reset = vmap_chunked(lambda k: reset_carry(env, params, k), n_clusters, chunk)
        carry = reset(place(jax.random.split(key, n_clusters)))
        step = vmap_chunked(make_step(env, params, policy), n_clusters, chunk)

        def body(carry, k):
            carry, rewards = step(carry, place(jax.random.split(k, n_clusters)))
            return carry, jnp.mean(rewards)

        carry, rewards = jax.lax.scan(body, carry, jax.random.split(key, n_steps))
        return carry.state, rewards

    return jax.jit(run)
