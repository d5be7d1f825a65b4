#!/usr/bin/env bash
# Runs the DPO step benchmark of n3rlhf and of PyTorch eager transformers side by side on this
# machine and prints both results and the throughput ratio.
# Each pair's chosen and rejected rows share their first half (the prompt). LAYOUT: shared (n3rlhf
# computes each prompt once, its default data.share_prefix) or padded (the peer's layout, the same
# work as the peer).
# ADAPTER: none (full fine-tuning against transformers), lora or qlora (n3rlhf LoRA / QLoRA
# against transformers + PEFT LoRA; the reference is the model with adapters off on both sides).
# Usage: benchmarks/run_dpo_step_benchmark.sh [SHAPE=tiny] [PAIRS=8] [TOKENS=512] [STEPS=5] [BUILD_DIR=build] [LAYOUT=shared]
#        [ADAPTER=none]
set -euo pipefail
cd "$(dirname "$0")/.."
shape=${1:-tiny}; pairs=${2:-8}; tokens=${3:-512}; steps=${4:-5}; build=${5:-build}; layout=${6:-shared}; adapter=${7:-none}
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
ours=$("$build/bin/dpo_step_benchmark" "$shape" "$pairs" "$tokens" "$steps" "$layout" "$adapter")
peer=$("$python" benchmarks/dpo_step_peer.py "$shape" "$pairs" "$tokens" "$steps" "$([[ $adapter == none ]] && echo none || echo lora)")
echo "$ours"
echo "$peer"
"$python" - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ratio n3rlhf ({ours['adapter']}, {ours['layout']})/{peer['impl']}: {ours['tokens_per_second'] / peer['tokens_per_second']:.2f}x tokens/s"
      + (f", peak memory {ours['peak_gib']:.2f} vs {peer['peak_gib']:.2f} GiB" if peer['peak_gib'] else ""))
PY
