"""Iteration time against public measurements: the sources behind docs/fidelity.md.

``python -m benchmarks.roofline_sources`` prints, for every measured row below, the measurement, the roofline
(:func:`gymjax.physics.roofline.iter_time` with the presets) and the error; ``--before`` adds the roofline as
it was before the smooth calibration (hard max, no elementwise term, one fixed overhead), for comparison.
tests/test_roofline.py holds every row to its tolerance (decode +-10 %, prefill +-15 %) unless the row names
why it cannot be met (``excluded``).

Each row is one public measurement, reduced to a per-iteration time with the derivation written next to it:

* ``stack``: Vidur per-operator profiles (CUDA-event kernel times of vLLM's kernels, no CPU overhead, no
  LM head), summed over the layers. Ours drops the LM head from P to match.
* ``gemm`` / ``gemm+elementwise``: the same profiles' four GEMMs (and the non-GEMM per-token kernels) only;
  ours is the linear term (and the elementwise term).
* ``iteration``: an end-to-end decode step or prefill (TTFT at concurrency 1) of a serving engine.
* ``prefill-above-128``: Splitwise's vLLM prefill times minus the same configuration's 128-token prefill,
  which removes that 2023 stack's fixed per-request overhead (tens of ms); ours likewise.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

import jax.numpy as jnp

import gymjax
from gymjax.physics import deployment
from gymjax.physics.roofline import decode_attn_flops, iter_time, prefill_attn_flops
from gymjax.presets import ModelSpec

TOLERANCE = {"decode": 0.10, "prefill": 0.15}


@dataclass(frozen=True)
class Source:
    title: str
    where: str  # URL, or repository @ commit : path
    engine: str


SOURCES: dict[str, Source] = {
    "vidur-a100": Source(
        "Vidur per-operator profile, Meta-Llama-3-8B, A100-80GB, TP1 (mlp.csv: GEMMs and per-token ops; "
        "attention.csv: FlashInfer prefill/decode and KV save)",
        "microsoft/vidur @ 41ab8ab15cd6217284b025750fc6b81364d359e6 : data/profiling/compute/a100/meta-llama/"
        "Meta-Llama-3-8B/mlp.csv; attention.csv (Git LFS upstream; text copy read from "
        "adi-anirudh/vidur_hbf_hbm_backend @ a336807ca19bee36d2f77124b35887db661b6df1, same path)",
        "vLLM/Sarathi kernels (cuBLAS, FlashInfer), BF16, CUDA-event timings",
    ),
    "vidur-h100": Source(
        "Vidur per-operator profile, Llama-2-7b-hf, H100, TP1 (mlp.csv)",
        "microsoft/vidur @ e26eb8f79fa9a6a7c38eac0f5291302402b20364 : data/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv",
        "vLLM/Sarathi kernels (cuBLAS), BF16, CUDA-event timings",
    ),
    "vllm-ci": Source(
        "vLLM nightly performance benchmark, latency tests (input 32, output 128, batch 8), H200",
        "https://buildkite.com/vllm/performance-benchmark/builds/9515",
        "vLLM (late 2024), BF16, CUDA graphs",
    ),
    "nim": Source(
        "NVIDIA NIM LLM benchmarking, Llama-3.3-70b-instruct v1.8.0, 2 x H100 80G, FP8, TP2",
        "https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance",
        "TensorRT-LLM (NIM 1.8.0), FP8, measured with AIPerf at concurrency 1",
    ),
    "splitwise": Source(
        "Splitwise simulator's measured performance model (Patel et al., ISCA 2024), Llama-2-70B, DGX-A100 / DGX-H100",
        "Mutinifni/splitwise-sim @ 378088013a54df6f2052c27ff5ae6ea7619c3ecc : data/perf_model.csv",
        "vLLM (2023, no CUDA graphs), FP16, batch 1, median of 5 runs",
    ),
}

# Model shapes the sources use that the presets do not ship (ModelSpec computes P and KV bytes).
MODEL_SPECS: dict[str, ModelSpec] = {
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256),
    "llama-3-70b": ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256),
    "llama-2-7b": ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000),
    "llama-2-70b": ModelSpec("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000),
}


@dataclass(frozen=True)
class Row:
    source: str
    model: str
    gpu: str
    tp: int
    tier: int  # quantization tier index: 0 BF16, 1 FP8
    phase: str  # "decode" (tokens = batch) | "prefill" (tokens = prompt length, no cached context)
    tokens: int
    ctx: int  # cached tokens per decoding sequence
    scope: str  # "stack" | "gemm" | "gemm+elementwise" | "iteration" | "prefill-above-128"
    measured_ms: float
    derivation: str
    excluded: str = ""  # why this row cannot meet the tolerance; empty when it must
    kv_save_ms: float = 0.0  # Vidur's KV-save operator, reported but left out of measured_ms (see docs)

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.phase]


def _layers(n_layers: int, *per_layer_ms: float) -> float:
    return n_layers * sum(per_layer_ms)


# Vidur A100, Llama-3-8B, TP1, per layer (ms, means of the profile): GEMMs = attn_pre_proj + attn_post_proj +
# mlp_up_proj + mlp_down_proj; other = input/post-attention layernorm + rope + mlp_act + add; attention =
# attn_decode (kv_cache_size 736 per sequence) or attn_prefill (kv_cache_size 0); KV save = attn_kv_cache_save.
_A100_DECODE = {  # batch: (GEMMs, other, attention decode, KV save)
    1: (0.27695, 0.02695, 0.0240, 0.002),
    8: (0.28500, 0.02640, 0.0342, 0.002),
    16: (0.28965, 0.02705, 0.0484, 0.003),
    32: (0.31770, 0.02595, 0.0764, 0.003),
    64: (0.32455, 0.02845, 0.1336, 0.003),
    128: (0.37715, 0.03545, 0.2445, 0.003),
}
_A100_PREFILL = {  # tokens: (GEMMs, other, attention prefill, KV save)
    512: (0.99299, 0.08700, 0.0480, 0.1510),
    1024: (2.18210, 0.17330, 0.1092, 0.5303),
    2048: (4.11880, 0.36230, 0.3160, 1.0942),
    4096: (7.79230, 0.70940, 0.9674, 2.2833),
    8192: (15.63730, 1.40998, 3.3920, 4.6330),
}
# Vidur H100, Llama-2-7B, TP1, per layer (ms): (GEMMs, other) as above.
_H100_LINEAR = {1: (0.15640, 0.01950), 64: (0.16310, 0.02120), 128: (0.18040, 0.01940), 1984: (1.08610, 0.17870), 4096: (2.20005, 0.38650)}
# Splitwise perf_model.csv, llama2-70b, batch 1, prompt_time (ms), median of the 5 runs per prompt length.
_SPLITWISE = {
    ("h100", 2): {128: 48.33, 512: 83.83, 1024: 157.95, 2048: 310.32, 4096: 642.66, 8192: 1339.84},
    ("a100", 2): {128: 81.08, 512: 196.86, 1024: 377.06, 2048: 688.05, 4096: 1485.35, 8192: 2990.18},
    ("h100", 4): {128: 49.09, 512: 59.62, 1024: 105.61, 2048: 200.68, 4096: 463.46, 8192: 953.58},
    ("a100", 4): {128: 63.65, 512: 127.00, 1024: 227.08, 2048: 403.33, 4096: 965.15, 8192: 2278.45},
}
_H100_2023 = (
    "2023 vLLM on H100 ran its GEMMs at ~0.5 of the BF16 peak (modern stacks reach 0.72-0.76, the "
    "vidur-h100 rows); the A100 rows of the same source agree within 6 %"
)
_TP4_2023 = (
    "2023 vLLM's tensor parallelism: TP2 -> TP4 speeds an 8k prefill up only {}x ({}) where the roofline's GEMM-bound work "
    "scales ~1.8x; no all-reduce cost model reproduces that"
)
_SPLITWISE_EXCLUDED = {  # (gpu, tp, prompt tokens): why the row cannot meet the tolerance
    **{("h100", 2, n): _H100_2023 for n in (1024, 2048, 4096, 8192)},
    ("h100", 4, 512): (
        "the 10.5 ms increment is smaller than the noise of its 128-token anchor, whose 48 ms exceed "
        "the same deployment's decode step by 19 ms of per-request overhead"
    ),
    **{("h100", 4, n): _TP4_2023.format(1.40, "H100") for n in (2048, 4096, 8192)},
    **{("a100", 4, n): _TP4_2023.format(1.31, "A100") for n in (4096, 8192)},
}


def _rows() -> tuple[Row, ...]:
    rows: list[Row] = []
    for b, ops in _A100_DECODE.items():
        rows.append(
            Row(
                "vidur-a100",
                "llama-3-8b",
                "a100",
                1,
                0,
                "decode",
                b,
                736,
                "stack",
                _layers(32, *ops),
                f"32 x (GEMMs {ops[0]} + other {ops[1]} + attn_decode {ops[2]} + KV save {ops[3]}) ms",
            )
        )
    for n, ops in _A100_PREFILL.items():
        rows.append(
            Row(
                "vidur-a100",
                "llama-3-8b",
                "a100",
                1,
                0,
                "prefill",
                n,
                0,
                "stack",
                _layers(32, *ops[:3]),
                f"32 x (GEMMs {ops[0]} + other {ops[1]} + attn_prefill {ops[2]}) ms; KV save excluded",
                kv_save_ms=_layers(32, ops[3]),
            )
        )
    for n, (gemm, other) in _H100_LINEAR.items():
        phase = "decode" if n <= 128 else "prefill"
        rows.append(Row("vidur-h100", "llama-2-7b", "h100", 1, 0, phase, n, 0, "gemm", _layers(32, gemm), f"32 x GEMMs {gemm} ms"))
        if phase == "prefill":
            rows.append(
                Row(
                    "vidur-h100",
                    "llama-2-7b",
                    "h100",
                    1,
                    0,
                    phase,
                    n,
                    0,
                    "gemm+elementwise",
                    _layers(32, gemm, other),
                    f"32 x (GEMMs {gemm} + other {other}) ms",
                )
            )
    rows += [
        Row(
            "vllm-ci",
            "llama-3-8b",
            "h200",
            1,
            0,
            "decode",
            8,
            96,
            "iteration",
            (833.42 - 6.0) / 127,
            "latency_llama8B_tp1: (833.42 ms mean - ~6 ms prefill of 8x32 tokens) / 127 decode steps; ctx ~96",
        ),
        Row(
            "vllm-ci",
            "llama-3-70b",
            "h200",
            4,
            0,
            "decode",
            8,
            96,
            "iteration",
            (2077.53 - 15.0) / 127,
            "latency_llama70B_tp4: (2077.53 ms mean - ~15 ms prefill) / 127 decode steps; ctx ~96",
        ),
        Row(
            "nim",
            "llama-3-70b",
            "h100",
            2,
            1,
            "decode",
            1,
            5250,
            "iteration",
            18.58,
            "ITL at concurrency 1, 5000 input / 500 output tokens; ctx ~5250",
        ),
        Row(
            "nim",
            "llama-3-70b",
            "h100",
            2,
            1,
            "decode",
            1,
            1500,
            "iteration",
            18.91,
            "ITL at concurrency 1, 500 input / 2000 output tokens; ctx ~1500",
        ),
        Row(
            "nim",
            "llama-3-70b",
            "h100",
            2,
            1,
            "prefill",
            500,
            0,
            "iteration",
            47.77,
            "TTFT at concurrency 1, 500 input tokens (includes the client's request overhead)",
        ),
        Row("nim", "llama-3-70b", "h100", 2, 1, "prefill", 5000, 0, "iteration", 406.77, "TTFT at concurrency 1, 5000 input tokens"),
    ]
    for (gpu, tp), times in _SPLITWISE.items():
        for n, ms in times.items():
            if n == 128:
                continue
            rows.append(
                Row(
                    "splitwise",
                    "llama-2-70b",
                    gpu,
                    tp,
                    0,
                    "prefill",
                    n,
                    0,
                    "prefill-above-128",
                    ms - times[128],
                    f"prompt_time {ms} - {times[128]} ms (128-token prompt)",
                    excluded=_SPLITWISE_EXCLUDED.get((gpu, tp, n), ""),
                )
            )
    return tuple(rows)


ROWS: tuple[Row, ...] = _rows()


@functools.cache
def _setup(model: str, gpu: str, tp: int, tier: int):
    """Env params and deployment plan of one configuration, with the model's shapes written in."""
    m = MODEL_SPECS[model]
    env, params = gymjax.make("static", model="llama-3-70b" if m.n_layers == 80 else "llama-3-8b", gpu=gpu, n_gpus=tp, tensor_parallel=tp)
    f = jnp.float32
    params = params.replace(
        n_layers=f(m.n_layers),
        d_model=f(m.d_model),
        linear_params=f(m.linear_params),
        embed_params=f(m.vocab * m.d_model),
        kv_elems_per_token=f(m.kv_elems_per_token),
        activation_bytes_per_token=f((4 * m.d_model + 2 * m.d_ffn / tp) * 2.0 * 2.0),
    )
    plan = deployment.plan(env.cfg, params, env.default_action().replace(quantization_tier=jnp.int32(tier)))
    return params, plan


def before(params):
    """The calibration this roofline replaced: hard max of compute and streaming, attention FLOPs at the GEMM
    efficiency, no elementwise term, one 1.5 ms fixed overhead, KV streaming at 0.70."""
    f = jnp.float32
    return params.replace(
        gemm_smoothness=f(1e4),
        eta_attn_flops=params.eta_flops,
        eta_elementwise=f(1e30),
        t_layer_s=f(0.0),
        t_fixed_s=f(1.5e-3),
        eta_attention=f(0.70),
    )


def ours_ms(row: Row, calibrate=lambda p: p) -> float:
    """The roofline's milliseconds for ``row``, over the same scope as the measurement."""
    params, plan = _setup(row.model, row.gpu, row.tp, row.tier)
    params = calibrate(params)
    m = MODEL_SPECS[row.model]
    f = jnp.float32
    if row.scope != "iteration" and row.scope != "prefill-above-128":  # Vidur profiles no LM head
        params = params.replace(linear_params=f(m.linear_params - m.vocab * m.d_model))
    if row.scope in ("gemm", "gemm+elementwise"):
        params = params.replace(t_fixed_s=f(0.0), t_layer_s=f(0.0))
        if row.scope == "gemm":
            params = params.replace(eta_elementwise=f(1e30))

    def one(n, phase):
        if phase == "decode":
            ctx = float(n * row.ctx)
            return iter_time(params, plan, float(n), decode_attn_flops(params, 1.0, ctx), ctx * plan.kv_bytes_per_token, 1.0)
        if row.scope.startswith("gemm"):
            return iter_time(params, plan, float(n), 0.0, 0.0, 1.0)
        return iter_time(params, plan, float(n), prefill_attn_flops(params, float(n), 0.0), 0.0, 1.0)

    t = one(row.tokens, row.phase)
    if row.scope == "prefill-above-128":
        t = t - one(128, "prefill")
    return float(t) * 1e3


def table(with_before: bool = False) -> str:
    """Markdown table of every row: measured, ours, error, tolerance, and whether it is held to it."""
    head = "| source | model | GPU | TP | tier | phase | tokens | ctx | scope | measured ms | ours ms | error |"
    sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"
    if with_before:
        head += " before ms | before error |"
        sep += "---|---|"
    head += " held to |"
    sep += "---|"
    lines = [head, sep]
    for r in ROWS:
        ours = ours_ms(r)
        err = ours / r.measured_ms - 1.0
        held = f"+-{r.tolerance:.0%}" if not r.excluded else "excluded (see below)"
        cells = [
            r.source,
            r.model,
            r.gpu,
            str(r.tp),
            ("BF16", "FP8")[r.tier],
            r.phase,
            str(r.tokens),
            str(r.ctx),
            r.scope,
            f"{r.measured_ms:.2f}",
            f"{ours:.2f}",
            f"{err:+.1%}",
        ]
        if with_before:
            b = ours_ms(r, before)
            cells += [f"{b:.2f}", f"{b / r.measured_ms - 1.0:+.1%}"]
        cells.append(held)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFERENCE_CONFIGS = (
    ("llama-3-8b", "h100", 1, 0),
    ("llama-3-8b", "h100", 1, 1),
    ("llama-3-8b", "a100", 1, 0),
    ("llama-3-70b", "h100", 4, 0),
)
REFERENCE_BATCHES = (1, 64, 256)


def reference_times(model: str, gpu: str, tp: int, tier: int, calibrate=lambda p: p) -> tuple[float, ...]:
    """README's reference table: decode steps at REFERENCE_BATCHES (context 1024 per sequence) and a
    2k-token prefill, in ms, for one replica."""
    params, plan = _setup(model, gpu, tp, tier)
    params = calibrate(params)
    out = []
    for b in REFERENCE_BATCHES:
        ctx = 1024.0 * b
        t = iter_time(params, plan, float(b), decode_attn_flops(params, 1.0, ctx), ctx * plan.kv_bytes_per_token, 1.0)
        out.append(float(t) * 1e3)
    t = iter_time(params, plan, 2048.0, prefill_attn_flops(params, 2048.0, 0.0), 0.0, 1.0)
    return (*out, float(t) * 1e3)


def reference_table(with_before: bool = False) -> str:
    head = "| model, GPU, tier (context 1024) | " + " | ".join(f"decode b={b}" for b in REFERENCE_BATCHES) + " | prefill 2k |"
    lines = [head, "|---|" + "---|" * (len(REFERENCE_BATCHES) + 1)]
    for model, gpu, tp, tier in REFERENCE_CONFIGS:
        now = reference_times(model, gpu, tp, tier)
        was = reference_times(model, gpu, tp, tier, before) if with_before else None
        cells = [f"{v:.2f} ms" + (f" (was {w:.2f})" if was else "") for v, w in zip(now, was or now, strict=True)]
        name = f"{MODEL_SPECS[model].name}, {gpu.upper()}, {('BF16', 'FP8')[tier]}, TP{tp}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", action="store_true", help="add the previous calibration's times and errors")
    ap.add_argument("--reference", action="store_true", help="print only README's reference table")
    args = ap.parse_args(argv)
    if args.reference:
        print(reference_table(with_before=args.before))
        return
    print(table(with_before=args.before))
    print()
    for key, s in SOURCES.items():
        print(f"- {key}: {s.title}. {s.where}. Engine: {s.engine}.")
    print("\nVidur's KV-save operator (left out of the prefill rows above; see docs/fidelity.md):")
    print("| tokens | measured ms | with KV save ms | ours ms | error vs with KV save | KV save GB/s |")
    print("|---|---|---|---|---|---|")
    for r in ROWS:
        if r.kv_save_ms:
            m = MODEL_SPECS[r.model]
            written = r.tokens * m.kv_elems_per_token * 2.0  # bytes of K and V the operator writes, all layers
            ours, total = ours_ms(r), r.measured_ms + r.kv_save_ms
            print(
                f"| {r.tokens} | {r.measured_ms:.2f} | {total:.2f} | {ours:.2f} | {ours / total - 1.0:+.1%} | "
                f"{written / (r.kv_save_ms * 1e-3) / 1e9:.1f} |"
            )
    reasons = {r.excluded for r in ROWS if r.excluded}
    if reasons:
        print("\nExcluded rows:")
        for reason in sorted(reasons):
            print(f"- {reason}")


if __name__ == "__main__":
    main()
