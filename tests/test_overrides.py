"""gymjax.make checks every override at the boundary: type, physical range, relations between fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gymjax
from gymjax.tasks import CONFIG_LIMITS, SPEC_LIMITS, TENANT_LIMITS, InvalidTaskField, TenantSpec

SMALL = dict(n_slots=16, queue_cap=32, max_arrivals=16)

REFUSED = [  # (overrides, the field the error names, a piece of the allowed range it states)
    (dict(n_gpus=-1), "n_gpus", "[1, 4096]"),
    (dict(n_gpus=0), "n_gpus", "[1, 4096]"),
    (dict(n_gpus=0.5), "n_gpus", "an integer"),
    (dict(n_gpus=2.0), "n_gpus", "an integer"),  # integral float: still not an integer
    (dict(n_gpus=1e38), "n_gpus", "an integer"),
    (dict(n_gpus=True), "n_gpus", "an integer"),  # bools are not integers here
    (dict(n_gpus="8"), "n_gpus", "an integer"),
    (dict(tensor_parallel=0.5), "tensor_parallel", "an integer"),
    (dict(tensor_parallel=3), "tensor_parallel", "a divisor of n_gpus (1)"),
    (dict(n_gpus=6, tensor_parallel=4), "tensor_parallel", "a divisor of n_gpus (6)"),
    (dict(horizon_steps=True), "horizon_steps", "an integer"),
    (dict(horizon_steps=0), "horizon_steps", "[1, 10000000]"),
    (dict(dt_s=0), "dt_s", "[0.001, 3600]"),
    (dict(dt_s=-1), "dt_s", "[0.001, 3600]"),
    (dict(dt_s=float("nan")), "dt_s", "a finite number"),
    (dict(dt_s=float("inf")), "dt_s", "a finite number"),
    (dict(max_wait_s=-5), "max_wait_s", "[0, 86400]"),
    (dict(max_wait_s=None), "max_wait_s", "a finite number"),
    (dict(w_memory=-0.1), "w_memory", "[0, 100]"),
    (dict(n_slots=0), "n_slots", "[1, 4096]"),
    (dict(n_slots=True), "n_slots", "an integer"),
    (dict(n_leaps=2.5), "n_leaps", "an integer"),
    (dict(window=64, queue_cap=32), "window", "queue_cap = 32"),
    (dict(tenants=()), "tenants", "non-empty"),
    (dict(tenants=(TenantSpec(spec_acceptance=1.0),)), "tenants[0].spec_acceptance", "[0, 0.99]"),
    (dict(tenants=(TenantSpec(p_on_to_off=1.5),)), "tenants[0].p_on_to_off", "[0, 1]"),
    (dict(tenants=(TenantSpec(slo_ttft_s=0.0),)), "tenants[0].slo_ttft_s", "(0, 86400]"),
    (dict(tenants=(TenantSpec(burst_mirror=0),)), "tenants[0].burst_mirror", "another tenant"),
    (dict(tenants=(TenantSpec(), TenantSpec(burst_mirror=5))), "tenants[1].burst_mirror", "[0, 1]"),
]


@pytest.mark.parametrize("overrides,field,allowed", REFUSED, ids=[str(r[0])[:40] for r in REFUSED])
def test_a_bad_override_is_refused_naming_field_and_range(overrides, field, allowed):
    with pytest.raises(InvalidTaskField) as info:
        gymjax.make("static", **{**SMALL, **overrides})
    assert info.value.field == field
    assert allowed in info.value.allowed and str(info.value).startswith(f"{field} must be")


def test_a_trace_task_keeps_the_interval_its_trace_is_binned_at():
    with pytest.raises(ValueError, match="dt_s"):
        gymjax.make("azure-replay", dt_s=2.0)


def test_every_served_task_and_valid_overrides_build():
    for name in ("static", "bursty", "adversarial", "azure-replay"):
        env, params = gymjax.make(name)
        assert int(params.horizon_steps) == env.spec.horizon_steps
    # edges of each range, NumPy integers, integral ints for float fields
    for overrides in (
        dict(n_gpus=4096, tensor_parallel=64),
        dict(n_gpus=np.int64(8), tensor_parallel=np.int32(2)),
        dict(dt_s=1),
        dict(dt_s=1e-3),
        dict(dt_s=3600.0),
        dict(max_wait_s=0),
        dict(horizon_steps=10_000_000),
        dict(preempt_per_leap=0),
    ):
        _, params = gymjax.make("static", **{**SMALL, **overrides})
        for k, v in overrides.items():
            if hasattr(params, k):
                assert float(getattr(params, k)) == pytest.approx(float(v), rel=1e-6)


def _values():
    return st.one_of(
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=4),
        st.sampled_from([0, 1, 2, 3, 8, 64, 4096, 0.5, 1e-3, 3600.0, 86400.0]),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(SPEC_LIMITS) + sorted(CONFIG_LIMITS)), value=_values())
def test_any_value_either_builds_within_range_or_is_refused_naming_its_field(field, value):
    """Property: gymjax.make never accepts a value outside a field's type and range, and a refusal
    names the field (never a crash deeper down)."""
    kind, low, high, low_open = {**SPEC_LIMITS, **CONFIG_LIMITS}[field]
    overrides = {**SMALL, field: value}
    try:
        env, params = gymjax.make("static", **overrides)
    except InvalidTaskField as e:
        assert e.field in (field, "tensor_parallel", "window", "n_tenants"), (field, value, e)
        return
    assert not isinstance(value, bool) and isinstance(value, int | float)
    assert math.isfinite(value) and low <= value <= high and not (low_open and value == low)
    if kind == "int":
        assert isinstance(value, int)
    spec_value = getattr(env.spec, field) if field in SPEC_LIMITS else getattr(env.cfg, field)
    assert spec_value == value


def test_tenant_limits_cover_every_numeric_tenant_field():
    numeric = {f for f, v in vars(TenantSpec()).items() if isinstance(v, float)}
    assert numeric <= set(TENANT_LIMITS)


def test_config_limits_cover_every_size_of_envconfig():
    """Every integer size of EnvConfig has a range an override is checked against (request_log had none)."""
    import dataclasses

    sizes = {f.name for f in dataclasses.fields(gymjax.EnvConfig) if f.type in (int, "int")}
    assert sizes == set(CONFIG_LIMITS)


@pytest.mark.parametrize(
    ("task", "overrides"),
    [("static", {}), ("static", {"n_gpus": 3, "max_wait_s": 7.0}), ("bursty", {"gpu": "a100", "horizon_steps": 17}), ("azure-replay", {})],
)
def test_host_params_are_make_params_on_the_host(task, overrides):
    """The server builds a reset's params with checked_spec + host_params: the same checks as
    gymjax.make (a bad override is refused the same way) and the same values, leaf by leaf."""
    import jax

    from gymjax.registry import checked_spec
    from gymjax.tasks import host_params

    _, params = gymjax.make(task, **overrides)
    host = host_params(checked_spec(task, **overrides))
    assert jax.tree.structure(host) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(params), strict=True):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(InvalidTaskField, match="n_gpus"):
        checked_spec(task, n_gpus=0.5)
