"""Action and observation spaces, gymnax-style, and the knob table.

The six knobs of :class:`gymjax.types.ServeAction` are defined once, in :data:`KNOBS`: their range,
unit, meaning, and the discrete levels of the learner's flat encoding. The server's schema, the
trainer's action heads and the README table all read this table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gymjax.presets import PD_MODES, QUANT_TIERS


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # "int" | "float"
    low: float
    high: float
    unit: str
    doc: str
    levels: tuple[float, ...]  # values the flat learner encoding can pick
    slow: bool = False  # changing it costs a reload/drain


@functools.lru_cache(maxsize=64)
def knob_table(n_slots: int) -> tuple[Knob, ...]:
    """The six knobs. Batch-cap levels scale with the static slot count ``n_slots``. Cached: the
    table is immutable, and ``ServeAction`` validation reads it on every construction."""
    caps = sorted({max(1, int(round(n_slots * f))) for f in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1)})
    return (
        Knob("batch_cap", "int", 1, n_slots, "sequences",
             "max sequences in the running batch (vLLM max_num_seqs)", tuple(float(c) for c in caps)),
        Knob("kv_budget_fraction", "float", 0.05, 1.0, "fraction of HBM",
             "share of each GPU's HBM the engine claims for weights + activations + KV cache "
             "(vLLM gpu_memory_utilization); the rest is left free", (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)),
        Knob("speculation_depth", "int", 0, 8, "draft tokens",
             "draft tokens proposed per verification step (0 = no speculation)", (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)),
        Knob("quantization_tier", "int", 0, len(QUANT_TIERS) - 1, "tier index",
             "weight/activation/KV precision: " + ", ".join(f"{i}={q.name}" for i, q in enumerate(QUANT_TIERS)),
             tuple(float(i) for i in range(len(QUANT_TIERS))), slow=True),
        Knob("prefill_decode_split", "int", 0, len(PD_MODES) - 1, "mode index",
             "prefill/decode placement: " + ", ".join(f"{i}={m.name}" for i, m in enumerate(PD_MODES)),
             tuple(float(i) for i in range(len(PD_MODES))), slow=True),
        Knob("priority_routing", "int", 0, 1, "flag",
             "0 = FCFS across tenants; 1 = admit and keep higher-priority tenants first", (0.0, 1.0)),
    )


KNOB_NAMES = ("batch_cap", "kv_budget_fraction", "speculation_depth", "quantization_tier",
              "prefill_decode_split", "priority_routing")


class MultiDiscrete:
    """The learner's flat action space: one categorical per knob, ``nvec[i]`` choices each."""

    def __init__(self, nvec: tuple[int, ...]):
        self.nvec = tuple(int(n) for n in nvec)
        self.shape = (len(self.nvec),)
        self.dtype = jnp.int32

    def sample(self, key: jax.Array) -> jax.Array:
        keys = jax.random.split(key, len(self.nvec))
        return jnp.stack([jax.random.randint(k, (), 0, n) for k, n in zip(keys, self.nvec, strict=True)]).astype(jnp.int32)

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.all((x >= 0) & (x < jnp.asarray(self.nvec))) & (x.shape == self.shape)

    def __repr__(self) -> str:
        return f"MultiDiscrete(nvec={self.nvec})"


class Box:
    """A box space with per-dimension bounds (gymnax-style)."""

    def __init__(self, low, high, shape: tuple[int, ...], dtype=jnp.float32):
        self.low = np.broadcast_to(np.asarray(low, np.float32), shape)
        self.high = np.broadcast_to(np.asarray(high, np.float32), shape)
        self.shape = shape
        self.dtype = dtype

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, self.shape, self.dtype, jnp.asarray(self.low), jnp.asarray(self.high))

    def contains(self, x) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.all((x >= self.low) & (x <= self.high))

    def __repr__(self) -> str:
        return f"Box(shape={self.shape})"
