"""Speculation (gymjax.physics.speculation): E(k) and the verification time by hand, and the engine
and the heuristic baseline using exactly these functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from gymjax import baselines, engine
from gymjax.physics import deployment, speculation

SMALL = dict(n_slots=8, queue_cap=8, max_arrivals=8, horizon_steps=4)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8, 0.999])
@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_tokens_per_verification_is_the_geometric_sum(alpha, k):
    got = float(speculation.tokens_per_verification(jnp.float32(alpha), jnp.float32(k)))
    assert got == pytest.approx(sum(alpha**i for i in range(k + 1)), rel=1e-4)


def test_no_speculation_is_one_token_and_one_plain_step():
    env, params = gymjax.make("static")
    plan = deployment.plan(env.cfg, params, env.default_action())
    assert float(speculation.tokens_per_verification(speculation.acceptance(params), 0.0)[0]) == 1.0
    t0 = speculation.verification_time(params, plan, 32.0, 32.0 * 1000, 1.0, 0.0)
    assert float(t0) == float(speculation.target_step_time(params, plan, 32.0, 32.0 * 1000, 1.0))


def _by_hand_iter_s(params, plan, n_tokens, queries_per_seq, ctx_tokens):
    """The roofline for one GPU (tp 1, no all-reduce), written out in float64."""
    f = lambda x: float(np.asarray(x))  # noqa: E731
    P, L, d = f(params.linear_params), f(params.n_layers), f(params.d_model)
    bw, p = f(params.hbm_bandwidth_bytes_per_s), f(params.gemm_smoothness)
    smax = lambda a, b: (a**p + b**p) ** (1 / p)  # noqa: E731
    linear = smax(2 * P * n_tokens / (f(params.eta_flops) * f(plan.gemm_peak)), P * f(plan.weight_bytes) / (f(params.eta_bandwidth) * bw))
    elementwise = n_tokens * L * f(params.activation_bytes_per_token) / (f(params.eta_elementwise) * bw)
    attn_flops = 4 * L * d * queries_per_seq * ctx_tokens
    kv_bytes = ctx_tokens * f(plan.kv_bytes_per_token)
    attention = smax(attn_flops / (f(params.eta_attn_flops) * f(params.peak_bf16_flops)), kv_bytes / (f(params.eta_attention) * bw))
    return f(params.t_fixed_s) + L * f(params.t_layer_s) + linear + elementwise + attention


@pytest.mark.parametrize("n_seqs,k", [(4, 3), (128, 2), (256, 6)])
def test_verification_time_by_hand(n_seqs, k):
    env, params = gymjax.make("static")
    plan = deployment.plan(env.cfg, params, env.default_action())
    ctx = 1024.0 * n_seqs
    c = float(params.spec_draft_cost_ratio)
    assert c == pytest.approx(speculation.DRAFT_COST_RATIO)  # the task default
    want = _by_hand_iter_s(params, plan, n_seqs * (k + 1), k + 1, ctx) + k * c * _by_hand_iter_s(params, plan, n_seqs, 1, ctx)
    got = float(speculation.verification_time(params, plan, float(n_seqs), ctx, 1.0, float(k)))
    assert got == pytest.approx(want, rel=1e-5)


def _decoding_state(env, params, n_running, kv_tokens):
    _, st = env.reset(jax.random.PRNGKey(0), params)
    B = env.cfg.n_slots
    on = jnp.arange(B) < n_running
    f = lambda v: jnp.where(on, jnp.float32(v), 0.0)  # noqa: E731
    return st.replace(active=on, prompt=jnp.where(on, 1000, 0), out_len=jnp.where(on, 100000, 1), target=f(1000.0),
                      prefilled=f(1000.0), generated=f(1.0), kv_tokens=f(kv_tokens), t_first=f(0.1), ready_at=f(0.0))


def test_the_engine_decodes_at_the_verification_rate():
    """A leap of decode only: its iteration time is speculation.verification_time, and each sequence
    gains leap_s / verification_time * E(k) tokens."""
    env, params = gymjax.make("static", **SMALL)
    k = 3
    plan = deployment.plan(env.cfg, params, env.default_action().replace(speculation_depth=jnp.int32(k)))
    n, kv = 4, 1001.0
    st = _decoding_state(env, params, n, kv)
    sched = engine.schedule(params, plan, st, engine.prefill_ring(env.cfg, st), jnp.bool_(True))
    t_verif = speculation.verification_time(params, plan, float(n), n * kv, 1.0, float(k))
    assert float(sched.t_iter_decode) == float(t_verif)
    e_k = speculation.tokens_per_verification(speculation.acceptance(params), float(k))[0]
    assert float(sched.tokens_per_verif[0]) == float(e_k)

    after = engine.leap(env.cfg, params, plan, st, jnp.float32(1.0), jnp.float32(1.0))
    gained = np.asarray(after.generated - st.generated)
    assert float(after.t_now) == 1.0
    np.testing.assert_allclose(gained[:n], 1.0 / float(t_verif) * float(e_k), rtol=1e-5)
    assert np.all(gained[n:] == 0)


def test_the_heuristic_ranks_depths_by_the_same_physics():
    """speculation_by_goodput's choice is the argmax of E(k) / verification_time over the depth levels."""
    env, params = gymjax.make("bursty", **SMALL)
    choose = baselines.speculation_by_goodput(env, params)
    levels = np.asarray(next(k for k in env.knobs if k.name == "speculation_depth").levels)
    action = env.default_action().replace(quantization_tier=jnp.int32(1))
    plan = deployment.plan(env.cfg, params, action)
    alpha = speculation.acceptance(params)
    for running, weights in ((2.0, [1.0, 0.0]), (8.0, [0.0, 1.0]), (8.0, [0.5, 0.5])):
        ctx = running * 800.0
        w = np.asarray(weights) / np.sum(weights)
        rates = [float(np.sum(w * np.asarray(speculation.tokens_per_verification(alpha, float(k)))))
                 / float(speculation.verification_time(params, plan, running, ctx, 1.0, float(k))) for k in levels]
        got = int(choose(action, jnp.float32(running), jnp.float32(ctx), jnp.asarray(weights, jnp.float32), jnp.bool_(False)))
        assert got == int(np.argmax(rates)), (running, weights, rates)
