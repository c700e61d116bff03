"""The baseline scoreboard: every baseline on every task over evaluation seeds.

    python -m gymjax.scoreboard                 # all tasks (but 'trace'), 8 seeds
    inferencegym eval --seeds 16 --task bursty  # the same through the CLI

Prints mean score and 95 % confidence interval per (task, baseline), and writes
``benchmarks/results/scoreboard.json`` and ``scoreboard.png``. Evaluation seeds are disjoint from
training and tuning seeds (:func:`gymjax.grading.eval_keys`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def run(tasks: list[str], n_seeds: int = 8, log=print) -> dict:
    import gymjax
    from gymjax import baselines

    board = {}
    for task in tasks:
        env, params = gymjax.make(task)
        board[task] = {}
        for name in baselines.available(env):
            t0 = time.time()
            pol = baselines.POLICIES[name](env, params)
            r = gymjax.evaluate(env, params, pol, n_seeds=n_seeds)
            board[task][name] = {"mean": r["mean"], "ci95": r["ci95"], "scores": [float(x) for x in r["scores"]],
                                 "goodput": r["goodput"], "cost": r["cost"], "quality": r["quality"],
                                 "reward_sum_mean": float(np.mean(r["reward_sums"]))}
            log(f"  {task:13s} {name:14s} {r['mean']:.3f} ± {r['ci95']:.3f}   ({time.time() - t0:.0f} s)")
        add_paired(board[task])
    return board


def add_paired(row: dict, ref: str = "best-constant") -> None:
    """Add ``minus_best_constant``: this policy's score minus ``ref``'s on the same evaluation seeds
    (common random numbers), mean and paired 95 % CI. A CI that excludes 0 is a difference the seeds
    cannot explain."""
    from gymjax.grading import summarize

    if ref not in row:
        return
    base = np.asarray(row[ref]["scores"])
    for name, r in row.items():
        if name != ref and len(r["scores"]) == len(base):
            d = summarize(np.asarray(r["scores"]) - base)
            r["minus_best_constant"] = {"mean": d["mean"], "ci95": d["ci95"]}


def print_table(board: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    order = ["random", "vllm-default", "heuristic", "best-constant", "oracle", "ppo"]
    names = sorted({n for t in board.values() for n in t}, key=lambda n: order.index(n) if n in order else 99)
    table = Table(title="episode score (mean ± 95% CI)")
    table.add_column("task")
    for n in names:
        table.add_column(n, justify="right")
    for task, row in board.items():
        table.add_row(task, *[f"{row[n]['mean']:.3f} ± {row[n]['ci95']:.3f}" if n in row else "—" for n in names])
    console.print(table)
    diff = Table(title="minus best-constant on the same seeds (mean ± paired 95% CI)")
    diff.add_column("task")
    others = [n for n in names if n != "best-constant"]
    for n in others:
        diff.add_column(n, justify="right")
    for task, row in board.items():
        cells = []
        for n in others:
            d = row.get(n, {}).get("minus_best_constant")
            cells.append(f"{d['mean']:+.3f} ± {d['ci95']:.3f}" if d else "—")
        diff.add_row(task, *cells)
    console.print(diff)


def plot(board: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(board)
    names = sorted({n for t in board.values() for n in t}, key=lambda n: list(board[tasks[0]]).index(n) if n in board[tasks[0]] else 99)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks)), 3.8))
    w = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        xs = [j + i * w for j, t in enumerate(tasks) if n in board[t]]
        ys = [board[t][n]["mean"] for t in tasks if n in board[t]]
        es = [board[t][n]["ci95"] for t in tasks if n in board[t]]
        ax.bar(xs, ys, w, yerr=es, capsize=2, label=n)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(tasks))], tasks)
    ax.set_ylabel("episode score")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    import gymjax

    ap = argparse.ArgumentParser(prog="inferencegym eval", description="Score every baseline on every task.")
    ap.add_argument("--task", action="append", help="task(s) (default: all registered but 'trace')")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 for a confidence interval")
    tasks = args.task or [t for t in gymjax.registered_envs() if t != "trace"]
    for t in tasks:
        if t not in gymjax.registered_envs():
            ap.error(f"unknown task {t!r}; valid: {', '.join(gymjax.registered_envs())}")
    board = run(tasks, args.seeds)
    print_table(board)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scoreboard.json").write_text(json.dumps({"seeds": args.seeds, "board": board}, indent=1))
    plot(board, args.out / "scoreboard.png")
    print(f"wrote {args.out / 'scoreboard.json'} and scoreboard.png")


if __name__ == "__main__":
    main()
