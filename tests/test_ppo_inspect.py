"""inferencegym inspect: the share of steps at each knob level, per burst phase."""

import json

import jax
import jax.numpy as jnp

import gymjax
from gymjax import baselines
from inferencegym.cli import main
from ppo import PPOConfig
from ppo.checkpoint import save_policy
from ppo.inspect import phase_action_shares
from ppo.networks import action_reader, obs_norm_init
from ppo.train import make_network

ENV_KW = dict(n_slots=16, queue_cap=32, max_arrivals=16, horizon_steps=40)


def test_constant_policy_shares_and_phases():
    env, params = gymjax.make("bursty", **ENV_KW)
    action = jnp.asarray([2, 4, 3, 1, 1, 0], jnp.int32)
    shares = phase_action_shares(env, params, baselines.constant_policy(env, action), n_episodes=4)
    # only the chat tenant (index 1) is modulated: phases 0 (quiet) and 2 (chat burst), never the steady bit 0
    assert set(shares) <= {0, 2} and len(shares) == 2
    for row in shares.values():
        for j, knob in enumerate(env.knobs):
            assert row[knob.name] == {float(knob.levels[int(action[j])]): 1.0}


def test_cli_on_a_saved_policy(tmp_path, capsys):
    cfg = PPOConfig(task="bursty", env_kwargs=ENV_KW, hidden=(8, 8))
    env, params = gymjax.make("bursty", **ENV_KW)
    net = make_network(cfg, env, params)
    p = net.init(jax.random.PRNGKey(0), jnp.zeros((env.obs_dim,)))
    save_policy(tmp_path / "p", cfg, p, obs_norm_init(env.obs_dim), env.action_space(params).nvec, env.obs_dim, action_reader(env))
    assert main(["inspect", "--policy", str(tmp_path / "p"), "--episodes", "2", "--json", str(tmp_path / "s.json")]) == 0
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["episodes"] == 2 and "phase 0 (bursting: none;" in capsys.readouterr().out
    for row in out["phases"].values():
        for knob in env.knobs:  # keyed by the knob's level values (JSON keys are strings)
            assert {float(v) for v in row[knob.name]} <= set(knob.levels), (knob.name, row[knob.name])
