"""Fuzz the OpenEnv server the way an attacker or a load test would, on loopback only.

    make fuzz                                            # the long run (>= 2,000 cases)
    timeout 3000 nice -n 10 python -m benchmarks.fuzz --cases 2000 --ws-frames 2000

It starts ``python -m server.app`` (the documented start command) on 127.0.0.1 serving every task
at small sizes, then:

1. **HTTP, schema-generated** (schemathesis, from the server's own ``/openapi.json``): ``--cases``
   cases spread over every operation, half schema-valid and half schema-violating bodies, queries
   and headers. Every ``/reset`` that opens a session is closed again.
2. **HTTP, hand-made bad bodies**: NaN/Infinity, non-objects, binary, long strings, on every POST route.
3. **Cut-off requests**: bodies that stop before their declared length, then a hang-up.
4. **WebSocket protocol** (``--ws-frames`` frames over several connections): valid resets, steps and
   states mixed with binary frames, text that is not JSON, non-objects, NaN, over-cap messages,
   unknown types, malformed resets and actions. Every frame must get a reply; a connection the
   server closes counts as a destroyed session.

It fails (exit 1) unless there are 0 responses with status >= 500, 0 leaked sessions (``GET
/sessions`` is back to 0 at the end) and 0 destroyed WebSocket sessions. Results go to
``benchmarks/results/fuzz.json``. The same functions, with small counts, run in the test suite
(``tests/test_server.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import socket
import time
from collections import Counter
from typing import Any

import httpx

KNOBS = {  # name: (kind, low, high) at the test sizes (n_slots 32)
    "batch_cap": ("int", 1, 32),
    "kv_budget_fraction": ("float", 0.05, 1.0),
    "speculation_depth": ("int", 0, 8),
    "quantization_tier": ("int", 0, 3),
    "prefill_decode_split": ("int", 0, 5),
    "priority_routing": ("int", 0, 1),
}
POST_ROUTES = ("/reset", "/step", "/close", "/grader", "/baseline", "/mcp")
MAX_FRAME = 65536


def close_if_opened(client: httpx.Client, path: str, status: int, body: Any) -> None:
    if path == "/reset" and status == 200 and isinstance(body, dict) and body.get("session_id"):
        client.post("/close", json={"session_id": body["session_id"]})


def _json(resp) -> Any:
    try:
        return resp.json()
    except Exception:  # noqa: BLE001
        return None


# ------------------------------------------------------------------------------------------------
# 1. schema-generated HTTP cases
# ------------------------------------------------------------------------------------------------


def fuzz_schema(url: str, n_cases: int, seed: int = 0, skip_valid: tuple[str, ...] = ()) -> dict:
    """``n_cases`` schemathesis cases over every operation of ``url``'s OpenAPI schema (half
    positive, half negative). ``skip_valid``: paths whose schema-valid cases are not sent (the suite
    skips ``/baseline``'s, whose every new policy x seed count compiles an evaluator)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    statuses: Counter = Counter()
    per_op: Counter = Counter()
    errors: list[dict] = []
    server_errors: list[dict] = []
    unsatisfiable: list[str] = []
    plan = [(op, mode) for op in ops for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    plan = [(op, mode) for op, mode in plan if not (mode is GenerationMode.POSITIVE and op.path in skip_valid)]
    # operations with inputs get the cases (one without parameters has one distinct request)
    with_input = [(op, mode) for op, mode in plan if op.method.lower() == "post" or op.path == "/state"]
    per = max(1, math.ceil(n_cases / max(len(with_input), 1)))
    with httpx.Client(base_url=url, timeout=120) as closer:
        # rounds with fresh Hypothesis seeds until n_cases were sent (a round stops early on an
        # operation whose distinct inputs run out)
        for round_ in range(8):
            if sum(statuses.values()) >= n_cases:
                break
            for op, mode in plan:
                budget = min(per, 25) if op.path == "/baseline" and mode is GenerationMode.POSITIVE else per
                if round_ and op.path == "/baseline" and mode is GenerationMode.POSITIVE:
                    continue  # its valid cases compile evaluators: one round of them

                @hseed(seed * 1000 + round_)
                @settings(
                    max_examples=budget,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=op.as_strategy(generation_mode=mode))
                def run(case):
                    try:
                        resp = case.call(base_url=url, timeout=120)
                    except Exception as e:  # noqa: BLE001 - a transport error is a finding, not a crash of the fuzzer
                        errors.append({"op": f"{op.method.upper()} {op.path}", "error": f"{type(e).__name__}: {str(e)[:200]}"})
                        return
                    statuses[resp.status_code] += 1
                    per_op[f"{op.method.upper()} {op.path}"] += 1
                    if resp.status_code >= 500:
                        name = f"{op.method.upper()} {op.path}"
                        server_errors.append({"op": name, "status": resp.status_code, "case": case.as_curl_command()[:500]})
                    close_if_opened(closer, op.path, resp.status_code, _json(resp))

                try:
                    run()
                except Unsatisfiable:  # e.g. no schema-violating case exists for an operation without inputs
                    if not round_:
                        unsatisfiable.append(f"{op.method.upper()} {op.path} {mode.value}")
    return {
        "cases": sum(statuses.values()),
        "operations": len(ops),
        "per_operation": dict(per_op),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": server_errors,
        "transport_errors": errors,
        "no_cases": unsatisfiable,
        "seed": seed,
    }


# ------------------------------------------------------------------------------------------------
# 2. hand-made bad bodies, 3. cut-off requests
# ------------------------------------------------------------------------------------------------


def bad_bodies(session_id: str) -> list[bytes]:
    return [
        b"NaN",
        b"Infinity",
        b'{"seed": NaN}',
        b'{"overrides": {"dt_s": -Infinity}}',
        json.dumps({"session_id": session_id, "action": {"batch_cap": 1}}).replace("1}", "NaN}").encode(),
        b"[]",
        b"1",
        b"null",
        b'"text"',
        b"true",
        b"{bad",
        b"\xff\xfe\x00",
        json.dumps({"task": "t" * 60_000}).encode(),
        json.dumps({"session_id": session_id, "action": {k: "9" * 20_000 for k in KNOBS}}).encode(),
        json.dumps({"overrides": {f"k{i}": i for i in range(5000)}}).encode(),
        b"[" * 5000 + b"]" * 5000,
    ]


def fuzz_bad_bodies(url: str) -> dict:
    statuses: Counter = Counter()
    server_errors, longest = [], 0
    with httpx.Client(base_url=url, timeout=60) as c:
        sid = c.post("/reset", json={}).json()["session_id"]
        for path in POST_ROUTES:
            for raw in bad_bodies(sid):
                r = c.post(path, content=raw, headers={"content-type": "application/json"})
                statuses[r.status_code] += 1
                longest = max(longest, len(r.content))
                if r.status_code >= 500:
                    server_errors.append({"path": path, "status": r.status_code, "body": raw[:80].decode("latin-1")})
                close_if_opened(c, path, r.status_code, _json(r))
        c.post("/close", json={"session_id": sid})
    return {
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": server_errors,
        "longest_reply_bytes": longest,
    }


def send_cut_off(url: str, path: str, body: bytes, missing: int = 20) -> None:
    """POST ``body`` declaring ``missing`` more bytes than it sends, then hang up."""
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body) + missing}\r\n\r\n"
        s.sendall(head.encode() + body)


def fuzz_cut_off(url: str, n: int) -> dict:
    with httpx.Client(base_url=url, timeout=60) as c:
        sid = c.post("/reset", json={}).json()["session_id"]
        before = c.get("/sessions").json()["active"]
        step = json.dumps({"session_id": sid, "action": {k: lo for k, (_, lo, _) in KNOBS.items()}}).encode()
        for i in range(n):
            send_cut_off(url, "/reset" if i % 2 else "/step", b"{}" if i % 2 else step)
        time.sleep(0.5)
        after = c.get("/sessions").json()["active"]
        steps = c.get("/state", params={"session_id": sid}).json()["step_count"]
        c.post("/close", json={"session_id": sid})
    return {"requests": n, "sessions_opened": after - before, "steps_run": steps}


# ------------------------------------------------------------------------------------------------
# 4. the WebSocket protocol
# ------------------------------------------------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 2**31, -(2**63), 10**30, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, -1e-308, rng.uniform(-1e6, 1e6)])
    if kind == 4:
        return "".join(rng.choice('ab\u00e9\u2603"\\ {}[]') for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return {
            rng.choice(["type", "data", "seed", "task", "x", "overrides"]): random_json(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def valid_action(rng: random.Random) -> dict:
    return {k: (rng.randint(lo, hi) if kind == "int" else round(rng.uniform(lo, hi), 3)) for k, (kind, lo, hi) in KNOBS.items()}


def ws_frame(rng: random.Random, tasks: list[str]) -> tuple[str | bytes, str]:
    """One frame and what it is (valid ones keep the episode going)."""
    r = rng.random()
    if r < 0.12:
        data = {"task": rng.choice(tasks), "seed": rng.randrange(2**31)}
        if rng.random() < 0.5:
            data["overrides"] = {"horizon_steps": rng.randint(1, 30)}
        return json.dumps({"type": "reset", "data": data}), "reset"
    if r < 0.40:
        return json.dumps({"type": "step", "data": valid_action(rng)}), "step"
    if r < 0.45:
        return json.dumps({"type": "state"}), "state"
    bad = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        lambda: "".join(rng.choice('{}[]":,ab01 ') for _ in range(rng.randrange(1, 40))),
        lambda: json.dumps(random_json(rng)),
        lambda: json.dumps({"type": "step", "data": {**valid_action(rng), rng.choice(list(KNOBS)): random_json(rng)}}),
        lambda: json.dumps({"type": "step", "data": valid_action(rng)}).replace("0.", 'NaN, "x": 0.', 1),
        lambda: json.dumps({"type": "reset", "data": random_json(rng)}),
        lambda: json.dumps(
            {
                "type": "reset",
                "data": {
                    "overrides": {
                        rng.choice(
                            ["dt_s", "n_gpus", "tensor_parallel", "max_wait_s", "horizon_steps", "gpu", "model", "n_slots"]
                        ): random_json(rng)
                    }
                },
            }
        ),
        lambda: json.dumps({"type": rng.choice(["wat", "", "RESET", "mcp", 7]), "data": random_json(rng)}),
        lambda: json.dumps({"type": "step", "data": {"pad": "x" * (MAX_FRAME + rng.randrange(1, 100_000))}}),
        lambda: json.dumps({"type": "step", "data": random_json(rng)}),
    ]
    return rng.choice(bad)(), "bad"


async def fuzz_ws(url: str, n_frames: int, tasks: list[str], seed: int = 0, n_conn: int = 4) -> dict:
    import websockets

    ws_url = url.replace("http", "ws", 1) + "/ws"
    replies: Counter = Counter()
    destroyed: list[dict] = []
    per_conn = math.ceil(n_frames / n_conn)

    async def one(i: int) -> int:
        rng = random.Random(seed * 1000 + i)
        sent = 0
        while sent < per_conn:
            async with websockets.connect(ws_url, open_timeout=60, max_size=2**24) as ws:
                while sent < per_conn:
                    frame, kind = ws_frame(rng, tasks)
                    sent += 1
                    try:
                        await ws.send(frame)
                        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                    except websockets.ConnectionClosed as e:
                        destroyed.append(
                            {
                                "conn": i,
                                "frame": kind,
                                "sent": (frame if isinstance(frame, str) else repr(frame))[:120],
                                "code": e.rcvd.code if e.rcvd else None,
                            }
                        )
                        break
                    code = reply["data"].get("code") if reply.get("type") == "error" else reply.get("type")
                    replies[f"{kind}:{code}"] += 1
                    if rng.random() < 0.01:
                        await ws.send(json.dumps({"type": "close"}))
                        break
        return sent

    sent = sum(await asyncio.gather(*(one(i) for i in range(n_conn))))
    return {"frames": sent, "connections": n_conn, "replies": dict(sorted(replies.items())), "destroyed_sessions": destroyed}


# ------------------------------------------------------------------------------------------------


def run(url: str, cases: int, ws_frames: int, cut_off: int, tasks: list[str], seed: int = 0, skip_valid: tuple[str, ...] = ()) -> dict:
    t0 = time.perf_counter()
    out: dict[str, Any] = {"schema": fuzz_schema(url, cases, seed, skip_valid)}
    out["bad_bodies"] = fuzz_bad_bodies(url)
    out["cut_off"] = fuzz_cut_off(url, cut_off)
    out["websocket"] = asyncio.run(fuzz_ws(url, ws_frames, tasks, seed))
    time.sleep(0.5)
    with httpx.Client(base_url=url, timeout=60) as c:
        out["sessions_left_open"] = c.get("/sessions").json()["active"]
        out["health"] = c.get("/health").status_code
    out["summary"] = {
        "http_requests": out["schema"]["cases"] + out["bad_bodies"]["requests"] + cut_off,
        "ws_frames": out["websocket"]["frames"],
        "server_errors_5xx": len(out["schema"]["server_errors"]) + len(out["bad_bodies"]["server_errors"]),
        "leaked_sessions": out["sessions_left_open"] + out["cut_off"]["sessions_opened"],
        "cut_off_steps_run": out["cut_off"]["steps_run"],
        "destroyed_ws_sessions": len(out["websocket"]["destroyed_sessions"]),
        "transport_errors": len(out["schema"]["transport_errors"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return out


def main() -> int:
    from benchmarks.common import machine_info, result_path
    from server.launch import TEST_SIZES, running_server

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2000, help="schemathesis cases over all HTTP operations")
    ap.add_argument("--ws-frames", type=int, default=2000)
    ap.add_argument("--cut-off", type=int, default=200, help="requests cut off before their body ends")
    ap.add_argument("--tasks", default="static,bursty,adversarial,azure-replay")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    extra = {"INFERENCEGYM_MAX_SESSIONS": "64", "INFERENCEGYM_PREWARM": "1"}
    with running_server(tuple(tasks), TEST_SIZES, extra, start_timeout_s=300) as url:
        with httpx.Client(base_url=url, timeout=600) as c:  # every task compiled before the clock starts
            for t in tasks:
                sid = c.post("/reset", json={"task": t}).json()["session_id"]
                c.post("/close", json={"session_id": sid})
        out = run(url, args.cases, args.ws_frames, args.cut_off, tasks, args.seed)
    out["config"] = {
        "cases": args.cases,
        "ws_frames": args.ws_frames,
        "cut_off": args.cut_off,
        "tasks": tasks,
        "sizes": TEST_SIZES,
        "command": "python -m benchmarks.fuzz " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    out["machine"] = machine_info()
    path = result_path("fuzz")
    path.write_text(json.dumps(out, indent=1) + "\n")
    s = out["summary"]
    print(json.dumps(s, indent=1))
    print(f"wrote {path}")
    ok = s["server_errors_5xx"] == 0 and s["leaked_sessions"] == 0 and s["destroyed_ws_sessions"] == 0 and s["cut_off_steps_run"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
