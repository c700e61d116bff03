"""inferencegym seeds: several training seeds, each scored against the best constant."""

import json

import numpy as np

from inferencegym.cli import main
from ppo import PPOConfig
from tests.contract import TINY as TINY_ENV

TINY = PPOConfig(task="static", env_kwargs=TINY_ENV,
                 total_timesteps=4 * 8 * 2, num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2,
                 hidden=(16, 16), progress_reports=1)


def test_seeds_are_scored_on_common_eval_seeds(tmp_path, tiny_static):
    out = tmp_path / "s.json"
    argv = ["--task", "static", "--seeds", "2", "--eval-seeds", "3", "--json", str(out), "--save-dir", str(tmp_path / "pol")]
    for k, v in TINY.to_dict().items():
        if k != "task":
            argv += ["--set", f"{k}={json.dumps(v)}"]
    assert main(["seeds", *argv]) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "static" and res["seeds"] == [0, 1] and res["config"]["num_envs"] == 4
    a, b = res["per_seed"]["0"], res["per_seed"]["1"]
    for v in (a, b):
        assert 0.0 <= v["mean"] <= 1.0
    np.testing.assert_allclose(res["mean_over_seeds"], np.mean([a["mean"], b["mean"]]), rtol=1e-6)

    # each seed's policy was saved; rescored with the best constant on the same eval seeds, the saved policies
    # score what the run reported, and its differences are paired: mean and CI of (policy - best constant) per seed
    from gymjax.evaluation import baseline_policies, scoreboard
    from gymjax.grading import mean_ci95
    from ppo.checkpoint import load_policy

    policy, meta = load_policy(tmp_path / "pol" / "seed_1")
    assert meta["seed"] == 1 and meta["config"] == res["config"] and (tmp_path / "pol" / "seed_0" / "policy.msgpack").exists()
    env, params = tiny_static
    pols = {"seed 0": load_policy(tmp_path / "pol" / "seed_0")[0], "seed 1": policy,
            "best-constant": baseline_policies(env, params)["best-constant"]}
    board = scoreboard(env, params, pols, 3)
    np.testing.assert_allclose(board["best-constant"]["mean"], res["best_constant"]["mean"], rtol=1e-6)
    beating = 0
    for s, v in (("0", a), ("1", b)):
        np.testing.assert_allclose(board[f"seed {s}"]["mean"], v["mean"], rtol=1e-6)
        d, ci = mean_ci95(np.asarray(board[f"seed {s}"]["scores"]) - np.asarray(board["best-constant"]["scores"]))
        np.testing.assert_allclose([v["minus_best_constant"], v["minus_best_constant_ci95"]], [d, ci], rtol=1e-5, atol=1e-6)
        beating += int(d - ci > 0)
    assert res["seeds_beating_best_constant"] == beating
