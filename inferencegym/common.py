"""Helpers shared by the subcommands: ``KEY=VALUE`` flags, the training progress bar, output paths."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# where result files go when a command is run from a checkout (the CLI's default --out)
RESULTS_DIR = Path("benchmarks") / "results"


def parse_value(text: str) -> Any:
    """``KEY=VALUE`` values: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` from a repeatable ``KEY=VALUE`` flag to a dict, values parsed as JSON where they parse."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


@contextlib.contextmanager
def progress_bar(title: str, total_updates: int, enabled: bool = True) -> Iterator[tuple[Callable, Callable]]:
    """A rich progress bar fed by the trainer's coarse callbacks. Yields ``(on_progress, on_phase)``."""
    if not enabled:
        yield (lambda u, m: None), (lambda s: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*cols, transient=False) as prog:
        tid = prog.add_task(title, total=total_updates, info="")

        def on_progress(update: int, m: dict[str, float]) -> None:
            prog.update(
                tid,
                completed=max(update, prog.tasks[0].completed),
                info=f"score {m['episode_score']:.3f}  return {m['episode_return']:7.1f}  entropy {m['entropy']:.2f}",
            )

        def on_phase(phase: str) -> None:
            prog.update(tid, description=f"{title} [{phase}]")

        yield on_progress, on_phase
