#!/usr/bin/env bash
# The README's first command: sets up the machine, builds, and runs the main job: a tiny Llama
# (preset tiny-llama with the bundled tokenizer) trained with DPO on 2 MPI ranks (ZeRO-2) on a
# generated preference data set, showing held-out reward accuracy climbing above chance.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Only the two binaries the demo runs, not the tests and benchmarks (scripts/test.sh builds those).
./scripts/build.sh n3rlhf n3rlhf-dist
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
bin=build/bin
if [ ! -f runs/demo/model/model.safetensors ]; then
  "$bin/n3rlhf" init-model --preset tiny-llama --tokenizer assets/tokenizers/n3-demo-bpe --out runs/demo/model
fi
if [ ! -f runs/demo/data/train.jsonl ]; then
  "$bin/n3rlhf" demo-data --out runs/demo/data
fi
# A fresh run each time: the demo's output directory is replaced.
rm -rf runs/demo/dpo
mpirun --oversubscribe -np 2 "$bin/n3rlhf-dist" examples/demo/dpo.n3
