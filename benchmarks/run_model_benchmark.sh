#!/usr/bin/env bash
# Runs model_benchmark (n3rlhf) and model_peer.py (PyTorch eager transformers) one after the other
# on the same shape, batch and threads, for forward, forward+backward and generation at two
# context lengths, and prints each pair with its ratio (>1: n3rlhf is faster), by wall time and
# by process CPU time (the second moves less when other work shares the machine).
# Usage: benchmarks/run_model_benchmark.sh [SHAPE=llama-100m] [BATCH=4] [TOKENS=256] [STEPS=3]
#        [THREADS=2] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
# N3RLHF_BENCH_LOCK=FILE: each measured run holds an flock on FILE, so that benchmarks started by
# several people on one machine take turns instead of slowing each other down.
lock=(); [[ -n "${N3RLHF_BENCH_LOCK:-}" ]] && lock=(flock "$N3RLHF_BENCH_LOCK")
shape=${1:-llama-100m}; batch=${2:-4}; tokens=${3:-256}; steps=${4:-3}; threads=${5:-2}; build=${6:-build}
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
compare() {  # MODE BATCH TOKENS
  local ours peer
  ours=$("${lock[@]}" "$build/bin/model_benchmark" "$shape" "$1" "$2" "$3" "$steps" "$threads")
  peer=$("${lock[@]}" "$python" benchmarks/model_peer.py "$shape" "$1" "$2" "$3" "$steps" "$threads")
  "$python" - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
label = f"{ours['shape']} {ours['mode']} batch {ours['batch']} x {ours['tokens']} tokens, {ours['threads']} threads"
if "tokens_per_second" in ours:
    wall = ours["tokens_per_second"] / peer["tokens_per_second"]
    cpu = ours["cpu_tokens_per_second"] / peer["cpu_tokens_per_second"]
    print(f"{label}: n3rlhf {ours['tokens_per_second']:.0f} tok/s, transformers {peer['tokens_per_second']:.0f} tok/s,"
          f" ratio {wall:.2f}x (per CPU second {cpu:.2f}x)")
else:
    wall = peer["ms_per_token"] / ours["ms_per_token"]
    cpu = peer["cpu_ms_per_token"] / ours["cpu_ms_per_token"]
    print(f"{label}: n3rlhf {ours['ms_per_token']:.2f} ms/token, transformers {peer['ms_per_token']:.2f} ms/token,"
          f" ratio {wall:.2f}x (per CPU second {cpu:.2f}x)")
PY
}
compare forward "$batch" "$tokens"
compare train "$batch" "$tokens"
# Decoding cost per new token after 64 and after 512 tokens of context: with a KV cache it must
# not grow with the square of the length.
compare generate 1 64
compare generate 1 512
