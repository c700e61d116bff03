"""See an episode: one rollout recorded step by step, drawn as a timeline (PNG with matplotlib) and as a
self-contained interactive HTML page (no network, no JavaScript library: the data and a small SVG
renderer are inlined).

    timeline = episode_timeline(env, params, policy, jax.random.PRNGKey(seed))
    plot_timeline(timeline, "episode.png")
    write_html(timeline, "episode.html")

One panel per concern, against the step (one control interval each): load (arrivals, queue, running
batch, drops), TTFT p50/p99 against each tenant's TTFT SLO, TPOT p50 and inter-token p99 against
each tenant's TPOT SLO, KV occupancy (and preemptions), throughput (output and prefill tokens/s,
SLO goodput), the six knobs in force, and the reward per step. Intervals the engine spent
reloading or draining (a slow knob changed) are shaded in every panel. The episode runs through
:func:`gymjax.rollout.rollout` (the one episode loop), so it is the episode every scoreboard scores
for that key.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.grading import grade_components
from gymjax.rollout import Policy, Step, rollout
from gymjax.spaces import KNOB_NAMES
from gymjax.types import EnvParams, ServeAction

# what each panel draws: (panel title, unit, [(series key, label)], SLO kind or None)
PANELS = (
    (
        "load",
        "requests",
        [("arrival_rate", "arrivals /s"), ("queue_depth", "queued"), ("running", "running"), ("dropped", "dropped /interval")],
        None,
    ),
    ("time to first token", "s", [("ttft_p50_s", "TTFT p50"), ("ttft_p99_s", "TTFT p99")], "ttft"),
    ("time per output token", "s", [("tpot_p50_s", "TPOT p50"), ("itl_p99_s", "inter-token p99")], "tpot"),
    ("KV cache", "fraction / count", [("kv_occupancy", "KV occupancy"), ("preemptions", "preemptions")], None),
    (
        "throughput",
        "tokens/s",
        [("throughput_tps", "output tok/s"), ("prefill_tps", "prefill tok/s"), ("goodput_tps", "SLO goodput req/s x100")],
        None,
    ),
    ("knobs in force", "level", [(f"knob.{k}", k) for k in KNOB_NAMES], None),
    ("reward", "per step", [("reward", "reward"), ("slo_attainment", "SLO attainment")], None),
)
METRICS = (
    "queue_depth",
    "running",
    "ttft_p50_s",
    "ttft_p99_s",
    "itl_p99_s",
    "tpot_p50_s",
    "throughput_tps",
    "prefill_tps",
    "kv_occupancy",
    "slo_attainment",
    "goodput_rps",
    "arrival_rate",
    "preemptions",
    "dropped",
    "invalid_config",
    "reconfig_remaining_s",
)


def _record(env):
    def record(step: Step) -> dict:
        m = step.info["metrics"]
        action = step.action if isinstance(step.action, ServeAction) else env.decode_action(jnp.asarray(step.action))
        out = {k: jnp.asarray(getattr(m, k), jnp.float32) for k in METRICS}
        out.update({f"knob.{k}": jnp.asarray(getattr(action, k), jnp.float32) for k in KNOB_NAMES})
        out["reward"] = step.reward
        out["queue_per_tenant"] = m.queue_depth_per_tenant.astype(jnp.float32)
        return out

    return record


def episode_timeline(env, params: EnvParams, policy: Policy, key: jax.Array, n_steps: int | None = None) -> dict:
    """One episode of ``policy`` (``rollout`` with ``key``), step by step: ``{"steps", "series": {name:
    [n]}, "tenants", "slo_ttft_s", "slo_tpot_s", "score": grade components, "task", ...}`` (lists, JSON-able)."""
    n = int(params.horizon_steps) if n_steps is None else int(n_steps)
    final, rec = jax.jit(lambda k: rollout(env, params, policy, k, n, _record(env)))(key)
    rec = jax.device_get(rec)
    series = {k: np.asarray(v, np.float64) for k, v in rec.items() if k != "queue_per_tenant"}
    series["goodput_tps"] = series["goodput_rps"] * 100.0  # drawn on the throughput panel's scale
    tenants = [t.name for t in env.spec.tenants] if getattr(env, "spec", None) is not None else [f"t{i}" for i in range(env.cfg.n_tenants)]
    comps = {k: float(v) for k, v in jax.device_get(grade_components(params, final.episode)).items()}
    short = lambda x: float(f"{float(x):.7g}")  # noqa: E731  (float32 values, without float64 noise digits)
    return {
        "task": env.name,
        "steps": n,
        "dt_s": float(params.dt_s),
        "tenants": tenants,
        "slo_ttft_s": [short(x) for x in np.asarray(params.slo_ttft_s)],
        "slo_tpot_s": [short(x) for x in np.asarray(params.slo_tpot_s)],
        "knob_levels": {k.name: list(k.levels) for k in env.knobs},
        "series": {k: [short(x) for x in v] for k, v in series.items()},
        "queue_per_tenant": [[short(x) for x in row] for row in np.asarray(rec["queue_per_tenant"])],
        "score": comps,
    }


def _outages(tl: dict) -> list[tuple[int, int]]:
    """Runs of steps during which the engine was down (reloading/draining) or could not serve."""
    down = (np.asarray(tl["series"]["reconfig_remaining_s"]) > 0) | (np.asarray(tl["series"]["invalid_config"]) > 0)
    runs, start = [], None
    for t, d in enumerate(list(down) + [False]):
        if d and start is None:
            start = t
        elif not d and start is not None:
            runs.append((start, t))
            start = None
    return runs


def plot_timeline(tl: dict, path: str | Path, title: str | None = None) -> Path:
    """The timeline as a PNG (matplotlib, one panel per concern). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1, tl["steps"] + 1)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(12, 2.1 * len(PANELS)), sharex=True)
    for ax, (name, unit, lines, slo) in zip(axes, PANELS, strict=True):
        for a, b in _outages(tl):
            ax.axvspan(a + 0.5, b + 0.5, color="0.85", lw=0)
        if name == "knobs in force":  # each knob as its level index, offset so the six lines do not overlap
            for i, (key, label) in enumerate(lines):
                levels = np.asarray(tl["knob_levels"][label])
                idx = np.argmin(np.abs(np.asarray(tl["series"][key])[:, None] - levels[None, :]), axis=1)
                ax.step(t, idx / max(len(levels) - 1, 1) + 1.2 * i, where="mid", label=label)
            ax.set_yticks([1.2 * i + 0.5 for i in range(len(lines))], [lb for _, lb in lines], fontsize=7)
        else:
            for key, label in lines:
                ax.plot(t, tl["series"][key], label=label, lw=1.2)
        if slo is not None:
            for i, (tenant, target) in enumerate(zip(tl["tenants"], tl[f"slo_{slo}_s"], strict=True)):
                ax.axhline(target, ls="--", lw=1, color=f"C{3 + i}", label=f"{tenant} SLO {target:g} s")
            ax.set_yscale("symlog", linthresh=min(tl[f"slo_{slo}_s"]) / 10)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(name, fontsize=9, loc="left")
        if name != "knobs in force":  # the knobs are named on the y axis
            ax.legend(fontsize=7, loc="upper right", ncol=3)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"step ({tl['dt_s']:g} s control intervals); grey: engine reloading, draining or unable to serve")
    s = tl["score"]
    fig.suptitle(
        title
        or f"{tl['task']}: episode score {s['score']:.3f} (goodput {s['goodput']:.3f}, cost {s['cost']:.3f}, quality {s['quality']:.3f})",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TEMPLATE = Path(__file__).parent / "data" / "timeline.html"  # the page; its placeholders are filled by write_html


def html_page(tl: dict, title: str, subtitle: str, live_script: str = "") -> str:
    """The page of :data:`TEMPLATE` for timeline ``tl``. ``live_script`` (JavaScript defining
    ``live()``) turns it into a live page that records its own timeline step by step (the server's
    landing page, ``server/static/live.js``); without it the page shows ``tl``."""
    panels = [[name, unit, lines, slo] for name, unit, lines, slo in PANELS]
    return (
        TEMPLATE.read_text()
        .replace("__TITLE__", html.escape(title))
        .replace("__SUBTITLE__", html.escape(subtitle))
        .replace("__PANELS__", json.dumps(panels))
        .replace("__DATA__", json.dumps(tl).replace("</", "<\\/"))
        .replace("// __LIVE__", live_script.replace("</", "<\\/"))
    )


def write_html(tl: dict, path: str | Path, title: str | None = None, subtitle: str = "") -> Path:
    """The timeline as one self-contained HTML page: the same panels as SVG, a step slider, play/step
    buttons and a per-panel readout of the step under the cursor. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = tl["score"]
    title = title or f"{tl['task']}: one episode"
    subtitle = subtitle or (
        f"episode score {s['score']:.3f} (goodput {s['goodput']:.3f}, cost {s['cost']:.3f}, "
        f"quality {s['quality']:.3f}); grey: engine reloading, draining or unable to serve"
    )
    path.write_text(html_page(tl, title, subtitle))
    return path
