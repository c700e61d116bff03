"""Fidelity: the fast JAX engine against the reference simulator (:mod:`gymjax.reference`) on Poisson
traces of fixed-length requests (512 in / 256 out), a QPS sweep up to past saturation.

    python -m benchmarks.fidelity                       # every configuration, both schedulers, 8 and 64 leaps
    python -m benchmarks.fidelity --configs 8b-a100 --modes chunked --qps 2 4 8 --duration 60
    python -m benchmarks.fidelity --n-leaps 8           # the fast engine at its default leap count only

Each point draws one Poisson trace (``--seed``), serves it in the reference simulator, and replays
the same arrivals in the fast engine through the ``trace`` task (``gymjax.make("trace", path=...)``
with the CSV written from those requests), both under the same params and the same constant
action: vLLM's defaults (batch cap 128, 90 % of HBM, BF16, no speculation), with chunked prefill at
a 2048-token budget (``colocated-chunk-2048``) or, for ``prefill_first``, vLLM without chunked
prefill (the fast engine has no such level yet: it runs its closest one, flagged in the table).

Both sides' statistics are exact per request: the reference's from its own records, the fast
engine's from its opt-in request log (``EnvConfig.request_log``); ITL percentiles come from the
fast engine's episode histogram (within ±1.8 %). ``served_rps`` counts finishes in the same window.

Writes ``benchmarks/results/fidelity[_gpu].json`` and ``fidelity[_gpu].png`` and prints a table of
fast-vs-reference differences (%).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import LoadMonitor, machine_info, result_path, write_result

# name -> (model, gpu, n_gpus, tensor_parallel, default QPS sweep up to past saturation)
CONFIGS: dict[str, tuple[str, str, int, int, tuple[float, ...]]] = {
    "8b-a100": ("llama-3-8b", "a100", 1, 1, (1, 2, 4, 6, 8, 10, 12, 14, 16)),
    "8b-h100": ("llama-3-8b", "h100", 1, 1, (2, 5, 10, 15, 20, 25, 30, 35, 40)),
    "70b-h100-tp4": ("llama-3-70b", "h100", 4, 4, (1, 2, 4, 8, 12, 16, 20, 24, 28)),
}
MODES = ("chunked", "prefill_first")
CHUNKED_LEVEL = "colocated-chunk-2048"  # vLLM's default chunked-prefill budget
BATCH_CAP = 128
PROMPT_TOKENS, OUTPUT_TOKENS = 512, 256
QUEUE_CAP = 2048  # the fast engine's per-tenant queue: large enough that no point drops at the door
REQUEST_LOG_ROWS = 256  # the fast engine's request-log rows per interval (more finishes in one interval: an error)
METRICS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "itl_p50_s", "itl_p99_s")


def pd_level(mode: str) -> tuple[int, bool]:
    """The ``prefill_decode_split`` index the fast engine runs for ``mode`` and whether it is the
    mode itself (False: no such level yet, the closest one)."""
    from gymjax.presets import PD_MODES

    names = [m.name for m in PD_MODES]
    if mode == "prefill_first":
        for i, m in enumerate(PD_MODES):
            if not m.disaggregated and (getattr(m, "chunked", True) is False or "prefill-first" in m.name):
                return i, True
        return names.index(CHUNKED_LEVEL), False
    return names.index(CHUNKED_LEVEL), True


def write_csv(reqs, path: Path) -> None:
    """The generic trace CSV of ``reqs`` (a :class:`gymjax.reference.Requests`)."""
    with open(path, "w") as fh:
        fh.write("arrival_s,prompt_tokens,output_tokens\n")
        for a, p, o in zip(reqs.arrival_s, reqs.prompt_tokens, reqs.output_tokens, strict=True):
            fh.write(f"{a:.9f},{int(p)},{int(o)}\n")


def trace_env(csv: Path, conf: str, n_steps: int, max_arrivals: int, n_leaps: int):
    """``(env, params)`` of the ``trace`` task replaying ``csv`` on configuration ``conf`` for
    ``n_steps`` intervals (past the trace's end nothing arrives and the engine drains; the horizon is
    one step longer, so no auto-reset falls inside the run), with the per-request log on."""
    import gymjax

    model, gpu, n_gpus, tp, _ = CONFIGS[conf]
    return gymjax.make(
        "trace", path=str(csv), model=model, gpu=gpu, n_gpus=n_gpus, tensor_parallel=tp, n_slots=BATCH_CAP,
        max_arrivals=max_arrivals, n_leaps=n_leaps, queue_cap=QUEUE_CAP, horizon_steps=n_steps + 1,
        request_log=REQUEST_LOG_ROWS,
    )


_RUNNERS: dict[Any, Any] = {}


def _runner(env, n_steps: int):
    """One jitted rollout per (static sizes, steps): params and the action are arguments, so every
    point and configuration of a sweep reuses one compilation."""
    key = (env.cfg, n_steps)
    if key not in _RUNNERS:
        import jax

        from gymjax.rollout import rollout

        def run(params, action, rng):
            def record(s):
                return {"t_now": s.next_state.t_now, "requests": s.info["requests"]}

            carry, rec = rollout(env, params, lambda k, obs, st: action, rng, n_steps, record)
            return carry.episode, rec

        _RUNNERS[key] = jax.jit(run)
    return _RUNNERS[key]


def fast_engine_stats(env, params, action, n_steps: int, window: tuple[float, float]) -> dict[str, float]:
    """Whole-run statistics of the fast engine over one replay (keys as :func:`gymjax.reference.summarize`):
    TTFT, TPOT and E2E exact per request from the engine's request log (``EnvConfig.request_log``);
    ITL from the episode's ITL histogram (:func:`gymjax.physics.accounting.episode_latency_percentiles`,
    within ±1.8 %); ``served_rps``: finishes per second over ``window``."""
    import jax

    from gymjax.physics.accounting import episode_latency_percentiles
    from gymjax.types import REQUEST_LOG_COLUMNS

    t0 = time.perf_counter()
    episode, rec = jax.device_get(_runner(env, n_steps)(params, action, jax.random.PRNGKey(0)))
    run_s = time.perf_counter() - t0
    count = rec["requests"]["count"]
    if count.max() > REQUEST_LOG_ROWS:
        raise RuntimeError(f"{count.max()} requests finished in one interval; raise REQUEST_LOG_ROWS ({REQUEST_LOG_ROWS})")
    rows = np.concatenate([rec["requests"]["rows"][t, : count[t]] for t in range(len(count))])
    col = {name: rows[:, i] for i, name in enumerate(REQUEST_LOG_COLUMNS)}
    ttft = col["first_token_s"] - col["arrival_s"]
    e2e = col["finish_s"] - col["arrival_s"]
    many = col["output_tokens"] > 1
    tpot = (col["finish_s"] - col["first_token_s"])[many] / (col["output_tokens"][many] - 1)
    pct = lambda x, q: float(np.percentile(x, q)) if len(x) else math.nan  # noqa: E731
    itl = jax.device_get(episode_latency_percentiles(episode, (0.5, 0.99)))
    w0, w1 = window
    return {
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "tpot_p50_s": pct(tpot, 50),
        "tpot_p99_s": pct(tpot, 99),
        "e2e_p50_s": pct(e2e, 50),
        "e2e_p99_s": pct(e2e, 99),
        "itl_p50_s": float(itl["itl_p50_s"]),
        "itl_p99_s": float(itl["itl_p99_s"]),
        "served_rps": float(((col["finish_s"] >= w0) & (col["finish_s"] < w1)).sum() / (w1 - w0)),
        "finished": float(np.asarray(episode.finished).sum()),
        "arrived": float(np.asarray(episode.arrived).sum()),
        "dropped": float(np.asarray(episode.dropped).sum()),
        "preemptions": float(np.asarray(episode.preemptions)),
        "output_tokens": float(np.asarray(episode.output_tokens)),
        "run_s": run_s,
    }


def reference_stats(reqs, env, params, action, scheduler: str, window: tuple[float, float]) -> dict[str, float]:
    """The reference simulator's summary, with ``served_rps`` over the same whole-interval window."""
    from gymjax import reference

    t0 = time.perf_counter()
    res = reference.simulate(reqs, env.cfg, params, action, scheduler=scheduler)
    s = dict(res.summary)
    fin = res.requests["finish_s"][res.requests["status"] == reference.FINISHED]
    w0, w1 = window
    s["served_rps"] = float(((fin >= w0) & (fin < w1)).sum() / (w1 - w0))
    s["run_s"] = time.perf_counter() - t0
    return s


def _window(duration_s: float, warmup_frac: float) -> tuple[float, float]:
    """Whole intervals from ``warmup_frac`` of the arrival span to its end."""
    return float(math.ceil(warmup_frac * duration_s)), float(math.floor(duration_s))


def _diff(fast: float, ref: float) -> float:
    if not (np.isfinite(fast) and np.isfinite(ref)) or ref == 0:
        return math.nan
    return 100.0 * (fast / ref - 1.0)


def run_point(conf: str, mode: str, qps: float, args, n_steps: int, max_arrivals: int, tmp: Path) -> list[dict]:
    """One offered load: one Poisson trace, served once by the reference and once per ``--n-leaps``
    by the fast engine. Returns one row per fast-engine run."""
    from gymjax import reference
    from gymjax.types import ServeAction

    reqs = reference.poisson_requests(qps, args.duration, PROMPT_TOKENS, OUTPUT_TOKENS, seed=args.seed)
    reqs = reference.Requests.from_arrays(reqs.arrival_s - reqs.arrival_s[0], reqs.prompt_tokens, reqs.output_tokens)
    csv = tmp / f"{conf}_{qps:g}.csv"
    write_csv(reqs, csv)
    pd, exact_level = pd_level(mode)
    action = ServeAction(
        batch_cap=np.int32(BATCH_CAP),
        kv_budget_fraction=np.float32(0.9),
        speculation_depth=np.int32(0),
        quantization_tier=np.int32(0),
        prefill_decode_split=np.int32(pd),
        priority_routing=np.int32(0),
    )
    window = _window(args.duration, args.warmup)
    ref = None
    rows = []
    for n_leaps in args.n_leaps:
        env, params = trace_env(csv, conf, n_steps, max_arrivals, n_leaps)
        if ref is None:  # n_leaps is the fast engine's alone: the params are the same
            ref = reference_stats(reqs, env, params, action, mode, window)
        fast = fast_engine_stats(env, params, action, n_steps, window)
        rows.append(
            {
                "config": conf,
                "mode": mode,
                "qps": qps,
                "n_leaps": n_leaps,
                "requests": len(reqs),
                "fast_level_is_mode": exact_level,
                "reference": ref,
                "fast": fast,
                "diff_pct": {k: _diff(fast[k], ref[k]) for k in (*METRICS, "served_rps")},
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=190)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["mode"], r["n_leaps"]), []).append(r)
    for (conf, mode, n_leaps), rs in groups.items():
        note = "" if rs[0]["fast_level_is_mode"] else f" (fast engine: no such level, runs {CHUNKED_LEVEL})"
        t = Table(title=f"{conf}, {mode}{note}, fast engine n_leaps={n_leaps}: fast vs reference, % (reference value)")
        for c in (
            "QPS",
            "served rps ref/fast",
            "sat",
            "TTFT p50",
            "TTFT p99",
            "TPOT p50",
            "TPOT p99",
            "E2E p50",
            "E2E p99",
            "ITL p50",
            "ITL p99",
        ):
            t.add_column(c, justify="right")
        for r in rs:
            ref, d = r["reference"], r["diff_pct"]
            cell = lambda k: f"{d[k]:+.0f} ({ref[k] * 1e3:.0f} ms)" if np.isfinite(d[k]) else "—"  # noqa: E731
            t.add_row(
                f"{r['qps']:g}",
                f"{ref['served_rps']:.2f}/{r['fast']['served_rps']:.2f}",
                "yes" if ref.get("saturated") else "",
                *(cell(k) for k in METRICS),
            )
        console.print(t)


BELOW_SATURATION = 0.85  # "below saturation": offered load at most this share of the reference's saturation throughput


def worst_below_saturation(rows: list[dict]) -> list[dict]:
    """Per (configuration, mode, leaps): the largest fast-vs-reference difference (signed, %) of each
    metric over the loads below saturation (offered <= ``BELOW_SATURATION`` x the reference's
    saturation throughput, its largest served rate over the sweep), and the saturation throughputs."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["mode"], r["n_leaps"]), []).append(r)
    out = []
    for (conf, mode, n_leaps), rs in groups.items():
        sat_ref = max(r["reference"]["served_rps"] for r in rs)
        sat_fast = max(r["fast"]["served_rps"] for r in rs)
        below = [r for r in rs if r["qps"] <= BELOW_SATURATION * sat_ref]
        worst = {}
        for k in METRICS:
            d = [r["diff_pct"][k] for r in below if np.isfinite(r["diff_pct"][k])]
            worst[k] = max(d, key=abs) if d else math.nan
        out.append(
            {
                "config": conf,
                "mode": mode,
                "n_leaps": n_leaps,
                "fast_level_is_mode": rs[0]["fast_level_is_mode"],
                "loads_below": [r["qps"] for r in below],
                "worst_pct": worst,
                "saturation_rps_reference": sat_ref,
                "saturation_rps_fast": sat_fast,
                "saturation_diff_pct": _diff(sat_fast, sat_ref),
            }
        )
    return out


def markdown(summary: list[dict]) -> str:
    """The summary as a Markdown table (docs/fidelity.md quotes it)."""
    head = (
        "| configuration | scheduler | fast engine | loads (req/s) | "
        + " | ".join(k.removesuffix("_s").replace("_", " ").upper().replace(" P", " p") for k in METRICS)
        + " | saturation req/s ref / fast |"
    )
    lines = [head, "|" + "---|" * (5 + len(METRICS))]
    for s in summary:
        fast = f"{s['n_leaps']} leaps" + ("" if s["fast_level_is_mode"] else f", {CHUNKED_LEVEL}")
        loads = ", ".join(f"{q:g}" for q in s["loads_below"])
        cells = " | ".join(f"{s['worst_pct'][k]:+.0f} %" if np.isfinite(s["worst_pct"][k]) else "—" for k in METRICS)
        sat = f"{s['saturation_rps_reference']:.1f} / {s['saturation_rps_fast']:.1f} ({s['saturation_diff_pct']:+.0f} %)"
        lines.append(f"| {s['config']} | {s['mode']} | {fast} | {loads} | {cells} | {sat} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confs = list(dict.fromkeys(r["config"] for r in rows))
    panels = (
        ("ttft_p50_s", "TTFT p50 (s)"),
        ("ttft_p99_s", "TTFT p99 (s)"),
        ("tpot_p50_s", "TPOT p50 (s)"),
        ("e2e_p50_s", "E2E p50 (s)"),
        ("served_rps", "served (req/s)"),
    )
    fig, axes = plt.subplots(len(panels), len(confs), figsize=(4.2 * len(confs), 2.6 * len(panels)), squeeze=False)
    styles = {"chunked": "-", "prefill_first": "--"}
    for j, conf in enumerate(confs):
        for i, (k, label) in enumerate(panels):
            ax = axes[i][j]
            for mode in MODES:
                rs = [r for r in rows if r["config"] == conf and r["mode"] == mode]
                if not rs:
                    continue
                leaps = sorted({r["n_leaps"] for r in rs})
                q = [r["qps"] for r in rs if r["n_leaps"] == leaps[0]]
                ax.plot(
                    q,
                    [r["reference"][k] for r in rs if r["n_leaps"] == leaps[0]],
                    "k" + styles[mode],
                    marker="o",
                    ms=3,
                    label=f"reference {mode}",
                )
                for n_leaps, color in zip(leaps, ("tab:red", "tab:blue", "tab:green"), strict=False):
                    sub = [r for r in rs if r["n_leaps"] == n_leaps]
                    if not sub[0]["fast_level_is_mode"]:
                        continue  # the fast engine has no such level: its runs are the chunked ones again
                    ax.plot(
                        [r["qps"] for r in sub],
                        [r["fast"][k] for r in sub],
                        styles[mode],
                        color=color,
                        marker="x",
                        ms=4,
                        label=f"fast {mode} ({n_leaps} leaps)",
                    )
            if k == "served_rps":
                lim = max(r["qps"] for r in rows if r["config"] == conf)
                ax.plot([0, lim], [0, lim], ":", color="grey", lw=0.8)
            elif k.startswith("ttft") or k.startswith("e2e"):
                ax.set_yscale("log")
            ax.set_xlabel("offered load (req/s)")
            ax.set_ylabel(label)
            if i == 0:
                ax.set_title(conf)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("Fast engine vs reference simulator: Poisson 512/256, batch cap 128 (python -m benchmarks.fidelity)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--qps", type=float, nargs="*", default=None, help="offered loads (default: each configuration's sweep)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of arrivals per point")
    ap.add_argument("--drain", type=float, default=40.0, help="seconds the fast engine runs past the last arrival")
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the arrivals excluded from the served-rate window")
    ap.add_argument("--n-leaps", type=int, nargs="*", default=[8, 64], help="the fast engine's leaps per interval (one run each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args(argv)

    monitor = LoadMonitor()
    n_steps = int(math.ceil(args.duration + args.drain))
    sweeps = {c: tuple(args.qps) if args.qps else CONFIGS[c][4] for c in args.configs}
    # one max_arrivals for the whole run (one compilation): the busiest second of the busiest trace, with room
    top = max(q for qs in sweeps.values() for q in qs)
    max_arrivals = int(top + 6 * math.sqrt(top) + 8)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for conf in args.configs:
            for mode in args.modes:
                for qps in sweeps[conf]:
                    for r in run_point(conf, mode, qps, args, n_steps, max_arrivals, Path(d)):
                        rows.append(r)
                        print(
                            f"{conf} {mode} qps={qps:g} leaps={r['n_leaps']}: ref {r['reference']['run_s']:.1f} s, "
                            f"fast {r['fast']['run_s']:.1f} s, TTFT p50 {r['diff_pct']['ttft_p50_s']:+.0f} %",
                            flush=True,
                        )
    print_table(rows)
    summary = worst_below_saturation(rows)
    table_md = markdown(summary)
    print(f"\nLargest fast-vs-reference difference below saturation (offered <= {BELOW_SATURATION:g} x the reference's saturation):")
    print(table_md)
    path = result_path("fidelity", args.tag)
    payload = {
        "benchmark": "fidelity",
        "command": "python -m benchmarks.fidelity " + " ".join(argv if argv is not None else sys.argv[1:]),
        "workload": {
            "prompt_tokens": PROMPT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "duration_s": args.duration,
            "drain_s": args.drain,
            "seed": args.seed,
            "batch_cap": BATCH_CAP,
            "kv_budget_fraction": 0.9,
            "chunked_level": CHUNKED_LEVEL,
        },
        "configs": {c: dict(zip(("model", "gpu", "n_gpus", "tensor_parallel"), CONFIGS[c][:4], strict=True)) for c in args.configs},
        "fast_side": "per-request TTFT from state snapshots (exact), E2E/TPOT estimated from snapshots, ITL from interval histograms",
        "machine": machine_info(),
        "rows": rows,
        "summary": summary,
        "summary_markdown": table_md,
    }
    payload["load"] = monitor.report()
    write_result(path, payload)
    png = path.with_suffix(".png")
    plot(rows, png)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
