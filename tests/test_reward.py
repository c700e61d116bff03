"""The shaped reward (gymjax.physics.reward) by hand on a small example."""

import jax.numpy as jnp
import pytest

import gymjax
from gymjax.physics import accounting, deployment
from gymjax.physics import reward as rw


def _case(met, finished, dropped, preemptions, quality_cost):
    env, params = gymjax.make("adversarial")  # three tenants, priorities 3, 2, 1
    params = params.replace(reward_norm_rps=jnp.float32(10.0), dt_s=jnp.float32(1.0), w_memory=jnp.float32(0.05),
                            w_preempt=jnp.float32(0.05))
    ss = accounting.empty_step_stats(env.cfg).replace(
        slo_met=jnp.asarray(met, jnp.int32), finished=jnp.asarray(finished, jnp.int32), dropped=jnp.asarray(dropped, jnp.int32),
        preemptions=jnp.int32(preemptions))
    plan = deployment.plan(env.cfg, params, env.default_action())._replace(quality_cost=jnp.float32(quality_cost))
    return params, ss, plan


def test_reward_formula_by_hand():
    params, ss, plan = _case(met=[2, 1, 0], finished=[3, 1, 2], dropped=[0, 1, 1], preemptions=4, quality_cost=0.006)
    assert [float(p) for p in params.priority] == [3.0, 2.0, 1.0]
    # slo = sum_t w_t (met_t - 0.5 missed_t) / (mean(w) * rate * dt); missed = finished - met + dropped = [1, 1, 3]
    slo = (3 * (2 - 0.5 * 1) + 2 * (1 - 0.5 * 1) + 1 * (0 - 0.5 * 3)) / (2.0 * 10.0 * 1.0)
    assert slo == pytest.approx(0.2)
    quality = 0.9 + 0.1 * (1.0 - 0.006 / 0.03)  # 0.98
    pressure = (0.95 - 0.9) / 0.1  # KV at 95 %: half-way to a full pool
    preempt = 4 / (10.0 * 1.0)
    want = slo * quality - 0.05 * pressure - 0.05 * preempt
    assert float(rw.reward(params, ss, plan, jnp.float32(0.95))) == pytest.approx(want, rel=1e-5)
    # below the KV threshold, no pressure term
    assert float(rw.reward(params, ss, plan, jnp.float32(0.5))) == pytest.approx(slo * quality - 0.05 * preempt, rel=1e-5)


def test_a_negative_slo_term_is_not_scaled_by_quality():
    params, ss, plan = _case(met=[0, 0, 0], finished=[2, 0, 0], dropped=[0, 0, 4], preemptions=0, quality_cost=0.03)
    slo = (3 * (0 - 0.5 * 2) + 1 * (0 - 0.5 * 4)) / (2.0 * 10.0)
    assert float(rw.reward(params, ss, plan, jnp.float32(0.0))) == pytest.approx(slo, rel=1e-6)


def test_quality_term():
    for cost, qs in ((0.0, 1.0), (0.003, 0.9), (0.03, 0.0), (0.06, 0.0)):
        assert float(rw.quality_term(jnp.float32(cost))) == pytest.approx(qs, abs=1e-6)
