"""Shared by the benchmarks: where results go, what machine made them, timing with compile kept apart.

Every benchmark JSON has ``machine`` (:func:`machine_info`: date, Python, jax/jaxlib, backend,
device kind and count, CPU model, cores) and ``load`` (:class:`LoadMonitor`: how busy the machine
was with *other* work while it ran). Results go to ``benchmarks/results/`` or to
``$IG_BENCH_RESULTS`` when set (smoke runs), with a device tag in the file name off the CPU
(``env_throughput_gpu.json``) so one machine's results never overwrite another's.

Imports nothing heavy at module level, and nothing from the server.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    d = Path(os.environ.get("IG_BENCH_RESULTS") or DEFAULT_RESULTS)
    d.mkdir(parents=True, exist_ok=True)
    return d


def device_tag() -> str:
    """``""`` on the CPU backend, else the backend name (``"gpu"``, ``"tpu"``): the file-name suffix."""
    import jax

    return "" if jax.default_backend() == "cpu" else jax.default_backend()


def result_path(stem: str, tag: str = "") -> Path:
    """``<results>/<stem>[_<tag>][_<device>].json``."""
    parts = [stem] + [t for t in (tag, device_tag()) if t]
    return results_dir() / ("_".join(parts) + ".json")


def machine_info() -> dict[str, Any]:
    import jax
    import jaxlib

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "n_devices": jax.device_count(),
        "n_processes": jax.process_count(),
        "cpu": cpu,
        "cores_available": len(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # a warm persistent cache turns compile times into cache loads
        "compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR", ""),
    }


def _cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (/proc/stat), or None where unavailable."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class LoadMonitor:
    """CPU time the rest of the machine used while a benchmark ran, as a share of all cores.

    ``other_cpu_share`` = (machine busy CPU s - this process's CPU s) / (wall s x cores): 0 on a quiet
    machine, 0.5 when other work kept one of two cores busy. Timings with a share above ~0.1 are
    noisy and low; :func:`benchmarks.summary` flags them.
    """

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()
        self.load_start = os.getloadavg()[0]

    def report(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        busy = _cpu_busy_s()
        ncpu = os.cpu_count() or 1
        share = None
        if busy is not None and self.busy0 is not None and wall > 0:
            other = (busy - self.busy0) - (_own_cpu_s() - self.own0)
            share = round(max(other, 0.0) / (wall * ncpu), 3)
        return {"other_cpu_share": share, "load_avg_1m_start": round(self.load_start, 2), "wall_s": round(wall, 1), "cpus": ncpu}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def time_jitted(fn: Callable, args: tuple, repeats: int, vary: Callable[[int], tuple] | None = None) -> dict[str, Any]:
    """Compile ``fn`` (a ``jax.jit`` function) for ``args``, run it once (warm-up), then ``repeats`` times.

    ``vary(i)`` gives the arguments of timed run i (default: ``args`` again). Returns ``compile_s``
    (lower + compile), ``first_run_s`` (the warm-up, excluded), ``runs_s`` and ``median_s`` (wall),
    ``cpu_runs_s`` and ``median_cpu_s`` (process CPU time, all threads), plus the last output under
    ``"out"``.
    """
    import jax

    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    first_s = time.perf_counter() - t0
    runs, cpu = [], []
    for i in range(repeats):
        a = vary(i) if vary else args
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*a))
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "compile_s": compile_s,
        "first_run_s": first_s,
        "runs_s": runs,
        "median_s": median(runs) if runs else None,
        "cpu_runs_s": cpu,  # CPU seconds of the whole process (every thread) per run
        "median_cpu_s": median(cpu) if cpu else None,
        "out": out,
    }


def write_result(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (atomically: a benchmark killed mid-write leaves the old file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    tmp.replace(path)
    return path


def is_oom(e: BaseException) -> bool:
    s = f"{type(e).__name__}: {e}"
    return "RESOURCE_EXHAUSTED" in s or "Out of memory" in s or "out of memory" in s or isinstance(e, MemoryError)
