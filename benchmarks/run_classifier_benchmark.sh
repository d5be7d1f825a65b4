#!/usr/bin/env bash
# Runs classifier_benchmark (n3rlhf's TextClassifier) and classifier_peer.py (transformers) one after
# the other on the same random bert-base classifier (toxic-bert's shape and labels), the same texts
# (3 to 300 words) and threads, and prints texts/s of each and the ratio (>1: n3rlhf is faster),
# by wall time and by process CPU time. Both include tokenization; both score every text.
# Usage: benchmarks/run_classifier_benchmark.sh [TEXTS=64] [THREADS=1] [BATCH=16] [REPEATS=2] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
lock=(); [[ -n "${N3RLHF_BENCH_LOCK:-}" ]] && lock=(flock "$N3RLHF_BENCH_LOCK")
count=${1:-64}; threads=${2:-1}; batch=${3:-16}; repeats=${4:-2}; build=${5:-build}
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
work="$build/classifier_benchmark_data"
if [[ ! -f "$work/model/model.safetensors" || ! -f "$work/texts-$count.json" ]]; then
  mkdir -p "$work/model"
  "$python" benchmarks/classifier_peer.py --make "$work/model" "$work/texts-$count.json" "$count"
fi
ours=$("${lock[@]}" "$build/bin/classifier_benchmark" "$work/model" "$work/texts-$count.json" "$threads" "$batch" "$repeats")
peer=$("${lock[@]}" "$python" benchmarks/classifier_peer.py "$work/model" "$work/texts-$count.json" "$threads" "$batch" "$repeats")
"$python" - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"bert-base classifier, {ours['texts']} texts, batch {ours['batch']}, {ours['threads']} threads: "
      f"n3rlhf {ours['texts_per_second']:.2f} texts/s, transformers {peer['texts_per_second']:.2f} texts/s, "
      f"ratio {ours['texts_per_second'] / peer['texts_per_second']:.2f}x "
      f"(per CPU second {ours['cpu_texts_per_second'] / peer['cpu_texts_per_second']:.2f}x); "
      f"score sums {ours['checksum']:.4f} / {peer['checksum']:.4f}")
PY
