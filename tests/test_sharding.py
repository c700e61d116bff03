"""Sharded rollouts (clusters split over 4 forced CPU devices) equal unsharded ones."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, chex, gymjax
    from gymjax.vector import cluster_sharding, make_rollout
    assert jax.device_count() == 4, jax.devices()
    env, params = gymjax.make("static", n_slots=16, queue_cap=32, max_arrivals=24, horizon_steps=6)
    assert cluster_sharding(8) is not None and cluster_sharding(6) is None
    plain = make_rollout(env, 8, 8)(jax.random.PRNGKey(5), params)
    sharded = make_rollout(env, 8, 8, shard=True)(jax.random.PRNGKey(5), params)
    assert len(sharded[0].active.sharding.device_set) == 4
    chex.assert_trees_all_equal(jax.device_get(plain[0]), jax.device_get(sharded[0]))
    np.testing.assert_allclose(plain[1], sharded[1], rtol=1e-6)
    print("SHARDED_OK")
    """
)


def test_sharded_rollout_equals_unsharded_on_4_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0 and "SHARDED_OK" in out.stdout, out.stderr[-3000:]


if __name__ == "__main__":
    pytest.main([__file__])
