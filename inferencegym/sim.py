"""Simulator tools: ``inferencegym tune`` (the best constant and the oracle's table), ``traces`` (trace
statistics), ``calibrate`` (azure-replay's load calibration), ``headroom`` (what adaptivity could
gain on azure-replay) and ``reference`` (a trace served by the reference simulator)."""

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


def build_reference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferencegym reference",
                                description="Serve a trace CSV in the reference simulator (gymjax.reference: vLLM's scheduler, one event "
                                "per engine iteration, exact per-request times) under one fixed configuration; print the summary.")
    p.add_argument("file", help="trace CSV (generic or Azure format, see docs/traces.md), or azure-code / azure-conv")
    p.add_argument("--model", default="llama-3-8b")
    p.add_argument("--gpu", default="h100")
    p.add_argument("--n-gpus", type=int, default=1)
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree (replicas = n_gpus / tp)")
    p.add_argument("--speedup", type=float, default=1.0, help="time compression of the trace")
    p.add_argument("--limit", type=int, default=None, help="serve only the first N requests")
    p.add_argument("--batch-cap", type=int, default=256)
    p.add_argument("--kv-budget", type=float, default=0.9)
    p.add_argument("--spec", type=int, default=0, help="speculation depth")
    p.add_argument("--quant", type=int, default=0, help="quantization tier (0 bf16, 1 fp8, 2 int8, 3 int4)")
    p.add_argument("--pd", type=int, default=2, help="prefill_decode_split level (colocated levels only)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--scheduler", choices=("chunked", "prefill_first"), default=None, help="default: what --pd means")
    p.add_argument("--csv", default=None, help="write per-request times here")
    p.add_argument("--json", default=None, help="write the summary here")
    return p


def reference(argv: list[str] | None = None) -> int:
    """``inferencegym reference FILE [flags]``; returns the exit code."""
    import numpy as np

    from gymjax import reference as ref
    from gymjax.registry import task_spec
    from gymjax.tasks import build_params
    from gymjax.traces import PACKAGED_TRACES, load_packaged_trace, load_trace, packaged_trace_path
    from gymjax.types import ServeAction

    a = build_reference_parser().parse_args(argv)
    path = str(packaged_trace_path(a.file)) if a.file in PACKAGED_TRACES else a.file
    spec = task_spec("trace", path=path, model=a.model, gpu=a.gpu, n_gpus=a.n_gpus, tensor_parallel=a.tp, n_slots=a.batch_cap)
    params = build_params(spec)
    tr = load_packaged_trace(a.file) if a.file in PACKAGED_TRACES else load_trace(path)
    reqs = ref.requests_from_trace(tr, a.speedup)
    if a.limit is not None:
        reqs = ref.Requests.from_arrays(reqs.arrival_s[: a.limit], reqs.prompt_tokens[: a.limit], reqs.output_tokens[: a.limit],
                                        reqs.tenant[: a.limit])
    act = ServeAction.create(
        batch_cap=np.int32(a.batch_cap), kv_budget_fraction=np.float32(a.kv_budget), speculation_depth=np.int32(a.spec),
        quantization_tier=np.int32(a.quant), prefill_decode_split=np.int32(a.pd), priority_routing=np.int32(a.priority),
    )
    t0 = time.perf_counter()
    res = ref.simulate(reqs, spec.config, params, act, scheduler=a.scheduler)
    print(f"{len(reqs)} requests on {a.model} / {a.n_gpus}x{a.gpu} (tp {a.tp}), {res.spec.scheduler} scheduler, "
          f"{res.summary['iterations']:.0f} iterations in {time.perf_counter() - t0:.1f} s")
    for k, v in res.summary.items():
        print(f"  {k:26s} {v:.4g}")
    if a.csv:
        keys = list(res.requests)
        with open(a.csv, "w") as fh:
            fh.write(",".join(keys) + "\n")
            for i in range(len(reqs)):
                fh.write(",".join(f"{res.requests[k][i]:.9g}" if res.requests[k].dtype.kind == "f" else str(res.requests[k][i])
                                  for k in keys) + "\n")
        print(f"wrote {a.csv}")
    if a.json:
        print(f"wrote {write_json(a.json, res.summary)}")
    return 0
