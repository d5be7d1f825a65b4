#!/usr/bin/env bash
# DPO with adapters on the CPU: n3rlhf-dist full fine-tuning, LoRA, QLoRA (NF4, double quantization)
# and LoRA with an explicit frozen reference copy, against pip TRL's DPOTrainer full and with
# PEFT LoRA / QLoRA (bitsandbytes 4-bit on the CPU), on the same model (init-model preset with the
# demo tokenizer), data (demo-data), data order and settings (r 16, alpha 32, all-linear, dropout 0,
# lr, beta, batch, max_length), 1 process each, same threads. Prints tokens/s (wall and per
# CPU-second) and resident memory of every run, the ratios (LoRA vs full, n3rlhf vs TRL, QLoRA vs
# LoRA) and the memory the adapter-disabled reference saves against a frozen copy, each beside its
# expected size. Every run holds `flock /tmp/n3rlhf-bench.lock` (N3RLHF_BENCH_LOCK; shared with other
# benchmarks) and runs strictly after the previous one; the load average is printed beside each run.
# benchmarks/peft_side_by_side_peer.py holds the TRL run, the measurement and the report (the parts
# it shares with trl_side_by_side_peer.py are in benchmarks/trl_peer_common.py).
#
# Usage: benchmarks/peft_side_by_side.sh [PRESET=llama-100m] [STEPS=10] [BUILD_DIR=build] [driver options]
#   PRESET  init-model preset: llama-100m (78.7M parameters with the demo tokenizer), tiny-llama for a quick check
#   STEPS   optimizer steps per run (step 1 is the warm-up, rates are over steps 2..STEPS)
# Driver options (after the three positional ones): --batch-size 8 --max-length 128 --learning-rate 1e-4
# --beta 0.1 --r 16 --alpha 32 --targets all-linear|q_proj,k_proj,v_proj,o_proj --runs full,lora,...
# --tries N --work DIR --threads N; see `peft_side_by_side_peer.py drive --help`.
# The defaults (llama-100m, 10 steps, 7 runs) take 10-12 minutes on the 2-core machine when it is quiet
# (longer while others hold the lock or the CPU). Output: the table, checks, ratios, memory against the
# expected sizes; report.txt and report.json in --work (default /tmp/n3rlhf-peft-side-by-side).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-llama-100m}; steps=${2:-10}; build=${3:-build}
shift $(( $# < 3 ? $# : 3 ))
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
exec "$python" benchmarks/peft_side_by_side_peer.py drive --bin "$build/bin" --preset "$preset" --steps "$steps" "$@"
