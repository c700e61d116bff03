"""Simulator tools: ``inferencegym tune`` (the best constant and the oracle's table), ``traces`` (trace
statistics), ``calibrate`` (azure-replay's load calibration) and ``headroom`` (what adaptivity could
gain on azure-replay)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from inferencegym.common import add_trace_args, make_trace_env, parse_pairs, trace_kwargs, write_json


def build_tune_parser() -> argparse.ArgumentParser:
    from gymjax.tune import TUNED_PATH

    p = argparse.ArgumentParser(prog="inferencegym tune",
                                description="Grid-search the best constant action per task (and the oracle's per-phase table); "
                                "see gymjax.tune for the grid. Tuning seeds are disjoint from evaluation seeds. With --trace FILE, "
                                "tunes your trace and writes FILE.tuned.json (or --out), which `eval --trace` and `train --trace` read.")
    p.add_argument("--task", action="append", help="task(s) to tune (default: all but 'trace')")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--refine", type=int, default=8)
    p.add_argument("--refine-seeds", type=int, default=8)
    p.add_argument("--out", type=Path, default=None,
                   help=f"the JSON file to write (default: {TUNED_PATH}, the one gymjax.baselines reads; with --trace, FILE.tuned.json)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="with --trace: another gymjax.make override, e.g. queue_cap=128")
    add_trace_args(p)
    return p


def tune(argv: list[str] | None = None) -> int:
    """``inferencegym tune [--task T ...]`` or ``inferencegym tune --trace FILE [...]``; returns the exit code."""
    p = build_tune_parser()
    a = p.parse_args(argv)
    trace = trace_kwargs(a, p, parse_pairs(a.env, "--env"))
    if a.env and trace is None:
        p.error("--env applies to --trace FILE only")
    if trace is not None:
        if a.task:
            p.error("give --trace FILE or --task, not both")
        return _tune_trace(a, p, trace, argv)
    if a.task and "trace" in a.task:
        p.error("the trace task needs its CSV: inferencegym tune --trace FILE")
    import jax

    import gymjax
    from gymjax.tune import TUNED_PATH, tune_task

    out = a.out or TUNED_PATH
    tasks = a.task or [t for t in gymjax.registered_envs() if t != "trace"]
    for t in tasks:
        if t not in gymjax.registered_envs():
            p.error(f"unknown task {t!r}; valid: {', '.join(gymjax.registered_envs())}")
    data = json.loads(out.read_text()) if out.exists() else {}
    for t in tasks:
        t0 = time.time()
        env, params = gymjax.make(t)
        data[t] = tune_task(env, params, a.seeds, a.refine, a.refine_seeds)
        data[t]["command"] = f"inferencegym tune --task {t} --seeds {a.seeds} --refine {a.refine} --refine-seeds {a.refine_seeds}"
        data[t]["jax_version"] = jax.__version__
        print(f"  {t}: {time.time() - t0:.0f} s")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {out}")
    return 0


def _tune_trace(a: argparse.Namespace, p: argparse.ArgumentParser, kwargs: dict, argv: list[str] | None) -> int:
    import shlex
    import sys

    from gymjax.tune import tune_task
    from gymjax.tuned import save_tuning, side_path

    t0 = time.time()
    env, params = make_trace_env(kwargs, p)
    print(env.spec.description)
    res = tune_task(env, params, a.seeds, a.refine, a.refine_seeds)
    out = a.out or side_path(kwargs["path"])
    argv = sys.argv[1:] if argv is None else argv
    command = "inferencegym tune " + " ".join(shlex.quote(x) for x in argv)
    save_tuning(out, env, params, res, {k: v for k, v in kwargs.items() if k != "path"}, command)
    print(f"best constant: {res['best']['typed']}  score {res['best']['score']:.3f} "
          f"({res['best']['refine_seeds']} tuning seeds; {time.time() - t0:.0f} s)")
    print(f"wrote {out}")
    return 0


def build_traces_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym traces", description="Every per-tenant statistic of trace CSV files "
                                "(`inferencegym trace stats --all`).")
    p.add_argument("files", nargs="+", help="CSV paths, or the packaged names azure-code / azure-conv")
    return p


def traces(argv: list[str] | None = None) -> int:
    """``inferencegym traces FILE [FILE ...]`` (``trace stats --all``); returns the exit code."""
    a = build_traces_parser().parse_args(argv)
    return trace(["stats", "--all", *a.files])


def build_trace_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym trace", description="Look at a trace CSV before replaying it.")
    sub = p.add_subparsers(dest="action", required=True)
    st = sub.add_parser("stats", help="per-tenant arrival rates and length percentiles",
                        description="Per tenant and overall: requests, span, mean and peak arrival rate, inter-arrival "
                        "coefficient of variation, prompt and output length percentiles.")
    st.add_argument("files", nargs="+", help="CSV paths, or the packaged names azure-code / azure-conv")
    st.add_argument("--all", action="store_true", help="every statistic of gymjax.traces.trace_stats, one per line")
    return p


def trace(argv: list[str] | None = None) -> int:
    """``inferencegym trace stats FILE [FILE ...] [--all]``; returns the exit code."""
    import dataclasses

    import numpy as np

    from gymjax.traces import PACKAGED_TRACES, TraceFormatError, load_packaged_trace, load_trace, trace_stats

    p = build_trace_parser()
    a = p.parse_args(argv)
    for f in a.files:
        try:
            tr = load_packaged_trace(f) if f in PACKAGED_TRACES else load_trace(f)
        except (FileNotFoundError, TraceFormatError) as e:
            p.error(str(e))
        stats = trace_stats(tr)
        if tr.n_tenants > 1:  # every request as one tenant
            stats["(all)"] = trace_stats(dataclasses.replace(tr, tenant=np.zeros_like(tr.tenant), tenant_names=("(all)",)))["(all)"]
        if a.all:
            for name, st in stats.items():
                print(f"{f} [{name}]")
                for k, v in st.items():
                    print(f"  {k:24s} {v:.4g}" if isinstance(v, float) else f"  {k:24s} {v}")
            continue
        print(f"{f}: {tr.n_requests} requests, {tr.n_tenants} tenant(s), {tr.duration_s:.1f} s")
        print(f"  {'tenant':10s} {'requests':>8s} {'req/s':>6s} {'peak/s':>6s} {'CV':>5s}   "
              f"{'prompt p50/p90/p99/max':>24s}   {'output p50/p90/p99/max':>22s}")
        for name, st in stats.items():
            lengths = lambda w: "/".join(f"{st[f'{w}_{q}']:.0f}" for q in ("p50", "p90", "p99", "max"))  # noqa: E731
            print(f"  {name:10s} {st['requests']:8d} {st['mean_rps']:6.2f} {st['max_per_s']:6d} {st['interarrival_cv']:5.2f}   "
                  f"{lengths('prompt'):>24s}   {lengths('output'):>22s}")
        print("  (req/s: mean arrival rate over the tenant's span; peak/s: most arrivals in one second; "
              "CV: coefficient of variation of inter-arrival gaps, 1 for Poisson)")
    return 0


def build_calibrate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym calibrate",
                                description="SLO attainment of constant actions on azure-replay, over seeds.")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--speedup", type=float, default=None, help="time compression (default: the task's)")
    p.add_argument("--n-gpus", type=int, default=None)
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--n-slots", type=int, default=None)
    return p


def calibrate(argv: list[str] | None = None) -> int:
    """``inferencegym calibrate [--speedup S] [--n-gpus N] [--horizon H] [--seeds K]``; returns the exit code."""
    a = build_calibrate_parser().parse_args(argv)
    from gymjax.trace_analysis import calibrate as run_calibration

    kw = {"speedup": a.speedup, "n_gpus": a.n_gpus, "horizon_steps": a.horizon, "n_slots": a.n_slots}
    run_calibration(a.seeds, **{k: v for k, v in kw.items() if v is not None})
    return 0


def build_headroom_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym headroom",
                                description="What an adaptive policy could gain over the best constant on azure-replay.")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the result here")
    return p


def headroom(argv: list[str] | None = None) -> int:
    """``inferencegym headroom [--seeds K] [--json F]``; returns the exit code."""
    a = build_headroom_parser().parse_args(argv)
    from gymjax.trace_analysis import headroom as run_headroom

    res = run_headroom(a.seeds)
    if a.json:
        write_json(a.json, res)
    return 0
