"""`make bench`: every benchmark in turn, each writing its JSON/PNG under benchmarks/results/, then SUMMARY.md.

Takes about 30 minutes on 2 CPU cores. Run it on a quiet machine: each JSON records how much CPU
other work used meanwhile, and the summary flags busy runs. The GPU counterpart is
``benchmarks/gpu.sh``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

SUITE = [
    ("benchmarks.env_throughput", []),  # 1 ... 65,536 clusters, vmap over all cores
    ("benchmarks.env_throughput", ["--single-core", "--clusters", "1", "64", "1024", "4096"]),
    ("benchmarks.env_throughput", ["--host-devices", "2"]),  # one XLA device per core, clusters sharded
    ("benchmarks.env_throughput", ["--host-devices", "4", "--clusters", "64", "1024", "4096", "16384"]),  # more devices than cores
    ("benchmarks.env_capacity", []),
    ("benchmarks.sim_rate", []),
    ("benchmarks.train_speed", []),  # throughput at 64/256 envs, then a full `make train` run per task
    ("benchmarks.server_latency", []),
    ("benchmarks.fidelity", []),  # fast engine vs the reference simulator, QPS sweeps (about 5 minutes)
]


def main() -> None:
    failed = []
    for mod, args in SUITE:
        try:
            importlib.import_module(mod)
        except ImportError as e:  # server_latency needs the server extras
            print(f"skip {mod}: {e}")
            continue
        print(f"== {mod} {' '.join(args)}", flush=True)
        # a separate process per benchmark: clean JAX state, and a hard timeout against XLA:CPU hangs
        rc = subprocess.call(["timeout", "1500", sys.executable, "-m", mod, *args])
        if rc:
            failed.append(f"{mod} {' '.join(args)}".strip())
    from benchmarks.summary import write_summary

    print(f"wrote {write_summary()}")
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()
