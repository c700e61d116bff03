"""The roofline (gymjax.physics.roofline) reproduces DESIGN.md's reference table within 2 %."""

import jax.numpy as jnp
import pytest

import gymjax
from gymjax.physics import deployment
from gymjax.physics.roofline import decode_attn_flops, iter_time, prefill_attn_flops

# (model, gpu, tier, tp) -> (decode b=1, b=64, b=256, prefill 2k) in ms, context 1024 per sequence
REFERENCE = {
    ("llama-3-8b", "h100", 0, 1): (7.3, 10.9, 21.9, 46.0),
    ("llama-3-8b", "h100", 1, 1): (4.4, 8.0, 19.0, 25.0),
    ("llama-3-8b", "a100", 0, 1): (11.0, 17.0, 42.7, 143.0),
    ("llama-3-70b", "h100", 0, 4): (16.1, 18.9, 27.5, 123.0),
}


def _times(model, gpu, tier, tp):
    env, params = gymjax.make("static", model=model, gpu=gpu, n_gpus=tp, tensor_parallel=tp)
    a = env.default_action().replace(quantization_tier=jnp.int32(tier))
    plan = deployment.plan(env.cfg, params, a)
    kvb = plan.kv_bytes_per_token
    out = []
    for b in (1, 64, 256):
        ctx = 1024.0 * b
        # one replica: the cluster is exactly one TP group here
        t = iter_time(params, plan, b, decode_attn_flops(params, 1.0, ctx), ctx * kvb, 1.0)
        out.append(float(t) * 1e3)
    t = iter_time(params, plan, 2048.0, prefill_attn_flops(params, 2048.0, 0.0), 0.0, 1.0)
    out.append(float(t) * 1e3)
    return out


@pytest.mark.parametrize("case", list(REFERENCE))
def test_reference_table(case):
    got = _times(*case)
    for g, want in zip(got, REFERENCE[case], strict=True):
        assert abs(g - want) / want < 0.02, (case, got, REFERENCE[case])


def test_fp8_on_a100_has_no_compute_speedup():
    env, params = gymjax.make("static", gpu="a100")
    bf16 = deployment.plan(env.cfg, params, env.default_action())
    fp8 = deployment.plan(env.cfg, params, env.default_action().replace(quantization_tier=jnp.int32(1)))
    assert float(fp8.gemm_peak) == float(bf16.gemm_peak)  # documented fallback: weight-only FP8
    assert float(params.tier_fallback[1]) == 1.0
    # ... but the weights are half the bytes, so the KV pool is larger
    assert float(fp8.pool_blocks) > float(bf16.pool_blocks)


def test_prefill_is_compute_bound_and_decode_memory_bound():
    env, params = gymjax.make("static")
    plan = deployment.plan(env.cfg, params, env.default_action())
    t1 = iter_time(params, plan, 1.0, 0.0, 0.0, 1.0)
    t64 = iter_time(params, plan, 64.0, 0.0, 0.0, 1.0)
    t4096 = iter_time(params, plan, 4096.0, 0.0, 0.0, 1.0)
    t8192 = iter_time(params, plan, 8192.0, 0.0, 0.0, 1.0)
    assert float(t64) == pytest.approx(float(t1), rel=1e-6)  # below the ridge: batching is free
    slope = 2.0 * float(params.linear_params) / (float(params.eta_flops) * float(plan.gemm_peak))
    assert float(t8192 - t4096) / 4096 == pytest.approx(slope, rel=1e-3)  # past the ridge: linear in tokens
