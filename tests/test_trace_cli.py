"""Your own trace from the command line, end to end, on the small shipped trace tests/data/azure_slice.csv:
``inferencegym trace stats``, ``tune --trace`` (the tuned constant saved beside the trace), ``eval --trace``
(which uses it), ``train --trace``; the overrides; the errors that point to the right command.

The commands run in this process (``inferencegym.cli.main``), at tiny sizes, so they share compilations."""

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from gymjax import baselines
from gymjax.traces import load_trace, trace_stats
from gymjax.tuned import fingerprint, side_path
from inferencegym.cli import main

SLICE = Path(__file__).parent / "data" / "azure_slice.csv"
# tiny sizes: 8 steps, 16 slots, 32 queued per tenant (max_arrivals comes from the trace)
SIZES = ["--horizon", "8", "--n-slots", "16", "--env", "queue_cap=32"]


@pytest.fixture(scope="module")
def trace_copy(tmp_path_factory):
    """The slice copied to a fresh folder (the tuning is written beside it)."""
    path = tmp_path_factory.mktemp("trace") / "slice.csv"
    shutil.copy(SLICE, path)
    return path


@pytest.fixture(scope="module")
def tuned(trace_copy):
    """``inferencegym tune --trace`` on the copy; returns the side file's contents."""
    assert main(["tune", "--trace", str(trace_copy), *SIZES, "--seeds", "1", "--refine", "2", "--refine-seeds", "2"]) == 0
    return json.loads(side_path(trace_copy).read_text())


def test_trace_stats_prints_rates_and_percentiles(capsys):
    assert main(["trace", "stats", str(SLICE)]) == 0
    out = capsys.readouterr().out
    stats = trace_stats(load_trace(SLICE))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.startswith("  ") and not line.startswith("  (req")}
    assert set(rows) == {"conv", "code", "(all)"}
    for name in ("conv", "code"):
        st = stats[name]
        requests, rate, peak, cv, prompt, output = rows[name][1:7]
        assert int(requests) == st["requests"] and float(rate) == pytest.approx(st["mean_rps"], abs=0.006)
        assert int(peak) == st["max_per_s"] and float(cv) == pytest.approx(st["interarrival_cv"], abs=0.006)
        assert prompt == "/".join(f"{st[f'prompt_{q}']:.0f}" for q in ("p50", "p90", "p99", "max"))
        assert output == "/".join(f"{st[f'output_{q}']:.0f}" for q in ("p50", "p90", "p99", "max"))
    assert int(rows["(all)"][1]) == 649 == stats["conv"]["requests"] + stats["code"]["requests"]
    with pytest.raises(SystemExit):
        main(["trace", "stats", str(SLICE.with_name("missing.csv"))])


def test_tune_writes_the_constant_beside_the_trace(trace_copy, tuned):
    env, params = gymjax.make("trace", path=str(trace_copy), horizon_steps=8, n_slots=16, queue_cap=32)
    assert tuned["fingerprint"] == fingerprint(env, params)
    assert tuned["task_args"] == {"horizon_steps": 8, "n_slots": 16, "queue_cap": 32}
    assert tuned["command"].startswith("inferencegym tune --trace ")
    action = np.asarray(tuned["best"]["action"])
    assert bool(env.action_space(params).contains(jnp.asarray(action)))
    assert 0.0 < tuned["best"]["score"] <= 1.0
    # the baselines find it for exactly this configuration
    assert baselines.available(env)[-1] == "best-constant"
    np.testing.assert_array_equal(baselines.best_constant(env, params)(None, None, None), action)
    other, other_params = gymjax.make("trace", path=str(trace_copy), horizon_steps=8, n_slots=32, queue_cap=32)
    assert "best-constant" not in baselines.available(other)
    with pytest.raises(KeyError, match=r"inferencegym tune --trace .*slice.csv"):
        baselines.best_constant(other, other_params)


def test_eval_scores_the_tuned_constant(trace_copy, tuned, tmp_path, capsys):
    out = tmp_path / "board.json"
    assert main(["eval", "--trace", str(trace_copy), *SIZES, "--seeds", "2", "--json", str(out)]) == 0
    board = json.loads(out.read_text())["board"]
    assert set(board) == {"random", "vllm-default", "heuristic", "best-constant"}
    assert all(0.0 <= r["mean"] <= 1.0 for r in board.values())
    assert board["best-constant"]["mean"] > board["random"]["mean"]
    assert "best-constant" in capsys.readouterr().out
    # another configuration than the tuned one: a clear error naming the command to rerun
    with pytest.raises(SystemExit) as e:
        main(["eval", "--trace", str(trace_copy), "--horizon", "9", "--n-slots", "16", "--env", "queue_cap=32", "--seeds", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tuned for another configuration" in err and "inferencegym tune --trace" in err


def test_train_on_the_trace(trace_copy, tuned, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        "--trace",
        str(trace_copy),
        *SIZES,
        "--num-envs",
        "4",
        "--num-steps",
        "8",
        "--total-steps",
        "64",
        "--eval-seeds",
        "0",
        "--quiet",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["task"] == "trace"
    assert config["env_kwargs"] == {"path": str(trace_copy.resolve()), "horizon_steps": 8, "n_slots": 16, "queue_cap": 32}
    assert (run / "policy.msgpack").is_file()
    # the saved policy's task is the tuned configuration, so its scoreboard (eval --policy) has the best constant
    env, params = gymjax.make(config["task"], **config["env_kwargs"])
    assert "best-constant" in baselines.available(env)


def test_overrides_reach_the_task(trace_copy):
    from inferencegym.common import make_trace_env, trace_kwargs
    from inferencegym.evaluate import build_eval_parser

    p = build_eval_parser()
    a = p.parse_args(
        [
            "--trace",
            str(trace_copy),
            "--model",
            "llama-3-70b",
            "--gpu",
            "a100",
            "--n-gpus",
            "4",
            "--slo-ttft",
            "0.7",
            "--slo-tpot",
            "0.03",
            "--speedup",
            "2",
            "--horizon",
            "10",
        ]
    )
    env, params = make_trace_env(trace_kwargs(a, p), p)
    spec = env.spec
    assert (spec.model, spec.gpu, spec.n_gpus, spec.horizon_steps) == ("llama-3-70b", "a100", 4, 10)
    assert [t.slo_ttft_s for t in spec.tenants] == [0.7, 0.7] and [t.slo_tpot_s for t in spec.tenants] == [0.03, 0.03]
    np.testing.assert_allclose(np.asarray(params.slo_ttft_s), 0.7)
    base, _ = gymjax.make("trace", path=str(trace_copy))
    assert base.spec.tenants[0].base_rate_rps * 2 == pytest.approx(spec.tenants[0].base_rate_rps, rel=0.05)  # 2x faster


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tune", "--task", "trace"], "needs its CSV: inferencegym tune --trace FILE"),
        (["eval", "--task", "trace"], "needs its CSV: inferencegym eval --trace FILE"),
        (["train", "--task", "trace"], "needs its CSV: inferencegym train --trace FILE"),
        (["eval", "--model", "llama-3-70b"], "apply to --trace FILE only"),
        (["tune", "--trace", "no/such.csv"], "no such file"),
        (["eval", "--trace", str(SLICE), "--gpu", "tpu"], "unknown gpu"),
        (["eval", "--trace", str(SLICE), "--slo-ttft", "-1"], "SLOs must be positive"),
    ],
)
def test_usage_errors_name_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
