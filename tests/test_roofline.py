"""The roofline (gymjax.physics.roofline) against public measurements, and its shape.

Every row of benchmarks.roofline_sources.ROWS is one cited measurement (source, model, GPU, engine, batch,
context in docs/fidelity.md); decode rows must be within +-10 %, prefill rows within +-15 %. Rows that name
why they cannot (``excluded``) are strict expected failures: one that starts passing must lose its reason.
"""

import jax.numpy as jnp
import pytest

import gymjax
from benchmarks.roofline_sources import REFERENCE_CONFIGS, ROWS, ours_ms, reference_times
from gymjax.physics import deployment
from gymjax.physics.roofline import iter_time, smooth_max


def _row_id(r):
    return f"{r.source}-{r.model}-{r.gpu}-tp{r.tp}-{r.phase}-{r.tokens}-{r.scope}"


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, marks=pytest.mark.xfail(reason=r.excluded, strict=True)) if r.excluded else r for r in ROWS],
    ids=_row_id,
)
def test_public_measurement(row):
    err = ours_ms(row) / row.measured_ms - 1.0
    assert abs(err) <= row.tolerance, (row.source, row.derivation, f"measured {row.measured_ms:.2f} ms, error {err:+.1%}")


def test_every_tolerance_row_is_cited_and_the_criterion_is_covered():
    """Decode at batch 1..128 and prefill 512..8k each have rows held to the tolerance."""
    held = [r for r in ROWS if not r.excluded]
    decode = {r.tokens for r in held if r.phase == "decode"}
    prefill = {r.tokens for r in held if r.phase == "prefill"}
    assert {1, 8, 16, 32, 64, 128} <= decode
    assert {512, 1024, 2048, 4096, 8192} <= prefill
    assert {r.gpu for r in held} >= {"a100", "h100", "h200"}
    assert all(r.derivation for r in ROWS)


# README's reference table (context 1024 per sequence; `python -m benchmarks.roofline_sources --reference`):
# decode b=1, 64, 256 and a 2k prefill, ms. A regression guard for the documented numbers.
REFERENCE = {
    ("llama-3-8b", "h100", 1, 0): (7.90, 11.78, 25.11, 54.92),
    ("llama-3-8b", "h100", 1, 1): (5.03, 8.83, 21.17, 33.14),
    ("llama-3-8b", "a100", 1, 0): (11.63, 18.68, 46.50, 157.90),
    ("llama-3-70b", "h100", 4, 0): (19.12, 22.79, 37.46, 145.70),
}


@pytest.mark.parametrize("case", REFERENCE_CONFIGS)
def test_reference_table(case):
    got = reference_times(*case)
    for g, want in zip(got, REFERENCE[case], strict=True):
        assert abs(g - want) / want < 0.02, (case, got, REFERENCE[case])


def test_smooth_max():
    a, b = jnp.float32(3.0), jnp.float32(4.0)
    assert float(smooth_max(a, b, 2.0)) == pytest.approx(5.0, rel=1e-6)
    assert float(smooth_max(a, jnp.float32(0.0), 2.0)) == pytest.approx(3.0, rel=1e-6)
    assert float(smooth_max(a, b, 1e4)) == pytest.approx(4.0, rel=1e-4)  # a large p is the hard max
    assert float(smooth_max(jnp.float32(1e-30), jnp.float32(0.0), 64.0)) == pytest.approx(1e-30, rel=1e-3)  # no underflow
    assert float(smooth_max(jnp.float32(0.0), jnp.float32(0.0), 2.0)) == 0.0


def test_fp8_on_a100_has_no_compute_speedup():
    env, params = gymjax.make("static", gpu="a100")
    bf16 = deployment.plan(env.cfg, params, env.default_action())
    fp8 = deployment.plan(env.cfg, params, env.default_action().replace(quantization_tier=jnp.int32(1)))
    assert float(fp8.gemm_peak) == float(bf16.gemm_peak)  # documented fallback: weight-only FP8
    assert float(params.tier_fallback[1]) == 1.0
    # ... but the weights are half the bytes, so the KV pool is larger
    assert float(fp8.pool_blocks) > float(bf16.pool_blocks)


def test_batching_is_nearly_free_below_the_ridge_and_linear_past_it():
    env, params = gymjax.make("static")
    plan = deployment.plan(env.cfg, params, env.default_action())
    t = {n: float(iter_time(params, plan, float(n), 0.0, 0.0, 1.0)) for n in (1, 64, 4096, 8192)}
    # below the ridge: 64 tokens cost far less than 64 iterations of one, but more than one (no flat plateau)
    assert t[1] < t[64] < 1.15 * t[1]
    # past the ridge: linear in tokens at the GEMM slope plus the per-token elementwise traffic
    f = lambda x: float(x)  # noqa: E731
    slope = 2.0 * f(params.linear_params) / (f(params.eta_flops) * f(plan.gemm_peak))
    slope += f(params.n_layers) * f(params.activation_bytes_per_token) / (f(params.eta_elementwise) * f(params.hbm_bandwidth_bytes_per_s))
    assert (t[8192] - t[4096]) / 4096 == pytest.approx(slope, rel=2e-3)


def test_smoothing_leaves_batch_one_and_long_prefill_where_the_hard_max_had_them():
    """The smooth maximum moves the linear term only near the ridge."""
    env, params = gymjax.make("static")
    plan = deployment.plan(env.cfg, params, env.default_action())
    hard = params.replace(gemm_smoothness=jnp.float32(1e4))
    for n, tol in ((1, 1e-3), (8192, 0.01)):
        assert float(iter_time(params, plan, float(n), 0.0, 0.0, 1.0)) == pytest.approx(
            float(iter_time(hard, plan, float(n), 0.0, 0.0, 1.0)), rel=tol
        )
    # ... and at the ridge it is sqrt(2) x the hard max (p = 2), not flat
    f = lambda x: float(x)  # noqa: E731
    bw = f(params.hbm_bandwidth_bytes_per_s)
    ridge = f(plan.weight_bytes) * f(params.eta_flops) * f(plan.gemm_peak) / (2.0 * f(params.eta_bandwidth) * bw)
    lin = lambda p: f(iter_time(p, plan, ridge, 0.0, 0.0, 1.0)) - f(p.t_fixed_s) - f(p.n_layers) * f(p.t_layer_s)  # noqa: E731
    elem = ridge * f(params.n_layers) * f(params.activation_bytes_per_token) / (f(params.eta_elementwise) * bw)
    assert (lin(params) - elem) / (lin(hard) - elem) == pytest.approx(2.0**0.5, rel=1e-3)
