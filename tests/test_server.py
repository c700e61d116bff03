"""The OpenEnv server, end to end: a real uvicorn process on 127.0.0.1, real clients.

One server per module (its compilation is the cost); every test leaves the server usable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jax
import numpy as np
import pytest

import gymjax
from gymjax.spaces import KNOB_NAMES, knob_table
from server.launch import TEST_SIZES, running_server

ROOT = Path(__file__).resolve().parents[1]
OPENENV = Path(sys.executable).with_name("openenv")
SESSION_TIMEOUT_S = 4.0
MAX_SESSIONS = 12
TASKS = ("static", "bursty")  # two tasks, driven concurrently

ACTIONS = [  # varied, including slow-knob changes (reload/drain), so every knob travels
    {
        "batch_cap": 32,
        "kv_budget_fraction": 0.9,
        "speculation_depth": 0,
        "quantization_tier": 0,
        "prefill_decode_split": 2,
        "priority_routing": 0,
    },
    {
        "batch_cap": 8,
        "kv_budget_fraction": 0.8,
        "speculation_depth": 3,
        "quantization_tier": 0,
        "prefill_decode_split": 2,
        "priority_routing": 1,
    },
    {
        "batch_cap": 16,
        "kv_budget_fraction": 0.6,
        "speculation_depth": 1,
        "quantization_tier": 1,
        "prefill_decode_split": 0,
        "priority_routing": 0,
    },
    {
        "batch_cap": 24,
        "kv_budget_fraction": 0.95,
        "speculation_depth": 0,
        "quantization_tier": 1,
        "prefill_decode_split": 1,
        "priority_routing": 1,
    },
]


def action(i: int) -> dict:
    return ACTIONS[i % len(ACTIONS)]


@pytest.fixture(scope="module")
def url():
    extra = {"INFERENCEGYM_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S), "INFERENCEGYM_MAX_SESSIONS": str(MAX_SESSIONS)}
    with running_server(TASKS, TEST_SIZES, extra) as base:
        for t in TASKS:  # wait for each task's compilation once, here
            r = httpx.post(f"{base}/reset", json={"task": t}, timeout=240)
            assert r.status_code == 200, r.text
            httpx.post(f"{base}/close", json={"session_id": r.json()["session_id"]}, timeout=10)
        yield base


@pytest.fixture()
def http(url):
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def open_session(http, **body) -> str:
    r = http.post("/reset", json=body)
    assert r.status_code == 200, r.text
    return r.json()["session_id"]


# ------------------------------------------------------------------------------------------------
# HTTP sessions are real episodes
# ------------------------------------------------------------------------------------------------


def test_reset_with_empty_body_or_none_answers_200(http):
    for kwargs in ({"json": {}}, {}):
        r = http.post("/reset", **kwargs)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["done"] is False and body["reward"] is None and body["session_id"]
        assert body["observation"]["task"] == "static" and body["observation"]["step"] == 0
        http.post("/close", json={"session_id": body["session_id"]})


def test_http_episode_keeps_state_across_requests_and_is_graded(http):
    horizon = TEST_SIZES["horizon_steps"]
    sid = open_session(http, task="static", seed=5)
    r = http.post("/grader", json={"session_id": sid})
    assert r.status_code == 409  # not finished yet: no score from a partial episode
    rewards = []
    for i in range(horizon):
        r = http.post("/step", json={"session_id": sid, "action": action(i)})
        assert r.status_code == 200, r.text
        body = r.json()
        rewards.append(body["reward"])
        assert body["observation"]["step"] == i + 1
        assert body["done"] is (i + 1 == horizon)
        st = http.get("/state", params={"session_id": sid}).json()
        assert st["step_count"] == i + 1 and st["session_id"] == sid and st["seed"] == 5
        assert st["action_in_force"] == pytest.approx(action(i), rel=1e-7)  # kv_budget_fraction as float32
        assert body["observation"]["action_in_force"] == st["action_in_force"]
    counters = body["observation"]["counters"]
    assert counters["arrived"] == counters["finished"] + counters["running"] + counters["waiting"] + counters["dropped"]
    assert counters["arrived"] > 0
    r = http.post("/step", json={"session_id": sid, "action": action(0)})
    assert r.status_code == 409  # the episode is over until a reset
    g = http.post("/grader", json={"session_id": sid})
    assert g.status_code == 200, g.text
    g = g.json()
    assert 0.0 <= g["score"] <= 1.0 and g["steps"] == horizon and g["task"] == "static"
    assert g["reward_sum"] == pytest.approx(sum(rewards), rel=1e-5)
    assert body["observation"]["score"] == pytest.approx(g["score"])
    assert sum(g["episode"]["arrived"]) == counters["arrived"]
    http.post("/close", json={"session_id": sid})


def test_http_reset_of_an_existing_session_replays_its_seed(http):
    sid = open_session(http, task="static", seed=11, overrides={"horizon_steps": 6})
    first = [http.post("/step", json={"session_id": sid, "action": action(i)}).json()["observation"]["obs"] for i in range(3)]
    r = http.post("/reset", json={"session_id": sid, "task": "static", "seed": 11, "overrides": {"horizon_steps": 6}})
    assert r.status_code == 200 and r.json()["session_id"] == sid
    again = [http.post("/step", json={"session_id": sid, "action": action(i)}).json()["observation"]["obs"] for i in range(3)]
    assert first == again
    assert http.get("/state", params={"session_id": sid}).json()["horizon_steps"] == 6
    http.post("/close", json={"session_id": sid})


# ------------------------------------------------------------------------------------------------
# bad input: clear errors, and no other session notices
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_get_clear_errors_and_leave_a_live_session_alone(http):
    live = open_session(http, task="static", seed=3)
    twin = open_session(http, task="static", seed=3)  # the same episode, never disturbed
    seen = []
    for i in range(2):
        seen.append(http.post("/step", json={"session_id": live, "action": action(i)}).json())

    n_slots = TEST_SIZES["n_slots"]
    r = http.post("/step", json={"session_id": live, "action": {**action(0), "batch_cap": n_slots + 1}})
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["field"] == "batch_cap" and err["range"] == [1, n_slots] and err["unit"] == "sequences"
    assert err["loc"] == ["body", "action", "batch_cap"] and err["input"] == n_slots + 1 and str(n_slots) in err["msg"]
    r = http.post("/step", json={"session_id": live, "action": {**action(0), "kv_budget_fraction": 1.5}})
    assert r.status_code == 422 and r.json()["detail"][0]["range"] == [0.05, 1.0]
    assert r.json()["detail"][0]["unit"] == "fraction of HBM"
    for bad in ("8", True, 2.5, None):  # wrong types are refused, never coerced
        r = http.post("/step", json={"session_id": live, "action": {**action(0), "speculation_depth": bad}})
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["field"] == "speculation_depth"
    r = http.post("/step", json={"session_id": live, "action": {k: v for k, v in action(0).items() if k != "priority_routing"}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "priority_routing"
    r = http.post("/step", json={"session_id": live, "action": {**action(0), "turbo": 1}})
    assert r.status_code == 422
    r = http.post("/reset", json={"task": "no-such-task"})
    assert r.status_code == 422
    assert set(TASKS) <= set(r.json()["detail"]["valid"]) and "no-such-task" in r.json()["detail"]["message"]
    r = http.post("/reset", json={"task": "static", "overrides": {"n_slots": 8}})
    assert r.status_code == 422  # static sizes are the server's, not a session's
    r = http.post("/reset", json={"seed": -1})
    assert r.status_code == 422
    r = http.post("/step", json={"session_id": "no-such-session", "action": action(0)})
    assert r.status_code == 404
    assert http.get("/state", params={"session_id": "no-such-session"}).status_code == 404
    assert http.post("/grader", json={"session_id": "no-such-session"}).status_code == 404
    r = http.post("/step", content=b'{"session_id": "x", "action": {', headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = http.post("/step", content=b"[" + b"1," * 40000 + b"1]", headers={"content-type": "application/json"})
    assert r.status_code == 413

    # the live session continues exactly as its undisturbed twin
    for i in range(2):
        ref = http.post("/step", json={"session_id": twin, "action": action(i)}).json()
        assert ref["observation"]["obs"] == seen[i]["observation"]["obs"]
    for i in range(2, 5):
        a = http.post("/step", json={"session_id": live, "action": action(i)}).json()
        b = http.post("/step", json={"session_id": twin, "action": action(i)}).json()
        assert a["observation"]["obs"] == b["observation"]["obs"] and a["reward"] == b["reward"]
    assert http.get("/state", params={"session_id": live}).json()["step_count"] == 5
    for sid in (live, twin):
        http.post("/close", json={"session_id": sid})


def test_idle_sessions_expire_and_closed_ones_are_gone(http):
    idle = open_session(http, task="static")
    closed = open_session(http, task="static")
    assert http.post("/close", json={"session_id": closed}).status_code == 200
    assert http.post("/step", json={"session_id": closed, "action": action(0)}).status_code == 404
    time.sleep(SESSION_TIMEOUT_S + 1.0)
    r = http.post("/step", json={"session_id": idle, "action": action(0)})
    assert r.status_code == 404 and "expired" in r.json()["detail"]["message"]


def test_session_cap_refuses_then_recovers(http):
    opened = []
    try:
        for _ in range(MAX_SESSIONS + 1):
            r = http.post("/reset", json={})
            if r.status_code == 503:
                break
            assert r.status_code == 200, r.text
            opened.append(r.json()["session_id"])
        assert r.status_code == 503 and len(opened) <= MAX_SESSIONS
        http.post("/close", json={"session_id": opened.pop()})
        r = http.post("/reset", json={})
        assert r.status_code == 200
        opened.append(r.json()["session_id"])
    finally:
        for sid in opened:
            http.post("/close", json={"session_id": sid})


# ------------------------------------------------------------------------------------------------
# catalogue, schema, OpenEnv compliance
# ------------------------------------------------------------------------------------------------


def test_schema_and_tasks_come_from_gymjax(http):
    schema = http.get("/schema").json()
    props = schema["action"]["properties"]
    for k in knob_table(gymjax.types.MAX_SLOTS):
        assert props[k.name]["minimum"] == k.low and props[k.name]["maximum"] == k.high
        assert props[k.name]["type"] == ("integer" if k.kind == "int" else "number")
    assert set(schema["action"]["required"]) == set(KNOB_NAMES)
    obs_fields = {f for f in gymjax.Observation.__dataclass_fields__}
    assert obs_fields <= set(schema["observation"]["properties"])
    assert {"session_id", "task", "seed"} <= set(schema["state"]["properties"])

    cat = http.get("/tasks").json()
    names = [t["name"] for t in cat["tasks"]]
    assert names == list(TASKS)
    for t in cat["tasks"]:
        env, params = gymjax.make(t["name"], **TEST_SIZES)
        assert t["description"] == env.spec.description and t["model"] == env.spec.model and t["gpu"] == env.spec.gpu
        assert t["horizon_steps"] == int(params.horizon_steps)
        assert t["action_schema"]["properties"]["batch_cap"]["maximum"] == env.cfg.n_slots


def test_openenv_validate_url_passes_against_the_running_server(url):
    # the openenv CLI itself (openenv 0.10: its imports, gradio included, take 10-20 s)
    r = subprocess.run([str(OPENENV), "validate", "--url", url, "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["passed"] is True and report["standard_profile"] == "openenv-http/1.x" and report["mode"] == "simulation"
    ids = {c["id"] for c in report["criteria"]}
    assert {"openapi_version_available", "health_endpoint", "metadata_endpoint", "schema_endpoint", "mcp_endpoint"} <= ids
    assert all(c["passed"] for c in report["criteria"]), report["criteria"]


def test_openenv_validate_passes_on_the_repo():
    """What `openenv validate` runs on this repo (openenv 0.10's run_validation): the manifest's
    `validation:` block is schema-valid and within the severity policy (`--level static`: PASS).
    At the default level the runtime checks are skipped, as no `execution:` is declared (they need a
    container runtime; the next test runs them against a local server): verdict WARN, exit code 0."""
    from openenv.validation import CheckStatus, Level, Verdict, run_validation

    assert (ROOT / "openenv.yaml").exists() and (ROOT / "Dockerfile").exists()
    static = run_validation(ROOT, max_level=Level.STATIC)
    assert static.verdict is Verdict.PASS, static.results
    full = run_validation(ROOT)
    by = {r.check_id: r for r in full.results}
    assert by["static.manifest"].status is CheckStatus.PASS
    assert by["runtime.startup"].status is CheckStatus.SKIP and "execution" in by["runtime.startup"].evidence[0]
    assert all(r.status in (CheckStatus.PASS, CheckStatus.SKIP) for r in full.results), full.results
    assert full.verdict in (Verdict.PASS, Verdict.WARN)  # the CLI's exit code 0


def test_openenv_runtime_graders_pass_against_the_running_server(url, tmp_path):
    """openenv 0.10's runtime graders (observation schema, reward, state contract) on one WebSocket
    episode of each task, collected by openenv's own collector from the running server."""
    from openenv.validation import CheckStatus

    from server.manifest import runtime_validation

    for task in TASKS:
        report = runtime_validation(url, task, tmp_path / task, n_steps=4)
        by = {r.check_id: r for r in report.results}
        for check in ("runtime.startup", "runtime.observation_schema", "runtime.reward_well_formed", "runtime.state_contract"):
            assert by[check].status is CheckStatus.PASS, (task, check, by[check].evidence)
        assert not [r for r in report.results if r.status in (CheckStatus.FAIL, CheckStatus.ERROR)], report.results


def test_openenv_task_api_lists_the_served_tasks_and_reset_takes_split_and_index(http):
    assert http.get("/list_environments").json() == ["inferencegym"]
    assert http.get("/inferencegym/splits").json() == [{"name": "test", "type": "test"}]
    assert http.post("/inferencegym/num_tasks", json={"split": "test"}).json() == {"num_tasks": len(TASKS)}
    tasks = http.post("/inferencegym/tasks", json={"split": "test"}).json()["tasks"]
    assert [t["id"] for t in tasks] == list(TASKS) and [t["index"] for t in tasks] == list(range(len(TASKS)))
    catalogue = {t["name"]: t for t in http.get("/tasks").json()["tasks"]}
    for t in tasks:
        assert t["reset"] == {"task": t["id"]} and t["horizon_steps"] == catalogue[t["id"]]["horizon_steps"]
    assert http.post("/inferencegym/task", json={"split": "test", "index": 1}).json()["task"] == tasks[1]
    assert http.post("/inferencegym/task_range", json={"split": "test", "start": 1}).json()["tasks"] == tasks[1:]
    assert http.post("/inferencegym/task", json={"split": "test", "index": len(TASKS)}).status_code == 400
    bad_split = http.post("/inferencegym/tasks", json={"split": "train"})
    assert bad_split.status_code == 422 and bad_split.json()["detail"]["field"] == "split"
    assert http.post("/nosuchenv/tasks", json={"split": "test"}).status_code == 404
    # reset names a task by split and index, as the Task API says; the same episode as naming it
    by_index = http.post("/reset", json={"split": "test", "index": 1, "seed": 3}).json()
    by_name = http.post("/reset", json={"task": TASKS[1], "seed": 3}).json()
    assert by_index["observation"]["task"] == TASKS[1] and by_index["observation"]["obs"] == by_name["observation"]["obs"]
    for body in ({"index": len(TASKS)}, {"task": TASKS[0], "index": 1}, {"split": "test"}, {"split": "train", "index": 0}):
        r = http.post("/reset", json=body)
        assert r.status_code == 422 and r.json()["detail"]["field"] in ("index", "task", "split"), (body, r.text)
    for sid in (by_index["session_id"], by_name["session_id"]):
        http.post("/close", json={"session_id": sid})


def test_openenv_yaml_is_generated_from_the_task_registry():
    from server.manifest import PATH, render

    assert PATH.read_text() == render(), "openenv.yaml is out of date: run `python -m server.manifest`"


# ------------------------------------------------------------------------------------------------
# openenv's own EnvClient over WebSocket, against the in-process env
# ------------------------------------------------------------------------------------------------

EPISODES = [("static", 1, {"horizon_steps": 9}), ("bursty", 1, {})]


@functools.cache
def jitted(task: str):
    env, _ = gymjax.make(task, **TEST_SIZES)
    return jax.jit(env.reset), jax.jit(env.step)


def in_process(task: str, seed: int, overrides: dict, n_steps: int):
    """The documented seed contract, written out with plain gymjax calls."""
    _, params = gymjax.make(task, **{**TEST_SIZES, **overrides})
    reset, step = jitted(task)  # one compilation per task: overrides here change params only
    reset_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    obs, state = reset(reset_key, params)
    out = [(np.asarray(obs), None, False)]
    for i in range(n_steps):
        a = gymjax.ServeAction.create(**action(i))
        obs, state, reward, _, truncated, info = step(jax.random.fold_in(step_key, i), state, a, params)
        out.append((np.asarray(obs), float(reward), bool(truncated), {k: int(v) for k, v in info["counters"].items()}))
    return out


def test_env_client_episodes_over_websocket_match_the_in_process_env(url):
    from server.client import InferenceGymClient

    async def episode(task, seed, overrides):
        async with InferenceGymClient(base_url=url, message_timeout_s=120) as client:
            r = await client.reset(task=task, seed=seed, overrides=overrides)
            traj = [(r.observation.obs, r.reward, r.done)]
            i = 0
            while not r.done and i < 100:
                r = await client.step(action(i))
                traj.append((r.observation.obs, r.reward, r.done, r.observation.counters))
                assert r.observation.action_in_force == pytest.approx(action(i), rel=1e-7)
                i += 1
            state = await client.state()
            return traj, state

    async def both():
        return await asyncio.gather(*(episode(*e) for e in EPISODES))

    results = asyncio.run(asyncio.wait_for(both(), timeout=240))
    for (task, seed, overrides), (traj, state) in zip(EPISODES, results, strict=True):
        horizon = overrides.get("horizon_steps", TEST_SIZES["horizon_steps"])
        assert len(traj) == horizon + 1 and traj[-1][2] is True
        assert state.task == task and state.seed == seed and state.step_count == horizon and state.done
        ref = in_process(task, seed, overrides, horizon)
        for got, want in zip(traj, ref, strict=True):  # bit for bit: the server passes env.step the same ServeAction
            np.testing.assert_array_equal(np.asarray(got[0], np.float32), want[0])
            if want[1] is not None:
                assert got[1] == want[1] and got[2] == want[2] and got[3] == want[3]
    # the two sessions ran different episodes
    assert results[0][0][3][0] != results[1][0][3][0]


@pytest.mark.slow
def test_baseline_endpoint_scores_a_named_policy_bounded_cached_and_queued(http, url):
    r = http.post("/baseline", json={"task": "static", "policy": "no-such-policy"})
    assert r.status_code == 422 and "vllm-default" in r.json()["detail"]["valid"]
    for body in ({"n_seeds": 17}, {"n_seeds": 2, "overrides": {"horizon_steps": 100_000}}, {"overrides": {"horizon_steps": 4001}}):
        r = http.post("/baseline", json={"task": "static", "policy": "vllm-default", **body})
        assert r.status_code == 422, (body, r.text)  # bounded: seeds, and seeds x horizon
    first = http.post("/baseline", json={"task": "static", "policy": "vllm-default", "seed": 0, "n_seeds": 2}, timeout=280)
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["scores"]) == 2 and 0.0 <= body["mean"] <= 1.0
    again = http.post("/baseline", json={"task": "static", "policy": "vllm-default", "seed": 0, "n_seeds": 2}, timeout=280).json()
    assert again["evaluator_cached"] is True and again["scores"] == body["scores"]  # the compiled evaluator, reused
    other_seed = http.post("/baseline", json={"task": "static", "policy": "vllm-default", "seed": 1, "n_seeds": 2}, timeout=280).json()
    assert other_seed["evaluator_cached"] is True  # the seed is an argument, not a reason to retrace

    async def burst():  # more concurrent runs than the queue holds (4): the rest get 429 at once
        async with httpx.AsyncClient(base_url=url, timeout=280) as c:
            reqs = [c.post("/baseline", json={"task": "static", "policy": "heuristic", "seed": i, "n_seeds": 1}) for i in range(8)]
            return await asyncio.gather(*reqs)

    codes = sorted(r.status_code for r in asyncio.run(burst()))
    assert codes.count(429) >= 1 and set(codes) <= {200, 429} and codes.count(200) >= 1, codes
    live = open_session(http, task="static")  # the sessions were never affected
    assert http.post("/step", json={"session_id": live, "action": action(0)}).status_code == 200
    http.post("/close", json={"session_id": live})


# ------------------------------------------------------------------------------------------------
# the grade cannot be gamed: only the task as published, on a server-drawn seed, over its full
# horizon, gets an official score
# ------------------------------------------------------------------------------------------------


def play(http, **reset) -> dict:
    sid = open_session(http, task="static", **reset)
    done, i = False, 0
    while not done:
        r = http.post("/step", json={"session_id": sid, "action": action(i)})
        assert r.status_code == 200, r.text
        done, i = r.json()["done"], i + 1
    g = http.post("/grader", json={"session_id": sid})
    assert g.status_code == 200, g.text
    http.post("/close", json={"session_id": sid})
    return g.json()


def test_the_official_score_is_only_for_the_task_as_published(http):
    horizon = TEST_SIZES["horizon_steps"]
    official = [play(http) for _ in range(2)]  # no seed, no overrides: the server draws the seeds
    for g in official:
        assert g["official"] is True and g["official_score"] == g["score"] and g["unofficial_reasons"] == []
        assert g["complete"] is True and g["steps"] == g["task_horizon_steps"] == horizon
    assert official[0]["seed"] != official[1]["seed"]  # the server's own stream
    same_as_published = play(http, overrides={"n_gpus": 1, "dt_s": 1.0})  # overrides that change nothing
    assert same_as_published["official"] is True

    # route 1: overrides that change the task (more GPUs) are graded, never official
    more_gpus = play(http, overrides={"n_gpus": 8})
    assert more_gpus["official"] is False and more_gpus["official_score"] is None
    assert any("overrides" in r for r in more_gpus["unofficial_reasons"]) and 0.0 <= more_gpus["score"] <= 1.0

    # route 2: a short horizon scores as incomplete (F = steps / the task's horizon), never official
    short = play(http, overrides={"horizon_steps": 3})
    assert short["official"] is False and short["official_score"] is None and short["complete"] is False
    assert short["steps"] == 3 and short["score"] <= 3 / horizon + 1e-6
    assert any("incomplete" in r for r in short["unofficial_reasons"])

    # route 3: a client-chosen seed (here the best of several) is never official
    chosen = [play(http, seed=s) for s in range(4)]
    best = max(chosen, key=lambda g: g["score"])
    assert all(g["official"] is False and g["official_score"] is None for g in chosen)
    assert any("seed" in r for r in best["unofficial_reasons"])
    # the same episode as an official one, replayed by naming its seed, is graded the same but not official
    replay = play(http, seed=official[0]["seed"])
    assert replay["score"] == official[0]["score"] and replay["official"] is False


def test_dockerfile_serves_the_manifest_port_with_the_ci_install():
    import yaml

    docker = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    port = yaml.safe_load((ROOT / "openenv.yaml").read_text())["port"]
    # `make serve` installs the server extra (its own stamp), `make test` the dev extra (which includes it)
    assert re.search(r"^serve: \$\(SERVER\)$", makefile, re.M) and re.search(r"^test: \$\(DEV\)$", makefile, re.M)
    server_rule = makefile.split("\n$(SERVER):", 1)[1].split("\n\n", 1)[0]
    make_install = re.search(r'pip install --quiet -e "\.\[([a-z,]+)\]"', server_rule).group(1)
    assert f"EXPOSE {port}" in docker and f"PORT={port}" in docker
    assert "HEALTHCHECK" in docker and "/health" in docker.split("HEALTHCHECK", 1)[1]
    # the image installs the extras `make serve` installs, at uv.lock's versions
    extras = make_install.split(",")
    export = re.search(r"uv export --frozen --no-dev ((?:--extra \w+ )+)", docker)
    assert export and export.group(1).split() == [w for e in extras for w in ("--extra", e)]
    # every documented start command is server.app's main(), which gives uvicorn the WebSocket limit
    # (the server these tests run is started the same way: server.launch)
    assert docker.rsplit("\nCMD ", 1)[1].strip() == '["python", "-m", "server.app"]'
    serve = makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "-m server.app" in serve and "uvicorn" not in serve


def test_websocket_step_with_a_bad_action_answers_a_validation_error_and_keeps_the_session(url):
    import websockets

    async def play():
        async with websockets.connect(url.replace("http", "ws", 1) + "/ws", open_timeout=30) as ws:

            async def send(kind: str, data: dict) -> dict:
                await ws.send(json.dumps({"type": kind, "data": data}))
                return json.loads(await asyncio.wait_for(ws.recv(), timeout=60))

            first = await send("reset", {"task": "static", "seed": 4})
            bad = await send("step", {**action(0), "batch_cap": TEST_SIZES["n_slots"] + 1})
            wrong_type = await send("step", {**action(0), "speculation_depth": "8"})
            good = await send("step", action(0))
            return first, bad, wrong_type, good

    first, bad, wrong_type, good = asyncio.run(play())
    assert first["type"] == "observation"
    # the session's own task model refused it (its n_slots bound), not a server-wide one
    assert bad["type"] == "error" and bad["data"]["code"] == "VALIDATION_ERROR"
    assert bad["data"]["errors"][0]["loc"] == ["batch_cap"] and bad["data"]["errors"][0]["ctx"] == {"le": TEST_SIZES["n_slots"]}
    assert wrong_type["data"]["code"] == "VALIDATION_ERROR" and wrong_type["data"]["errors"][0]["loc"] == ["speculation_depth"]
    assert good["type"] == "observation" and good["data"]["observation"]["step"] == 1
    assert good["data"]["observation"]["action_in_force"] == pytest.approx(action(0), rel=1e-7)


# ------------------------------------------------------------------------------------------------
# reliability: cut-off requests, failed resets, NaN / non-object / binary input, echo size
# ------------------------------------------------------------------------------------------------


def active_sessions(http) -> int:
    return http.get("/sessions").json()["active"]


def send_cut_off(url: str, path: str, body: bytes, missing: int = 20) -> None:
    """POST ``body`` declaring ``missing`` more bytes than it sends, then hang up."""
    import socket

    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body) + missing}\r\n\r\n"
        s.sendall(head.encode() + body)


def test_cut_off_requests_run_nothing(http, url):
    sid = open_session(http, task="static", seed=2)
    before = active_sessions(http)
    for _ in range(MAX_SESSIONS + 2):  # more than the cap: had any run, the cap would now refuse
        send_cut_off(url, "/reset", b"{}")
    step = json.dumps({"session_id": sid, "action": action(0)}).encode()
    for _ in range(3):
        send_cut_off(url, "/step", step)
    time.sleep(0.5)
    assert active_sessions(http) == before
    assert http.get("/state", params={"session_id": sid}).json()["step_count"] == 0  # no cut-off step ran
    r = http.post("/step", content=step, headers={"content-type": "application/json"})  # the same bytes, complete
    assert r.status_code == 200 and r.json()["observation"]["step"] == 1
    http.post("/close", json={"session_id": sid})


BAD_OVERRIDES = [  # (overrides, the field the 422 names)
    ({"dt_s": 0}, "dt_s"),
    ({"dt_s": -1}, "dt_s"),
    ({"max_wait_s": -5}, "max_wait_s"),
    ({"n_gpus": -1}, "n_gpus"),
    ({"n_gpus": 0.5}, "n_gpus"),
    ({"n_gpus": 1e38}, "n_gpus"),
    ({"n_gpus": "8"}, "n_gpus"),
    ({"tensor_parallel": 0.5}, "tensor_parallel"),
    ({"tensor_parallel": 3}, "tensor_parallel"),
    ({"horizon_steps": True}, "horizon_steps"),
    ({"horizon_steps": 0}, "horizon_steps"),
    ({"gpu": "no-such-gpu"}, "overrides"),
    ({"n_slots": 8}, "overrides"),
    ({"horizon_steps": [1]}, "horizon_steps"),
]


def test_a_refused_reset_leaves_no_session_and_names_field_and_range(http):
    before = active_sessions(http)
    for overrides, field in BAD_OVERRIDES:
        r = http.post("/reset", json={"task": "static", "overrides": overrides})
        assert r.status_code == 422, (overrides, r.text)
        detail = r.json()["detail"]
        assert field in detail["field"], (overrides, detail)
        if field in ("dt_s", "n_gpus", "max_wait_s", "tensor_parallel"):
            assert re.search(r"[\[(][-\d.e+]+, [-\d.e+]+\]", detail["message"]), detail  # the allowed range
    for raw in (b'{"overrides": {"dt_s": NaN}}', b'{"overrides": {"dt_s": Infinity}}', b'{"seed": -Infinity}'):
        r = http.post("/reset", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "NaN" in r.json()["detail"]
    assert active_sessions(http) == before


BODY_ROUTES = ("/reset", "/step", "/close", "/grader", "/baseline")


def test_nan_infinity_and_non_objects_get_422_with_a_short_echo(http):
    sid = open_session(http, task="static")
    bodies = [b"NaN", b"[1, NaN]", b'{"x": Infinity}', b"[]", b"1", b'"s"', b"true", b"{bad", b"\xff\xfe"]
    bodies.append(json.dumps({"session_id": sid, "action": {**action(0), "batch_cap": "9" * 60_000}}).encode())
    bodies.append(json.dumps({"task": "t" * 60_000}).encode())
    bodies.append(json.dumps({"session_id": "s" * 60_000}).encode())
    for path in BODY_ROUTES:
        for raw in bodies:
            r = http.post(path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code in (404, 413, 422), (path, raw[:40], r.status_code, r.text[:300])
            assert len(r.content) < 4000, (path, raw[:40], len(r.content))  # an excerpt, never the input
    assert http.get("/state", params={"session_id": sid}).json()["step_count"] == 0
    http.post("/close", json={"session_id": sid})


def test_websocket_bad_frames_get_errors_and_the_session_goes_on(http, url):
    import websockets

    before = active_sessions(http)
    big = json.dumps({"type": "step", "data": {**action(0), "pad": "x" * 70_000}})  # over the 64 KiB cap, under 4x

    async def play():
        async with websockets.connect(url.replace("http", "ws", 1) + "/ws", open_timeout=30, max_size=2**22) as ws:

            async def send(frame) -> dict:
                await ws.send(frame)
                return json.loads(await asyncio.wait_for(ws.recv(), timeout=60))

            first = await send(json.dumps({"type": "reset", "data": {"task": "static", "seed": 4}}))
            ok1 = await send(json.dumps({"type": "step", "data": action(0)}))
            replies = []
            for frame in (
                "[]",
                "1",
                "null",
                '"step"',
                b"\x00\x01binary",
                "{bad",
                '{"type": "step", "data": {"batch_cap": NaN}}',
                json.dumps({"type": "step", "data": []}),
                json.dumps({"type": "step"}),
                json.dumps({"type": 7}),
                json.dumps({"type": "reset", "data": {"task": {"a": 1}}}),
                json.dumps({"type": "reset", "data": {"seed": 1.5}}),
                json.dumps({"type": "reset", "data": {"overrides": {"dt_s": 0}}}),
                json.dumps({"type": "wat"}),
                big,
            ):
                replies.append(await send(frame))
            ok2 = await send(json.dumps({"type": "step", "data": action(1)}))
            state = await send(json.dumps({"type": "state"}))
            during = active_sessions(http)
            return first, ok1, replies, ok2, state, during

    first, ok1, replies, ok2, state, during = asyncio.run(asyncio.wait_for(play(), timeout=240))
    assert first["type"] == ok1["type"] == "observation"
    for r in replies:
        assert r["type"] == "error" and r["data"]["code"] in ("INVALID_JSON", "VALIDATION_ERROR", "UNKNOWN_TYPE", "EXECUTION_ERROR"), r
        assert len(json.dumps(r)) < 4000
    assert replies[-1]["data"]["code"] == "INVALID_JSON" and "65536" in replies[-1]["data"]["message"]
    assert "dt_s" in json.dumps(replies[12])  # a refused reset names the field
    assert ok2["type"] == "observation" and ok2["data"]["observation"]["step"] == 2  # the episode went on, untouched
    assert state["data"]["step_count"] == 2 and state["data"]["seed"] == 4
    assert during == before + 1
    time.sleep(0.3)
    assert active_sessions(http) == before  # closed with the connection


def test_websocket_frames_over_the_transport_limit_close_the_connection_and_free_the_session(http, url):
    import websockets

    before = active_sessions(http)

    async def play():
        async with websockets.connect(url.replace("http", "ws", 1) + "/ws", open_timeout=30, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "state"}))
            await asyncio.wait_for(ws.recv(), timeout=30)
            await ws.send("x" * (4 * 65536 + 1))  # the uvicorn ws_max_size server.app's main() sets
            try:
                await asyncio.wait_for(ws.recv(), timeout=30)
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
            return "answered"

    assert asyncio.run(play()) == 1009
    time.sleep(0.3)
    assert active_sessions(http) == before


def test_reset_preparation_runs_off_the_event_loop(monkeypatch):
    """A reset's preparation (compiling a task, building it for new overrides: tens of ms to seconds)
    runs in a worker thread, over HTTP and WebSocket, so it never stalls another session's step."""
    from starlette.testclient import TestClient

    import server.runtime as runtime
    from server.app import create_app

    seen = []

    def prepare(self, task=None, seed=None, overrides=None):
        try:
            asyncio.get_running_loop()
            seen.append("event loop")
        except RuntimeError:
            seen.append("worker thread")
        raise runtime.SessionError(422, "stop here", field="task")

    monkeypatch.setattr(runtime.Episode, "prepare", prepare)
    app = create_app(tasks=("static",), task_overrides=TEST_SIZES, prewarm=False)
    with TestClient(app) as client:
        r = client.post("/reset", json={"task": "static", "overrides": {"horizon_steps": 7}})
        assert r.status_code == 422 and client.get("/sessions").json()["active"] == 0
        with client.websocket_connect("/ws") as ws:
            ws.send_text(json.dumps({"type": "reset", "data": {"task": "static"}}))
            assert ws.receive_json()["data"]["message"] == "stop here"
    assert seen == ["worker thread", "worker thread"]


# ------------------------------------------------------------------------------------------------
# fuzzing, bounded (the long run is `make fuzz`: benchmarks/fuzz.py)
# ------------------------------------------------------------------------------------------------


def test_schema_fuzz_and_websocket_fuzz_find_no_server_error_and_leak_nothing(http, url):
    """A bounded schemathesis run over every HTTP operation (schema-valid and schema-violating
    cases; /baseline only schema-violating, its valid cases compile evaluators) and a bounded random
    WebSocket protocol run: no 5xx, no WebSocket session ended by the server, no session left open."""
    from benchmarks.fuzz import fuzz_schema, fuzz_ws

    before = active_sessions(http)
    out = fuzz_schema(url, 70, skip_valid=("/baseline",))
    assert out["server_errors"] == [] and out["transport_errors"] == [], out
    assert out["cases"] >= 60 and len(out["per_operation"]) >= 10
    ws = asyncio.run(asyncio.wait_for(fuzz_ws(url, 100, list(TASKS), seed=1, n_conn=2), timeout=240))
    assert ws["destroyed_sessions"] == [] and ws["frames"] >= 100, ws
    assert any(k.startswith("step:observation") for k in ws["replies"]) and any(k.startswith("bad:") for k in ws["replies"])
    time.sleep(0.3)
    assert active_sessions(http) <= before


def test_stateful_sessions_behave_like_their_model(url):
    """Hypothesis drives random sequences of resets (with and without seeds and horizon overrides,
    valid and refused), steps (valid and bad actions), state, grader and close against the live
    server and checks every reply against a model of the sessions: step counts, 404 after close, 409
    after the horizon, official grades only for published episodes, no 5xx, nothing left open."""
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

    horizon = TEST_SIZES["horizon_steps"]
    knob = {k.name: k for k in knob_table(TEST_SIZES["n_slots"])}

    def knob_value(k):
        return st.integers(int(k.low), int(k.high)) if k.kind == "int" else st.floats(k.low, k.high)

    valid_actions = st.fixed_dictionaries({n: knob_value(k) for n, k in knob.items()})
    bad_actions = st.one_of(
        valid_actions.map(lambda a: {**a, "batch_cap": TEST_SIZES["n_slots"] + 1}),
        valid_actions.map(lambda a: {**a, "speculation_depth": "2"}),
        valid_actions.map(lambda a: {k: v for k, v in a.items() if k != "priority_routing"}),
    )

    class Sessions(RuleBasedStateMachine):
        ids = Bundle("ids")

        def __init__(self):
            super().__init__()
            self.c = httpx.Client(base_url=url, timeout=60)
            self.base = self.c.get("/sessions").json()["active"]
            self.model: dict[str, dict] = {}  # open sessions: steps, horizon, official-eligible
            self.closed: set[str] = set()

        @rule(target=ids, task=st.sampled_from(TASKS), seed=st.none() | st.integers(0, 2**31 - 1), h=st.none() | st.integers(1, 4))
        def reset(self, task, seed, h):
            body = {"task": task, **({"seed": seed} if seed is not None else {}), **({"overrides": {"horizon_steps": h}} if h else {})}
            r = self.c.post("/reset", json=body)
            assert r.status_code == 200, r.text
            sid = r.json()["session_id"]
            self.model[sid] = {"steps": 0, "horizon": h or horizon, "published": seed is None and h in (None, horizon)}
            return sid

        @rule(
            overrides=st.dictionaries(
                st.sampled_from(["n_gpus", "dt_s", "tensor_parallel", "max_wait_s", "bogus"]),
                st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.booleans(), st.text(max_size=3)),
                min_size=1,
            )
        )
        def reset_with_odd_overrides(self, overrides):
            r = self.c.post("/reset", json={"task": "static", "overrides": overrides})
            assert r.status_code in (200, 422), r.text
            if r.status_code == 200:  # valid ones (e.g. n_gpus 2) open a session like any other
                self.model[r.json()["session_id"]] = {"steps": 0, "horizon": horizon, "published": False}

        @rule(sid=ids, a=valid_actions)
        def step(self, sid, a):
            r = self.c.post("/step", json={"session_id": sid, "action": a})
            m = self.model.get(sid)
            if m is None:
                assert r.status_code == 404
            elif m["steps"] >= m["horizon"]:
                assert r.status_code == 409
            else:
                assert r.status_code == 200, r.text
                m["steps"] += 1
                assert r.json()["observation"]["step"] == m["steps"] and r.json()["done"] == (m["steps"] == m["horizon"])

        @rule(sid=ids, a=bad_actions)
        def bad_step(self, sid, a):
            r = self.c.post("/step", json={"session_id": sid, "action": a})
            assert r.status_code == (404 if sid not in self.model else 422), r.text

        @rule(sid=ids)
        def grade(self, sid):
            r = self.c.post("/grader", json={"session_id": sid})
            m = self.model.get(sid)
            if m is None:
                assert r.status_code == 404
            elif m["steps"] < m["horizon"]:
                assert r.status_code == 409
            else:
                g = r.json()
                assert r.status_code == 200 and g["official"] is m["published"] and (g["official_score"] is None) is not m["published"]
                assert g["complete"] is (m["steps"] >= horizon)

        @rule(sid=ids)
        def close(self, sid):
            r = self.c.post("/close", json={"session_id": sid})
            assert r.status_code == (200 if sid in self.model else 404)
            self.model.pop(sid, None)
            self.closed.add(sid)

        @invariant()
        def every_session_is_where_the_model_says(self):
            for sid, m in self.model.items():
                st_ = self.c.get("/state", params={"session_id": sid})
                assert st_.status_code == 200 and st_.json()["step_count"] == m["steps"]
            for sid in list(self.closed)[-3:]:
                assert self.c.get("/state", params={"session_id": sid}).status_code == 404

        def teardown(self):
            for sid in list(self.model):
                self.c.post("/close", json={"session_id": sid})
            assert self.c.get("/sessions").json()["active"] <= self.base
            self.c.close()

    run_state_machine_as_test(
        Sessions,
        settings=settings(
            max_examples=6, stateful_step_count=14, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
        ),
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_baseline_worker_exits_when_the_server_process_is_gone():
    """The /baseline worker (a spawned process) must not outlive the server, however the server ends:
    a parent that dies without shutting its pool down (os._exit, as SIGKILL would) leaves no worker."""
    code = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from server.worker import baseline_worker_init
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=baseline_worker_init)
print(pool.submit(os.getpid).result(timeout=240), flush=True)
os._exit(0)
"""
    # not subprocess.run: a surviving worker would hold the pipes open and run() would wait for it
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert proc.wait(timeout=280) == 0 and line.strip().isdigit(), line
    finally:
        proc.stdout.close()
    worker = int(line)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        state = Path(f"/proc/{worker}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        state = "gone"
    if state not in ("gone", "Z"):
        os.kill(worker, signal.SIGKILL)  # leave nothing behind, then fail
    assert state in ("gone", "Z"), f"the /baseline worker {worker} outlived its parent (state {state})"


# ------------------------------------------------------------------------------------------------
# the landing page: a live episode of a baseline, played against the server's own endpoints
# ------------------------------------------------------------------------------------------------


def test_baseline_action_is_the_baselines_own_action_and_moves_nothing(http):
    """POST /baseline/action answers what gymjax's heuristic does on the session's own state (the
    same actions as the heuristic played in-process under the seed contract), and changes nothing."""
    task, seed, n = "bursty", 7, 4
    sid = open_session(http, task=task, seed=seed)
    first = http.post("/baseline/action", json={"session_id": sid, "policy": "heuristic"})
    assert first.status_code == 200, first.text
    assert http.post("/baseline/action", json={"session_id": sid, "policy": "heuristic"}).json() == first.json()
    assert http.get("/state", params={"session_id": sid}).json()["step_count"] == 0  # the episode did not move
    served = []
    for i in range(n):
        act = http.post("/baseline/action", json={"session_id": sid, "policy": "heuristic"}).json()
        assert act["step"] == i and act["policy"] == "heuristic"
        r = http.post("/step", json={"session_id": sid, "action": act["action"]})
        assert r.status_code == 200, r.text
        assert r.json()["observation"]["action_in_force"] == pytest.approx(act["action"], rel=1e-7)
        served.append(act["action"])
    env, params = gymjax.make(task, **TEST_SIZES)
    policy = gymjax.baselines.POLICIES["heuristic"](env, params)
    reset, step = jitted(task)
    reset_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    obs, state = reset(reset_key, params)
    for i in range(n):
        a = env.decode_action(policy(jax.random.PRNGKey(0), obs, state))  # the heuristic uses no key
        assert gymjax.ServeAction(*(np.asarray(getattr(a, k)).item() for k in KNOB_NAMES)).to_dict() == pytest.approx(served[i], rel=1e-7)
        obs, state, *_ = step(jax.random.fold_in(step_key, i), state, a, params)
    for body, code in (
        ({"session_id": sid, "policy": "nope"}, 422),
        ({"session_id": "no-such-session", "policy": "heuristic"}, 404),
        ({"session_id": sid, "policy": "heuristic", "extra": 1}, 422),
    ):
        assert http.post("/baseline/action", json=body).status_code == code, body
    http.post("/close", json={"session_id": sid})


def test_landing_page_is_the_timeline_page_with_the_live_player(http, tmp_path):
    from gymjax.render import PANELS

    r = http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    panels = json.loads(re.search(r"const PANELS = (.*?);\n", page).group(1))
    assert [p[0] for p in panels] == [p[0] for p in PANELS]  # the render command's panels
    assert "function live()" in page and "// __LIVE__" not in page and "function draw()" in page
    for endpoint in ('"/tasks"', '"/reset"', '"/baseline/action"', '"/step"', '"/close"'):
        assert endpoint in page, endpoint
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained: no outside script or style
    if shutil.which("node"):  # the page's script parses
        script = re.findall(r"<script>(.*?)</script>", page, re.S)[0]
        path = tmp_path / "page.js"
        path.write_text(script)
        subprocess.run(["node", "--check", str(path)], check=True)


def _browser():
    """Playwright with a system Chromium, or None (the browser test then skips)."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        return None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_browser() is None, reason="needs Playwright (dev extra) and a system Chromium (Debian: apt-get install chromium)")
def test_landing_page_plays_an_episode_in_a_headless_browser(http, url):
    """The page in a real browser (Playwright driving the system Chromium): it loads the catalogue,
    plays a whole episode of the chosen baseline against the server, draws every panel and closes
    its session at the end."""
    from playwright.sync_api import sync_playwright

    from gymjax.render import PANELS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1120, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/?task=static&policy=heuristic&seed=2&speed=0&autoplay=1")
            page.wait_for_function("window.liveDone === true", timeout=240_000)
            n = TEST_SIZES["horizon_steps"]
            assert page.inner_text("#stepno") == f"step {n} / {n}"
            assert "done: episode score" in page.inner_text("#live-status")
            assert page.eval_on_selector_all("polyline", "els => els.length") == sum(len(lines) for _, _, lines, _ in PANELS)
            assert page.eval_on_selector_all("#live-task option", "els => els.map(e => e.value)") == list(TASKS)
            assert errors == []
            sid = page.evaluate("window.liveSessionId")
            # the page closed its session at the end: its id is gone (404), long before the idle timeout
            assert http.get("/state", params={"session_id": sid}).status_code == 404
        finally:
            browser.close()
