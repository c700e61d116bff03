"""Arrival processes: Markov-modulated bursts and mirrored traffic-mix shifts."""

import jax
import jax.numpy as jnp
import numpy as np

import gymjax
from gymjax.rollout import rollout
from gymjax.tasks import TenantSpec

# a traffic-mix shift: tenant 1 is "on" exactly when tenant 0 is "off"
MIX = (
    TenantSpec(name="edit", base_rate_rps=6.0, burst_high_mult=1.0, burst_low_mult=0.1, p_on_to_off=0.05, p_off_to_on=0.05),
    TenantSpec(name="chat", base_rate_rps=6.0, burst_high_mult=1.0, burst_low_mult=0.1, burst_mirror=0),
)


def test_mirrored_tenant_is_on_exactly_when_its_partner_is_off():
    env, params = gymjax.make("static", tenants=MIX, n_slots=16, queue_cap=64, max_arrivals=24, horizon_steps=400)
    assert int(params.burst_mirror[0]) == -1 and int(params.burst_mirror[1]) == 0
    a = env.encode_action(env.default_action())

    def run(key):  # per step: the burst state the step ran in and its arrivals
        record = lambda s: (s.state.burst_on, s.next_state.step_stats.arrived)  # noqa: E731
        return rollout(env, params, lambda k, obs, st: a, key, 400, record=record)[1]

    on, arrived = jax.device_get(jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 4)))
    assert np.all(on[..., 1] == 1 - on[..., 0])  # complement at every step, from the reset on
    flips = np.abs(np.diff(on[..., 0], axis=1)).sum(1)
    assert np.all(flips >= 5), flips  # the leader's chain really switches (p = 0.05 per step, 400 steps)
    # the mix shifts: each tenant's arrivals are several times higher in its own "on" phase
    for t in range(2):
        on_rate = arrived[..., t][on[..., t] == 1].mean()
        off_rate = arrived[..., t][on[..., t] == 0].mean()
        assert on_rate > 4 * off_rate, (t, on_rate, off_rate)


def test_independent_chains_without_a_mirror():
    env, params = gymjax.make("static", tenants=MIX, n_slots=16, queue_cap=64, max_arrivals=24)
    params = params.replace(burst_mirror=jnp.asarray([-1, -1], jnp.int32), p_on_to_off=jnp.asarray([0.3, 0.3]),
                            p_off_to_on=jnp.asarray([0.3, 0.3]))
    a = env.encode_action(env.default_action())

    def run(key):
        return rollout(env, params, lambda k, obs, st: a, key, 200, record=lambda s: s.next_state.burst_on)[1]

    on = np.asarray(jax.jit(run)(jax.random.PRNGKey(1)))
    both = np.mean(on[:, 0] == on[:, 1])
    assert 0.3 < both < 0.7, both  # independent: equal about half the time

