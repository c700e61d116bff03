"""Exact measurement: the opt-in per-request log, whole-episode latency percentiles from the episode's
histograms, and trace replay that drains (no wrap-around past the trace's end)."""

import jax
import numpy as np
import pytest

import gymjax
from gymjax.physics.accounting import episode_latency_percentiles
from gymjax.physics.numerics import argmax_first, hist_add, hist_bin, hist_quantile, running_first_argmax
from gymjax.rollout import rollout
from gymjax.types import REQUEST_LOG_COLUMNS

N_REQUESTS = 60
LOG_ROWS = 32


def nearest_rank(x, q):
    xs = np.sort(np.asarray(x))
    return xs[int(np.ceil(q * len(xs))) - 1]


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """A 12 s trace replayed for 12 + 30 s (the default drain) with the request log on: the trace, the
    per-step logs and the final episode statistics."""
    rng = np.random.default_rng(3)
    arrival = np.round(np.sort(rng.uniform(0.0, 12.0, N_REQUESTS)), 3)
    prompt, output = rng.integers(16, 1500, N_REQUESTS), rng.integers(2, 200, N_REQUESTS)
    path = tmp_path_factory.mktemp("m") / "m.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n"
                    + "".join(f"{a:.3f},{p},{o}\n" for a, p, o in zip(arrival, prompt, output, strict=True)))
    env, params = gymjax.make("trace", path=str(path), n_slots=16, queue_cap=64, request_log=LOG_ROWS)
    n_steps = int(params.horizon_steps)
    policy = lambda key, obs, st: env.encode_action(env.default_action())  # noqa: E731

    def record(s):
        return s.info["requests"], s.info["episode"], s.info["counters"]

    (logs, episodes, counters) = jax.device_get(
        jax.jit(lambda key: rollout(env, params, policy, key, n_steps, record=record)[1])(jax.random.PRNGKey(0)))
    return dict(arrival=arrival - arrival[0], prompt=prompt, output=output, logs=logs, counters=counters,
                episode=jax.tree.map(lambda x: x[-1], episodes), n_steps=n_steps)


def test_a_trace_past_its_end_drains_and_does_not_wrap(replay):
    c = replay["counters"]
    assert replay["n_steps"] == 12 + 30
    assert c["arrived"][-1] == N_REQUESTS and np.all(np.diff(c["arrived"]) >= 0)  # replayed once, not again
    assert c["finished"][-1] == N_REQUESTS and c["waiting"][-1] == 0 and c["running"][-1] == 0


def test_the_request_log_holds_every_finished_request_exactly(replay):
    logs = replay["logs"]
    count = logs["count"]
    assert count.max() <= LOG_ROWS and count.sum() == N_REQUESTS
    rows = np.concatenate([logs["rows"][t, : count[t]] for t in range(len(count))])
    col = {name: rows[:, i] for i, name in enumerate(REQUEST_LOG_COLUMNS)}
    order = np.lexsort((col["prompt_tokens"], col["arrival_s"]))
    trace_order = np.lexsort((replay["prompt"], replay["arrival"]))
    np.testing.assert_allclose(col["arrival_s"][order], replay["arrival"][trace_order], atol=2e-3)  # the trace's own times
    np.testing.assert_array_equal(col["prompt_tokens"][order], replay["prompt"][trace_order])
    np.testing.assert_array_equal(col["output_tokens"][order], replay["output"][trace_order])
    assert np.all(col["tenant"] == 0)
    assert np.all(col["arrival_s"] < col["first_token_s"]) and np.all(col["first_token_s"] < col["finish_s"])


def test_episode_percentiles_match_the_log_within_two_percent(replay):
    logs, ep = replay["logs"], replay["episode"]
    rows = np.concatenate([logs["rows"][t, : logs["count"][t]] for t in range(len(logs["count"]))])
    arrival, first, finish, out = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 4]
    exact = {"ttft": first - arrival, "e2e": finish - arrival, "tpot": (finish - first) / (out - 1)}
    got = jax.device_get(episode_latency_percentiles(ep))
    for name, x in exact.items():
        for q in (0.5, 0.9, 0.99):
            want = nearest_rank(x, q)
            assert abs(got[f"{name}_p{round(q * 100)}_s"] / want - 1) < 0.02, (name, q, got, want)
    assert ep.hist_e2e.sum() == N_REQUESTS and ep.hist_ttft.sum() == N_REQUESTS
    assert got["itl_p50_s"] > 0 and got["tpot_p99_s"] >= got["tpot_p50_s"]


def test_histogram_quantiles_are_within_half_a_bin():
    rng = np.random.default_rng(0)
    H = gymjax.EnvConfig().n_hist
    samples = [np.exp(rng.normal(rng.uniform(-6, 5), rng.uniform(0.05, 2.0), int(rng.integers(1, 400)))) for _ in range(64)]
    bins = np.asarray(jax.jit(hist_bin, static_argnums=1)(np.concatenate(samples).astype(np.float32), H))
    which = np.repeat(np.arange(len(samples)), [len(x) for x in samples])
    hists = np.zeros((len(samples), H), np.float32)
    np.add.at(hists, (which, bins), 1.0)
    for q in (0.5, 0.9, 0.99):
        got = np.asarray(jax.jit(hist_quantile, static_argnums=1)(hists, q))
        want = np.array([nearest_rank(x, q) for x in samples])
        inside = (want > 1e-3) & (want < 1e3)
        assert inside.sum() > 40
        np.testing.assert_array_less(np.abs(got / want - 1)[inside], 0.0185)
    assert float(hist_quantile(np.zeros(H, np.float32), 0.5)) == 0.0


def test_running_first_argmax_is_the_first_argmax_of_every_prefix():
    """The engine's busy-period search (prefill_timeline): under vmap, with ties (earliest wins)."""
    rng = np.random.default_rng(1)
    score = rng.integers(0, 5, (64, 16)).astype(np.float32)  # small integers: many ties
    score[:, 0] = -1.0e9  # an empty-looking first entry
    payload = rng.normal(size=(64, 16)).astype(np.float32)
    got_idx, got_val = jax.jit(jax.vmap(lambda s, v: running_first_argmax(s, jax.numpy.arange(16.0), v)))(score, payload)
    mask = np.tril(np.ones((16, 16), bool))
    want_idx = np.asarray(argmax_first(np.where(mask[None], score[:, None, :], -np.inf)))
    np.testing.assert_array_equal(np.asarray(got_idx), want_idx)
    np.testing.assert_array_equal(np.asarray(got_val), np.take_along_axis(payload, want_idx, 1))


def test_hist_add_writes_only_nonzero_counts_and_matches_a_plain_scatter():
    rng = np.random.default_rng(2)
    H = 384
    hist = rng.integers(0, 9, (8, H)).astype(np.float32)
    x = np.exp(rng.uniform(-8, 8, (8, 64))).astype(np.float32)
    count = (rng.uniform(size=(8, 64)) < 0.3).astype(np.float32)
    got = np.asarray(jax.jit(jax.vmap(hist_add))(hist, x, count))
    want = hist.copy()
    bins = np.asarray(jax.jit(hist_bin, static_argnums=1)(x, H))
    for c in range(8):
        np.add.at(want[c], bins[c], count[c])
    np.testing.assert_array_equal(got, want)
    assert got.sum() == hist.sum() + count.sum()
