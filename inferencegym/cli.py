"""The ``inferencegym`` entry point: ``inferencegym COMMAND [flags]`` dispatches to one subcommand.

Each subcommand is a function ``(argv) -> exit code`` with its own ``--help``; its module is imported
only when it runs, so ``inferencegym --help`` starts without JAX.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, function, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("inferencegym.train", "train", "train PPO on one task, save the policy, print its scoreboard"),
    "train-all": ("inferencegym.train", "train_all", "train PPO on every benchmark task (make train)"),
    "seeds": ("inferencegym.train", "seeds", "train several PPO seeds, each against the best constant"),
    "eval": ("inferencegym.evaluate", "evaluate", "the baseline scoreboard; with --policy PATH, a saved policy against the baselines"),
    "inspect": ("inferencegym.evaluate", "inspect", "a saved policy's knob levels per burst phase"),
    "tune": ("inferencegym.sim", "tune", "grid-search the best constant action (and the oracle's table)"),
    "trace": ("inferencegym.sim", "trace", "your own trace: `trace stats FILE` prints its rates and length percentiles"),
    "traces": ("inferencegym.sim", "traces", "every per-tenant statistic of trace CSV files (trace stats --all)"),
    "render": ("inferencegym.render", "render", "draw one episode of a policy: timeline PNG and interactive HTML"),
    "calibrate": ("inferencegym.sim", "calibrate", "azure-replay's load calibration (SLO attainment of constant actions)"),
    "headroom": ("inferencegym.sim", "headroom", "what an adaptive policy could gain over the best constant on azure-replay"),
    "reference": ("inferencegym.sim", "reference", "serve a trace in the reference simulator (vLLM's scheduler, exact per-request times)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: inferencegym COMMAND [flags]   (inferencegym COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:{width}s}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run ``inferencegym COMMAND ...``; returns the exit code (2 for an unknown command)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"inferencegym: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
