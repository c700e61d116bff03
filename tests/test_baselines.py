"""Baselines and tuning: the speculation rule, the oracle's phase table, and the quality bar
(adaptivity is worth something on the tasks whose phases are known)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from gymjax import baselines, grading, tune
from gymjax.evaluation import run_policies
from gymjax.rollout import rollout


def _depth(env, params, choose, action, running, ctx_per_seq, weights, waiting=False):
    levels = np.asarray(next(k for k in env.knobs if k.name == "speculation_depth").levels)
    i = jax.jit(choose)(action, jnp.float32(running), jnp.float32(running * ctx_per_seq), jnp.asarray(weights, jnp.float32),
                        jnp.bool_(waiting))
    return int(levels[int(i)])


def test_speculation_by_goodput_is_deep_for_small_batches_and_off_when_compute_bound():
    env, params = gymjax.make("bursty")  # completion (acceptance 0.8) and chat (acceptance 0.3)
    choose = baselines.speculation_by_goodput(env, params)
    fp8 = gymjax.ServeAction.create(batch_cap=128, kv_budget_fraction=0.9, speculation_depth=0, quantization_tier=1,
                                    prefill_decode_split=2, priority_routing=0)
    # a few completion requests: memory-bound, every draft token nearly free -> the deepest level
    assert _depth(env, params, choose, fp8, 4, 1500, [1.0, 0.0]) == 6
    # a full batch of them: B*(k+1) tokens reach the compute ridge, so the depth comes down
    assert _depth(env, params, choose, fp8, 128, 400, [1.0, 0.0]) <= 3
    # chat's low acceptance: a rejected draft token is wasted work at any batch size
    assert all(_depth(env, params, choose, fp8, b, 400, [0.0, 1.0]) <= 1 for b in (1, 32, 128))
    # colocated chunk of 512 tokens with requests waiting: verification may not starve prefill
    chunk512 = fp8.replace(prefill_decode_split=jnp.int32(1))
    assert _depth(env, params, choose, chunk512, 100, 400, [1.0, 0.0], waiting=True) <= 1


def test_heuristic_speculates_in_quiet_phases_and_backs_off_in_bursts():
    env, params = gymjax.make("bursty")
    pol = baselines.heuristic(env, params)
    lv = np.asarray(env.knobs[2].levels)

    def run(key, phase):
        params_p = params.replace(p_on_to_off=params.p_on_to_off * 0, p_off_to_on=params.p_off_to_on * 0)
        pin = lambda obs, st: (obs, st.replace(burst_on=jnp.asarray([0, phase], jnp.int32)))  # noqa: E731
        return rollout(env, params_p, pol, key, 40, record=lambda s: s.action[2], init=pin)[1]  # speculation level per step

    depths = jax.device_get(jax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.PRNGKey(0), jnp.asarray([0, 1])))
    quiet, burst = lv[depths[0, 10:]].mean(), lv[depths[1, 10:]].mean()
    assert quiet >= 4 and burst <= 1.5, (quiet, burst)


def test_phase_probabilities_are_stationary_and_sum_to_one():
    env, params = gymjax.make("adversarial")
    mod = [1, 2]  # code and chat are Markov-modulated
    probs = tune.phase_probabilities(params, mod)
    assert set(probs) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs[(1, 1)] == pytest.approx(0.25)  # p_on_to_off == p_off_to_on: on half the time
    _, pb = gymjax.make("bursty")
    on = tune.phase_probabilities(pb, [1])[(1,)]
    assert on == pytest.approx(0.035 / (0.035 + 0.06))


def test_oracle_follows_the_hidden_phase():
    env, params = gymjax.make("bursty")
    tuned = baselines.load_tuned()["bursty"]
    pol = baselines.oracle(env, params)
    _, st = env.reset(jax.random.PRNGKey(0), params)
    for word in range(4):
        st = st.replace(burst_on=jnp.asarray([word & 1, word >> 1], jnp.int32))
        assert np.asarray(pol(None, None, st)).tolist() == tuned["phases"][word]["action"]
    # the table changes only the per-phase knobs; the others are one setting for the episode
    table = np.asarray([p["action"] for p in tuned["phases"]])
    assert (table[:, list(tune.SHARED_KNOBS)] == table[0, list(tune.SHARED_KNOBS)]).all()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["bursty", "adversarial"])
def test_adaptivity_beats_the_best_constant(task):
    """The quality bar of the tasks: switching to each phase's best setting beats the best fixed
    action on the same evaluation seeds, with the paired 95 % CI excluding zero."""
    env, params = gymjax.make(task)
    best, orc = baselines.best_constant(env, params), baselines.oracle(env, params)

    scores = run_policies(env, params, [best, orc], grading.eval_keys(16))["score"]  # one program for both
    diff = grading.summarize(scores[1] - scores[0])
    assert diff["mean"] - diff["ci95"] > 0, diff
