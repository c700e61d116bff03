"""How a scoreboard is shown: the rich tables, the bar plot and the paired confidence intervals.

A *row* is one task's ``{policy: entry}`` as :func:`gymjax.evaluation.scoreboard` returns it (per-seed
``scores``, ``mean``, ``ci95``, ...); a *board* is ``{task: row}``. Every command that prints or plots
a scoreboard (``inferencegym eval``, ``train``, ``train-all``, ``seeds``) goes through here.

The paired difference of a policy to the reference (``best-constant``) is its score minus the
reference's on the same evaluation seeds (common random numbers), mean and 95 % CI half-width
(:func:`gymjax.grading.summarize` of the per-seed differences); a CI that excludes 0 is a difference
the seeds cannot explain.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from gymjax.grading import summarize

REFERENCE = "best-constant"
PAIRED_KEY = "minus_best_constant"  # entry[PAIRED_KEY] = {"mean", "ci95"} of the paired difference to REFERENCE
POLICY_ORDER = ("random", "vllm-default", "heuristic", "best-constant", "oracle", "ppo", "ppo-sampled")


def paired(entry: dict, ref_entry: dict) -> dict[str, float]:
    """``{"mean", "ci95"}`` of ``entry``'s per-seed scores minus ``ref_entry``'s (same seeds)."""
    d = summarize(np.asarray(entry["scores"]) - np.asarray(ref_entry["scores"]))
    return {"mean": d["mean"], "ci95": d["ci95"]}


def add_paired(row: dict, ref: str = REFERENCE) -> dict:
    """Add ``entry[PAIRED_KEY]`` (the paired difference to ``ref``) to every other policy of ``row``
    scored on as many seeds; nothing when ``ref`` is absent. Returns ``row``."""
    if ref in row:
        for name, entry in row.items():
            if name != ref and len(entry["scores"]) == len(row[ref]["scores"]):
                entry[PAIRED_KEY] = paired(entry, row[ref])
    return row


def policy_names(board: dict[str, dict]) -> list[str]:
    """Every policy of ``board`` once: the known ones in :data:`POLICY_ORDER`, then the rest as met."""
    seen: list[str] = []
    for row in board.values():
        seen += [n for n in row if n not in seen]
    rank = lambda n: POLICY_ORDER.index(n) if n in POLICY_ORDER else len(POLICY_ORDER)  # noqa: E731
    return sorted(seen, key=lambda n: (rank(n), seen.index(n)))


def score_cell(entry: dict | None, digits: int = 3) -> str:
    """``"mean ± ci95"`` of an entry, ``"—"`` for none."""
    return f"{entry['mean']:.{digits}f} ± {entry['ci95']:.{digits}f}" if entry else "—"


def paired_cell(entry: dict | None, digits: int = 3) -> str:
    """``"+diff ± ci95"`` of an entry's paired difference to the reference, ``"—"`` for none."""
    d = (entry or {}).get(PAIRED_KEY)
    return f"{d['mean']:+.{digits}f} ± {d['ci95']:.{digits}f}" if d else "—"


def _policy_table(board: dict[str, dict], names: list[str], title: str, cell) -> Table:
    """Tasks x ``names``: one row per task, ``cell(entry or None)`` per policy."""
    table = Table(title=title)
    table.add_column("task")
    for n in names:
        table.add_column(n, justify="right")
    for task, row in board.items():
        table.add_row(task, *[cell(row.get(n)) for n in names])
    return table


def scores_table(board: dict[str, dict], title: str = "episode score (mean ± 95% CI)"):
    """Tasks x policies: mean score ± 95 % CI."""
    return _policy_table(board, policy_names(board), title, score_cell)


def paired_table(board: dict[str, dict], ref: str = REFERENCE):
    """Tasks x policies: the paired difference to ``ref`` (rows need :func:`add_paired` first)."""
    others = [n for n in policy_names(board) if n != ref]
    return _policy_table(board, others, f"minus {ref} on the same seeds (mean ± paired 95% CI)", paired_cell)


def task_table(task: str, row: dict, ref: str = REFERENCE):
    """One task in detail, best first: score, paired difference to ``ref``, return and the score's parts."""
    n_seeds = len(next(iter(row.values()))["scores"])
    table = Table(title=f"{task}: episode score over {n_seeds} evaluation seeds")
    for col in ("policy", "score (mean ± 95% CI)", f"minus {ref} (paired 95% CI)", "return", "goodput", "cost", "quality"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, e in sorted(row.items(), key=lambda kv: -kv[1]["mean"]):
        table.add_row(name, score_cell(e, 4), paired_cell(e, 4), f"{e['return_mean']:.1f}", f"{e['goodput']:.3f}",
                      f"{e['cost']:.3f}", f"{e['quality']:.3f}")
    return table


def print_board(board: dict[str, dict], console=None, ref: str = REFERENCE) -> None:
    """Print the scores table and the paired-difference table of ``board`` (adds the paired differences)."""
    console = console or Console()
    for row in board.values():
        add_paired(row, ref)
    console.print(scores_table(board))
    console.print(paired_table(board, ref))


def print_task(task: str, row: dict, console=None, ref: str = REFERENCE) -> None:
    """Print one task's detailed table (adds the paired differences)."""
    (console or Console()).print(task_table(task, add_paired(row, ref), ref))


def plot_board(board: dict[str, dict], path: Path, names: Iterable[str] | None = None) -> None:
    """Grouped bars, one group per task: mean score ± 95 % CI of each policy; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in board if board[t]]
    names = list(names) if names is not None else policy_names(board)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.0 * len(tasks) + 2), 4))
    width = 0.8 / max(len(names), 1)
    for j, n in enumerate(names):
        cols = [(i, board[t][n]) for i, t in enumerate(tasks) if n in board[t]]
        xs = [i + (j - (len(names) - 1) / 2) * width for i, _ in cols]
        ax.bar(xs, [e["mean"] for _, e in cols], width, yerr=[e["ci95"] for _, e in cols], capsize=2, label=n)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("episode score (mean, 95 % CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
