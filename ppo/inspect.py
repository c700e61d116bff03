"""What a policy does in each load phase: the share of steps at each level of each knob
(``inferencegym inspect --policy runs/adversarial``).

The phase of a step is the hidden burst state of the task's Markov-modulated tenants (bit ``t`` set
while tenant ``t`` is in its high phase; tenants with a steady rate never set theirs). Episodes
start like ``gymjax.evaluate``'s (``gymjax.grading.eval_keys``), and the policy plays greedily.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.grading import eval_keys
from gymjax.rollout import Step, rollout


def phase_action_shares(env, params, policy, n_episodes: int = 8) -> dict:
    """``{phase: {"share": fraction of steps, knob name: {level value: fraction of that phase's steps}}}``
    over ``n_episodes`` full episodes from the standard evaluation keys (:func:`gymjax.grading.eval_keys`)."""
    modulated = (params.burst_high_mult != params.burst_low_mult).astype(jnp.int32)

    def action_and_phase(step: Step):
        """The flat action and the burst phase word it was chosen in."""
        on = step.state.burst_on.astype(jnp.int32)
        return step.action, jnp.sum(on * modulated * 2 ** jnp.arange(on.shape[0]))

    def episode(key):
        return rollout(env, params, policy, key, int(params.horizon_steps), record=action_and_phase)[1]

    actions, phases = jax.device_get(jax.jit(jax.vmap(episode))(eval_keys(n_episodes)))
    actions, phases = np.asarray(actions).reshape(-1, len(env.knobs)), np.asarray(phases).reshape(-1)
    out = {}
    for ph in np.unique(phases):
        m = phases == ph
        row = {"share": float(m.mean())}
        for j, knob in enumerate(env.knobs):
            idx, n = np.unique(actions[m, j], return_counts=True)
            row[knob.name] = {float(knob.levels[i]): float(c / m.sum()) for i, c in zip(idx, n, strict=True)}
        out[int(ph)] = row
    return out
