"""Write ``benchmarks/results/SUMMARY.md`` from the benchmark JSON files alone.

    python -m benchmarks.summary                  # reads and writes benchmarks/results/
    python -m benchmarks.summary --results DIR    # (or $IG_BENCH_RESULTS)

``make bench`` (``benchmarks.run_all``) runs it last. Needs no JAX: it only reads JSON, so the summary
can be regenerated anywhere, e.g. after copying a GPU machine's ``*_gpu.json`` files in.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_RESULTS

BUSY_SHARE = 0.1  # other work's share of the CPU above which timings are flagged


def _load(d: Path, pattern: str) -> list[tuple[str, dict]]:
    out = []
    for f in sorted(d.glob(pattern)):
        try:
            out.append((f.stem, json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {f}: {e}")
    return out


def _n(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _machine(d: dict) -> dict:
    m = d.get("machine") or d.get("config", {}).get("machine") or {}
    if isinstance(m, str):  # older files: a one-line description
        m = {"cpu": m}
    if "jax" not in m and "jax" in d:
        m = {**m, "jax": d["jax"]}
    return m


def _where(d: dict) -> str:
    """One line: device, JAX version, date, load."""
    m = _machine(d)
    if m.get("backend") not in (None, "cpu"):
        dev = f"{m.get('n_devices', 1)} x {m.get('device_kind', '?')}"
    else:
        dev = (
            ", ".join(
                x
                for x in (
                    m.get("cpu", ""),
                    f"{m['cores_available']} core{'s' if m['cores_available'] != 1 else ''}" if "cores_available" in m else "",
                )
                if x
            )
            or "CPU"
        )
        if m.get("n_devices", 1) > 1:
            dev += f", {m['n_devices']} XLA host devices"
    bits = [dev, f"jax {m['jax']}" if "jax" in m else "", m.get("date", "")[:10]]
    load = d.get("load")
    if load and load.get("other_cpu_share") is not None:
        share = load["other_cpu_share"]
        bits.append(
            f"**busy machine: other work used {share:.0%} of the CPU**"
            if share > BUSY_SHARE
            else f"quiet machine ({share:.0%} other CPU use)"
        )
    else:
        bits.append("load not recorded")
    return "; ".join(b for b in bits if b)


def _compile(r: dict) -> float | None:
    return r.get("compile_s", r.get("compile_plus_first_run_s"))


def env_throughput(d: Path) -> list[str]:
    files = _load(d, "env_throughput*.json")
    if not files:
        return []
    from benchmarks.env_throughput import _LEGACY_LABELS

    variants = []
    for stem, data in files:
        rows = {r["clusters"]: r for r in data.get("results", [])}
        variants.append((stem, data.get("label") or _LEGACY_LABELS.get(stem, stem), data, rows))
    counts = sorted({n for *_, rows in variants for n in rows})
    lines = [
        "## Env steps per second against the number of clusters",
        "",
        "One env step = one cluster simulated for one 1-s control interval (task `static` unless noted). Cells: env steps/s "
        "(median of the timed runs), and in brackets the compile time in seconds, excluded from the rate. "
        "`OOM`: did not fit in memory.",
        "",
        "| clusters | " + " | ".join(label for _, label, _, _ in variants) + " |",
        "|---:|" + "---:|" * len(variants),
    ]
    for n in counts:
        cells = []
        for *_, rows in variants:
            r = rows.get(n)
            if r is None:
                cells.append("")
            elif "env_steps_per_s" in r:
                c = _compile(r)
                cells.append(f"{_n(r['env_steps_per_s'])}" + (f" ({c:.0f})" if c is not None else ""))
            else:
                cells.append("OOM" if r.get("oom") else "error")
        lines.append(f"| {n:,d} | " + " | ".join(cells) + " |")
    if any("compile_plus_first_run_s" in r for *_, rows in variants for r in rows.values()):
        lines += ["", "(Files written before compile and first run were timed apart give compile + first run in brackets.)"]
    lines += ["", "Sources:"]
    for stem, label, data, _ in variants:
        lines.append(f"- `{stem}.json` ({label}): {_where(data)}; `{data.get('command', '?')}`")
    best = {
        label: max((r["env_steps_per_s"] for r in rows.values() if "env_steps_per_s" in r), default=None) for _, label, _, rows in variants
    }
    lines += ["", "Peak per variant: " + "; ".join(f"{k} {_n(v)} env steps/s" for k, v in best.items() if v) + "."]
    # sharded over forced host devices against plain vmap on the same cores
    base_label, base = next(((label, rows) for stem, label, _, rows in variants if stem == "env_throughput"), (None, None))
    for stem, label, _, rows in variants:
        if base and stem.endswith("dev") and stem.startswith("env_throughput_"):
            ratios = [
                f"{n:,d}: {rows[n]['env_steps_per_s'] / base[n]['env_steps_per_s']:.2f}"
                for n in counts
                if "env_steps_per_s" in rows.get(n, {}) and "env_steps_per_s" in base.get(n, {})
            ]
            if ratios:
                lines.append(f"Sharded / unsharded ({label} vs {base_label}), by clusters: " + ", ".join(ratios) + ".")
    return lines + [""]


def env_capacity(d: Path) -> list[str]:
    out = []
    for stem, data in _load(d, "env_capacity*.json"):
        out += [
            f"## Env steps per second against slot and queue capacity (`{stem}.json`)",
            "",
            f"{data['clusters']:,d} clusters, task `{data['task']}`; defaults n_slots = {data['defaults']['n_slots']}, "
            f"queue_cap = {data['defaults']['queue_cap']}. {_where(data)}.",
            "",
        ]
        for field in ("n_slots", "queue_cap"):
            out += [f"| {field} | env steps/s | state bytes / cluster | compile s |", "|---:|---:|---:|---:|"]
            for r in data.get(field, []):
                if "env_steps_per_s" in r:
                    out.append(f"| {r[field]} | {_n(r['env_steps_per_s'])} | {_n(r['state_bytes_per_cluster'])} | {_n(_compile(r), 1)} |")
                else:
                    out.append(f"| {r[field]} | {'OOM' if r.get('oom') else 'error'} | | |")
            out.append("")
    return out


def sim_rate(d: Path) -> list[str]:
    out = []
    for stem, data in _load(d, "sim_rate*.json"):
        out += [
            f"## Simulated requests and cluster-seconds per wall second (`{stem}.json`)",
            "",
            f"Fixed workload: task `{data['task']}` under {data.get('policy', 'the default action')}, one episode per cluster. "
            "Comparable with single-cluster discrete-event simulators' simulated requests (or simulated time) per wall "
            f"second; the 1-cluster row is the like-for-like one. {_where(data)}.",
            "",
            "| clusters | simulated s per cluster | requests simulated | wall s (median) | simulated requests / wall s "
            "| simulated cluster-s / wall s | compile s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in data.get("results", []):
            if "median_wall_s" in r:
                out.append(
                    f"| {r['clusters']:,d} | {r['simulated_s_per_cluster']:.0f} | {r['requests_arrived']:,d} | {r['median_wall_s']:.3f} | "
                    f"{_n(r['sim_requests_per_wall_s'])} | {_n(r['sim_cluster_s_per_wall_s'])} | {_n(r['compile_s'], 1)} |"
                )
            else:
                out.append(f"| {r['clusters']:,d} | {'OOM' if r.get('oom') else 'error'} | | | | | |")
        ref = data.get("reference")
        if ref:
            ratios = ", ".join(f"{int(n):,d} clusters {x:,.1f}x" for n, x in data.get("fast_over_reference_requests_per_cpu_s", {}).items())
            out += [
                "",
                f"Side by side: {ref['simulator']} served the {ref['requests']:,d} requests one cluster served in "
                f"{ref['median_wall_s']:.3f} s ({_n(ref['sim_requests_per_cpu_s'])} simulated requests per CPU-second); "
                f"the fast engine per CPU-second: {ratios}.",
            ]
        out.append("")
    return out


def train_speed(d: Path) -> list[str]:
    out = []
    for stem, data in _load(d, "train_speed*.json"):
        out += [f"## PPO training (`{stem}.json`)", "", f"{_where(data)}.", ""]
        if data.get("rows"):
            out += [
                "Throughput (median of the timed runs, compile apart): the fused PPO program against the raw env with random "
                "actions at the same batch.",
                "",
                "| task | envs | raw env steps/s | PPO env steps/s | raw / PPO | compile raw / PPO s |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for r in data["rows"]:
                out.append(
                    f"| `{r['task']}` | {r['num_envs']} | {_n(r['raw_env_steps_per_s'])} | {_n(r['ppo_env_steps_per_s'])} | "
                    f"{r['overhead_ratio']:.2f} | {r['raw_compile_s']:.0f} / {r['ppo_compile_s']:.0f} |"
                )
            out.append("")
        if data.get("tasks"):
            out += [
                "Wall time per task: one full `make train` run (default config, per-task budget; evaluation not included).",
                "",
                "| task | env steps | compile s | train s | env steps/s | wall s | final training-episode score |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for r in data["tasks"]:
                steps = f"{r['env_steps']:,d}" + (" (budget overridden)" if r.get("budget_overridden") else "")
                out.append(
                    f"| `{r['task']}` | {steps} | {r['compile_s']:.1f} | {r['train_s']:.1f} | {_n(r['env_steps_per_s'])} | "
                    f"{r['wall_s']:.1f} | {r['final_training_episode_score']:.3f} |"
                )
            out.append("")
    return out


def server_latency(d: Path) -> list[str]:
    out = []
    for stem, data in _load(d, "server_latency*.json"):
        rows = [(k, v) for k, v in data.items() if isinstance(v, dict) and "median_ms" in v]
        if not rows:
            continue
        cfg = data.get("config", {})
        out += [
            f"## Server step latency (`{stem}.json`)",
            "",
            f"Task `{cfg.get('task', '?')}`, loopback, {cfg.get('machine', '')}; server compile {data.get('server_compile_s', 0):.1f} s.",
            "",
            "| mode | steps | median ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        out += [f"| {k} | {v['n']} | {v['median_ms']:.2f} | {v['p99_ms']:.2f} |" for k, v in rows]
        out.append("")
    return out


def profile(d: Path) -> list[str]:
    f = d / "profile_step.json"
    if not f.exists():
        return []
    p = json.loads(f.read_text())
    return [
        "## Where a step's time goes (`profile_step.json`)",
        "",
        f"One core: {p.get('per_interval_us')} µs per cluster-interval + {p.get('per_leap_us')} µs per leap "
        f"({p.get('loop_fusions_per_leap')} XLA loop fusions per leap); `{p.get('command', '')}`.",
        "",
    ]


def targets(d: Path) -> list[str]:
    lines = ["## Targets", ""]
    cpu = None
    gpus: dict[str, tuple[float, int]] = {}  # device kind -> best (env steps/s, clusters)
    for _, data in _load(d, "env_throughput*.json"):
        m = _machine(data)
        for r in data.get("results", []):
            if "env_steps_per_s" not in r:
                continue
            if m.get("backend") in (None, "cpu") and r["clusters"] == 4096:
                cpu = max(cpu or 0, r["env_steps_per_s"])
            elif m.get("backend") == "gpu":
                kind = m.get("device_kind", "GPU")
                if kind not in gpus or r["env_steps_per_s"] > gpus[kind][0]:
                    gpus[kind] = (r["env_steps_per_s"], r["clusters"])
    lines.append(
        f"- 100,000 env steps/s at 4,096 clusters on 2 CPU cores: best measured {_n(cpu)} ({'met' if cpu and cpu >= 1e5 else 'not met'})."
        if cpu
        else "- 100,000 env steps/s at 4,096 clusters on 2 CPU cores: not measured."
    )
    h100 = [(v, k) for k, v in gpus.items() if "H100" in k]
    if h100:
        (best, n), kind = max(h100)
        lines.append(f"- 10,000,000 env steps/s on one H100: best measured {_n(best)} at {n:,d} clusters on {kind} "
                     f"({'met' if best >= 1e7 else 'not met'}).")
    for kind, (best, n) in sorted(gpus.items()):
        if "H100" not in kind:
            lines.append(f"- (other GPU) {kind}: best measured {_n(best)} env steps/s at {n:,d} clusters.")
    if not gpus:
        lines.append("- 10,000,000 env steps/s on one H100: not measured yet (`benchmarks/gpu.sh` on a GPU machine writes `*_gpu.json`).")
    ratios = [(r["overhead_ratio"], r["num_envs"], r.get("task", "static"), stem) for stem, data in _load(d, "train_speed*.json")
              for r in data.get("rows", []) if "overhead_ratio" in r]
    what = "- PPO training within 2x of the raw env throughput at the same batch:"
    if ratios:
        cells = ", ".join(f"{r:.2f}x on `{task}` at {n} envs (`{stem}.json`)" for r, n, task, stem in ratios)
        lines.append(f"{what} {cells} ({'met' if max(r for r, *_ in ratios) <= 2.0 else 'not met'}).")
    else:
        lines.append(f"{what} not measured (`python -m benchmarks.train_speed`).")
    return lines + [""]


def write_summary(d: Path | None = None) -> Path:
    d = Path(d or os.environ.get("IG_BENCH_RESULTS") or DEFAULT_RESULTS)
    sections: list[list[str]] = [targets(d), env_throughput(d), env_capacity(d), sim_rate(d), train_speed(d), server_latency(d), profile(d)]
    head = [
        "# InferenceGym benchmark summary",
        "",
        "Generated by `python -m benchmarks.summary` from the JSON files beside it (`make bench` runs every benchmark, then "
        "this; `benchmarks/gpu.sh` writes the `*_gpu.json` files). Rates are medians over repeated timed runs after "
        f"compilation; compile times are reported apart. A run is flagged busy when other work used more than {BUSY_SHARE:.0%} "
        "of the CPU while it ran: its rates are low and noisy.",
        "",
    ]
    body: list[Any] = head + [line for s in sections for line in s]
    path = d / "SUMMARY.md"
    path.write_text("\n".join(body).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=None, help="results folder (default: $IG_BENCH_RESULTS or benchmarks/results)")
    a = ap.parse_args(argv)
    print(f"wrote {write_summary(Path(a.results) if a.results else None)}")


if __name__ == "__main__":
    main()
