"""The grader: deterministic, in [0, 1], hard to game; the shaped reward ranks policies like it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from gymjax import ServeAction, baselines, grading
from gymjax.evaluation import make_evaluator

H = 40


@pytest.fixture(scope="module")
def static_env():
    env, params = gymjax.make("static", n_slots=32, queue_cap=64, max_arrivals=40, horizon_steps=H)
    return env, params


def _const(env, **kw):
    """A constant typed action (the flat encoding's levels cannot express e.g. a 0.05 KV budget)."""
    d = {**env.default_action().to_dict(), **kw}
    a = jax.tree.map(jnp.asarray, ServeAction.create(**d))
    a = a.replace(kv_budget_fraction=a.kv_budget_fraction.astype(jnp.float32))
    a = jax.tree.map(lambda x: x if x.dtype == jnp.float32 else x.astype(jnp.int32), a)
    return lambda key, obs, state: a


def _switch_evaluator(env, policies, n_steps):
    """One compiled program scoring several policies (gymjax.evaluation: lax.switch on a policy index) x
    seeds: ``run(params, keys) -> (scores, reward sums, episode stats)``, each [policy, seed]."""
    run = make_evaluator(env, policies, n_steps)
    return lambda params, keys: (lambda out: (out["score"], out["reward_sum"], out["episode"]))(run(params, keys))


def test_grader_cannot_be_gamed(static_env):
    env, params = static_env
    good = _const(env, quantization_tier=1, prefill_decode_split=1, speculation_depth=2)
    policies = [
        good,
        _const(env, kv_budget_fraction=0.05),  # serves nothing (invalid): drops all traffic
        _const(env, batch_cap=1),  # idles the GPU
        _const(env, kv_budget_fraction=0.24, batch_cap=32),  # a preemption storm
    ]
    run = _switch_evaluator(env, policies, H)
    keys = grading.eval_keys(3)
    scores, rsum, ep = jax.device_get(run(params, keys))
    s = scores.mean(1)
    assert s[0] > 0.8, s
    assert s[1] < 0.02 and s[2] < 0.3 and s[3] < 0.6 * s[0], s
    assert np.all((scores >= 0) & (scores <= 1))
    # the shaped reward agrees
    assert rsum.mean(1)[0] == rsum.mean(1).max()
    # the storm really was one
    assert ep.preemptions[3].mean() > 10 * max(ep.preemptions[0].mean(), 1)
    # stopping early: the same episode graded half-way scores about half
    half = _switch_evaluator(env, policies[:1], H // 2)(params, keys)[0]
    assert np.asarray(half).mean() < 0.6 * s[0]
    # deterministic: the same seeds give the same scores
    again = jax.device_get(run(params, keys))[0]
    np.testing.assert_array_equal(scores, again)


def test_grade_components_formula():
    env, params = gymjax.make("static")
    ep = env.reset(jax.random.PRNGKey(0), params)[1].episode
    ep = ep.replace(arrived=jnp.array([100]), slo_met=jnp.array([80]), output_tokens=jnp.float32(3.6e5),
                    cost_usd=jnp.float32(float(params.price_per_gpu_hour) / 10), steps=jnp.int32(int(params.horizon_steps)))
    c = jax.device_get(grading.grade_components(params, ep))
    cost_1k = float(params.price_per_gpu_hour) / 10 / 360.0
    want_c = float(params.ref_cost_per_1k) / (float(params.ref_cost_per_1k) + cost_1k)
    assert c["goodput"] == pytest.approx(0.8)
    assert c["cost"] == pytest.approx(want_c, rel=1e-5)
    assert c["quality"] == pytest.approx(1.0)
    assert c["score"] == pytest.approx(0.8 * (0.8 + 0.1 * want_c + 0.1), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["static", "bursty", "adversarial", "azure-replay"])
def test_reward_sum_ranks_baselines_like_the_grader(task):
    env, params = gymjax.make(task)
    names = [n for n in baselines.available(env) if n != "oracle"]
    policies = [baselines.POLICIES[n](env, params) for n in names]
    n_steps = 60
    params = params.replace(horizon_steps=jnp.int32(n_steps))
    scores, rsum, _ = jax.device_get(_switch_evaluator(env, policies, n_steps)(params, grading.eval_keys(2)))
    s, r = scores.mean(1), rsum.mean(1)
    # every pair the grader separates clearly (> 0.02) is ordered the same way by the reward sum
    for i in range(len(names)):
        for j in range(len(names)):
            if s[i] > s[j] + 0.02:
                assert r[i] > r[j], (task, names[i], names[j], s, r)
