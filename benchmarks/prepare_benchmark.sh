#!/usr/bin/env bash
# prepare_benchmark.sh [ROWS] [BUILD_DIR]: `n3rlhf prepare` against TRL 1.x's DPO data preparation on
# the same generated preference JSONL and the same tokenizer (the llama3-style fixture), one core
# each (taskset -c 0, RAYON_NUM_THREADS=1); prints MB/s and rows/s of both and the ratio, and
# checks that both produced the same number of tokens. N3RLHF=path overrides the binary.
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

# n3rlhf: wall and CPU time of the whole command (read, hash, tokenize, write shards and manifest).
N3RLHF=${N3RLHF:-$BUILD/bin/n3rlhf}
/usr/bin/time -f "%e %U %S" -o "$WORK/n3rlhf.time" taskset -c 0 "$N3RLHF" prepare "$WORK/data.jsonl" \
  --tokenizer "$WORK/tokenizer" --out "$WORK/prepared" --max-length 1024 --max-prompt-length 1000 \
  --truncation-mode keep_start --threads 1 --json > "$WORK/n3rlhf.json"
trl=$(taskset -c 0 $PYTHON benchmarks/prepare_peer.py trl "$WORK/data.jsonl" "$WORK/tokenizer")

$PYTHON - "$WORK/n3rlhf.json" "$WORK/n3rlhf.time" "$trl" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
wall, user, system = (float(x) for x in open(sys.argv[2]).read().split()[-3:])
cpu = user + system
peer = json.loads(sys.argv[3])
mb = ours["source"]["bytes"] / 1e6
rows = ours["counts"]["rows_read"]
print(f"data: {rows} preference rows, {mb:.2f} MB; tokens n3rlhf {ours['counts']['tokens']}, TRL {peer['tokens']}")
print(f"n3rlhf prepare : wall {wall:7.2f} s  cpu {cpu:7.2f} s  {mb / wall:8.2f} MB/s  {rows / wall:9.0f} rows/s (wall)")
print(f"TRL 1.x DPO    : wall {peer['seconds']:7.2f} s  cpu {peer['cpu_seconds']:7.2f} s  {mb / peer['seconds']:8.2f} MB/s  "
      f"{peer['rows'] / peer['seconds']:9.0f} rows/s (wall)")
print(f"ratio TRL / n3rlhf: wall {peer['seconds'] / wall:.1f}x, cpu {peer['cpu_seconds'] / cpu:.1f}x")
if ours["counts"]["tokens"] != peer["tokens"]:
    sys.exit("token counts differ")
PY
