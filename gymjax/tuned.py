"""Where the tuned baselines (best constant, oracle table) of a task are kept, and how they are found.

- The registered tasks: ``gymjax/data/best_constant.json``, one entry per task name
  (``inferencegym tune``).
- A user's trace (the ``trace`` task): a side file next to the trace, ``my.csv.tuned.json``
  (``inferencegym tune --trace my.csv``; ``--out`` puts it elsewhere). It holds one tuning and the
  fingerprint of the exact task it was tuned on (the trace, the hardware, the SLOs, the sizes: every
  array of ``EnvParams`` and the static sizes), so a tuning is never applied to a configuration it was
  not made for: its flat action indices mean different settings when, e.g., the batch slots differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np

PACKAGED_PATH = Path(__file__).parent / "data" / "best_constant.json"
SIDE_SUFFIX = ".tuned.json"


def fingerprint(env, params=None) -> str:
    """A hex digest of the task ``env`` with ``params``: its static sizes and every params array."""
    params = env.default_params if params is None else params
    h = hashlib.sha256(repr(env.cfg).encode())
    for leaf in jax.tree.leaves(params):
        x = np.asarray(leaf)
        h.update(str((x.dtype, x.shape)).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:20]


def side_path(trace_path: str | Path) -> Path:
    """The default tuning file of a trace: ``<trace>.tuned.json`` beside it."""
    return Path(str(trace_path) + SIDE_SUFFIX)


def load_packaged() -> dict:
    """The registered tasks' tunings, by task name ({} if the file is absent)."""
    return json.loads(PACKAGED_PATH.read_text()) if PACKAGED_PATH.exists() else {}


class TuningMismatch(ValueError):
    """A tuning file made for another configuration of the task than the one asked for."""


def save_tuning(path: str | Path, env, params, tuning: dict, task_args: dict, command: str) -> Path:
    """Write ``tuning`` (:func:`gymjax.tune.tune_task`'s result) for ``env``/``params`` to ``path`` with the
    task's fingerprint, the arguments that built it and the command that made it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**tuning, "fingerprint": fingerprint(env, params), "task_args": task_args, "command": command, "jax_version": jax.__version__}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def load_tuning(path: str | Path, env, params=None) -> dict:
    """The tuning in ``path``, checked against ``env``/``params``: raises ``FileNotFoundError`` if absent
    and :class:`TuningMismatch` if it was made for another configuration."""
    path = Path(path)
    data = json.loads(path.read_text())
    if data.get("fingerprint") != fingerprint(env, params):
        raise TuningMismatch(
            f"{path} was tuned for another configuration of this task ({data.get('task_args')}); "
            f"run `{data.get('command', 'inferencegym tune --trace FILE')}` with the flags you use now "
            "(the trace, model, GPU, SLOs and sizes must match)"
        )
    return data


def tuning_for(env, params=None) -> dict | None:
    """The tuning of ``env``: the packaged entry of a registered task, or for a user's trace the side file
    next to it when it exists and matches this configuration; None otherwise."""
    source = getattr(getattr(env, "spec", None), "source", None)
    if env.name == "trace" and source:
        try:
            return load_tuning(side_path(source), env, params)
        except (FileNotFoundError, TuningMismatch):
            return None
    return load_packaged().get(env.name)


def tune_hint(env) -> str:
    """The command that tunes ``env``."""
    source = getattr(getattr(env, "spec", None), "source", None)
    if env.name == "trace":
        where = source or "FILE"
        return (
            f"run `inferencegym tune --trace {where}` with the same model/GPU/SLO/size flags "
            f"(it writes {side_path(where)}, which `inferencegym eval --trace` and `train --trace` read)"
        )
    return f"run `inferencegym tune --task {env.name}`"
