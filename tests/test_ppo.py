"""Fused PPO: runs, reproducible, GAE with truncation, checkpoints, policies. Tiny shapes throughout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gymjax
from ppo import PPOConfig, gae, load_policy, make_train
from ppo.checkpoint import make_policy, save_policy
from ppo.networks import action_reader
from ppo.train import final_observation, make_network
from tests.contract import TINY as TINY_ENV

TINY = PPOConfig(
    task="static",
    env_kwargs=TINY_ENV,
    total_timesteps=4 * 8 * 4,
    num_envs=4,
    num_steps=8,
    update_epochs=2,
    num_minibatches=2,
    hidden=(16, 16),
    progress_reports=2,
)


@pytest.fixture(scope="module")
def tiny_env(tiny_static):
    return tiny_static


@pytest.fixture(scope="module")
def tiny_train(tiny_env):
    env, params = tiny_env
    return jax.jit(make_train(TINY, env, params))


@pytest.fixture(scope="module")
def run0(tiny_train):
    return jax.device_get(tiny_train(jax.random.PRNGKey(0)))


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=False))


def test_train_runs_and_metrics_are_finite(run0):
    m = run0.metrics
    assert TINY.num_updates == 4
    for name, v in m.items():
        assert v.shape == (TINY.num_updates,), name
        assert np.all(np.isfinite(v)), name
    # horizon 8, 8 steps per rollout: every env ends a full episode in every update after the first
    assert m["episodes"].sum() >= TINY.num_envs
    assert np.all((m["episode_score"] >= 0) & (m["episode_score"] <= 1))
    assert np.all(m["entropy"] > 0)
    assert int(run0.runner_state.update) == TINY.num_updates
    assert np.all(np.isfinite(run0.runner_state.obs_norm.var)) and float(run0.runner_state.obs_norm.count) > TINY.batch_size


def test_same_seed_is_bit_identical(tiny_train, run0):
    again = jax.device_get(tiny_train(jax.random.PRNGKey(0)))
    assert _leaves_equal(run0.runner_state.train_state.params, again.runner_state.train_state.params)
    assert _leaves_equal(run0.runner_state.obs_norm, again.runner_state.obs_norm)
    assert _leaves_equal(run0.metrics, again.metrics)


def test_different_seeds_differ(tiny_train, run0):
    other = jax.device_get(tiny_train(jax.random.PRNGKey(1)))
    assert not _leaves_equal(run0.runner_state.train_state.params, other.runner_state.train_state.params)


def test_training_changes_the_parameters(tiny_env, run0):
    env, params = tiny_env
    net = make_network(TINY, env, params)
    init = net.init(jax.random.split(jax.random.PRNGKey(0), 4)[1], jnp.zeros(env.obs_dim))
    assert not _leaves_equal(init, run0.runner_state.train_state.params)


def _gae_reference(r, v, nv, term, trunc, gamma, lam):
    adv = np.zeros_like(r)
    nxt = np.zeros_like(r[0])
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * (1 - term[t]) * nv[t] - v[t]
        nxt = delta + gamma * lam * (1 - term[t]) * (1 - trunc[t]) * nxt
        adv[t] = nxt
    return adv


def test_gae_known_answer_with_truncation_and_termination():
    r = jnp.array([1.0, 2.0, 3.0, 4.0])
    v = jnp.array([0.5, 1.0, 1.5, 2.0])
    nv = jnp.array([1.0, 10.0, 2.0, 3.0])  # nv[1] = V(final obs of the truncated episode)
    f = jnp.zeros(4, bool)
    # truncated at t=1: bootstrap from V(final obs) = 10, and the trace is cut there
    adv, tgt = gae(r, v, nv, f, f.at[1].set(True), 0.9, 0.8)
    np.testing.assert_allclose(adv, [1.4 + 0.72 * 10.0, 10.0, 3.3 + 0.72 * 4.7, 4.7], rtol=1e-6)
    np.testing.assert_allclose(tgt, np.asarray(adv) + np.asarray(v), rtol=1e-6)
    # terminated at t=1: no bootstrap, trace cut
    adv, _ = gae(r, v, nv, f.at[1].set(True), f, 0.9, 0.8)
    np.testing.assert_allclose(adv, [1.4 + 0.72 * 1.0, 1.0, 3.3 + 0.72 * 4.7, 4.7], rtol=1e-6)
    # neither: one trace through the whole sequence (nv[1] is ignored in favour of the trace)
    adv, _ = gae(r, v, nv, f, f, 0.9, 0.8)
    a3 = 4.7
    a2 = 3.3 + 0.72 * a3
    a1 = 2.0 + 0.9 * 10.0 - 1.0 + 0.72 * a2
    np.testing.assert_allclose(adv, [1.4 + 0.72 * a1, a1, a2, a3], rtol=1e-6)


def test_gae_matches_reference_loop_on_random_batches():
    rng = np.random.default_rng(0)
    T, N = 17, 5
    r, v, nv = (rng.normal(size=(T, N)).astype(np.float32) for _ in range(3))
    term = rng.random((T, N)) < 0.1
    trunc = rng.random((T, N)) < 0.15
    adv, _ = gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), jnp.asarray(term), jnp.asarray(trunc), 0.97, 0.9)
    np.testing.assert_allclose(adv, _gae_reference(r, v, nv, term, trunc, 0.97, 0.9), rtol=1e-4, atol=1e-5)


def test_final_observation_is_the_pre_reset_observation(tiny_env, jit_step):
    """At the horizon, step returns the reset obs; the trainer bootstraps from the final one."""
    env, params = tiny_env
    step = jit_step(env)
    a = env.encode_action(env.default_action())
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    for i in range(TINY_ENV["horizon_steps"]):
        obs, st, r, term, trunc, info = step(jax.random.PRNGKey(i + 1), st, a, params)
        fin = final_observation(env, info, a)
        rebuilt = final_observation(env, {k: v for k, v in info.items() if k != "final_obs"}, a)
        np.testing.assert_allclose(rebuilt, fin, atol=1e-6)  # the fallback rebuild matches (up to float rounding)
        if not bool(trunc):
            np.testing.assert_array_equal(fin, obs)
    assert bool(trunc) and not bool(term)
    assert not np.array_equal(np.asarray(fin), np.asarray(obs))  # returned obs is the next episode's
    assert float(fin[env_obs_index(env, "progress")]) == 1.0 and float(obs[env_obs_index(env, "progress")]) == 0.0


def env_obs_index(env, name):
    from gymjax.physics.observation import OBS_SCALAR_FIELDS

    return OBS_SCALAR_FIELDS.index(name)


def test_save_load_roundtrip_same_actions(tmp_path, tiny_env, run0):
    env, params = tiny_env
    rs = run0.runner_state
    net = make_network(TINY, env, params)
    save_policy(
        tmp_path / "p",
        TINY,
        rs.train_state.params,
        rs.obs_norm,
        env.action_space(params).nvec,
        env.obs_dim,
        action_reader(env),
        {"seed": 0},
    )
    assert (tmp_path / "p" / "policy.msgpack").read_bytes()[:1] != b"\x80"  # not a pickle
    policy, meta = load_policy(tmp_path / "p")
    assert meta["ppo_config"] == TINY and meta["seed"] == 0
    original = make_policy(net, rs.train_state.params, rs.obs_norm, action_reader(env), TINY.normalize_obs, greedy=True)
    obs = jax.random.uniform(jax.random.PRNGKey(3), (64, env.obs_dim))
    keys = jax.random.split(jax.random.PRNGKey(4), 64)
    a_loaded = jax.jit(jax.vmap(policy, (0, 0, None)))(keys, obs, None)
    a_orig = jax.vmap(original, (0, 0, None))(keys, obs, None)
    np.testing.assert_array_equal(a_loaded, a_orig)
    space = env.action_space(params)
    assert a_loaded.dtype == jnp.int32 and bool(jax.vmap(space.contains)(a_loaded).all())
    # sampled mode: also valid actions, and key-dependent
    sampled, _ = load_policy(tmp_path / "p" / "policy.msgpack", greedy=False)
    s = jax.vmap(sampled, (0, None, None))(keys, obs[0], None)
    assert bool(jax.vmap(space.contains)(s).all()) and len({tuple(x) for x in np.asarray(s)}) > 1


def test_loaded_policy_runs_in_the_env_and_in_gymjax_evaluate(tmp_path, tiny_env, run0):
    env, params = tiny_env
    rs = run0.runner_state
    save_policy(tmp_path, TINY, rs.train_state.params, rs.obs_norm, env.action_space(params).nvec, env.obs_dim, action_reader(env))
    policy, _ = load_policy(tmp_path)
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    a = policy(jax.random.PRNGKey(1), obs, st)
    env.decode_action(a)  # a valid flat action of this env
    res = gymjax.evaluate(env, params, policy, n_seeds=2)
    assert np.all((res["scores"] >= 0) & (res["scores"] <= 1))


def test_load_rejects_wrong_shapes(tmp_path, tiny_env, run0):
    env, params = tiny_env
    rs = run0.runner_state
    bigger = dataclasses.replace(TINY, hidden=(32, 16))
    save_policy(tmp_path, bigger, rs.train_state.params, rs.obs_norm, env.action_space(params).nvec, env.obs_dim, action_reader(env))
    with pytest.raises(ValueError):
        load_policy(tmp_path)


def test_config_validation_and_json_roundtrip():
    assert PPOConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="num_minibatches"):
        PPOConfig(num_envs=3, num_steps=3, num_minibatches=2)
    with pytest.raises(ValueError, match="unknown"):
        PPOConfig.from_dict({"learning_rate": 1.0})
    c = PPOConfig(total_timesteps=10_000, num_envs=8, num_steps=10, progress_reports=7)
    # 10,000 // 80 = 125 updates asked for, 7 progress chunks: 125 // 7 = 17 updates per chunk, 119 run
    assert (c.num_chunks, c.updates_per_chunk, c.num_updates) == (7, 17, 119)
    assert 10_000 // 80 - c.num_chunks <= c.num_updates <= 10_000 // 80


def test_no_hold_bonus_at_the_initial_deployment():
    """With free_first_action, the first observation of an episode (progress 0) reads as "nothing deployed": no
    hold bonus there, since the first action deploys without a reload; later observations read the
    action in force back exactly."""
    env, params = gymjax.make("static", horizon_steps=5, n_slots=8)
    reader = action_reader(env, free_first_action=True)
    obs, st = env.reset(jax.random.PRNGKey(0), params)
    assert (np.asarray(reader.current(obs)) == -1).all()
    a = env.encode_action(env.default_action()).at[3].set(1)  # FP8
    obs2, *_ = env.step(jax.random.PRNGKey(1), st, a, params)
    np.testing.assert_array_equal(np.asarray(reader.current(obs2)), np.asarray(a))
    batch = jnp.stack([obs, obs2])
    assert (np.asarray(reader.current(batch))[0] == -1).all() and (np.asarray(reader.current(batch))[1] == np.asarray(a)).all()
    # off (the default), or a reader saved before progress_position existed: step 0 reads the default action
    old = type(reader).from_dict({k: v for k, v in reader.to_dict().items() if k != "progress_position"})
    np.testing.assert_array_equal(np.asarray(old.current(obs)), np.asarray(env.encode_action(env.default_action())))
    assert action_reader(env) == old and not PPOConfig().free_first_action
    assert type(reader).from_dict(reader.to_dict()) == reader


def test_slow_knob_hold_gate(tiny_env):
    """With slow_hold_gate, a slow knob's head is P(hold) = sigmoid(gate) on the level in force and the rest spread
    over the other levels by the level logits. Holding trains only the gate, never the level logits; with nothing
    in force (the free first action) the head is the plain level logits."""
    from ppo.networks import ActorCritic, hold_gate_mask, log_prob

    env, params = tiny_env
    gated = dataclasses.replace(TINY, slow_hold_gate=True)
    net = make_network(gated, env, params)
    assert net.hold_gate == hold_gate_mask(True) == tuple(k.slow for k in env.knobs)
    obs = jax.random.normal(jax.random.PRNGKey(0), (env.obs_dim,))
    cur = jnp.asarray([1, 2, 0, 1, 3, 0], jnp.int32)
    p = net.init(jax.random.PRNGKey(1), obs)
    # untrained weights are too small to tell the heads apart: perturb every parameter
    leaves, tree = jax.tree.flatten(p)
    ks = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    p = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, ks, strict=True)])
    logits, _ = net.apply(p, obs, cur)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(logits[3])), 0.0, atol=1e-5)  # gated heads are log-probabilities
    plain, _ = net.apply(p, obs, None)
    for k in (3, 4):  # the slow knobs: the other levels in the ratio of the level logits
        others = [j for j in range(env.action_space(params).nvec[k]) if j != int(cur[k])]
        want = np.asarray(jax.nn.softmax(plain[k, np.asarray(others)]))
        np.testing.assert_allclose(probs[k, others] / probs[k, others].sum(), want, rtol=1e-4)
    # holding every slow knob: no gradient reaches the level logits' output layer, only the gate
    hold = jnp.asarray([0, 0, 0, 1, 3, 0], jnp.int32).at[3].set(cur[3]).at[4].set(cur[4])

    def logp_slow(p):
        lg, _ = net.apply(p, obs, cur)
        return log_prob(lg[3:5], hold[3:5])

    g = jax.grad(logp_slow)(p)["params"]
    max_n = max(env.action_space(params).nvec)
    out = [name for name, v in g.items() if isinstance(v, dict) and "bias" in v and v["bias"].shape == (6 * max_n,)]
    assert len(out) == 1
    level_grad = np.abs(np.asarray(g[out[0]]["bias"]).reshape(6, max_n)[3:5]).max()
    assert level_grad < 1e-7 and np.abs(np.asarray(g["hold_gate"]["kernel"])).max() > 1e-3  # zero up to rounding
    # without the gate, holding does push the held level's logit up
    off_net = make_network(TINY, env, params)
    p_off = {"params": {k: v for k, v in p["params"].items() if k != "hold_gate"}}
    g_off = jax.grad(lambda q: log_prob(off_net.apply(q, obs, cur)[0][3:5], hold[3:5]))(p_off)["params"]
    assert np.abs(np.asarray(g_off[out[0]]["bias"]).reshape(6, max_n)[3:5]).max() > 1e-3
    # nothing in force (free first action): the gated heads are the plain level logits
    first, _ = net.apply(p, obs, jnp.full((6,), -1, jnp.int32))
    np.testing.assert_allclose(np.asarray(jax.nn.log_softmax(first[3:5])), np.asarray(jax.nn.log_softmax(plain[3:5])), rtol=1e-5)
    # off: the additive hold bonus on every knob, and no gate parameters
    assert not TINY.slow_hold_gate and "hold_gate" not in make_network(TINY, env, params).init(jax.random.PRNGKey(1), obs)["params"]
    assert ActorCritic(nvec=(2, 3)).hold_gate == ()


def test_gated_policy_save_load_and_older_saves(tmp_path, tiny_env):
    """A gated policy reloads with its gate (same actions); a config saved before the field existed loads ungated."""
    import json

    from ppo.networks import obs_norm_init

    env, params = tiny_env
    gated = dataclasses.replace(TINY, slow_hold_gate=True)
    net = make_network(gated, env, params)
    p = net.init(jax.random.PRNGKey(0), jnp.zeros((env.obs_dim,)))
    p = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.PRNGKey(5), x.shape), p)
    norm = obs_norm_init(env.obs_dim)
    save_policy(tmp_path / "g", gated, p, norm, env.action_space(params).nvec, env.obs_dim, action_reader(env))
    policy, meta = load_policy(tmp_path / "g")
    assert meta["ppo_config"].slow_hold_gate
    original = make_policy(net, p, norm, action_reader(env), gated.normalize_obs, greedy=False)
    obs = jax.random.uniform(jax.random.PRNGKey(3), (32, env.obs_dim))
    keys = jax.random.split(jax.random.PRNGKey(4), 32)
    loaded_s, _ = load_policy(tmp_path / "g", greedy=False)
    np.testing.assert_array_equal(jax.vmap(loaded_s, (0, 0, None))(keys, obs, None), jax.vmap(original, (0, 0, None))(keys, obs, None))

    ungated = make_network(TINY, env, params).init(jax.random.PRNGKey(0), jnp.zeros((env.obs_dim,)))
    save_policy(tmp_path / "old", TINY, ungated, norm, env.action_space(params).nvec, env.obs_dim, action_reader(env))
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["slow_hold_gate"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    policy, meta = load_policy(tmp_path / "old")
    assert meta["ppo_config"].slow_hold_gate is False
    o, st = env.reset(jax.random.PRNGKey(1), params)
    assert bool(env.action_space(params).contains(policy(jax.random.PRNGKey(2), o, st)))


def test_task_defaults_then_flags_then_set():
    from inferencegym.train import build_train_parser, config_from_args
    from ppo.config import TASK_DEFAULTS

    parse = lambda *argv: config_from_args(build_train_parser().parse_args(list(argv)))  # noqa: E731
    c = parse("--task", "bursty")
    assert c == PPOConfig.for_task("bursty") and c.ent_coef == TASK_DEFAULTS["bursty"]["ent_coef"] != PPOConfig().ent_coef
    assert c.total_timesteps == TASK_DEFAULTS["bursty"]["total_timesteps"]
    assert parse("--task", "bursty", "--ent-coef", "0.002").ent_coef == 0.002
    assert parse("--task", "bursty", "--ent-coef", "0.002", "--set", "ent_coef=0.05").ent_coef == 0.05
    c = parse("--task", "static", "--total-steps", "1000", "--env", "n_slots=16")
    assert c.total_timesteps == 1000 and c.env_kwargs == {"n_slots": 16} and c.ent_coef == PPOConfig().ent_coef
    assert PPOConfig.for_task("trace") == PPOConfig(task="trace")  # a task without an entry: the class defaults
    assert PPOConfig.for_task("bursty", total_timesteps=None, lr=None) == PPOConfig.for_task("bursty")  # None: not given
    assert PPOConfig.for_task("bursty", total_timesteps=5000).total_timesteps == 5000


@pytest.mark.slow
def test_vmapped_seeds_learn_to_beat_random_on_small_static():
    """jit(vmap(train)) over 2 seeds; seed 0's greedy policy clearly beats random and is no worse than vLLM defaults."""
    from gymjax.evaluation import baseline_policies, scoreboard

    env_kw = dict(n_slots=32, queue_cap=64, max_arrivals=32, horizon_steps=50)
    env, params = gymjax.make("static", **env_kw)
    cfg = PPOConfig(
        task="static", env_kwargs=env_kw, total_timesteps=60_000, num_envs=32, num_steps=32, hidden=(32, 32), progress_reports=1
    )
    out = jax.jit(jax.vmap(make_train(cfg, env, params)))(jax.random.split(jax.random.PRNGKey(0), 2))
    m = jax.device_get(out.metrics)
    assert m["episode_score"].shape == (2, cfg.num_updates) and np.all(np.isfinite(m["episode_score"]))
    rs = jax.tree.map(lambda x: x[0], out.runner_state)
    other = jax.tree.map(lambda x: x[1], out.runner_state.train_state.params)
    assert not _leaves_equal(rs.train_state.params, other)
    policy = make_policy(make_network(cfg, env, params), rs.train_state.params, rs.obs_norm, action_reader(env), cfg.normalize_obs)
    base = baseline_policies(env, params)
    board = scoreboard(env, params, {"ppo": policy, "random": base["random"], "vllm-default": base["vllm-default"]}, n_seeds=4)
    assert board["ppo"]["mean"] > board["random"]["mean"] + 0.3, board
    assert board["ppo"]["mean"] > board["vllm-default"]["mean"] - 0.05, board


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path, capsys):
    from inferencegym.cli import main

    out = tmp_path / "run"
    argv = [
        "--task",
        "static",
        "--seed",
        "3",
        "--total-steps",
        "256",
        "--num-envs",
        "4",
        "--num-steps",
        "8",
        "--eval-seeds",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "hidden=[8, 8]",
        "--set",
        "num_minibatches=2",
    ]
    for k, v in TINY_ENV.items():
        argv += ["--env", f"{k}={v}"]
    assert main(["train", *argv]) == 0
    for f in ("policy.msgpack", "config.json", "learning_curve.png", "scoreboard.json", "metrics.npz"):
        assert (out / f).stat().st_size > 0, f
    policy, meta = load_policy(out)
    assert meta["seed"] == 3 and meta["ppo_config"].env_kwargs == TINY_ENV and meta["ppo_config"].hidden == (8, 8)
    assert main(["eval", "--policy", str(out), "--n-seeds", "2", "--no-baselines", "--json", str(tmp_path / "b.json")]) == 0
    assert "ppo" in capsys.readouterr().out and (tmp_path / "b.json").exists()
