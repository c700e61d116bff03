"""The shared rollout, the evaluator and the command line: one episode loop, one evaluator, one entry point."""

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

import gymjax
from gymjax import baselines
from gymjax.evaluation import evaluate, run_policies
from gymjax.grading import eval_keys, mean_ci95
from gymjax.report import PAIRED_KEY, add_paired
from gymjax.rollout import rollout

SMALL = dict(n_slots=16, queue_cap=32, max_arrivals=16, horizon_steps=6)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env_small():
    return gymjax.make("static", **SMALL)


def test_rollout_is_the_reset_then_scan_loop_it_replaced(env_small):
    """rollout's records and final carry equal, bit for bit, the hand-written loop every caller used to
    have (reset with k_reset; per step k_policy, k_step = split(k_t)); the records are the Step's fields."""
    env, params = env_small
    policy = baselines.POLICIES["random"](env, params)
    n = 5

    def by_hand(key):
        k_reset, k_run = jax.random.split(key)
        obs, st = env.reset(k_reset, params)

        def body(carry, k):
            obs, st, _ = carry
            k_pol, k_step = jax.random.split(k)
            a = policy(k_pol, obs, st)
            obs2, st2, r, _, tr, info = env.step(k_step, st, a, params)
            return (obs2, st2, info["episode"]), (obs, a, r, tr, obs2)

        return jax.lax.scan(body, (obs, st, st.episode), jax.random.split(k_run, n))

    def shared(key):
        final, recs = rollout(env, params, policy, key, n,
                              record=lambda s: (s.obs, s.action, s.reward, s.truncated, s.next_obs))
        return (final.obs, final.state, final.episode), recs

    run_hand, run_shared = jax.jit(jax.vmap(by_hand)), jax.jit(jax.vmap(shared))
    keys = jax.random.split(jax.random.PRNGKey(11), 2)
    jax.tree.map(np.testing.assert_array_equal, run_shared(keys), run_hand(keys))


def test_rollout_keeps_the_episode_before_the_auto_reset(env_small):
    """Run past the horizon: the carry's episode is the finished one (its steps = the horizon), not the reset's."""
    env, params = env_small
    a = env.encode_action(env.default_action())
    horizon = int(params.horizon_steps)
    final, steps = rollout(env, params, lambda k, o, s: a, jax.random.PRNGKey(0), horizon, record=lambda s: s.info["episode"].steps)
    assert int(final.episode.steps) == horizon and int(final.state.episode.steps) == 0
    np.testing.assert_array_equal(np.asarray(steps), np.arange(1, horizon + 1))


def test_one_policy_evaluate_is_a_row_of_the_many_policy_program(env_small):
    """gymjax.evaluate of one policy equals that policy's row of the program scoring several at once.
    They are separately compiled XLA programs, whose float ops may round differently in the last bit
    (issue 18 tracks one trajectory per key across programs), hence the tight tolerance."""
    env, params = env_small
    pols = [baselines.POLICIES[n](env, params) for n in ("heuristic", "random")]
    many = run_policies(env, params, pols, eval_keys(3))
    one = evaluate(env, params, pols[0], n_seeds=3)
    np.testing.assert_allclose(one["scores"], many["score"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one["reward_sums"], many["reward_sum"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose((one["mean"], one["ci95"]), mean_ci95(many["score"][0]), rtol=1e-5, atol=1e-6)
    for k in ("goodput", "cost", "quality", "complete"):
        assert one[k] == pytest.approx(float(np.mean(many[k][0])), rel=1e-5, abs=1e-6), k
    assert not np.allclose(many["score"][0], many["score"][1]), "the two policies' rows must differ"


def test_paired_difference_is_per_seed():
    row = {"best-constant": {"scores": [0.5, 0.6, 0.7]}, "x": {"scores": [0.6, 0.6, 0.9]}, "short": {"scores": [0.1]}}
    add_paired(row)
    d = row["x"][PAIRED_KEY]
    assert d["mean"] == pytest.approx(0.1) and d["ci95"] > 0.0
    assert PAIRED_KEY not in row["best-constant"] and PAIRED_KEY not in row["short"]  # no self-pairing; other seeds


def _gymjax_imports(path: Path) -> set[str]:
    """The gymjax modules a source file imports (at any level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gymjax"):
            found |= {f"gymjax.{a.name}" for a in node.names} if node.module == "gymjax" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gymjax")}
    return found


def test_traces_imports_no_task_code_and_tasks_no_registry():
    assert _gymjax_imports(ROOT / "gymjax" / "traces.py") == set()
    for mod in ("tasks", "trace_tasks"):
        imported = _gymjax_imports(ROOT / "gymjax" / f"{mod}.py")
        assert imported and not {m for m in imported if m in ("gymjax.registry", "gymjax.evaluation", "gymjax.report")}, mod


def test_cli_lists_every_subcommand_and_each_has_help(capsys):
    from inferencegym.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "train-all", "seeds", "eval", "inspect", "tune", "traces", "calibrate", "headroom"):
        assert f"  {name} " in out, name
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and f"inferencegym {name}" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_eval_command_writes_the_board_and_plot(tmp_path, capsys, monkeypatch):
    """inferencegym eval on one small task writes scoreboard.json (with the paired differences) and the plot."""
    from inferencegym import evaluate as eval_cmd

    real_make = gymjax.make
    monkeypatch.setattr(gymjax, "make", lambda name, **kw: real_make(name, **{**SMALL, **kw}))
    assert eval_cmd.evaluate(["--task", "static", "--seeds", "2", "--out", str(tmp_path)]) == 0
    import json

    board = json.loads((tmp_path / "scoreboard.json").read_text())["board"]["static"]
    assert set(board) == set(baselines.available(real_make("static")[0]))
    assert PAIRED_KEY in board["heuristic"] and (tmp_path / "scoreboard.png").stat().st_size > 0
    assert "minus best-constant" in capsys.readouterr().out
    env, params = real_make("static", **SMALL)
    ref = evaluate(env, params, baselines.POLICIES["heuristic"](env, params), n_seeds=2)
    assert board["heuristic"]["scores"] == [float(x) for x in ref["scores"]]
