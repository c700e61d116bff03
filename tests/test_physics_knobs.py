"""Each knob moves the system the way serving physics says it should."""

import jax
import jax.numpy as jnp
import pytest

import gymjax
from gymjax import ServeAction
from gymjax.rollout import rollout
from gymjax.tasks import LengthDist, TenantSpec

STEPS = 16


def _runner(env):
    """jit(vmap over (params, action)) of a constant-action run: mean metrics over the last steps."""

    def one(params, action, key):
        final, m = rollout(env, params, lambda k, obs, st: action, key, STEPS, record=lambda s: s.info["metrics"])
        st = final.state
        tail = jax.tree.map(lambda x: x[STEPS // 3 :], m)
        nz = lambda x: jnp.sum(x) / jnp.maximum(jnp.sum(x > 0), 1)  # mean over intervals that had samples
        ttft_per_tenant = st.episode.slo_met / jnp.maximum(st.episode.arrived, 1)
        return {
            "throughput": tail.throughput_tps.mean(), "tpot": nz(tail.tpot_p50_s), "itl_p99": nz(tail.itl_p99_s),
            "ttft": nz(tail.ttft_p50_s), "preemptions": m.preemptions.sum(), "met_frac": ttft_per_tenant,
        }

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def _actions(env, **fields_list):
    n = max(len(v) for v in fields_list.values())
    base = env.default_action().to_dict()
    acts = []
    for i in range(n):
        d = {**base, **{k: v[i] if len(v) > 1 else v[0] for k, v in fields_list.items()}}
        acts.append(ServeAction.create(**d))
    return jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v) for v in x]), *acts)


def _stack(params, n):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), params)


@pytest.fixture(scope="module")
def decode_env():
    """Decode-heavy single-tenant traffic (short prompts, long outputs), 256 slots."""
    tenant = TenantSpec(name="gen", base_rate_rps=60.0, slo_ttft_s=5.0, slo_tpot_s=0.2, spec_acceptance=0.5,
                        prompt=LengthDist(200.0, 0.3, 1024), output=LengthDist(400.0, 0.3, 1000))
    env, params = gymjax.make("static", tenants=(tenant,), n_slots=256, queue_cap=256, max_arrivals=96, horizon_steps=100)
    return env, params, _runner(env)


def test_batch_cap_raises_throughput_until_the_ridge_then_tpot(decode_env):
    env, params, run = decode_env
    caps = [8, 32, 128, 256]
    out = jax.device_get(run(_stack(params, 4), _actions(env, batch_cap=caps), jax.random.PRNGKey(0)))
    tp, tpot = out["throughput"], out["tpot"]
    assert tp[1] > 2.5 * tp[0] and tp[2] > 1.5 * tp[1], tp  # batching is nearly free below the ridge
    assert tp[3] < 1.5 * tp[2], tp  # ... and gains flatten past it
    assert tpot[3] > 1.5 * tpot[1] and tpot[2] > tpot[1], tpot  # while each token gets slower


def test_speculation_helps_at_low_load_not_at_high_load(decode_env):
    env, params, run = decode_env
    low = params.replace(base_rate_rps=params.base_rate_rps * 0 + 2.0)
    p = jax.tree.map(lambda a, b: jnp.stack([a, a, b, b]), low, params)
    acts = _actions(env, speculation_depth=[0, 4, 0, 4], batch_cap=[256])
    out = jax.device_get(run(p, acts, jax.random.PRNGKey(1)))
    tpot = out["tpot"]
    assert tpot[1] < 0.8 * tpot[0], tpot  # low load: fewer target passes per token
    assert tpot[3] > 0.95 * tpot[2], tpot  # high load (alpha 0.5, B(k+1) past the ridge): no gain
    assert out["throughput"][3] < 1.05 * out["throughput"][2]


def test_tiny_kv_budget_preempts(decode_env):
    env, params, run = decode_env
    out = jax.device_get(run(_stack(params, 2), _actions(env, kv_budget_fraction=[0.9, 0.24], batch_cap=[256]), jax.random.PRNGKey(2)))
    assert out["preemptions"][0] == 0 and out["preemptions"][1] > 10, out["preemptions"]


@pytest.fixture(scope="module")
def chat_env():
    tenant = TenantSpec(name="chat", base_rate_rps=6.0, prompt=LengthDist(3000.0, 0.2, 8000), output=LengthDist(200.0, 0.3, 1000))
    env, params = gymjax.make("static", tenants=(tenant,), n_gpus=2, n_slots=64, queue_cap=64, max_arrivals=32, horizon_steps=100)
    return env, params, _runner(env)


def test_disaggregation_removes_prefill_stalls_but_adds_transfer(chat_env):
    env, params, run = chat_env
    low = params.replace(base_rate_rps=params.base_rate_rps * 0 + 0.3)
    p = jax.tree.map(lambda a, b: jnp.stack([a, a, b, b]), params, low)
    # colocated with a large chunk vs disaggregated (25 % prefill) at moderate load, then at low load
    acts = _actions(env, prefill_decode_split=[3, 4, 3, 4])
    out = jax.device_get(run(p, acts, jax.random.PRNGKey(3)))
    assert out["itl_p99"][1] < 0.5 * out["itl_p99"][0], out["itl_p99"]  # no prefill chunk in decode iterations
    assert out["ttft"][3] > out["ttft"][2], out["ttft"]  # a quarter of the GPUs prefill + KV transfer


def test_priority_routing_favours_the_high_priority_tenant():
    hi = TenantSpec(name="hi", priority=3.0, base_rate_rps=10.0, slo_ttft_s=1.0, slo_tpot_s=0.2)
    lo = TenantSpec(name="lo", priority=1.0, base_rate_rps=10.0, slo_ttft_s=1.0, slo_tpot_s=0.2)
    env, params = gymjax.make("static", tenants=(hi, lo), n_slots=32, queue_cap=128, max_arrivals=32, horizon_steps=100)
    run = _runner(env)
    out = jax.device_get(run(_stack(params, 2), _actions(env, priority_routing=[0, 1], batch_cap=[32]), jax.random.PRNGKey(4)))
    met = out["met_frac"]  # [action, tenant]: share of arrived requests meeting SLO
    assert met[1, 0] > met[0, 0] + 0.1, met  # high priority gains
    assert met[1, 1] < met[0, 1], met  # at the low-priority tenant's expense
