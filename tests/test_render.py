"""See an episode (gymjax.render, inferencegym render): the timeline is the rollout's episode, the PNG and the
self-contained HTML page carry it, and the command writes both."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gymjax import baselines
from gymjax.grading import grade
from gymjax.render import PANELS, episode_timeline, plot_timeline, write_html
from gymjax.rollout import rollout
from gymjax.spaces import KNOB_NAMES
from inferencegym.cli import main

ACTION = jnp.asarray([3, 4, 2, 1, 1, 0], jnp.int32)


@pytest.fixture(scope="module")
def timeline(tiny_static):
    env, params = tiny_static
    return episode_timeline(env, params, lambda k, o, s: ACTION, jax.random.PRNGKey(4))


def test_timeline_is_the_rollout_episode(tiny_static, timeline):
    env, params = tiny_static
    n = int(params.horizon_steps)
    final, rewards = jax.jit(lambda k: rollout(env, params, lambda kk, o, s: ACTION, k, n))(jax.random.PRNGKey(4))
    assert timeline["steps"] == n and all(len(v) == n for v in timeline["series"].values())
    np.testing.assert_allclose(timeline["series"]["reward"], np.asarray(rewards), rtol=1e-6, atol=1e-6)
    assert timeline["score"]["score"] == pytest.approx(float(grade(params, final.episode)), rel=1e-6)
    typed = env.decode_action(ACTION).to_dict()
    for k in KNOB_NAMES:  # the knobs in force, in user units
        np.testing.assert_allclose(timeline["series"][f"knob.{k}"], typed[k], rtol=1e-6)
    np.testing.assert_allclose(timeline["slo_ttft_s"], np.asarray(params.slo_ttft_s), rtol=1e-6)
    for _, _, lines, _ in PANELS:  # every panel's series is recorded
        assert all(key in timeline["series"] for key, _ in lines)
    q = np.asarray(timeline["series"]["queue_depth"])
    assert q.max() > 0 and np.allclose(q, np.asarray(timeline["queue_per_tenant"]).sum(1))


def test_png_and_html_carry_the_episode(timeline, tmp_path):
    png = plot_timeline(timeline, tmp_path / "ep.png")
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > img.shape[1] > 500  # one tall figure, a panel per concern
    page = write_html(timeline, tmp_path / "ep.html", title="tiny <static>")
    text = page.read_text()
    assert "<title>tiny &lt;static&gt;</title>" in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")
    data = json.loads(re.search(r'<script id="timeline" type="application/json">(.*?)</script>', text, re.S).group(1))
    assert data == json.loads(json.dumps(timeline))  # the page holds the whole timeline
    panels = json.loads(re.search(r"const PANELS = (.*?);\n", text).group(1))
    assert [p[0] for p in panels] == [p[0] for p in PANELS]
    if shutil.which("node"):  # the page's script parses
        script = re.findall(r"<script>(.*?)</script>", text, re.S)[0]
        (tmp_path / "page.js").write_text(script)
        subprocess.run(["node", "--check", str(tmp_path / "page.js")], check=True)


def test_render_command_writes_png_and_html(tmp_path, capsys):
    out = tmp_path / "ep"
    sizes = ["--env", "n_slots=16", "--env", "queue_cap=32", "--env", "max_arrivals=16", "--env", "horizon_steps=8"]
    assert main(["render", "--task", "static", *sizes, "--policy", "vllm-default", "--seed", "3", "--out", str(out)]) == 0
    assert out.with_suffix(".png").stat().st_size > 10_000 and out.with_suffix(".html").stat().st_size > 5_000
    assert "static, vllm-default, seed 3: 8 steps, episode score" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "--policy", "no-such-policy"], "neither a baseline"),
        (["render", "--task", "trace"], "or --trace FILE"),
        (["render", "--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_render_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_best_constant_error_names_a_working_command(tmp_path):
    """Without a tuning, the trace task's best-constant error names `tune --trace FILE` (the old message named
    `tune --task trace`, which crashed)."""
    import gymjax

    csv = tmp_path / "mine.csv"
    shutil.copy(Path(__file__).parent / "data" / "azure_slice.csv", csv)
    env, params = gymjax.make("trace", path=str(csv))
    assert "best-constant" not in baselines.available(env)
    with pytest.raises(KeyError, match=r"inferencegym tune --trace .*mine\.csv"):
        baselines.best_constant(env, params)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine (Debian: apt-get install chromium)")
def test_page_loads_and_plays_in_a_headless_browser(timeline, tmp_path):
    """The page in a real browser: its script runs (the panels' SVG is built) and, opened as page.html#play,
    it plays every step to the last."""
    page = write_html(timeline, tmp_path / "ep.html")
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", page.as_uri() + "#play"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    n = timeline["steps"]
    assert f"step {n} / {n}" in out
    assert out.count("<polyline") == sum(len(lines) for _, _, lines, _ in PANELS)
