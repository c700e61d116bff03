"""inferencegym seeds: several training seeds, each scored against the best constant."""

import json

import numpy as np

from inferencegym.cli import main
from ppo import PPOConfig

TINY = PPOConfig(task="static", env_kwargs=dict(n_slots=16, queue_cap=32, max_arrivals=16, horizon_steps=8),
                 total_timesteps=4 * 8 * 2, num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2,
                 hidden=(16, 16), progress_reports=1)


def test_seeds_are_scored_on_common_eval_seeds(tmp_path):
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
        assert 0.0 <= v["mean"] <= 1.0 and v["minus_best_constant_ci95"] >= 0.0
        # the paired difference is the policy's mean minus the best constant's, on the same eval seeds
        np.testing.assert_allclose(v["minus_best_constant"], v["mean"] - res["best_constant"]["mean"], atol=1e-6)
    np.testing.assert_allclose(res["mean_over_seeds"], np.mean([a["mean"], b["mean"]]), rtol=1e-6)
    assert 0 <= res["seeds_beating_best_constant"] <= 2

    # each seed's policy was saved, and the saved seed-1 policy scores what the run reported for it
    import gymjax
    from gymjax.evaluation import scoreboard
    from ppo.checkpoint import load_policy

    policy, meta = load_policy(tmp_path / "pol" / "seed_1")
    assert meta["seed"] == 1 and meta["config"] == res["config"] and (tmp_path / "pol" / "seed_0" / "policy.msgpack").exists()
    env, params = gymjax.make("static", **TINY.env_kwargs)
    np.testing.assert_allclose(scoreboard(env, params, {"p": policy}, 3)["p"]["mean"], b["mean"], rtol=1e-6)
