"""The reference simulator (gymjax.reference) against hand-computed schedules.

Every expected time below is built here from the roofline's own functions (iter_time and the
attention FLOPs of each chunk), following the vLLM rule the test names; the simulator must land
on it exactly (float32 roofline: rel 1e-5).
"""

import math

import numpy as np
import pytest

from gymjax import reference as ref
from gymjax.physics import deployment, roofline, speculation
from gymjax.types import ServeAction

REL = 1e-5


@pytest.fixture(scope="module")
def static_env(make_env):
    return make_env("static", **{"n_slots": 16, "queue_cap": 32, "max_arrivals": 16, "horizon_steps": 8})


def action(batch_cap=16, pd=2, k=0, priority=0, tier=0):
    """vLLM's defaults: 90 % of HBM, BF16; ``pd`` 2 = colocated chunked prefill at 2048 tokens."""
    return ServeAction.create(
        batch_cap=np.int32(batch_cap),
        kv_budget_fraction=np.float32(0.9),
        speculation_depth=np.int32(k),
        quantization_tier=np.int32(tier),
        prefill_decode_split=np.int32(pd),
        priority_routing=np.int32(priority),
    )


class Roofline:
    """The expected iteration time of a hand-built batch."""

    def __init__(self, env, act):
        self.params = env[1]
        self.plan = deployment.plan(env[0].cfg, self.params, act)
        self.share = float(self.params.tensor_parallel / self.params.n_gpus)  # one replica

    def t(self, n_tokens, attn_flops, kv_tokens):
        return float(roofline.iter_time(self.params, self.plan, n_tokens, attn_flops, kv_tokens * self.plan.kv_bytes_per_token, self.share))

    def prefill(self, *chunks):
        """Prefill chunks (n, k): n new tokens over k cached, attention summed per request."""
        return self.t(
            sum(n for n, _ in chunks),
            sum(float(roofline.prefill_attn_flops(self.params, n, k)) for n, k in chunks),
            sum(k for _, k in chunks),
        )

    def decode(self, *ctx, prefill=()):
        """One token for each decoding context, plus prefill chunks (n, k) in the same iteration."""
        attn = float(roofline.decode_attn_flops(self.params, 1.0, sum(ctx)))
        attn += sum(float(roofline.prefill_attn_flops(self.params, n, k)) for n, k in prefill)
        return self.t(len(ctx) + sum(n for n, _ in prefill), attn, sum(ctx) + sum(k for _, k in prefill))


def run(env, reqs, act=None, **kw):
    return ref.simulate(reqs, env[0].cfg, env[1], action() if act is None else act, record_iterations=True, **kw)


def reqs(*rows):
    """Requests from (arrival s, prompt tokens, output tokens) rows."""
    a, p, o = zip(*rows, strict=True)
    return ref.Requests.from_arrays(a, p, o)


@pytest.mark.parametrize("tier", [0, 1])  # BF16, FP8: the tier reaches the roofline through the plan
def test_one_request_alone_ttft_is_one_prefill_and_tpot_the_decode_steps(static_env, tier):
    act = action(tier=tier)
    rf = Roofline(static_env, act)
    res = run(static_env, [(0.3, 512, 4)], act)  # rows work as well as Requests
    t_prefill = rf.prefill((512, 0))
    decodes = [rf.decode(512), rf.decode(513), rf.decode(514)]
    r = res.requests
    assert r["ttft_s"][0] == pytest.approx(t_prefill, rel=REL)
    assert r["first_token_s"][0] == pytest.approx(0.3 + t_prefill, rel=REL)
    assert r["finish_s"][0] == pytest.approx(0.3 + t_prefill + sum(decodes), rel=REL)
    assert r["tpot_s"][0] == pytest.approx(sum(decodes) / 3, rel=REL)
    np.testing.assert_allclose(np.sort(res.itl_s), np.sort(decodes), rtol=REL)
    assert r["generated_tokens"][0] == 4 and r["status"][0] == ref.FINISHED
    assert len(res.iterations["t_start"]) == 4  # one prefill, three decodes: one event per iteration


def test_a_request_arriving_mid_iteration_waits_for_it(static_env):
    rf = Roofline(static_env, action())
    t_a = rf.prefill((512, 0))
    res = run(static_env, reqs((0.0, 512, 4), (0.5 * t_a, 256, 2), (0.6 * t_a, 128, 2)))
    # B and C arrived during A's prefill: both start at its end, in one iteration with A's first decode
    t_mixed = rf.decode(512, prefill=((256, 0), (128, 0)))
    r = res.requests
    assert r["first_token_s"][1] == pytest.approx(t_a + t_mixed, rel=REL)
    assert r["first_token_s"][2] == pytest.approx(t_a + t_mixed, rel=REL)
    assert r["ttft_s"][1] == pytest.approx(0.5 * t_a + t_mixed, rel=REL)
    # and A's first decode token came out of that same mixed iteration
    assert r["finish_s"][0] > r["first_token_s"][1]


def test_token_budget_splits_a_long_prompt_into_chunks(static_env):
    rf = Roofline(static_env, action(pd=2))  # budget 2048
    res = run(static_env, reqs((0.0, 5000, 1)))
    expected = rf.prefill((2048, 0)) + rf.prefill((2048, 2048)) + rf.prefill((904, 4096))
    assert res.requests["ttft_s"][0] == pytest.approx(expected, rel=REL)
    np.testing.assert_array_equal(res.iterations["n_prefill_tokens"], [2048, 2048, 904])


def test_batched_prefill_attention_is_summed_per_request(static_env):
    rf = Roofline(static_env, action(pd=3))  # budget 8192: four 2048-token prompts in one iteration
    res = run(static_env, reqs(*[(0.0, 2048, 1)] * 4), action(pd=3))
    per_request = rf.prefill(*[(2048, 0)] * 4)
    one_causal_chunk = rf.t(8192, float(roofline.prefill_attn_flops(rf.params, 8192, 0)), 0)
    np.testing.assert_allclose(res.requests["ttft_s"], per_request, rtol=REL)
    assert per_request < one_causal_chunk
    assert len(res.iterations["t_start"]) == 1


def test_prefill_first_stalls_every_decode(static_env):
    rf = Roofline(static_env, action())
    t_a = rf.prefill((512, 0))
    d1, d2 = rf.decode(512), rf.decode(513)
    t_arrive_b = t_a + d1 + 0.5 * d2  # B arrives while A's second decode is in flight
    rows = ((0.0, 512, 8), (t_arrive_b, 1024, 2))
    res = run(static_env, reqs(*rows), scheduler="prefill_first")
    it = res.iterations
    # the iteration after A's second decode prefills B alone: no decode in it
    assert it["n_decode"][3] == 0 and it["n_prefill_tokens"][3] == 1024
    t_pf_b = rf.prefill((1024, 0))
    assert res.requests["first_token_s"][1] == pytest.approx(t_a + d1 + d2 + t_pf_b, rel=REL)
    # A's gap across it: B's prefill, then a decode of A (514 cached) and B (1024 cached)
    assert res.itl_s.max() == pytest.approx(t_pf_b + rf.decode(514, 1024), rel=REL)
    # chunked prefill instead carries B's prompt in a decode iteration of A
    chunked = run(static_env, reqs(*rows), scheduler="chunked")
    assert (chunked.iterations["n_decode"][1:] > 0).all()
    assert chunked.itl_s.max() == pytest.approx(rf.decode(514, prefill=((1024, 0),)), rel=REL)


def test_prefill_first_rejects_a_prompt_longer_than_the_budget(static_env):
    res = run(static_env, reqs((0.0, 4096, 2), (0.0, 100, 2)), scheduler="prefill_first")  # budget 2048
    assert list(res.requests["status"]) == [ref.REJECTED, ref.FINISHED]
    assert res.summary["rejected"] == 1


def test_kv_exhaustion_preempts_the_newest_and_recomputes_it(static_env):
    # pool of 8 blocks (128 tokens); two 32-token prompts decoding 64 tokens each need 6 blocks apiece.
    # Decode step n needs ceil((32 + n) / 16) blocks each: at n = 33 A needs its 5th block with none
    # free, and B (the newest) is preempted having computed 32 + 32 tokens and emitted 33.
    rf = Roofline(static_env, action())
    res = run(static_env, reqs((0.0, 32, 64), (0.0, 32, 64)), pool_blocks=8)
    r = res.requests
    assert res.counters["preemptions"] == 1 and res.counters["recomputed_tokens"] == 64
    assert list(r["preemptions"]) == [0, 1]
    assert list(r["generated_tokens"]) == [64, 64] and (r["status"] == ref.FINISHED).all()
    assert res.counters["max_kv_blocks_used"] <= 8
    # B's first token is unchanged by the preemption; it resumes only after A finishes (no room before)
    assert r["first_token_s"][1] == pytest.approx(rf.prefill((32, 0), (32, 0)), rel=REL)
    it = res.iterations
    resume = np.flatnonzero(it["n_prefill_tokens"] == 32 + 33)
    assert resume.size == 1 and it["t_start"][resume[0]] == pytest.approx(r["finish_s"][0], rel=REL)
    # A alone decoded from the preemption on: its steps 33..63 hold only its own context
    assert r["finish_s"][0] == pytest.approx(
        rf.prefill((32, 0), (32, 0))
        + sum(rf.decode(32 + n - 1, 32 + n - 1) for n in range(1, 33))
        + sum(rf.decode(32 + n - 1) for n in range(33, 64)),
        rel=REL,
    )


def test_batch_cap_holds_requests_back(static_env):
    res = run(static_env, reqs((0.0, 64, 3), (0.0, 64, 3), (0.0, 64, 3)), action(batch_cap=2))
    r = res.requests
    assert r["first_token_s"][2] >= max(r["finish_s"][:2])
    assert (res.iterations["running"] <= 2).all()


def test_speculation_emits_expected_tokens_per_verification(static_env):
    k = 2
    act = action(k=k)
    rf = Roofline(static_env, act)
    res = run(static_env, reqs((0.0, 512, 12)), act)
    alpha = float(speculation.acceptance(static_env[1])[0])
    e = (1 - alpha ** (k + 1)) / (1 - alpha)
    # tokens per verification: the carried fraction of E(k), capped by what is left of the output
    credit, left, emitted = 0.0, 11, []
    while left > 0:
        credit += e
        m = math.floor(credit + 1e-9)
        credit -= m
        emitted.append(min(m, left))
        left -= emitted[-1]
    it = res.iterations
    assert len(it["t_start"]) == 1 + len(emitted)
    t_verif = float(speculation.verification_time(rf.params, rf.plan, 1.0, 512.0, 1.0, float(k)))
    assert it["t_end"][1] - it["t_start"][1] == pytest.approx(t_verif, rel=REL)
    assert res.requests["generated_tokens"][0] == 12
    # sampled acceptance: deterministic per seed, and still exactly the output length
    a = run(static_env, reqs((0.0, 512, 40)), act, spec_sampling="sample", seed=3)
    b = run(static_env, reqs((0.0, 512, 40)), act, spec_sampling="sample", seed=3)
    assert a.requests["finish_s"][0] == b.requests["finish_s"][0] and a.requests["generated_tokens"][0] == 40


def test_conservation_and_determinism(static_env):
    w = ref.poisson_requests(20.0, 3.0, prompt_tokens=256, output_tokens=32, seed=1)
    a = run(static_env, w, max_wait_s=1.0)
    b = run(static_env, w, max_wait_s=1.0)
    st = a.requests["status"]
    assert len(st) == len(w) > 20
    assert (st == ref.FINISHED).sum() + (st == ref.REJECTED).sum() + (st == ref.TIMED_OUT).sum() == len(w)
    fin = st == ref.FINISHED
    assert (a.requests["generated_tokens"][fin] == 32).all()
    assert (a.requests["first_token_s"][fin] >= a.requests["arrival_s"][fin]).all()
    assert (a.requests["finish_s"][fin] >= a.requests["first_token_s"][fin]).all()
    for key in ("first_token_s", "finish_s", "status"):
        np.testing.assert_array_equal(a.requests[key], b.requests[key])
    assert a.summary == b.summary
    assert a.summary["finished"] == fin.sum() and a.summary["ttft_p50_s"] > 0 and a.summary["itl_p99_s"] >= a.summary["itl_p50_s"]
    # the same seed draws the same workload, another seed another one
    np.testing.assert_array_equal(ref.poisson_requests(20.0, 3.0, 256, 32, seed=1).arrival_s, w.arrival_s)
    other = ref.poisson_requests(20.0, 3.0, 256, 32, seed=2).arrival_s
    assert other.shape != w.arrival_s.shape or not np.array_equal(other, w.arrival_s)


def test_replicas_share_the_load(make_env):
    env = make_env("static", n_slots=16, n_gpus=2)
    rf = Roofline(env, action())
    res = run(env, reqs((0.0, 512, 2), (0.0, 512, 2)))
    assert sorted(res.requests["replica"]) == [0, 1]
    np.testing.assert_allclose(res.requests["ttft_s"], rf.prefill((512, 0)), rtol=REL)  # each replica prefills one alone


def test_bad_inputs_raise_clear_errors(static_env):
    with pytest.raises(ValueError, match="sorted"):
        ref.Requests(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1]), np.array([0, 0], np.int32))
    with pytest.raises(TypeError, match="rows"):
        run(static_env, "trace.csv")
    with pytest.raises(ValueError, match="tenant"):
        run(static_env, ref.Requests.from_arrays([0.0], [10], [10], [3]))
    with pytest.raises(NotImplementedError, match="disaggregated"):
        run(static_env, reqs((0.0, 10, 10)), action(pd=4))
    with pytest.raises(ValueError, match="scheduler"):
        run(static_env, reqs((0.0, 10, 10)), scheduler="fifo")
    res = run(static_env, reqs((0.0, 100, 100)), pool_blocks=4)  # 200 tokens never fit 64
    assert res.requests["status"][0] == ref.REJECTED


def test_reference_command_serves_a_trace_csv(tmp_path, capsys):
    from inferencegym.sim import reference as reference_cmd

    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,300,5\n0.01,200,4\n0.5,100,3\n")
    out = tmp_path / "out.csv"
    assert reference_cmd([str(trace), "--gpu", "a100", "--batch-cap", "16", "--csv", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert "3 requests on llama-3-8b / 1xa100" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0].startswith("arrival_s,first_token_s,finish_s") and len(lines) == 4
    import json

    assert json.loads((tmp_path / "s.json").read_text())["finished"] == 3


def test_priority_routing_admits_the_higher_priority_tenant_first(make_env):
    env = make_env("adversarial", n_slots=16)  # tenants: agent (priority 3), code (2), chat (1)
    w = ref.Requests.from_arrays([0.0, 0.001, 0.002], [64, 64, 64], [4, 4, 4], [2, 2, 0])
    fcfs = run(env, w, action(batch_cap=1, priority=0))
    prio = run(env, w, action(batch_cap=1, priority=1))
    assert fcfs.requests["first_token_s"][1] < fcfs.requests["first_token_s"][2]
    assert prio.requests["first_token_s"][2] < prio.requests["first_token_s"][1]
    assert prio.requests["first_token_s"][2] > prio.requests["finish_s"][0]  # the batch cap of 1 held it until A finished
