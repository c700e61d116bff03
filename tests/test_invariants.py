"""benchmarks.invariants: its checks catch what they claim to, and a short run finds nothing."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.invariants import CHECKS, check_task, corner_actions, violations
from gymjax.rollout import Step
from tests.contract import TINY


def test_corner_actions_are_every_knob_at_either_end():
    c = corner_actions((3, 2, 5))
    assert c.shape == (8, 3) and {tuple(r) for r in c} == {(a, b, d) for a in (0, 2) for b in (0, 1) for d in (0, 4)}


def test_each_check_flags_a_broken_step_and_passes_a_sound_one(small_static, jit_step):
    env, params = small_static
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    a = env.encode_action(env.default_action())
    nobs, nst, r, te, tr, info = jit_step(env)(jax.random.PRNGKey(1), st, a, params)
    sound = Step(obs, st, a, nobs, nst, r, te, tr, info)
    box = env.observation_space(params)
    low, high = jnp.asarray(box.low), jnp.asarray(box.high)

    def flags(step):
        got, _ = violations(step, low, high)
        return {k: int(v) for k, v in got.items()}

    assert flags(sound) == dict.fromkeys(CHECKS, 0)
    m = info["metrics"]
    broken = {
        "kv_occupancy": sound._replace(info={**info, "metrics": m.replace(kv_occupancy=jnp.float32(1.0002))}),
        "conservation": sound._replace(info={**info, "counters": {**info["counters"], "dropped": info["counters"]["dropped"] + 1}}),
        "finite": sound._replace(reward=jnp.float32(np.nan)),
        "bounds": sound._replace(next_obs=nobs.at[0].set(1.5)),
    }
    for check, step in broken.items():
        got = flags(step)
        assert got[check] == 1, (check, got)
    # the peak blocks in use over the pool is caught too, and a NaN in the state
    assert flags(sound._replace(info={**info, "kv_blocks_used_max": info["kv_pool_blocks"] + 1}))["kv_occupancy"] == 1
    assert flags(sound._replace(next_state=nst.replace(t_now=jnp.float32(np.inf))))["finite"] == 1


def test_a_short_run_of_random_and_corner_actions_finds_no_violation():
    row = check_task("bursty", 8 * 16, n_clusters=8, n_steps=16, overrides=TINY)
    assert row["env_steps"] == 128 and row["violations"] == dict.fromkeys(CHECKS, 0), row
    assert 0.0 < row["max_kv_occupancy"] <= 1.0
