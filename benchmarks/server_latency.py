"""Server step latency on loopback: WebSocket and HTTP, one client and 8 concurrent clients.

    timeout 900 .venv/bin/python -m benchmarks.server_latency [--task static] [--steps 400] [--clients 8]

Starts ``python -m server.app`` on 127.0.0.1 (default task sizes), waits for the task's one
compilation, then times full request/response round trips per step as a client sees them:

- ``ws``: the OpenEnv WebSocket protocol (``{"type": "step", "data": action}``), one connection per client;
- ``http``: ``POST /step`` with a session id, one keep-alive connection per client;
- ``in_process``: ``Episode.step`` in this process (the jitted step + host conversion; the floor).

Writes ``benchmarks/results/server_latency.json`` (medians and p99 in ms) and prints a table.

    timeout 900 .venv/bin/python -m benchmarks.server_latency --load [--steps 400]

measures instead one WebSocket client's step latency idle and then for as long as another process
resets sessions with overrides never seen before, back to back (each builds the task's params:
``gymjax.make``, in a worker thread) while a ``/baseline`` run (its own worker process) is in
flight; writes ``benchmarks/results/server_latency_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ACTION = {
    "batch_cap": 48,
    "kv_budget_fraction": 0.9,
    "speculation_depth": 0,
    "quantization_tier": 0,
    "prefill_decode_split": 2,
    "priority_routing": 0,
}
OUT = Path(__file__).resolve().parent / "results" / "server_latency.json"


def summarize(lat_s: list[float]) -> dict:
    a = np.asarray(lat_s) * 1e3
    return {"n": int(a.size), "median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


async def ws_client(url: str, task: str, steps: int, seed: int) -> list[float]:
    from websockets.asyncio.client import connect

    ws_url = url.replace("http://", "ws://") + "/ws"
    async with connect(ws_url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "reset", "data": {"task": task, "seed": seed, "overrides": {"horizon_steps": steps + 10}}}))
        json.loads(await ws.recv())
        msg = json.dumps({"type": "step", "data": ACTION})
        lat = []
        for _ in range(steps):
            t0 = time.perf_counter()
            await ws.send(msg)
            reply = json.loads(await ws.recv())
            lat.append(time.perf_counter() - t0)
            assert reply["type"] == "observation", reply
        await ws.send(json.dumps({"type": "close"}))
    return lat


def ws_run(url: str, task: str, steps: int, clients: int) -> list[float]:
    async def run():
        return await asyncio.gather(*(ws_client(url, task, steps, seed) for seed in range(clients)))

    return [x for lat in asyncio.run(asyncio.wait_for(run(), timeout=600)) for x in lat]


def http_client(url: str, task: str, steps: int, seed: int, out: list, barrier: threading.Barrier) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/reset", json={"task": task, "seed": seed, "overrides": {"horizon_steps": steps + 10}})
        sid = r.json()["session_id"]
        body = {"session_id": sid, "action": ACTION}
        barrier.wait(timeout=120)
        lat = []
        for _ in range(steps):
            t0 = time.perf_counter()
            r = c.post("/step", json=body)
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        c.post("/close", json={"session_id": sid})
    out.extend(lat)


def http_run(url: str, task: str, steps: int, clients: int) -> list[float]:
    out: list[float] = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=http_client, args=(url, task, steps, s, out, barrier)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return out


def in_process(task: str, steps: int) -> list[float]:
    from server.runtime import Episode, RuntimeRegistry

    reg = RuntimeRegistry((task,), {})
    ep = Episode(reg)
    ep.reset(task=task, seed=0, overrides={"horizon_steps": steps + 10})
    lat = []
    for _ in range(steps):
        t0 = time.perf_counter()
        ep.step(ACTION)
        lat.append(time.perf_counter() - t0)
    return lat


def _load(url: str, task: str, done, counts) -> None:
    """The load (in its own process, so that its Python work does not hold the measuring client's
    GIL): resets with overrides never seen before, back to back (distinct ``n_gpus``/``max_wait_s``:
    each builds the task's params), while one ``/baseline`` run (4 seeds of the heuristic: a fresh
    evaluator compiles) is in flight; ends when the baseline answers."""
    stop = threading.Event()

    def resets():
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while not stop.is_set():
                i += 1
                r = c.post("/reset", json={"task": task, "overrides": {"n_gpus": 1 + i % 64, "max_wait_s": 5.0 + i}})
                if r.status_code == 200:
                    c.post("/close", json={"session_id": r.json()["session_id"]})
                    counts["resets"] += 1

    t = threading.Thread(target=resets)
    t.start()
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/baseline", json={"task": task, "policy": "heuristic", "n_seeds": 4, "seed": 7}, timeout=600)
    counts["baseline_s"] = time.perf_counter() - t0 if r.status_code == 200 else -float(r.status_code)
    stop.set()
    t.join(timeout=120)
    done.set()


def load_run(url: str, task: str, steps: int) -> dict:
    """One WebSocket client's step latency, idle (``steps`` steps) and then under load, sampled over
    the whole load window (chunks of ``steps`` until the load ends): resets with new overrides in a
    loop and one ``/baseline`` run, generated by another process."""
    import multiprocessing as mp

    idle = ws_run(url, task, steps, 1)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        done, counts = m.Event(), m.dict(resets=0, baseline_s=None)
        proc = ctx.Process(target=_load, args=(url, task, done, counts))
        proc.start()
        time.sleep(1.0)  # the load process is up and its first requests are in
        loaded: list[float] = []
        while not done.is_set() or not loaded:
            loaded += ws_run(url, task, steps, 1)
        proc.join(timeout=600)
        counts = dict(counts)
    out = {"idle": summarize(idle), "under_load": summarize(loaded), **counts}
    out["p99_ratio"] = out["under_load"]["p99_ms"] / out["idle"]["p99_ms"]
    return out


def main() -> None:
    from server.launch import running_server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="static")
    ap.add_argument("--steps", type=int, default=400, help="steps per client per measurement")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--load", action="store_true", help="idle vs under resets with new overrides and a /baseline run")
    args = ap.parse_args()
    if args.load:
        with running_server((args.task,), {}, {"INFERENCEGYM_PREWARM": "0"}, start_timeout_s=300) as url:
            r = httpx.post(f"{url}/reset", json={"task": args.task}, timeout=600)
            httpx.post(f"{url}/close", json={"session_id": r.json()["session_id"]})
            ws_run(url, args.task, 50, 1)
            res = load_run(url, args.task, args.steps)
        res["config"] = {
            "task": args.task,
            "steps": args.steps,
            "load_avg_at_end": os.getloadavg(),
            "command": "timeout 900 .venv/bin/python -m benchmarks.server_latency --load",
        }
        path = OUT.with_name("server_latency_load.json")
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "config"}, indent=1))
        return

    results: dict = {}
    with running_server((args.task,), {}, {"INFERENCEGYM_PREWARM": "0"}, start_timeout_s=300) as url:
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/reset", json={"task": args.task}, timeout=600)
        httpx.post(f"{url}/close", json={"session_id": r.json()["session_id"]})
        results["server_compile_s"] = time.perf_counter() - t0
        ws_run(url, args.task, 50, 1)  # warm the connection path
        for transport, run in (("ws", ws_run), ("http", http_run)):
            for n in (1, args.clients):
                lat = run(url, args.task, args.steps, n)
                results[f"{transport}_{n}_client{'s' if n > 1 else ''}"] = summarize(lat)
    results["in_process"] = summarize(in_process(args.task, args.steps))

    results["config"] = {
        "task": args.task,
        "steps_per_client": args.steps,
        "clients": args.clients,
        "action": ACTION,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load_avg_at_end": os.getloadavg(),
        "command": "timeout 900 .venv/bin/python -m benchmarks.server_latency",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'measurement':<16} {'median ms':>10} {'p99 ms':>10} {'n':>6}")
    for k, v in results.items():
        if isinstance(v, dict) and "median_ms" in v:
            print(f"{k:<16} {v['median_ms']:>10.3f} {v['p99_ms']:>10.3f} {v['n']:>6}")
    print(f"server compile {results['server_compile_s']:.1f} s; wrote {OUT}")


if __name__ == "__main__":
    main()
