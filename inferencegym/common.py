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


# ------------------------------------------------------------------------------------------------
# Your own trace: the flags tune, eval and train share
# ------------------------------------------------------------------------------------------------

# flag dest -> gymjax.make("trace", ...) argument
TRACE_FLAGS = {"model": "model", "gpu": "gpu", "n_gpus": "n_gpus", "slo_ttft": "slo_ttft_s", "slo_tpot": "slo_tpot_s",
               "speedup": "speedup", "dt": "dt_s", "horizon": "horizon_steps", "n_slots": "n_slots"}


def add_trace_args(p) -> None:
    """``--trace FILE`` and the overrides of the ``trace`` task (model, GPU, SLOs, time scaling, sizes)."""
    g = p.add_argument_group("your own trace", "replay a trace CSV (arrival_s,prompt_tokens,output_tokens[,tenant]; "
                             "see docs/traces.md) as the `trace` task; the flags below apply to it")
    g.add_argument("--trace", metavar="FILE", default=None, help="the trace CSV to replay")
    g.add_argument("--model", default=None, help="model preset (default llama-3-8b)")
    g.add_argument("--gpu", default=None, help="GPU preset (default h100)")
    g.add_argument("--n-gpus", type=int, default=None, help="GPUs in the cluster (default 1)")
    g.add_argument("--slo-ttft", type=float, default=None, metavar="S", help="every tenant's TTFT target, seconds (default 2)")
    g.add_argument("--slo-tpot", type=float, default=None, metavar="S", help="every tenant's TPOT target, seconds (default 0.08)")
    g.add_argument("--speedup", type=float, default=None, help="replay this many times faster (default 1)")
    g.add_argument("--dt", type=float, default=None, metavar="S", help="control interval, seconds (default 1)")
    g.add_argument("--horizon", type=int, default=None, help="steps per episode (default 200, or the trace's length)")
    g.add_argument("--n-slots", type=int, default=None, help="batch slots (default 64)")


def trace_kwargs(a, p, env_pairs: dict | None = None) -> dict[str, Any] | None:
    """``gymjax.make("trace", **kwargs)`` arguments of the parsed flags (None without ``--trace``; the
    overrides without ``--trace`` are a usage error). ``env_pairs`` (``--env KEY=VALUE``) are added."""
    given = {dest: getattr(a, dest) for dest in TRACE_FLAGS if getattr(a, dest, None) is not None}
    if a.trace is None:
        if given:
            p.error(f"{', '.join('--' + k.replace('_', '-') for k in given)} apply to --trace FILE only "
                    "(for a registered task use --env KEY=VALUE where the command has it)")
        return None
    path = Path(a.trace)
    if not path.is_file():
        p.error(f"--trace {a.trace}: no such file")
    return {"path": str(path.resolve()), **{TRACE_FLAGS[k]: v for k, v in given.items()}, **(env_pairs or {})}


def make_trace_env(kwargs: dict[str, Any], p):
    """``gymjax.make("trace", **kwargs)``, with a bad trace or override reported as a usage error."""
    import gymjax

    try:
        return gymjax.make("trace", **kwargs)
    except (ValueError, KeyError) as e:
        p.error(str(e))
