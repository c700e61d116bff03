"""Behaviour is pinned: the same keys give bit-identical trajectories, baseline scores and trained
policies as recorded in tests/data/golden.json (see tests/golden.py for what is fingerprinted).

A refactor must leave every fingerprint unchanged. A deliberate behaviour change re-records them
(``python -m tests.golden --write``) in its own commit, which says why.

The suite checks a lean subset (every task's trajectory, the adversarial board with all five
baselines, the gated PPO run, the tuner); ``python -m tests.golden`` checks them all (the static and
azure-replay boards, the plain PPO run and the trace calibration too, about 2 more minutes).
"""

import json

import jax
import pytest

from tests import golden

RECORDED = json.loads(golden.GOLDEN.read_text())

pytestmark = pytest.mark.skipif(RECORDED["jax"] != jax.__version__, reason="fingerprints hold within one JAX version")


def _check(part, now, subset=False):
    d = golden.diff(RECORDED, {part: now}, subset=subset)
    assert not d, "behaviour changed:\n" + "\n".join(d[:40])


@pytest.mark.slow
@pytest.mark.parametrize("task", golden.TASKS)
def test_trajectories_are_pinned(task):
    _check("trajectories", {task: golden.trajectory_fingerprint(task)})


@pytest.mark.slow
@pytest.mark.parametrize("task", ["adversarial"])
def test_baseline_scores_are_pinned(task):
    _check("boards", {task: golden.board_fingerprint(task)})


@pytest.mark.slow
def test_tuner_scores_are_pinned():
    _check("tools", {"tune+calibrate": golden.tools_fingerprint(calibration=False)}, subset=True)


@pytest.mark.slow
def test_trained_policy_is_pinned():
    _check("ppo", golden.ppo_fingerprint(runs=("gate",)), subset=True)


def test_the_fingerprint_sees_a_one_ulp_change():
    import numpy as np

    x = np.float32([1.0, 2.0])
    assert golden.digest(x) != golden.digest(np.nextafter(x, np.float32(3.0)))
    assert golden.diff({"p": {"t": {"a": "1"}}}, {"p": {"t": {"a": "2"}}}) == ["p t:a: recorded '1', now '2'"]
    # a full check misses nothing; a partial (subset) check compares only what it computed
    assert golden.diff({"p": {"t": {"a": "1", "b": "2"}}}, {"p": {"t": {"a": "1"}}}) == ["p t:b: recorded '2', now None"]
    assert golden.diff({"p": {"t": {"a": "1", "b": "2"}}}, {"p": {"t": {"a": "1"}}}, subset=True) == []
