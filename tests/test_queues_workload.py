"""Queues and workload (gymjax.physics.queues, gymjax.physics.workload) on tiny hand-made states."""

import jax
import jax.numpy as jnp
import numpy as np

import gymjax
from gymjax.physics import deployment, queues, workload

SIZES = dict(n_slots=4, queue_cap=4, max_arrivals=3, horizon_steps=4, window=2, prefill_ring=2)


def _env():
    env, params = gymjax.make("static", **SIZES)
    _, st = env.reset(jax.random.PRNGKey(0), params)
    return env, params, st


def test_enqueue_fills_in_order_and_counts_the_overflow():
    env, params, st = _env()
    times = jnp.asarray([[0.1, 0.2, 0.3]])
    valid = jnp.asarray([[True, True, True]])
    st, full = queues.enqueue(env.cfg, st, times, jnp.asarray([[10, 20, 30]]), jnp.asarray([[1, 2, 3]]), valid)
    assert int(st.q_count[0]) == 3 and int(full[0]) == 0
    assert np.asarray(st.q_prompt[0, :3]).tolist() == [10, 20, 30]
    st, full = queues.enqueue(env.cfg, st, times + 1.0, jnp.asarray([[40, 50, 60]]), jnp.asarray([[4, 5, 6]]), valid)
    assert int(st.q_count[0]) == 4 and int(full[0]) == 2  # one place left of four
    assert int(st.q_prompt[0, 3]) == 40


def test_drop_stale_drops_the_timed_out_prefix_only():
    env, params, st = _env()
    params = params.replace(max_wait_s=jnp.float32(1.0))
    times = jnp.asarray([[0.0, 2.5, 0.1]])  # the third is old but behind a fresh one: FIFO, kept
    st, _ = queues.enqueue(env.cfg, st, times, jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), bool))
    st, dropped = queues.drop_stale(env.cfg, st.replace(t_now=jnp.float32(3.0)), params)
    assert int(dropped[0]) == 1 and int(st.q_head[0]) == 1 and int(st.q_count[0]) == 2


def test_admit_then_requeue_one_restores_the_queue_head():
    env, params, st = _env()
    plan = deployment.plan(env.cfg, params, env.default_action())
    st, _ = queues.enqueue(env.cfg, st, jnp.zeros((1, 3)), jnp.asarray([[100, 200, 300]]), jnp.asarray([[5, 5, 5]]),
                           jnp.ones((1, 3), bool))
    st = queues.admit(env.cfg, params, plan, st, jnp.bool_(True), queues.window(env.cfg, st))
    # window 2 and a prefill ring of 2: the first two are admitted, in order, into slots 0 and 1
    assert np.asarray(st.active).tolist() == [True, True, False, False]
    assert np.asarray(st.prompt[:2]).tolist() == [100, 200] and int(st.pr_count) == 2 and int(st.q_count[0]) == 1
    assert np.asarray(queues.kv_blocks(st)).tolist() == [7.0, 13.0, 0.0, 0.0]  # ceil((prompt + 1) / 16)
    st = queues.requeue_one(env.cfg, st, jnp.int32(1), jnp.bool_(True))
    assert int(st.q_count[0]) == 2 and int(st.q_prompt[0, st.q_head[0]]) == 200
    assert np.asarray(st.active).tolist() == [True, False, False, False] and int(st.step_stats.preemptions) == 1


def test_admission_reserves_the_blocks_a_preempted_requests_fluid_tokens_take():
    """A preempted request comes back with a fluid token count (here 94 prompt + 33.4 generated): its
    KV at admission is 94 + 33.4 + 1 = 128.4 tokens, 9 blocks, not the 8 that its truncated count
    (128 tokens) would reserve. With exactly 8 blocks free it must wait, or the pool is over-committed
    by one block (the kv_occupancy > 1 that benchmarks.invariants found on the small-KV corner)."""
    env, params, st = _env()
    st, _ = queues.enqueue(env.cfg, st, jnp.zeros((1, 3)), jnp.asarray([[94, 10, 10]]), jnp.asarray([[50, 5, 5]]),
                           jnp.asarray([[True, False, False]]))
    st = st.replace(q_generated=st.q_generated.at[0, st.q_head[0]].set(33.4))
    for free, admitted in ((8, False), (9, True)):
        plan = deployment.plan(env.cfg, params, env.default_action())._replace(pool_blocks=jnp.float32(free))
        after = queues.admit(env.cfg, params, plan, st, jnp.bool_(True), queues.window(env.cfg, st))
        assert bool(after.active[0]) == admitted, free
        assert float(queues.kv_blocks(after).sum()) <= free
    assert float(queues.blocks_for(jnp.float32(128.0))) == 8.0
    assert float(queues.blocks_for(jnp.float32(128.00005))) == 8.0  # 3 ulps over a boundary: a rounding
    assert float(queues.blocks_for(jnp.float32(128.01))) == 9.0


def test_sample_lengths_stay_within_the_quantile_table():
    q = jnp.asarray([[1.0, 10.0, 100.0, 1000.0]])
    x = np.asarray(workload.sample_lengths(jax.random.PRNGKey(0), q, (1, 4096)))
    assert x.min() >= 1 and x.max() <= 1000
    assert 0.3 < np.mean(x <= 10) < 0.37  # a third of the draws fall between the first two points


def test_mirrored_tenant_is_on_exactly_when_its_partner_is_off():
    env, params = gymjax.make("static", tenants=(gymjax.TenantSpec(p_on_to_off=0.5, p_off_to_on=0.5),
                                                 gymjax.TenantSpec(burst_mirror=0)), **SIZES)
    on = workload.initial_bursts(jax.random.PRNGKey(1), params, 2)
    for i in range(20):
        on = workload.step_bursts(jax.random.PRNGKey(i), params, on)
        assert int(on[1]) == 1 - int(on[0])


def test_arrival_rate_factors():
    env, params = gymjax.make("static", **SIZES)
    params = params.replace(base_rate_rps=jnp.asarray([10.0]), burst_high_mult=jnp.asarray([3.0]), burst_low_mult=jnp.asarray([0.5]),
                            drift=jnp.asarray([1.0]), diurnal_amp=jnp.asarray([0.0]), horizon_steps=jnp.int32(10), dt_s=jnp.float32(1.0))
    # at mid-horizon the drift adds half: 10 x 3 x 1.5 when on, 10 x 0.5 x 1.5 when off
    np.testing.assert_allclose(np.asarray(workload.arrival_rate(params, jnp.asarray([1]), 5.0)), [45.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(workload.arrival_rate(params, jnp.asarray([0]), 5.0)), [7.5], rtol=1e-6)
