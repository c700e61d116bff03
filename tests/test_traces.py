"""Trace loading, validation, binning, and the trace-replay tasks (azure-replay, trace)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import gymjax
from gymjax import traces
from gymjax.rollout import rollout
from gymjax.trace_tasks import azure_trace, length_dist, user_trace_spec
from gymjax.traces import Trace, TraceFormatError, bin_trace, load_trace, merge_traces, scale_time
from inferencegym.cli import main

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def test_load_azure_format(tmp_path):
    p = write(tmp_path, f"{AZURE_HEADER}\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n"
              "2023-11-16 18:17:05.5,110,27")  # no trailing newline, fewer fractional digits
    tr = load_trace(p)
    assert tr.n_requests == 3 and tr.n_tenants == 1 and tr.tenant_names == ("t",)
    np.testing.assert_allclose(np.diff(tr.arrival_s), [0.052, 1.46804], atol=1e-6)
    # seconds since the Unix epoch, read as UTC
    assert abs(tr.arrival_s[0] - 1700158623.97996) < 1e-5
    assert tr.prompt_tokens.tolist() == [4808, 3180, 110] and tr.output_tokens.tolist() == [10, 8, 27]


def test_load_generic_format_with_tenant_names_and_ids(tmp_path):
    p = write(tmp_path, "arrival_s,prompt_tokens,output_tokens,tenant\n-1.5,10,2,chat\n0.0,20,3,code\n\n0.25,30,4,chat\n")
    tr = load_trace(p)
    assert tr.tenant_names == ("chat", "code")  # order of first appearance
    assert tr.tenant.tolist() == [0, 1, 0]
    assert tr.arrival_s.tolist() == [-1.5, 0.0, 0.25]  # any origin
    assert tr.prompt_tokens.tolist() == [10, 20, 30] and tr.output_tokens.tolist() == [2, 3, 4]
    # integer ids map to rows in ascending order; columns may come in any order
    p2 = write(tmp_path, "tenant,output_tokens,arrival_s,prompt_tokens\n7,5,0.0,100\n3,6,1.0,200\n7,7,2.0,300.0\n", "ids.csv")
    tr2 = load_trace(p2)
    assert tr2.tenant_names == ("3", "7") and tr2.tenant.tolist() == [1, 0, 1]
    assert tr2.prompt_tokens.tolist() == [100, 200, 300]
    # no tenant column: one tenant named after the file
    tr3 = load_trace(write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n0,1,1\n", "solo.csv"))
    assert tr3.tenant_names == ("solo",) and tr3.n_requests == 1


GEN = "arrival_s,prompt_tokens,output_tokens"
MALFORMED = {
    # name: (content, line, column, words in the message)
    "empty file": ("", 1, 1, "empty"),
    "blank file": ("\n \n", 1, 1, "empty"),
    "header only": (f"{GEN}\n", 2, 1, "no requests"),
    "missing column": ("arrival_s,prompt_tokens\n0,1\n", 1, 3, "missing column 'output_tokens'"),
    "azure missing column": ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.9,5\n", 1, 3, "GeneratedTokens"),
    "unknown column": (f"{GEN},tenantt\n0,1,1,a\n", 1, 4, "unknown column"),
    "duplicate column": (f"{GEN},prompt_tokens\n0,1,1,1\n", 1, 4, "duplicate"),
    "missing value": (f"{GEN}\n0,10,2\n1,10\n", 3, 3, "missing value"),
    "extra value": (f"{GEN}\n0,10,2,9\n", 2, 4, "extra value"),
    "non-numeric arrival": (f"{GEN}\n0,10,2\nsoon,10,2\n", 3, 1, "non-numeric"),
    "nan arrival": (f"{GEN}\nnan,10,2\n", 2, 1, "non-finite"),
    "non-numeric tokens": (f"{GEN}\n0,ten,2\n", 2, 2, "non-numeric"),
    "fractional tokens": (f"{GEN}\n0,10,2.5\n", 2, 3, "whole number"),
    "zero tokens": (f"{GEN}\n0,10,2\n1,10,0\n", 3, 3, "positive"),
    "negative tokens": (f"{GEN}\n0,-10,2\n", 2, 2, "positive"),
    "non-monotone arrival": (f"{GEN}\n0,10,2\n5,10,2\n4.9,10,2\n", 4, 1, "earlier"),
    "empty tenant": (f"{GEN},tenant\n0,10,2,a\n1,10,2,\n", 3, 4, "empty tenant"),
    "unparsable timestamp": (f"{AZURE_HEADER}\n2023-11-16 18:17:03.9799600,1,1\n16/11/2023 18:17,1,1\n", 3, 1, "unparsable timestamp"),
    "invalid date": (f"{AZURE_HEADER}\n2023-13-16 18:17:03.9799600,1,1\n", 2, 1, "invalid date"),
    "non-monotone timestamp": (f"{AZURE_HEADER}\n2023-11-16 18:17:03.9799600,1,1\n2023-11-16 18:17:03.9799599,1,1\n", 3, 1, "earlier"),
    "azure zero tokens": (f"{AZURE_HEADER}\n2023-11-16 18:17:03.9799600,0,1\n", 2, 2, "positive"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_line_column(tmp_path, case):
    content, line, column, words = MALFORMED[case]
    p = write(tmp_path, content, "bad_trace.csv")
    with pytest.raises(TraceFormatError) as ei:
        load_trace(p)
    msg = str(ei.value)
    assert str(p) in msg, msg
    assert f"line {line}," in msg, msg
    assert f"column {column}" in msg, msg
    assert words in msg, msg
    assert (ei.value.line, ei.value.column) == (line, column)
    assert isinstance(ei.value, ValueError)


def test_packaged_traces_load_from_the_package():
    for name, rows in (("azure-code", 8819), ("azure-conv", 19366)):
        res = traces.packaged_trace_path(name)
        with __import__("importlib").resources.as_file(res) as p:
            assert Path(gymjax.__file__).parent in Path(p).resolve().parents  # inside the package, not /work/shared
        tr = traces.load_packaged_trace(name)
        assert tr.n_requests == rows
        assert np.all(np.diff(tr.arrival_s) >= 0) and tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1
    readme = __import__("importlib").resources.files("gymjax").joinpath("data", "README.md").read_text()
    assert "CC-BY 4.0" in readme and "Azure/AzurePublicDataset" in readme and "Patel" in readme


@pytest.fixture(scope="module")
def azure():
    return azure_trace()


def test_azure_statistics_match_the_published_ones(azure):
    st = traces.trace_stats(azure)
    assert st["code"]["prompt_p50"] == 1469 and st["code"]["output_p50"] == 13
    assert st["conv"]["prompt_p50"] == 1020 and st["conv"]["output_p50"] == 129
    assert st["code"]["interarrival_cv"] > 10 > 2 > st["conv"]["interarrival_cv"]
    assert st["code"]["max_per_s"] == 67 and st["conv"]["max_per_s"] == 16
    d = length_dist(azure, "code", "prompt")
    q = gymjax.LengthDist(samples=d.samples, cap=d.cap).quantiles(64)
    assert abs(np.median(q) - 1469) < 150 and d.cap == 7437


# --------------------------------------------------------------------------------------------------
# binning
# --------------------------------------------------------------------------------------------------


def random_trace(seed: int, n: int = 500, T: int = 3) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.exponential(0.3, n).cumsum() + 1000.0)
    return Trace(t, rng.integers(1, 5000, n), rng.integers(1, 900, n), rng.integers(0, T, n).astype(np.int32),
                 tuple(f"t{i}" for i in range(T)))


def unbin(b: dict, dt: float, origin: float):
    """Per tenant: arrival times, prompts, outputs reconstructed from the bins, in bin/rank order."""
    out = []
    for t in range(b["count"].shape[1]):
        ts, ps, os_ = [], [], []
        for k in range(b["count"].shape[0]):
            n = b["count"][k, t]
            ts += list(origin + k * dt + b["offset_s"][k, t, :n].astype(np.float64))
            ps += list(b["prompt"][k, t, :n])
            os_ += list(b["output"][k, t, :n])
        out.append((np.array(ts), np.array(ps), np.array(os_)))
    return out


@pytest.mark.parametrize("dt", [1.0, 0.5, 2.5])
def test_binning_conserves_requests_order_and_offsets(dt):
    tr = random_trace(0)
    b = bin_trace(tr, dt)
    A = b["offset_s"].shape[2]
    assert b["count"].sum() == tr.n_requests and b["count"].max() == A
    assert b["count"].dtype == np.int32 and b["prompt"].dtype == np.int32 and b["offset_s"].dtype == np.float32
    valid = np.arange(A)[None, None, :] < b["count"][..., None]
    assert np.all((b["offset_s"][valid] >= 0) & (b["offset_s"][valid] < dt)) and np.all(b["offset_s"][~valid] == dt)
    assert np.all((b["offset_s"][..., 1:] >= b["offset_s"][..., :-1])[valid[..., 1:]])  # ascending within a bin
    assert np.all(b["prompt"][~valid] == 1) and np.all(b["output"][~valid] == 1)
    for t, (ts, ps, os_) in enumerate(unbin(b, dt, tr.arrival_s[0])):
        m = tr.tenant == t
        np.testing.assert_allclose(ts, tr.arrival_s[m], atol=1e-4)
        assert ps.tolist() == tr.prompt_tokens[m].tolist() and os_.tolist() == tr.output_tokens[m].tolist()


def test_binning_tenant_selection_origin_and_truncation():
    tr = random_trace(1, n=300, T=3)
    b = bin_trace(tr, 1.0, tenants=["t2", 0], origin_s=990.0)
    assert b["count"][:, 0].sum() == (tr.tenant == 2).sum() and b["count"][:, 1].sum() == (tr.tenant == 0).sum()
    assert b["count"][:10].sum() == 0  # 10 s of silence before the first arrival at ~1000 s
    cut = bin_trace(tr, 5.0, max_arrivals=3)
    full = bin_trace(tr, 5.0)
    assert cut["offset_s"].shape[2] == 3 and full["offset_s"].shape[2] > 3
    np.testing.assert_array_equal(cut["count"], full["count"])  # true counts; the env drops the excess
    np.testing.assert_array_equal(cut["prompt"], full["prompt"][..., :3])
    with pytest.raises(ValueError, match="after the first arrival"):
        bin_trace(tr, 1.0, origin_s=2000.0)
    with pytest.raises(ValueError, match="unknown tenant"):
        bin_trace(tr, 1.0, tenants=["nope"])


def test_merge_aligns_on_a_common_origin_and_scale_time_keeps_the_shape(azure):
    code, conv = azure.select("code"), azure.select("conv")
    assert code.n_requests + conv.n_requests == azure.n_requests
    b = bin_trace(azure, 1.0)
    # the conversation trace starts first (18:15:46.68); the code trace 77.3 s later (18:17:03.98)
    first_code_bin = int(np.argmax(b["count"][:, 0] > 0))
    lag = code.arrival_s[0] - conv.arrival_s[0]
    assert 77.0 < lag < 77.5 and first_code_bin == int(lag)
    np.testing.assert_allclose(b["offset_s"][first_code_bin, 0, 0], lag - int(lag), atol=1e-4)
    remerged = merge_traces([conv, code])
    assert remerged.tenant_names == ("conv", "code") and remerged.n_requests == azure.n_requests
    fast = scale_time(azure, 2.0)
    np.testing.assert_allclose(np.diff(fast.arrival_s), np.diff(azure.arrival_s) / 2.0, atol=1e-6)
    assert fast.prompt_tokens is azure.prompt_tokens and abs(fast.duration_s - azure.duration_s / 2) < 1e-6
    bf = bin_trace(fast, 1.0)
    assert bf["count"].sum() == azure.n_requests and bf["count"].shape[0] == int(azure.duration_s / 2) + 1


# --------------------------------------------------------------------------------------------------
# replay tasks
# --------------------------------------------------------------------------------------------------

H = 12


def episode_fn(env, params, horizon: int):
    """Jitted: one episode of the default action (gymjax.rollout) -> start bin, per-step cumulative
    per-tenant arrivals, counters and SLO-met counts."""
    def record(s):
        return s.state.trace_start, (s.info["episode"].arrived, s.info["counters"]["arrived"], s.info["episode"].slo_met)

    def run(key):
        _, (start, out) = rollout(env, params, lambda k, obs, st: env.default_action(), key, horizon, record=record)
        return start[0], out

    return jax.jit(run)


@pytest.fixture(scope="module")
def replay():
    env, params = gymjax.make("azure-replay", horizon_steps=H, n_slots=32)
    return env, params, episode_fn(env, params, H)


def test_azure_replay_spec(replay):
    env, params, _ = replay
    spec = env.spec
    assert env.cfg.use_trace and env.cfg.n_tenants == 2 and [t.name for t in spec.tenants] == ["code", "conv"]
    assert env.cfg.max_arrivals >= int(np.asarray(spec.trace["count"]).max())
    code, conv = spec.tenants
    assert code.spec_acceptance > conv.spec_acceptance and code.priority > conv.priority
    assert code.slo_ttft_s < conv.slo_ttft_s
    full = gymjax.make("azure-replay")[0].spec
    assert 200 <= full.horizon_steps <= 300 and full.dt_s == 1.0 and full.model == "llama-3-8b"
    assert int(np.asarray(params.trace_count).sum()) == 8819 + 19366  # every request of both traces is replayed


@pytest.mark.parametrize("seed", [0, 3])
def test_replay_arrivals_equal_the_trace_window(replay, seed):
    env, params, run = replay
    start, (arrived_t, arrived_total, _) = run(jax.random.PRNGKey(seed))
    start = int(start)
    count = np.asarray(params.trace_count)
    assert 0 <= start < count.shape[0] - H
    window = count[start:start + H]  # [H, T]
    np.testing.assert_array_equal(np.asarray(arrived_t), np.cumsum(window, axis=0))
    np.testing.assert_array_equal(np.diff(np.asarray(arrived_total), prepend=0), window.sum(1))


def test_replay_is_deterministic_and_seeds_pick_windows(replay):
    _, _, run = replay
    a = jax.tree.map(np.asarray, run(jax.random.PRNGKey(7)))
    b = jax.tree.map(np.asarray, run(jax.random.PRNGKey(7)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    starts = {int(run(jax.random.PRNGKey(s))[0]) for s in range(4)}
    assert len(starts) > 1


def test_headroom_switches_only_speculation_around_the_best_constant():
    """The headroom probe (inferencegym headroom): with ``top_slow=1`` the switching tables keep
    every knob of the best constant but the speculation depth."""
    from gymjax.trace_analysis import headroom

    out = headroom(n_seeds=3, top_slow=1, log=lambda *_: None, horizon_steps=H, n_slots=32)
    assert out["grid_size"] in (36, 72) and 0.0 < out["best_constant"]["score"][0] <= 1.0
    assert np.isfinite(out["hindsight_minus_best"]).all()
    best = {k: v for k, v in out["best_constant"]["typed"].items() if k != "speculation_depth"}
    for mode in ("trace_lookahead", "reactive"):
        assert np.isfinite(out[f"switching_{mode}_minus_best"]).all()
        table = out[f"switching_{mode}_table"]
        assert set(table) == {"quiet", "code_active"}
        for row in table.values():
            assert {k: v for k, v in row.items() if k != "speculation_depth"} == best, (row, best)


def test_user_trace_task(tmp_path):
    rng = np.random.default_rng(0)
    t = np.round(np.sort(rng.uniform(0, 30.0, 120)), 4)
    ten = rng.choice(["a", "b"], 120)
    rows = "\n".join(f"{x:.4f},{rng.integers(10, 3000)},{rng.integers(1, 300)},{n}" for x, n in zip(t, ten, strict=True))
    p = write(tmp_path, "arrival_s,prompt_tokens,output_tokens,tenant\n" + rows + "\n", "mine.csv")
    env, params = gymjax.make("trace", path=str(p), horizon_steps=8, n_slots=16)
    assert env.cfg.use_trace and env.cfg.n_tenants == 2 and env.spec.horizon_steps == 8
    count = np.asarray(params.trace_count)
    assert count.sum() == 120 and env.cfg.max_arrivals == count.max()
    start, (arrived_t, _, _) = episode_fn(env, params, 8)(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(arrived_t)[-1], count[int(start):int(start) + 8].sum(0))
    # defaults: the whole trace and 30 s to drain, when that is shorter than 200 s
    assert gymjax.task_spec("trace", path=str(p)).horizon_steps == count.shape[0] + 30
    # dt_s re-bins the user's trace; a packaged trace's binning cannot be overridden
    assert gymjax.task_spec("trace", path=str(p), dt_s=2.0).trace["count"].sum() == 120
    with pytest.raises(ValueError, match=r"binned at dt_s=1 s.*\['dt_s'\]"):
        gymjax.task_spec("azure-replay", dt_s=2.0)
    # a custom binning: 2x time compression in 2 s intervals = 4 trace seconds per interval
    spec = user_trace_spec(p, dt_s=2.0, speedup=2.0, horizon_steps=4)
    np.testing.assert_array_equal(spec.trace["count"].sum(1), np.bincount(((t - t[0]) // 4.0).astype(int)))
    assert spec.config.n_tenants == 2 and spec.dt_s == 2.0
    with pytest.raises(ValueError, match="needs a CSV"):
        gymjax.make("trace")
    with pytest.raises(TraceFormatError, match="line 2"):
        gymjax.make("trace", path=str(write(tmp_path, f"{GEN}\n0,0,1\n", "bad.csv")))



def test_stats_command_line(tmp_path, capsys):
    p = write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n0,10,1\n0.5,30,3\n20.5,20,2\n", "cli.csv")
    assert main(["traces", str(p)]) == 0
    out = capsys.readouterr().out
    assert "[cli]" in out and "requests                 3" in out and "prompt_p50               20" in out
    assert "gaps_over_10s            1" in out and "max_gap_s                20" in out
