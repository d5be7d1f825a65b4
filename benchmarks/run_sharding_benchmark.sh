#!/usr/bin/env bash
# Runs sharding_benchmark for ddp, zero2 and fsdp on 1, 2 and 4 MPI ranks (or the counts in
# RANKS) and prints, per run, memory per rank against the ZeRO formulas, traffic per step
# against theory, the share of reduction time hidden behind backward, global tokens/s and the
# scaling efficiency against one rank (tokens/s at N / (N x tokens/s at 1)).
# Usage: benchmarks/run_sharding_benchmark.sh [SHAPE=tiny] [ROWS_PER_RANK=4] [TOKENS=256] [STEPS=5]
#        [BUILD_DIR=build]; RANKS="1 2 4" and MPIRUN_ARGS (e.g. a hostfile) from the environment.
# On this 2-core machine ranks beyond 2 share cores, so efficiency there measures oversubscription,
# not the engine; memory and traffic do not depend on it. The same command runs on a GPU node
# (each rank takes the GPU of its node-local rank, bf16, NCCL).
set -euo pipefail
cd "$(dirname "$0")/.."
# N3RLHF_BENCH_LOCK=FILE: each measured run holds an flock on FILE, so that benchmarks started by
# several people on one machine take turns instead of slowing each other down.
lock=(); [[ -n "${N3RLHF_BENCH_LOCK:-}" ]] && lock=(flock "$N3RLHF_BENCH_LOCK")
shape=${1:-tiny}; rows=${2:-4}; tokens=${3:-256}; steps=${4:-5}; build=${5:-build}
ranks=${RANKS:-1 2 4}
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
results=()
for strategy in ddp zero2 fsdp; do
  for n in $ranks; do
    # shellcheck disable=SC2086
    results+=("$("${lock[@]}" mpirun --oversubscribe ${MPIRUN_ARGS:-} -np "$n" "$build/bin/sharding_benchmark" "$strategy" "$shape" "$rows" "$tokens" "$steps")")
  done
done
"$python" - "${results[@]}" <<'PY'
import json, sys
runs = [json.loads(line) for line in sys.argv[1:]]
mib = lambda b: b / 2**20
first = runs[0]
print(f"{first['shape']} on {first['device']}: {first['trainable_parameters']:,} trainable parameters "
      f"({first['layer_parameters']:,} in decoder layers), {first['rows_per_rank']} rows x {first['tokens']} tokens per rank")
print("strategy ranks | params MiB meas/formula | grads MiB meas/formula | Adam moments MiB meas/formula | "
      "masters MiB | traffic elements/step meas/theory | overlap | tokens/s | efficiency | peak GiB")
single = {r["strategy"]: r["tokens_per_second"] for r in runs if r["ranks"] == 1}
for r in runs:
    m, f = r["measured"], r["formula"]
    n = r["ranks"]
    efficiency = r["tokens_per_second"] / (n * single[r["strategy"]]) if r["strategy"] in single else float("nan")
    overlap = "-" if r["overlap"] is None else f"{100 * r['overlap']:.0f}%"
    traffic = f"{m['traffic_elements']:,.0f}/{f['traffic_elements']:,.0f}"
    if "traffic_elements_all_sharded" in f:
        traffic += f" (all sharded: {f['traffic_elements_all_sharded']:,.0f})"
    print(f"{r['strategy']:>5} {n:>5} | {mib(m['parameter_bytes']):8.2f}/{mib(f['parameter_bytes']):8.2f} | "
          f"{mib(m['gradient_bytes']):7.2f}/{mib(f['gradient_bytes']):7.2f} | "
          f"{mib(m['optimizer_state_bytes']):7.2f}/{mib(f['optimizer_state_bytes']):7.2f} | {mib(m['master_bytes']):6.2f} | "
          f"{traffic} | {overlap:>4} | {r['tokens_per_second']:8.0f} | {efficiency:5.2f} | {m['peak_gib']:.2f}")
PY
