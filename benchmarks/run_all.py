"""`make bench`: every benchmark, in turn; each writes its JSON/PNG under benchmarks/results/."""

from __future__ import annotations

import importlib
import subprocess
import sys

SUITE = [
    ("benchmarks.env_throughput", []),
    ("benchmarks.env_throughput", ["--single-core", "--clusters", "1", "64", "1024", "4096"]),
    ("benchmarks.train_speed", []),
    ("benchmarks.server_latency", []),
]


def main() -> None:
    failed = []
    for mod, args in SUITE:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            print(f"skip {mod}: {e}")
            continue
        print(f"== {mod} {' '.join(args)}", flush=True)
        # a separate process per benchmark: clean JAX state, and a hard timeout against XLA:CPU hangs
        rc = subprocess.call(["timeout", "1500", sys.executable, "-m", mod, *args])
        if rc:
            failed.append(mod)
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()
