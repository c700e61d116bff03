#!/usr/bin/env bash
# The GPU benchmark run, from the repository root:  bash benchmarks/gpu.sh
#
# Stages, each in its own process under its own `timeout` (one failing or timing out does not stop
# the others), within a total budget of GPU_SH_BUDGET seconds (default 450):
#   1. env scaling: double the cluster count from 2^18 until the first out-of-memory (cap 2^23),
#      so the largest batch that fits is measured first;
#   2. one full PPO training run, default config (task GPU_SH_TASK, default static; no evaluation);
#   3. simulated requests and cluster-seconds per wall second, 1 and 65,536 clusters;
#   4. env scaling at small counts (1, 64, 4,096, 65,536), merged into stage 1's file.
# Results go where `make bench` writes (benchmarks/results/), with a device tag in the file names
# (env_throughput_gpu.json, train_speed_gpu.json, sim_rate_gpu.json) so CPU results stay; then
# SUMMARY.md is regenerated. If $OUT is set, the results and this run's log are copied there.
#
# Needs only what the GPU machine has: python3 with jax (CUDA), flax, optax, chex, numpy,
# matplotlib, msgpack. Uses $GPU_SH_PYTHON, else .venv/bin/python if there is one, else python3, with
# PYTHONPATH=. (the repository need not be installed). Installs nothing. A persistent XLA
# compilation cache in $JAX_COMPILATION_CACHE_DIR (default /tmp/inferencegym-jax-cache) makes a
# rerun on the same machine skip compilation (the JSON records the cache directory, since compile
# times are then cache loads).
#
# GPU_SH_SMOKE=1 runs every stage at toy sizes on the CPU into a temporary folder (about 90 s on 2
# cores): a check of the script itself, not a benchmark.
set -u -o pipefail
cd "$(dirname "$0")/.."

export PYTHONUNBUFFERED=1
export XLA_FLAGS="${XLA_FLAGS:-}"  # no CPU-only defaults from the benchmarks
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"  # more of the GPU for the largest batch
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/inferencegym-jax-cache}"
SMOKE="${GPU_SH_SMOKE:-0}"
TASK="${GPU_SH_TASK:-static}"
BUDGET="${GPU_SH_BUDGET:-450}"

if [ -n "${GPU_SH_PYTHON:-}" ]; then
  PY="$GPU_SH_PYTHON"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # the repository, installed or not

if [ "$SMOKE" = 1 ]; then
  export JAX_PLATFORMS=cpu
  export IG_BENCH_RESULTS="${IG_BENCH_RESULTS:-$(mktemp -d /tmp/gpu_sh_smoke.XXXXXX)}"
fi
RESULTS="${IG_BENCH_RESULTS:-benchmarks/results}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_sh.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

echo "== gpu.sh: $(date -u +%FT%TZ), python $PY, results in $RESULTS, smoke=$SMOKE, budget ${BUDGET}s"
FAILED=()

# stage NAME SECONDS CMD...: run CMD under `timeout`, bounded by what is left of the budget
stage() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then
    echo "== [$name] skipped: budget spent (${SECONDS}s of ${BUDGET}s)"
    FAILED+=("$name(skipped)")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== [$name] start at ${SECONDS}s, limit ${limit}s: $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  if [ $rc -eq 0 ]; then
    echo "== [$name] done in $((SECONDS - t0))s"
  else
    [ $rc -eq 124 ] && echo "== [$name] TIMED OUT after ${limit}s (what it measured so far is saved)" || echo "== [$name] FAILED rc=$rc"
    FAILED+=("$name(rc=$rc)")
  fi
}

stage devices 60 $PY -c "
import jax, sys
print('jax', jax.__version__, 'backend', jax.default_backend(), jax.devices())
if jax.default_backend() == 'cpu' and '$SMOKE' != '1':
    sys.exit('no accelerator visible to JAX: not a GPU run (GPU_SH_SMOKE=1 runs the CPU smoke test)')
"
if [ "$SMOKE" != 1 ] && [ ${#FAILED[@]} -gt 0 ]; then
  echo "== stopping: JAX sees no GPU"
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ "$SMOKE" = 1 ]; then
  stage env_scaling 120 $PY -m benchmarks.env_throughput --clusters --grow 2 8 --steps 4 --repeats 1 --no-plot
  stage train 150 $PY -m benchmarks.train_speed --num-envs --tasks "$TASK" --total-steps 8192
  stage sim_rate 90 $PY -m benchmarks.sim_rate --clusters 1 --seconds 10 --repeats 1
  stage env_small 90 $PY -m benchmarks.env_throughput --clusters 1 --steps 4 --repeats 2 --append
else
  stage env_scaling 200 $PY -m benchmarks.env_throughput --clusters --grow 262144 8388608 \
    --budget 4194304 --min-steps 8 --repeats 3 --no-plot
  stage train 170 $PY -m benchmarks.train_speed --num-envs --tasks "$TASK"
  stage sim_rate 80 $PY -m benchmarks.sim_rate --clusters 1 65536 --repeats 3
  stage env_small 120 $PY -m benchmarks.env_throughput --clusters 1 64 4096 65536 \
    --budget 4194304 --min-steps 8 --repeats 3 --append
fi

# always, whatever the budget says: it only reads JSON (a second or two)
echo "== [summary]"
timeout 60 $PY -m benchmarks.summary || FAILED+=("summary")

echo "== gpu.sh finished in ${SECONDS}s; failed or skipped stages: ${FAILED[*]:-none}"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/benchmarks_results"
  cp "$RESULTS"/*_gpu.json "$RESULTS"/*_gpu.png "$RESULTS"/env_throughput.png "$RESULTS"/SUMMARY.md "$OUT/benchmarks_results/" 2>/dev/null
  [ "$SMOKE" = 1 ] && cp "$RESULTS"/*.json "$OUT/benchmarks_results/" 2>/dev/null
  echo "== copied results to $OUT/benchmarks_results"
  sleep 1  # let tee flush the log
  cp "$LOG" "$OUT/" 2>/dev/null
fi
[ ${#FAILED[@]} -eq 0 ]
