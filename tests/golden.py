"""Fingerprints of trajectories, scores and a trained policy, pinned to prove that a refactor
changes no behaviour (tests/test_golden.py compares them with tests/data/golden.json).

    python -m tests.golden --write     # record (only when a behaviour change is intended and explained)
    python -m tests.golden             # print the differences against the recorded file

Every fingerprint is a SHA-1 of the exact bytes of a NumPy array, keyed by a readable name, so a
difference names the quantity that moved. Shapes are the registered tasks' own sizes (only the
horizon is shortened, a parameter, so the compiled step is the task's); the episodes are short
to keep the test fast.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.json"
TASKS = ("static", "bursty", "adversarial", "azure-replay")
TRAJ_STEPS = 10  # with horizon 7: one auto-reset inside the trajectory
TRAJ_HORIZON = 7
BOARD_TASKS = ("static", "adversarial", "azure-replay")
BOARD_HORIZON = 12
BOARD_SEEDS = 2


def digest(x) -> str:
    a = np.ascontiguousarray(np.asarray(x))
    return hashlib.sha1(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def named_leaves(prefix: str, tree) -> dict[str, str]:
    """``{prefix/path: digest}`` over a pytree's leaves (dataclass fields and dict keys by name)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        out[prefix + jax.tree_util.keystr(path)] = digest(leaf)
    return out


def _mixed_policy(env, params):
    """Random flat actions whose slow knobs change only every third step (so reloads and drains
    happen, but the engine also serves), and a typed ServeAction every other step (both action paths)."""
    space = env.action_space(params)

    def act(key, t):
        a = space.sample(key)
        base = space.sample(jax.random.PRNGKey(7))
        slow_ok = (t % 3) == 0
        a = a.at[3].set(jnp.where(slow_ok, a[3], base[3])).at[4].set(jnp.where(slow_ok, a[4], base[4]))
        return a

    return act


def trajectory_fingerprint(task: str) -> dict[str, str]:
    import gymjax

    env, params = gymjax.make(task, horizon_steps=TRAJ_HORIZON)
    act = _mixed_policy(env, params)

    def run(key):
        k_reset, k_run = jax.random.split(key)
        obs, st = env.reset(k_reset, params)

        def body(carry, xs):
            obs, st = carry
            k, t = xs
            k_act, k_step = jax.random.split(k)
            flat = act(k_act, t)
            typed = env.decode_action(flat)
            obs_f, st_f, r_f, _, tr_f, info_f = env.step(k_step, st, flat, params)
            obs_t, st_t, r_t, _, tr_t, info_t = env.step(k_step, st, typed, params)
            use_typed = (t % 2) == 1
            pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(use_typed, y, x), a, b)  # noqa: E731
            obs, st, r, tr, info = pick((obs_f, st_f, r_f, tr_f, info_f), (obs_t, st_t, r_t, tr_t, info_t))
            out = dict(obs=obs, reward=r, truncated=tr, metrics=info["metrics"], counters=info["counters"],
                       episode=info["episode"], final_obs=info["final_obs"], kv_pool_blocks=info["kv_pool_blocks"],
                       kv_blocks_used_max=info["kv_blocks_used_max"], same_typed=jnp.array_equal(obs_f, obs_t))
            return (obs, st), out

        (obs, st), outs = jax.lax.scan(body, (obs, st), (jax.random.split(k_run, TRAJ_STEPS), jnp.arange(TRAJ_STEPS)))
        return obs, st, outs

    obs, st, outs = jax.device_get(jax.jit(run)(jax.random.PRNGKey(2026)))
    fp = {"reset_and_final_obs": digest(obs),
          # plain numbers, so a reader sees the trajectory is not empty
          "summary.reward_sum": float(np.sum(outs["reward"])),
          "summary.finished_max": int(np.max(outs["counters"]["finished"])),
          "summary.output_tokens_max": float(np.max(outs["episode"].output_tokens))}
    fp.update(named_leaves("state", st))
    fp.update(named_leaves("steps", outs))
    return fp


def board_fingerprint(task: str) -> dict[str, float]:
    """Every available baseline's score and return per evaluation seed, all policies in one program."""
    import gymjax
    from gymjax.evaluation import baseline_policies, make_evaluator
    from gymjax.grading import eval_keys

    env, params = gymjax.make(task, horizon_steps=BOARD_HORIZON)
    pols = baseline_policies(env, params)
    res = jax.device_get(make_evaluator(env, list(pols.values()), BOARD_HORIZON, params)(eval_keys(BOARD_SEEDS)))
    out = {}
    for i, name in enumerate(pols):
        for s in range(BOARD_SEEDS):
            out[f"{name}/seed{s}/score"] = float(res["score"][i, s])
            out[f"{name}/seed{s}/return"] = float(res["reward_sum"][i, s])
    return out


PPO_RUNS = ("plain", "gate")


def ppo_fingerprint(runs=PPO_RUNS) -> dict[str, str]:
    import gymjax
    from ppo import PPOConfig, make_train

    env_kw = dict(n_slots=16, queue_cap=32, max_arrivals=16, horizon_steps=8)
    fp = {}
    for name, extra in (("plain", {}), ("gate", dict(slow_hold_gate=True, free_first_action=True, task="bursty"))):
        if name not in runs:
            continue
        task = extra.pop("task", "static")
        cfg = PPOConfig(task=task, env_kwargs=env_kw, total_timesteps=4 * 8 * 4, num_envs=4, num_steps=8, update_epochs=2,
                        num_minibatches=2, hidden=(16, 16), progress_reports=2, **extra)
        env, params = gymjax.make(task, **env_kw)
        out = jax.device_get(jax.jit(make_train(cfg, env, params))(jax.random.PRNGKey(0)))
        fp.update(named_leaves(f"{name}/params", out.runner_state.train_state.params))
        fp.update(named_leaves(f"{name}/obs_norm", out.runner_state.obs_norm))
        fp.update(named_leaves(f"{name}/metrics", out.metrics))
    return fp


def tools_fingerprint(calibration: bool = True) -> dict[str, float]:
    """The tuner's candidate and oracle-table scores, and the trace calibration, on small shapes:
    the tables in gymjax/data/best_constant.json and docs/traces.md were drawn with these keys."""
    import gymjax
    from gymjax import tune

    try:
        from gymjax.trace_analysis import calibrate
    except ImportError:  # before the house refactor it lived with the trace tasks
        from gymjax.trace_tasks import calibrate

    env, params = gymjax.make("bursty", horizon_steps=6, n_slots=32, queue_cap=64, max_arrivals=32)
    cands = jnp.asarray([[1, 4, 2, 1, 2, 1], [3, 5, 0, 2, 1, 0]], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    out = {}
    for phase in (-1, 3):
        p = params if phase < 0 else tune._pinned(params)
        s = np.asarray(tune._score_fn(env, 6)(p, cands, keys, phase))
        out.update({f"score/phase{phase}/cand{i}/seed{j}": float(s[i, j]) for i in range(2) for j in range(2)})
    tables = jnp.stack([jnp.stack([cands[0]] * 4), jnp.stack([cands[1], cands[0], cands[1], cands[0]])])
    s = np.asarray(tune._oracle_score_fn(env, 6)(params, tables, keys))
    out.update({f"oracle/table{i}/seed{j}": float(s[i, j]) for i in range(2) for j in range(2)})
    if not calibration:
        return out
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        cal = calibrate(n_seeds=2, horizon_steps=5, n_slots=32)
    out.update({f"calibrate/{k}": float(v) for k, v in cal.items()})
    return out


def compute(parts=("trajectories", "boards", "ppo", "tools")) -> dict:
    res = {"jax": jax.__version__}
    if "trajectories" in parts:
        res["trajectories"] = {t: trajectory_fingerprint(t) for t in TASKS}
    if "boards" in parts:
        res["boards"] = {t: board_fingerprint(t) for t in BOARD_TASKS}
    if "ppo" in parts:
        res["ppo"] = ppo_fingerprint()
    if "tools" in parts:
        res["tools"] = {"tune+calibrate": tools_fingerprint()}
    return res


def diff(recorded: dict, now: dict, subset: bool = False) -> list[str]:
    """Readable differences between two fingerprint dicts (only the parts present in ``now``;
    with ``subset``, only the fingerprints ``now`` computed: a partial check)."""
    out = []
    for part, val in now.items():
        if part == "jax":
            continue
        old = {k: v for k, v in recorded.get(part, {}).items() if k in val}  # only what was recomputed
        flat_old = {f"{a}:{b}": v for a, d in old.items() for b, v in (d.items() if isinstance(d, dict) else [("", d)])}
        flat_new = {f"{a}:{b}": v for a, d in val.items() for b, v in (d.items() if isinstance(d, dict) else [("", d)])}
        if subset:
            flat_old = {k: v for k, v in flat_old.items() if k in flat_new}
        for k in sorted(set(flat_old) | set(flat_new)):
            if flat_old.get(k) != flat_new.get(k):
                out.append(f"{part} {k}: recorded {flat_old.get(k)!r}, now {flat_new.get(k)!r}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="record the fingerprints in tests/data/golden.json")
    ap.add_argument("--part", action="append", choices=("trajectories", "boards", "ppo", "tools"))
    a = ap.parse_args(argv)
    now = compute(tuple(a.part or ("trajectories", "boards", "ppo", "tools")))
    if a.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        rec = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        rec.update(now)
        GOLDEN.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
        return 0
    d = diff(json.loads(GOLDEN.read_text()), now)
    print("\n".join(d) if d else "identical")
    return 1 if d else 0


if __name__ == "__main__":
    raise SystemExit(main())
