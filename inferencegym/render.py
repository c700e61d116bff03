"""``inferencegym render``: one episode of a policy as a timeline, PNG and interactive HTML (:mod:`gymjax.render`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferencegym.common import add_trace_args, make_trace_env, parse_pairs, trace_kwargs


def build_render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferencegym render",
        description="Play one episode of a policy and draw it: queue, TTFT and TPOT against the SLOs, KV "
        "occupancy, throughput, the knobs in force and the reward, step by step. Writes OUT.png (matplotlib) "
        "and OUT.html (self-contained, interactive: a step slider, play, values under the cursor).",
    )
    p.add_argument("--task", default="static", help="task name (default %(default)s); a saved --policy brings its own")
    p.add_argument(
        "--policy",
        default="heuristic",
        help="a baseline (random, vllm-default, heuristic, best-constant, oracle) or a saved PPO run directory (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="the episode's key is PRNGKey(SEED) (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="steps to play (default: the task's horizon)")
    p.add_argument("--out", type=Path, default=None, help="output path without suffix (default runs/render/TASK-POLICY-seedS)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="gymjax.make override, e.g. --env n_slots=32 (repeatable)")
    add_trace_args(p)
    return p


def render(argv: list[str] | None = None) -> int:
    """``inferencegym render --task T --policy P --seed S``; returns the exit code."""
    p = build_render_parser()
    a = p.parse_args(argv)
    env_pairs = parse_pairs(a.env, "--env")
    trace = trace_kwargs(a, p, env_pairs)
    if a.steps is not None and a.steps < 1:
        p.error("--steps must be >= 1")
    import jax

    import gymjax
    from gymjax.baselines import POLICIES
    from gymjax.render import episode_timeline, plot_timeline, write_html

    if a.policy in POLICIES:
        if trace is not None:
            env, params = make_trace_env(trace, p)
        else:
            if a.task not in gymjax.registered_envs() or a.task == "trace":
                p.error(
                    f"unknown task {a.task!r}; valid: {', '.join(t for t in gymjax.registered_envs() if t != 'trace')}, or --trace FILE"
                )
            env, params = gymjax.make(a.task, **env_pairs)
        try:
            policy = POLICIES[a.policy](env, params)
        except KeyError as e:
            p.error(e.args[0])
        name = a.policy
    else:
        from ppo.checkpoint import load_policy

        if not Path(a.policy).exists():
            p.error(f"--policy {a.policy!r} is neither a baseline ({', '.join(POLICIES)}) nor a saved run directory")
        if trace is not None or env_pairs:
            p.error("a saved policy plays on the task it was trained on (its config.json); drop --trace/--env")
        policy, meta = load_policy(a.policy)
        cfg = meta["config"]
        env, params = gymjax.make(cfg["task"], **cfg["env_kwargs"])
        name = Path(a.policy).name or "ppo"
    task = f"trace-{Path(trace['path']).stem}" if trace else env.name
    out = a.out or Path("runs") / "render" / f"{task}-{name}-seed{a.seed}"
    tl = episode_timeline(env, params, policy, jax.random.PRNGKey(a.seed), a.steps)
    title = f"{task}, {name}, seed {a.seed}"
    s = tl["score"]
    png = plot_timeline(tl, out.with_suffix(".png"), f"{title}: episode score {s['score']:.3f} (goodput {s['goodput']:.3f})")
    page = write_html(tl, out.with_suffix(".html"), title)
    print(f"{title}: {tl['steps']} steps, episode score {s['score']:.3f}; wrote {png} and {page}")
    return 0
