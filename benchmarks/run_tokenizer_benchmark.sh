#!/usr/bin/env bash
# run_tokenizer_benchmark.sh [MB] [BUILD_DIR]: the tokenizer benchmark, side by side on one core:
# n3rlhf's tokenizer against pip tokenizers (RAYON_NUM_THREADS=1, taskset -c 0) on the same
# corpus of Python standard-library sources, for each fixture tokenizer; checks that both give
# identical ids and prints MB/s of each and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-4}"
BUILD="${2:-build}"
PYTHON=.venv/bin/python
BENCH="$BUILD/bin/tokenizer_benchmark"
[[ -x "$BENCH" ]] || { echo "build it first: ninja -C $BUILD tokenizer_benchmark" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PIN=(taskset -c 0)
command -v taskset >/dev/null || PIN=()
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
"$PYTHON" benchmarks/tokenizer_peer.py corpus "$WORK/corpus.txt" "$MB"
status=0
for family in gpt2_bytelevel llama3_regex_bytelevel sentencepiece_bpe_bytefallback; do
  tokenizer="tests/fixtures/hf/tokenizers/$family/tokenizer.json"
  peer=$("${PIN[@]}" "$PYTHON" benchmarks/tokenizer_peer.py encode "$tokenizer" "$WORK/corpus.txt" "$WORK/$family.ids")
  "${PIN[@]}" "$BENCH" --name "$family" --tokenizer "$tokenizer" --corpus "$WORK/corpus.txt" \
    --reference-ids "$WORK/$family.ids" --peer-mb-per-s "$peer" || status=1
done
exit $status
