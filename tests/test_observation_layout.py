"""The flat observation's one layout table (gymjax.physics.observation): it covers every metric,
drives the encoding, and is what the heuristic and the PPO action reader read back."""

import dataclasses
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from gymjax import presets
from gymjax.physics import observation as ob
from ppo.networks import action_reader

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_covers_every_metric_once_in_order():
    names = [f.name for f in dataclasses.fields(gymjax.Observation)]
    assert [f.name for f in ob.OBS_SCALARS + ob.OBS_PER_TENANT] == names
    assert ob.OBS_SCALAR_FIELDS == tuple(names[: len(ob.OBS_SCALARS)])
    assert all(f.transform in ob.ENCODERS for f in ob.OBS_SCALARS + ob.OBS_PER_TENANT)


def test_gpu_memory_scale_holds_every_preset_gpu():
    assert max(g.hbm_gb for g in presets.GPUS.values()) <= ob.GPU_MEMORY_SCALE_GB


def test_no_scale_is_restated_outside_the_table():
    for rel in ("gymjax/env.py", "gymjax/baselines.py", "gymjax/engine.py", "ppo/networks.py"):
        text = (ROOT / rel).read_text()
        assert not re.search(r"\b(141\.0|200\.0)\b", text), rel


def _metrics(T):
    """An Observation with a distinct, in-range value per field."""
    vals = dict(queue_depth=27.0, running=12.0, ttft_p50_s=0.25, ttft_p99_s=3.0, itl_p50_s=0.012, itl_p99_s=0.04, tpot_p50_s=0.02,
                tpot_p99_s=0.055, throughput_tps=5300.0, prefill_tps=41000.0, kv_occupancy=0.63, gpu_memory_gb=71.5, slo_attainment=0.875,
                goodput_rps=11.0, cost_per_1k_tokens=0.16, arrival_rate=14.0, preemptions=3.0, dropped=2.0, invalid_config=0.0,
                reconfig_remaining_s=4.5, progress=0.25)
    per = dict(queue_depth_per_tenant=np.arange(1, T + 1) * 5.0, arrival_rate_per_tenant=np.arange(1, T + 1) * 3.5)
    return gymjax.Observation(**{k: jnp.float32(v) for k, v in vals.items()}, **{k: jnp.asarray(v, jnp.float32) for k, v in per.items()})


def test_layout_positions_encoding_and_read_back():
    env, params = gymjax.make("bursty", n_slots=32, queue_cap=16, max_arrivals=8)  # two tenants
    cfg = env.cfg
    m = _metrics(cfg.n_tenants)
    action = gymjax.ServeAction.create(batch_cap=16, kv_budget_fraction=0.8, speculation_depth=3, quantization_tier=1,
                                       prefill_decode_split=4, priority_routing=1)
    flat = np.asarray(env.flat_obs(m, action))
    layout = ob.obs_layout(cfg, env.knobs)
    assert flat.shape == (env.obs_dim,) == (ob.obs_dim(cfg, env.knobs),)
    covered = sorted(i for v in layout.values() for i in (range(v.start, v.stop) if isinstance(v, slice) else [v]))
    assert covered == list(range(env.obs_dim))  # every entry named exactly once
    assert np.all((flat >= 0) & (flat <= 1))
    for f in ob.OBS_SCALARS + ob.OBS_PER_TENANT:
        x = np.asarray(getattr(m, f.name))
        np.testing.assert_array_equal(flat[layout[f.name]], np.asarray(ob.encode(f, getattr(m, f.name), cfg)))
        np.testing.assert_allclose(np.asarray(ob.read(flat, f.name, cfg, env.knobs)), x, rtol=2e-5, err_msg=f.name)
    # hand-checked entries: the ratio and the log transforms with their named scales
    assert flat[layout["running"]] == pytest.approx(12.0 / 32)
    assert flat[layout["gpu_memory_gb"]] == pytest.approx(71.5 / ob.GPU_MEMORY_SCALE_GB)
    assert flat[layout["arrival_rate"]] == pytest.approx(np.log1p(14.0) / np.log1p(ob.RATE_SCALE_RPS), rel=1e-6)
    assert flat[layout["queue_depth"]] == pytest.approx(np.log1p(27.0) / np.log1p(16 * 2), rel=1e-6)
    for k in env.knobs:
        assert float(ob.read(flat, f"action.{k.name}", cfg, env.knobs)) == pytest.approx(float(getattr(action, k.name)), abs=1e-5)

    reader = action_reader(env, free_first_action=True)
    assert list(reader.positions) == [layout[f"action.{k.name}"] for k in env.knobs]
    assert reader.progress_position == layout["progress"]
    assert np.asarray(reader.current(jnp.asarray(flat))).tolist() == np.asarray(env.encode_action(action)).tolist()
