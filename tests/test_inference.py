"""inference.py against a stub OpenAI-compatible server on 127.0.0.1, through the real openai client."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from server.launch import TEST_SIZES

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "batch_cap": 8,
    "kv_budget_fraction": 0.7,
    "speculation_depth": 2,
    "quantization_tier": 1,
    "prefill_decode_split": 2,
    "priority_routing": 0,
}
# the stub's replies, in turn: valid JSON, prose, an out-of-range knob, valid inside a code fence, a missing knob
REPLIES = [
    json.dumps(GOOD),
    "I would raise the batch cap.",
    json.dumps({**GOOD, "batch_cap": 10_000}),
    "```json\n" + json.dumps({**GOOD, "speculation_depth": 0}) + "\n```",
    json.dumps({k: v for k, v in GOOD.items() if k != "priority_routing"}),
]


class Stub(BaseHTTPRequestHandler):
    calls: list[dict] = []
    replies: list[str] = REPLIES

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        n = len(Stub.calls)
        Stub.calls.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
        content = Stub.replies[n % len(Stub.replies)]
        out = json.dumps(
            {
                "id": f"stub-{n}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_url():
    Stub.calls = []
    Stub.replies = REPLIES
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


LINE = {
    "START": re.compile(r"^\[START\] task=(\S+) env=(\S+) model=(\S+)$"),
    "STEP": re.compile(r"^\[STEP\] step=(\d+) action=(\S+) reward=(-?[\d.]+) done=(true|false) error=(.+)$"),
    "END": re.compile(r"^\[END\] success=(true|false) steps=(\d+) score=([\d.]+) rewards=(\S+)$"),
}


SUMMARY = re.compile(
    r"^# (\S+): the model's own actions played (\d+) of (\d+) steps \(heuristic fallback (\d+)\); "
    r"episode grade ([\d.]+), credited to the model ([\d.]+)$",
    re.M,
)


def run_inference(stub_url: str, k: int) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        API_BASE_URL=stub_url,
        MODEL_NAME="stub-model",
        HF_TOKEN="test-token",
        INFERENCEGYM_TASKS="static",
        INFERENCEGYM_TASK_OVERRIDES=json.dumps(TEST_SIZES),
        INFERENCE_DECISION_EVERY=str(k),
        INFERENCE_SEED="3",
    )
    env.pop("API_KEY", None)
    r = subprocess.run([sys.executable, "inference.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_inference_runs_an_episode_with_fallbacks_and_the_required_log_format(stub_url):
    k = 2
    horizon = TEST_SIZES["horizon_steps"]
    r = run_inference(stub_url, k)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert LINE["START"].match(lines[0]).groups() == ("static", "inferencegym", "stub-model")
    steps = [LINE["STEP"].match(ln) for ln in lines[1:-1]]
    assert all(steps) and len(steps) == horizon
    end = LINE["END"].match(lines[-1])
    assert end, lines[-1]

    # the model was asked every k steps, through the real client, with the observation
    assert len(Stub.calls) == horizon // k
    call = Stub.calls[0]
    assert call["path"] == "/v1/chat/completions" and call["auth"] == "Bearer test-token"
    assert call["body"]["model"] == "stub-model"
    prompt = call["body"]["messages"][-1]["content"]
    assert "queue_depth" in prompt and "ttft_p99_s" in prompt and "Step 0 of 12" in prompt

    actions = [json.loads(m.group(2)) for m in steps]
    errors = [m.group(5) for m in steps]
    for i, (a, e) in enumerate(zip(actions, errors, strict=True)):
        reply = REPLIES[(i // k) % len(REPLIES)]
        if i % k:  # held between decisions
            assert a == actions[i - 1] and e == "null"
        elif reply in (REPLIES[0], REPLIES[3]):  # valid replies are applied as sent
            assert e == "null" and a == json.loads(reply.strip("`json\n"))
        else:  # invalid replies fall back, and say why
            assert e.startswith("invalid model action") and a != json.loads(REPLIES[0])
    assert "batch_cap" in errors[4] and "priority_routing" in errors[8]
    assert [m.group(4) for m in steps] == ["false"] * (horizon - 1) + ["true"]

    success, n, score, rewards = end.groups()
    assert int(n) == horizon
    assert 0.0 < float(score) < 1.0
    assert success == ("true" if float(score) >= 0.5 else "false")
    assert rewards.split(",") == [m.group(3) for m in steps]

    # the model's own actions played the steps of its valid replies (and the steps they were held);
    # the score is the model's share of the episode's grade, never the fallback's
    model_played = sum(1 for i in range(horizon) if REPLIES[(i // k) % len(REPLIES)] in (REPLIES[0], REPLIES[3]))
    summary = SUMMARY.search(r.stderr)
    assert summary, r.stderr[-2000:]
    task, n_model, n_steps, n_fallback, grade, credited = summary.groups()
    assert (task, int(n_model), int(n_steps), int(n_fallback)) == ("static", model_played, horizon, horizon - model_played)
    assert float(credited) == pytest.approx(float(grade) * model_played / horizon, abs=1e-4)
    assert float(score) == pytest.approx(min(max(float(credited), 1e-3), 1 - 1e-3), abs=1e-3)


def test_an_episode_the_fallback_played_is_not_the_models_score(stub_url):
    """The model never produced a valid action: the heuristic played every step, so the model is
    credited nothing (the minimum score, no success), whatever the heuristic's episode scored."""
    Stub.replies = ["I would raise the batch cap.", json.dumps({"batch_cap": "lots"})]
    r = run_inference(stub_url, 3)
    end = LINE["END"].match([ln for ln in r.stdout.splitlines() if ln.startswith("[")][-1])
    assert end and end.group(1) == "false" and float(end.group(3)) == 0.001
    task, n_model, n_steps, n_fallback, grade, credited = SUMMARY.search(r.stderr).groups()
    assert int(n_model) == 0 and int(n_fallback) == int(n_steps) == TEST_SIZES["horizon_steps"]
    assert float(credited) == 0.0 and float(grade) > 0.0  # the fallback's episode did score: it is not the model's
