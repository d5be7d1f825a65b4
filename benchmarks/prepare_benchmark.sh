#!/usr/bin/env bash
# prepare_benchmark.sh [ROWS] [BUILD_DIR]: `n3rlhf prepare` against TRL 1.x's DPO data preparation on
# the same generated preference JSONL and the same tokenizer (the llama3-style fixture), one core
# each (taskset -c 0, RAYON_NUM_THREADS=1); prints MB/s and rows/s of both and the ratio, and
# checks that both produced the same number of tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-20000}
BUILD=${2:-build}
PYTHON=.venv/bin/python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

mkdir -p "$WORK/tokenizer"
cp tests/fixtures/hf/tokenizers/llama3_regex_bytelevel/tokenizer.json "$WORK/tokenizer/"
echo '{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": null}' \
  > "$WORK/tokenizer/tokenizer_config.json"
$PYTHON benchmarks/prepare_peer.py generate "$WORK/data.jsonl" "$ROWS"

# n3rlhf: wall time of the whole command (read, hash, tokenize, write shards and manifest).
start=$(date +%s.%N)
taskset -c 0 "$BUILD/bin/n3rlhf" prepare "$WORK/data.jsonl" --tokenizer "$WORK/tokenizer" --out "$WORK/prepared" \
  --max-length 1024 --max-prompt-length 1000 --truncation-mode keep_start --threads 1 --json > "$WORK/n3rlhf.json"
end=$(date +%s.%N)
trl=$(taskset -c 0 $PYTHON benchmarks/prepare_peer.py trl "$WORK/data.jsonl" "$WORK/tokenizer")

$PYTHON - "$WORK/n3rlhf.json" "$start" "$end" "$trl" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
peer = json.loads(sys.argv[4])
mb = ours["source"]["bytes"] / 1e6
rows = ours["counts"]["rows_read"]
print(f"data: {rows} preference rows, {mb:.2f} MB; tokens n3rlhf {ours['counts']['tokens']}, TRL {peer['tokens']}")
print(f"n3rlhf prepare : {wall:7.2f} s  {mb / wall:8.2f} MB/s  {rows / wall:9.0f} rows/s  (in-process {ours['seconds']:.2f} s)")
print(f"TRL 1.x DPO    : {peer['seconds']:7.2f} s  {mb / peer['seconds']:8.2f} MB/s  {peer['rows'] / peer['seconds']:9.0f} rows/s")
print(f"ratio (TRL time / n3rlhf time): {peer['seconds'] / wall:.2f}x")
if ours["counts"]["tokens"] != peer["tokens"]:
    sys.exit("token counts differ")
PY
