"""Simulator tools: ``inferencegym tune`` (the best constant and the oracle's table), ``traces`` (trace
statistics), ``calibrate`` (azure-replay's load calibration) and ``headroom`` (what adaptivity could
gain on azure-replay)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from inferencegym.common import write_json


def build_tune_parser() -> argparse.ArgumentParser:
    from gymjax.tune import TUNED_PATH

    p = argparse.ArgumentParser(prog="inferencegym tune",
                                description="Grid-search the best constant action per task (and the oracle's per-phase table); "
                                "see gymjax.tune for the grid. Tuning seeds are disjoint from evaluation seeds.")
    p.add_argument("--task", action="append", help="task(s) to tune (default: all but 'trace')")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--refine", type=int, default=8)
    p.add_argument("--refine-seeds", type=int, default=8)
    p.add_argument("--out", type=Path, default=TUNED_PATH, help="the JSON file to update (default: the one gymjax.baselines reads)")
    return p


def tune(argv: list[str] | None = None) -> int:
    """``inferencegym tune [--task T ...]``; returns the exit code."""
    a = build_tune_parser().parse_args(argv)
    import jax

    import gymjax
    from gymjax.tune import tune_task

    tasks = a.task or [t for t in gymjax.registered_envs() if t != "trace"]
    data = json.loads(a.out.read_text()) if a.out.exists() else {}
    for t in tasks:
        t0 = time.time()
        env, params = gymjax.make(t)
        data[t] = tune_task(env, params, a.seeds, a.refine, a.refine_seeds)
        data[t]["command"] = f"inferencegym tune --task {t} --seeds {a.seeds} --refine {a.refine} --refine-seeds {a.refine_seeds}"
        data[t]["jax_version"] = jax.__version__
        print(f"  {t}: {time.time() - t0:.0f} s")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {a.out}")
    return 0


def build_traces_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym traces", description="Per-tenant statistics of trace CSV files.")
    p.add_argument("files", nargs="+", help="CSV paths, or the packaged names azure-code / azure-conv")
    return p


def traces(argv: list[str] | None = None) -> int:
    """``inferencegym traces FILE [FILE ...]``; returns the exit code."""
    from gymjax.traces import PACKAGED_TRACES, load_packaged_trace, load_trace, trace_stats

    a = build_traces_parser().parse_args(argv)
    for f in a.files:
        tr = load_packaged_trace(f) if f in PACKAGED_TRACES else load_trace(f)
        for name, stats in trace_stats(tr).items():
            print(f"{f} [{name}]")
            for k, v in stats.items():
                print(f"  {k:24s} {v:.4g}" if isinstance(v, float) else f"  {k:24s} {v}")
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
