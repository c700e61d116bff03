"""benchmarks.summary: the Targets section reads the targets off the result JSONs (no JAX needed)."""

import json

from benchmarks.summary import targets


def _write(tmp_path, name, data):
    (tmp_path / name).write_text(json.dumps(data))


def test_targets_report_met_and_unmet(tmp_path):
    _write(tmp_path, "env_throughput.json", {"machine": {"backend": "cpu"}, "results": [
        {"clusters": 4096, "env_steps_per_s": 52_000.0}, {"clusters": 64, "env_steps_per_s": 200_000.0}]})
    _write(tmp_path, "train_speed.json", {"rows": [
        {"task": "static", "num_envs": 64, "overhead_ratio": 1.43}, {"task": "static", "num_envs": 256, "overhead_ratio": 1.54}]})
    text = "\n".join(targets(tmp_path))
    assert "4,096 clusters on 2 CPU cores: best measured 52,000 (not met)" in text  # the 64-cluster row does not count
    assert "1.43x on `static` at 64 envs" in text and "1.54x on `static` at 256 envs" in text and "(met)" in text
    assert "H100: not measured yet" in text

    # one batch size over 2x makes the PPO target unmet
    _write(tmp_path, "train_speed_other.json", {"rows": [{"task": "static", "num_envs": 64, "overhead_ratio": 2.3}]})
    (ppo_line,) = [line for line in targets(tmp_path) if line.startswith("- PPO training")]
    assert "2.30x on `static` at 64 envs (`train_speed_other.json`)" in ppo_line and ppo_line.endswith("(not met).")


def test_targets_without_results(tmp_path):
    text = "\n".join(targets(tmp_path))
    assert "4,096 clusters on 2 CPU cores: not measured" in text
    assert "raw env throughput at the same batch: not measured" in text
