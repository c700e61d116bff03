"""OpenAI-client baseline: an LLM operates the serving cluster, one full episode per task, in-process.

    API_BASE_URL=https://router.huggingface.co/v1 MODEL_NAME=Qwen/Qwen2.5-72B-Instruct HF_TOKEN=... python inference.py

Every decision sends the current observation (named metrics, the action in force, progress) and
asks for a JSON ServeAction. A reply that is not a valid ServeAction (bad JSON, missing or
out-of-range knob) is logged in that step's ``error=`` and the step falls back to the heuristic
baseline (``gymjax.baselines.POLICIES["heuristic"]``).

Time budget (the hackathon's 20 minutes on 2 vCPU / 8 GB with a model answering in ~1 s): the model
sets the action every ``k`` steps and the action is held in between. ``k`` is
``INFERENCE_DECISION_EVERY`` if set, else the smallest k with at most ``INFERENCE_MAX_CALLS`` (400)
model calls over all tasks. Past ``INFERENCE_TIME_BUDGET_S`` (1080 s) of wall time the model is no
longer called and the heuristic finishes the episodes (logged), so the run always ends in time.

Output (stdout), per task::

    [START] task=<t> env=inferencegym model=<m>
    [STEP] step=<n> action=<json> reward=<r> done=<true|false> error=<msg|null>
    [END] success=<true|false> steps=<n> score=<s> rewards=<r1,r2,...>

``score`` is the model's score, never the fallback's: ``gymjax.grade`` of the episode times the share of
its steps that the model's own actions played (an episode the heuristic played throughout scores
the minimum), clipped into (0, 1); success means score >= 0.5. How many steps the model's actions
played, the fallback's count and the episode's grade go to stderr, one line per task
(``# <task>: the model's own actions played <n> of <steps> steps ...``) and a total at the end.
Other settings: ``INFERENCEGYM_TASKS`` (comma list; default every served task),
``INFERENCEGYM_TASK_OVERRIDES`` (JSON, e.g. smaller sizes), ``INFERENCE_SEED`` (0).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

API_BASE_URL = os.getenv("API_BASE_URL", "https://router.huggingface.co/v1")
MODEL_NAME = os.getenv("MODEL_NAME", "Qwen/Qwen2.5-72B-Instruct")
API_KEY = os.getenv("HF_TOKEN") or os.getenv("API_KEY")
ENV_NAME = "inferencegym"
SUCCESS_SCORE = 0.5
SCORE_EPS = 1e-3  # scores are reported strictly inside (0, 1)
MAX_CALLS = int(os.getenv("INFERENCE_MAX_CALLS", "400"))
TIME_BUDGET_S = float(os.getenv("INFERENCE_TIME_BUDGET_S", "1080"))
REQUEST_TIMEOUT_S = float(os.getenv("INFERENCE_REQUEST_TIMEOUT_S", "30"))
SEED = int(os.getenv("INFERENCE_SEED", "0"))


def log(line: str) -> None:
    print(line, flush=True)


def one_line(msg: str, limit: int = 300) -> str:
    return re.sub(r"\s+", " ", str(msg)).strip()[:limit]


def system_prompt(rt) -> str:
    spec = rt.spec
    knobs = "\n".join(
        f"- {k.name} ({'integer' if k.kind == 'int' else 'number'} in [{k.low:g}, {k.high:g}], {k.unit}): {k.doc}"
        + (" Changing it takes the engine down for a reload/drain." if k.slow else "")
        for k in rt.env.knobs
    )
    tenants = "; ".join(f"{t.name}: priority {t.priority:g}, SLO TTFT {t.slo_ttft_s:g} s, TPOT {t.slo_tpot_s:g} s" for t in spec.tenants)
    return (
        f"You operate an LLM inference-serving cluster ({spec.model} on {spec.n_gpus}x {spec.gpu}). Task: {spec.description}\n"
        f"Tenants: {tenants}.\nGoal: maximise requests served within their SLOs (TTFT and time per output token), "
        "then lower cost and quality loss; dropping or starving traffic scores low.\n"
        f"Every decision you set these six knobs:\n{knobs}\n"
        "Reply with one JSON object with exactly these six keys and nothing else, e.g. " + json.dumps(rt.env.default_action().to_dict())
    )


def user_prompt(payload: dict, step: int, horizon: int, k: int) -> str:
    skip = {"obs", "task", "score", "done", "reward", "truncated"}
    metrics = {
        n: (round(v, 4) if isinstance(v, float) else ([round(x, 4) for x in v] if isinstance(v, list) else v))
        for n, v in payload.items()
        if n not in skip
    }
    return (
        f"Step {step} of {horizon}. Your action will hold for the next {k} steps (1 step = 1 s).\n"
        f"Observation: {json.dumps(metrics)}\nReply with the JSON ServeAction."
    )


def parse_action(text: str) -> dict:
    """The first JSON object in the reply (a code fence is fine)."""
    m = re.search(r"\{.*\}", text or "", re.S)
    if not m:
        raise ValueError(f"no JSON object in reply: {one_line(text, 80)!r}")
    obj = json.loads(m.group(0))
    if not isinstance(obj, dict):
        raise ValueError("reply is not a JSON object")
    return obj


class Fallback:
    """The heuristic baseline (``gymjax.baselines.POLICIES["heuristic"]``), jitted once per task."""

    def __init__(self, rt, params):
        import jax

        import gymjax

        self.rt = rt
        self.policy = jax.jit(gymjax.baselines.POLICIES["heuristic"](rt.env, params))
        self.key = jax.random.PRNGKey(SEED + 1)

    def action(self, episode, obs: list[float]) -> dict:
        import jax
        import jax.numpy as jnp

        flat = self.policy(jax.random.fold_in(self.key, episode.step_count), jnp.asarray(obs, jnp.float32), episode.env_state())
        return self.rt.env.decode_action(flat).to_dict()


def run_task(task: str, registry, client, k: int, t_start: float) -> tuple[int, int]:
    """One episode of ``task``; returns (steps the model's own actions played, steps)."""
    from server.runtime import Episode

    rt = registry.get(task)
    ep = Episode(registry)
    payload = ep.reset(task=task, seed=SEED)
    fallback = Fallback(rt, ep.params)
    sys_msg = system_prompt(rt)
    log(f"[START] task={task} env={ENV_NAME} model={MODEL_NAME}")
    rewards: list[float] = []
    held: dict | None = None
    held_by_model = False  # whether the action in force came from a valid model reply
    model_steps = 0
    while not ep.done:
        error = None
        if ep.step_count % k == 0 or held is None:
            if time.monotonic() - t_start > TIME_BUDGET_S:
                held, error = fallback.action(ep, payload["obs"]), "time budget spent: heuristic action"
                held_by_model = False
            else:
                try:
                    reply = client.chat.completions.create(
                        model=MODEL_NAME,
                        temperature=0.0,
                        max_tokens=200,
                        messages=[
                            {"role": "system", "content": sys_msg},
                            {"role": "user", "content": user_prompt(payload, ep.step_count, ep.horizon, k)},
                        ],
                    )
                    candidate = parse_action(reply.choices[0].message.content)
                    ep.validate(candidate)  # the task's action model, as ep.step will (raises pydantic.ValidationError)
                    held, held_by_model = {n: candidate[n] for n in candidate}, True
                except Exception as e:  # noqa: BLE001 - any bad reply falls back, and is logged
                    held, held_by_model = fallback.action(ep, payload["obs"]), False
                    error = f"invalid model action ({type(e).__name__}: {one_line(getattr(e, 'message', e))}); heuristic used"
        try:
            payload = ep.step(held)
        except Exception as e:  # noqa: BLE001 - defensive: the episode must finish
            held, held_by_model = fallback.action(ep, payload["obs"]), False
            error = f"step refused ({one_line(e)}); heuristic used"
            payload = ep.step(held)
        model_steps += held_by_model
        rewards.append(payload["reward"])
        done = "true" if ep.done else "false"
        log(
            f"[STEP] step={ep.step_count} action={json.dumps(held, separators=(',', ':'))} reward={payload['reward']:.2f} "
            f"done={done} error={error if error else 'null'}"
        )
    grade = ep.score if ep.score is not None else 0.0
    credited = grade * model_steps / max(ep.step_count, 1)  # the model's share of the episode; none of the fallback's
    score = min(max(credited, SCORE_EPS), 1.0 - SCORE_EPS)
    print(
        f"# {task}: the model's own actions played {model_steps} of {ep.step_count} steps "
        f"(heuristic fallback {ep.step_count - model_steps}); episode grade {grade:.4f}, credited to the model {credited:.4f}",
        file=sys.stderr,
        flush=True,
    )
    log(
        f"[END] success={'true' if score >= SUCCESS_SCORE else 'false'} steps={ep.step_count} score={score:.3f} "
        f"rewards={','.join(f'{r:.2f}' for r in rewards)}"
    )
    return model_steps, ep.step_count


def main() -> int:
    from openai import OpenAI

    from server.runtime import RuntimeRegistry

    t_start = time.monotonic()
    tasks = tuple(t.strip() for t in os.getenv("INFERENCEGYM_TASKS", "").split(",") if t.strip()) or None
    registry = RuntimeRegistry(tasks)
    names = registry.task_names
    total_steps = sum(int(registry.get(n, compile=False).params.horizon_steps) for n in names)
    k = int(os.getenv("INFERENCE_DECISION_EVERY") or max(1, math.ceil(total_steps / max(MAX_CALLS, 1))))
    print(f"# {len(names)} tasks, {total_steps} steps, model decides every {k} steps", file=sys.stderr, flush=True)
    client = OpenAI(base_url=API_BASE_URL, api_key=API_KEY or "no-key", timeout=REQUEST_TIMEOUT_S, max_retries=1)
    played = [run_task(task, registry, client, k, t_start) for task in names]
    model, total = sum(m for m, _ in played), sum(n for _, n in played)
    print(f"# all tasks: the model's own actions played {model} of {total} steps", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
